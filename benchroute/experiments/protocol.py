"""The leave-one-task-out protocol of SPEC.md §3, and per-instance routing.

One index holds every benchmark input; each held-out task (and, inside the reference pass, each
task held out beside it) is left out by exclusion at search time, so nothing is refit per task,
per α or per repeat. The selections equal those of a brute-force loop (benchmarks/protocol.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from benchroute.data.store import BenchmarkData
from benchroute.exceptions import BenchrouteError
from benchroute.predictors import KNNCorrectnessPredictor, column_means
from benchroute.router import Router, pool_arrays
from benchroute.scoring import (
    decide,
    few_shot_count,
    kernel_smooth,
    predictor_accuracy,
    reference_pairs,
    s1,
    s2,
    s3,
    task_distance,
    task_pairs,
)

logger = logging.getLogger(__name__)

METHODS = ("S1", "S2", "S3", "S3-true-p", "BMA", "BMA-incl", "Oracle", "LL")


def leave_one_task_out(
    data: BenchmarkData, router_params: Mapping[str, Any] | None = None,
    alphas: Sequence[float] = (0.0,), repeats: int = 10, seed: int = 0,
    embeddings: np.ndarray | None = None, tasks: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Run the protocol: for each held-out task, select with every method and score the choice.

    Parameters
    ----------
    data : BenchmarkData
        Each dataset is a task.
    router_params : dict, optional
        :class:`~benchroute.router.Router` parameters (k, bandwidth, eta, the reference pass's
        ``alphas`` and ``repeats``, encoder, ...).
    alphas, repeats : few-shot fractions of the held-out task and random draws per fraction
        (α = 0 is drawn once).
    embeddings : ndarray (N, d), optional
        Vectors of ``data.instances()``; embedded through the cache otherwise.
    tasks : list of str, optional
        Held-out tasks to run (default: all).

    Returns
    -------
    DataFrame
        One row per (task, alpha, repeat, method): ``model`` chosen, its ``accuracy`` on the
        held-out inputs (those not used as labels), ``oracle_accuracy``, ``n_test``, ``n_labeled``,
        ``u``, ``fell_back``; S3 rows also carry ``p_hat`` and ``p_true`` per model (dicts) and
        ``predictor_accuracy`` (mean true p over the candidate models). Only models with results
        on the held-out task are candidates. ``BMA`` is computed without the held-out task;
        ``BMA-incl`` with it, as the paper's scripts did. ``LL`` (highest mean completion
        log-probability) appears when the data has a ``logprob`` column.
    """
    router = Router(**dict(router_params or {}))
    router._validate_params()
    pool = pool_arrays(data, embeddings, router.embed)
    X, Y, ds, models = pool.X, pool.Y, pool.datasets, pool.models
    all_tasks = sorted(set(ds.tolist()))
    run_tasks = list(tasks) if tasks is not None else all_tasks
    pred = router._new_predictor().fit(X, Y, ds)
    task_acc = data.dataset_accuracy().reindex(columns=models)
    logprob = None
    if "logprob" in data.frame.columns and data.frame["logprob"].notna().any():
        logprob = data.correctness_matrix(column="logprob").reindex(columns=models).to_numpy(dtype=float)
    K = max(router.k, router.n_neighbours)
    unknown = sorted(set(run_tasks) - set(all_tasks))
    if unknown:
        raise BenchrouteError(f"unknown task(s) {unknown}; known: {all_tasks[:5]} ...")
    ref_args: dict[str, Any] = dict(alphas=router.alphas, repeats=router.repeats, seed=router.seed,
                    n_neighbours=router.n_neighbours, threshold=router.threshold)
    # each task's pairs with only itself held out; reused for a target they never touch
    cache = {t: task_pairs(pred, X, Y, ds, t, **ref_args) for t in all_tasks if (ds == t).sum() >= 2}
    rows: list[dict[str, Any]] = []
    for t_idx, task in enumerate(run_tasks):
        others = [t for t in all_tasks if t != task]
        ref = reference_pairs(pred, X, Y, ds, tasks=others, also_exclude=[task], cache=cache,
                              **ref_args)
        rd = np.flatnonzero(ds == task)
        Xd, Yd = X[rd], Y[rd]
        base = pred.neighbours(Xd, K, exclude_datasets=[task])
        means = pred.fallback_means([task])
        sims = Xd @ Xd.T if any(few_shot_count(len(rd), a) for a in alphas) else None
        acc_wo = task_acc.drop(index=task).mean(axis=0).to_numpy()
        acc_with = task_acc.mean(axis=0).to_numpy()
        for a_idx, alpha in enumerate(alphas):
            n_lab = few_shot_count(len(rd), alpha)
            rng = np.random.default_rng([seed, t_idx, a_idx])
            for rep in range(1 if n_lab == 0 else repeats):
                lab = rng.choice(len(rd), n_lab, replace=False) if n_lab else np.array([], dtype=int)
                keep = np.ones(len(rd), dtype=bool)
                keep[lab] = False
                test = np.flatnonzero(keep)
                nb = base.take(test)
                if n_lab:
                    assert sims is not None
                    nb = nb.merge(1.0 - sims[np.ix_(test, lab)], Yd[lab], K)
                rows.extend(_select_all(
                    router, pred, nb, means, Yd[test], ref, acc_wo, acc_with, models,
                    None if logprob is None else logprob[rd[test]],
                    dict(task=task, alpha=float(alpha), repeat=rep, n_test=len(test), n_labeled=n_lab)))
        logger.info("held out %s (%d/%d)", task, t_idx + 1, len(run_tasks))
    return pd.DataFrame(rows)


