"""HTTP views (read-only JSON) and the Prometheus endpoint of the worker."""
from __future__ import annotations

from prometheus_client import start_http_server

from streams import metrics, rules
from streams.reference import regions as reference_regions


def views(topo) -> list[dict]:
    """All regions at the stream's clock: the latest event time seen in any region (so silence still ages)."""
    ref = reference_regions()
    stats = {code: topo.regions.get(code) for code in ref}
    clock = max((s["clock"] for s in stats.values() if s), default=0)
    s = topo.settings
    return [rules.region_view(region, stats[code], clock, s.grace_months, s.target_scale) for code, region in ref.items()]


def register(topo) -> None:
    app = topo.app

    @app.page("/regions/")
    async def all_regions(web, request):
        return web.json(views(topo))

    @app.page("/regions/{code}/")
    async def one_region(web, request, code: str):
        for view in views(topo):
            if view["code"] == code:
                return web.json(view)
        return web.json({"error": f"unknown region {code[:10]!r}"}, status=404)

    @app.page("/healthz/")
    async def healthz(web, request):
        return web.json({"status": "ok", "app": app.conf.id})

    @app.task
    async def serve_metrics():
        start_http_server(topo.settings.metrics_port, addr="127.0.0.1")

    @app.timer(1.0)
    async def refresh_gauges():
        for view in views(topo):
            metrics.publish_region(view)
