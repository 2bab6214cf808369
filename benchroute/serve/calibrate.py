"""Calibrating a policy's parameter to a target on the user's own prompts, and the cost–quality
curve the status page draws.

A threshold that sends 30% of the benchmark pool to the strong model can send 10% or 60% of a
given application's prompts: the router score's distribution moves with the prompts. So the
parameter is picked on a sample of the user's prompts (``benchroute calibrate``), and the sample's
P(m, x) is kept in the calibration file (numbers only, no prompt text), so that the gateway can
turn any target of a request (``benchroute-share-0.2``) into a parameter on the same sample.

Targets and the parameter each fixes:

- ``threshold`` with a strong-call share s: t is the score P(strong) − P(weak) of the
  ⌈s·n⌉-th prompt in descending order, so a share s of the sample scores ≥ t (a block of
  tied scores goes in or out whole, whichever is closer to s).
- ``smallest_sufficient`` with a strong-call share s: the τ whose realised share is closest to
  s (ties: the smaller τ), searched exactly over the sample's P values, where alone the share
  can change (:func:`benchroute.policies.smallest_sufficient_shares`).
- ``budget`` with a mean cost per call b: the price λ of :func:`benchroute.policies.budget_price`,
  served as ``lagrangian`` so each request is decided alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchroute import policies as pol
from benchroute import routing
from benchroute._persist import read_json_file, write_file_atomic
from benchroute.exceptions import BenchrouteError
from benchroute.inputs import is_real, is_real_rows

CALIBRATION_FORMAT_VERSION = 1
MAX_SAMPLE = 10_000


def router_fingerprint(router: Any) -> str:
    """What a calibration depends on: the models, the encoder, the pool's size and tasks, its
    labels, the labels of models added from a few, and the costs. Why the labels: results
    added or changed (``add-results``) move every P, and a threshold calibrated before then
    sent every request to one model while the fingerprint still matched."""
    h = hashlib.sha256(json.dumps(
        {"models": list(router.models_), "encoder": router.encoder_id_,
         "n": int(len(router.Y_)), "tasks": router.tasks_,
         "costs": getattr(router, "costs_", None)}, sort_keys=True).encode("utf-8"))
    h.update(np.ascontiguousarray(np.nan_to_num(router.Y_, nan=-1.0), dtype="<f8").tobytes())
    for name, added in sorted(getattr(router, "added_", {}).items()):
        h.update(name.encode("utf-8", "surrogatepass"))
        h.update(np.ascontiguousarray(added.X, dtype="<f4").tobytes())
        h.update(np.ascontiguousarray(added.y, dtype="<f8").tobytes())
    return h.hexdigest()[:16]


@dataclass
class Sample:
    """P(m, x) (n, all router models) on a set of prompts; ``Y`` the true labels where known
    (pool samples), ``source`` says which prompts."""

    P: np.ndarray
    source: str
    Y: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.P)


def pool_sample(router: Any, n: int = 2000, seed: int = 0) -> Sample:
    """P on up to ``n`` pool inputs, each scored without itself (what a new input would get).

    ``Y`` has a column per router model: a model added from a few labels has no benchmark
    labels there (NaN), so the curve's true-label quality leaves it out."""
    N = len(router.Y_)
    rows = np.sort(np.random.default_rng(seed).choice(N, size=min(n, N), replace=False))
    X = router.predictor_.index_.vectors()[rows]
    P = routing.router_proba(router, X)  # each row's own label left out (a near-duplicate)
    Y = np.full(P.shape, np.nan)
    pool = [router.models_.index(m) for m in router.pool_models_]
    Y[:, pool] = router.Y_[rows]
    return Sample(P, f"pool sample ({len(rows)} of {N} benchmark inputs)", Y)


def prompt_sample(router: Any, texts: Sequence[str], seed: int = 0) -> Sample:
    """P on the user's prompts (a seeded subsample of at most ``MAX_SAMPLE``)."""
    texts = list(texts)
    if len(texts) > MAX_SAMPLE:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), MAX_SAMPLE, replace=False))
        texts = [texts[i] for i in keep]
    P = routing.router_proba(router, router.embed(texts))
    return Sample(P, f"{len(texts)} calibration prompts")


