"""Forwarding a chat request to the chosen model's upstream, with one retry on the next model.

A timeout, a connection error, no free connection to the upstream, or a 5xx answer moves the
call to the next model by P (once by default). A stream is retried until its first byte (an
upstream that answers 200 and then breaks off before sending anything is a failed try), never
after. A 4xx answer is the caller's problem and is passed back as it came, with the upstream's
rate-limit headers (its status and headers even when its body breaks off or stalls, with an
error body then): never retried. When every try fails, the caller gets an OpenAI-style error
with the last upstream status (502 for a connection error, 503 when no connection was free,
504 for a timeout).

Each upstream has its own share of connections: a hung upstream holds at most its own, so the
healthy ones keep answering (one shared pool let 256 calls to a hung model stall every other).
The timeout bounds a whole try, the wait for a connection and the answer read in full (a
stream: to its first byte), not only the wait between two reads, which an upstream sending a
byte at a time never reached.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchroute.deprecation import renamed
from benchroute.serve.upstreams import Upstream

#: Upstream answer headers passed back to the client: what a client acts on (the openai
#: client's retry waits ``retry-after``) and the upstream's own request id.
PASSED_HEADERS = ("retry-after", "retry-after-ms", "x-request-id")
PASSED_PREFIXES = ("x-ratelimit-",)
#: Where a server-sent event ends: a blank line, each line end \n, \r\n or \r (SSE allows all
#: three, mixed).
_EVENT_END = re.compile(rb"(?:\r\n|\r|\n)(?:\r\n|\r|\n)")


@dataclass(frozen=True)
class Failure:
    """Why an upstream try failed: HTTP status to report and a short kind for the metrics."""

    model: str
    status: int
    kind: str
    message: str


@dataclass
class Answer:
    """What came back: a whole response, or an open stream (``stream`` yields bytes)."""

    model: str
    status: int
    content: bytes = b""
    media_type: str = "application/json"
    stream: AsyncIterator[bytes] | None = None
    failures: tuple[Failure, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    #: a stream's: closes the upstream response and frees its connection, once. The server
    #: must call it whether or not it iterates ``stream``: a generator never started (a
    #: client gone before the first chunk was written) never runs its own cleanup.
    close: Callable[[], Awaitable[None]] | None = None
    #: a stream's: how it ended, once it has: ``complete``, ``upstream broke off (...)``,
    #: ``client gone`` (mid-stream) or ``not sent`` (the client left before the first chunk).
    #: Why: the status is sent before the stream; a break after it was seen nowhere but in
    #: the metrics, so the decision log said 200 for an answer the client never got whole.
    outcome: Callable[[], str] | None = None


class _Opened:
    """An answered stream's upstream response and connection slot, released once."""

    def __init__(self, resp: httpx.Response, release: Callable[[], None]) -> None:
        self.resp, self.release, self.closed = resp, release, False
        self.outcome = "not sent"

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.resp.aclose()
        finally:
            self.release()


