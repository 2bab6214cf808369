"""The leave-one-task-out protocol (docs/method.md, "Experiments": each task held out in turn,
the others form the pool, every method scored by the held-out task's accuracy of its choice), and
per-instance routing, on the public API.

One router is fitted on every benchmark input; each held-out task is left out with
``exclude_datasets``, which is exact (pool, fallback means, BMA and reference pairs equal those
of a router fitted without the task), so nothing is refit per task, per α or per repeat. A
task's pool neighbours are searched once (:meth:`Router.task_neighbours`); each few-shot draw is
then :meth:`TaskNeighbours.select <benchroute.task.TaskNeighbours.select>`, the path
:meth:`Router.select_embedded` takes too, and the other methods go through the same decision
rule, :func:`benchroute.selection.choose`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from benchroute.data.metrics import short_repr
from benchroute.data.pool import pool_arrays
from benchroute.data.store import BenchmarkData
from benchroute.exceptions import BenchrouteError
from benchroute.experiments.crossfit import routing_router
from benchroute.inputs import are_fractions, check_router_params, is_int, is_items
from benchroute.predictors import column_means
from benchroute.reference import alpha_key, few_shot_count
from benchroute.router import Router
from benchroute.routing import router_proba
from benchroute.sampling import task_seed
from benchroute.scoring import best_on_average, predictor_accuracy, s1, s2, s3, task_means
from benchroute.selection import Selection, SelectionConfig, choose, route_rows
from benchroute.tuning import fold_ids

logger = logging.getLogger(__name__)

METHODS = ("S1", "S2", "S3", "S3-true-p", "BMA", "BMA-incl", "Oracle", "LL")
RouterParams = Mapping[str, object]


def leave_one_task_out(
    data: BenchmarkData, router_params: RouterParams | None = None,
    alphas: Sequence[float] = (0.0,), repeats: int = 10, seed: int = 0,
    embeddings: np.ndarray | None = None, tasks: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Run the protocol: for each held-out task, select with every method and score the choice.

    Parameters
    ----------
    data : BenchmarkData
        Each dataset is a task; at least two are needed.
    router_params : dict, optional
        :class:`~benchroute.router.Router` parameters (k, bandwidth, eta, the reference pass's
        ``alphas`` and ``repeats``, prior_strength, encoder, ...).
    alphas, repeats : few-shot fractions of the held-out task and random draws per fraction
        (α = 0 is drawn once); each draw is seeded by (seed, the task's name, α).
    embeddings : ndarray (N, d), optional
        Vectors of ``data.instances()``; embedded through the cache otherwise.
    tasks : list of str, optional
        Held-out tasks to run (default: all).

    Returns
    -------
    DataFrame
        One row per (task, alpha, repeat, method): ``model`` chosen, its ``accuracy`` on the
        held-out inputs (those not used as labels), ``oracle_accuracy``, ``n_test``, ``n_labeled``,
        ``u``, ``fell_back``; S3 rows also carry ``p_hat`` (the p S3 used), ``p_kernel`` (the
        kernel estimate at the task's distance alone, before the self-estimate and the few-shot
        labels) and ``p_true`` per model (dicts), ``predictor_accuracy`` (mean
        true p over the candidate models), ``shift_statistic`` and ``shift_p`` (the held-out
        task's form shift, :mod:`benchroute.shift`) and ``shift_fell_back`` (whether it moved
        S3's choice to BMA). Only models with results on the held-out task are
        candidates. ``BMA`` is computed without the held-out task; ``BMA-incl`` with it, as the
        paper's scripts did. ``LL`` (highest mean completion log-probability) appears when the
        data has a ``logprob`` column.
    """
    given, alphas = alphas, list(alphas) if is_items(alphas) else []
    if not are_fractions(alphas):
        raise BenchrouteError(f"alphas == {short_repr(given, 60)}, expected a non-empty list of "
                              "few-shot fractions in [0, 1)")
    if not is_int(repeats) or int(repeats) < 1:
        raise BenchrouteError(f"repeats == {short_repr(repeats, 60)}, expected an integer >= 1")
    # the protocol selects per task and never routes per input: no tuned predictor to fit
    router = Router().set_params(**{**dict(router_params or {}), "tune": False})
    check_router_params(router.get_params())
    pool = pool_arrays(data, embeddings, router.embed)
    X, Y, ds, models = pool.X, pool.Y, pool.datasets, pool.models
    all_tasks = sorted(set(ds.tolist()))
    if len(all_tasks) < 2:
        raise BenchrouteError(f"leave-one-task-out needs at least two tasks; the data has "
                              f"{len(all_tasks)} ({all_tasks})")
    run_tasks = list(tasks) if tasks is not None else all_tasks
    unknown = sorted(set(run_tasks) - set(all_tasks))
    if unknown:
        raise BenchrouteError(f"unknown task(s) {unknown}; known: {all_tasks[:5]} ...")
    router.fit_arrays(X, Y, ds, models, pool.instance_ids,
                      data.dataset_accuracy().reindex(columns=models))
    # as Router.fit: the pool's texts, so S3 tests each held-out task's form shift
    router.texts_ = texts = list(data.instances()["text"])
    logprob = None
    if "logprob" in data.frame.columns and data.frame["logprob"].notna().any():
        logprob = data.correctness_matrix(column="logprob").reindex(columns=models).to_numpy(dtype=float)
    acc_with = router.task_accuracy_.to_numpy(dtype=float)
    rows: list[dict[str, object]] = []
    for t_idx, task in enumerate(run_tasks):
        rd = np.flatnonzero(ds == task)
        Yd = Y[rd]
        view = router.task_neighbours(X[rd], exclude_datasets=[task],  # one search per task
                                      texts=[texts[i] for i in rd])
        for alpha in alphas:
            n_lab = few_shot_count(len(rd), alpha)
            rng = np.random.default_rng(task_seed(seed, task, alpha_key(alpha)))
            for rep in range(1 if n_lab == 0 else repeats):
                lab = rng.choice(len(rd), n_lab, replace=False) if n_lab else np.array([], dtype=int)
                test = np.setdiff1d(np.arange(len(rd)), lab)
                y = Yd[test]
                cand = np.flatnonzero(~np.isnan(column_means(y, np.nan)))
                if len(cand) == 0:
                    continue
                sel = view.select(test, lab, Yd[lab] if n_lab else None, [models[i] for i in cand])
                assert sel.proba is not None
                rows.extend(_method_rows(
                    sel, sel.proba, y, cand, acc_with, models, router.config(),
                    None if logprob is None else logprob[rd[test]],
                    dict(task=task, alpha=float(alpha), repeat=rep, n_test=len(test), n_labeled=n_lab)))
        logger.info("held out %s (%d/%d)", task, t_idx + 1, len(run_tasks))
    return pd.DataFrame(rows)