def threshold_for_share(score: np.ndarray, share: float) -> float:
    """t whose realised share, the fraction of ``score`` ≥ t, is closest to ``share``.

    With continuous scores that is t = the c-th score in descending order, c =
    :func:`benchroute.policies.share_count` (s·n rounded, halves up), the count the threshold
    policy's sweeps use; a block of tied scores (common with k-NN probabilities) goes in or out
    whole, whichever lands closer (ties: the larger share).
    """
    s = np.sort(np.asarray(score, dtype=np.float64))[::-1]
    if len(s) == 0:
        raise BenchrouteError("calibration sample is empty")
    levels = np.unique(s)[::-1]                          # distinct scores, descending
    shares = np.searchsorted(-s, -levels, side="right") / len(s)   # share ≥ each level
    options = np.r_[0.0, shares]
    thresholds = np.r_[np.nextafter(s[0], np.inf), levels]
    # in counts, with share_count's tolerance: on distinct scores the same count as it
    gap = np.abs(options - share) * len(s)
    j = int(np.flatnonzero(gap <= gap.min() + 1e-9)[-1])
    return float(thresholds[j])


def _pair(router: Any, strong: str, weak: str) -> tuple[int, int]:
    for name in (strong, weak):
        if name not in router.models_:
            raise BenchrouteError(f"model {name!r} is not among the router's models "
                                  f"{router.models_}")
    if strong == weak:
        raise BenchrouteError(f"strong and weak are both {strong!r}; name two different models")
    return router.models_.index(strong), router.models_.index(weak)


def strong_share(sample: Sample, router: Any, policy: str, params: Mapping[str, Any],
                 strong: str, cand: np.ndarray, costs: Mapping[str, float] | None) -> float:
    """The share of the sample a policy sends to ``strong``."""
    frame = routing.policy_frame(router, sample.P, policy, cand, costs, **dict(params))
    return float((frame["model"] == strong).mean())


def mean_cost(sample: Sample, router: Any, policy: str, params: Mapping[str, Any],
              cand: np.ndarray, costs: Mapping[str, float] | None) -> float:
    frame = routing.policy_frame(router, sample.P, policy, cand, costs, **dict(params))
    return pol.finite_mean(frame["cost"].to_numpy(dtype=float))


def fit_parameter(router: Any, sample: Sample, policy: str, target: float, cand: np.ndarray,
                  strong: str, weak: str | None = None,
                  costs: Mapping[str, float] | None = None) -> tuple[str, dict[str, Any]]:
    """The served policy and parameters that meet ``target`` on ``sample``.

    ``threshold`` and ``smallest_sufficient``: target is the share of calls to ``strong``;
    ``budget``: the mean cost per call (served as ``lagrangian``).
    """
    if not math.isfinite(target) or target < 0 or (policy != "budget" and target > 1):
        raise BenchrouteError(f"calibration target must be in [0, 1] (a share) or >= 0 (a mean "
                              f"cost), got {target!r}")
    if policy == "threshold":
        if weak is None:
            raise BenchrouteError("threshold calibration needs a weak model")
        s, w = _pair(router, strong, weak)
        t = threshold_for_share(sample.P[:, s] - sample.P[:, w], target)
        return "threshold", {"t": t, "strong": strong, "weak": weak}
    if policy == "smallest_sufficient":
        names = [router.models_[i] for i in cand]
        c = routing.router_costs(router, costs, "smallest_sufficient calibration", names)
        if strong not in names:  # its share of calls is what a τ is fitted to
            raise BenchrouteError(f"strong model {strong!r:.80} is not among the candidates "
                                  f"{names[:10]}; its share of calls cannot be calibrated")
        taus, shares = pol.smallest_sufficient_shares(sample.P[:, cand], c, names.index(strong))
        inside = taus <= pol.PARAM_RANGES["tau"][1] + pol.RANGE_SLACK
        taus, shares = taus[inside], shares[inside]
        return policy, {"tau": float(taus[int(np.argmin(np.abs(shares - target)))])}
    if policy == "budget":
        # costs for the candidates only, as every policy needs them
        c = routing.router_costs(router, costs, "budget calibration",
                                 [router.models_[i] for i in cand])
        lam = pol.budget_price(sample.P[:, cand], c, budget=target)
        if math.isinf(lam):  # below the cheapest assignment: a price that always picks it
            lam = 4.0 * (1.0 + float(np.ptp(sample.P))) / max(pol.smallest_step(c), np.finfo(float).tiny)
        return "lagrangian", {"lam": float(lam)}
    raise BenchrouteError(f"calibration is for 'threshold', 'smallest_sufficient' or 'budget', "
                          f"got {policy!r}")


