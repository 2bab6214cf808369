"""Encoder throughput and cached re-run speed.

    python benchmarks/embed.py [--n 256] [--cached 20000]

1. texts/s of benchroute's default encoder (through the cache, cold) on N RouterDC questions,
   against a plain ``SentenceTransformer.encode`` call on the same texts in the same run;
2. a cached re-run over 20k texts: open the cache and fetch every vector (target < 2 s).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _common import SHARED

from benchroute import load_table
from benchroute.embedding import EmbeddingCache, text_key
from benchroute.embedding.install import installed_model
from benchroute.embedding.sentence import SentenceTransformerEncoder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--cached", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        import tarfile

        with tarfile.open(SHARED / "data" / "routerdc" / "routerdc_split2_model7.tar.xz") as tar:
            tar.extractall(tmp, filter="data")
        texts_all = load_table(tmp, preset="routerdc").instances()["text"].drop_duplicates().tolist()
    rng = np.random.default_rng(0)
    sample = [texts_all[i] for i in rng.choice(len(texts_all), args.n, replace=False)]

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(installed_model()), local_files_only=True)
    st.encode(sample[:8], normalize_embeddings=True)  # warm-up: weights, threads
    t0 = time.perf_counter()
    ref = st.encode(sample, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    t_plain = time.perf_counter() - t0

    enc = SentenceTransformerEncoder()
    enc._st = st  # same weights object: measure the wrapper and cache, not a second load
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(tmp, enc.identifier, 768)
        t0 = time.perf_counter()
        ours = cache.embed(sample, enc, progress=False)
        t_ours = time.perf_counter() - t0
    cos = float(np.min(np.sum(ours * ref, axis=1)))
    print(f"encode {args.n} RouterDC questions (CPU):")
    print(f"  plain SentenceTransformer.encode: {t_plain:7.1f} s  {args.n / t_plain:6.2f} texts/s")
    print(f"  benchroute cache.embed (cold):    {t_ours:7.1f} s  {args.n / t_ours:6.2f} texts/s")
    print(f"  ratio benchroute/plain time: {t_ours / t_plain:.3f}   min cosine to plain: {cos:.6f}")

    n = min(args.cached, len(texts_all))
    texts = texts_all[:n]
    vecs = rng.normal(size=(n, 768)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        seed = EmbeddingCache(tmp, enc.identifier, 768)
        for s in range(0, n, 256):  # shards as a real run writes them
            seed.put_keys([text_key(t) for t in texts[s:s + 256]], vecs[s:s + 256])
        t0 = time.perf_counter()
        cache = EmbeddingCache(tmp, enc.identifier, 768)
        out = cache.embed(texts, enc, progress=False)
        t_cached = time.perf_counter() - t0
    assert cache.misses == 0 and np.array_equal(out, vecs)
    print(f"cached re-run of {n} texts ({-(-n // 256)} shards): {t_cached:.2f} s "
          f"(target < 2 s), {n / t_cached:,.0f} texts/s; plain encode would take "
          f"~{n / (args.n / t_plain) / 60:.0f} min")


if __name__ == "__main__":
    main()
