"""A fitted router read by many threads at once gives each caller what it gives alone (the
Router docstring promises it; the gateway's worker and user thread pools rely on it), also
on its first reads, when its encoder, caches and memos are still empty."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pandas as pd
import pytest

from benchroute.memo import make_room
from benchroute.router import Router
from tests.unit.test_router import synthetic

COSTS = {"m0": 1.0, "m1": 2.0, "m2": 3.0}


def _calls(router: Router, i: int, excluded: list[list[str]]) -> tuple[object, ...]:
    texts = [f"task {i % 4} input {j}" for j in range(i % 7, i % 7 + 5)] + [f"new text {i}"]
    selection = router.select_model(texts, method="S3")
    # more task subsets than the router's memo of reference pairs holds: threads evict
    without = router.select_model(texts[:3], exclude_datasets=excluded[i % len(excluded)])
    return (router.route(texts), router.route(texts, ood_alpha=0.05),
            router.route_table(texts, policy="cheapest_within", costs=COSTS,
                               max_quality_drop=0.05),
            router.predict_proba(texts), selection.model, selection.scores,
            without.model, without.scores)


def _same(a: object, b: object) -> bool:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)  # type: ignore[arg-type]
        return True
    if isinstance(a, (pd.Series, np.ndarray)):
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    return a == b


@pytest.mark.parametrize("factory", ["Flat", "HNSW8", "IVF4,Flat"])
def test_threads_reading_one_fresh_router_get_what_each_gets_alone(tmp_path, factory):
    data, _ = synthetic(3, n_tasks=6)
    Router(alphas=(0.0, 0.1), repeats=1, n_draws=50, encoder="hashing-64-12",
           index_factory=factory, cache_dir=str(tmp_path / "cache")).fit(data).save(tmp_path / "r")
    tasks = sorted(set(data.datasets))
    excluded = [list(c) for k in (1, 2) for c in itertools.combinations(tasks, k)]  # 21
    calls = 24
    alone = Router.load(tmp_path / "r")
    expected = [_calls(alone, i, excluded) for i in range(calls)]
    shared = Router.load(tmp_path / "r")  # first reads in the threads: nothing built yet
    start = threading.Barrier(8)
    got: dict[int, tuple[object, ...]] = {}
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        start.wait()
        try:
            for i in range(w, calls, 8):
                got[i] = _calls(shared, i, excluded)
        except BaseException as exc:  # noqa: BLE001 (reported below, with the others)
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(got) == list(range(calls))
    for i in range(calls):
        for a, b in zip(expected[i], got[i]):
            assert _same(a, b), (factory, i)


class _Raced(dict):
    """A memo whose oldest key another thread evicts between the choice and the pop."""

    def __iter__(self):
        key = next(super().__iter__())
        super().pop(key)
        yield key


class _Growing(dict):
    """A memo another thread inserts into while it is searched."""

    def __iter__(self):
        raise RuntimeError("dictionary changed size during iteration")


def test_a_memo_that_threads_fill_together_makes_room_without_raising():
    """From a review: ``memo.pop(next(iter(memo)))`` raised KeyError (two threads evicting
    one key) and RuntimeError (a search while another thread inserted), through
    select_model(exclude_datasets=...) from 8 threads."""
    raced = _Raced({("a",): 1, ("b",): 2, ("c",): 3})
    make_room(raced, 3)
    assert len(raced) < 3
    growing = _Growing({("a",): 1, ("b",): 2})
    make_room(growing, 2)  # gave up: the memo stays one over, nothing lost but room
    kept = {(): 0, ("a",): 1, ("b",): 2}
    make_room(kept, 3, evictable=bool)
    assert list(kept) == [(), ("b",)]
    make_room(kept, 1, evictable=bool)  # the one left is not evictable: it stays
    assert list(kept) == [()]
