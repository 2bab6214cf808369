"""The gateway's figures: Prometheus metrics for scrapers, and the same counts for the status page.

Each app has its own registry (several gateways can live in one process, as in the tests).
Shares are realised shares since start: decisions for a model over all decisions of an entry,
beside the target share the entry (or the calibration) asked for.

Entries are labelled in one spelling (:attr:`Entry.label`), but their values come from clients
(``benchroute-threshold-0.1``, ``-0.11``, ``-0.111``, ...), so each one kept as a label would
grow the registry, and every scrape, without bound. Besides the reserved names (the default
entry and the served models), the first ``max_entries`` labels are kept; decisions of later
ones are counted under ``OTHER``.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PCounter

from benchroute.serve.decide import Decision

#: the label of the entries past ``max_entries``
OTHER = "other"
#: endpoints that read the gateway's state (the status page, Prometheus, health checks)
WATCHING = frozenset({"/", "/status.json", "/metrics", "/healthz"})
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    """Counters, histograms and the realised-vs-target shares."""

    def __init__(self, models: list[str], strongest: str, costs: Mapping[str, float] | None,
                 window: int = 2000, max_entries: int = 100,
                 reserved: Iterable[str] = ()) -> None:
        self.max_entries = max_entries
        self._reserved = set(reserved)
        self.other = OTHER
        while self.other in self._reserved:  # a served model named "other"
            self.other = f"{self.other} entries"
        self.registry = CollectorRegistry()
        self.models = models
        self.strongest = strongest
        self.costs = dict(costs) if costs is not None else None
        r = self.registry
        self.requests = PCounter("benchroute_requests", "HTTP requests by endpoint and status",
                                 ["endpoint", "status"], registry=r)
        self.decisions = PCounter("benchroute_decisions", "Routing decisions by entry point and "
                                  "chosen model", ["entry", "model"], registry=r)
        self.fallbacks = PCounter("benchroute_fallbacks", "Decisions or calls that fell back, by "
                                  "reason", ["reason"], registry=r)
        self.in_pool = PCounter("benchroute_in_pool", "Routed texts that are near-duplicates of "
                                "benchmark inputs of the pool (their labels left out)",
                                registry=r)
        self.upstream_errors = PCounter("benchroute_upstream_errors", "Failed upstream calls by "
                                        "model and kind", ["model", "kind"], registry=r)
        self.decision_seconds = Histogram("benchroute_decision_seconds", "Time from request to "
                                          "decision (queue, embedding, search, policy)",
                                          buckets=_LATENCY, registry=r)
        self.upstream_seconds = Histogram("benchroute_upstream_seconds", "Upstream call time to "
                                          "the response (its headers when streaming)", ["model"],
                                          buckets=_LATENCY, registry=r)
        self.batch_size = Histogram("benchroute_decision_batch_size", "Requests decided per "
                                    "encoder batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128),
                                    registry=r)
        self.stream_ends = PCounter("benchroute_stream_ends", "Streamed answers by how they "
                                    "ended: complete, upstream_broke_off, client_gone, "
                                    "not_sent, cut_at_shutdown", ["end"], registry=r)
        self.cost = PCounter("benchroute_estimated_cost", "Estimated cost of the routed calls "
                             "(cost per call of the model that answered)", registry=r)
        self.cost_strongest = PCounter("benchroute_strongest_cost", f"Cost of the same calls "
                                       f"always sent to the strongest model ({strongest})",
                                       registry=r)
        self.realised = Gauge("benchroute_realised_share", "Share of an entry's decisions that "
                              "went to a model, since start", ["entry", "model"], registry=r)
        self.target = Gauge("benchroute_target_share", "Share of calls to a model that an entry "
                            "or the calibration targets", ["entry", "model"], registry=r)
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {}
        self._targets: dict[tuple[str, str], float] = {}
        self._entries: set[str] = set()
        self._latency: deque[float] = deque(maxlen=window)
        self._p: deque[float] = deque(maxlen=window)
        self._cost_live: deque[float] = deque(maxlen=window)
        self.totals: Counter[str] = Counter()

    # ------------------------------------------------------------------ recording
    def _label(self, entry: str) -> str:
        """The entry's label: its name while fewer than ``max_entries`` are kept (call with
        the lock held)."""
        if entry in self._entries or entry in self._reserved:
            return entry
        if len(self._entries) < self.max_entries and entry != self.other:
            self._entries.add(entry)
            return entry
        return self.other

    def set_target(self, entry: str, model: str, share: float) -> None:
        """A target share for an entry; none for the entries counted under ``OTHER``, whose
        decisions mix several targets."""
        with self._lock:
            label = self._label(entry)
            if label == self.other:
                return
            self._targets[(label, model)] = share
        self.target.labels(label, model).set(share)

    def request(self, endpoint: str, status: int) -> None:
        """A request, by endpoint and status. The page's and the monitors' own reads
        (:data:`WATCHING`) count in ``benchroute_requests_total`` alone, not in the traffic the
        page shows: an open page made an idle gateway look busy (found by a review)."""
        self.requests.labels(endpoint, str(status)).inc()
        if endpoint in WATCHING:
            return
        with self._lock:
            self.totals["requests"] += 1
            if status >= 400:
                self.totals["errors"] += 1

    def decision(self, d: Decision) -> None:
        with self._lock:
            entry = self._label(d.entry)
        self.decisions.labels(entry, d.model).inc()
        routed = d.policy != "pinned"  # a pinned model is no routing decision: no latency
        if routed:
            self.decision_seconds.observe(d.decision_ms / 1e3)
        if d.fallback:
            self.fallback(d.fallback.split(" (")[0].split(":")[0])
        if d.in_pool:
            self.in_pool.inc()
        with self._lock:
            counts = self._counts.setdefault(entry, Counter())
            counts[d.model] += 1
            total = sum(counts.values())
            if routed:
                self._latency.append(d.decision_ms)
            if d.p:
                self._p.append(d.p.get(d.model, np.nan))
            shares = {m: counts[m] / total for m in counts}
            self.totals["decisions"] += 1
        for m, s in shares.items():
            self.realised.labels(entry, m).set(s)

    def fallback(self, reason: str) -> None:
        self.fallbacks.labels(reason[:80]).inc()
        with self._lock:
            self.totals["fallbacks"] += 1

    def answered(self, model: str) -> None:
        """A call answered by ``model``: its cost against the strongest model's."""
        if self.costs is None:
            return
        c = self.costs.get(model)
        if c is None:  # a pinned model outside the candidates, without a cost: not free
            with self._lock:
                self.totals["unpriced_calls"] += 1
            return
        self.cost.inc(c)
        self.cost_strongest.inc(self.costs.get(self.strongest, 0.0))
        with self._lock:
            self._cost_live.append(c)

    def stream_end(self, outcome: str) -> None:
        """How a relayed stream ended (``Answer.outcome``): a client gone mid-stream was seen
        nowhere before (found by a review)."""
        self.stream_ends.labels(outcome.split(" (")[0].replace(" ", "_")).inc()

    def upstream(self, model: str, seconds: float, error: str | None = None) -> None:
        self.upstream_seconds.labels(model).observe(seconds)
        if error is not None:
            self.upstream_error(model, error)

    def upstream_error(self, model: str, kind: str) -> None:
        """A failed try, or a stream that broke off after it was answered (kind ``stream``,
        no second call timed)."""
        self.upstream_errors.labels(model, kind).inc()
        with self._lock:
            self.totals["upstream_errors"] += 1

    # ------------------------------------------------------------------ reading
    def prometheus(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """The status page's figures."""
        with self._lock:
            lat = np.array(self._latency, dtype=float)
            p = np.array(self._p, dtype=float)
            by_entry = {e: dict(c) for e, c in self._counts.items()}
            targets: list[dict[str, Any]] = [{"entry": e, "model": m, "target": t}
                                             for (e, m), t in self._targets.items()]
            totals = dict(self.totals)
            live_cost = float(np.mean(self._cost_live)) if self._cost_live else None
        all_counts: Counter[str] = Counter()
        for c in by_entry.values():
            all_counts.update(c)
        n = sum(all_counts.values())
        for t in targets:
            c = by_entry.get(str(t["entry"]), {})
            t["realised"] = c.get(str(t["model"]), 0) / sum(c.values()) if c else None
        return {
            "totals": {k: totals.get(k, 0) for k in ("requests", "errors", "decisions",
                                                    "fallbacks", "upstream_errors")},
            "decisions": {m: all_counts.get(m, 0) for m in self.models},
            "share": {m: (all_counts.get(m, 0) / n if n else None) for m in self.models},
            "by_entry": by_entry,
            "targets": targets,
            "decision_ms": {"p50": _q(lat, 50), "p99": _q(lat, 99), "n": int(len(lat))},
            "live": {"mean_p": float(np.nanmean(p)) if len(p) and np.isfinite(p).any() else None,
                     "mean_cost": live_cost,
                     "strong_share": all_counts.get(self.strongest, 0) / n if n else None},
            "cost": {"estimated": _total(self.cost), "strongest": _total(self.cost_strongest),
                     "unpriced_calls": totals.get("unpriced_calls", 0)}
            if self.costs is not None else None,
        }


def _q(a: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(a, q)), 3) if len(a) else None


def _total(counter: PCounter) -> float:
    for metric in counter.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                return float(s.value)
    return 0.0
