"""Choosing a model from per-input predictions: the one selection path shared by
:meth:`Router.select_model`, :meth:`Router.route` and the leave-one-task-out experiments.

:func:`select` turns the predictions g (n inputs, M models), the task distance u and the
reference pairs into a :class:`Selection`; :func:`choose` is its decision rule (argmax, ties to
the best model on average, the η fallback test); :func:`route_rows` is the same rule per input.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchroute.reference import ReferencePairs
from benchroute.scoring import (
    TIE_TOL,
    apply_p_map,
    argmax_ties,
    beta_binomial_mean,
    fallback_probability,
    kernel_smooth,
    s1,
    s2,
    s3,
)
from benchroute.shift import FormShift

logger = logging.getLogger(__name__)

METHODS = ("S1", "S2", "S3")
__all__ = ["METHODS", "TIE_TOL", "Selection", "SelectionConfig", "best_with_ties", "choose",
           "route_rows", "select"]


@dataclass(frozen=True)
class SelectionConfig:
    """The parameters of a decision (the matching :class:`~benchroute.router.Router` ones)."""

    threshold: float = 0.5
    bandwidth: float = 0.09
    eta: float = 0.6
    n_draws: int = 1000
    seed: int = 0
    prior_strength: float = 50.0
    tie_tol: float = TIE_TOL


@dataclass(frozen=True, eq=False)
class Selection:
    """The model chosen for a task, with the evidence behind the choice.

    ``scores`` is indexed by the candidate models with columns ``S1, S2, S3, p_hat`` (the p that
    S3 used), ``p_kernel`` (the kernel estimate at the task's distance u), ``p_self`` (the
    predictors' self-estimate on the task's inputs, when known), ``bma`` (True for the best model
    on average) and ``chosen``; with few-shot labels also ``p_prior`` (p̂ before the labels),
    ``p_labeled`` (the predictors' accuracy on the labels) and ``n_labeled_model`` (labels per
    model). ``proba`` holds the
    per-input predictions g (inputs × all models, in the router's model order).
    """

    model: str
    method: str
    scores: pd.DataFrame
    fell_back: bool
    task_distance: float
    bma: str
    n_examples: int
    n_labeled: int = 0
    win_probability: float | None = None
    proba: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: set by ``max_quality_drop``: (the model chosen on quality, ε, the quality column compared)
    cheaper_than: tuple[str, float, str] | None = None
    #: the η of the fallback test, and of ``max_quality_drop``'s rule for S3 (None when neither
    #: ran)
    eta: float | None = None
    #: inputs with a near-duplicate in the pool (benchroute.predictors.NEAR_DUPLICATE), and
    #: whether those pool inputs were left out of their neighbours (the default)
    n_in_pool: int = 0
    duplicates_kept: bool = False
    #: how far the task's inputs differ in form from their pool neighbours
    #: (:mod:`benchroute.shift`); None when the pool's texts are unknown (fitted on arrays)
    shift: FormShift | None = None
    #: whether the form-shift test moved the choice to the best model on average
    shift_fell_back: bool = False

    def summary(self) -> str:
        why = ""
        if self.cheaper_than is not None:
            first, eps, column = self.cheaper_than
            within = (f"likely (P >= eta = {self.eta:g}, column p_within) to be within "
                      f"{eps:g} of {first}'s accuracy"
                      if column == "S3" and self.eta is not None
                      else f"whose {column} is within {eps:g} of {first}'s")
            why = (f" (the cheapest candidate {within}; {first} was chosen on quality"
                   + (" after falling back to the best model on average" if self.fell_back
                      else "") + ")")
        elif self.shift_fell_back and self.shift is not None:
            why = (f" (fell back from {self._top()} to the best model on average: the task's "
                   f"inputs differ in form from their pool neighbours, shift p "
                   f"{self.shift.p_value:.3f} < {self.shift.alpha:g}, most in "
                   f"{self.shift.largest()})")
        elif self.fell_back:
            eta = "" if self.eta is None else f" {self.eta:g}"
            why = (f" (fell back from {self._top()}, the top {self.method} score, to the best "
                   f"model on average: the chance that it beats the best model on average is "
                   f"{self.win_probability:.2f} < eta{eta})")
        elif self.model == self.bma:
            why = " (also the best model on average)"
        row = self.scores.loc[self.model]
        return (f"{self.model} by {self.method}{why}: S1 {row['S1']:.3f}, S2 {row['S2']:.3f}, "
                f"S3 {row['S3']:.3f}, p_hat {row['p_hat']:.3f} (how often its correctness "
                f"predictor is estimated to be right on this task); u = "
                f"{self.task_distance:.3f} (mean distance of the inputs to the pool) over "
                f"{self.n_examples} input{'' if self.n_examples == 1 else 's'}"
                + (f", {self.n_labeled} labelled" if self.n_labeled else "")
                + (f"; {self.n_in_pool} of them near-duplicates of pool inputs ("
                   + ("kept" if self.duplicates_kept else "left out of their neighbours") + ")"
                   if self.n_in_pool else "") + "; " + self._shift_text())

    def _shift_text(self) -> str:
        if self.shift is None and self.method != "S3":
            return "form shift not tested (an S3 test)"
        if self.shift is None:
            return "form shift unknown (the pool's texts are not available)"
        if not np.isfinite(self.shift.p_value):
            return f"form shift T = {self.shift.statistic:.3f} (no reference: fewer than two pool tasks)"
        moot = ""
        if self.shift.fired and not self.shift_fell_back:  # the choice was the BMA already
            moot = (" (below the level; the choice was already the best model on average)"
                    if self.model == self.bma else "")
        return (f"form shift T = {self.shift.statistic:.3f}, p {self.shift.p_value:.3f} against "
                f"{self.shift.n_reference} pool tasks{moot}")

    def _top(self) -> str:
        """The candidate with the top score of the selection's method (before any fallback),
        ties to the best model on average as :func:`choose` breaks them."""
        score = self.scores[self.method].astype(float)
        names = [str(m) for m in score.index]
        prefer = names.index(self.bma) if self.bma in names else None
        return names[int(best_with_ties(score.to_numpy(), np.arange(len(names)), prefer))]

    def __repr__(self) -> str:
        shown = self.scores.drop(columns=["chosen"])
        # costs per call are often under 0.001 USD: significant digits, not three decimals
        table = shown.to_string(float_format=lambda v: f"{v:.3f}",
                                formatters={"cost": lambda v: f"{v:.4g}"} if "cost" in shown else None)
        return f"Selection: {self.summary()}\n{table}"

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "method": self.method, "fell_back": self.fell_back,
                "task_distance": self.task_distance, "bma": self.bma,
                "n_examples": self.n_examples, "n_labeled": self.n_labeled,
                "n_in_pool": self.n_in_pool, "duplicates_kept": self.duplicates_kept,
                "win_probability": self.win_probability, "eta": self.eta,
                "shift": None if self.shift is None else self.shift.to_dict(),
                "shift_fell_back": self.shift_fell_back,
                "cheaper_than": None if self.cheaper_than is None else {
                    "model": self.cheaper_than[0], "max_quality_drop": self.cheaper_than[1],
                    "compared": self.cheaper_than[2]},
                "scores": json.loads(self.scores.to_json(orient="index"))}


def best_with_ties(score: np.ndarray, cand: np.ndarray, prefer: int | np.ndarray | None,
                   tol: float = TIE_TOL) -> np.ndarray:
    """Argmax of ``score`` (…, M) over the columns ``cand``; a tie (within ``tol``) goes to
    ``prefer`` (a column, or one per row), else to the lowest column: :func:`argmax_ties`."""
    return argmax_ties(score, cand, prefer, tol=tol)


def choose(score: np.ndarray, cand: np.ndarray, bma: int, g: np.ndarray | None = None,
           p: np.ndarray | None = None, config: SelectionConfig = SelectionConfig()
           ) -> tuple[int, bool, float | None]:
    """The model to choose: argmax of ``score`` among ``cand``, ties (within ``tie_tol``) to
    BMA; then, when ``p`` is given (S3), the η rule: fall back to BMA if P(chosen beats BMA) < η,
    counts drawn from g's predicted-right/wrong inputs.

    Returns (chosen index, fell back, win probability or None when no test was needed).
    """
    best = int(best_with_ties(score, cand, bma, config.tie_tol))
    if p is None or g is None or best == bma:
        return best, False, None
    n_plus = (g > config.threshold).sum(axis=0)
    win = fallback_probability(best, bma, n_plus, len(g) - n_plus, p, config.n_draws, config.seed)
    return (bma, True, win) if win < config.eta else (best, False, win)


def p_estimate(u: float, reference: ReferencePairs, config: SelectionConfig,
               warn: bool = True, self_est: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """(p̂, kernel estimate) of each model before any label of the task.

    The kernel estimate at u over the reference pairs (0.5, with a warning when ``warn``, when
    there is none) sees only how far the task is from the pool, so it is nearly the same for
    all tasks at one distance. With the task's self-estimates ``self_est`` (M,)
    (:func:`~benchroute.scoring.self_estimate`), p̂ is the map learnt on the reference pairs
    (:meth:`ReferencePairs.p_map <benchroute.reference.ReferencePairs.p_map>`) applied to both;
    without them, or when no map could be learnt, p̂ is the kernel estimate.
    """
    if warn and len(reference.u) == 0:
        warnings.warn("no reference pairs (the pool has fewer than two tasks with two inputs): "
                      "p_hat is the uninformative 0.5, so S3 cannot tell the models apart",
                      UserWarning, stacklevel=3)
    kernel = kernel_smooth(u, reference.u, reference.p, config.bandwidth)
    if self_est is None:
        return kernel, kernel
    return apply_p_map(reference.p_map(config.bandwidth), kernel, self_est), kernel


def select(g: np.ndarray, u: float, reference: ReferencePairs, models: list[str],
           cand: np.ndarray, bma: int, method: str = "S3", fallback: bool = True,
           config: SelectionConfig = SelectionConfig(), labeled_hits: np.ndarray | None = None,
           labeled_n: np.ndarray | None = None, n_labeled: int = 0,
           shift: FormShift | None = None, self_est: np.ndarray | None = None) -> Selection:
    """Score a task from its predictions g (n, M) and distance u, and choose among ``cand``.

    ``shift``: the task's form shift; with S3 and ``fallback``, a shift that fires
    (p < its level) moves a choice other than BMA to BMA.

    ``labeled_hits``/``labeled_n`` (M,) are the predictors' correct binary predictions and the
    labels per model on the caller's ``n_labeled`` few-shot labels; they update p̂ by the
    Beta–binomial posterior mean with prior mean p̂ before the labels (``config.prior_strength``).

    ``self_est`` (M,): the predictors' self-estimates on the task's scored inputs; with them
    p̂ before the labels is the learnt map of :func:`p_estimate`, else the kernel estimate.
    """
    p_prior, p_kernel = p_estimate(u, reference, config, warn=method == "S3", self_est=self_est)
    p_hat = p_prior if labeled_n is None or labeled_hits is None else \
        beta_binomial_mean(p_prior, config.prior_strength, labeled_hits, labeled_n)
    S1, S2 = s1(g), s2(g, config.threshold)
    table = pd.DataFrame({"S1": S1, "S2": S2, "S3": s3(S2, p_hat), "p_hat": p_hat,
                          "p_kernel": p_kernel}, index=models)
    if self_est is not None:
        table["p_self"] = self_est
    if labeled_n is not None and labeled_hits is not None:
        table["p_prior"] = p_prior
        with np.errstate(invalid="ignore", divide="ignore"):
            table["p_labeled"] = np.where(labeled_n > 0, labeled_hits / np.maximum(labeled_n, 1),
                                          np.nan)
        table["n_labeled_model"] = labeled_n
    chosen, fell_back, win = choose(table[method].to_numpy(), cand, bma, g,
                                    p_hat if method == "S3" and fallback else None, config)
    shifted = (method == "S3" and fallback and shift is not None and shift.fired
               and not fell_back and chosen != bma)
    if shifted:
        chosen, fell_back = bma, True
    table["bma"] = [i == bma for i in range(len(models))]
    table["chosen"] = [i == chosen for i in range(len(models))]
    table = table.iloc[cand]
    table.index.name = "model"
    return Selection(model=models[chosen], method=method, scores=table, fell_back=fell_back,
                     task_distance=float(u), bma=models[bma], n_examples=len(g),
                     n_labeled=n_labeled, win_probability=win, proba=g,
                     eta=config.eta if win is not None else None, shift=shift,
                     shift_fell_back=shifted)


def route_rows(P: np.ndarray, cand: np.ndarray, prefer: int | np.ndarray,
               available: np.ndarray | None = None, tol: float = TIE_TOL) -> np.ndarray:
    """Per input (row of P (n, M)), the candidate with the highest g; ties within ``tol`` go to
    ``prefer`` (the best model on average). ``available`` (n, M) masks the models an input may
    go to (e.g. those with a result); ``prefer`` only wins where it is available."""
    P = np.asarray(P, dtype=float)
    if available is not None:
        P = np.where(available, P, -np.inf)
    pick = best_with_ties(P, cand, prefer, tol)
    if available is not None:
        ok = np.take_along_axis(np.asarray(available), pick[:, None], axis=1)[:, 0]
        fallback = np.asarray(cand)[np.argmax(P[:, cand], axis=1)]
        pick = np.where(ok, pick, fallback)
    return pick
