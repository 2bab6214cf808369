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
