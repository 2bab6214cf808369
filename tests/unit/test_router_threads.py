"""A fitted router read by many threads at once gives each caller what it gives alone (the
Router docstring promises it; the gateway's worker and user thread pools rely on it)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from benchroute.router import Router
from tests.unit.test_router import synthetic


def _calls(router: Router, i: int) -> tuple[object, ...]:
    texts = [f"task {i % 4} input {j}" for j in range(i % 7, i % 7 + 5)] + [f"new text {i}"]
    selection = router.select_model(texts, method="S3")
    return (router.route(texts),
            router.route_table(texts, policy="cheapest_within", costs={"m0": 1.0, "m1": 2.0,
                                                                       "m2": 3.0},
                               max_quality_drop=0.05),
            router.predict_proba(texts),
            selection.model, selection.scores)


def _same(a: object, b: object) -> bool:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)  # type: ignore[arg-type]
        return True
    if isinstance(a, (pd.Series, np.ndarray)):
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    return a == b


@pytest.mark.parametrize("factory", ["Flat", "HNSW8", "IVF4,Flat"])
def test_threads_reading_one_router_get_what_each_gets_alone(tmp_path, factory):
    data, _ = synthetic(3)
    router = Router(alphas=(0.0, 0.1), repeats=1, n_draws=50, encoder="hashing-64-12",
                    index_factory=factory, cache_dir=str(tmp_path / "cache")).fit(data)
    alone = [_calls(router, i) for i in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda i: _calls(router, i), [*range(24)] * 3))
    for i, got in enumerate(together):
        for a, b in zip(alone[i % 24], got):
            assert _same(a, b), (factory, i)
