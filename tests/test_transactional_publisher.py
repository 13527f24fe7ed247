"""An upstream publisher that writes with Kafka transactions (a Java service with exactly-once, a backlog loader
that aborts a failed upload): what it aborted never happened. The live tables and the warehouse hold exactly the
committed records; the transaction markers and aborted records in the input partitions hold no commit back and
leave no consumer lag behind (an operator would chase a lag that never drains)."""
from __future__ import annotations

import random
import time
import uuid
from dataclasses import replace

from streams.config import Settings
from streams.simulator import Scenario, SimEvent
from streams.simulator.publish import Publisher
from streams.topics import ensure_topics
from tests.conftest import unique
from tests.helpers import MixedLoad, behind
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


def rewind_to_the_markers(settings: Settings, group: str) -> int:
    """Sets ``group``'s committed offset of every non-empty input partition to its last offset: the marker that
    ends the partition's last transaction (every write here is transactional). That is where a worker that died
    after committing its last record, before it stepped over the marker, resumes. Returns how many were set."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        tps = [KTopicPartition(t, p) for t in settings.topics.inputs for p in range(settings.topic_partitions)]
        ends = consumer.end_offsets(tps)
    finally:
        consumer.close()
    at = [TopicPartition(tp.topic, tp.partition, end - 1) for tp, end in ends.items() if end > 0]
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, at)])[group].result()
    return len(at)


def test_aborted_transactions_of_a_publisher_count_nowhere_and_leave_no_lag(kafka, registry, tmp_path):
    """Two rounds: a worker and a sink read a transactional stream to its end; then the worker's group is set
    back onto the markers that end its partitions (a worker that died before stepping over them), more is
    published, and a new worker carries on from there. Beside heavy mixed load, as every drill."""
    events = list(Scenario.load(scale=SCALE, bad_share=0.02, duplicate_share=0.02).events(4))
    first = events[:len(events) * 2 // 3]
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=3, state_dir=tmp_path / "state",
                        app_id=unique("app-"), target_scale=SCALE,
                        warehouse_url=f"sqlite:///{tmp_path / 'warehouse.db'}")
    inputs = list(settings.topics.inputs)

    def lag(service: Worker | Sink, name: str) -> dict:
        return {(dict(labels)["topic"], dict(labels)["partition"]): v for (metric, labels), v in service.metrics().items()
                if metric == name}

    def caught_up(worker: Worker, sink: Sink, published: list[SimEvent]) -> None:
        assert_regions_soon(worker, expected_regions(published, scale=SCALE), 180)
        sink.wait(lambda: warehouse_facts(settings.warehouse_url) == expected_facts(published), 120,
                  "warehouse facts equal to the committed records")
        # both groups commit past the markers: nothing left to read for a restarted worker or sink
        for group in (settings.app_id, settings.sink_group_id):
            try:
                worker.wait(lambda: behind(settings.kafka_bootstrap_servers, group, inputs) == {}, 60,
                            f"{group} committed to the end of every input partition")
            except AssertionError as exc:
                raise AssertionError(f"{behind(settings.kafka_bootstrap_servers, group, inputs)}: {exc}") from None
        worker.wait(lambda: (got := lag(worker, "jamsostek_consumer_lag_records")) and not any(got.values()), 30,
                    "the worker's consumer lag at 0")
        sink.wait(lambda: (got := lag(sink, "jamsostek_sink_lag_records")) and not any(got.values()), 30,
                  "the sink's lag at 0")

    aborted = publish_in_transactions(settings, first, seed=5)
    assert aborted > len(first) // 5
    with MixedLoad(tmp_path, seconds=600):
        worker = Worker(settings, tmp_path / "worker.log").start()
        sink = Sink(settings, tmp_path / "sink.log").start()
        try:
            worker.wait(lambda: sum(worker.events_accounted().values()) >= len(first), 180, "every record accounted")
            caught_up(worker, sink, first)
            assert sum(worker.events_accounted().values()) == len(first)  # no aborted record was read
            worker.stop()
            assert rewind_to_the_markers(settings, settings.app_id) == 3 * settings.topic_partitions
            assert publish_in_transactions(settings, events[len(first):], seed=6) > 0
            worker = Worker(settings, tmp_path / "worker2.log").start()
            caught_up(worker, sink, events)
            # the second worker read nothing of the first round again: only the rest, the markers stepped over
            assert sum(worker.events_accounted().values()) == len(events) - len(first)
        finally:
            sink.stop()
            worker.stop()


def test_the_alert_sink_posts_only_committed_transitions_and_drains_its_lag(settings):
    """Under ``exactly_once`` the worker writes its alert transitions in transactions: one it aborted never
    happened. The alert sink (run in-process, its own group) POSTs exactly the committed transitions, in order, and
    commits past the markers and aborted records — including a partition that ends in an aborted transaction —
    so its group is left with nothing to read."""
    import asyncio
    from confluent_kafka import Producer
    from sinks.alerts.webhook import alertmanager_payload, run_alert_sink
    from streams.serde import AvroSerde
    from tests.helpers import WebhookReceiver
    from tests.test_serde import ALERT

    webhook = WebhookReceiver()
    settings = settings.model_copy(update={"app_id": unique("app-"), "topic_partitions": 2,
                                           "alert_webhook_url": webhook.url})
    ensure_topics(settings)
    topic, serde = settings.topics.region_alerts, AvroSerde(settings.schema_registry_url)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "transactional.id": unique("worker-")})
    producer.init_transactions(30)
    committed = []
    for n in range(12):  # committed and aborted in turn; each partition's last transaction is an aborted one
        alert = {**ALERT, "alert_id": f"64.11:NO_REGISTRATIONS:{n}", "occurred_at": ALERT["occurred_at"] + n}
        producer.begin_transaction()
        producer.produce(topic, key=alert["region_code"].encode(), value=serde.encode(topic, "RegionAlert", alert),
                         partition=n // 2 % 2)
        if n % 2:
            producer.flush(30)  # on the broker (a read_uncommitted reader sees it) before the abort
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
            committed.append(alert)

    group = f"{settings.sink_group_id}-webhook"

    async def deliver() -> None:
        task = asyncio.create_task(run_alert_sink(settings))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                if task.done():
                    task.result()  # what crashed it
                if len(webhook.received) >= len(committed) and not behind(settings.kafka_bootstrap_servers, group,
                                                                           [topic]):
                    return
            raise AssertionError(f"{len(webhook.received)} of {len(committed)} POSTed; left to read: "
                                 f"{behind(settings.kafka_bootstrap_servers, group, [topic])}")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(deliver())
    finally:
        webhook.close()
    fingerprint = {a["alert_id"]: alertmanager_payload(a)["alerts"][0]["fingerprint"] for a in committed}
    posted = [p["alerts"][0]["fingerprint"] for p in webhook.received]
    assert sorted(posted) == sorted(fingerprint.values())  # every committed one once, no aborted one
    for partition in (0, 1):  # in order within a partition
        assert [f for f in posted if f in {fingerprint[a["alert_id"]] for a in committed[partition::2]}] == \
            [fingerprint[a["alert_id"]] for a in committed[partition::2]]
