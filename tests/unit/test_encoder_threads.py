"""Threads that meet an encoder not yet loaded load it once and all find it whole. Before, the
ONNX encoder published its session before its tokenizer (a second thread got the tokenizer
None), a failed tokenizer load left the session set, and every thread that came first loaded
the weights again; a router's threads each built an encoder of their own."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from benchroute import embedding
from benchroute.embedding import onnx, static
from benchroute.exceptions import BenchrouteError
from benchroute.router import Router


def _slow(calls: list[str], name: str, value: object):
    def load(*_args: object) -> object:
        calls.append(name)
        time.sleep(0.05)  # long enough for the other threads to arrive meanwhile
        return value
    return load


def _in_threads(fn, n: int = 8) -> list[object]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: fn(), range(n)))


def test_onnx_encoder_loads_once_and_whole(monkeypatch, tmp_path):
    calls: list[str] = []
    session, tokenizer = object(), object()
    monkeypatch.setattr(onnx, "_session", _slow(calls, "session", session))
    monkeypatch.setattr(onnx, "load_tokenizer", _slow(calls, "tokenizer", tokenizer))
    enc = onnx.OnnxEncoder(graph=tmp_path / "model.onnx", tokenizer=tmp_path / "tokenizer.json",
                           identifier="test")
    got = _in_threads(enc._load)
    assert sorted(calls) == ["session", "tokenizer"]
    assert all(s is session and t is tokenizer for s, t in got)


def test_onnx_encoder_whose_tokenizer_fails_keeps_nothing(monkeypatch, tmp_path):
    def broken(*_args: object) -> object:
        raise BenchrouteError("tokenizer.json: broken")
    monkeypatch.setattr(onnx, "_session", lambda *_: object())
    monkeypatch.setattr(onnx, "load_tokenizer", broken)
    enc = onnx.OnnxEncoder(graph=tmp_path / "model.onnx", tokenizer=tmp_path / "tokenizer.json",
                           identifier="test")
    with pytest.raises(BenchrouteError, match="broken"):
        enc._load()
    assert enc._session is None and enc._tokenizer is None  # the next call tries again


class _Tokenizer:
    def get_vocab_size(self) -> int:
        return 3


def test_static_encoder_loads_once_and_whole(monkeypatch, tmp_path):
    calls: list[str] = []
    tokenizer = _Tokenizer()
    enc = static.StaticEncoder(root=tmp_path, distill=False)
    vectors = (np.arange(3), np.ones((3, enc.dimension), dtype=np.float32))
    monkeypatch.setattr(static, "read_static_info", lambda *_: {"vectors_sha256": "x"})
    monkeypatch.setattr(static, "check_sha256", lambda *_: None)
    monkeypatch.setattr(static, "tokenizer_file", lambda *_: tmp_path / "tokenizer.json")
    monkeypatch.setattr(onnx, "load_tokenizer", _slow(calls, "tokenizer", tokenizer))
    monkeypatch.setattr(static, "_read_vectors", _slow(calls, "vectors", vectors))
    got = _in_threads(enc._load)
    assert sorted(calls) == ["tokenizer", "vectors"]
    assert all(table is got[0][0] and tok is tokenizer for table, tok in got)


def test_threads_sharing_a_router_share_one_encoder(monkeypatch):
    calls: list[str] = []
    real = embedding.get_encoder

    def slow_get_encoder(name: object) -> object:
        calls.append(str(name))
        time.sleep(0.05)
        return real(name)  # type: ignore[arg-type]
    monkeypatch.setattr(embedding, "get_encoder", slow_get_encoder)
    router = Router(encoder="hashing-16-12")
    got = _in_threads(router.held_encoder)
    assert calls == ["hashing-16-12"]
    assert all(enc is got[0] for enc in got)
