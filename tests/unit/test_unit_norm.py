"""``unit_norm_rows``, the one check behind every place that takes vectors from outside, against
a plain float64 reading of its contract."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from benchroute.embedding.base import unit_norm_rows


def _contract(X: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(X, dtype=np.float32).astype(np.float64)
    finite = np.isfinite(x).all(axis=1)
    norms = np.sqrt((np.where(finite[:, None], x, 0.0) ** 2).sum(axis=1))
    broken = ~finite | (norms == 0)
    off = ~broken & (np.abs(norms - 1) > tol)
    out = np.where(off[:, None], x / np.where(off, norms, 1.0)[:, None], x)
    return out, broken, off


def _check(X: np.ndarray, tol: float = 1e-3) -> None:
    before = np.array(X, copy=True)
    out, broken, off = unit_norm_rows(X, tol)
    want, w_broken, w_off = _contract(X, tol)
    assert out.dtype == np.float32 and out.shape == np.shape(X)
    np.testing.assert_array_equal(broken, w_broken)
    np.testing.assert_array_equal(off, w_off)
    ok = ~broken
    np.testing.assert_allclose(out[ok], want[ok], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(X), before)  # the caller's array is untouched


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_every_kind(dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 16)).astype(dtype)
    X[:5] /= np.linalg.norm(X[:5], axis=1, keepdims=True)  # unit rows
    X[5, 3] = np.nan
    X[6, 0] = -np.inf
    X[7] = 0.0
    X[8] *= 1e20  # finite, but its squares overflow float32
    _check(X)
    out, broken, off = unit_norm_rows(X, 1e-3)
    assert broken.tolist() == [False] * 5 + [True, True, True, False]
    assert off[8] and abs(float(np.linalg.norm(out[8].astype(np.float64))) - 1) < 1e-6


def test_unit_rows_come_back_unchanged():
    X = np.eye(4, dtype=np.float32)
    out, broken, off = unit_norm_rows(X, 1e-3)
    assert not broken.any() and not off.any()
    np.testing.assert_array_equal(out, X)


@settings(max_examples=200)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)),
       st.sampled_from([1e-3, 1e-2]))
def test_property_matches_the_contract(X, tol):
    out, broken, off = unit_norm_rows(X, tol)
    want, w_broken, w_off = _contract(X, tol)
    assert broken.tolist() == w_broken.tolist() and off.tolist() == w_off.tolist()
    np.testing.assert_allclose(out[~broken], want[~broken], rtol=1e-6, atol=1e-7)
