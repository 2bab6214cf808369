"""Ray Data entry points: embed a pool's inputs and route a prompt file on a cluster.

Both run the package's own code on the workers (the encoder's ``encode``, ``Router.route``),
one actor per worker slot that loads the encoder or router once, and bring the results back to
the driver: embeddings go into the driver's content-addressed :class:`EmbeddingCache` (so later
runs, and other machines given the folder, reuse them), routing decisions into one parquet file
written atomically. Ray is an optional extra (``pip install 'benchroute[ray]'``) imported on
first use.

``address`` is what :func:`ray.init` takes: None starts a local Ray, or joins the cluster named
by ``RAY_ADDRESS`` when that is set; ``"auto"`` joins the cluster this machine belongs to;
``"ray://host:10001"`` connects a Ray client. A Ray already initialised in this process is used
as it is and left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchroute.exceptions import BenchrouteError

logger = logging.getLogger(__name__)

#: Policies whose choice for one input depends on the other inputs routed with it: a batch
#: would decide differently from the whole file.
SET_POLICIES = ("budget",)
#: How often an actor that died (killed for memory, a crash in native code) is restarted and
#: its batch tried again. Ray Data's default is forever: a batch that kills its worker each
#: time hung the job with no error (found by a review). Ray 2.60 passes these actor options
#: only through ``ray_remote_args``, which it deprecates for removal in 2.64 with no named
#: replacement yet, so the ``ray`` extra stops below 2.64.
RETRIES = 3
_FAULTS = {"max_restarts": RETRIES, "max_task_retries": RETRIES}


def _ray() -> Any:
    from benchroute.extras import require_extra

    require_extra("ray", "ray", "ray.data")  # the Data library is a separate extra of ray
    import ray

    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, progress: bool = False) -> Iterator[Any]:
    """``ray`` connected to ``address`` (see the module docstring); shut down after only when
    this call started it. ``progress`` turns Ray Data's progress bars on."""
    ray = _ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {} if (address or "").startswith("ray://") else \
            {"log_to_driver": progress, "include_dashboard": False}
        if address is None and not os.environ.get("RAY_ADDRESS"):
            # a new local Ray, as the docs say, even where a cluster runs on this machine
            # (Ray would join it, and refuse num_cpus there): its workers inherit this
            # process's environment (BENCHROUTE_HOME, PYTHONPATH), so they find the same
            # models and code
            address = "local"
            kwargs["num_cpus"] = os.cpu_count() or 1
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "a local node" if address in (None, "local") else repr(address)
            raise BenchrouteError(f"cannot start or join Ray at {where}: {exc}") from exc
        started = True
    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order, ctx.enable_progress_bars
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = progress
    try:
        yield ray
    except ray.exceptions.RayError as exc:
        # an actor that could not load the encoder or router, a lost node: the library's error
        raise BenchrouteError(f"the Ray job failed{_worker_error(str(exc))}") from exc
    finally:
        # the caller's own Ray Data settings come back
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = before
        if started:
            ray.shutdown()


#: how Python joins the tracebacks of chained exceptions, as Ray passes them back as text (the
#: exception objects do not cross the process boundary through Ray Data)
_CHAIN = re.compile(r"\n\n(?:The above exception was the direct cause of the following exception|"
                    r"During handling of the above exception, another exception occurred):\n\n")
_WORKER_IP = re.compile(r"\(pid=\d+, ip=([^,)]+)")
#: a traceback's last line: the exception's class at the start of a line, then its message
_RAY_ERROR = re.compile(r"^ray\.exceptions\.\w+: ", re.M)
_LIBRARY_ERROR = re.compile(r"^benchroute(?:\.\w+)+: (.+?)\s*\Z", re.M | re.S)
#: any other exception's line: a dotted class name ending as exception classes do
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Fault)\b", re.M)


