"""Reproduce the paper-style table from HELM outputs: the same as `benchroute reproduce`.

    python scripts/reproduce_helm.py PATH/TO/benchmark_output [--name NAME] [--sweep 0 0.1 ...]
    python scripts/reproduce_helm.py --fetch https://storage.googleapis.com/crfm-helm-public/lite/benchmark_output --release v1.0.0

PATH may be a HELM tree, a suite folder, or a .tar.xz of one (as in ../shared/data). Writes
results/<name>/table.md, table.csv, results.csv and PNG plots; prints the table.
"""

from __future__ import annotations

import sys

from benchroute.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    globals_ = [a for a in args if a in ("-q", "--quiet", "-v", "--verbose")]
    raise SystemExit(main([*globals_, "reproduce", *[a for a in args if a not in globals_]]))
