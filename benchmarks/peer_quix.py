"""Run the Quix Streams peer (benchmarks/quix_app.py) on the pre-loaded backlog in its own virtualenv; check its
per-region aggregates against the independent fold (tests/expected.py), as ours are."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from benchmarks.offsets import run_to_the_end
from streams.config import Settings
from streams.simulator import SimEvent
from tests.expected import expected_regions, month_number

VERSION = "3.28.1"
APP = Path(__file__).with_name("quix_app.py")


def virtualenv(settings: Settings) -> Path:
    """quixstreams pins confluent-kafka below the project's: it gets a virtualenv of its own, made once."""
    venv = settings.cache_dir / f"quixstreams-{VERSION}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"quixstreams[avro]=={VERSION}"], check=True)
        (venv / ".complete").touch()
    return python


def last_values(settings: Settings, topic: str) -> dict[str, dict]:
    consumer = Consumer({**settings.librdkafka_conf(), "group.id": "bench-read", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        tps = [TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in tps}
        consumer.assign(tps)
        out, read = {}, {p: 0 for p in ends}
        while any(read[p] < ends[p] for p in ends):
            for message in consumer.consume(10_000, timeout=1.0):
                if not message.error():
                    read[message.partition()] = message.offset() + 1
                    out[message.key().decode()] = json.loads(message.value())
        return out
    finally:
        consumer.close()


def comparable(r: dict, clock: int, grace_months: int = 3) -> dict:
    """The peer's region state in the shape of tests.expected.expected_regions (registered, active: at most
    ``grace_months`` unpaid months counting the clock's, claims, contributions; the quota is ours only). ``clock``: the month of the latest event time, over all regions."""
    cohorts = {}
    for cohort in ("VULNERABLE_WORKER", "NON_CIVIL_SERVANT", "GENERAL"):
        hist = r["pt"].get(cohort, {})
        cohorts[cohort] = {"registered": r["reg"].get(cohort, 0),
                           "active": sum(n for pt, n in hist.items() if clock - int(pt) <= grace_months)}
    claims = {p: {s: {"count": c[0], "amount_idr": c[1]} for s, c in statuses.items()}
              for p, statuses in r["claims"].items()}
    return {"cohorts": cohorts, "claims": claims, "contributions": {"count": r["contrib"][0], "amount_idr": r["contrib"][1]}}


def run(settings: Settings, events: list[SimEvent], workdir: Path, advance: Callable[[int], None]) -> dict:
    python = virtualenv(settings)
    group, output = f"bench-quix-{uuid.uuid4().hex[:8]}", f"{settings.topic_prefix}quix-regions"
    config = workdir / f"{group}.json"
    config.write_text(json.dumps({"bootstrap": settings.kafka_bootstrap_servers, "registry": settings.schema_registry_url,
                                  "group": group, "state_dir": str(workdir / group), "output": output,
                                  "inputs": dict(settings.topics.inputs)}))
    seconds = run_to_the_end(settings, [str(python), str(APP), str(config)], group, len(events),
                             workdir / f"{group}.log", advance, "the Quix Streams peer")
    regions = last_values(settings, output)
    clock = month_number(max(r["clock"] for r in regions.values()))
    got = {code: comparable(r, clock) for code, r in regions.items()}
    # the peer computes the same work as ours did before the protection breakdown and claims turnaround: compare
    # what it computes (registered, members, claims, contributions); the quota is ours only
    want = {code: {"cohorts": {c: {"registered": v["registered"], "active": v["active"]}
                               for c, v in region["cohorts"].items()},
                   "claims": region["claims"], "contributions": region["contributions"]}
            for code, region in expected_regions(events, scale=settings.target_scale).items()}
    return {"events": len(events), "seconds": round(seconds, 2), "events_per_s": round(len(events) / seconds),
            "equal_to_fold": got == want, "version": VERSION}
