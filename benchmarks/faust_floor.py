"""Faust's own floor: a Faust agent per input topic that takes every record, in batches as our ingest stage does,
and does nothing with it — no decode, no state, no output. What Faust's consumer path (fetch, per-record
delivery, acknowledgement, offset commits) costs before any of our code runs; the ceiling measures the same
records through librdkafka. Runs as its own process: `python -m benchmarks.faust_floor CONFIG.json`."""
from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks.offsets import run_to_the_end
from streams.config import Settings


def app_main(config: dict) -> None:
    import faust
    from streams import faust_fixes
    faust_fixes.install()  # the same consumer as ours
    app = faust.App(config["group"], broker=f"kafka://{config['bootstrap']}", web_enabled=False,
                    datadir=config["datadir"], consumer_auto_offset_reset="earliest", topic_replication_factor=1)
    for name in config["topics"]:
        topic = app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

        @app.agent(topic, name=f"floor-{name}")
        async def floor(stream):
            async for _ in stream.take_events(config["batch_size"], within=config["batch_seconds"]):
                pass
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


def run(settings: Settings, total: int, workdir: Path, advance: Callable[[int], None]) -> dict:
    group = f"bench-faust-{uuid.uuid4().hex[:8]}"
    config = workdir / f"{group}.json"
    config.write_text(json.dumps({"bootstrap": settings.kafka_bootstrap_servers, "group": group,
                                  "datadir": str(workdir / group), "topics": list(settings.topics.inputs),
                                  "batch_size": settings.batch_size, "batch_seconds": settings.batch_seconds}))
    seconds = run_to_the_end(settings, [sys.executable, "-m", "benchmarks.faust_floor", str(config)], group, total,
                             workdir / f"{group}.log", advance, "the Faust floor")
    return {"events": total, "seconds": round(seconds, 2), "events_per_s": round(total / seconds)}


if __name__ == "__main__":
    app_main(json.loads(Path(sys.argv[1]).read_text()))
