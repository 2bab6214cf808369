"""The embedding cache's files as a disk fault, an old version or a careless edit leave them:
meta.json, shards, imports, temporary files and a full disk. Each case asserts its outcome."""

from __future__ import annotations

import errno
import json
import logging
import os
import time

import numpy as np
import pytest

from benchroute.data.text import text_key
from benchroute.embedding import EmbeddingCache, HashingEncoder

AREA = "cache"
ENC = HashingEncoder(16)
TEXTS = [f"question {i} about topic {i % 5}" for i in range(30)]


@pytest.fixture
def filled(tmp_path):
    """A cache holding TEXTS[:20] in two shards."""
    cache = EmbeddingCache(tmp_path, ENC.identifier)
    cache.embed(TEXTS[:20], ENC, chunk_size=10)
    return cache


def _reembeds(folder_root, corrupt: int):
    """Opening reports ``corrupt`` ignored shards, and embedding gives the right vectors."""
    def run():
        cache = EmbeddingCache(folder_root, ENC.identifier)
        out = cache.embed(TEXTS, ENC)
        return cache, out

    def check(result):
        cache, out = result
        return (len(cache.corrupt_shards) == corrupt
                and np.allclose(out, ENC.encode(TEXTS), atol=1e-6))

    return run, check


# ---------------------------------------------------------------- meta.json
META_VALUES = [("dimension", v, "a positive integer")
               for v in (None, "16", 16.0, True, -1, 0, [16], {"d": 16}, 1 << 40)] + \
              [("format_version", v, "an integer") for v in ("1", None, [1], 1.5, True, {"v": 1})]


@pytest.mark.parametrize("field, value, expected", META_VALUES,
                         ids=[f"{f}={v!r}" for f, v, _ in META_VALUES])
def test_meta_field_of_wrong_type(corpus, filled, field, value, expected):
    meta = filled.folder / "meta.json"
    doc = json.loads(meta.read_text())
    doc[field] = value
    meta.write_text(json.dumps(doc))
    assert corpus(AREA, "error", lambda: EmbeddingCache(filled.root, ENC.identifier),
           match=rf"meta\.json: field '{field}' is .*expected {expected}")


def test_meta_without_dimension(corpus, filled):
    meta = filled.folder / "meta.json"
    doc = json.loads(meta.read_text())
    del doc["dimension"]
    meta.write_text(json.dumps(doc))
    assert corpus(AREA, "error", lambda: EmbeddingCache(filled.root, ENC.identifier),
           match=r"meta\.json: field 'dimension' is None")


def test_meta_format_version_huge(corpus, filled):
    meta = filled.folder / "meta.json"
    meta.write_text('{"format_version": 1' + "0" * 400 + ', "encoder": "x", "dimension": 16}')
    assert corpus(AREA, "error", lambda: EmbeddingCache(filled.root, ENC.identifier),
           match=r"cache format 10+…\(401 chars\) is newer than this benchroute reads")


@pytest.mark.parametrize("content, pattern", [
    (b"{not json", r"meta\.json: invalid JSON"),
    (b"\xff\xfe{\x00}\x00", r"meta\.json: not UTF-8 text \(invalid start byte at byte 0\)"),
    (b"[1, 2]", r"meta\.json: expected a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, r"meta\.json: invalid JSON: nested too deeply"),
    (b'{"format_version": 1, "dimension": NaN}', r"meta\.json: invalid JSON: NaN is not a number"),
    (b"", r"meta\.json: invalid JSON"),
    (json.dumps({"format_version": 1, "encoder": "someone-else", "dimension": 16}).encode(),
     r"meta\.json: holds 'someone-else'"),
    (json.dumps({"format_version": 1, "encoder": ENC.identifier, "dimension": 8}).encode(),
     r"meta\.json: stored vectors have dimension 8, the encoder gives 16"),
], ids=["broken", "utf16", "list", "deep", "nan", "empty", "other-encoder", "other-dimension"])
def test_meta_content(corpus, filled, content, pattern):
    (filled.folder / "meta.json").write_bytes(content)
    assert corpus(AREA, "error", lambda: EmbeddingCache.for_encoder(ENC, filled.root), match=pattern)


# ---------------------------------------------------------------- shards
def _rewrite_shard(cache, **arrays):
    shard = sorted(cache.folder.glob("shard-*.npz"))[0]
    with np.load(shard) as z:
        data = {k: z[k] for k in z.files}
    for k, v in arrays.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v(data[k]) if callable(v) else v
    with open(shard, "wb") as fh:
        np.savez(fh, **data)
    return shard


@pytest.mark.parametrize("change", [
    {"sha256": lambda k: np.concatenate([k, k[:3]])},  # more keys than vectors
    {"embedding": lambda e: e[:-2]},  # fewer vectors than keys
    {"sha256": lambda k: k.reshape(2, -1)},
    {"embedding": lambda e: e.reshape(-1)},
    {"sha256": None},
    {"embedding": None},
    {"sha256": lambda k: k.astype(object)},  # would need pickle
], ids=["more-keys", "fewer-vectors", "keys-2d", "vectors-1d", "no-keys", "no-vectors", "pickled-keys"])
def test_inconsistent_shard_is_ignored_and_reported(corpus, filled, change):
    _rewrite_shard(filled, **change)
    run, check = _reembeds(filled.root, corrupt=1)
    assert corpus(AREA, "skip", run, check=check)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "zeros"])
