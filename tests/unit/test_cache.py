"""The content-addressed embedding cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchroute.embedding import EmbeddingCache, HashingEncoder, text_key
from benchroute.exceptions import CacheError, FormatVersionError


class CountingEncoder(HashingEncoder):
    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__(dimension=16)
        self.encoded: list[str] = []
        self.fail_after = fail_after

    def encode(self, texts, batch_size=32):
        if self.fail_after is not None and len(self.encoded) >= self.fail_after:
            raise RuntimeError("injected crash")
        self.encoded.extend(texts)
        return super().encode(texts, batch_size)


TEXTS = [f"question number {i} about topic {i % 7}" for i in range(50)]


def test_hits_misses_and_dedup(tmp_path):
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path, enc.identifier)
    texts = TEXTS + TEXTS[:10]  # repeated texts are embedded once
    out = cache.embed(texts, enc, chunk_size=16)
    assert out.shape == (60, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out[50:], out[:10])
    assert len(enc.encoded) == 50 and (cache.hits, cache.misses) == (10, 50)

    again = EmbeddingCache(tmp_path, enc.identifier)  # a second run embeds nothing
    enc2 = CountingEncoder()
    np.testing.assert_array_equal(again.embed(texts, enc2), out)
    assert enc2.encoded == [] and (again.hits, again.misses) == (60, 0)
    assert TEXTS[3] in again and "never seen" not in again


def test_resume_after_crash(tmp_path):
    enc = CountingEncoder(fail_after=32)
    cache = EmbeddingCache(tmp_path, enc.identifier)
    with pytest.raises(RuntimeError, match="injected crash"):
        cache.embed(TEXTS, enc, chunk_size=16)
    assert len(EmbeddingCache(tmp_path, enc.identifier)) == 32  # two whole chunks were kept
    enc2 = CountingEncoder()
    out = EmbeddingCache(tmp_path, enc.identifier).embed(TEXTS, enc2, chunk_size=16)
    assert enc2.encoded == TEXTS[32:]
    np.testing.assert_allclose(out, HashingEncoder(16).encode(TEXTS), rtol=1e-6)


def test_corrupt_shard_detected_and_reembedded(tmp_path, caplog):
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path, enc.identifier)
    cache.embed(TEXTS[:20], enc, chunk_size=10)
    shards = sorted(cache.folder.glob("shard-*.npz"))
    assert len(shards) == 2
    shards[0].write_bytes(shards[0].read_bytes()[:100])  # truncated, as by a disk fault
    reopened = EmbeddingCache(tmp_path, enc.identifier)
    assert reopened.corrupt_shards == [shards[0]]
    assert "corrupt" in caplog.text
    enc2 = CountingEncoder()
    reopened.embed(TEXTS[:20], enc2)
    assert len(enc2.encoded) == 10


def test_a_flipped_bit_in_a_stored_vector_is_caught_by_the_zip_checksum(tmp_path, caplog):
    """A shard is a zip: each member carries a CRC-32, which the cache checks when it opens, so
    a vector changed on disk (one bit, the file's size intact) makes the shard corrupt, its
    texts embedded again, never a wrong vector served."""
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path, enc.identifier)
    stored = cache.embed(TEXTS[:10], enc)
    shard = next(cache.folder.glob("shard-*.npz"))
    raw = bytearray(shard.read_bytes())
    at = bytes(raw).find(stored[3].tobytes()) + 5
    assert at > 5
    raw[at] ^= 0x10
    shard.write_bytes(bytes(raw))
    reopened = EmbeddingCache(tmp_path, enc.identifier)
    assert reopened.corrupt_shards == [shard] and "Bad CRC-32" in caplog.text
    assert TEXTS[3] not in reopened
    enc2 = CountingEncoder()
    np.testing.assert_array_equal(reopened.embed(TEXTS[:10], enc2), stored)
    assert enc2.encoded == TEXTS[:10]


def test_a_folder_in_place_of_the_meta_file_is_a_cache_error(tmp_path):
    """It read as no meta file, and the write that followed failed with a raw
    IsADirectoryError, leaving its temporary file (found by fuzzing)."""
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path, enc.identifier)
    cache.embed(TEXTS[:4], enc)
    meta = cache.folder / "meta.json"
    meta.unlink()
    meta.mkdir()
    with pytest.raises(CacheError, match=r"meta\.json: is not a file; remove it"):
        EmbeddingCache(tmp_path, enc.identifier).embed(TEXTS[:6], enc)
    assert not list(cache.folder.glob(".meta-*.tmp"))


def test_partial_temp_files_are_invisible(tmp_path):
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path, enc.identifier)
    cache.embed(TEXTS[:5], enc)
    (cache.folder / ".shard-deadbeef.npz.tmp").write_bytes(b"half written")
    assert len(EmbeddingCache(tmp_path, enc.identifier)) == 5


def test_import_npz_found_by_text(tmp_path):
    enc = HashingEncoder(16)
    vecs = enc.encode(TEXTS[:10]).astype(np.float16)
    npz = tmp_path / "pre.npz"
    np.savez(npz, sha256=np.array([text_key(t) for t in TEXTS[:10]]), embedding=vecs)
    cache = EmbeddingCache(tmp_path / "c", enc.identifier)
    assert cache.import_npz(npz) == 10
    assert cache.import_npz(npz) == 0
    got, found = cache.get([TEXTS[3], "absent"])
    assert found.tolist() == [True, False]
    want = vecs[3].astype(np.float32)  # float16's norm (up to 1e-4 off) made exact
    np.testing.assert_allclose(got[0], want / np.linalg.norm(want), rtol=1e-6)
    assert abs(float(np.linalg.norm(got[0].astype(np.float64))) - 1) < 1e-6
    shard = next((tmp_path / "c").rglob("shard-*.npz"))  # stored as given: half of float32
    with np.load(shard) as z:
        assert z["embedding"].dtype == np.float16
    fresh = EmbeddingCache(tmp_path / "c", enc.identifier)  # read back from the file: exact too
    np.testing.assert_array_equal(fresh.get([TEXTS[3]])[0][0], got[0])


def test_bad_inputs(tmp_path):
    enc = HashingEncoder(16)
    cache = EmbeddingCache(tmp_path, enc.identifier)
    with pytest.raises(CacheError, match="does not match"):
        cache.embed(["x"], HashingEncoder(8))
    cache.put(["a"], np.ones((1, 16), dtype=np.float32))
    with pytest.raises(CacheError, match="dimension 8, cache holds 16"):
        cache.put(["b"], np.ones((1, 8), dtype=np.float32))
    bad = tmp_path / "bad.npz"
    np.savez(bad, keys=np.array(["x"]))
    with pytest.raises(CacheError, match="not an embeddings file"):
        cache.import_npz(bad)
    meta = cache.folder / "meta.json"
    meta.write_text(json.dumps({"format_version": 7, "encoder": enc.identifier, "dimension": 16}))
    with pytest.raises(FormatVersionError, match="cache format 7"):
        EmbeddingCache(tmp_path, enc.identifier)


def test_a_read_only_cache_serves_what_it_holds_and_names_itself(tmp_path, monkeypatch):
    """A read-only cache (a shared mount) raised a bare OSError naming its lock file for one
    new text, from the API an error of no benchroute class."""
    import errno

    from benchroute.embedding import shards
    from benchroute.exceptions import CacheError

    enc = HashingEncoder(16)
    cache = EmbeddingCache(tmp_path / "c", enc.identifier)
    cache.embed(TEXTS[:3], enc)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(shards, "open", read_only, raising=False)
    again = EmbeddingCache(tmp_path / "c", enc.identifier)
    assert again.embed(TEXTS[:3], enc).shape == (3, 16)  # cached: no write needed
    with pytest.raises(CacheError, match=r"c/hashing-16-12: cannot write to the embedding cache "
                                         r"\(Read-only file system\); the texts it holds are "
                                         r"served"):
        again.embed(TEXTS[:4], enc)


def test_an_import_without_the_model_is_unchecked_with_a_warning(tmp_path, caplog):
    """The check embeds a few of the file's texts: where the model is not installed, the file
    is imported as before (importing is how such a machine gets vectors), and says so."""
    from benchroute.exceptions import ModelNotInstalledError

    enc = HashingEncoder(16)

    class Absent:
        identifier, dimension = enc.identifier, 16

        def encode(self, texts, batch_size=32):
            raise ModelNotInstalledError("the weights are not installed")

    npz = tmp_path / "pre.npz"
    np.savez(npz, sha256=np.array([text_key(t) for t in TEXTS[:5]]), embedding=enc.encode(TEXTS[:5]))
    cache = EmbeddingCache(tmp_path / "c", enc.identifier)
    assert cache.import_npz(npz, TEXTS[:5], Absent()) == 5
    assert "not checked against hashing-16-12" in caplog.text


def test_threads_sharing_one_cache_take_turns(tmp_path):
    """From a fuzzing campaign: the lock's depth was shared by the threads of a process, so a
    second thread "re-entered" without the file lock, and the sweep of stale temporary files
    deleted a shard the first was writing (a raw FileNotFoundError in 40-80% of calls)."""
    import threading

    enc = HashingEncoder(32)
    cache = EmbeddingCache(tmp_path / "c", enc.identifier)
    errors: list[BaseException] = []
    got: dict[str, np.ndarray] = {}

    def work(tid: int) -> None:
        try:
            for it in range(25):
                texts = [f"thread {tid} call {it} text {j}" for j in range(4)]
                vecs = cache.embed(texts, enc, chunk_size=3)
                got.update(zip(texts, vecs))
        except BaseException as exc:  # noqa: BLE001 (collected, asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    texts = sorted(got)
    np.testing.assert_array_equal(np.stack([got[t] for t in texts]), enc.encode(texts))
    again = EmbeddingCache(tmp_path / "c", enc.identifier)
    assert len(again) == 4 * 25 * 4


def test_a_shard_deleted_under_an_open_cache_is_embedded_again(tmp_path):
    """From fuzzing: a cache folder cleared under a running router made every later embed of a
    text it had listed fail ("corrupt embedding shard ...; delete it"), with no way back."""
    import shutil

    enc = HashingEncoder(32)
    texts = ["alpha bravo", "charlie delta"]
    EmbeddingCache(tmp_path / "c", enc.identifier).embed(texts, enc)
    cache = EmbeddingCache(tmp_path / "c", enc.identifier)  # listed, not yet read
    shutil.rmtree(tmp_path / "c")
    np.testing.assert_array_equal(cache.embed(texts, enc), enc.encode(texts))
    assert len(EmbeddingCache(tmp_path / "c", enc.identifier)) == 2


def test_a_shard_that_is_no_regular_file_is_passed_over(tmp_path):
    """A FIFO (or a link to /dev/zero) named like a shard hung the zip reader on open."""
    import os

    enc = HashingEncoder(32)
    EmbeddingCache(tmp_path / "c", enc.identifier).embed(["alpha bravo"], enc)
    folder = next(p for p in (tmp_path / "c").iterdir() if p.is_dir())
    os.mkfifo(folder / "shard-fifo.npz")
    os.symlink("/dev/zero", folder / "shard-zero.npz")
    cache = EmbeddingCache(tmp_path / "c", enc.identifier)
    assert len(cache) == 1 and len(cache.corrupt_shards) == 2
    np.testing.assert_array_equal(cache.embed(["alpha bravo"], enc), enc.encode(["alpha bravo"]))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_child_forked_while_a_thread_writes_can_write_too(tmp_path):
    """From a review: the threads' lock of a cache folder, held by a thread of the parent at
    the fork, stayed held in the child (which has no such thread), and its embeds hung."""
    import os
    import threading
    import time

    enc = HashingEncoder(16)
    cache = EmbeddingCache(tmp_path / "c", enc.identifier)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache._write_lock():
            held.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    pid = os.fork()
    if pid == 0:  # the child: waits for the parent's file lock, then writes
        EmbeddingCache(tmp_path / "c", enc.identifier).embed(["from the child"], enc)
        os._exit(0)
    time.sleep(0.5)
    release.set()  # the parent's file lock goes; the child's own thread lock must be free
    t.join()
    for _ in range(100):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the cache's lock")
    assert status == 0 and "from the child" in EmbeddingCache(tmp_path / "c", enc.identifier)
