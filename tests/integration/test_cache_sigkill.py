"""A process killed with SIGKILL mid-job loses at most the batch in flight; the next run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

from benchroute.embedding import EmbeddingCache, HashingEncoder

SCRIPT = """
import sys, time
from benchroute.embedding import EmbeddingCache, HashingEncoder

class Slow(HashingEncoder):
    def encode(self, texts, batch_size=32):
        time.sleep(0.15)
        return super().encode(texts, batch_size)

texts = [f"text {i}" for i in range(400)]
EmbeddingCache(sys.argv[1], Slow(16).identifier).embed(texts, Slow(16), chunk_size=10, progress=False)
"""


def test_sigkill_then_resume(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)])
    folder = None
    deadline = time.time() + 60
    while time.time() < deadline:
        shards = list(tmp_path.glob("*/shard-*.npz"))
        if len(shards) >= 3:
            folder = shards[0].parent
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert folder is not None, "the child wrote no shard in time"
    enc = HashingEncoder(16)
    cache = EmbeddingCache(tmp_path, enc.identifier)
    done = len(cache)
    assert 30 <= done < 400 and done % 10 == 0 and not cache.corrupt_shards
    texts = [f"text {i}" for i in range(400)]
    out = cache.embed(texts, enc, chunk_size=10)
    assert cache.misses == 400 - done
    np.testing.assert_allclose(out, enc.encode(texts), rtol=1e-6)
