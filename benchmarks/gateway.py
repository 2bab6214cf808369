"""Load and fault test of the gateway on loopback: decision latency and throughput, nothing lost.

    python benchmarks/gateway.py [--requests 2000] [--concurrency 1 8 32] [--encoders default static]
                                 [--wrk-seconds 30]

Three processes on 127.0.0.1: a fake OpenAI-compatible upstream (every 10th call answers 503,
i.e. 10% of upstream calls fail), ``benchroute serve`` on the bundled HELM MMLU pack router,
and this load generator (asyncio + httpx). For each encoder and concurrency:

1. ``POST /v1/route`` for --wrk-seconds with wrk (else --requests times with httpx): decisions/s (wall clock), client latency p50/p99 and
   the server's own decision time (``x-benchroute-decision-ms``) p50/p99.
2. ``POST /v1/chat/completions`` --requests times through the gateway: every answer must be
   the upstream's completion or a clean OpenAI-style error; lost = anything else.
3. The same chat requests sent to the upstream directly (the baseline of this run): the
   gateway's overhead is its p50 minus the direct p50 at the same concurrency.
4. The physical limit: texts per second the encoder alone embeds in this process, one at a
   time and in batches of 8 and 32 prompts (one call each, or calls of 4 as the gateway
   makes them); decisions/s is reported as a share of the fastest.

Prompts are the pack's questions cut to their first 40 words. Phase 1 uses wrk (Debian's
``wrk``, C) when installed, so that the load generator takes little of the 2 cores; phases 2
and 3 check every answer's body and use httpx. Targets on 2 cores:
/v1/route p50 ≤ 50 ms, p99 ≤ 200 ms at concurrency 1 (default encoder); ≥ 30 decisions/s at
concurrency 32; ≥ 500/s with @static. Results: results/gateway/gateway.json and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, log: Path, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: process exited {proc.returncode}\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url}: not ready after {seconds} s\n{log.read_text()[-3000:]}")


def prompts(n: int = 400) -> list[str]:
    from benchroute.data.store import BenchmarkData
    from benchroute.packs import pack_files

    texts = BenchmarkData.load(pack_files()["data"]).instances()["text"]
    return [" ".join(t.split()[:40]) for t in texts.tolist()[:n]]


async def run_load(url: str, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """Send every body once, ``concurrency`` at a time; per request: status, latency, body kind,
    and the decision-ms header."""
    out: list[tuple[int, float, str, float | None]] = []
    it = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker() -> None:
            for body in it:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, json=body)
                except httpx.HTTPError as exc:
                    out.append((0, time.perf_counter() - t0, f"lost:{type(exc).__name__}", None))
                    continue
                dt = time.perf_counter() - t0
                try:
                    payload = r.json()
                except ValueError:
                    payload = {}
                if r.status_code == 200 and ("choices" in payload or "model" in payload):
                    kind = "answer"
                elif r.status_code >= 400 and isinstance(payload.get("error"), dict):
                    kind = "clean_error"
                else:
                    kind = f"lost:{r.status_code}"
                ms = r.headers.get("x-benchroute-decision-ms")
                out.append((r.status_code, dt, kind, float(ms) if ms else None))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array([o[1] for o in out]) * 1e3
    dec = np.array([o[3] for o in out if o[3] is not None])
    kinds: dict[str, int] = {}
    for o in out:
        kinds[o[2]] = kinds.get(o[2], 0) + 1
    return {"n": len(out), "wall_s": wall, "per_s": len(out) / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "decision_p50_ms": float(np.percentile(dec, 50)) if len(dec) else None,
            "decision_p99_ms": float(np.percentile(dec, 99)) if len(dec) else None,
            "outcomes": kinds}


def encoder_ceiling(encoder_name: str, texts: list[str], batch: int, call: int | None = None,
                    seconds: float = 10.0) -> float:
    """Texts per second the encoder alone embeds in batches of ``batch`` (this process, same
    prompts in request order, so padding as the gateway's batches pad), ``call`` texts per
    encoder call within a batch (the gateway's --encode-batch): the physical limit of
    decisions per second, before HTTP, search and policy."""
    from benchroute.embedding import get_encoder

    enc = get_encoder(encoder_name)
    enc.encode(texts[:batch])  # load the weights
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for start in range(0, len(texts), batch):
            enc.encode(texts[start:start + batch], batch_size=call or batch)
            done += len(texts[start:start + batch])
            if time.perf_counter() - t0 >= seconds:
                break
    return done / (time.perf_counter() - t0)


_WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def _ms(text: str) -> float:
    import re

    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if m is None:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def run_wrk(url: str, bodies: list[dict[str, Any]], concurrency: int, tmp: Path,
            seconds: int) -> dict[str, Any]:
    """The same load through wrk (C, one thread) for ``seconds``: the load generator then costs
    little CPU of the 2 cores the gateway shares with it. (wrk runs for a duration: a Lua
    ``thread:stop()`` after N responses leaves its main thread sleeping until -d ends.)"""
    import re

    body_file, script = tmp / "bodies.jsonl", tmp / "post.lua"
    body_file.write_text("\n".join(json.dumps(b) for b in bodies) + "\n")
    script.write_text(_WRK_SCRIPT)
    env = {**os.environ, "BENCH_BODIES": str(body_file)}
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s",
                          "--latency", "-s", str(script), url], capture_output=True, text=True,
                         env=env, timeout=seconds + 120).stdout
    lat = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.M))
    if "50" not in lat or "99" not in lat or "requests in" not in out:
        raise SystemExit(f"wrk output not understood:\n{out}")
    n = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"n": n, "per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": _ms(lat["50"]), "p99_ms": _ms(lat["99"]),
            "outcomes": {"non_2xx": int(non2xx.group(1)) if non2xx else 0,
                         "socket_errors": errors.group(1) if errors else "none"},
            "load_generator": "wrk"}


def start_gateway(router_dir: Path | None, upstreams: Path, port: int, log: Path,
                  env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchroute", "-q", "serve", "--upstreams", str(upstreams),
           "--port", str(port)]
    if router_dir is not None:
        cmd += ["--router", str(router_dir)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def static_router(folder: Path) -> Path:
    """The pack router refitted with the @static encoder (the pool embedded with it)."""
    from benchroute.data.store import BenchmarkData
    from benchroute.packs import pack_files
    from benchroute.router import Router

    data = BenchmarkData.load(pack_files()["data"])
    Router(encoder="all-mpnet-base-v2@static").fit(data).save(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--encoders", nargs="+", default=["default", "static"],
                    choices=["default", "static"])
    ap.add_argument("--wrk-seconds", type=int, default=30,
                    help="how long wrk drives /v1/route per concurrency (phase 1)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "gateway" / "gateway.json")
    args = ap.parse_args()

    from benchroute.default import default_router

    models = default_router().models_
    texts = prompts()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    up_port = free_port()
    up_log = tmp / "upstream.log"
    upstream = subprocess.Popen([sys.executable, "-m", "tests.fake_upstream", "--port",
                                 str(up_port), "--fail-every", "10"], cwd=REPO, env=env,
                                stdout=up_log.open("w"), stderr=subprocess.STDOUT)
    results: dict[str, Any] = {"requests": args.requests, "cpu_count": os.cpu_count(),
                               "runs": []}
    try:
        wait_ready(f"http://127.0.0.1:{up_port}/docs", upstream, up_log)
        ups = tmp / "upstreams.yaml"
        ups.write_text("models:\n" + "".join(
            f"  {json.dumps(m)}:\n    base_url: http://127.0.0.1:{up_port}/v1\n"
            f"    model: {json.dumps('up-' + m)}\n" for m in models))
        for enc in args.encoders:
            router_dir = static_router(tmp / "static-router") if enc == "static" else None
            name = "all-mpnet-base-v2@static" if enc == "static" else "all-mpnet-base-v2"
            # batches of 8 and 32 texts in one encoder call, and in calls of 4 (the gateway's)
            by_batch = {f"{b}/{c}": encoder_ceiling(name, texts, b, c)
                        for b, c in ((1, 1), (8, 8), (8, 4), (32, 32), (32, 4))}
            ceiling = max(by_batch.values())
            results.setdefault("encoder_ceiling_per_s", {})[enc] = by_batch
            print(f"{enc:7s} encoder alone, texts/s by batch/call size: "
                  + ", ".join(f"{b}: {v:.1f}" for b, v in by_batch.items()), flush=True)
            port = free_port()
            log = tmp / f"gateway-{enc}.log"
            gw = start_gateway(router_dir, ups, port, log, env)
            try:
                wait_ready(f"http://127.0.0.1:{port}/healthz", gw, log)
                base = f"http://127.0.0.1:{port}"
                for c in args.concurrency:
                    route = [{"input": texts[i % len(texts)]} for i in range(args.requests)]
                    chat = [{"model": "benchroute", "messages": [
                        {"role": "user", "content": texts[i % len(texts)]}]}
                        for i in range(args.requests)]
                    direct = [{**b, "model": "up-" + models[0]} for b in chat]
                    if shutil.which("wrk"):
                        r_route = run_wrk(base + "/v1/route", route, c, tmp, args.wrk_seconds)
                        live = httpx.get(base + "/status.json").json()["live"]["decision_ms"]
                        r_route["decision_p50_ms"] = live["p50"]   # the server's, last 2,000
                        r_route["decision_p99_ms"] = live["p99"]
                    else:
                        r_route = asyncio.run(run_load(base + "/v1/route", route, c))
                    r_chat = asyncio.run(run_load(base + "/v1/chat/completions", chat, c))
                    r_direct = asyncio.run(run_load(
                        f"http://127.0.0.1:{up_port}/v1/chat/completions", direct, c))
                    run = {"encoder": enc, "concurrency": c, "route": r_route, "chat": r_chat,
                           "direct": r_direct,
                           "overhead_p50_ms": r_chat["p50_ms"] - r_direct["p50_ms"],
                           "share_of_encoder_ceiling": r_route["per_s"] / ceiling}
                    results["runs"].append(run)
                    lost = sum(v for k, v in r_chat["outcomes"].items() if k.startswith("lost"))
                    print(f"{enc:7s} c={c:3d}  route {r_route['per_s']:7.1f}/s  p50 "
                          f"{r_route['p50_ms']:6.1f} ms  p99 {r_route['p99_ms']:6.1f} ms  "
                          f"(server {r_route['decision_p50_ms']:.1f}/{r_route['decision_p99_ms']:.1f})"
                          f" | chat {r_chat['per_s']:6.1f}/s {r_chat['outcomes']} lost {lost}"
                          f" | direct p50 {r_direct['p50_ms']:.1f} ms, overhead p50 "
                          f"{run['overhead_p50_ms']:.1f} ms | {100 * run['share_of_encoder_ceiling']:.0f}%"
                          " of the encoder ceiling", flush=True)
                results.setdefault("metrics", {})[enc] = httpx.get(base + "/metrics").text[-4000:]
            finally:
                gw.terminate()
                gw.wait(timeout=60)
    finally:
        upstream.terminate()
        upstream.wait(timeout=30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results))
    print(f"wrote {args.out}")


def markdown(results: dict[str, Any]) -> str:
    """The table of docs/performance.md ("Gateway") from a results file."""
    rows = ["| encoder | c | /v1/route per s | p50 / p99 ms (server p50 / p99) | share of encoder "
            "ceiling | chat per s | answers / clean errors / lost | overhead p50 ms |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        o = r["chat"]["outcomes"]
        lost = sum(v for k, v in o.items() if k.startswith("lost"))
        rt = r["route"]
        rows.append(f"| {r['encoder']} | {r['concurrency']} | {rt['per_s']:.1f} | "
                    f"{rt['p50_ms']:.1f} / {rt['p99_ms']:.1f} ({rt['decision_p50_ms']:.1f} / "
                    f"{rt['decision_p99_ms']:.1f}) | {100 * r['share_of_encoder_ceiling']:.0f}% | "
                    f"{r['chat']['per_s']:.1f} | {o.get('answer', 0)} / {o.get('clean_error', 0)}"
                    f" / {lost} | {r['overhead_p50_ms']:.1f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