def _worker_error(text: str) -> str:
    """What to say after "the Ray job failed": on which node and, when the worker's failure is
    one of the library's errors (a model missing on that node, an unreadable router folder),
    its message alone; otherwise the end of Ray's text, where the worker's exception is.

    The text is a chain of tracebacks, the last exception last; Ray Data wraps the worker's own
    failure in ``ray.exceptions.UserCodeException``, so the failure is the last block that is
    not Ray's."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    ip = _WORKER_IP.search(text)
    where = f" on the node at {ip.group(1)}" if ip else ""
    own = [b for b in _CHAIN.split(text) if not _RAY_ERROR.search(b)]
    found = _LIBRARY_ERROR.search(own[-1]) if own else None
    if found:
        return f"{where}: {found.group(1)}"
    said = _exception_text(own[-1]) if own else None
    if said:  # the worker's own exception, not the frames before it or Ray's wrapper after
        said = said if len(said) <= 1000 else said[:1000] + "..."
        return f"{where}: {said} (an error in the worker, not one of benchroute's: please " \
               "report it; Ray's logs hold its traceback)"
    return f"{where}: ...{text[-2000:]}" if len(text) > 2000 else f"{where}: {text}"


def _exception_text(block: str) -> str | None:
    """The exception at the end of one traceback: what follows its last frame (``  File ...``
    and the indented source and caret lines under it), whatever the exception's class is
    called (``pyarrow.lib.ArrowInvalid``) and however many lines its message has. Without
    frames, the last line that reads as an exception's and what follows it."""
    lines = block.split("\n")
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if frames:
        rest = lines[frames[-1] + 1:]
        while rest and (rest[0].startswith("    ") or not rest[0].strip()):
            rest = rest[1:]
        return "\n".join(rest).strip() or None
    found = list(_EXCEPTION_LINE.finditer(block))
    return block[found[-1].start():].strip() if found else None


def _nodes(batch: Mapping[str, np.ndarray]) -> set[int]:
    """The Ray nodes that ran a batch's rows (each row carries its actor's :func:`_node_code`)."""
    return set(np.unique(batch["node"]).tolist())


def _texts(column: Any) -> list[str]:
    """A batch's texts from the bytes :func:`_items` sent."""
    return [bytes(t).decode("utf-8", "surrogatepass") for t in column]


def _node_code(ray: Any) -> int:
    """This actor's Ray node as an int64 (the first 15 hex digits of its 56-digit id): a row
    carried the id itself, 224 bytes of NumPy text a row on the driver (found by a review)."""
    return int(ray.get_runtime_context().get_node_id()[:15], 16)


def _items(columns: Mapping[str, Any], rows_per_task: int, ray: Any) -> tuple[Any, int]:
    """A Ray dataset of ``columns`` (equal lengths) in blocks of ``rows_per_task`` rows, and
    its number of blocks."""
    n = len(next(iter(columns.values())))
    return _dataset((({k: v[a:a + rows_per_task] for k, v in columns.items()})
                     for a in range(0, n, rows_per_task)), ray)


def _dataset(blocks: Iterable[Mapping[str, Any]], ray: Any) -> tuple[Any, int]:
    """A Ray dataset of ``blocks`` (each a mapping of equal-length columns), and how many
    there are. Each is built as an Arrow table and put in the object store as it comes, so
    that a stream of blocks (a prompt file read line by line) is never held whole on the
    driver. Arrow columns, because
    ``from_items`` held a Python dict per row on the driver (about 0.3 KB each) besides the
    texts. ``text`` travels as UTF-8 bytes that keep a lone surrogate (Arrow's strings refuse
    one, which a local run routes): :func:`_texts` reads it."""
    import pyarrow as pa

    refs = []
    for block in blocks:
        columns = dict(block)
        if "text" in columns:
            columns["text"] = pa.array([t.encode("utf-8", "surrogatepass")
                                        for t in columns["text"]], pa.large_binary())
        refs.append(ray.put(pa.table(columns)))
    return ray.data.from_arrow_refs(refs), len(refs)


def _row_blocks(texts: Iterable[str], rows_per_task: int, what: str
                ) -> Iterator[dict[str, Any]]:
    """``{"row", "text"}`` blocks of ``rows_per_task`` rows from a stream of texts, each text
    checked as :func:`benchroute.inputs.parse_texts` checks a list's."""
    from benchroute.inputs import check_text

    row, block = 0, []
    for text in texts:
        block.append(check_text(text, row, what))
        row += 1
        if len(block) == rows_per_task:
            yield {"row": np.arange(row - len(block), row, dtype=np.int64), "text": block}
            block = []
    if block:
        yield {"row": np.arange(row - len(block), row, dtype=np.int64), "text": block}
    if not row:
        raise BenchrouteError(f"{what} is empty; give at least one input text")


