"""Forwarding a chat request to the chosen model's upstream, with one retry on the next model.

A timeout, a connection error or a 5xx answer moves the call to the next model by P (once by
default; never after a stream has started sending). A 4xx answer is the caller's problem and is
passed back as it came. When every try fails, the caller gets an OpenAI-style error with the
last upstream status (502 for a connection error, 504 for a timeout).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from benchroute.serve.upstreams import Upstream


@dataclass(frozen=True)
class Failure:
    """Why an upstream try failed: HTTP status to report and a short kind for the metrics."""

    model: str
    status: int
    kind: str
    message: str


@dataclass
class Answer:
    """What came back: a whole response, or an open stream (``stream`` yields raw bytes)."""

    model: str
    status: int
    content: bytes = b""
    media_type: str = "application/json"
    stream: AsyncIterator[bytes] | None = None
    failures: tuple[Failure, ...] = ()


def error_body(message: str, type_: str, code: str | int | None = None,
               param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class Forwarder:
    """Calls upstreams with a shared connection pool.

    ``on_call(model, seconds, error_kind)`` is told of every try, for the metrics.
    """

    def __init__(self, upstreams: Mapping[str, Upstream], timeout: float = 60.0,
                 connect_timeout: float = 5.0, retries: int = 1, max_connections: int = 256,
                 on_call: Callable[[str, float, str | None], None] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.upstreams = dict(upstreams)
        self.retries = retries
        self.on_call = on_call
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
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
            up = self.upstreams[model]
            payload = {**body, "model": up.model}
            t0 = time.perf_counter()
            try:
                request = self.client.build_request("POST", up.chat_url, json=payload,
                                                    headers=up.headers())
                resp = await self.client.send(request, stream=True)
            except httpx.TimeoutException:
                failures.append(Failure(model, 504, "timeout", f"upstream {model!r} timed out"))
                self._note(model, t0, "timeout")
                continue
            except httpx.HTTPError as exc:
                failures.append(Failure(model, 502, "connection",
                                        f"upstream {model!r} unreachable ({type(exc).__name__})"))
                self._note(model, t0, "connection")
                continue
            if resp.status_code >= 500:
                text = (await resp.aread())[:300].decode("utf-8", "replace")
                await resp.aclose()
                failures.append(Failure(model, resp.status_code, f"http_{resp.status_code}",
                                        f"upstream {model!r} answered {resp.status_code}: {text}"))
                self._note(model, t0, f"http_{resp.status_code}")
                continue
            media = resp.headers.get("content-type", "application/json")
            if stream and resp.status_code == 200:
                self._note(model, t0, None)
                return Answer(model, 200, media_type=media, stream=_relay(resp, model),
                              failures=tuple(failures))
            try:
                content = await resp.aread()
            except httpx.HTTPError as exc:
                await resp.aclose()
                failures.append(Failure(model, 502, "read",
                                        f"upstream {model!r} broke off ({type(exc).__name__})"))
                self._note(model, t0, "read")
                continue
            await resp.aclose()
            self._note(model, t0, None)
            return Answer(model, resp.status_code, content, media, failures=tuple(failures))
        last = failures[-1] if failures else Failure("", 502, "none", "no upstream to call")
        msg = "; ".join(f.message for f in failures) or last.message
        return Answer(last.model, last.status,
                      json.dumps(error_body(msg, "upstream_error", last.status)).encode(),
                      failures=tuple(failures))


async def _relay(resp: httpx.Response, model: str) -> AsyncIterator[bytes]:
    """The upstream's stream, chunk by chunk; a break mid-stream ends it with an error event."""
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        err = error_body(f"upstream {model!r} broke off mid-stream ({type(exc).__name__})",
                         "upstream_error", 502)
        yield f"data: {json.dumps(err)}\n\n".encode()
    finally:
        await resp.aclose()
