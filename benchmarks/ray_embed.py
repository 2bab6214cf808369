"""Ray Data embedding against the local cached path on this machine, measured in one run.

    python benchmarks/ray_embed.py [--n 96] [--encoder all-mpnet-base-v2] [--actors 2]
                                   [--nodes 2]

The same N RouterDC questions (a seeded draw, so a length mix) are embedded into two fresh
caches: locally (``embed_texts``, one process, all cores) and through
:func:`benchroute.scale.ray_jobs.embed_with_ray` on a local Ray (``--actors`` encoder copies,
``--cpus-per-actor`` CPUs each, so OMP threads per actor). Printed: Ray start-up, texts/s of
each path without start-up, their ratio, and the min cosine between the two sets of vectors.
On a cluster, texts/s per node is what the Ray figure is per node of this size.

``--nodes N`` (N >= 2) starts Ray's test cluster instead: N nodes on this machine (separate
raylets and object stores, on loopback), the machine's CPUs split evenly between them, joined
by address as a driver joins a real cluster. The nodes share this machine's cores, so this
measures what crossing nodes costs, not what more machines add.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from _common import SHARED

from benchroute import load
from benchroute.embedding import embed_texts
from benchroute.scale.ray_jobs import embed_with_ray


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--encoder", default="all-mpnet-base-v2")
    ap.add_argument("--actors", type=int, default=None)
    ap.add_argument("--cpus-per-actor", type=float, default=1.0)
    ap.add_argument("--rows-per-task", type=int, default=32)
    ap.add_argument("--nodes", type=int, default=1)
    args = ap.parse_args()
    if args.nodes > 1:  # the test cluster's nodes listen on loopback only (read at ray's import)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

    texts_all = load(SHARED / "data" / "routerdc").instances()["text"].drop_duplicates().tolist()
    rng = np.random.default_rng(0)
    texts = [texts_all[i] for i in rng.choice(len(texts_all), size=args.n, replace=False)]
    import ray

    cpus = os.cpu_count() or 1
    t0 = time.perf_counter()
    cluster = None
    if args.nodes > 1:
        from ray.cluster_utils import Cluster

        per_node = max(1, cpus // args.nodes)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node,
                                                                "include_dashboard": False})
        for _ in range(args.nodes - 1):
            cluster.add_node(num_cpus=per_node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        embed_texts(texts[:2], args.encoder, f"{tmp}/warm", progress=False)  # load weights once
        t0 = time.perf_counter()
        local = embed_texts(texts, args.encoder, f"{tmp}/local", progress=False)
        t_local = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = embed_with_ray(texts, args.encoder, f"{tmp}/ray", actors=args.actors,
                                cpus_per_actor=args.cpus_per_actor,
                                rows_per_task=args.rows_per_task)
        t_ray = time.perf_counter() - t0
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()
    cos = np.sum(local * report.vectors, axis=1)
    print(f"{args.n} RouterDC texts, {args.encoder}, {cpus} CPUs; Ray start-up "
          f"{startup:.1f} s; {args.nodes} node(s), {report.nodes} of them embedded")
    print(f"local  : {args.n / t_local:7.2f} texts/s ({t_local:.1f} s)")
    print(f"ray    : {args.n / t_ray:7.2f} texts/s ({t_ray:.1f} s, includes the actors' model "
          f"load; actors={args.actors or 'one per CPU'}, cpus/actor={args.cpus_per_actor})")
    print(f"ratio ray/local texts/s: {t_local / t_ray:.2f}; min cosine {cos.min():.6f}")


if __name__ == "__main__":
    main()