def error_body(message: str, type_: str, code: str | int | None = None,
               param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def passed_headers(headers: httpx.Headers) -> dict[str, str]:
    """The upstream's headers a client may act on (:data:`PASSED_HEADERS`, rate limits)."""
    return {k.lower(): v for k, v in headers.items()
            if k.lower() in PASSED_HEADERS or k.lower().startswith(PASSED_PREFIXES)}


class Forwarder:
    """Calls upstreams through one client, each upstream with ``connections`` of its own.

    ``on_call(model, seconds, error_kind)`` is told of every try, for the metrics;
    ``on_break(model, kind)`` of a stream that broke off after it was answered.
    """

    @renamed(max_connections="connections")  # one pool for all upstreams until 2026-12-05
    def __init__(self, upstreams: Mapping[str, Upstream], timeout: float = 60.0,
                 connect_timeout: float = 5.0, retries: int = 1, connections: int = 256,
                 on_call: Callable[[str, float, str | None], None] | None = None,
                 on_break: Callable[[str, str], None] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.upstreams = dict(upstreams)
        self.retries = retries
        self.timeout = timeout
        self.connections = connections
        self.on_call = on_call
        self.on_break = on_break
        self.slots = {m: asyncio.Semaphore(connections) for m in self.upstreams}
        total = connections * max(len(self.upstreams), 1)  # the pool never the bottleneck
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=total, max_keepalive_connections=total),
            transport=transport, follow_redirects=False, trust_env=False)

    async def close(self) -> None:
        await self.client.aclose()

    def _note(self, model: str, t0: float, kind: str | None) -> None:
        if self.on_call is not None:
            self.on_call(model, time.perf_counter() - t0, kind)

    async def chat(self, body: dict[str, Any], order: tuple[str, ...], stream: bool) -> Answer:
        """Send ``body`` to ``order[0]``'s upstream, then to the next ones on failure."""
        tries = [m for m in order if m in self.upstreams][: 1 + max(self.retries, 0)]
        failures: list[Failure] = []
        for model in tries:
            t0 = time.perf_counter()
            slot = self.slots[model]
            try:  # the wait for a connection counts in the try's timeout (it took up to 2x)
                await asyncio.wait_for(slot.acquire(), self.timeout)
            except asyncio.TimeoutError:
                failures.append(Failure(model, 503, "busy", f"upstream {model!r}: no free "
                                        f"connection of {self.connections} within "
                                        f"{self.timeout:g} s"))
                self._note(model, t0, "busy")
                continue
            got: Answer | Failure | None = None
            try:
                left = self.timeout - (time.perf_counter() - t0)
                got = await self._attempt(model, {**body, "model": self.upstreams[model].model},
                                          stream, slot.release, max(left, 0.0))
            finally:  # cancelled too: only an open stream keeps the slot, and frees it itself
                if got is None or isinstance(got, Failure) or got.stream is None:
                    slot.release()
            if isinstance(got, Failure):
                failures.append(got)
                self._note(model, t0, got.kind)
                continue
            # an upstream's rate limit is passed back, never retried, and counted on its model
            self._note(model, t0, "http_429" if got.status == 429 else None)
            got.failures = tuple(failures)
            return got
        last = failures[-1] if failures else Failure("", 502, "none", "no upstream to call")
        msg = "; ".join(f.message for f in failures) or last.message
        return Answer(last.model, last.status,
                      json.dumps(error_body(msg, "upstream_error", last.status)).encode(),
                      failures=tuple(failures))

    async def _attempt(self, model: str, payload: dict[str, Any], stream: bool,
                       release: Callable[[], None], within: float) -> Answer | Failure:
        """One try, whole (a stream: to its first byte) within ``within`` seconds, what the
        wait for a connection left of the timeout."""
        seen: dict[str, Any] = {}  # the answer's status and headers, once they arrive
        try:
            return await asyncio.wait_for(self._try(model, payload, stream, release, seen),
                                          within)
        except asyncio.TimeoutError:
            what = "sent no first byte" if stream else "gave no whole answer"
            if 400 <= seen.get("status", 0) < 500:  # answered, if not whole: never retried
                return Answer(model, seen["status"], json.dumps(error_body(
                    f"upstream {model!r} answered {seen['status']} and its body stalled",
                    "upstream_error", seen["status"])).encode(), headers=seen["headers"])
            return Failure(model, 504, "timeout", f"upstream {model!r} {what} within "
                           f"{self.timeout:g} s")

    async def _try(self, model: str, payload: dict[str, Any], stream: bool,
                   release: Callable[[], None], seen: dict[str, Any]) -> Answer | Failure:
        """An open stream returned releases its slot (``release``) when it ends; every other
        response is closed here, cancelled or not."""
        up = self.upstreams[model]
        resp: httpx.Response | None = None
        keep_open = False
        try:
            request = self.client.build_request("POST", up.chat_url, json=payload,
                                                headers=up.headers())
            resp = await self.client.send(request, stream=True)
            if resp.status_code >= 500:
                try:
                    text = (await resp.aread())[:300].decode("utf-8", "replace")
                except httpx.HTTPError as exc:
                    text = f"(its body broke off: {type(exc).__name__})"
                return Failure(model, resp.status_code, f"http_{resp.status_code}",
                               f"upstream {model!r} answered {resp.status_code}: {text}")
            media = resp.headers.get("content-type", "application/json")
            headers = passed_headers(resp.headers)
            seen.update(status=resp.status_code, headers=headers)
            if stream and resp.status_code == 200:
                chunks = resp.aiter_bytes()  # decoded, as the client is told no encoding
                try:
                    first = await chunks.__anext__()
                except StopAsyncIteration:
                    return Failure(model, 502, "read", f"upstream {model!r} answered an "
                                   "empty stream")
                keep_open = True
                opened = _Opened(resp, release)
                return Answer(model, 200, media_type=media, headers=headers,
                              stream=self._relay(opened, first, chunks, model),
                              close=opened.close, outcome=lambda: opened.outcome)
            try:
                content = await resp.aread()
            except httpx.HTTPError as exc:
                if resp.status_code < 400:
                    raise
                # a 4xx is the request's answer, retried nowhere: its status and rate-limit
                # headers still go back, with an error body for the part that broke off
                content = json.dumps(error_body(
                    f"upstream {model!r} answered {resp.status_code} and its body broke off "
                    f"({type(exc).__name__})", "upstream_error", resp.status_code)).encode()
                media = "application/json"
            return Answer(model, resp.status_code, content, media, headers=headers)
        except (httpx.InvalidURL, UnicodeError) as exc:  # checked at start-up; never a bare 500
            return Failure(model, 502, "connection", f"upstream {model!r}: no request can be "
                           f"sent to it ({type(exc).__name__}: {str(exc):.100})")
        except httpx.TimeoutException:
            return Failure(model, 504, "timeout", f"upstream {model!r} timed out")
        except httpx.HTTPError as exc:
            if resp is None:
                return Failure(model, 502, "connection",
                               f"upstream {model!r} unreachable ({type(exc).__name__})")
            return Failure(model, 502, "read",
                           f"upstream {model!r} broke off ({type(exc).__name__})")
        finally:
            if resp is not None and not keep_open:
                await resp.aclose()

    async def _relay(self, opened: _Opened, first: bytes, chunks: AsyncIterator[bytes],
                     model: str) -> AsyncIterator[bytes]:
        """The upstream's stream, whole events at a time; a break mid-stream drops the
        unfinished event and ends with an error event (glued to the half-sent one, it made
        the client's JSON parser fail instead of raising the error)."""
        pending = first
        opened.outcome = "client gone"  # unless it ends below
        try:
            while True:
                end = max((m.end() for m in _EVENT_END.finditer(pending)), default=0)
                if end:
                    yield pending[:end]
                    pending = pending[end:]
                try:
                    pending += await chunks.__anext__()
                except StopAsyncIteration:
                    break
            if pending:
                yield pending
            opened.outcome = "complete"
        except httpx.HTTPError as exc:
            opened.outcome = f"upstream broke off ({type(exc).__name__})"
            if self.on_break is not None:
                self.on_break(model, "stream")
            err = error_body(f"upstream {model!r} broke off mid-stream ({type(exc).__name__})",
                             "upstream_error", 502)
            yield f"data: {json.dumps(err)}\n\n".encode()
        finally:
            await opened.close()
