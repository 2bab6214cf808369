"""Encoder backends against sentence-transformers, process start to first answer, cached re-run.

    nice -n -5 python benchmarks/embed.py [--n 256] [--repeats 3] [--cached 20000]

1. Each backend (torch via benchroute, ONNX at caps 384/256/128, static) against a plain
   ``SentenceTransformer.encode`` on the same N RouterDC questions (a random draw: a length mix):
   texts/s, time ratio to the plain call in the same repeat, min and mean cosine to its vectors,
   and the share of this machine's fp32 peak. FLOPs are counted as 170 MFLOP per word piece
   actually encoded (2 × 85 M weights of all-mpnet-base-v2 outside the embeddings, per token;
   attention adds ~4 %); peak = cores × 32 fp32 FLOP/cycle (two 256-bit FMA pipes) × the clock
   /proc/cpuinfo reports. Medians over the repeats.
2. Process start to first answer: ``import benchroute; benchroute.select_model([...])`` in a
   new process, with the default router cached and not, on the default backend and on torch.
3. A cached re-run over 20k texts: open the cache and fetch every vector (target < 2 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import SHARED

from benchroute import load
from benchroute.embedding import EmbeddingCache, text_key
from benchroute.embedding.install import benchroute_home, installed_model

MFLOP_PER_PIECE = 170.0
FLOP_PER_CYCLE = 32


def fp32_peak_gflops() -> tuple[float, str]:
    cores = len(os.sched_getaffinity(0))
    mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
           if line.startswith("cpu MHz")]
    ghz = (statistics.median(mhz) if mhz else 2000.0) / 1000
    return cores * FLOP_PER_CYCLE * ghz, f"{cores} cores × {FLOP_PER_CYCLE} FLOP/cycle × {ghz:.2f} GHz"


def word_pieces(texts: list[str], cap: int) -> int:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(installed_model() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=cap)
    return sum(len(e.ids) for e in tok.encode_batch(texts))


def encoders_section(sample: list[str], repeats: int, with_wrapper: bool) -> None:
    from sentence_transformers import SentenceTransformer

    from benchroute.embedding import get_encoder

    st = SentenceTransformer(str(installed_model()), device="cpu", local_files_only=True)
    st.encode(sample[:8], normalize_embeddings=True)  # warm-up: weights, threads
    backends: dict[str, Callable[[list[str]], np.ndarray]] = {}
    names = ["all-mpnet-base-v2@torch"] if with_wrapper else []
    names += ["all-mpnet-base-v2@onnx", "all-mpnet-base-v2@onnx@max256",
             "all-mpnet-base-v2@onnx@max128", "all-mpnet-base-v2@static"]
    for name in names:
        enc = get_encoder(name)
        if name.endswith("@torch"):
            enc._st = st  # type: ignore[attr-defined]  # same weights: measure the wrapper
        enc.encode(sample[:8])  # load + warm-up outside the timing
        backends[name] = lambda texts, enc=enc: enc.encode(texts, batch_size=32)
    peak, how = fp32_peak_gflops()
    times: dict[str, list[float]] = {"plain": []}
    ratios: dict[str, list[float]] = {}
    vectors: dict[str, np.ndarray] = {}
    for rep in range(repeats):
        t0 = time.perf_counter()
        ref = st.encode(sample, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        times["plain"].append(time.perf_counter() - t0)
        for name, fn in backends.items():
            t0 = time.perf_counter()
            vectors[name] = fn(sample)
            dt = time.perf_counter() - t0
            times.setdefault(name, []).append(dt)
            ratios.setdefault(name, []).append(times["plain"][-1] / dt)
        print(f"  repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()),
              flush=True)
    n = len(sample)
    print(f"\n{n} RouterDC questions, batch 32, medians of {repeats} repeats; "
          f"fp32 peak {peak:.0f} GFLOP/s ({how})")
    print("| backend | time (s) | texts/s | speed-up vs plain (same repeat) | min cos | mean cos "
          "| word pieces | share of fp32 peak |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [("plain SentenceTransformer.encode", "plain", 384, ref)]
    rows += [(name, name, int(name.split("@max")[1]) if "@max" in name else 384, vectors[name])
             for name in names]
    for label, key, cap, vec in rows:
        t = statistics.median(times[key])
        pieces = word_pieces(sample, cap)
        share = pieces * MFLOP_PER_PIECE / 1e3 / t / peak
        ratio = "1.00" if key == "plain" else f"{statistics.median(ratios[key]):.2f}"
        if key.endswith("@static"):
            cos, share_s = "n/a (other space)", "n/a"
            mean = ""
        else:
            c = np.sum(vec * ref, axis=1)
            cos, mean, share_s = f"{c.min():.6f}", f"{c.mean():.6f}", f"{share:.0%}"
        print(f"| {label} | {t:.1f} | {n / t:.1f} | {ratio} | {cos} | {mean} | {pieces:,} "
              f"| {share_s} |")


FIRST = """
import sys, time, uuid
t0 = float(sys.argv[1])
import logging
logging.basicConfig(level=logging.INFO, format="%(relativeCreated)6.0f ms %(name)s: %(message)s")
logging.getLogger("faiss").setLevel(logging.WARNING)
import benchroute
if sys.argv[2] == "torch":
    import benchroute.embedding.backends as B
    B.default_backend = lambda device=None: "torch"