# ---------------------------------------------------------------------- the file
@dataclass
class Calibration:
    """A calibrated operating point and the sample it was fitted on."""

    policy: str
    params: dict[str, Any]
    target: dict[str, Any]
    realised: dict[str, float]
    sample: Sample
    fingerprint: str
    #: what the parameter was fitted with: the candidates and their costs per call (None:
    #: none known). None for a file written before they were kept.
    candidates: list[str] | None = None
    costs: dict[str, float] | None = None

    def to_json(self, models: Sequence[str]) -> dict[str, Any]:
        # P as Python writes floats, exactly: rounded to 6 decimals, blocks of k-NN
        # probabilities equal up to float noise fell on the other side of a threshold or price
        # fitted on them, and the gateway's share and budget entries missed their targets
        return {"format_version": CALIBRATION_FORMAT_VERSION, "router": self.fingerprint,
                "policy": self.policy, "params": self.params, "target": self.target,
                "realised": self.realised, "candidates": self.candidates, "costs": self.costs,
                "sample": {"source": self.sample.source, "models": list(models),
                           "P": self.sample.P.tolist()}}

    def check_serving(self, candidates: Sequence[str], costs: Mapping[str, float] | None,
                      where: object = "calibration") -> None:
        """Refuse to serve a parameter fitted for other candidates or other costs: a price or
        a τ means another share or mean cost then (a budget calibrated on the store's costs
        and served with the upstreams' kept a fifth of its target). Threshold parameters
        read neither."""
        if self.policy == "threshold" or self.candidates is None:
            return
        serving = None if costs is None else {m: float(costs[m]) for m in candidates}
        if list(candidates) != self.candidates or serving != self.costs:
            raise BenchrouteError(
                f"{where}: calibrated for candidates {self.candidates} with costs {self.costs}; "
                f"serving {list(candidates)} with costs {serving}. Calibrate again as serve runs: "
                "the same --upstreams file (whose costs serve uses) and --candidates")


def save_calibration(cal: Calibration, models: Sequence[str],
                     path: str | os.PathLike[str]) -> Path:
    """Write atomically (a temporary file beside the target, then a rename)."""
    text = json.dumps(cal.to_json(models), allow_nan=False)
    return write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                             "calibration file")


