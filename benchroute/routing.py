"""The router's side of routing: P(m, x) of a fitted router, its costs, and a policy applied to
them (``Router.route_table(texts, policy=...)``, the gateway, ``select_model(max_quality_drop=...)``).

:mod:`benchroute.policies` holds the decision rules as pure functions of P, costs and
parameters; this module turns a fitted router (its index, tuned predictor, added models, model
names and costs) into those arrays, so that the router, the gateway and the experiments get P
and apply a policy by the same code.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from benchroute.exceptions import BenchrouteError
from benchroute.inputs import check_flag, check_vectors, parse_texts
from benchroute.new_models import added_columns, known_proba, known_proba_and_nearest
from benchroute.ood import check_alpha, fall_back, reference_of
from benchroute.policies import (
    POLICIES,
    apply_policy,
    best,
    cheapest_within_selection,
    check_number,
    check_param,
    check_policy_params,
    choices_frame,
    cost_vector,
    costs_by_name,
    get_policy,
)
from benchroute.predictors import NEAR_DUPLICATE
from benchroute.scoring import argmax_ties, best_on_average, fallback_probability
from benchroute.selection import SelectionConfig
from benchroute.warning_site import user_stacklevel

logger = logging.getLogger(__name__)


def store_costs(data: Any) -> dict[str, float] | None:
    """Mean cost per call of each model from a store's ``cost`` column (None without one)."""
    frame = data.frame
    if "cost" not in frame.columns or frame["cost"].isna().all():
        return None
    by_model = frame.groupby("model")["cost"]
    means = by_model.mean()[by_model.count() > 0]  # models with a cost on some row
    bad = [str(m) for m, v in means.items() if not (np.isfinite(v) and v >= 0)]
    if bad:  # a mean past a float's range was dropped silently, the model left without a cost
        raise BenchrouteError(f"the store's 'cost' column: the mean cost per call of {bad[:5]} "
                              "is not a finite number >= 0")
    return {str(m): float(v) for m, v in means.items()}


def router_proba(router: Any, Q: np.ndarray, keep_duplicates: bool = False) -> np.ndarray:
    """P(m, x) of a fitted router: its tuned per-input predictor when it has one, else g_m(x);
    models added from a few labels follow (see :mod:`benchroute.new_models`).

    Pool inputs closer to a query than :data:`~benchroute.predictors.NEAR_DUPLICATE` (the
    query itself when it is a pool input, or a near-copy of it) are left out of its neighbours
    unless ``keep_duplicates``: their labels would be the answer, not a prediction, so P on a
    pool input is what a new input would get. (A predictor that chose logistic regression on
    the vectors has seen the pool inputs in its fit; that part of P cannot leave one out.)
    """
    Q = check_vectors(Q, "queries")
    within = None if check_flag("keep_duplicates", keep_duplicates) else NEAR_DUPLICATE
    return np.hstack([known_proba(router, Q, within=within), added_columns(router, Q)])


