"""Two more places the RouterDC and MMLU per-input targets could hide (docs/routing.md, 1.4):
a wider k grid for the router's tuning, and a better recogniser of the input's task.

    python scripts/per_input_probes.py [--datasets routerdc routellm_mmlu]
        [--shared ../shared] [--out results/routing]

Same data, outer folds (5 random folds over inputs, seed 0), routing rule and intervals as
``scripts/per_input_ceiling.py``. Rows, each cross-fitted:

- ``the router (default)``: as there; the paired base of the rows after it.
- ``the router, k up to 640``: the same, its tuning grid k ∈ {5, …, 160, 320, 640} (the
  default grid stops at 160, which the default chose in every outer fold of both pools).
- ``task classifier (vectors)`` / ``task classifier (vectors + character n-grams)``: each input
  routed by Σ_t T_t(x)·(task t's mean on the training folds), T a multinomial logistic
  regression (C = 10) on the unit vectors, or on them beside sublinear tf-idf of hashed
  character 2–4-grams (2^18 buckets) of the input's text. Read the text's form (LaTeX,
  code, Chinese script, answer letters) beside its meaning; the idf weights are computed once
  from every text (no label enters them). Reported with the classifier's held-out accuracy.

And whether an input says which case it is (``per_input_probes_gate.csv``): how well the
mean cosine similarity of an input's 1, 5 or 10 nearest pool inputs tells an input of a pool
task (its outer fold held out, its task-mates still in the pool) from an input of a new task
(its whole task held out), as the AUC over both sets of similarities, overall and per task.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from per_input_ceiling import DEFAULT, Fitter, cross_fitted, router_fitter, task_known
from run_costs import ROOT, routellm, routerdc
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from benchroute.experiments import costs as cq
from benchroute.experiments.per_input import knn_fitter
from benchroute.scoring import task_means
from benchroute.tuning import fold_ids, knn_search

WIDE_KS = (5, 10, 20, 40, 80, 160, 320, 640)
VECTORS = "task classifier (vectors)"
CHARS = "task classifier (vectors + character n-grams)"


def char_features(texts: list[str]) -> sp.csr_matrix:
    counts = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=2**18,
                               alternate_sign=False, norm=None).transform(texts)
    return TfidfTransformer(sublinear_tf=True).fit_transform(counts).tocsr()


def classifier_fitter(accuracy: list[float]) -> Fitter:
    def fit(Ftr, Ytr, gtr, Fte, gte):  # type: ignore[no-untyped-def]
        clf = LogisticRegression(C=10.0, max_iter=300).fit(Ftr, gtr)
        accuracy.append(float((clf.predict(Fte) == gte).mean()))
        # classes_ and task_means' rows are both np.unique's sorted order
        return clf.predict_proba(Fte) @ task_means(Ytr, gtr)
    return fit


def gate(ds: dict[str, object], ks: tuple[int, ...] = (1, 5, 10)) -> pd.DataFrame:
    A = cq.arrays(ds["data"], ds["X"], str(ds["column"]), ds["costs"])  # type: ignore[arg-type]
    X, g = A.X, np.asarray(A.datasets)
    fold, _ = fold_ids(len(X), None, 5, 0)
    K = max(ks)
    pool_task, new_task = np.empty((len(X), K)), np.empty((len(X), K))
    for f in range(5):  # similarity = 1 − the search's cosine distance
        pool_task[fold == f] = 1.0 - knn_search(X[fold != f], X[fold == f], K)[0]
    for task in np.unique(g):
        new_task[g == task] = 1.0 - knn_search(X[g != task], X[g == task], K)[0]

    def auc(rows: np.ndarray, k: int) -> float:
        a, b = pool_task[rows, :k].mean(axis=1), new_task[rows, :k].mean(axis=1)
        return float(roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b]))

    out = [{"data": ds["name"], "task": "all", "k": k, "auc": auc(np.ones(len(X), bool), k)}
           for k in ks]
    out += [{"data": ds["name"], "task": task, "k": K, "auc": auc(g == task, K)}
            for task in np.unique(g)]
    return pd.DataFrame(out)


def run(ds: dict[str, object]) -> pd.DataFrame:
    A = cq.arrays(ds["data"], ds["X"], str(ds["column"]), ds["costs"])  # type: ignore[arg-type]
    inst = ds["data"].instances()  # type: ignore[attr-defined]
    if len(inst) != len(A.X) or not (inst["dataset"].to_numpy() == np.asarray(A.datasets)).all():
        raise SystemExit(f"{ds['name']}: texts and vectors are not in one order")
    chars = sp.hstack([sp.csr_matrix(A.X), char_features(inst["text"].astype(str).tolist())]).tocsr()
    accuracy: dict[str, list[float]] = {VECTORS: [], CHARS: []}
    fitters: dict[str, Fitter] = {DEFAULT: router_fitter(True),
                                  "the router, k up to 640": lambda Xtr, Ytr, gtr, Xte, gte:
                                  knn_fitter(ks=WIDE_KS)(Xtr, Ytr, Xte, gtr),
                                  "task known (reads the task's name)": task_known,
                                  VECTORS: classifier_fitter(accuracy[VECTORS]),
                                  CHARS: classifier_fitter(accuracy[CHARS])}
    table = cross_fitted(ds, A, fitters, features={CHARS: chars})
    table["task_accuracy"] = table["predictor"].map(lambda name: np.mean(accuracy.get(name) or np.nan))
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["routerdc", "routellm_mmlu"],
                    choices=["routerdc", "routellm_mmlu"])
    ap.add_argument("--parts", nargs="+", default=["rows", "gate"], choices=["rows", "gate"])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "routing")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    makers = {"routerdc": lambda: routerdc(args.shared),
              "routellm_mmlu": lambda: routellm(args.shared, "mmlu")}
    args.out.mkdir(parents=True, exist_ok=True)
    for part, fn, name in (("rows", run, "per_input_probes"), ("gate", gate, "per_input_probes_gate")):
        if part in args.parts:
            table = pd.concat([fn(makers[d]()) for d in args.datasets], ignore_index=True)
            table.to_csv(args.out / f"{name}.csv", index=False, float_format="%.4f")
            print(table.to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
