"""The gateway: an OpenAI-compatible HTTP service in front of a fitted router.

``build_gateway`` checks everything a server needs before it binds (upstreams for every model
the policy can choose, the policy's parameters, the calibration), and ``create_app`` wires the
endpoints: ``POST /v1/chat/completions`` (routed and forwarded, streaming passed through),
``POST /v1/route`` (the decision only), ``GET /v1/models``, ``GET /healthz``, ``GET /metrics``,
``GET /status.json`` and the status page at ``GET /``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from benchroute._persist import finite_or_null, parse_json
from benchroute.data.text import is_blank
from benchroute.exceptions import BenchrouteError
from benchroute.routing import default_pair, known_costs
from benchroute.serve.calibrate import (
    Calibration,
    cost_quality_curve,
    operating_point,
    pool_sample,
)
from benchroute.serve.decide import Decider, Decision, MicroBatcher, ServerPolicy
from benchroute.serve.entry import (
    PREFIX,
    Entry,
    EntryError,
    examples,
    parse_entry,
    reads_as_entry,
)
from benchroute.serve.forward import Answer, Forwarder, error_body
from benchroute.serve.metrics import GatewayMetrics
from benchroute.serve.upstreams import Upstream, check_coverage, served, upstream_costs

logger = logging.getLogger(__name__)

ROUTE_TEXT_MODES = ("last_user", "conversation")


@dataclass
class GatewayConfig:
    """How the gateway reads requests and calls upstreams (the CLI's flags)."""

    route_text: str = "last_user"
    max_body_bytes: int = 1 << 20
    max_messages: int = 256
    max_text_chars: int = 100_000
    retries: int = 1
    upstream_timeout: float = 60.0
    api_key: str | None = field(default=None, repr=False)
    decision_log: Path | None = None
    log_prompts: bool = False
    max_batch: int = 64
    #: texts per encoder call within a batch: a micro-batch of prompts of mixed lengths pads
    #: each call to its longest text, and on 2 cores small length-sorted calls embedded ~1.8x
    #: more prompts per second than one call of 32 (docs/performance.md)
    encode_batch: int = 4
    #: route inputs whose OOD p-value is below this to the best model on average (None: off)
    ood_alpha: float | None = None
    #: entry names kept as metric labels; decisions of later ones are counted under "other"
    max_entries: int = 100

    def check(self) -> None:
        if self.route_text not in ROUTE_TEXT_MODES:
            raise BenchrouteError(f"route_text {self.route_text!r}: choose one of "
                                  f"{list(ROUTE_TEXT_MODES)}")
        for name in ("max_body_bytes", "max_messages", "max_text_chars", "max_batch",
                     "encode_batch", "max_entries"):
            if getattr(self, name) < 1:
                raise BenchrouteError(f"{name} == {getattr(self, name)}, must be >= 1")
        if self.retries < 0:
            raise BenchrouteError(f"retries == {self.retries}, must be >= 0")
        if not self.upstream_timeout > 0:
            raise BenchrouteError(f"upstream_timeout == {self.upstream_timeout}, must be > 0")


class GatewayError(Exception):
    """An HTTP error answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


class DecisionLog:
    """Append-only JSONL of decisions; one write per line, so lines never interleave."""

    def __init__(self, path: str | os.PathLike[str], prompts: bool) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.prompts = prompts
        self.path = path
        self.failed = 0
        self._lock = threading.Lock()
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the server's life)

    def write(self, record: dict[str, Any], text: str | None) -> None:
        """One line; a write that fails (a full disk) is logged, counted in ``failed`` (its
        line may still be written from the file's buffer later), and never fails the call it
        records: an answered call became a 500 (fuzzing)."""
        if self.prompts and text is not None:
            record = {**record, "text": text}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            try:
                self._f.write(line)
                self._f.flush()
            except OSError as exc:  # the line may still reach the file once space returns
                self.failed += 1
                if self.failed == 1 or self.failed % 1000 == 0:
                    logger.error("decision log %s: %d writes failed (%s)", self.path,
                                 self.failed, exc)

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):  # its last lines were logged as lost
            self._f.close()


@dataclass
class Gateway:
    """Everything one server holds."""

    router: Any
    upstreams: dict[str, Upstream]
    config: GatewayConfig
    decider: Decider
    metrics: GatewayMetrics
    names: dict[str, str]
    status: dict[str, Any]
    log: DecisionLog | None = None
    batcher: MicroBatcher | None = None
    forwarder: Forwarder | None = None
    #: set when a shutdown begins (:meth:`begin_drain`); ``drain_until`` its deadline
    #: (``time.monotonic()``), by which open streams end with an error event
    closing: asyncio.Event | None = None
    drain_until: float | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def begin_drain(self, seconds: float) -> None:
        """A shutdown began (SIGTERM): streams still open ``seconds`` from now, less a second,
        end with an error event. Why: the server cuts them at the drain's end, and a client
        got a truncated body and the server log a traceback per stream. Callable from a
        signal handler."""
        self.drain_until = time.monotonic() + max(seconds - 1.0, 0.0)
        if self._loop is not None and self.closing is not None:
            self._loop.call_soon_threadsafe(self.closing.set)


def build_gateway(router: Any, upstreams: Mapping[str, Upstream],
                  config: GatewayConfig | None = None, policy: str | None = None,
                  params: Mapping[str, Any] | None = None, candidates: Sequence[str] | None = None,
                  calibration: Calibration | None = None, upstreams_path: object = "upstreams",
                  encoder: Any = None) -> Gateway:
    """Check and assemble a gateway; every start-up error is a :class:`BenchrouteError`.

    The default policy is ``policy`` (with ``params``), else the calibration's, else ``best``.
    ``candidates`` (default: every router model) are the models routing may choose; each needs
    an upstream. ``params`` may name ``strong`` and ``weak`` for the threshold policies.
    """
    config = config or GatewayConfig()
    config.check()
    params = dict(params or {})
    cand = list(candidates) if candidates is not None else list(router.models_)
    router.candidate_indices(cand)  # unknown names fail here, with the known ones listed
    upstreams = served(upstreams, router.models_, upstreams_path)
    costs = known_costs(upstream_costs(upstreams) or getattr(router, "costs_", None), cand)
    lacking = [m for m in cand if m not in upstreams or upstreams[m].cost is None]
    if costs is None and len(lacking) < len(cand):  # some given: say which are not
        logger.warning("%s: no cost for candidate(s) %s; the cost-led policies are refused "
                       "(add 'cost' to their entries)", upstreams_path, lacking[:10])
    if calibration is not None and policy is None:  # its parameter serves the default entry
        calibration.check_serving(cand, costs)
    loose = sorted(k for k in params if k not in ("strong", "weak"))  # the pair is any policy's
    if loose and policy is None:
        raise BenchrouteError(f"--param {loose} without --policy: name the policy they belong "
                              "to (--policy threshold --param t=0.2, say)")
    pair = default_pair(router, cand, costs)
    given = "--param" if "strong" in params or "weak" in params else \
        "the calibration file" if calibration is not None else "the default pair"
    strong = str(params.pop("strong", calibration.params.get("strong", pair[0])
                            if calibration else pair[0]))
    weak = str(params.pop("weak", calibration.params.get("weak", pair[1])
                          if calibration else pair[1]))
    if strong not in cand or weak not in cand:  # every threshold entry would fail on a request
        raise BenchrouteError(f"strong {strong!r} and weak {weak!r} (from {given}) must be among "
                              f"the candidates {cand}" + ("; calibrate again with the same "
                                                          "--candidates as serve" if
                                                          given == "the calibration file" else ""))
    if policy is None and calibration is not None:
        default = ServerPolicy(calibration.policy,
                               {k: v for k, v in calibration.params.items()
                                if k not in ("strong", "weak")}, "calibration")
    else:
        default = ServerPolicy(policy or "best", params, "--policy" if policy else "default")
    # the pair is among the candidates, and every entry point may choose any candidate
    check_coverage(upstreams, sorted(cand), upstreams_path,
                   "are candidates (every entry point may choose them)")
    if default.policy == "threshold" and strong == weak:
        raise BenchrouteError(f"threshold routing needs two different models; strong and weak "
                              f"are both {strong!r} (name them with --param strong=M weak=M)")
    pool = pool_sample(router)
    sample = calibration.sample if calibration is not None else pool
    decider = Decider(router, cand, costs, default, sample, strong, weak, encoder, calibration,
                      config.encode_batch, config.ood_alpha, lacking=lacking)
    decider.decide(["warm-up"], [Entry(PREFIX)])  # load the encoder now, not on a request
    names = {m: m for m in upstreams if m in router.models_}
    for m in list(names):
        uid = upstreams[m].model
        other = names.get(uid, m)
        if other != m:  # the name of another served model: a request for it is ambiguous
            raise BenchrouteError(
                f"the upstreams file: the upstream id {uid!r} of {m!r} (field 'model') also "
                f"names {other!r}, a served router model or another upstream's id; a request "
                f"for {uid!r} could mean either (it went to {m!r}, silently); give each "
                "upstream an id that names no other served model")
        names[uid] = m
    clash = sorted(n for n in names if reads_as_entry(n))
    if clash:
        raise BenchrouteError(f"served model name(s) {clash} read as entry points "
                              f"('{PREFIX}', '{PREFIX}-<policy>[-<value>]'); rename them (the "
                              "router's models, or the upstream ids in the upstreams file)")
    metrics = GatewayMetrics(list(router.models_), strong, costs, max_entries=config.max_entries,
                             reserved=[PREFIX, *names])
    curve = cost_quality_curve(router, pool, decider.cand, costs, strong)
    d_policy, d_params = decider.resolve(Entry(PREFIX))
    point = operating_point(router, pool, curve, decider.cand, d_policy, d_params, costs)
    for internal in ("keep", "C", "cand"):
        curve.pop(internal)
    if calibration is not None and "strong_share" in calibration.target:
        metrics.set_target(PREFIX, strong, float(calibration.target["strong_share"]))
    elif default.policy == "share" and "share" in default.params:  # --policy share
        metrics.set_target(PREFIX, strong, float(default.params["share"]))
    status = {
        "router": {"models": list(router.models_), "tasks": len(router.tasks_),
                   "inputs": int(len(router.Y_)), "encoder": router.encoder_id_,
                   "best_on_average": decider.bma},
        "candidates": cand, "strong": strong, "weak": weak,
        "default": {"entry": PREFIX, "policy": d_policy, "params": d_params,
                    "source": default.source},
        "calibration": None if calibration is None else {
            "target": calibration.target, "realised": calibration.realised,
            "sample": calibration.sample.source},
        "sample": sample.source,
        "upstreams": {m: u.model for m, u in upstreams.items()},
        "costs": costs, "route_text": config.route_text, "entries": examples(),
        "curve": {**curve, "operating_point": point},
    }
    log = DecisionLog(config.decision_log, config.log_prompts) if config.decision_log else None
    return Gateway(router, dict(upstreams), config, decider, metrics, names, status, log)


# ---------------------------------------------------------------------- request parsing
async def read_json(request: Request, cap: int) -> dict[str, Any]:
    """The body as a JSON object, refusing more than ``cap`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise GatewayError(413, f"request body of {declared} bytes exceeds the limit of {cap}",
                           code="body_too_large")
    buf = bytearray()
    try:
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > cap:
                raise GatewayError(413, f"request body exceeds the limit of {cap} bytes",
                                   code="body_too_large")
    except ClientDisconnect:  # counted as the client's leaving, not as a server error (500)
        raise GatewayError(CLIENT_GONE, "the client left before its request body was read",
                           code="client_gone") from None
    try:
        # strict: NaN and Infinity are no JSON, and could not be forwarded
        obj = parse_json(bytes(buf), "request body", strict=True)
        # lone surrogates parse but are no Unicode text: they could not be forwarded, logged
        # or embedded. UTF-8 bytes cannot hold one, only a \uD800–\uDFFF escape can, so the
        # body is encoded again only when it has such an escape (not on every request)
        if _SURROGATE_ESCAPE.search(buf):
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        # nesting the parser takes but the forwarding's json.dumps, deeper in the stack, does
        # not (about 960 levels): walked only when the body has enough brackets to be that deep
        if buf.count(b"[") + buf.count(b"{") > MAX_DEPTH and _deeper_than(obj, MAX_DEPTH):
            raise GatewayError(400, f"request body: JSON nested deeper than {MAX_DEPTH} levels")
    except BenchrouteError as exc:
        raise GatewayError(400, str(exc)) from None
    except UnicodeEncodeError as exc:
        raise GatewayError(400, f"request body: invalid JSON: a lone surrogate "
                                f"({exc.reason})") from None
    if not isinstance(obj, dict):
        raise GatewayError(400, "request body must be a JSON object")
    return obj


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
#: nesting levels a request body may have (OpenAI bodies, tool schemas included, use a few)
MAX_DEPTH = 100


def _deeper_than(obj: object, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node \
            if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _content_text(content: object, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                raise GatewayError(400, f"messages[{i}].content parts must be objects",
                                   param=f"messages[{i}].content")
            # a part without a type, or a text part without a string, was passed over and the
            # request routed as if it had no user text (fuzzing); other types (images, audio)
            # carry nothing to route on
            if not isinstance(part.get("type"), str):
                raise GatewayError(400, f"messages[{i}].content[{j}].type must be a string "
                                   "('text', 'image_url', ...)", param=f"messages[{i}].content")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise GatewayError(400, f"messages[{i}].content[{j}].text must be a string",
                                       param=f"messages[{i}].content")
                parts.append(part["text"])
        return "\n".join(parts)
    raise GatewayError(400, f"messages[{i}].content must be a string or a list of parts",
                       param=f"messages[{i}].content")


def routed_text(messages: object, config: GatewayConfig) -> str | None:
    """The text a decision is made on: the last user message (or the whole conversation);
    None when there is none to route on."""
    if not isinstance(messages, list) or not messages:
        raise GatewayError(400, "messages must be a non-empty list", param="messages")
    if len(messages) > config.max_messages:
        raise GatewayError(400, f"{len(messages)} messages exceed the limit of "
                           f"{config.max_messages}", param="messages", code="too_many_messages")
    texts: list[tuple[str, str]] = []
    total = 0
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise GatewayError(400, f"messages[{i}] must be an object with a string 'role'",
                               param=f"messages[{i}]")
        text = _content_text(msg.get("content"), i)
        total += len(text)
        if total > config.max_text_chars:
            raise GatewayError(400, f"message text exceeds the limit of {config.max_text_chars} "
                               "characters", param="messages", code="text_too_long")
        texts.append((msg["role"], text))
    if config.route_text == "conversation":
        joined = "\n".join(t for _, t in texts if not is_blank(t))
        return joined or None
    users = [t for role, t in texts if role == "user" and not is_blank(t)]
    return users[-1] if users else None


def decision_headers(d: Decision, answered: str | None = None, reason: str | None = None
                     ) -> dict[str, str]:
    """The x-benchroute-* headers (latin-1 safe)."""
    model = answered or d.model
    why = reason or d.fallback
    p = d.p.get(model)
    hdr = {"x-benchroute-model": model, "x-benchroute-entry": d.entry,
           "x-benchroute-policy": d.policy,
           "x-benchroute-p": "" if p is None else f"{p:.6f}",
           "x-benchroute-fallback": why or "none",
           "x-benchroute-decision-ms": f"{d.decision_ms:.3f}"}
    ood = d.to_json()["ood_p"]
    if ood is not None:
        hdr["x-benchroute-ood-p"] = f"{ood:.6f}"
    # no HTTP server sends a control character in a header (the connection was dropped)
    return {k: _HEADER_UNSAFE.sub("?", v.encode("ascii", "replace").decode("ascii"))[:500]
            for k, v in hdr.items()}


_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


#: the status logged and counted for a call whose client left before its answer (nginx's)
CLIENT_GONE = 499
#: seconds between two looks at whether the client of a call in flight is still there
_GONE_POLL = 0.25


async def _unless_gone(request: Request, call: Awaitable[Answer]) -> Answer | None:
    """``call``'s answer, or None when the client disconnects first, the call then cancelled
    (its connection freed). Why: a client that gave up (its own timeout) still had its whole
    upstream call made, a retry too, logged and charged as answered (found by a review)."""
    task = asyncio.ensure_future(call)
    gone = False
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_GONE_POLL)
            if done:
                return task.result()
            if await request.is_disconnected():
                gone = True
                return None
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif gone and not task.cancelled() and task.exception() is None:
            late = task.result()  # answered just as the client left: an open stream's slot
            if late.close is not None:
                await late.close()


async def _until_drained(gw: Gateway, stream: AsyncIterator[bytes], cut: list[bool]
                         ) -> AsyncIterator[bytes]:
    """``stream``, ended by an error event when a shutdown's drain runs out before it does
    (``cut`` then gets an entry): the server's own cut at that moment left the client a
    truncated chunked body. Until a shutdown begins each chunk is awaited as it is (a task per
    chunk cost 21 µs, 10 ms of CPU for a stream of 500 tokens); after, each wait is bounded
    by the drain's deadline. A chunk already awaited when the shutdown begins is waited for
    as before: an upstream silent past the deadline is still cut by the server."""
    it = stream.__aiter__()
    nxt: asyncio.Future[bytes] | None = None
    try:
        while True:
            if gw.closing is None or not gw.closing.is_set():
                try:
                    chunk = await it.__anext__()
                except StopAsyncIteration:
                    return
                yield chunk
                continue
            nxt = asyncio.ensure_future(it.__anext__())
            left = max((gw.drain_until or time.monotonic()) - time.monotonic(), 0.0)
            await asyncio.wait({nxt}, timeout=left)
            if not nxt.done():
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
                cut.append(True)
                err = error_body("the gateway is shutting down; the stream was cut",
                                 "server_error", 503)
                yield f"data: {json.dumps(err)}\n\n".encode()
                return
            try:
                chunk = nxt.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        if nxt is not None and not nxt.done():
            nxt.cancel()
        with contextlib.suppress(BaseException):  # the relay's own cleanup, now, in any case
            await it.aclose()  # type: ignore[attr-defined]


class _ClosingStream(StreamingResponse):
    """A relayed stream that frees its upstream connection however the response ends: sent
    whole, cut by the client, or cancelled before its first chunk (when the relaying generator
    never starts, its own cleanup never runs)."""

    def __init__(self, *args: Any, close: Callable[[], Awaitable[None]] | None = None,
                 ended: Callable[[], None] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._close, self._ended = close, ended

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                if self._close is not None:
                    await self._close()
            finally:
                if self._ended is not None:
                    self._ended()


# ---------------------------------------------------------------------- the app
def create_app(gw: Gateway) -> FastAPI:
    """The FastAPI application of a gateway built by :func:`build_gateway`."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw.closing, gw._loop = asyncio.Event(), asyncio.get_running_loop()
        gw.batcher = MicroBatcher(gw.decider, gw.config.max_batch, gw.metrics.batch_size.observe)
        gw.forwarder = Forwarder(gw.upstreams, gw.config.upstream_timeout,
                                 retries=gw.config.retries, on_call=gw.metrics.upstream,
                                 on_break=gw.metrics.upstream_error)
        await gw.batcher.start()
        try:
            yield
        finally:
            await gw.batcher.stop()
            await gw.forwarder.close()
            if gw.log is not None:
                gw.log.close()

    app = FastAPI(title="benchroute gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.type, exc.code, exc.param),
                            status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"),
                            status_code=exc.status_code)

    app.add_middleware(_CountRequests, metrics=gw.metrics)

    def authorise(request: Request) -> None:
        if gw.config.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), gw.config.api_key.encode()):
            raise GatewayError(401, "invalid or missing API key (Authorization: Bearer ...)",
                               "authentication_error", "invalid_api_key")

    def known_entry(name: object) -> Entry:
        """The entry point ``name`` names, or the OpenAI-style 404/400 for it."""
        try:
            entry = parse_entry(name, gw.names)
            if entry.pinned is None:
                gw.decider.resolve(entry)
        except EntryError as exc:
            raise GatewayError(exc.status, str(exc), param="model",
                               code="model_not_found" if exc.status == 404 else None) from None
        except BenchrouteError as exc:
            raise GatewayError(400, str(exc), param="model") from None
        return entry

    def entry_of(body: Mapping[str, Any]) -> Entry:
        entry = known_entry(body.get("model"))
        if entry.policy == "share" and entry.value is not None:
            gw.metrics.set_target(entry.label, gw.decider.strong, entry.value)
        return entry

    async def decide(body: Mapping[str, Any], text: str | None) -> Decision:
        entry = entry_of(body)
        assert gw.batcher is not None
        d = await gw.batcher.decide(text, entry)
        gw.metrics.decision(d)
        return d

    def log(endpoint: str, d: Decision, text: str | None, *, at: float | None = None,
            **extra: Any) -> None:
        """One decision's line; ``at``: when it was decided (a stream's line is written when
        the stream has ended)."""
        if gw.log is not None:
            gw.log.write({"time": time.time() if at is None else at, "endpoint": endpoint,
                          **d.to_json(), **extra}, text)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        authorise(request)
        body = await read_json(request, gw.config.max_body_bytes)
        text = routed_text(body.get("messages"), gw.config)
        # before the decision, which the metrics count: "true" or 1 went on to an upstream
        # that may stream, answered as no stream
        if not isinstance(body.get("stream", False), (bool, type(None))):
            raise GatewayError(400, "stream must be true, false or null", param="stream")
        d = await decide(body, text)
        assert gw.forwarder is not None
        stream = body.get("stream") is True
        got = await _unless_gone(request, gw.forwarder.chat(body, d.order or (d.model,), stream))
        if got is None:  # the client left before the answer: its call (and retry) cancelled
            log("chat", d, text, answered=None, status=CLIENT_GONE, stream=stream,
                upstream_model=None, upstream_fallback="client gone before the answer",
                answered_cost=None, stream_end=None)
            return Response(status_code=CLIENT_GONE)
        ans: Answer = got
        reason = None
        if ans.failures and ans.status < 500:
            reason = f"retried on {ans.model}: " + "; ".join(
                f"{f.model} {f.kind}" for f in ans.failures)
            gw.metrics.fallback("upstream retry")
        elif ans.failures:
            reason = "every upstream try failed: " + "; ".join(
                f"{f.model} {f.kind}" for f in ans.failures)
            gw.metrics.fallback("upstream failed")
        try:
            return respond(d, text, ans, stream, reason)
        except BaseException:  # no response built: nothing else frees an open stream's slot
            if ans.close is not None:
                await ans.close()
            raise

    def respond(d: Decision, text: str | None, ans: Answer, stream: bool, reason: str | None
                ) -> Response:
        """The client's response to a forwarded call, logged (a stream when it has ended, with
        how it ended)."""
        # a model answered unless every try failed; a cost only for an answer (a 4xx is the
        # call refused: the metrics never charged it, the log did)
        failed = bool(ans.failures) and ans.status >= 500
        answered = None if failed else gw.upstreams.get(ans.model)
        record: dict[str, Any] = {
            "answered": None if failed else ans.model, "status": ans.status, "stream": stream,
            "upstream_model": answered.model if answered is not None else None,
            "upstream_fallback": reason,  # the decision's own is 'fallback_reason'
            "answered_cost": answered.cost if answered is not None and ans.status < 400
            else None}
        if ans.status < 400:
            gw.metrics.answered(ans.model)
        headers = {**ans.headers,
                   **decision_headers(d, d.model if failed else ans.model or d.model, reason)}
        if ans.stream is None:
            log("chat", d, text, **record, stream_end=None)
            return Response(ans.content, status_code=ans.status, media_type=ans.media_type,
                            headers=headers)
        outcome, at = ans.outcome, time.time()
        cut: list[bool] = []

        def ended() -> None:
            end = "cut at shutdown" if cut else outcome() if outcome is not None else None
            if end is not None:
                gw.metrics.stream_end(end)
            log("chat", d, text, at=at, **record, stream_end=end)

        return _ClosingStream(_until_drained(gw, ans.stream, cut), status_code=ans.status,
                              media_type=ans.media_type, headers=headers, close=ans.close,
                              ended=ended)

    @app.post("/v1/route")
    async def route(request: Request) -> JSONResponse:
        authorise(request)
        body = await read_json(request, gw.config.max_body_bytes)
        if "input" in body:
            if not isinstance(body["input"], str):
                raise GatewayError(400, "input must be a string", param="input")
            if len(body["input"]) > gw.config.max_text_chars:
                raise GatewayError(400, f"input exceeds the limit of {gw.config.max_text_chars} "
                                   "characters", param="input", code="text_too_long")
            text = None if is_blank(body["input"]) else body["input"]
        elif "messages" in body:
            text = routed_text(body["messages"], gw.config)
        else:
            raise GatewayError(400, "give 'messages' (a chat) or 'input' (a text)")
        d = await decide(body, text)
        log("route", d, text)
        out = {**d.to_json(),
               "upstream_model": gw.upstreams[d.model].model if d.model in gw.upstreams else None}
        return JSONResponse(out, headers=decision_headers(d))

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        authorise(request)
        data = [{"id": e, "object": "model", "created": 0, "owned_by": "benchroute"}
                for e in examples()]
        data += [{"id": m, "object": "model", "created": 0, "owned_by": "upstream",
                  "upstream_model": u.model} for m, u in gw.upstreams.items()]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> JSONResponse:
        """OpenAI's retrieve: the openai client's ``models.retrieve("benchroute")`` was a 404.
        An entry point the gateway would take (any valid spelling) or a served model."""
        authorise(request)
        # the id as sent: the route's pattern drops a trailing line break ('m0\n' was m0)
        model_id = request.scope.get("path", "")[len("/v1/models/"):]
        served = gw.names.get(model_id)  # a router model's name or an upstream's id
        if served is not None and served in gw.upstreams:
            return JSONResponse({"id": model_id, "object": "model", "created": 0,
                                 "owned_by": "upstream",
                                 "upstream_model": gw.upstreams[served].model})
        known_entry(model_id)  # a chat request's own 404 or 400 when it is no entry
        return JSONResponse({"id": model_id, "object": "model", "created": 0,
                             "owned_by": "benchroute"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = gw.batcher is not None and gw.batcher._task is not None \
            and not gw.batcher._task.done()
        return JSONResponse({"status": "ok" if ok else "starting",
                             "models": len(gw.router.models_)}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gw.metrics.prometheus(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/status.json")
    async def status() -> JSONResponse:
        # a cost near a float's limit made the curve's mean cost inf, and the page a 500
        return JSONResponse(finite_or_null({**gw.status, "live": gw.metrics.snapshot(),
                                            "time": time.time()}))

    @app.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(_page_html())

    return app


class _CountRequests:
    """Counts requests by endpoint and status: a plain ASGI middleware (Starlette's
    ``BaseHTTPMiddleware`` would add a task and a stream copy to every request)."""

    def __init__(self, app: Any, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in _KNOWN else "other"
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.request(endpoint, status[0])


_KNOWN = {"/v1/chat/completions", "/v1/route", "/v1/models", "/healthz", "/metrics",
          "/status.json", "/"}


def _page_html() -> str:
    return resources.files("benchroute.serve").joinpath("page/status.html").read_text("utf-8")