def _select_all(router: Router, pred: KNNCorrectnessPredictor, nb: Any, means: np.ndarray,
                y: np.ndarray, ref: Any, acc_wo: np.ndarray, acc_with: np.ndarray,
                models: list[str], logprob: np.ndarray | None, key: dict[str, Any]
                ) -> list[dict[str, Any]]:
    g, _ = pred.aggregate(nb, means)
    u = task_distance(nb, router.n_neighbours)
    true_acc = column_means(y, np.nan)
    cand = np.flatnonzero(~np.isnan(true_acc))
    if len(cand) == 0:
        return []
    p_true = predictor_accuracy(g, y, router.threshold)
    p_hat = np.nan_to_num(kernel_smooth(u, ref.u, ref.p, router.bandwidth), nan=0.5)
    S1, S2 = s1(g), s2(g, router.threshold)
    bma = int(cand[np.nanargmax(acc_wo[cand])])
    bma_incl = int(cand[np.nanargmax(acc_with[cand])])
    oracle = float(np.max(true_acc[cand]))
    choices: dict[str, tuple[int, bool]] = {}
    for method, score, p in (("S1", S1, None), ("S2", S2, None), ("S3", s3(S2, p_hat), p_hat),
                             ("S3-true-p", s3(S2, np.nan_to_num(p_true, nan=0.5)), p_true)):
        chosen, fell, _ = decide(score, cand, bma, g, p, router.threshold, router.eta,
                                 router.n_draws, router.seed)
        choices[method] = (chosen, fell)
    choices["BMA"] = (bma, False)
    choices["BMA-incl"] = (bma_incl, False)
    choices["Oracle"] = (int(cand[np.argmax(true_acc[cand])]), False)
    if logprob is not None:
        ll = column_means(logprob, np.nan)
        if np.isfinite(ll[cand]).any():
            choices["LL"] = (int(cand[np.nanargmax(np.where(np.isfinite(ll[cand]), ll[cand], -np.inf))]), False)
    out = []
    for method, (chosen, fell) in choices.items():
        row = {**key, "method": method, "model": models[chosen],
               "accuracy": float(true_acc[chosen]), "oracle_accuracy": oracle,
               "u": u, "fell_back": fell, "bma": models[bma]}
        if method == "S3":
            row["p_hat"] = {models[m]: float(p_hat[m]) for m in cand}
            row["p_true"] = {models[m]: float(p_true[m]) for m in cand}
            row["predictor_accuracy"] = float(np.nanmean(p_true[cand]))
        out.append(row)
    return out


def per_instance_routing(
    data: BenchmarkData, column: str = "score", router_params: Mapping[str, Any] | None = None,
    embeddings: np.ndarray | None = None, folds: int = 5, seed: int = 0,
) -> pd.DataFrame:
    """Route every input to argmax_m g_m(x) on a continuous quality (SPEC.md's MixInstruct setting).

    Inputs are split into ``folds`` seeded folds; each fold is routed from a pool of the other
    folds (one index, rows excluded at search time). Returns one row per dataset and an ``ALL``
    row: mean true quality of the routed model, of the best single model chosen on the other
    folds (``best_single``), of the best single model in hindsight on the test inputs
    (``best_single_hindsight``), of the per-input oracle, of a uniformly random model, the share
    of inputs routed to each model's top choice, and model calls per input (1 LLM + the encoder,
    against M LLM calls for a rank-all-candidates ensemble).
    """
    router = Router(**dict(router_params or {}))
    router._validate_params()
    pool = pool_arrays(data, embeddings, router.embed, column=column)
    X, ds, models = pool.X, pool.datasets, pool.models
    Q = pool.Y.astype(np.float64)
    lo, hi = np.nanmin(Q), np.nanmax(Q)
    Y = ((Q - lo) / (hi - lo) if hi > lo else np.full_like(Q, 0.5)).astype(np.float32)
    pred = router._new_predictor().fit(X, Y, ds)
    fold = np.random.default_rng(seed).permutation(len(X)) % folds
    routed = np.empty(len(X), dtype=int)
    single = np.empty(len(X), dtype=int)
    for f in range(folds):
        test = np.flatnonzero(fold == f)
        train = np.flatnonzero(fold != f)
        nb = pred.neighbours(X[test], router.k, exclude_rows=test)
        g, _ = pred.aggregate(nb, column_means(Y[train], 0.0))
        best = int(np.nanargmax(column_means(Q[train], np.nan)))
        pick = np.argmax(np.where(np.isnan(Q[test]), -np.inf, g), axis=1)  # only models with a result
        tie = np.isclose(g[np.arange(len(test)), best], g[np.arange(len(test)), pick]) & ~np.isnan(Q[test, best])
        pick[tie] = best
        routed[test] = pick
        single[test] = best
    rows = []
    for name, sel in [(d, ds == d) for d in sorted(set(ds.tolist()))] + [("ALL", np.ones(len(X), bool))]:
        q = Q[sel]
        idx = np.arange(len(q))
        with np.errstate(invalid="ignore"):
            col_means = np.nanmean(q, axis=0)
        rows.append({
            "dataset": name, "n": int(sel.sum()), "models": len(models),
            "routed": float(np.nanmean(q[idx, routed[sel]])),
            "best_single": float(np.nanmean(q[idx, single[sel]])),
            "best_single_hindsight": float(np.nanmax(col_means)),
            "best_single_model": models[int(np.nanargmax(col_means))],
            "oracle": float(np.nanmean(np.nanmax(q, axis=1))),
            "random": float(np.nanmean(np.nanmean(q, axis=1))),
            "share_top_routed": float(np.bincount(routed[sel], minlength=len(models)).max() / sel.sum()),
            "calls_routed": 1, "calls_rank_all": len(models),
        })
    return pd.DataFrame(rows)
