"""An upstream publisher that writes with Kafka transactions (a Java service with exactly-once, a backlog loader
that aborts a failed upload): what it aborted never happened. The live tables and the warehouse hold exactly the
committed records; the transaction markers and aborted records in the input partitions hold no commit back and
leave no consumer lag behind (an operator would chase a lag that never drains)."""
from __future__ import annotations

import random
import uuid
from dataclasses import replace

from streams.config import Settings
from streams.simulator import Scenario, SimEvent
from streams.simulator.publish import Publisher
from streams.topics import ensure_topics
from tests.conftest import unique
from tests.helpers import behind
from tests.test_topology import assert_regions_soon
from tests.test_warehouse import expected_facts, warehouse_facts
from tests.expected import expected_regions
from tests.worker import Sink, Worker

SCALE = 0.01
CHUNK = 150  # records of a committed transaction
PHANTOMS = 40  # records of an aborted one


def phantoms(events: list[SimEvent], rng: random.Random, taken: set[str]) -> list[SimEvent]:
    """Valid records of people who never existed: copies of the scenario's own valid records under new NIKs (same
    region and birth date digits, another serial) and new event ids. Counted, they would move every figure."""
    out = []
    for event in rng.sample([e for e in events if e.expect == "processed"], PHANTOMS):
        nik = event.key
        while nik in taken:
            nik = event.key[:12] + f"{rng.randrange(1, 10_000):04d}"
        taken.add(nik)
        record = {**event.record, "nik": nik, "event_id": str(uuid.uuid4())}
        if "claim_id" in record:
            record["claim_id"] = str(uuid.uuid4())
        out.append(replace(event, key=nik, record=record))
    return out


def publish_in_transactions(settings: Settings, events: list[SimEvent], seed: int) -> int:
    """``events`` in committed transactions of ``CHUNK`` records, each followed by an aborted one of phantom
    records; the last transaction is an aborted one, so every partition it touched ends in aborted records and a
    marker. Returns how many phantom records were aborted."""
    ensure_topics(settings)
    rng = random.Random(seed)
    taken = {e.key for e in events}
    publisher = Publisher(settings, **{"transactional.id": unique("upstream-")})
    producer = publisher.producer
    producer.init_transactions(30)
    aborted = 0
    for start in range(0, len(events), CHUNK):
        producer.begin_transaction()
        for event in events[start:start + CHUNK]:
            publisher.send(event)
        producer.commit_transaction(30)
        producer.begin_transaction()
        for event in phantoms(events, rng, taken):
            publisher.send(event)
            aborted += 1
        producer.flush(30)  # on the broker (visible to read_uncommitted readers) before the abort
        producer.abort_transaction(30)
    return aborted


def test_aborted_transactions_of_a_publisher_count_nowhere_and_leave_no_lag(kafka, registry, tmp_path):
    events = list(Scenario.load(scale=SCALE, bad_share=0.02, duplicate_share=0.02).events(4))
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=3, state_dir=tmp_path / "state",
                        app_id=unique("app-"), target_scale=SCALE,
                        warehouse_url=f"sqlite:///{tmp_path / 'warehouse.db'}")
    aborted = publish_in_transactions(settings, events, seed=5)
    assert aborted > len(events) // 5
    worker = Worker(settings, tmp_path / "worker.log").start()
    sink = Sink(settings, tmp_path / "sink.log").start()
    try:
        worker.wait(lambda: sum(worker.events_accounted().values()) >= len(events), 180, "every record accounted")
        assert_regions_soon(worker, expected_regions(events, scale=SCALE))
        assert sum(worker.events_accounted().values()) == len(events)
        sink.wait(lambda: warehouse_facts(settings.warehouse_url) == expected_facts(events), 120,
                  "warehouse facts equal to the committed records")
        inputs = list(settings.topics.inputs)
        # both groups commit past the markers: nothing left to read for a restarted worker or sink
        for group in (settings.app_id, settings.sink_group_id):
            worker.wait(lambda: behind(settings.kafka_bootstrap_servers, group, inputs) == {}, 60,
                        f"{group} committed to the end of every input partition")

        def lag(service: Worker | Sink, name: str) -> dict:
            return {(dict(labels)["topic"], dict(labels)["partition"]): v for (metric, labels), v in service.metrics().items()
                    if metric == name}
        worker.wait(lambda: (got := lag(worker, "jamsostek_consumer_lag_records")) and not any(got.values()), 30,
                    "the worker's consumer lag at 0")
        sink.wait(lambda: (got := lag(sink, "jamsostek_sink_lag_records")) and not any(got.values()), 30,
                  "the sink's lag at 0")
        assert sum(worker.events_accounted().values()) == len(events)
    finally:
        sink.stop()
        worker.stop()
