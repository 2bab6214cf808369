"""Fit a router on your own benchmark results, save it, and route with it.

    python examples/fit_your_own.py PATH_TO_RESULTS OUT_DIR

PATH_TO_RESULTS is anything `benchroute inspect` reads: a HELM benchmark_output tree, a
RouterDC / RouteLLM / AlpacaEval folder, a MixInstruct file or a result table.
"""

from __future__ import annotations

import sys

import benchroute


def main(path: str, out: str) -> None:
    data = benchroute.load(path)
    print(data)
    router = benchroute.Router().fit(data)  # embeds every input once, through the cache
    router.save(out)
    print(f"best model on average: {router.bma_}; saved to {out}")
    texts = data.instances()["text"].head(5).tolist()
    print(benchroute.Router.load(out).route(texts))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
