"""`benchroute calibrate` and `benchroute serve` as a user runs them: a real process on 127.0.0.1
that drains the requests in flight on SIGTERM; and the status page in headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from benchroute.embedding import HashingEncoder  # noqa: E402
from benchroute.router import Router  # noqa: E402
from tests.fake_upstream import FakeConfig, closed_port, fake_upstream, serving  # noqa: E402
from tests.unit.test_router import synthetic  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def saved_router(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gw") / "router"
    data, _ = synthetic(4)
    Router(alphas=(0.0,), encoder=HashingEncoder(64),
           cache_dir=str(folder.parent / "cache")).fit(data).save(folder)
    return folder


def _cli(*args: str, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "benchroute", *args]


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCHROUTE_")}
    env.update(BENCHROUTE_HOME=str(tmp / "home"), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
               GATEWAY_TOKEN="tok-123", UPSTREAM_KEY="up-key-456")
    return env


def _start(args: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with log.open("w") as out:  # the child writes to its own copy of the descriptor
        proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"serve did not start: {log.read_text()[-2000:]}")


@pytest.fixture
def gateway_process(saved_router, tmp_path):
    """Calibrate through the CLI, then serve with the calibration, auth and an upstream key,
    the router's pool memory-mapped (--mmap)."""
    cfg = FakeConfig(latency=1.5)
    env = _env(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"task {i % 4} input {i}" for i in range(120)))
    done = subprocess.run(_cli("calibrate", "--router", str(saved_router), "--prompts",
                               str(prompts), "--strong-share", "0.3", "--strong", "m0",
                               "--weak", "m2", env=env), env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "realised" in done.stdout and (saved_router / "calibration.json").is_file()
    with serving(fake_upstream(cfg)) as url:
        ups = tmp_path / "upstreams.yaml"
        ups.write_text("models:\n" + "".join(
            f"  {m}:\n    base_url: {url}/v1\n    model: up-{m}\n    api_key_env: UPSTREAM_KEY\n"
            f"    cost: {c}\n" for m, c in (("m0", 3), ("m1", 2), ("m2", 1))))
        port = closed_port()
        log = tmp_path / "serve.log"
        proc = _start(_cli("serve", "--router", str(saved_router), "--upstreams", str(ups),
                           "--port", str(port), "--api-key-env", "GATEWAY_TOKEN",
                           "--drain-seconds", "20", "--mmap", env=env), env, port, log)
        try:
            yield proc, f"http://127.0.0.1:{port}", cfg, log
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_serve_drains_in_flight_requests_on_sigterm(gateway_process):
    proc, base, cfg, log = gateway_process
    status = httpx.get(base + "/status.json").json()
    assert status["default"]["source"] == "calibration"
    assert status["default"]["policy"] == "threshold"
    results: list[httpx.Response] = []

    def call() -> None:
        results.append(httpx.post(base + "/v1/chat/completions", timeout=30,
                                  headers={"Authorization": "Bearer tok-123"},
                                  json={"model": "benchroute",
                                        "messages": [{"role": "user", "content": "task 1 input 3"}]}))
    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(cfg.calls) < 3 and time.monotonic() < deadline:  # all three are upstream now
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=30)
    assert [r.status_code for r in results] == [200, 200, 200]
    # uvicorn re-raises the signal once drained, so the parent sees "terminated by SIGTERM"
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert all(r.json()["choices"][0]["message"]["content"].startswith("answer from up-m")
               for r in results)
    assert all(c["auth"] == "Bearer up-key-456" for c in cfg.calls)
    assert "up-key-456" not in log.read_text() and "tok-123" not in log.read_text()
    with pytest.raises(httpx.HTTPError):                          # gone: nothing listens now
        httpx.get(base + "/healthz", timeout=2)