def test_damaged_shard_is_ignored_and_reported(corpus, filled, damage):
    shard = sorted(filled.folder.glob("shard-*.npz"))[1]
    raw = shard.read_bytes()
    shard.write_bytes({"truncate": raw[: len(raw) // 2], "empty": b"", "garbage": b"PK\x03\x04junk" * 50,
                       "zeros": bytes(len(raw))}[damage])
    run, check = _reembeds(filled.root, corrupt=1)
    assert corpus(AREA, "skip", run, check=check)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 0.0], ids=repr)
def test_shard_with_unusable_vector(corpus, filled, value):
    def poison(e):
        e = e.astype(np.float32)
        e[3] = 0.0 if value == 0.0 else e[3]
        e[3, 0] = value
        return e

    _rewrite_shard(filled, embedding=poison)
    assert corpus(AREA, "error", lambda: EmbeddingCache(filled.root, ENC.identifier).get(TEXTS[:20]),
           match=r"shard-\w+\.npz: field 'embedding': 1 of 10 vectors are not finite or are zero "
                 r"\(first at row 3\); delete the shard")


@pytest.mark.parametrize("scale", [3.0, 0.5, 1.05])
def test_shard_with_non_unit_vectors_is_normalised(corpus, filled, caplog, scale):
    _rewrite_shard(filled, embedding=lambda e: e * scale)

    def check(out):
        return (np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
                and np.allclose(out, ENC.encode(TEXTS[:20]), atol=1e-5)
                and "were normalised" in caplog.text)

    with caplog.at_level(logging.WARNING):
        assert corpus(AREA, "right", lambda: EmbeddingCache(filled.root, ENC.identifier).get(TEXTS[:20])[0],
               check=check)


def test_shard_of_other_dimension(corpus, filled):
    _rewrite_shard(filled, embedding=lambda e: np.ascontiguousarray(e[:, :8]) * np.sqrt(2))
    assert corpus(AREA, "error", lambda: EmbeddingCache(filled.root, ENC.identifier).get(TEXTS[:20]),
           match=r"shard-\w+\.npz: field 'embedding' has shape \(10, 8\) and type float64, expected \(10, 16\)")


