"""Three processes embedding overlapping texts into one cache: nothing lost, no key written twice."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from benchroute.embedding import EmbeddingCache, HashingEncoder, text_key

SCRIPT = """
import sys, time
from benchroute.embedding import EmbeddingCache, HashingEncoder

class Slow(HashingEncoder):
    def encode(self, texts, batch_size=32):
        time.sleep(0.02)  # long enough for the writers to interleave
        return super().encode(texts, batch_size)

start = int(sys.argv[2])
while time.time() < float(sys.argv[3]):  # start together
    time.sleep(0.005)
texts = [f"shared text {i}" for i in range(start, start + 3000)]
enc = Slow(16)
EmbeddingCache(sys.argv[1], enc.identifier).embed(texts, enc, chunk_size=100, progress=False)
"""


def test_three_writers_overlapping_texts(tmp_path):
    go = time.time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), str(s), str(go)])
             for s in (0, 1000, 2000)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    texts = [f"shared text {i}" for i in range(5000)]
    keys = []
    for shard in sorted(tmp_path.glob("*/shard-*.npz")):
        with np.load(shard) as z:
            keys.extend(z["sha256"].tolist())
    assert len(keys) == len(set(keys)) == 5000  # every text once, none twice
    assert set(keys) == {text_key(t) for t in texts}
    enc = HashingEncoder(16)
    cache = EmbeddingCache(tmp_path, enc.identifier)
    got, found = cache.get(texts)
    assert found.all() and not cache.corrupt_shards
    np.testing.assert_allclose(got, enc.encode(texts), rtol=1e-6)
    assert not list(tmp_path.glob("*/.*.tmp"))


def test_writers_encode_at_once_and_lock_only_to_write(tmp_path):
    """Two writers of one cache (Ray actors on a node) encode at the same time: the encoding
    ran under the writers' lock, so they took turns."""
    import threading

    spans: list[tuple[float, float]] = []

    class Slow(HashingEncoder):
        def encode(self, texts, batch_size=32):
            t0 = time.monotonic()
            time.sleep(0.5)
            spans.append((t0, time.monotonic()))
            return super().encode(texts, batch_size)

    def write(prefix: str) -> None:
        enc = Slow(16)
        EmbeddingCache(tmp_path, enc.identifier).embed([f"{prefix} {i}" for i in range(10)], enc,
                                                        progress=False)

    threads = [threading.Thread(target=write, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    (a0, a1), (b0, b1) = spans
    assert max(a0, b0) < min(a1, b1)  # the two encodings overlap
    assert len(EmbeddingCache(tmp_path, HashingEncoder(16).identifier)) == 20
