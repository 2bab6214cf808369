"""Where the per-input targets sit: routing that knows each input's task (docs/routing.md,
"How far the per-input targets are from what the task alone gives").

    python scripts/per_input_ceiling.py [--datasets routerdc routellm_mmlu alpaca_eval]
        [--shared ../shared] [--out results/routing]

Same data and outer folds as ``scripts/run_costs.py --parts predictors`` (5 random folds over
inputs, seed 0). Rows, each cross-fitted:

- ``task known``: each test input goes to the best model of its own task on the training
  folds. It reads the task's name, which a router of user inputs does not have, so it is a
  reference, not a candidate: what routing by task alone gives.
- ``task known + kNN stack``: the same one-hot task next to the kNN's logits (below), one
  logistic regression per model: what the task and the neighbours give together.
- ``kNN k=100``: the label mean of the 100 nearest training inputs (exact inner product).
- ``kNN stack, random inner folds``: one logistic regression per model on the logits of every
  model's kNN P, fitted on out-of-fold P of 5 random inner folds (the issue's reference
  stack). The router's own stack candidate is fitted on task-grouped folds instead.
- ``the router (default)`` and ``the router, tune_folds="random"``: the router's own P
  (:func:`benchroute.experiments.per_input.knn_fitter`), its predictor tuned on folds that
  hold whole tasks out, or on random folds, where it may choose the stack beside a classifier
  of the pool task (docs/routing.md, section 1.5).

Also written: per task, the share of each input's 100 nearest other pool inputs that come
from its own task, and the task most of the others come from (``per_input_ceiling_tasks.csv``).

Each row reports the routed quality (argmax P, ties to the best single model, as
``compare_predictors``) with a 95% bootstrap interval, for the rows after the router's
default the paired difference from it (``minus_default``, same resamples), and for a
strong/weak pair the APGR of the threshold policy's score P(strong) − P(weak) (RouteLLM's
call% steps of 0.1).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from run_costs import ROOT, alpaca, routellm, routerdc

from benchroute.curves import apgr
from benchroute.experiments import costs as cq
from benchroute.experiments.bootstrap import interval, resample_rows
from benchroute.experiments.crossfit import fold_bma
from benchroute.experiments.per_input import knn_fitter
from benchroute.scoring import task_means
from benchroute.selection import route_rows
from benchroute.stacking import fit_stack, logits
from benchroute.tuning import fold_ids

K = 100
N_BOOT = 1000
log = logging.getLogger("per_input_ceiling")

#: fit(X_train, Y_train, task_train, X_test, task_test) -> P_test
Fitter = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def knn_proba(Xtr: np.ndarray, Ytr: np.ndarray, Xq: np.ndarray, k: int = K) -> np.ndarray:
    index = faiss.IndexFlatIP(Xtr.shape[1])
    index.add(np.ascontiguousarray(Xtr, dtype=np.float32))
    _, rows = index.search(np.ascontiguousarray(Xq, dtype=np.float32), min(k, len(Xtr)))
    return np.nanmean(Ytr[rows], axis=1)


def random_oof(Xtr: np.ndarray, Ytr: np.ndarray, folds: int = 5, seed: int = 1) -> np.ndarray:
    fold, _ = fold_ids(len(Xtr), None, folds, seed)
    P = np.empty_like(Ytr)
    for f in range(folds):
        te = fold == f
        P[te] = knn_proba(Xtr[~te], Ytr[~te], Xtr[te])
    return P


def one_hot(task: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    return (np.asarray(task)[:, None] == tasks[None, :]).astype(np.float64)


def task_known(Xtr, Ytr, gtr, Xte, gte):  # type: ignore[no-untyped-def]
    tasks = np.unique(gtr)
    means = task_means(Ytr, gtr)  # tasks in sorted order, as np.unique
    return means[np.searchsorted(tasks, gte)]


def task_known_stack(Xtr, Ytr, gtr, Xte, gte):  # type: ignore[no-untyped-def]
    tasks = np.unique(gtr)
    stack = fit_stack(np.hstack([logits(random_oof(Xtr, Ytr)), one_hot(gtr, tasks)]), Ytr)
    z = np.hstack([logits(knn_proba(Xtr, Ytr, Xte)), one_hot(gte, tasks)])
    return 1.0 / (1.0 + np.exp(-(z @ stack.coef + stack.intercept)))


def knn(Xtr, Ytr, gtr, Xte, gte):  # type: ignore[no-untyped-def]
    return knn_proba(Xtr, Ytr, Xte)


def knn_stack(Xtr, Ytr, gtr, Xte, gte):  # type: ignore[no-untyped-def]
    stack = fit_stack(logits(random_oof(Xtr, Ytr)), Ytr)
    return stack(knn_proba(Xtr, Ytr, Xte))


DEFAULT = "the router (default)"


def router_fitter(grouped: bool) -> Fitter:
    fit = knn_fitter(grouped=grouped)
    return lambda Xtr, Ytr, gtr, Xte, gte: fit(Xtr, Ytr, Xte, gtr)


FITTERS: dict[str, Fitter] = {"task known (reads the task's name)": task_known,
                              "task known + kNN stack (reads the task's name)": task_known_stack,
                              f"kNN k={K}": knn,
                              "kNN stack, random inner folds": knn_stack,
                              DEFAULT: router_fitter(True),
                              'the router, tune_folds="random"': router_fitter(False)}


def pair_apgr(P: np.ndarray, Y: np.ndarray, strong: int, weak: int, rows: np.ndarray) -> float:
    score = P[rows, strong] - P[rows, weak]
    qs, qw = Y[rows, strong], Y[rows, weak]
    # the threshold sweep's own points (benchroute.experiments.costs): the share of calls
    # each level realises on these rows, and the quality there
    calls = cq.ranked_calls(score, cq.CALL_LEVELS)
    share = [call.mean() for call in calls]
    quality = [np.where(call, qs, qw).mean() for call in calls]
    return apgr(np.asarray(share), np.asarray(quality), q_strong=float(qs.mean()), q_weak=float(qw.mean()))


def neighbour_tasks(X: np.ndarray, g: np.ndarray, name: str) -> pd.DataFrame:
    """Per task: the share of its inputs' K nearest other inputs from the same task, and the
    task most of the rest come from."""
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(np.ascontiguousarray(X, dtype=np.float32))
    _, rows = index.search(np.ascontiguousarray(X, dtype=np.float32), K + 1)
    nb = g[rows[:, 1:]]  # the first is the input itself (or an exact duplicate)
    out = []
    for task in np.unique(g):
        mine = nb[g == task]
        others = pd.Series(mine[mine != task]).value_counts()
        out.append({"data": name, "task": task, "inputs": int((g == task).sum()),
                    "same_task_share": float((mine == task).mean()),
                    "most_other": others.index[0] if len(others) else None})
    return pd.DataFrame(out)


def cross_fitted(ds: dict[str, object], A: cq.Arrays, fitters: dict[str, Fitter],
                 features: dict[str, object] | None = None) -> pd.DataFrame:
    """One row per fitter: its P cross-fitted on the outer folds, routed, with intervals, the
    paired difference from the router's default (a fitter named ``DEFAULT`` before it) and a
    strong/weak pair's APGR. ``features`` gives a fitter other rows than the vectors (any
    matrix indexed by a boolean mask of rows, e.g. a scipy sparse one)."""
    X, Y, g = A.X, A.Q, np.asarray(A.datasets)
    fold, _ = fold_ids(len(X), None, 5, 0)
    single = fold_bma(Y, g, fold)
    rows = np.arange(len(X))
    boots = resample_rows(len(X), N_BOOT, np.random.default_rng(0))
    pair = "strong" in ds
    if pair:
        strong, weak = (A.models.index(str(ds[r])) for r in ("strong", "weak"))
    out, default = [], None
    for name, fit in fitters.items():
        F = (features or {}).get(name, X)
        P = np.empty_like(Y)
        for f in range(5):
            te, tr = fold == f, fold != f
            P[te] = fit(F[tr], Y[tr], g[tr], F[te], g[te])  # type: ignore[index]
        q = Y[rows, route_rows(P, np.arange(Y.shape[1]), single, available=~np.isnan(Y))]
        qb = q[boots].mean(axis=1)
        row = {"data": ds["name"], "predictor": name, "routed": q.mean(),
               **dict(zip(("routed_lo", "routed_hi"), interval(qb, point=q.mean()))),
               "best_single": Y[rows, single].mean()}
        if name == DEFAULT:
            default = q
        elif default is not None:  # paired with the router's default on the same resamples
            db = (q - default)[boots].mean(axis=1)
            diff = float((q - default).mean())
            row.update(minus_default=diff,
                       **dict(zip(("minus_default_lo", "minus_default_hi"),
                                  interval(db, point=diff))))
        if pair:
            ab = [pair_apgr(P, Y, strong, weak, b) for b in boots[:200]]
            value = pair_apgr(P, Y, strong, weak, rows)
            row.update(apgr=value, **dict(zip(("apgr_lo", "apgr_hi"), interval(ab, point=value))))
        log.info("%s %s: %s", ds["name"], name, {k: v for k, v in row.items() if k != "data"})
        out.append(row)
    return pd.DataFrame(out)


def run(ds: dict[str, object]) -> tuple[pd.DataFrame, pd.DataFrame]:
    A = cq.arrays(ds["data"], ds["X"], str(ds["column"]), ds["costs"])  # type: ignore[arg-type]
    return cross_fitted(ds, A, FITTERS), neighbour_tasks(A.X, np.asarray(A.datasets), str(ds["name"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["routerdc", "routellm_mmlu", "alpaca_eval"])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "routing")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    makers = {"routerdc": lambda: routerdc(args.shared),
              "routellm_mmlu": lambda: routellm(args.shared, "mmlu"),
              "routellm_gsm8k": lambda: routellm(args.shared, "gsm8k"),
              "alpaca_eval": lambda: alpaca(args.shared)}
    runs = [run(makers[name]()) for name in args.datasets]
    table = pd.concat([r[0] for r in runs], ignore_index=True)
    tasks = pd.concat([r[1] for r in runs], ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "per_input_ceiling.csv", index=False, float_format="%.4f")
    tasks.to_csv(args.out / "per_input_ceiling_tasks.csv", index=False, float_format="%.4f")
    print(table.to_markdown(index=False, floatfmt=".4f"))
    print(tasks.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
