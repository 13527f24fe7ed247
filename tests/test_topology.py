"""The Faust topology against the real broker and registry: exact tables, dead letters, duplicates, late events,
the accounting invariant, no NIK in internal topics, and recovery from changelogs after a restart."""
from __future__ import annotations

import collections
import uuid
from dataclasses import replace

import pytest

from streams.config import Settings
from streams.simulator import Scenario, SimEvent
from streams.simulator.publish import Publisher
from streams.topics import ensure_topics
from tests.conftest import unique
from tests.expected import comparable, expected_regions
from tests.helpers import read_all
from tests.worker import Worker

DAY = 86_400_000
SCALE = 0.01


def scenario_events(months: int = 6) -> list[SimEvent]:
    return list(Scenario.load(scale=SCALE, bad_share=0.02, duplicate_share=0.02).events(months))


def with_late_and_out_of_order(events: list[SimEvent]) -> list[SimEvent]:
    """Two hand-made contributions after the stream: one 60 days behind the clock (beyond the 45-day allowed
    lateness: dead letter 'late'), one 10 days behind (applied)."""
    end = max(e.occurred_at for e in events)
    registered = [e for e in events if e.record_name == "Registration" and e.expect == "processed"]
    who_late, who_ok = registered[0], registered[1]
    base = {"region_code": who_late.record["region_code"], "amount_idr": 16_800, "funding_source": "APBD_PROVINCE"}
    late = SimEvent("Contribution", who_late.key, {**base, "event_id": str(uuid.uuid4()), "occurred_at": end - 60 * DAY,
                                                   "nik": who_late.key, "period": "2099-01"}, "dead_letter", "late")
    ok = SimEvent("Contribution", who_ok.key, {**base, "region_code": who_ok.record["region_code"],
                                               "event_id": str(uuid.uuid4()), "occurred_at": end - 10 * DAY,
                                               "nik": who_ok.key, "period": "2025-06"})
    return events + [late, ok]


def publish(settings: Settings, events: list[SimEvent]) -> None:
    ensure_topics(settings)
    publisher = Publisher(settings)
    for event in events:
        publisher.send(event)
    publisher.flush()


def wait_exact(worker: Worker, events: list[SimEvent], timeout: float = 120) -> dict:
    worker.wait(lambda: sum(worker.events_accounted().values()) >= len(events), timeout, "every record accounted")
    expected = expected_regions(events, scale=SCALE)
    try:
        worker.wait(lambda: {c: comparable(v) for c, v in worker.regions().items()} == expected, 60,
                    "region tables to equal the independent fold")
    except AssertionError:
        got = {c: comparable(v) for c, v in worker.regions().items()}
        assert got == expected  # shows the difference
    return expected


@pytest.fixture(scope="module")
def run(kafka, registry, tmp_path_factory):
    """One seeded scenario published to its own topics, processed by one worker."""
    tmp = tmp_path_factory.mktemp("topology")
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=3, state_dir=tmp / "state",
                        app_id=unique("app-"), target_scale=SCALE)
    events = with_late_and_out_of_order(scenario_events())
    publish(settings, events)
    worker = Worker(settings, tmp / "worker.log")
    try:
        worker.start()
        expected = wait_exact(worker, events)
        yield settings, events, worker, expected
    finally:
        worker.stop()


def test_region_tables_equal_an_independent_fold(run):
    settings, events, worker, expected = run
    regions = worker.regions()
    assert {c: comparable(v) for c, v in regions.items()} == expected
    # the scenario's story is visible: Mahakam Ulu's enrolment stalled at month 3 with quota left; Kukar largest
    mahulu = regions["64.11"]
    stall = Scenario.load().month_bounds(Scenario.load().plans["64.11"].stall_from_month)[0]
    assert 0 < mahulu["registered"] and mahulu["last_registration_at"] < stall
    assert mahulu["quota"]["APBD_PROVINCE"]["remaining"] > 0
    assert max(regions.values(), key=lambda r: r["registered"])["code"] == "64.02"
    assert all(0 <= r["coverage_ratio"] <= 1.5 for r in regions.values())