# ---------------------------------------------------------------- import_npz
def _npz(tmp_path, name="pre.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


GOOD_KEYS = np.array([text_key(t) for t in TEXTS[:4]])
GOOD_VECS = ENC.encode(TEXTS[:4])


@pytest.mark.parametrize("arrays, pattern", [
    ({"sha256": np.array(["nothex"] * 4), "embedding": GOOD_VECS}, r"field 'sha256' holds 'nothex', expected 64 lower-case hex"),
    ({"sha256": np.arange(4), "embedding": GOOD_VECS}, r"field 'sha256' has shape \(4,\) and type int64"),
    ({"sha256": GOOD_KEYS.reshape(2, 2), "embedding": GOOD_VECS}, r"field 'sha256' has shape \(2, 2\)"),
    ({"sha256": GOOD_KEYS, "embedding": GOOD_VECS.reshape(-1)}, r"field 'embedding' has shape \(64,\)"),
    ({"sha256": np.concatenate([GOOD_KEYS, GOOD_KEYS[:1]]), "embedding": GOOD_VECS},
     r"field 'embedding' has shape \(4, 16\) .*expected \(5, (d|16)\)"),
    ({"sha256": GOOD_KEYS, "embedding": GOOD_VECS.astype(np.int8)}, r"field 'embedding' .* type int8"),
    ({"sha256": GOOD_KEYS, "embedding": np.where(np.eye(4, 16) > 0, np.nan, GOOD_VECS)},
     r"field 'embedding': 4 of 4 vectors are not finite or are zero .*the file is refused"),
    ({"sha256": GOOD_KEYS, "embedding": np.zeros((4, 16), np.float16)},
     r"field 'embedding': 4 of 4 vectors are not finite or are zero"),
    ({"sha256": GOOD_KEYS}, r"not an embeddings file with 'sha256' and 'embedding'"),
    ({"embedding": GOOD_VECS}, r"not an embeddings file"),
    ({"sha256": GOOD_KEYS.astype(object), "embedding": GOOD_VECS}, r"field 'sha256' holds Python objects"),
    ({"sha256": GOOD_KEYS, "embedding": GOOD_VECS[:, :8]}, r"vectors have dimension 8, cache holds 16"),
    ({"sha256": np.array([k.upper() for k in GOOD_KEYS]), "embedding": GOOD_VECS}, r"field .sha256. holds .*expected 64 lower-case hex digits"),
    # the last of a repeated key won, silently
    ({"sha256": np.concatenate([GOOD_KEYS[:3], GOOD_KEYS[:1]]),
      "embedding": np.eye(4, 16, dtype=np.float32)},
     r"field 'sha256' holds \w+… at rows 0 and 3 with different vectors"),
], ids=["not-hex", "int-keys", "keys-2d", "vectors-1d", "more-keys", "int-vectors", "nan", "zeros",
        "no-embedding", "no-sha256", "pickled-keys", "wrong-dimension", "upper-hex",
        "repeated-key"])
def test_import_bad_npz(corpus, tmp_path, arrays, pattern):
    path = _npz(tmp_path, **arrays)
    cache = EmbeddingCache(tmp_path / "c", ENC.identifier, 16)
    assert corpus(AREA, "error", lambda: cache.import_npz(path), match=r"pre\.npz: " + pattern
           if "dimension 8" not in pattern else pattern)
    assert len(EmbeddingCache(tmp_path / "c", ENC.identifier)) == 0  # nothing half-imported


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04" + bytes(100)])
def test_import_not_npz(corpus, tmp_path, content):
    path = tmp_path / "pre.npz"
    path.write_bytes(content)
    cache = EmbeddingCache(tmp_path / "c", ENC.identifier)
    assert corpus(AREA, "error", lambda: cache.import_npz(path), match=r"pre\.npz: not an embeddings file")


def test_import_missing_file(corpus, tmp_path):
    cache = EmbeddingCache(tmp_path / "c", ENC.identifier)
    assert corpus(AREA, "error", lambda: cache.import_npz(tmp_path / "absent.npz"),
           match=r"absent\.npz: not an embeddings file")


def test_import_non_unit_is_normalised(corpus, tmp_path, caplog):
    path = _npz(tmp_path, sha256=GOOD_KEYS, embedding=(GOOD_VECS * 2).astype(np.float16))
    cache = EmbeddingCache(tmp_path / "c", ENC.identifier)

    def run():
        cache.import_npz(path)
        return cache.get(TEXTS[:4])

    with caplog.at_level(logging.WARNING):
        assert corpus(AREA, "right", run, check=lambda r: r[1].all() and np.allclose(r[0], GOOD_VECS, atol=2e-3)
               and "4 of 4 vectors were not of unit norm" in caplog.text)


RAW = ["  padded question\r\n", "windows\r\nline endings", "already normal"]


@pytest.mark.new_api
def test_import_raw_sha_rekeyed_with_texts(corpus, tmp_path):
    """shared/embeddings key by the raw text's SHA-256; texts= maps them to the normalised key."""
    import hashlib

    raw_keys = np.array([hashlib.sha256(t.encode()).hexdigest() for t in RAW])
    path = _npz(tmp_path, sha256=raw_keys, embedding=ENC.encode(RAW))
    cache = EmbeddingCache(tmp_path / "c", ENC.identifier)

    def run():
        cache.import_npz(path, texts=RAW)
        return cache.get(["padded question", "windows\nline endings", "already normal"])

    assert corpus(AREA, "right", run, check=lambda r: r[1].all() and np.allclose(r[0], ENC.encode(RAW)))


def test_import_raw_sha_without_texts(corpus, tmp_path):
    """Without texts=, keys are taken as they are: right for normalised texts, not found (and
    so re-embedded, never wrong) for the others."""
    import hashlib

    raw_keys = np.array([hashlib.sha256(t.encode()).hexdigest() for t in RAW])
    path = _npz(tmp_path, sha256=raw_keys, embedding=ENC.encode(RAW))
    cache = EmbeddingCache(tmp_path / "c", ENC.identifier)

    def run():
        cache.import_npz(path)
        return cache.get(RAW)[1].tolist()

    assert corpus(AREA, "right", run, check=lambda found: found == [False, False, True])


def test_same_text_different_whitespace_shares_one_vector(corpus, tmp_path):
    cache = EmbeddingCache(tmp_path, ENC.identifier)

    def run():
        cache.embed(["one input\r\n"], ENC)
        cache.embed(["  one input"], ENC)
        return cache

    assert corpus(AREA, "right", run, check=lambda c: len(c) == 1 and (c.hits, c.misses) == (1, 1))


# ---------------------------------------------------------------- temporaries and a full disk
def test_stale_temporary_removed_on_open(corpus, filled):
    stale = filled.folder / ".shard-dead.npz.tmp"
    stale.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert corpus(AREA, "right", lambda: EmbeddingCache(filled.root, ENC.identifier),
           check=lambda c: not stale.exists() and len(c) == 20)


def test_fresh_temporary_removed_at_next_write(corpus, filled):
    fresh = filled.folder / ".shard-live.npz.tmp"
    fresh.write_bytes(b"half")

    def run():
        cache = EmbeddingCache(filled.root, ENC.identifier)
        kept = fresh.exists()  # a live writer may own it: not removed without the lock
        cache.embed(TEXTS, ENC)
        return kept, fresh.exists()

    assert corpus(AREA, "right", run, check=lambda r: r == (True, False))


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_leaves_no_partial_shard(corpus, filled, monkeypatch):
    monkeypatch.setattr(np, "savez", _disk_full)
    cache = EmbeddingCache(filled.root, ENC.identifier)
    assert corpus(AREA, "error", lambda: cache.embed(TEXTS, ENC),
           match=r"\.shard-\w+\.npz\.tmp: cannot write an embedding shard \(No space left on device\)")
    assert not list(filled.folder.glob(".*.tmp"))


def test_after_a_full_disk_the_next_run_completes(corpus, filled, monkeypatch):
    (filled.folder / ".shard-partial.npz.tmp").write_bytes(b"\0" * 4096)  # left by a full disk
    with monkeypatch.context() as m:
        m.setattr(np, "savez", _disk_full)
        with pytest.raises(Exception, match="No space left"):
            EmbeddingCache(filled.root, ENC.identifier).embed(TEXTS, ENC)
    run, check = _reembeds(filled.root, corrupt=0)
    assert corpus(AREA, "right", run, check=lambda r: check(r) and not list(filled.folder.glob(".*.tmp")))


def test_full_disk_writing_meta(corpus, tmp_path, monkeypatch):
    from pathlib import Path

    real = Path.write_text

    def full(self, *a, **k):
        if self.name.startswith(".meta-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    cache = EmbeddingCache(tmp_path, ENC.identifier)
    assert corpus(AREA, "error", lambda: cache.embed(TEXTS, ENC),
           match=r"meta\.json: cannot write \(No space left on device\)")
    assert not list(cache.folder.glob(".*.tmp"))


# ---------------------------------------------------------------- API misuse
@pytest.mark.parametrize("call, pattern", [
    (lambda c: c.put(["a", "b"], np.ones((3, 16), np.float32)), r"expected 2 float vectors, got an array of shape \(3, 16\)"),
    (lambda c: c.put(["a"], np.ones((1, 16), np.int64)), r"expected 1 float vectors.*type int64"),
    (lambda c: c.put(["a"], np.ones(16, np.float32)), r"expected 1 float vectors, got an array of shape \(16,\)"),
    (lambda c: c.put(["a"], np.full((1, 16), np.nan, np.float32)), r"vectors to store: 1 of 1 vectors are not finite"),
    (lambda c: c.embed(["x"], HashingEncoder(8)), r"encoder 'hashing-8-12' does not match"),
    (lambda c: c.embed(["x", 3], ENC), r"text 1 is a int, expected str"),
    (lambda c: c.embed([None], ENC), r"text 0 is a NoneType, expected str"),
], ids=["length", "ints", "1d", "nan", "other-encoder", "int-text", "none-text"])
def test_api_misuse(corpus, tmp_path, call, pattern):
    cache = EmbeddingCache(tmp_path, ENC.identifier)
    assert corpus(AREA, "error", lambda: call(cache), match=pattern)


def test_lone_surrogate_text(corpus, tmp_path):
    cache = EmbeddingCache(tmp_path, ENC.identifier)
    assert corpus(AREA, "right", lambda: cache.embed(["bad \ud800 text", "fine"], ENC),
           check=lambda out: out.shape == (2, 16) and len(cache) == 2)


def test_cache_opened_before_another_writer_filled_it(corpus, tmp_path):
    """Opened empty (no dimension known), then every text is stored by another writer."""
    early = EmbeddingCache(tmp_path, ENC.identifier)
    EmbeddingCache(tmp_path, ENC.identifier).embed(TEXTS, ENC)
    assert corpus(AREA, "right", lambda: early.embed(TEXTS, ENC),
           check=lambda out: np.allclose(out, ENC.encode(TEXTS), atol=1e-6) and early.misses == 0)
