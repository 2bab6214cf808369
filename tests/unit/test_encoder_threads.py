"""Threads that meet an encoder not yet loaded load it once and all find it whole. Before, the
ONNX encoder published its session before its tokenizer (a second thread got the tokenizer
None), a failed tokenizer load left the session set, and every thread that came first loaded
the weights again; a router's threads each built an encoder of their own."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from benchroute import embedding
from benchroute.embedding import onnx, static
from benchroute.embedding.base import load_lock
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


def test_onnx_encoder_whose_session_fails_keeps_nothing(monkeypatch, tmp_path):
    def broken(*_args: object) -> object:
        raise BenchrouteError("model.onnx: not a valid ONNX graph")
    monkeypatch.setattr(onnx, "_session", broken)
    monkeypatch.setattr(onnx, "load_tokenizer", lambda *_: object())
    enc = onnx.OnnxEncoder(graph=tmp_path / "model.onnx", tokenizer=tmp_path / "tokenizer.json",
                           identifier="test")
    with pytest.raises(BenchrouteError, match="not a valid ONNX graph"):
        enc._load()
    assert enc._session is None and enc._tokenizer is None


def test_onnx_export_on_first_use_runs_once_for_all_threads(monkeypatch, tmp_path):
    """From a review: a router reads its encoder's identifier before any encode, and on a
    machine without the export each thread exported the model (and raced on its folder)."""
    calls: list[str] = []
    record = {"check_min_cosine": 1.0}
    exported: list[bool] = []
    monkeypatch.setattr(onnx, "read_export_info", lambda *_: record if exported else None)

    def export(*_args: object) -> None:
        calls.append("export")
        time.sleep(0.05)
        exported.append(True)
    monkeypatch.setattr(onnx, "export_onnx", export)
    enc = onnx.OnnxEncoder(root=tmp_path)
    got = _in_threads(lambda: enc.identifier)
    assert calls == ["export"]
    assert len(set(got)) == 1


def test_bf16_check_runs_once_for_all_threads(monkeypatch):
    """From a review: the check (a float32 model loaded and measured) ran outside the lock,
    once per thread that came first."""
    from benchroute.embedding import bf16, sentence

    calls: list[str] = []
    monkeypatch.setattr(bf16, "check_bf16", _slow(calls, "check", {"passed": True}))
    model = object()
    monkeypatch.setattr(sentence.SentenceTransformerEncoder, "_load_now",
                        lambda self: setattr(self, "_st", model))
    enc = bf16.Bf16Encoder()
    got = _in_threads(enc._load)
    assert calls == ["check"]
    assert all(m is model for m in got)


def test_a_router_builds_its_encoder_while_another_loads_weights():
    """From a review: building a router's encoder waited for any other encoder's first load
    (minutes when a static model is distilled)."""
    loading, done = threading.Event(), threading.Event()

    def load() -> None:
        with load_lock():
            loading.set()
            done.wait(timeout=10)
    other = threading.Thread(target=load)
    other.start()
    try:
        loading.wait(timeout=10)
        built: list[object] = []
        t = threading.Thread(target=lambda: built.append(Router(encoder="hashing-16-12").held_encoder()))
        t.start()
        t.join(timeout=2)
        assert built, "the router's encoder waited for another encoder's load"
    finally:
        done.set()
        other.join()
