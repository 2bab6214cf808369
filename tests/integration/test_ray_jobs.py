"""Ray Data embedding and routing against the local path, on a local two-CPU Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchroute.cli import main
from benchroute.embedding import embed_texts
from benchroute.exceptions import BenchrouteError
from benchroute.router import Router
from benchroute.scale.ray_jobs import embed_with_ray, route_with_ray

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

TEXTS = [f"question {i} about {'cats' if i % 3 else 'dogs'} and {'tea' if i % 2 else 'rain'}"
         for i in range(40)]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (the jobs use it and leave it running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_embed_equals_local_and_fills_the_cache(local_ray, tmp_path):
    texts = TEXTS + TEXTS[:5]  # repeats travel once
    report = embed_with_ray(texts, "hashing-64-12", tmp_path / "ray", actors=2, rows_per_task=8)
    local = embed_texts(texts, "hashing-64-12", tmp_path / "local")
    np.testing.assert_array_equal(report.vectors, local)
    assert (report.cached, report.embedded, report.nodes) == (0, len(TEXTS), 1)
    # the job's Ray Data settings do not outlive it
    assert ray.data.DataContext.get_current().execution_options.preserve_order is False
    again = embed_with_ray(texts + ["one more question"], "hashing-64-12", tmp_path / "ray")
    assert (again.cached, again.embedded) == (len(texts), 1)
    assert embed_with_ray(texts, "hashing-64-12", tmp_path / "ray").nodes == 0  # all cached
    np.testing.assert_array_equal(again.vectors[:-1], local)
    # the vectors are in the cache a local run reads: nothing left to encode there
    assert embed_texts(texts, "hashing-64-12", tmp_path / "ray").shape == local.shape


@pytest.mark.parametrize("policy, params, ood", [
    ("best", {}, {}),
    ("threshold", {"strong": "m0", "weak": "m2", "t": 0.05}, {}),
    ("best", {}, {"ood_alpha": 0.5, "keep_duplicates": True}),
])
def test_route_equals_router_route(local_ray, router_dir, tmp_path, policy, params, ood):
    texts = [f"task {i % 4} input {i}" for i in range(30)] + ["zebra quartz fjord nymph"]
    report = route_with_ray(texts, tmp_path / "routed.parquet", router_dir, policy=policy,
                            params=params, actors=2, rows_per_task=7, **ood)
    assert (report.rows, report.nodes) == (len(texts), 1)
    got = pd.read_parquet(report.out)
    want = Router.load(router_dir).route_table(texts, policy=policy, **params, **ood)
    if ood:
        assert want["ood_fallback"].any()               # the fallback is exercised
    assert got["row"].tolist() == list(range(len(texts)))
    pd.testing.assert_frame_equal(got.drop(columns="row"), want, check_dtype=False)


def test_route_checks_before_the_job(router_dir, tmp_path):
    with pytest.raises(BenchrouteError, match="decides over the whole set"):
        route_with_ray(["a"], tmp_path / "x.parquet", router_dir, policy="budget",
                       params={"budget": 1.0})
    with pytest.raises(BenchrouteError, match="takes"):
        route_with_ray(["a"], tmp_path / "x.parquet", router_dir, policy="best", params={"tau": 1})
    with pytest.raises(BenchrouteError, match="rows_per_task == 0"):
        route_with_ray(["a"], tmp_path / "x.parquet", router_dir, rows_per_task=0)
    assert not (tmp_path / "x.parquet").exists()
    # an output path that cannot be written: refused before the job (after it, before)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BenchrouteError, match=r"file/x\.parquet: cannot write the routed file "
                                              r"\(.*file is not a folder\)"):
        route_with_ray(["a"], tmp_path / "file" / "x.parquet", router_dir)
    with pytest.raises(BenchrouteError, match="is a folder or no file name"):
        route_with_ray(["a"], tmp_path, router_dir)


def test_one_string_is_one_text(local_ray, router_dir, tmp_path):
    """route_with_ray("a text") routed each character (route_table takes it as one text)."""
    report = route_with_ray("task 1 input 3", tmp_path / "one.parquet", router_dir, actors=1)
    assert report.rows == 1 and len(pd.read_parquet(report.out)) == 1
    # one candidate named as a string is one model, on the actors too (sent as its letters
    # before; a review)
    model = Router.load(router_dir).models_[0]
    one = route_with_ray(["task 1 input 3"], tmp_path / "cand.parquet", router_dir, actors=1,
                         candidates=model)
    assert pd.read_parquet(one.out)["model"].tolist() == [model]


def test_an_actor_larger_than_the_cluster_is_refused(local_ray, router_dir, tmp_path):
    """cpus_per_actor above the cluster's CPUs: Ray waited for a place forever, the job hung
    and a killed run left its temporary output (found by fuzzing)."""
    with pytest.raises(BenchrouteError, match=r"cpus_per_actor == 3, but the largest node of "
                                              r"the Ray cluster has 2 CPUs: no actor could start"):
        route_with_ray(["a b", "c d"], tmp_path / "big.parquet", router_dir, cpus_per_actor=3)
    with pytest.raises(BenchrouteError, match=r"cpus_per_actor == 3"):
        embed_with_ray(["a b"], "hashing-64-12", tmp_path / "c", cpus_per_actor=3)
    assert not list(tmp_path.glob("big.parquet*"))


def test_route_a_stream_as_it_comes(local_ray, router_dir, tmp_path):
    """An iterator of texts (a prompt file read line by line) is put in the object store a
    block at a time: every text routed as a list routes it, and a bad text found late stops
    the job with no file written."""
    texts = [f"task {i % 4} input {i}" for i in range(23)]
    pulled = []

    def stream():
        for t in texts:
            pulled.append(t)
            yield t

    report = route_with_ray(stream(), tmp_path / "s.parquet", router_dir, actors=2,
                            rows_per_task=5)
    assert report.rows == len(texts) == len(pulled)
    want = Router.load(router_dir).route_table(texts)
    got = pd.read_parquet(report.out)
    assert got["row"].tolist() == list(range(len(texts)))
    pd.testing.assert_frame_equal(got.drop(columns="row"), want, check_dtype=False)
    with pytest.raises(BenchrouteError, match=r"texts\[12\] is empty or only whitespace"):
        route_with_ray(iter(texts[:12] + [" "]), tmp_path / "bad.parquet", router_dir)
    with pytest.raises(BenchrouteError, match=r"texts\[3\] is a int, expected str"):
        route_with_ray(iter([*texts[:3], 7]), tmp_path / "bad.parquet", router_dir)
    with pytest.raises(BenchrouteError, match="texts is empty"):
        route_with_ray(iter([]), tmp_path / "bad.parquet", router_dir)
    assert not (tmp_path / "bad.parquet").exists()


def test_cli_route_on_ray_reads_the_file_as_it_goes(local_ray, router_dir, tmp_path,
                                                    monkeypatch, capsys):
    """``route --ray`` hands Ray the file's texts as a stream: the CLI never lists them."""
    import benchroute.cli as cli

    def no_list(path):
        raise AssertionError("route --ray read the whole file into a list")

    monkeypatch.setattr(cli, "_read_texts", no_list)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(f'{{"text": "task {i % 4} input {i}"}}\n' for i in range(9))
                       + '{"text": 3}\n')
    assert main(["route", "--ray", str(prompts), "--router", str(router_dir),
                 "--out", str(tmp_path / "o.parquet"), "--quiet"]) != 0
    assert "p.jsonl: line 10 has no string field 'text'" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"task {i % 4} input {i}\n" for i in range(9)))
    assert main(["route", "--ray", str(prompts), "--router", str(router_dir),
                 "--out", str(tmp_path / "o.parquet"), "--quiet"]) == 0
    assert len(pd.read_parquet(tmp_path / "o.parquet")) == 9


