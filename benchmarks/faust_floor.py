"""Faust's own floors: a Faust agent per input topic that takes every record, in batches as our ingest stage does,
and does nothing with it — no decode, no state, no output. What Faust's consumer path (fetch, per-record
delivery, acknowledgement, offset commits) costs before any of our code runs; the ceiling measures the same
records through librdkafka.

The stateful floor does the least a per-participant topology must: one read and one write of a table (memory
store, so one changelog record) per record, keyed by a hash of the record key, with a one-field value. A restart
on an empty state directory then times Faust restoring that table: its own restore loop's rate with trivial values
(the bulk read of streams/faust_fixes.py off: the baseline of ours).
Runs as its own process: `python -m benchmarks.faust_floor CONFIG.json`."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks.offsets import records_present, run_to_the_end
from streams.config import Settings


def app_main(config: dict) -> None:
    import faust
    from streams import faust_fixes
    from streams.ingest import routed_by
    faust_fixes.install(config.get("bulk_restore", True))  # the same consumer as ours
    app = faust.App(config["group"], broker=f"kafka://{config['bootstrap']}", web_enabled=False,
                    datadir=config["datadir"], consumer_auto_offset_reset="earliest", topic_replication_factor=1,
                    topic_partitions=config["partitions"])
    table = app.Table("floor", default=None, key_type=str) if config["table"] else None
    for name in config["topics"]:
        topic = app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

        @app.agent(topic, name=f"floor-{name}")
        async def floor(stream):
            async for events in stream.take_events(config["batch_size"], within=config["batch_seconds"]):
                if table is None:
                    continue
                for event in events:
                    key = hashlib.blake2b(event.message.key, digest_size=16).hexdigest()
                    with routed_by(event):
                        table[key] = {"n": (table.get(key) or {"n": 0})["n"] + 1}
    # no web server: Faust's worker command starts one on 0.0.0.0:6066 whatever ``web_enabled`` says, and a
    # second floor, or `jamsostek run`, on the machine made it exit at start (address in use; two CI runs)
    sys.argv = [sys.argv[0], "worker", "-l", config.get("log_level", "warn"), "--without-web"]
    app.main()


def run(settings: Settings, total: int, workdir: Path, advance: Callable[[int], None], table: bool = False) -> dict:
    group = f"bench-faust-{uuid.uuid4().hex[:8]}"
    options = {"bootstrap": settings.kafka_bootstrap_servers, "group": group, "datadir": str(workdir / group),
               "topics": list(settings.topics.inputs), "partitions": settings.topic_partitions, "table": table,
               "batch_size": settings.batch_size, "batch_seconds": settings.batch_seconds}
    config = workdir / f"{group}.json"
    config.write_text(json.dumps(options))
    seconds = run_to_the_end(settings, [sys.executable, "-m", "benchmarks.faust_floor", str(config)], group, total,
                             workdir / f"{group}.log", advance, "the Faust floor")
    figures = {"events": total, "seconds": round(seconds, 2), "events_per_s": round(total / seconds)}
    if table:
        figures["restore"] = restore(settings, options, workdir)
    return figures


def restore(settings: Settings, options: dict, workdir: Path) -> dict:
    """The stateful floor restarted on an empty state directory, restored by Faust's own loop: the seconds between
    Faust's "Highwater for active changelog partitions" and "Recovery complete", and the changelog records that
    restore read."""
    from benchmarks.ours import restore_seconds
    present = records_present(settings, [f"{options['group']}-floor-changelog"])
    config = workdir / f"{options['group']}-restore.json"
    config.write_text(json.dumps({**options, "datadir": str(workdir / f"{options['group']}-restore"),
                                  "log_level": "info", "bulk_restore": False}))
    log = workdir / f"{options['group']}-restore.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.faust_floor", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 1800
            while "Recovery complete" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Faust floor's restore did not complete: see {log}")
                time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(30)
    seconds = restore_seconds(log)
    return {"seconds": round(seconds, 2), "changelog_records": present,
            "records_per_s": round(present / max(seconds, 0.001))}


if __name__ == "__main__":
    app_main(json.loads(Path(sys.argv[1]).read_text()))