def test_a_stream_longer_than_the_drain_ends_with_an_error_event(saved_router, tmp_path):
    """At the drain's end the server cut open streams: the client got a truncated chunked body
    and the server log an 'Exception in ASGI application' per stream (found by a review)."""
    import json

    cfg = FakeConfig(chunks=8, chunk_delay=1.0)
    env = _env(tmp_path)
    with serving(fake_upstream(cfg)) as url:
        ups = tmp_path / "upstreams.yaml"
        ups.write_text("models:\n" + "".join(f"  {m}:\n    base_url: {url}/v1\n    model: "
                                             f"up-{m}\n" for m in ("m0", "m1", "m2")))
        port = closed_port()
        log = tmp_path / "serve.log"
        proc = _start(_cli("serve", "--router", str(saved_router), "--upstreams", str(ups),
                           "--port", str(port), "--drain-seconds", "3",
                           "--decision-log", str(tmp_path / "d.jsonl")), env, port, log)
        try:
            events: list[str] = []
            with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions",
                              timeout=30, json={"model": "benchroute", "stream": True,
                                                "messages": [{"role": "user",
                                                              "content": "task 1 input 3"}]}
                              ) as resp:
                for line in resp.iter_lines():  # a truncated body would raise here
                    if line.startswith("data: "):
                        events.append(line[6:])
                        if len(events) == 1:
                            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert 2 <= len(events) < 8 and "shutting down" in json.loads(events[-1])["error"]["message"]
    assert "Exception in ASGI application" not in log.read_text()
    line = json.loads((tmp_path / "d.jsonl").read_text().splitlines()[-1])
    assert line["stream_end"] == "cut at shutdown"


def test_serve_refuses_to_start_with_a_clear_error(saved_router, tmp_path):
    env = _env(tmp_path)
    ups = tmp_path / "upstreams.yaml"
    ups.write_text("models:\n  m0: {base_url: 'http://127.0.0.1:9/v1', model: a}\n")
    done = subprocess.run(_cli("serve", "--router", str(saved_router), "--upstreams", str(ups),
                               "--port", str(closed_port()), env=env), env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"{ups}: no upstream for model(s) ['m1', 'm2']" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_on_a_port_in_use_says_so_before_showing_an_address(saved_router, tmp_path):
    """uvicorn's bind failure came after the gateway had announced its address (exit 3)."""
    import socket

    env = _env(tmp_path)
    ups = tmp_path / "upstreams.yaml"
    ups.write_text("models:\n" + "".join(f"  m{i}: {{base_url: 'http://127.0.0.1:9/v1', "
                                          f"model: a{i}}}\n" for i in range(3)))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(_cli("serve", "--router", str(saved_router), "--upstreams",
                                   str(ups), "--port", str(port), env=env), env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in done.stderr
    assert "gateway on http" not in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------------- the status page
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") \
        or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None and not os.environ.get("CI"),
                    reason="headless Chromium is not installed (make test installs it as root)")
def test_status_page_renders_figures_in_headless_chromium(gateway_process, tmp_path):
    assert _chromium() is not None, "CI must install chromium (make browser)"
    proc, base, cfg, log = gateway_process
    cfg.latency = 0.0
    auth = {"Authorization": "Bearer tok-123"}
    for i in range(12):
        r = httpx.post(base + "/v1/chat/completions", headers=auth, timeout=30, json={
            "model": "benchroute-share-0.5" if i % 2 else "benchroute",
            "messages": [{"role": "user", "content": f"task {i % 4} input {i}"}]})
        assert r.status_code == 200
    live = httpx.get(base + "/status.json").json()["live"]
    profile = tmp_path / "chromium-profile"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr",
           "--v=0", "--virtual-time-budget=5000", "--dump-dom", base + "/"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom = done.stdout
    if os.environ.get("BENCHROUTE_KEEP_SCREENSHOT"):
        Path(os.environ["BENCHROUTE_KEEP_SCREENSHOT"] + ".html").write_text(dom)
    assert "benchroute gateway" in dom
    assert f"<td>decisions</td><td class=\"n\">{live['totals']['decisions']}</td>" in dom
    assert "<td>benchroute-share-0.5</td><td>m0</td><td class=\"n\">0.500</td>" in dom  # target
    assert "<td>benchroute</td><td>m0</td><td class=\"n\">0.300</td>" in dom     # calibration
    assert 'id="operating-point"' in dom and 'id="live-point"' in dom and "<polyline" in dom
    assert "<div id=\"error\"></div>" in dom                           # no fetch error shown
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line
               or "Uncaught" in line]
    assert not [c for c in console if "error" in c.lower() or "uncaught" in c.lower()], console
    shot = tmp_path / "page.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                    f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                    "--window-size=1000,800", f"--screenshot={shot}", base + "/"],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    if os.environ.get("BENCHROUTE_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["BENCHROUTE_KEEP_SCREENSHOT"])
