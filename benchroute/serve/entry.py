"""The grammar of the gateway's entry points: what a request's ``model`` field may name.

An OpenAI client can only send a model name, so the routing policy and its one parameter ride
in it::

    benchroute                              the server's default policy and parameters
    benchroute-best                         argmax P(m, x) (ties: best on average, then cheaper)
    benchroute-threshold-<t>                strong if P(strong) − P(weak) ≥ t, else weak
    benchroute-share-<s>                    threshold whose t sends a share s of the calibration
                                            sample to the strong model
    benchroute-smallest_sufficient-<tau>    the cheapest model with P ≥ tau
    benchroute-cheapest_within-<d>          the cheapest model whose P is within d
                                            (max_quality_drop) of the top P
    benchroute-lagrangian-<lam>             argmax P − lam · cost
    benchroute-budget-<b>                   lagrangian whose lam keeps the calibration sample's
                                            mean cost per call ≤ b
    <model name>                            no routing: that router model (or upstream model id)

Numbers are plain decimals (``0.3``, ``-0.05``, ``1e-4``). Hyphens and underscores in the
policy name are interchangeable (``smallest-sufficient``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from benchroute.exceptions import BenchrouteError
from benchroute.policies import PARAM_RANGES

PREFIX = "benchroute"

# policy -> (parameter it takes, lowest value, highest value)
#: each entry policy's parameter and range: the library's (benchroute.policies.PARAM_RANGES),
#: and the gateway's own ``share`` (the strong model's share of calls)
POLICY_PARAMS: dict[str, tuple[str, float, float]] = {
    "threshold": ("t", *PARAM_RANGES["t"]),
    "share": ("share", 0.0, 1.0),
    "smallest_sufficient": ("tau", *PARAM_RANGES["tau"]),
    "cheapest_within": ("max_quality_drop", *PARAM_RANGES["max_quality_drop"]),
    "lagrangian": ("lam", *PARAM_RANGES["lam"]),
    "budget": ("budget", *PARAM_RANGES["budget"]),
}
POLICY_NAMES = ("best", *POLICY_PARAMS)

# one way to read each digit string: "\d+\.?\d*" split a run of digits between its two parts
# in every way, so a name of n digits and a wrong last character took O(n²) steps to refuse
# (12,000 digits held the event loop, and every other request, 6 s; found by fuzzing)
_VALUE = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?"
_ENTRY = re.compile(
    rf"^{PREFIX}(?:-(?P<policy>[a-z][a-z_-]*?)(?:-(?P<value>{_VALUE}))?)?$",
    re.ASCII)  # plain decimals: \d would take other scripts' digits ('١'), which float() reads
_PLAIN_VALUE = re.compile(rf"^{_VALUE}$", re.ASCII)


class EntryError(BenchrouteError):
    """A model name that is neither an entry point nor a known model (``status`` 404), or an
    entry point with a bad value (400)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Entry:
    """One parsed entry point: a policy with its parameter, or a pinned model.

    ``policy`` None means the server default; ``pinned`` names the router model asked for
    directly.
    """

    name: str
    policy: str | None = None
    value: float | None = None
    pinned: str | None = None
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        """The entry in one spelling, as decisions, metrics and the log name it: a client may
        write one entry many ways (case, spaces, ``0.1`` or ``0.100``), and a name as sent
        could be as long as the body."""
        if self.pinned is not None:
            return self.name  # one of the served models' names
        if self.policy is None:
            return PREFIX
        if self.value is None:
            return f"{PREFIX}-{self.policy}"
        value = repr(self.value)  # the shortest spelling that reads back as the same float
        return f"{PREFIX}-{self.policy}-{value.removesuffix('.0')}"


def examples() -> list[str]:
    """Entry names for /v1/models and the docs."""
    return [PREFIX, f"{PREFIX}-best", f"{PREFIX}-threshold-0.1", f"{PREFIX}-share-0.3",
            f"{PREFIX}-smallest_sufficient-0.7", f"{PREFIX}-cheapest_within-0.02",
            f"{PREFIX}-lagrangian-10", f"{PREFIX}-budget-0.002"]


def check_value(policy: str, value: float, where: str) -> float:
    """A policy parameter within its range (NaN and infinities refused)."""
    name, lo, hi = POLICY_PARAMS[policy]
    if not math.isfinite(value) or not lo <= value <= hi:
        span = f"[{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g}"
        raise EntryError(f"{where}: {policy} takes {name} in {span}, got {value!r}")
    return float(value)


def reads_as_entry(name: str) -> bool:
    """Whether a served model's name would also read as an entry point (``benchroute``,
    ``Benchroute-budget``): its pinned requests and an entry's would share one label."""
    return _ENTRY.match(name.strip().lower()) is not None


def _bad_value(name: str) -> EntryError | None:
    """A known policy followed by something that is not a plain ASCII decimal
    (``benchroute-threshold-abc``, ``-nan``, ``-0.1.2``, ``-١``): a bad value (400), which the
    grammar alone read as an unknown policy ``threshold_abc`` or an unknown model (404)."""
    low = name.strip().lower()
    for policy in POLICY_NAMES:
        for spelling in {policy, policy.replace("_", "-")}:
            head = f"{PREFIX}-{spelling}-"
            if not low.startswith(head):
                continue
            value = low[len(head):]
            if policy == "best":
                return EntryError(f"model {name!r:.100}: policy 'best' takes no value")
            if _PLAIN_VALUE.match(value) is None:
                return EntryError(f"model {name!r:.100}: {policy} takes {POLICY_PARAMS[policy][0]} "
                                  f"as a plain ASCII decimal (e.g. 0.3, -0.05, 1e-4), got "
                                  f"{value!r:.40}")
    return None


def parse_entry(name: object, models: dict[str, str]) -> Entry:
    """Parse a request's ``model`` field.

    ``models`` maps each routable router model name, and each upstream model id, to the router
    model it means; those names pin the model. Anything else that does not follow the grammar
    fails with the valid forms listed.
    """
    if name is None:
        return Entry(PREFIX)
    if not isinstance(name, str):
        raise EntryError(f"model must be a string, got {type(name).__name__}")
    if name == "":
        return Entry(PREFIX)
    if name in models:
        return Entry(name, policy="pinned", pinned=models[name])
    m = _ENTRY.match(name.strip().lower())
    bad = _bad_value(name)
    if bad is not None:
        raise bad
    if m is None:
        raise EntryError(f"unknown model {name!r:.100}: use '{PREFIX}', '{PREFIX}-<policy>[-<value>]' "
                         f"with a policy of {list(POLICY_NAMES)} (e.g. {examples()[1:4]}), or "
                         f"one of the served models {sorted(models)[:10]}", 404)
    policy = m.group("policy")
    value = m.group("value")
    if policy is None:
        return Entry(name)
    policy = policy.replace("-", "_")
    if policy not in POLICY_NAMES:
        raise EntryError(f"unknown policy {policy!r:.60} in model {name!r:.100}; choose one of "
                         f"{list(POLICY_NAMES)}", 404)
    if policy == "best":
        if value is not None:
            raise EntryError(f"model {name!r:.100}: policy 'best' takes no value")
        return Entry(name, "best")
    if value is None:
        return Entry(name, policy)  # the server's value for this policy
    # + 0.0: -0 is 0 (its own label, "…-share--0", was a second metrics series for one entry)
    return Entry(name, policy, check_value(policy, float(value), f"model {name!r:.100}") + 0.0)
