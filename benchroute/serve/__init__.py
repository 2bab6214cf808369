"""The routing gateway: an OpenAI-compatible service in front of a fitted router (extra ``serve``).

Layout, data flowing down: ``entry`` (the grammar of entry-point names), ``upstreams`` (the
upstreams file), ``calibrate`` (parameters fitted to a target share or cost on a prompt sample,
and the cost–quality curve), ``decide`` (decisions and their micro-batching), ``forward`` (calls
to upstreams, with retries), ``metrics`` (Prometheus and the status page's figures), ``app``
(FastAPI endpoints) and ``run`` (uvicorn, signals). Nothing outside this package imports it.
"""

from __future__ import annotations

__all__ = ["GatewayConfig", "build_gateway", "create_app", "serve"]


def __getattr__(name: str) -> object:
    if name in ("GatewayConfig", "build_gateway", "create_app"):
        from benchroute.serve import app

        return getattr(app, name)
    if name == "serve":
        from benchroute.serve.run import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
