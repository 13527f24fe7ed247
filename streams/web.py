"""HTTP views (read-only JSON), the probes (/livez, /readyz: streams/probes.py) and the Prometheus endpoint of the
worker."""
from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import orjson
from aiohttp.web import StreamResponse
from aiokafka.errors import IllegalStateError
from prometheus_client import start_http_server

from streams import faust_fixes, metrics, probes
from streams.reference import regions as reference_regions

#: an event stream with nothing new sends a comment this often (a proxy or a browser keeps it open; a closed
#: connection is found by the write)
STREAM_IDLE_SECONDS = 15.0
#: the most an event stream's client may ask to wait between its messages (``every``)
STREAM_EVERY_MAX = 60.0
#: an event stream looks at the views this often without a new record: a revision of the reference file (a quota
#: changed) changes them without one
STREAM_RECHECK_SECONDS = 1.0


def same(views: list[dict], others: list[dict]) -> bool:
    """The same views: the read model returns a region's view object again until it is recomputed."""
    return len(views) == len(others) and all(a is b for a, b in zip(views, others))


def register(topo) -> None:
    app = topo.app

    page = (Path(__file__).with_name("static") / "index.html").read_text()
    region_page = (Path(__file__).with_name("static") / "region.html").read_text()

    @app.page("/")
    async def index(web, request):
        """The live page for people: a table of the 10 regions, a coverage chart and bars (no CDN, works offline)."""
        return web.html(page)

    async def region(web, request, code: str):
        """One region for its officers: protected / in arrears / ended per cohort, quota by funder, claims with
        turnaround, the alerts firing now."""
        if code not in reference_regions():
            return web.json({"error": f"unknown region {code[:10]!r}"}, status=404)
        return web.html(region_page)

    async def all_regions(web, request):
        return web.json(topo.read_model.views())

    rendered: dict[str, object] = {"views": [], "data": b""}  # the last views sent, as an event's data

    def views_event(generation: int, views: list[dict]) -> bytes:
        """One event of the stream; the same views are encoded once for every open stream."""
        if not same(views, rendered["views"]):
            rendered.update(views=views, data=orjson.dumps(views))
        return b"id: %d\ndata: %s\n\n" % (generation, rendered["data"])

    streaming: set[asyncio.Task] = set()

    async def regions_stream(web, request):
        """Server-sent events (``text/event-stream``): the ``/regions`` list at once, then again each time it
        changes — what changed while one was sent goes out as one — but at most one every ``every`` seconds
        (query parameter, default 0: every change). A comment every 15 s while nothing changes. The live pages
        follow it instead of polling."""
        try:
            every = float(request.query.get("every", 0))
        except ValueError:
            every = -1.0
        if not 0 <= every <= STREAM_EVERY_MAX:
            return web.json({"error": f"every: seconds between messages, 0 to {STREAM_EVERY_MAX:g}"}, status=400)
        response = StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})  # a proxy passes each message on at once
        await response.prepare(request)
        loop, task, model = asyncio.get_running_loop(), asyncio.current_task(), topo.read_model
        streaming.add(task)
        sent: list[dict] | None = None
        try:
            while True:
                generation, views = model.generation, model.views()  # (views are recomputed only where changed)
                if sent is None or not same(views, sent):
                    await response.write(views_event(generation, views))
                    sent, quiet_since = views, loop.time()
                    if every:  # what changes meanwhile goes out with the next message
                        await asyncio.sleep(every)
                        continue
                elif loop.time() - quiet_since >= STREAM_IDLE_SECONDS:
                    await response.write(b": nothing new\n\n")
                    quiet_since = loop.time()
                await model.changed_since(generation, STREAM_RECHECK_SECONDS)
        except ConnectionError:  # the client went away
            pass
        except asyncio.CancelledError:  # the worker stops (below)
            if not closing["value"]:
                raise
        finally:
            streaming.discard(task)
        return response

    closing = {"value": False}

    async def end_streams(_web_app) -> None:
        """aiohttp's signal for long-lived connections when the server stops: an open event stream would hold the
        worker's stop for the server's 60 s shutdown timeout."""
        closing["value"] = True
        for task in list(streaming):
            task.cancel()

    app.web.web_app.on_shutdown.append(end_streams)

    async def one_region(web, request, code: str):
        for view in topo.read_model.views():
            if view["code"] == code:
                return web.json(view)
        return web.json({"error": f"unknown region {code[:10]!r}"}, status=404)

    async def history(web, request):
        """Members and coverage per region at the start of each evaluated day: the chart's past on first load."""
        return web.json(topo.read_model.histories())

    async def about(web, request):
        """What the page needs to say about the data: simulated or real, and at what scale."""
        return web.json({"app": app.conf.id, "simulated": topo.settings.simulated,
                         "target_scale": topo.settings.target_scale})

    async def livez(web, request):
        """Liveness: the event loop answers (streams/probes.py); which event loop runs it, and the garbage
        collector's thresholds (streams/app.py tune_collector)."""
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        return web.json({"status": "ok", "app": app.conf.id, "loop": loop, "gc": list(gc.get_threshold())})

    lag_known = {"value": False}

    async def readyz(web, request):
        """Readiness: assigned, tables recovered, read model loaded, consumer lag known for every partition."""
        status, body = probes.readiness({**faust_fixes.worker_state(app),
                                         "read_model": topo.read_model.ready.is_set(),
                                         "lag_known": lag_known["value"]})
        return web.json(body, status=status)

    # CONTRACT.md names the paths without a trailing slash; both forms answer. The stream before {code}: routes
    # match in order
    for path, handler in (("/regions", all_regions), ("/regions/stream", regions_stream),
                          ("/regions/{code}", one_region), ("/region/{code}", region),
                          ("/about", about), ("/history", history),
                          ("/healthz", livez),
                          ("/livez", livez), ("/readyz", readyz)):
        app.page(path)(handler)
        app.page(path + "/")(handler)

    @app.task
    async def follow_region_changelog():
        await topo.read_model.run()

    @app.task
    async def serve_metrics():
        start_http_server(topo.settings.metrics_port, addr=topo.settings.http_host, registry=metrics.WORKER_REGISTRY)

    @app.timer(1.0)
    async def refresh_gauges():
        views = topo.read_model.views()
        for view in views:
            metrics.publish_region(view)
        metrics.publish_clock(views)

    lag = metrics.PartitionGauge(metrics.CONSUMER_LAG)
    inputs = set(topo.settings.topics.inputs)

    @app.timer(2.0)
    async def refresh_lag():
        """Records behind the end of each assigned input partition (highwater - next offset to read)."""
        if app.rebalancing:
            lag_known["value"] = False
            return
        consumer, values = app.consumer, {}
        try:
            for tp, position in faust_fixes.read_positions(app).items():
                highwater = consumer.highwater(tp) if tp.topic in inputs else 0
                if highwater is None:  # not fetched from yet
                    lag_known["value"] = False
                    return
                if tp.topic in inputs:
                    values[(tp.topic, tp.partition)] = max(highwater - (position or 0), 0)
        except IllegalStateError:  # revoked while we looked: the next tick sees the new assignment
            lag_known["value"] = False
            return
        lag.set(values)
        lag_known["value"] = True
