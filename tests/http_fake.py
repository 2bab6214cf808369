"""A loopback HTTP server for the fetch tests: a real socket on 127.0.0.1, no network."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any


class FakeRelease(http.server.BaseHTTPRequestHandler):
    """Answers a release's ``runs_to_run_suites.json`` with ``release`` and every other file
    with ``body`` (``[]``, valid-looking), both with ``status``, with a Content-Length header
    unless ``length`` is False. Subclass per server, set per test."""

    release: bytes = b"{}"
    body: bytes = b"[]"
    status: int = 200
    length: bool = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.release if self.path.endswith("runs_to_run_suites.json") else self.body
        self.send_response(self.status)
        if self.length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass


@contextlib.contextmanager
def serving(handler: Callable[..., http.server.BaseHTTPRequestHandler],
            path: str = "/benchmark_output") -> Iterator[str]:
    """The base URL of ``handler`` served on 127.0.0.1 (a free port) until the block ends."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    finally:
        httpd.shutdown()
        httpd.server_close()