def test_accounting_invariant_and_dead_letter_reasons(run):
    settings, events, worker, _ = run
    accounted = worker.events_accounted()
    truth = collections.Counter(e.expect for e in events)
    assert accounted == {"processed": truth["processed"], "duplicate": truth["duplicate"],
                         "dead_letter": truth["dead_letter"]}
    assert sum(accounted.values()) == len(events)  # consumed = processed + duplicate + dead-lettered
    reasons = collections.Counter(e.fault for e in events if e.expect == "dead_letter")
    metric = {dict(labels)["reason"]: value for (name, labels), value in worker.metrics().items()
              if name == "jamsostek_dead_letter_total"}
    assert metric == reasons
    assert reasons["late"] == 1


def test_dead_letters_keep_original_bytes_and_context_headers(run):
    settings, events, worker, _ = run
    dead = read_all(settings.kafka_bootstrap_servers, settings.topics.dead_letter)
    inputs = {}
    for topic in settings.topics.inputs:
        for r in read_all(settings.kafka_bootstrap_servers, topic):
            inputs[(topic, r.partition, r.offset)] = r
    assert len(dead) == sum(1 for e in events if e.expect == "dead_letter")
    for d in dead:
        headers = {k: v.decode() for k, v in d.headers}
        assert set(headers) >= {"dlq.reason", "dlq.topic", "dlq.partition", "dlq.offset", "dlq.error"}
        original = inputs[(headers["dlq.topic"], int(headers["dlq.partition"]), int(headers["dlq.offset"]))]
        assert (d.key, d.value) == (original.key, original.value)
        assert not any(e.key in headers["dlq.error"] for e in events[:50])  # details never carry a NIK


def test_no_nik_in_internal_topics_or_changelogs(run, kafka):
    settings, events, worker, _ = run
    from kafka import KafkaConsumer
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap)
    internal = [t for t in consumer.topics() if t.startswith(settings.app_id)]
    consumer.close()
    assert any("participants-changelog" in t for t in internal) and any("participant-events" in t for t in internal)
    niks = {e.key.encode() for e in events if e.expect == "processed"}
    for topic in internal:
        for r in read_all(kafka.bootstrap, topic):
            blob = (r.key or b"") + (r.value or b"")
            assert not any(nik in blob for nik in niks), f"raw NIK found in {topic}"


def test_web_views(run):
    import requests
    settings, events, worker, _ = run
    one = requests.get(worker.url("/regions/64.72/"), timeout=5)
    assert one.ok and one.json()["name"] == "Samarinda"
    missing = requests.get(worker.url("/regions/99.99/"), timeout=5)
    assert missing.status_code == 404 and "Traceback" not in missing.text
    assert requests.get(worker.url("/healthz/"), timeout=5).json()["status"] == "ok"
    gauges = worker.metrics()
    assert gauges[("jamsostek_region_registered", (("region", "64.72"),))] == worker.regions()["64.72"]["registered"]


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_restart_recovers_identical_tables_from_changelogs(kafka, registry, tmp_path, store):
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=3, state_dir=tmp_path / "state",
                        app_id=unique("app-"), target_scale=SCALE, store=store)
    events = list(Scenario.load(scale=SCALE, duplicate_share=0.02).events(4))
    first, rest = events[: len(events) // 2], events[len(events) // 2:]
    publish(settings, first)
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        worker.start()
        wait_exact(worker, first)
        before = worker.regions()
    finally:
        worker.stop()
    if store == "memory":
        assert not any((settings.state_dir / "faust").rglob("*.sst"))
    else:
        assert any((settings.state_dir / "faust").rglob("*.sst")) or any((settings.state_dir / "faust").rglob("*.log"))
    # a new process: tables come back from the changelogs (memory) or local RocksDB + changelog (rocksdb)
    worker = Worker(settings, tmp_path / "worker2.log")
    try:
        worker.start()
        worker.wait(lambda: worker.regions() == before, 90, "tables recovered after restart")
        publish(settings, rest)  # and it goes on exactly from where it stopped
        worker.wait(lambda: sum(worker.events_accounted().values()) >= len(rest), 120, "rest accounted")
        expected = expected_regions(events, scale=SCALE)
        worker.wait(lambda: {c: comparable(v) for c, v in worker.regions().items()} == expected, 60, "exact after restart")
    finally:
        worker.stop()