def router_proba_ood(router: Any, Q: np.ndarray, keep_duplicates: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`router_proba`, each query's OOD p-value and whether it has a near-duplicate in the
    pool (:mod:`benchroute.ood`), from one search of the index."""
    Q = check_vectors(Q, "queries")
    check_flag("keep_duplicates", keep_duplicates)
    ref = reference_of(router)
    P, nearest = known_proba_and_nearest(router, Q, None if keep_duplicates else NEAR_DUPLICATE,
                                         ref.predictor.k)
    ood_p, in_pool = ref.assess_distances(nearest)
    return np.hstack([P, added_columns(router, Q)]), ood_p, in_pool


def embed_queries(router: Any, texts: Sequence[str]) -> np.ndarray:
    """``router.embed`` for texts to score against its pool: an encoder of another dimension
    than the pool's (``encoder`` changed after fitting, or edited in a saved router) is refused
    before a vector is computed or cached."""
    enc = router.held_encoder()
    name = router.encoder_mismatch()
    if name is not None:
        raise BenchrouteError(f"encoder {name!r:.100} does not give the vectors the router's pool "
                              f"holds (its encoder is {router.encoder_id_!r}); set encoder back "
                              "or refit the router with this one")
    pool_d = router.predictor_.index_.dimension
    if 0 < enc.dimension != pool_d:
        raise BenchrouteError(f"encoder {enc.identifier!r} gives {enc.dimension}-d vectors, "
                              f"the router's pool holds {pool_d}-d ones; use the encoder it "
                              "was fitted with")
    return np.asarray(router.embed(texts))


def query_vectors(router: Any, texts: Any) -> np.ndarray:
    """The vectors of the inputs given to ``route``, ``route_table``, ``predict_proba`` and
    ``ood_p`` (a list of texts, one text, or a store's inputs). A set is refused: the answers
    come back in input order, and a set has none to match them to."""
    if isinstance(texts, (set, frozenset)):
        raise BenchrouteError("texts is a set, which has no order to match the answers to; "
                              "pass a list (sorted(texts), say)")
    return embed_queries(router, parse_texts(texts, "texts"))


def check_no_policy_params(costs: object, params: Mapping[str, object]) -> None:
    """Costs and policy parameters given to ``route`` without a policy are refused: they would
    be silently ignored."""
    if params or costs is not None:
        given = sorted(params) + (["costs"] if costs is not None else [])
        raise BenchrouteError(f"{given} apply to a policy only; call route_table(texts, "
                              f"policy=...) (one of {sorted(POLICIES)})")


def route_indices(router: Any, Q: np.ndarray, cand: np.ndarray, ood_alpha: float | None = None,
                  keep_duplicates: bool = False) -> np.ndarray:
    """``Router.route``'s choice per input, as model columns: the highest P among ``cand``
    (ties to the best model on average among them), and with ``ood_alpha`` that best model for
    inputs whose OOD p-value is below it."""
    bma = router.bma_index(cand)
    if ood_alpha is None:
        P, ood_p = router_proba(router, Q, keep_duplicates), None
    else:
        check_alpha(ood_alpha)
        P, ood_p, _ = router_proba_ood(router, Q, keep_duplicates)
    # the best policy's rule (_decisions): ties to the best model on average, then the cheaper
    # when every candidate's cost is known, then the first column
    known = known_costs(getattr(router, "costs_", None), [router.models_[i] for i in cand],
                        warn=False)
    cost = None if known is None else np.array([known.get(m, np.inf) for m in router.models_])
    pick = argmax_ties(P, cand, prefer=bma, cost=cost, tol=router.config().tie_tol)
    return fall_back(pick, ood_p, ood_alpha, bma)[0]


def router_costs(router: Any, costs: Mapping[str, float] | Sequence[float] | None,
                 what: str, models: Sequence[str] | None = None) -> np.ndarray:
    """Per-model costs in ``models`` order (default ``router.models_``): the caller's, else
    those of the fit store. A mapping needs a cost for those models only."""
    costs = costs_by_name(costs) if costs is not None else getattr(router, "costs_", None)
    if costs is None:
        raise BenchrouteError(f"{what} needs costs per call (a price table times a typical "
                              "token count, or a declared proxy): costs={model: cost} in Python, "
                              "--prices on the command line, a 'cost' for every model in the "
                              "gateway's upstreams file, or fit on a store with a 'cost' column")
    if models is not None and not isinstance(costs, Mapping):
        return cost_vector(router.models_, costs)[[router.models_.index(m) for m in models]]
    return cost_vector(router.models_ if models is None else models, costs)


def known_costs(costs: Mapping[str, float] | None, candidates: Sequence[str],
                warn: bool = True) -> dict[str, float] | None:
    """Costs per call for serving and calibrating: all that are given when every candidate has
    one, else none.

    Why not 0 for a missing cost: a model made free would win every cost-led decision. Without
    them the gateway and calibration route as ``Router.route_table`` does without costs:
    ``best`` and ``threshold`` decide, and the cost-led policies are refused, naming the models
    that lack a cost."""
    if costs is None:
        return None
    missing = [m for m in candidates if m not in costs]
    if missing and warn:
        logger.warning("no cost per call for %s (of %d candidates): routing without costs; the "
                       "cost-led policies are refused", missing[:10], len(candidates))
    if missing:
        return None
    # a cost of None, a string or 10**400 raised a raw TypeError or OverflowError here, even
    # for the policies that read no cost (found by fuzzing)
    return {str(m): check_number(f"cost of {str(m)!r}", c, 0.0) for m, c in costs.items()}


#: Policies that decide without costs: routing with them needs no price (the cost column is NaN
#: when not every candidate has one).
_COST_FREE = ("best", "threshold")


def route_with_policy(router: Any, Q: np.ndarray, policy: str, cand: np.ndarray,
                      costs: Mapping[str, float] | Sequence[float] | None = None,
                      ood_alpha: float | None = None, keep_duplicates: bool = False,
                      **params: Any) -> pd.DataFrame:
    """``Router.route_table(texts, policy=...)``: per input the model, its predicted P, its cost, its
    OOD p-value (:mod:`benchroute.ood`) and whether a near-duplicate is in the pool
    (``in_pool``); with ``ood_alpha`` inputs with p < ood_alpha go to the best model on average
    among the candidates (``ood_fallback``).

    ``strong``/``weak`` (threshold) are model names. ``best`` and ``threshold`` need no costs
    (the cost is NaN when they are not known for every candidate: a 0 summed as if free); every
    other policy needs a cost for each candidate.
    """
    if ood_alpha is not None:
        check_alpha(ood_alpha)
    models, c, params = _policy_inputs(router, policy, cand, costs, params)  # before the search
    P, ood_p, in_pool = router_proba_ood(router, Q, keep_duplicates)
    frame = _decisions(router, P[:, cand], c, policy, params, cand, models, ood_p, ood_alpha)
    frame["in_pool"] = in_pool
    return frame


def policy_frame(router: Any, P: np.ndarray, policy: str, cand: np.ndarray,
                 costs: Mapping[str, float] | Sequence[float] | None = None,
                 ood_p: np.ndarray | None = None, ood_alpha: float | None = None,
                 **params: Any) -> pd.DataFrame:
    """A policy applied to P (n, all models) already computed for the router's models: the
    decision rule of ``Router.route`` for the gateway, which computes P (and the OOD p-values)
    once per batch."""
    models, c, params = _policy_inputs(router, policy, cand, costs, params)
    return _decisions(router, np.asarray(P)[:, cand], c, policy, params, cand, models, ood_p,
                      ood_alpha)


def _decisions(router: Any, P: np.ndarray, c: np.ndarray | None, policy: str, params: dict[str, Any],
               cand: np.ndarray, models: list[str], ood_p: np.ndarray | None,
               ood_alpha: float | None) -> pd.DataFrame:
    """The policy's choices, inputs flagged out of distribution moved to the best model on
    average among the candidates, as a frame (``ood_p``/``ood_fallback`` when p is known).
    ``c`` None: no costs known; the cost-free policies decide, and the cost column is NaN."""
    priced = c is not None
    c = np.zeros(len(cand)) if c is None else c
    default = int(np.flatnonzero(cand == router.bma_index(cand))[0])
    if policy == "best":
        # a tie goes to the best model on average first, then the cheaper (the evaluation's
        # sweeps pass their folds' best model on average the same way)
        choice = best(P, c, prefer=default, tol=router.config().tie_tol)
    else:
        choice = apply_policy(policy, P, c, **params)
    pick, flag = fall_back(choice, ood_p, ood_alpha, default)
    frame = choices_frame(P, c, pick, models)
    if not priced:
        frame["cost"] = np.nan
    if ood_p is not None:
        frame["ood_p"] = ood_p
        frame["ood_fallback"] = flag
    return frame


def _policy_inputs(router: Any, policy: str, cand: np.ndarray,
                   costs: Mapping[str, float] | Sequence[float] | None,
                   params: dict[str, Any]) -> tuple[list[str], np.ndarray | None, dict[str, Any]]:
    """The candidates' names and costs (None: unknown, for a cost-free policy) and the checked
    parameters (strong/weak as positions)."""
    get_policy(policy)
    models = [router.models_[i] for i in cand]
    params = dict(params)
    for key in ("strong", "weak"):
        if key in params:
            if params[key] not in models:
                raise BenchrouteError(f"{key} model {params[key]!r:.100} is not among {models}")
            params[key] = models.index(params[key])
    params = check_policy_params(policy, params, len(models))
    if policy in _COST_FREE:
        # a cost-free policy needs no price: costs given for some models only (an added
        # model's, or the caller's for some candidates) count as none known
        given = costs_by_name(costs) if costs is not None else getattr(router, "costs_", None)
        if given is None or (isinstance(given, Mapping)
                             and known_costs(given, models, warn=False) is None):
            # costs for some candidates only are fine here; but a name the router lacks
            # beside a candidate without a cost is a misspelling, most likely (fuzzing)
            strange = [str(m) for m in given or {} if m not in router.models_]
            if costs is not None and strange:
                missing = [m for m in models if m not in given]  # type: ignore[operator]
                warnings.warn(f"costs name {strange[:10]}, which the router does not have, and "
                              f"no cost for {missing[:10]}: policy {policy!r} decides without "
                              "costs, and the cost column is NaN", UserWarning,
                              stacklevel=user_stacklevel())
            return models, None, params
    return models, router_costs(router, costs, f"policy {policy!r}", models), params


def cheaper_selection(selection: Any, costs: np.ndarray, models: Sequence[str],
                      max_quality_drop: float, config: SelectionConfig | None = None) -> Any:
    """``select_model(..., max_quality_drop=ε)``: the selection moved to the cheapest candidate
    whose quality is within ε of the chosen model's (the one chosen after the fallback).

    For S3, by the η rule that made the choice: a candidate qualifies when the probability that
    its count of right answers is above the chosen model's less ε·n is at least η, the counts
    drawn as the fallback draws them (``p_within`` in the table). S3 alone would bring back the
    very model the η test had just refused when its score is within ε, and p̂ (compared here
    before) is how often a model's predictor is right, not the model: one predicted wrong on
    every input has a high p̂ (found by a review). With ε = 0 only a model as likely to beat the
    chosen one as the fallback asks of a choice qualifies. When the form-shift test moved the
    choice to the BMA, no S3 score of the task is trusted and the choice stays (else the model
    it refused, cheaper and likely enough to win, came back at ε = 0; found by a review). S1
    and S2 compare their own score.
    """
    check_param("max_quality_drop", "max_quality_drop", max_quality_drop)
    config = config or SelectionConfig()
    table = selection.scores.copy()
    by_model = dict(zip(models, costs))
    column, allowed = selection.method, None
    if column == "S3":
        ref, n = list(table.index).index(selection.model), selection.n_examples
        n_plus = np.rint(table["S2"].to_numpy(float) * n)
        p = table["p_hat"].to_numpy(float)
        table["p_within"] = [1.0 if i == ref else fallback_probability(
            i, ref, n_plus, n - n_plus, p, config.n_draws, config.seed,
            slack=max_quality_drop * n) for i in range(len(table))]
        allowed = table["p_within"] >= config.eta
        if selection.shift_fell_back:  # the form shift distrusts every S3 score of the task
            allowed = pd.Series(table.index == selection.model, index=table.index)
    model = cheapest_within_selection(table, by_model, max_quality_drop, column,
                                      reference=selection.model, allowed=allowed)
    table["cost"] = [by_model[m] for m in table.index]
    table["chosen"] = table.index == model
    if column == "S3":
        selection = dataclasses.replace(selection, eta=config.eta)
    if model == selection.model:
        return dataclasses.replace(selection, scores=table)
    return dataclasses.replace(selection, model=model, scores=table,
                               cheaper_than=(selection.model, float(max_quality_drop), column))


def default_pair(router: Any, candidates: Sequence[str], costs: Mapping[str, float] | None
                 ) -> tuple[str, str]:
    """The threshold policy's pair when none is named: the best model on average is strong; the
    weak one is the cheapest other candidate (costs known) or the worst on average."""
    cand = router.candidate_indices(candidates)
    strong = router.models_[router.bma_index(cand)]
    others = [router.models_[i] for i in cand if router.models_[i] != strong]
    if not others:
        return strong, strong
    rest = np.array([i for i in cand if router.models_[i] != strong])
    if costs is not None and all(m in costs for m in others):
        # the cheapest; among equally cheap ones the worse on average, by the same rule
        price = np.array([costs[router.models_[i]] for i in rest])
        rest = rest[price <= price.min()]
    acc = router.task_accuracy_.to_numpy(dtype=float)
    return strong, router.models_[best_on_average(acc, rest, worst=True)]
