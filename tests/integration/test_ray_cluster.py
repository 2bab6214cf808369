"""Ray Data jobs on a cluster of several nodes, joined by its address as a user's driver does.

The nodes are separate raylets (each with its own object store and worker processes) started
on this machine by Ray's own test cluster, on loopback: the batches cross between nodes as on
a real cluster, but the nodes share this machine's files, so what differs between real
machines (an installed model, a router folder) is set per node through its environment.
"""

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
cluster_utils = pytest.importorskip("ray.cluster_utils")

TEXTS = [f"note {i}: {'stars' if i % 3 else 'rivers'} at {'dawn' if i % 2 else 'noon'}"
         for i in range(48)]


@pytest.fixture(scope="module")
def two_nodes():
    """A head node and a second node, one CPU each; the jobs join it by address."""
    assert not ray.is_initialized()
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster.address
    cluster.shutdown()


@pytest.fixture(autouse=True)
def all_actors_first():
    """Ray Data hands blocks to the pool's actors as they come up, so a job of a few blocks may
    finish on the first actor before the second has started; here the pool starts every actor
    first, so that what is tested is that work crossing nodes comes back whole and counted."""
    ctx = ray.data.DataContext.get_current()
    before = ctx.wait_for_min_actors_s
    ctx.wait_for_min_actors_s = 120
    yield
    ctx.wait_for_min_actors_s = before


def test_embed_spreads_over_the_nodes(two_nodes, tmp_path):
    report = embed_with_ray(TEXTS, "hashing-64-12", tmp_path / "ray", address=two_nodes,
                            actors=2, rows_per_task=6)
    # one actor per node: each asks for the one CPU a node has
    assert (report.embedded, report.nodes) == (len(TEXTS), 2)
    np.testing.assert_array_equal(report.vectors, embed_texts(TEXTS, "hashing-64-12",
                                                              tmp_path / "local"))
    assert not ray.is_initialized()  # the job left the cluster; the cluster still runs
    assert embed_with_ray(TEXTS, "hashing-64-12", tmp_path / "ray", address=two_nodes).cached \
        == len(TEXTS)


def test_route_spreads_over_the_nodes(two_nodes, router_dir, tmp_path):
    texts = [f"task {i % 4} input {i}" for i in range(40)] + ["zebra quartz fjord nymph"]
    params = {"strong": "m0", "weak": "m2", "t": 0.05}
    report = route_with_ray(texts, tmp_path / "routed.parquet", router_dir, policy="threshold",
                            params=params, address=two_nodes, actors=2, rows_per_task=5,
                            ood_alpha=0.5)
    assert (report.rows, report.nodes) == (len(texts), 2)
    want = Router.load(router_dir).route_table(texts, policy="threshold", ood_alpha=0.5,
                                               **params)
    assert want["ood_fallback"].any()
    got = pd.read_parquet(report.out)
    assert got["row"].tolist() == list(range(len(texts)))
    pd.testing.assert_frame_equal(got.drop(columns="row"), want, check_dtype=False)


def test_cli_joins_the_cluster_by_address(two_nodes, router_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    # 3,000 prompts: 12 blocks of the CLI's 256 rows; with fewer, Ray Data may keep them all on
    # the actor beside the driver (it prefers the node that holds a block)
    prompts.write_text("\n".join(f"task {i % 4} input {i}" for i in range(3000)) + "\n")
    out = tmp_path / "routed.parquet"
    assert main(["-q", "route", str(prompts), "--ray", two_nodes, "--router", str(router_dir),
                 "--actors", "2", "--out", str(out)]) == 0
    assert "routed 3000 inputs (best) on Ray (2 nodes) ->" in capsys.readouterr().out
    assert len(pd.read_parquet(out)) == 3000


@pytest.mark.real_model
def test_a_node_without_the_model_is_named(mpnet_installed, tmp_path):
    """The one node with CPUs has an empty $BENCHROUTE_HOME: the error is the library's,
    with that node's model folder and the install hint, not a truncated Ray traceback."""
    empty = tmp_path / "node-home"
    empty.mkdir()
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, env_vars={"BENCHROUTE_HOME": str(empty)})
        cluster.wait_for_nodes()
        with pytest.raises(BenchrouteError) as err:
            embed_with_ray(TEXTS[:4], "all-mpnet-base-v2", tmp_path / "cache",
                           address=cluster.address, actors=1)
    finally:
        cluster.shutdown()
    message = str(err.value)
    assert message.startswith("the Ray job failed on the node at ")
    assert f"not installed in {empty / 'models'}" in message
    assert "benchroute model install" in message and "Traceback" not in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))