def test_cli_route_and_embed_on_ray(local_ray, router_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"task {i % 4} input {i}" for i in range(12)) + "\n")
    ray_out, local_out = tmp_path / "ray.parquet", tmp_path / "local.parquet"
    assert main(["route", "--ray", str(prompts), "--router", str(router_dir),
                 "--out", str(ray_out)]) == 0
    assert main(["route", str(prompts), "--router", str(router_dir), "--out", str(local_out)]) == 0
    assert "routed 12 inputs (best) on Ray (1 node) ->" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(ray_out), pd.read_parquet(local_out))

    table = tmp_path / "t.csv"
    table.write_text("text,dataset,a,b\n" + "\n".join(
        f"{t},{'c' if i < 6 else 'd'},{i % 2},{1 - i % 2}" for i, t in enumerate(TEXTS[:12])) + "\n")
    args = ["embed", str(table), "--encoder", "hashing-32-12", "--store", str(tmp_path / "c")]
    assert main([*args, "--ray", "--actors", "1"]) == 0
    assert "0 cached, 12 embedded on Ray (1 node)" in capsys.readouterr().out
    assert main(args) == 0
    assert "12 cached, 0 embedded" in capsys.readouterr().out


def test_cli_ray_needs_a_file_and_out(router_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("task 1 input 1\n")
    assert main(["route", "--ray", str(prompts), "--router", str(router_dir)]) != 0
    assert "add --out" in capsys.readouterr().err
    assert main(["route", "--ray", "auto", "--out", str(tmp_path / "o.parquet")]) != 0
    assert "give the texts" in capsys.readouterr().err
    assert main(["route", str(prompts), "--actors", "2", "--out", str(tmp_path / "o")]) != 0
    assert "--actors applies to --ray only" in capsys.readouterr().err


@pytest.mark.real_model
def test_real_model_vectors_equal_local(local_ray, mpnet_installed, tmp_path):
    texts = TEXTS[:12]
    report = embed_with_ray(texts, "all-mpnet-base-v2", tmp_path / "ray", actors=1)
    local = embed_texts(texts, "all-mpnet-base-v2", tmp_path / "local")
    # batches differ (length-sorted tasks here, one call there): padding rounds differently
    assert float(np.min(np.sum(report.vectors * local, axis=1))) > 0.99999


def test_a_failing_actor_is_a_library_error(local_ray, router_dir, tmp_path, monkeypatch):
    import shutil

    from benchroute.scale import ray_jobs

    # the driver reads the router; the actors find its folder gone
    copy = tmp_path / "r"
    shutil.copytree(router_dir, copy)
    real = ray_jobs._open_router

    def open_then_remove(folder):
        router = real(folder)
        shutil.rmtree(copy)
        return router

    monkeypatch.setattr(ray_jobs, "_open_router", open_then_remove)
    with pytest.raises(BenchrouteError, match="the Ray job failed on the node at ") as err:
        route_with_ray(["task 1 input 1"], tmp_path / "o.parquet", copy, actors=1)
    # the worker's own error, whole, without Ray's traceback around it
    assert str(copy) in str(err.value) and "Traceback" not in str(err.value)
    assert not (tmp_path / "o.parquet").exists()


def test_a_batch_that_kills_its_worker_fails_the_job(local_ray, router_dir, tmp_path,
                                                     monkeypatch):
    """Ray Data restarts a dead actor and retries its batch forever by default: a batch that
    killed its worker each time (memory, a native crash) hung the job with no error (found by a
    review). Now the job fails after a few tries, with nothing written."""
    import os

    from benchroute.scale import ray_jobs

    class Crashing(ray_jobs.RouteBatch):  # defined here, so Ray ships it by value
        def __call__(self, batch):
            if "poison" in ray_jobs._texts(batch["text"]):
                os._exit(137)
            return super().__call__(batch)

    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(ray_jobs, "RouteBatch", Crashing)
    texts = [f"task {i % 4} input {i}" for i in range(12)] + ["poison"]
    pool = ThreadPoolExecutor(1)  # a hang fails this test instead of hanging the suite
    try:
        job = pool.submit(route_with_ray, texts, tmp_path / "o.parquet", router_dir, actors=1,
                          rows_per_task=4)
        with pytest.raises(BenchrouteError, match="the Ray job failed.*died"):
            job.result(timeout=180)
    finally:
        pool.shutdown(wait=False)
    assert not (tmp_path / "o.parquet").exists()


def test_a_text_with_a_lone_surrogate_routes_on_ray(local_ray, router_dir, tmp_path):
    """Arrow's strings refuse a lone surrogate (a JSONL prompt can hold one, and a local run
    routes it): the job failed on the driver with a bare UnicodeEncodeError (found by a
    review)."""
    import json

    texts = ["task 1 input 1", json.loads('"a prompt \\ud800 with a lone surrogate"')]
    report = route_with_ray(texts, tmp_path / "o.parquet", router_dir, actors=1)
    got = pd.read_parquet(report.out)
    want = Router.load(router_dir).route_table(texts)
    assert got["model"].tolist() == want["model"].tolist()
    np.testing.assert_array_equal(got["p"].to_numpy(), want["p"].to_numpy())