def load_calibration(path: str | os.PathLike[str], router: Any) -> Calibration:
    """Read a calibration file, refusing one made for another router or with bad fields."""
    path = Path(path)
    raw = read_json_file(path, strict=True, missing=f"{path}: no such calibration file (make "
                         "one with 'benchroute calibrate')")

    def bad(field_: str, expected: str) -> BenchrouteError:
        return BenchrouteError(f"{path}: field {field_!r} is invalid; expected {expected}")

    if not isinstance(raw, dict) or raw.get("format_version") != CALIBRATION_FORMAT_VERSION:
        raise bad("format_version", str(CALIBRATION_FORMAT_VERSION))
    if raw.get("router") != router_fingerprint(router):
        raise BenchrouteError(f"{path}: made for another router (fingerprint {raw.get('router')!r}, "
                              f"this router {router_fingerprint(router)!r}); calibrate again")
    if raw.get("policy") not in ("threshold", "smallest_sufficient", "lagrangian"):
        raise bad("policy", "'threshold', 'smallest_sufficient' or 'lagrangian'")
    for key in ("params", "target", "realised", "sample"):
        if not isinstance(raw.get(key), dict):
            raise bad(key, "a mapping")
    target, realised = raw["target"], raw["realised"]
    if len(set(target) & {"strong_share", "mean_cost"}) != 1 \
            or not all(is_real(v) and v >= 0 for k, v in target.items() if k != "policy") \
            or not 0 <= target.get("strong_share", 0) <= 1 \
            or not isinstance(target.get("policy"), str):
        raise bad("target", "{'strong_share': a share in [0, 1] or 'mean_cost': a cost >= 0, "
                  "'policy': the policy calibrated}")
    if set(realised) != {"sample", "pool"} or not all(is_real(v) for v in realised.values()):
        raise bad("realised", "{'sample': number, 'pool': number}")
    sample = raw["sample"]
    if sample.get("models") != list(router.models_):
        raise bad("sample.models", f"the router's models {router.models_}")
    # numbers only: NumPy's conversion read "0.5" and true as numbers
    if not is_real_rows(sample.get("P"), None, len(router.models_)) \
            or ((P := np.asarray(sample["P"], dtype=np.float64)) < 0).any() or (P > 1).any():
        raise bad("sample.P", f"n rows of {len(router.models_)} probabilities in [0, 1]")
    params = raw["params"]
    for key, value in params.items():
        if key in ("strong", "weak"):
            if value not in router.models_:
                raise bad(f"params.{key}", f"one of {router.models_}")
        elif not is_real(value):
            raise bad(f"params.{key}", "a finite number")
    cand, costs = raw.get("candidates"), raw.get("costs")
    if cand is not None and (not isinstance(cand, list) or not cand
                             or not all(c in router.models_ for c in cand)):
        raise bad("candidates", f"a list of the router's models {router.models_}")
    if costs is not None and (not isinstance(costs, dict) or cand is None
                              or sorted(costs) != sorted(cand)
                              or not all(is_real(v) and v >= 0 for v in costs.values())):
        raise bad("costs", "null, or a cost >= 0 for each candidate")
    return Calibration(raw["policy"], dict(params), dict(raw["target"]), dict(raw["realised"]),
                       Sample(P, str(sample.get("source", "calibration prompts"))),
                       raw["router"], cand, None if costs is None else
                       {str(k): float(v) for k, v in costs.items()})


# ---------------------------------------------------------------------- the curve
def cost_quality_curve(router: Any, sample: Sample, cand: np.ndarray,
                       costs: Mapping[str, float] | None, strongest: str) -> dict[str, Any]:
    """The router's cost–quality frontier on a labelled pool sample.

    The budget policy swept from the cheapest to the free choice (quality: the true benchmark
    labels of the chosen models). Without costs, the cost of a call is 1 for the strongest
    model and 0 for the others, so x is the share of calls to it.
    """
    from benchroute.experiments.costs import sweep

    if sample.Y is None:
        raise BenchrouteError("the cost–quality curve needs a labelled (pool) sample")
    # models without benchmark labels on the sample (added from a few labels) cannot be scored
    # by true labels: the curve is the candidates that have them
    labelled = ~np.isnan(sample.Y[:, cand]).all(axis=0)
    unlabelled = [router.models_[j] for j in np.asarray(cand)[~labelled]]
    cand = np.asarray(cand, dtype=np.intp)[labelled]
    if not len(cand):  # every candidate added from a few labels: no curve to draw
        return {"x_label": "", "y_label": "", "points": [], "singles": [], "n": 0,
                "unlabelled": unlabelled, "C": [], "keep": np.zeros(len(sample.P), dtype=bool),
                "cand": []}
    models = [router.models_[i] for i in cand]
    Q = sample.Y[:, cand]
    keep = ~np.isnan(Q).any(axis=1)
    P, Q = sample.P[keep][:, cand], Q[keep]
    if costs is not None:
        C = np.broadcast_to(pol.cost_vector(models, costs), Q.shape)
        x_label = "mean cost per call"
    else:
        C = np.broadcast_to(np.array([float(m == strongest) for m in models]), Q.shape)
        x_label = f"share of calls to {strongest}"
    rows, _ = sweep("budget", P, Q, np.ascontiguousarray(C), models)
    singles = [{"model": m, "x": float(C[0, j]), "y": float(Q[:, j].mean())}
               for j, m in enumerate(models)] if len(Q) else []
    return {"x_label": x_label, "y_label": "benchmark quality (pool sample, true labels)",
            "points": [[r["cost"], r["quality"]] for r in rows], "singles": singles,
            "n": int(len(Q)), "unlabelled": unlabelled, "C": C[0].tolist(), "keep": keep,
            "cand": cand.tolist()}


