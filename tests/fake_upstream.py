"""An OpenAI-compatible fake upstream on 127.0.0.1, and a runner that serves any ASGI app there.

The fake answers ``POST /v1/chat/completions`` like an LLM server: a completion naming the model it
was asked for, or a stream of server-sent events. Tests set its latency and faults: failing
model ids (a status, or a hang past the client's timeout), a stream that breaks off, and a share of
calls that fail with 503 (every n-th call, so counts are exact). Used by the gateway tests and
by benchmarks/gateway.py; no traffic leaves the loopback interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass
class FakeConfig:
    latency: float = 0.0                      # seconds before answering
    fail: dict[str, int] = field(default_factory=dict)   # model id -> HTTP status
    hang: set[str] = field(default_factory=set)           # model ids that never answer in time
    fail_every: int = 0                       # every n-th call answers 503 (0: never)
    chunks: int = 3                           # stream chunks
    chunk_delay: float = 0.0                  # seconds between two stream chunks
    break_stream: set[str] = field(default_factory=set)   # model ids whose stream breaks off
    calls: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0


def fake_upstream(config: FakeConfig) -> Any:
    app = FastAPI()
    lock = threading.Lock()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        model = body.get("model")
        with lock:
            config.count += 1
            n = config.count
            config.calls.append({"model": model, "auth": request.headers.get("authorization"),
                                 "stream": bool(body.get("stream")), "body": body})
        if config.latency:
            await asyncio.sleep(config.latency)
        if model in config.hang:
            await asyncio.sleep(5)  # past any client timeout the tests set
        if model in config.fail:
            status = config.fail[model]
            return JSONResponse({"error": {"message": f"fake {status}", "type": "server_error"}},
                                status_code=status)
        if config.fail_every and n % config.fail_every == 0:
            return JSONResponse({"error": {"message": "fake overload", "type": "server_error"}},
                                status_code=503)
        text = f"answer from {model}"
        if body.get("stream"):
            async def events() -> AsyncIterator[bytes]:
                for i in range(config.chunks):
                    chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                             "created": int(time.time()), "model": model,
                             "choices": [{"index": 0, "delta": {"content": f"{text} [{i}]"},
                                          "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                    if model in config.break_stream and i == 0:
                        raise ConnectionResetError("fake stream broke off")
                    await asyncio.sleep(config.chunk_delay)
                done = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                        "created": int(time.time()), "model": model,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                yield f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode()
            return StreamingResponse(events(), media_type="text/event-stream")
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}

    return app


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(app: Any, drain: int = 5) -> Iterator[str]:
    """``http://127.0.0.1:<free port>`` serving ``app`` (uvicorn in a thread) until the block
    ends; the server is stopped and joined."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False,
                                           timeout_graceful_shutdown=drain, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def main() -> None:
    """``python -m tests.fake_upstream --port P [--fail-every N] [--latency S]``: the fake as
    its own process, for benchmarks/gateway.py (binds 127.0.0.1 only)."""
    import argparse

    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    a = p.parse_args()
    cfg = FakeConfig(latency=a.latency, fail_every=a.fail_every)
    cfg.calls = _Discard()
    uvicorn.run(fake_upstream(cfg), host="127.0.0.1", port=a.port, log_level="error",
                access_log=False)


class _Discard(list):  # type: ignore[type-arg]
    """A call log that keeps nothing (a long benchmark would grow it without bound)."""

    def append(self, item: Any) -> None:
        pass


if __name__ == "__main__":
    main()