def _method_rows(sel: Selection, g: np.ndarray, y: np.ndarray, cand: np.ndarray,
                 acc_with: np.ndarray, models: list[str], config: SelectionConfig,
                 logprob: np.ndarray | None, key: dict[str, object]) -> list[dict[str, object]]:
    """Every method's choice for one draw: S3 is the router's selection; S1, S2 and S3 with
    the true p go through the same rule (:func:`choose`)."""
    true_acc = column_means(y, np.nan)
    p_true = predictor_accuracy(g, y, config.threshold)
    S2 = s2(g, config.threshold)
    bma = models.index(sel.bma)
    choices: dict[str, tuple[int, bool]] = {"S3": (models.index(sel.model), sel.fell_back)}
    for method, score, p in (("S1", s1(g), None), ("S2", S2, None),
                             ("S3-true-p", s3(S2, np.nan_to_num(p_true, nan=0.5)), p_true)):
        chosen, fell, _ = choose(score, cand, bma, g, p, config)
        choices[method] = (chosen, fell)
    choices["BMA"] = (bma, False)
    choices["BMA-incl"] = (best_on_average(acc_with, cand), False)
    choices["Oracle"] = (int(cand[np.argmax(true_acc[cand])]), False)
    if logprob is not None:
        ll = column_means(logprob, np.nan)
        if np.isfinite(ll[cand]).any():
            choices["LL"] = (int(cand[np.nanargmax(np.where(np.isfinite(ll[cand]), ll[cand], -np.inf))]), False)
    oracle = float(np.max(true_acc[cand]))
    out = []
    for method in METHODS:
        if method not in choices:
            continue
        chosen, fell = choices[method]
        row = {**key, "method": method, "model": models[chosen],
               "accuracy": float(true_acc[chosen]), "oracle_accuracy": oracle,
               "u": sel.task_distance, "fell_back": fell, "bma": sel.bma}
        if method == "S3":
            scores = sel.scores
            row["p_hat"] = {m: float(scores.loc[m, "p_hat"]) for m in scores.index}
            row["p_kernel"] = {m: float(scores.loc[m, "p_kernel"]) for m in scores.index}
            row["p_true"] = {models[m]: float(p_true[m]) for m in cand}
            row["predictor_accuracy"] = float(np.nanmean(p_true[cand]))
            shift = sel.shift
            row["shift_statistic"] = None if shift is None else shift.statistic
            row["shift_p"] = None if shift is None else shift.p_value
            row["shift_fell_back"] = sel.shift_fell_back
        out.append(row)
    return out


