"""Tabulate a corpus run: ``BENCHROUTE_CORPUS_LOG=run.jsonl pytest tests/corpus`` then
``python scripts/corpus_counts.py run.jsonl [--only other.jsonl]`` prints the outcome counts by
area as a Markdown table (``--only``: just the cases that also appear in another run)."""

from __future__ import annotations

import argparse
import collections
import json

OUTCOMES = ("crash", "wrong", "error", "skip", "right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("log")
    parser.add_argument("--only", help="count only the cases present in this other log")
    args = parser.parse_args()
    with open(args.log, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    if args.only:
        with open(args.only, encoding="utf-8") as fh:
            keep = {json.loads(line)["case"] for line in fh}
        rows = [r for r in rows if r["case"] in keep]
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in rows:
        counts[r["area"]][r["got"]] += 1
        counts["all"][r["got"]] += 1
    print("| area | " + " | ".join(OUTCOMES) + " | cases |")
    print("|---" * (len(OUTCOMES) + 2) + "|")
    for area in [*sorted(a for a in counts if a != "all"), "all"]:
        c = counts[area]
        print(f"| {area} | " + " | ".join(str(c[o]) for o in OUTCOMES) + f" | {sum(c.values())} |")


if __name__ == "__main__":
    main()
