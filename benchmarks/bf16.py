"""The bf16 backend against plain sentence-transformers fp32, measured in the same run.

    python benchmarks/bf16.py [--n 48] [--repeats 3] [--batch-size 32]

On N RouterDC questions (a seeded draw: a length mix), each repeat times, in turn, a plain
``SentenceTransformer.encode`` (float32), benchroute's ``@bf16`` encoder (torch autocast to
bfloat16) and the ``@onnx`` encoder (ONNX Runtime float32, the default backend), all loaded
before timing. Printed: the CPU's bfloat16 units, texts/s of each (median over repeats), the
time ratio of each to the plain call in the same repeat (median), and the min cosine of each
backend's vectors to the plain ones. Target: bf16 ≥ 3× the plain call at min cosine
≥ 0.9999 on a CPU with AMX.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import SHARED

from benchroute import load
from benchroute.embedding import get_encoder
from benchroute.embedding.bf16 import Bf16Encoder, bf16_units
from benchroute.embedding.install import installed_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    units = bf16_units()
    if not units:
        raise SystemExit("this CPU has no bfloat16 units (amx_bf16, avx512_bf16): nothing to measure")
    from sentence_transformers import SentenceTransformer

    texts_all = load(SHARED / "data" / "routerdc").instances()["text"].drop_duplicates().tolist()
    rng = np.random.default_rng(0)
    texts = [texts_all[i] for i in rng.choice(len(texts_all), size=args.n, replace=False)]
    plain = SentenceTransformer(str(installed_model()), device="cpu", local_files_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"plain fp32": lambda: plain.encode(texts, batch_size=args.batch_size,
                                                     normalize_embeddings=True),
                "bf16": Bf16Encoder(root=Path(tmp)).encode,
                "onnx fp32": get_encoder("all-mpnet-base-v2@onnx").encode}
        for name, fn in runs.items():  # load weights, run the check once, warm up
            (fn(texts[:2]) if name != "plain fp32" else fn())
        seconds: dict[str, list[float]] = {k: [] for k in runs}
        vectors: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                out = fn() if name == "plain fp32" else fn(texts, batch_size=args.batch_size)
                seconds[name].append(time.perf_counter() - t0)
                vectors[name] = np.asarray(out, dtype=np.float32)
    print(f"{args.n} RouterDC texts, batch {args.batch_size}, {args.repeats} repeats; CPU "
          f"bfloat16 units: {'+'.join(units)}")
    print(f"{'backend':<11} {'texts/s':>8} {'speed vs plain':>15} {'min cosine':>11}")
    for name in runs:
        ratio = statistics.median(p / s for p, s in zip(seconds["plain fp32"], seconds[name]))
        cos = float(np.min(np.sum(vectors[name] * vectors["plain fp32"], axis=1)))
        print(f"{name:<11} {args.n / statistics.median(seconds[name]):8.2f} {ratio:14.2f}× "
              f"{cos:11.6f}")


if __name__ == "__main__":
    main()