def operating_point(router: Any, sample: Sample, curve: Mapping[str, Any], cand: np.ndarray,
                    policy: str, params: Mapping[str, Any],
                    costs: Mapping[str, float] | None) -> list[float]:
    """(x, y) of a policy on the curve's sample, on the curve's axes."""
    keep = curve["keep"]
    frame = routing.policy_frame(router, sample.P[keep], policy, cand, costs, **dict(params))
    # the curve's models: a choice of one without benchmark labels (an added model) is left
    # out of the point, which then stands for the inputs routed to labelled models
    col = {router.models_[i]: j for j, i in enumerate(curve["cand"])}
    rows = np.array([r for r, m in enumerate(frame["model"]) if m in col], dtype=np.intp)
    pick = np.array([col[m] for m in frame["model"].iloc[rows]], dtype=np.intp)
    Q = sample.Y[keep][:, curve["cand"]] if sample.Y is not None else None
    x = pol.finite_mean(np.asarray(curve["C"])[pick])  # costs near 1e308 summed to inf
    y = float(Q[rows, pick].mean()) if Q is not None and len(pick) else 0.0
    return [x, y]


# ---------------------------------------------------------------------- the command
def calibrate(router: Any, prompts: Sequence[str], policy: str, target: float,
              out: str | os.PathLike[str], strong: str | None = None, weak: str | None = None,
              costs: Mapping[str, float] | None = None,
              candidates: Sequence[str] | None = None) -> str:
    """Fit ``policy``'s parameter to ``target`` on ``prompts``, write the calibration file and
    return a report of the realised share (or mean cost) on the prompts and on the pool."""
    cand_names = list(candidates) if candidates is not None else list(router.models_)
    cand = router.candidate_indices(cand_names)
    if costs is None:  # the caller's costs are checked where used; the router's if complete
        costs = routing.known_costs(getattr(router, "costs_", None), cand_names)
    elif policy == "threshold":  # decides without costs: prices for some candidates are none
        costs = routing.known_costs(dict(pol.costs_by_name(costs)), cand_names, warn=False)
    pair = routing.default_pair(router, cand_names, costs)
    strong = strong or pair[0]
    weak = weak or pair[1]
    if strong not in cand_names or weak not in cand_names:
        raise BenchrouteError(f"strong {strong!r} and weak {weak!r} must be among the candidates "
                              f"{cand_names}")
    sample = prompt_sample(router, prompts)
    pool = pool_sample(router)
    served, params = fit_parameter(router, sample, policy, target, cand, strong, weak, costs)
    if policy == "budget":
        key = "mean_cost"
        realised = {"sample": mean_cost(sample, router, served, params, cand, costs),
                    "pool": mean_cost(pool, router, served, params, cand, costs)}
    else:
        key = "strong_share"
        realised = {"sample": strong_share(sample, router, served, params, strong, cand, costs),
                    "pool": strong_share(pool, router, served, params, strong, cand, costs)}
    if served != "threshold":
        params = {**params, "strong": strong}
    used = None if costs is None else {m: float(c) for m, c in zip(
        cand_names, routing.router_costs(router, costs, "calibration", cand_names))}
    cal = Calibration(served, params, {key: float(target), "policy": policy}, realised, sample,
                      router_fingerprint(router), cand_names, used)
    path = save_calibration(cal, router.models_, out)
    shown = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in params.items()}
    return (f"{policy}: {served} {shown}\n"
            f"target {key.replace('_', ' ')} {target:g}: realised {realised['sample']:.4f} on "
            f"{sample.source}, {realised['pool']:.4f} on the {pool.source}\n"
            f"wrote {path} (serve reads ROUTER/calibration.json as the default policy of the "
            f"'benchroute' entry; another file with --calibration FILE)")
