"""Running a gateway under uvicorn: bind 127.0.0.1 unless told otherwise; SIGTERM drains.

uvicorn's own shutdown does the draining: on SIGTERM or SIGINT it stops accepting connections,
waits up to ``drain_seconds`` for the requests in flight to finish, then runs the app's
lifespan exit (the decision batcher and the upstream connections close last). Streams still
open a second before the drain runs out end with an error event
(:meth:`~benchroute.serve.app.Gateway.begin_drain`).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from benchroute.exceptions import BenchrouteError
from benchroute.inputs import is_real

logger = logging.getLogger(__name__)


def check_drain(seconds: object) -> float:
    """The shutdown drain: a finite number of seconds >= 0 (NaN and infinity reached uvicorn's
    int() as an internal error; found by fuzzing)."""
    if not is_real(seconds) or float(seconds) < 0:  # type: ignore[arg-type]
        raise BenchrouteError(f"drain seconds must be a finite number >= 0, got {seconds!r}")
    return float(seconds)  # type: ignore[arg-type]


def serve(gateway: Any, host: str = "127.0.0.1", port: int = 6060,
          drain_seconds: float = 30.0, log_level: str = "warning") -> None:
    """Serve ``gateway`` (from :func:`benchroute.serve.app.build_gateway`) until stopped."""
    import uvicorn

    from benchroute.serve.app import create_app

    drain_seconds = check_drain(drain_seconds)

    config = uvicorn.Config(create_app(gateway), host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=int(max(drain_seconds, 1)),
                            access_log=False, lifespan="on")
    sock = listen_socket(host, port)  # a port in use fails here, before the address is shown
    port = sock.getsockname()[1]
    logger.warning("benchroute gateway on http://%s:%d (OpenAI base URL http://%s:%d/v1)",
                   host, port, host, port)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # streams still open when the drain runs out end with an error event, not cut
            gateway.begin_drain(drain_seconds)
            super().handle_exit(sig, frame)

    Server(config).run(sockets=[sock])


def listen_socket(host: str, port: int) -> socket.socket:
    """The gateway's socket, bound: an address in use or not this machine's is a
    :class:`BenchrouteError` naming it (uvicorn logged it after the address had been shown)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BenchrouteError(f"cannot listen on {host}:{port} "
                              f"({exc.strerror or exc}); choose another --port or --host") from None
    sock.set_inheritable(True)
    return sock