from benchroute.default import default_router
import numpy as np
from benchroute.exceptions import DataError
try:
    default_router()
except DataError as exc:  # a pack keyed by raw text: embed the inputs it misses, once
    print("pack:", exc, file=sys.stderr)
    import benchroute.router as R
    from benchroute.embedding import embed_texts, text_key
    from benchroute.packs import pack_files
    def pack_embeddings(data, pack):
        with np.load(pack_files(pack)["embeddings"]) as z:
            row = {str(k): i for i, k in enumerate(z["sha256"].tolist())}
            emb = z["embedding"].astype(np.float32)
        texts = data.instances()["text"].tolist()
        miss = [t for t in texts if text_key(t) not in row]
        got = dict(zip(miss, embed_texts(miss))) if miss else {}
        return np.stack([emb[row[text_key(t)]] if t not in got else got[t] for t in texts])
    R.pack_embeddings = pack_embeddings
u = uuid.uuid4().hex[:8]
sel = benchroute.select_model([u + " What is the derivative of x^2?", "Integrate sin(x) dx.",
                               "Solve 2x + 3 = 7 for x."])
print(f"{time.time() - t0:.2f}", sel.model, "torch" in sys.modules)
"""


def first_answer_section(repeats: int) -> None:
    models = installed_model().parent
    print("\nprocess start to first answer (`import benchroute; benchroute.select_model([3 new "
          "texts])`), medians:")
    print("| backend | default router | seconds | torch imported |")
    print("|---|---|---|---|")
    for backend in ("default", "torch"):
        for cached in (False, True):
            runs = []
            with tempfile.TemporaryDirectory() as home:
                (Path(home) / "models").symlink_to(models)
                env = {**os.environ, "BENCHROUTE_HOME": home}
                if cached:  # build the router once, untimed
                    subprocess.run([sys.executable, "-c", FIRST, str(time.time()), backend],
                                   env=env, capture_output=True, text=True, check=True)
                for _ in range(repeats):
                    if not cached:
                        for r in (Path(home) / "routers").glob("*"):
                            import shutil

                            shutil.rmtree(r)
                    out = subprocess.run([sys.executable, "-c", FIRST, str(time.time()), backend],
                                         env=env, capture_output=True, text=True, check=True)
                    sec, _, torch = out.stdout.split()
                    runs.append(float(sec))
            print(f"| {backend} | {'cached' if cached else 'built'} | "
                  f"{statistics.median(runs):.1f} ({', '.join(f'{r:.1f}' for r in runs)}) | {torch} |")


def cached_section(texts_all: list[str], n: int) -> None:
    rng = np.random.default_rng(0)
    texts = texts_all[:n]
    vecs = rng.normal(size=(len(texts), 768)).astype(np.float32)
    ident = "sentence-transformers/all-mpnet-base-v2"
    with tempfile.TemporaryDirectory() as tmp:
        seed = EmbeddingCache(tmp, ident, 768)
        for s in range(0, len(texts), 256):  # shards as a real run writes them
            seed.put_keys([text_key(t) for t in texts[s:s + 256]], vecs[s:s + 256])
        t0 = time.perf_counter()
        cache = EmbeddingCache(tmp, ident, 768)
        out, found = cache.get_by_keys([text_key(t) for t in texts])
        t_cached = time.perf_counter() - t0
    assert found.all() and np.array_equal(out, vecs)
    print(f"\ncached re-run of {len(texts)} texts ({-(-len(texts) // 256)} shards): open + fetch "
          f"{t_cached:.2f} s (target < 2 s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cached", type=int, default=20_000)
    ap.add_argument("--with-wrapper", action="store_true",
                    help="also time benchroute's torch encoder (same weights object as plain)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["encoders", "first", "cached"])
    args = ap.parse_args()
    texts_all = load(SHARED / "data" / "routerdc").instances()["text"].drop_duplicates().tolist()
    rng = np.random.default_rng(0)
    sample = [texts_all[i] for i in rng.choice(len(texts_all), args.n, replace=False)]
    print(f"BENCHROUTE_HOME {benchroute_home()}; python {sys.version.split()[0]}")
    if "encoders" not in args.skip:
        encoders_section(sample, args.repeats, args.with_wrapper)
    if "first" not in args.skip:
        first_answer_section(args.repeats)
    if "cached" not in args.skip:
        cached_section(texts_all, args.cached)


if __name__ == "__main__":
    main()
