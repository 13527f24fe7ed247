"""HTTP views (read-only JSON) and the Prometheus endpoint of the worker."""
from __future__ import annotations

from pathlib import Path

from prometheus_client import start_http_server

from streams import metrics


def register(topo) -> None:
    app = topo.app

    page = (Path(__file__).with_name("static") / "index.html").read_text()

    @app.page("/")
    async def index(web, request):
        """The live page for people: a table of the 10 regions, a coverage chart and bars (no CDN, works offline)."""
        return web.html(page)

    async def all_regions(web, request):
        return web.json(topo.read_model.views())

    async def one_region(web, request, code: str):
        for view in topo.read_model.views():
            if view["code"] == code:
                return web.json(view)
        return web.json({"error": f"unknown region {code[:10]!r}"}, status=404)

    async def healthz(web, request):
        return web.json({"status": "ok", "app": app.conf.id})

    # CONTRACT.md names the paths without a trailing slash; both forms answer
    for path, handler in (("/regions", all_regions), ("/regions/{code}", one_region), ("/healthz", healthz)):
        app.page(path)(handler)
        app.page(path + "/")(handler)

    @app.task
    async def follow_region_changelog():
        await topo.read_model.run()

    @app.task
    async def serve_metrics():
        start_http_server(topo.settings.metrics_port, addr=topo.settings.http_host)

    @app.timer(1.0)
    async def refresh_gauges():
        for view in topo.read_model.views():
            metrics.publish_region(view)

    @app.timer(5.0)
    async def refresh_lag():
        """Records behind the end of each assigned input partition (highwater - next offset to read)."""
        consumer = app.consumer
        inputs = set(topo.settings.topics.inputs)
        for tp in consumer.assignment():
            if tp.topic in inputs:
                highwater, read = consumer.highwater(tp), consumer._read_offset[tp]
                if highwater is not None:
                    metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                        max(highwater - (read + 1 if read is not None else 0), 0))
