"""The gateway's decisions: texts and entry points in, one model per request out.

A batch of requests is embedded once and searched once (:func:`benchroute.routing.router_proba`);
each request's policy is then applied to its row of P by :func:`benchroute.routing.policy_frame`,
the same rule ``Router.route_table(texts, policy=...)`` uses, so the gateway decides exactly as the
library does. :class:`MicroBatcher` collects the requests that wait while a batch is computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchroute import routing
from benchroute.exceptions import BenchrouteError
from benchroute.inputs import check_vectors
from benchroute.policies import POLICIES, canonical_params
from benchroute.serve.calibrate import Calibration, Sample, fit_parameter, threshold_for_share
from benchroute.serve.entry import PREFIX, Entry, EntryError, check_value

logger = logging.getLogger(__name__)

#: resolved entries kept: clients choose the values, so the cache is bounded (least recently
#: used out); a budget entry costs a parameter search on the sample when it is resolved again
RESOLVED_MAX = 256


@dataclass(frozen=True)
class Decision:
    """One request's routing decision, as the headers, ``/v1/route`` and the log show it."""

    entry: str
    policy: str
    params: dict[str, Any]
    model: str
    p: dict[str, float]
    cost: float | None
    fallback: str | None = None
    order: tuple[str, ...] = ()  # candidates by P, descending: the retry order
    decision_ms: float = 0.0
    ood_p: float | None = None  # the input's OOD p-value (benchroute.ood); None: not routed
    in_pool: bool = False  # a near-duplicate of the text is a benchmark input of the pool

    def to_json(self) -> dict[str, Any]:
        ood = None if self.ood_p is None or self.ood_p != self.ood_p else round(self.ood_p, 6)
        return {"model": self.model, "entry": self.entry, "policy": self.policy,
                "params": self.params, "p": self.p, "cost": self.cost,
                "fallback": self.fallback is not None, "fallback_reason": self.fallback,
                "ood_p": ood, "in_pool": self.in_pool, "decision_ms": round(self.decision_ms, 3)}


@dataclass
class ServerPolicy:
    """The server's default policy and the parameters entries without a value take."""

    policy: str = "best"
    params: dict[str, Any] = field(default_factory=dict)
    source: str = "--policy"

    def __post_init__(self) -> None:
        # a calibration file or --param may use a parameter's old name: rename it once, here
        if self.policy in POLICIES:
            self.params = canonical_params(self.policy, self.params, stacklevel=3)