def _actors(ray: Any, actors: int | None, cpus_per_actor: float, blocks: int) -> int:
    """The actor pool's size: given, else one per ``cpus_per_actor`` CPUs of the cluster; never
    more than there are blocks to hand out. An actor larger than every node could never start:
    Ray waits for it forever (found by fuzzing), so that is refused, unless no node reports a
    CPU yet (an autoscaling cluster whose workers are still to come)."""
    largest = max((float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes()
                   if n.get("Alive", True)), default=0.0)
    if largest and cpus_per_actor > largest:
        raise BenchrouteError(f"cpus_per_actor == {cpus_per_actor:g}, but the largest node of the "
                              f"Ray cluster has {largest:g} CPUs: no actor could start")
    if actors is None:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        actors = max(1, int(cpus // cpus_per_actor))
    return min(actors, blocks)


def _check_sizes(**sizes: object) -> None:
    for name, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise BenchrouteError(f"{name} == {value!r}, must be an integer >= 1")


# ---------------------------------------------------------------------- embedding
class EncodeBatch:
    """Ray Data actor: the encoder built once per actor from its name, then batch after batch
    of ``{"key", "text"}`` turned into ``{"key", "embedding", "node"}`` (the Ray node that
    embedded it, for :attr:`EmbedReport.nodes`)."""

    def __init__(self, encoder: str, batch_size: int, threads: int) -> None:
        import ray

        from benchroute.embedding import get_encoder

        self.node = _node_code(ray)
        self.encoder = get_encoder(encoder)
        # ONNX Runtime would start one thread per core of the node in every actor; torch reads
        # OMP_NUM_THREADS, which Ray sets to the actor's CPUs
        if getattr(self.encoder, "threads", 0) is None:
            self.encoder.threads = threads  # type: ignore[attr-defined]
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = _texts(batch["text"])
        vectors = self.encoder.encode(texts, batch_size=self.batch_size)
        return {"key": batch["key"], "embedding": np.ascontiguousarray(vectors, dtype=np.float32),
                "node": np.full(len(texts), self.node, dtype=np.int64)}


@dataclass(frozen=True)
class EmbedReport:
    """What :func:`embed_with_ray` did: ``vectors`` (n, d) in input order, how many texts
    were found in the cache, how many unique texts the cluster embedded and on how many of
    its nodes (0 when everything was cached)."""

    vectors: np.ndarray | None
    cached: int
    embedded: int
    cache_folder: Path
    nodes: int = 0


def embed_with_ray(texts: Sequence[str], encoder: str = "all-mpnet-base-v2",
                   cache_dir: str | os.PathLike[str] | None = None, *,
                   address: str | None = None, actors: int | None = None,
                   cpus_per_actor: float = 1.0, batch_size: int = 32,
                   rows_per_task: int = 256, progress: bool = False,
                   return_vectors: bool = True) -> EmbedReport:
    """Embed ``texts`` on a Ray cluster into the cache of ``encoder``; (n, d) vectors back.

    Only texts whose key is not cached yet travel (each once); they are sorted by length so
    that a task's batches pad little, encoded by an actor pool (``actors``, default one per
    ``cpus_per_actor`` cluster CPUs), and written on the driver, a task's rows at a time, into
    the cache: an interrupted job keeps what came back. The vectors are those of the encoder
    run locally (same code, same weights), up to the float rounding of batch padding.

    ``encoder`` is a name :func:`benchroute.embedding.get_encoder` resolves; each actor
    resolves it again, so on a cluster the model must be installed on every node
    (``benchroute model install``). ``return_vectors=False`` leaves the vectors in the cache
    alone (``vectors`` is then None): a pool's vectors need not fit on the driver.
    """
    from benchroute.data.text import text_key
    from benchroute.embedding import EmbeddingCache, get_encoder
    from benchroute.embedding.base import as_texts

    if not isinstance(encoder, str):
        raise BenchrouteError(f"encoder {encoder!r:.80}: pass a name, each Ray actor builds "
                              "its own encoder from it")
    _check_sizes(actors=actors, batch_size=batch_size, rows_per_task=rows_per_task)
    if not cpus_per_actor > 0:
        raise BenchrouteError(f"cpus_per_actor == {cpus_per_actor!r}, must be > 0")
    threads = max(1, int(cpus_per_actor))
    items = as_texts(texts)
    enc = get_encoder(encoder)  # refuses an unknown name here, before a cluster is touched
    cache = EmbeddingCache.for_encoder(enc, cache_dir)
    keys = [text_key(t) for t in items]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    todo = sorted((i for i in first.values() if items[i] not in cache), key=lambda i: len(items[i]))
    nodes: set[int] = set()
    if todo:
        with ray_session(address, progress) as ray:
            ds, blocks = _items({"key": [keys[i] for i in todo],
                                 "text": [items[i] for i in todo]}, rows_per_task, ray)
            pool = _actors(ray, actors, cpus_per_actor, blocks)
            ds = ds.map_batches(EncodeBatch, fn_constructor_kwargs={"encoder": encoder,
                                                                     "batch_size": batch_size,
                                                                     "threads": threads},
                                batch_size=rows_per_task, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=pool),
                                num_cpus=cpus_per_actor, **_FAULTS)
            for batch in ds.iter_batches(batch_size=rows_per_task, batch_format="numpy"):
                cache.put_keys([str(k) for k in batch["key"]], np.asarray(batch["embedding"]),
                               keep=False)  # in the shard, not held: the pool may be large
                nodes |= _nodes(batch)
    new = {keys[i] for i in todo}
    cached = sum(k not in new for k in keys)
    if not return_vectors:  # the CLI's: every vector is in the cache, none held here
        missing = sum(not cache.has_key(k) for k in set(keys))
        if missing:
            raise BenchrouteError(f"{missing} embeddings missing after the Ray job")
        return EmbedReport(None, cached, len(todo), cache.folder, len(nodes))
    vectors, found = cache.get_by_keys(keys)
    if not found.all():
        raise BenchrouteError(f"{int((~found).sum())} embeddings missing after the Ray job")
    return EmbedReport(vectors, cached, len(todo), cache.folder, len(nodes))


# ---------------------------------------------------------------------- routing
class RouteBatch:
    """Ray Data actor: the router loaded once per actor (its folder, or the bundled pack's
    default), then ``Router.route_table(texts, policy=...)`` per batch, each row tagged with
    the Ray node that routed it (for :attr:`RouteReport.nodes`)."""

    def __init__(self, router: str | None, policy: str, candidates: list[str] | None,
                 costs: dict[str, float] | None, params: dict[str, Any],
                 ood_alpha: float | None = None, keep_duplicates: bool = False) -> None:
        import ray

        self.node = _node_code(ray)
        self.router = _open_router(router)
        self.policy, self.candidates, self.costs, self.params = policy, candidates, costs, params
        self.ood_alpha, self.keep_duplicates = ood_alpha, keep_duplicates

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from benchroute.scale.routed_file import frame_columns

        frame = self.router.route_table(
            _texts(batch["text"]), policy=self.policy, candidates=self.candidates,
            costs=self.costs, ood_alpha=self.ood_alpha, keep_duplicates=self.keep_duplicates,
            **self.params)
        return {"row": batch["row"], **frame_columns(frame),
                "node": np.full(len(frame), self.node, dtype=np.int64)}


@dataclass(frozen=True)
class RouteReport:
    """What :func:`route_with_ray` did: the routed file ``out``, its ``rows`` and the number
    of Ray nodes that routed them."""

    out: Path
    rows: int
    nodes: int


def _open_router(folder: str | None) -> Any:
    from benchroute.default import default_router
    from benchroute.router import Router

    return default_router() if folder is None else Router.load(folder)


def route_with_ray(texts: Sequence[str] | Iterator[str], out: str | os.PathLike[str],
                   router: str | os.PathLike[str] | None = None, *, policy: str = "best",
                   candidates: Sequence[str] | None = None,
                   costs: Mapping[str, float] | None = None,
                   params: Mapping[str, Any] | None = None, address: str | None = None,
                   actors: int | None = None, cpus_per_actor: float = 1.0,
                   rows_per_task: int = 256, progress: bool = False,
                   ood_alpha: float | None = None, keep_duplicates: bool = False) -> RouteReport:
    """Route every text with ``Router.route_table(..., policy=policy)`` on a Ray cluster and write
    ``out`` (parquet: ``row``, the text's position in ``texts``; ``model``; ``p``, its
    predicted P(m, x); ``cost``, its cost per call, NaN where none is known; ``ood_p``,
    ``ood_fallback`` and ``in_pool`` as ``Router.route`` gives them), rows in input order.

    ``texts`` is a list of texts, or an iterator of them that is read as it goes and put in
    Ray's object store a block at a time, never held whole on the driver: a prompt log of any
    length, ``route_with_ray(iter_prompt_file("prompts.jsonl"), ...)``
    (:func:`benchroute.prompt_file.iter_prompt_file`, what ``benchroute route --ray`` does).

    ``router`` is a saved router folder (None: the one fitted on the bundled pack); each actor
    loads it, so on a cluster it must be readable at the same path on every node. The policy
    and its parameters are checked on the driver before the job starts. ``budget`` is refused:
    its choice for one input depends on the others, so batches would decide differently from
    the whole file (fix its price with :func:`benchroute.policies.budget_price` on a sample and
    route with ``lagrangian`` instead). The file appears only when every row is done. Returns a
    :class:`RouteReport`.
    """
    from benchroute._persist import check_output_path
    from benchroute.inputs import parse_texts
    from benchroute.ood import check_alpha
    from benchroute.policies import cost_vector, costs_by_name
    from benchroute.routing import policy_frame
    from benchroute.scale.routed_file import write_routed

    if policy in SET_POLICIES:
        raise BenchrouteError(f"policy {policy!r} decides over the whole set of inputs; routed "
                              "in batches it would decide differently. Fix its price λ on a "
                              "sample (benchroute.policies.budget_price) and route with "
                              "policy 'lagrangian', param lam=λ")
    # a list is checked whole before the job; a stream (a prompt file read as it goes) text by
    # text while it is put in the object store. One string is one text, as route_table takes it
    stream = texts if isinstance(texts, Iterator) else iter(parse_texts(texts, "texts"))
    folder = None if router is None else str(Path(router).resolve())
    local = _open_router(folder)
    cand_idx = local.candidate_indices(candidates)
    params = dict(params or {})
    costs = costs_by_name(costs)  # a Series by its labels; a sequence one per router model
    if costs is not None and not isinstance(costs, Mapping):
        costs = dict(zip(local.models_, cost_vector(local.models_, costs)))
    # the checks of Router.route (policy, parameters, costs), on no rows: fail before the job
    policy_frame(local, np.zeros((0, len(local.models_))), policy, cand_idx, costs,
                 ood_alpha=ood_alpha, **params)
    if ood_alpha is not None:
        check_alpha(ood_alpha)
    _check_sizes(actors=actors, rows_per_task=rows_per_task)
    if not cpus_per_actor > 0:
        raise BenchrouteError(f"cpus_per_actor == {cpus_per_actor!r}, must be > 0")
    out = check_output_path(out, "routed file")  # before the job, not after it
    nodes: set[int] = set()
    rows = 0
    with ray_session(address, progress) as ray:
        ds, blocks = _dataset(_row_blocks(stream, rows_per_task, "texts"), ray)
        pool = _actors(ray, actors, cpus_per_actor, blocks)
        kwargs = {"router": folder, "policy": policy,
                  # the names as checked ("m1" alone was sent as its letters; a review)
                  "candidates": None if candidates is None else
                  [local.models_[i] for i in cand_idx],
                  "costs": None if costs is None else dict(costs), "params": params,
                  "ood_alpha": ood_alpha, "keep_duplicates": keep_duplicates}
        ds = ds.map_batches(RouteBatch, fn_constructor_kwargs=kwargs, batch_size=rows_per_task,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=pool),
                            num_cpus=cpus_per_actor,
                            **_FAULTS)

        def batches() -> Iterator[dict[str, np.ndarray]]:
            nonlocal rows
            for batch in ds.iter_batches(batch_size=rows_per_task, batch_format="numpy"):
                nodes.update(_nodes(batch))
                rows += len(batch["row"])
                yield batch

        write_routed(batches(), out)  # batch by batch, in input order: none held here
    return RouteReport(out, rows, len(nodes))