def per_instance_routing(
    data: BenchmarkData, column: str = "score", router_params: RouterParams | None = None,
    embeddings: np.ndarray | None = None, folds: int = 5, seed: int = 0,
) -> pd.DataFrame:
    """Route every input to argmax_m P(m, x) on a continuous quality (the MixInstruct
    setting: one quality score per model and input, e.g. BERTScore against a reference answer).

    Inputs are split into ``folds`` seeded folds; each fold is routed from a pool of the other
    folds (a router fitted on them; its reference pass runs at α = 0 only, once, though routing does
    not use p̂), by the P(m, x) that :meth:`Router.route` uses (:func:`benchroute.routing.router_proba`:
    the tuned per-input predictor by default, g_m(x) with ``tune=False``) and the routing rule of
    :func:`benchroute.selection.route_rows` (ties to the best single model of the other folds,
    only models with a result on the input). Returns one row per dataset and an ``ALL``
    row: mean true quality of the routed model, of the best single model chosen on the other
    folds (``best_single``), of the best single model in hindsight on the test inputs
    (``best_single_hindsight``, the best on average of the test inputs' tasks, as
    :func:`benchroute.scoring.best_on_average` picks it everywhere), of the per-input oracle, of a uniformly random model, the share
    of inputs routed to each model's top choice, and model calls per input (1 LLM + the encoder,
    against M LLM calls for a rank-all-candidates ensemble).
    """
    params: dict[str, object] = {**dict(router_params or {}), "alphas": (0.0,), "repeats": 1}
    router = Router().set_params(**params)
    check_router_params(router.get_params())
    pool = pool_arrays(data, embeddings, router.embed, column=column)
    X, ds, models = pool.X, pool.datasets, pool.models
    Q = pool.Y.astype(np.float64)
    lo, hi = np.nanmin(Q), np.nanmax(Q)
    Y = ((Q - lo) / (hi - lo) if hi > lo else np.full_like(Q, 0.5)).astype(np.float32)
    fold, _ = fold_ids(len(X), None, folds, seed)
    routed = np.empty(len(X), dtype=int)
    single = np.empty(len(X), dtype=int)
    every = np.arange(len(models))
    for f in range(fold.max() + 1):
        test = np.flatnonzero(fold == f)
        train = np.flatnonzero(fold != f)
        fitted = routing_router(X[train], Y[train], ds[train], models, router_params=params)
        best = best_on_average(task_means(Q[train], ds[train]))
        P = router_proba(fitted, X[test])  # what Router.route uses: tuned P, or g with tune=False
        routed[test] = route_rows(P, every, best, available=~np.isnan(Q[test]))
        single[test] = best
    rows = []
    for name, sel in [(d, ds == d) for d in sorted(set(ds.tolist()))] + [("ALL", np.ones(len(X), bool))]:
        q = Q[sel]
        idx = np.arange(len(q))
        # in hindsight by the one rule of "best single", each task counting once (the ALL row
        # took the best mean over inputs before, so its largest task weighed most)
        hindsight = best_on_average(task_means(q, ds[sel]))
        rows.append({
            "dataset": name, "n": int(sel.sum()), "models": len(models),
            "routed": float(np.nanmean(q[idx, routed[sel]])),
            "best_single": float(np.nanmean(q[idx, single[sel]])),
            "best_single_hindsight": float(np.nanmean(q[:, hindsight])),
            "best_single_model": models[hindsight],
            "oracle": float(np.nanmean(np.nanmax(q, axis=1))),
            "random": float(np.nanmean(np.nanmean(q, axis=1))),
            "share_top_routed": float(np.bincount(routed[sel], minlength=len(models)).max() / sel.sum()),
            "calls_routed": 1, "calls_rank_all": len(models),
        })
    return pd.DataFrame(rows)
