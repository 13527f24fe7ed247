"""Liveness and readiness, as Kubernetes probes and operators read them, for the worker and the sink.

- ``/livez``: the process's event loop answers (nothing else: a liveness probe that also checked Kafka would
  restart every pod during a broker outage, which helps nobody).
- ``/readyz``: the process does its job: each named check true; otherwise 503 with the failing checks named.
  ``/healthz`` stays as it was (the contract's path): liveness.

The sink has no Faust web server: ``serve`` gives it one (aiohttp, which Faust already brings) with its own
``/metrics`` beside the probes."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def readiness(checks: dict[str, bool]) -> tuple[int, dict]:
    """(HTTP status, body) of a readiness answer."""
    failing = sorted(name for name, ok in checks.items() if not ok)
    return (200 if not failing else 503), {"status": "ready" if not failing else "not ready", "checks": checks,
                                            "failing": failing}


async def serve(host: str, port: int, registry: CollectorRegistry, checks: Callable[[], dict[str, bool]]) -> None:
    """``/metrics`` (``registry`` only), ``/livez``, ``/healthz``, ``/readyz`` on ``host:port`` until cancelled."""
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        status, body = readiness(checks())
        return web.json_response(body, status=status)

    app = web.Application()
    for path, handler in (("/metrics", metrics), ("/livez", live), ("/healthz", live), ("/readyz", ready)):
        app.router.add_get(path, handler)
        app.router.add_get(path + "/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