class Decider:
    """Decides for batches of texts (synchronous; the batcher runs it off the event loop).

    Parameters
    ----------
    router : Router
        A fitted router.
    candidates : sequence of str
        The models the gateway may choose (each has an upstream).
    costs : mapping, optional
        Cost per call of each router model (the upstreams file's, else the router's).
    default : ServerPolicy
        The policy of the bare ``benchroute`` entry.
    sample : Sample
        P on the calibration prompts (or a pool sample): turns share and budget targets of
        entries into parameters.
    strong, weak : str
        The threshold policy's pair.
    encoder : Encoder, optional
        Embeds request texts directly (no on-disk cache: prompts are not written to disk);
        defaults to the router's.
    encode_batch : int
        Texts per encoder call: the encoder sorts a batch by length and pads each call to its
        longest text, so small calls waste little on prompts of mixed lengths.
    ood_alpha : float, optional
        Inputs whose OOD p-value is below it go to the best model on average among the
        candidates, with the reason (None: the p-value is reported, nothing moves).
    """

    def __init__(self, router: Any, candidates: Sequence[str], costs: Mapping[str, float] | None,
                 default: ServerPolicy, sample: Sample, strong: str, weak: str,
                 encoder: Any = None, calibration: Calibration | None = None,
                 encode_batch: int = 4, ood_alpha: float | None = None,
                 lacking: Sequence[str] = ()) -> None:
        from benchroute.embedding import get_encoder
        from benchroute.ood import check_alpha, reference_of, warn_cannot_act

        self.router = router
        self.candidates = list(candidates)
        self.cand = router.candidate_indices(self.candidates)
        self.cand_names = [router.models_[i] for i in self.cand]
        self.costs = dict(costs) if costs is not None else None
        self.lacking = list(lacking)  # candidates without a cost in the upstreams file
        self.default = default
        self.sample = sample
        self.strong, self.weak = strong, weak
        self.calibration = calibration
        self.encode_batch = encode_batch
        self.ood_alpha = None if ood_alpha is None else check_alpha(ood_alpha)
        # the pool's leave-one-task-out pass at start-up, not on a request
        reference = reference_of(router)
        # without a reference the fallback cannot act: said once here, where the warning of
        # the decision rule came again on every request (found by a review)
        self._fallback_alpha = None if reference.empty else self.ood_alpha
        if self.ood_alpha is not None and reference.empty:
            warn_cannot_act(self.ood_alpha)
        self.encoder = encoder if encoder is not None else get_encoder(router.encoder)
        if self.encoder.identifier != router.encoder_id_:
            raise BenchrouteError(f"encoder {self.encoder.identifier!r} is not the router's "
                                  f"{router.encoder_id_!r}")
        self.bma = router.models_[router.bma_index(self.cand)]
        self._resolved: OrderedDict[tuple[str | None, float | None],
                                    tuple[str, dict[str, Any]]] = OrderedDict()
        self._resolved_lock = threading.Lock()
        self.resolve(Entry(PREFIX))  # fail at start-up, not on the first request

    # ------------------------------------------------------------------ entries
    def resolve(self, entry: Entry) -> tuple[str, dict[str, Any]]:
        """The policy name and parameters :func:`policy_frame` takes for an entry."""
        key = (entry.policy, entry.value)
        with self._resolved_lock:
            got = self._resolved.get(key)
            if got is not None:
                self._resolved.move_to_end(key)
        if got is None:
            got = self._resolve(entry)
            with self._resolved_lock:
                self._resolved[key] = got
                while len(self._resolved) > RESOLVED_MAX:
                    self._resolved.popitem(last=False)
        policy, params = got
        return policy, dict(params)

    def _resolve(self, entry: Entry) -> tuple[str, dict[str, Any]]:
        if entry.policy is None:
            policy = self.default.policy
            if policy not in ("share", "budget"):
                return policy, self._check(policy, dict(self.default.params))
            entry = Entry(entry.name, policy, check_value(
                policy, self._server_value(policy, entry.name), f"server {policy}"))
        policy = str(entry.policy)
        pair = {"strong": self.strong, "weak": self.weak}
        if policy == "best":
            return "best", {}
        if self.costs is None and policy not in ("threshold", "share"):
            missing = self.lacking or self.cand_names
            raise EntryError(f"model {entry.name!r:.100}: policy {policy!r} needs a cost per call "
                             f"for every candidate; none is known for {missing[:10]} (add "
                             "'cost' to their entries in the upstreams file)")
        value = entry.value
        if value is None:
            value = self._server_value(policy, entry.name)
        if policy == "share":
            score = self.sample.P[:, self.router.models_.index(self.strong)] \
                - self.sample.P[:, self.router.models_.index(self.weak)]
            return "threshold", {"t": threshold_for_share(score, value), **pair}
        if policy == "budget":
            return fit_parameter(self.router, self.sample, "budget", value, self.cand,
                                 self.strong, costs=self.costs)
        name = {"threshold": "t", "smallest_sufficient": "tau",
                "cheapest_within": "max_quality_drop", "lagrangian": "lam"}[policy]
        params: dict[str, Any] = {name: value}
        if policy == "threshold":
            params.update(pair)
        return policy, self._check(policy, params)

    def _server_value(self, policy: str, name: str) -> float:
        from benchroute.serve.entry import POLICY_PARAMS

        key = POLICY_PARAMS[policy][0]
        if self.default.policy == policy and key in self.default.params:
            return float(self.default.params[key])
        raise EntryError(f"model {name!r}: the server has no {key} for {policy}; name one, e.g. "
                         f"'{PREFIX}-{policy}-<{key}>'")

    def _check(self, policy: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run the policy once on one sample row: a bad policy or parameter fails here."""
        if policy == "threshold":
            params = {"strong": self.strong, "weak": self.weak, **params}
        routing.policy_frame(self.router, self.sample.P[:1], policy, self.cand, self.costs,
                         **dict(params))
        return params

    # ------------------------------------------------------------------ decisions
    def pinned(self, entry: Entry) -> Decision:
        model = str(entry.pinned)
        return Decision(entry.label, "pinned", {}, model, {}, self._cost(model), None, (model,))

    def by_average(self) -> tuple[str, ...]:
        """The candidates, the best on average first, then by their mean accuracy: the order
        of tries for a request decided without P (no user message, a failed decision), so a
        failing upstream is retried there too."""
        acc = self.router.model_accuracy_
        rest = sorted((m for m in self.cand_names if m != self.bma), key=lambda m: -acc[m])
        return (self.bma, *rest)

    def _cost(self, model: str) -> float | None:
        cost = None if self.costs is None else self.costs.get(model)
        return None if cost is None else float(cost)

    def decide(self, texts: Sequence[str | None], entries: Sequence[Entry]) -> list[Decision]:
        """One decision per (text, entry); a text of None (no user message) goes to the best
        model on average among the candidates, as a fallback that says why."""
        out: list[Decision | None] = [None] * len(texts)
        todo = [i for i, (t, e) in enumerate(zip(texts, entries)) if e.pinned is None and t]
        for i, (t, e) in enumerate(zip(texts, entries)):
            if e.pinned is not None:
                out[i] = self.pinned(e)
            elif not t:
                policy, params = self.resolve(e)
                out[i] = Decision(e.label, policy, params, self.bma, {}, self._cost(self.bma),
                                  "no text to route (no user message): best model on average",
                                  self.by_average())
        if todo:
            Q = check_vectors(self.encoder.encode([str(texts[i]) for i in todo],
                                              batch_size=self.encode_batch), "request vectors")
            P, ood_p, in_pool = routing.router_proba_ood(self.router, Q)
            groups: dict[tuple[str, str], list[int]] = {}
            for j, i in enumerate(todo):
                policy, params = self.resolve(entries[i])
                groups.setdefault((policy, repr(sorted(params.items()))), []).append(j)
            for rows in groups.values():
                first = entries[todo[rows[0]]]
                policy, params = self.resolve(first)
                frame = routing.policy_frame(self.router, P[rows], policy, self.cand,
                                             self.costs, ood_p[rows], self._fallback_alpha,
                                             **params)
                for r, j in enumerate(rows):
                    i = todo[j]
                    probs = {m: round(float(P[j, k]), 6) for m, k in zip(self.cand_names, self.cand)}
                    model = str(frame["model"].iat[r])
                    order = tuple([model] + sorted((m for m in self.cand_names if m != model),
                                                   key=lambda m: -probs[m]))
                    p_ood = float(ood_p[j])
                    why = (f"out of distribution (OOD p-value {p_ood:.3g} < {self.ood_alpha}): "
                           "best model on average" if frame["ood_fallback"].iat[r] else None)
                    out[i] = Decision(entries[i].label, policy, params, model, probs,
                                      self._cost(model), why, order, ood_p=p_ood,
                                      in_pool=bool(in_pool[j]))
        return [d for d in out if d is not None]


class MicroBatcher:
    """Collects concurrent decisions into one embedding batch and one index search.

    One worker takes every request waiting (up to ``max_batch``) and decides them together in a
    thread, so the event loop keeps accepting requests meanwhile and throughput grows with
    concurrency. A failed batch falls back to the best model on average for each request in it
    (the reason is carried in the decision), so no request is left without an answer.
    """

    def __init__(self, decider: Decider, max_batch: int = 64,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.decider = decider
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[str | None, Entry, asyncio.Future[Decision], float]] \
            | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def decide(self, text: str | None, entry: Entry) -> Decision:
        if entry.pinned is not None:
            return self.decider.pinned(entry)
        if self._queue is None:
            raise BenchrouteError("the decision batcher is not running")
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((text, entry, fut, time.perf_counter()))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            items = [await self._queue.get()]
            while len(items) < self.max_batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            if self.on_batch is not None:
                self.on_batch(len(items))
            texts = [it[0] for it in items]
            entries = [it[1] for it in items]
            try:
                decisions = await asyncio.to_thread(self.decider.decide, texts, entries)
            except Exception as exc:  # noqa: BLE001 (every waiting request still gets an answer)
                logger.exception("decision batch of %d failed", len(items))
                decisions = [self._fallback(e, exc) for e in entries]
            now = time.perf_counter()
            for (_, _, fut, t0), d in zip(items, decisions):
                if not fut.done():
                    fut.set_result(_timed(d, (now - t0) * 1e3))

    def _fallback(self, entry: Entry, exc: Exception) -> Decision:
        d = self.decider
        return Decision(entry.label, entry.policy or d.default.policy, {}, d.bma, {},
                        d._cost(d.bma), f"decision failed ({type(exc).__name__}): best model "
                        "on average", d.by_average())


def _timed(d: Decision, ms: float) -> Decision:
    import dataclasses

    return dataclasses.replace(d, decision_ms=ms)
