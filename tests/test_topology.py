"""The Faust topology against the real broker and registry: exact tables, dead letters, duplicates, late events,
the accounting invariant, no NIK in internal topics, and recovery from changelogs after a restart."""
from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
from datetime import datetime, timezone
import time
import uuid

import pytest

from streams.config import Settings
from streams.simulator import Scenario, SimEvent
from streams.simulator.publish import Publisher
from streams.topics import ensure_topics
from tests.conftest import unique
from tests.expected import comparable, expected_alerts, expected_regions
from tests.helpers import WebhookReceiver, assigned_members, end_offsets, niks_in, read_all, stream_messages
from tests.worker import Sink, Worker

DAY = 86_400_000
SCALE = 0.01


def scenario_events(months: int = 8) -> list[SimEvent]:
    return list(Scenario.load(scale=SCALE, bad_share=0.02, duplicate_share=0.02).events(months))


def with_late_and_out_of_order(events: list[SimEvent]) -> list[SimEvent]:
    """Two hand-made contributions after the stream: one 60 days behind the clock (beyond the 45-day allowed
    lateness: counted as late, applied like any other), one 10 days behind (not late)."""
    end = max(e.occurred_at for e in events)
    registered = [e for e in events if e.record_name == "Registration" and e.expect == "processed"]
    who_late, who_ok = registered[0], registered[1]
    base = {"region_code": who_late.record["region_code"], "amount_idr": 16_800, "funding_source": "APBD_PROVINCE"}
    late = SimEvent("Contribution", who_late.key, {**base, "event_id": str(uuid.uuid4()), "occurred_at": end - 60 * DAY,
                                                   "nik": who_late.key, "period": "2025-07"})
    ok = SimEvent("Contribution", who_ok.key, {**base, "region_code": who_ok.record["region_code"],
                                               "event_id": str(uuid.uuid4()), "occurred_at": end - 10 * DAY,
                                               "nik": who_ok.key, "period": "2025-06"})
    return events + [late, ok]


def publish(settings: Settings, events: list[SimEvent], partition: int | None = None) -> None:
    """``partition``: all to this partition (otherwise by key, as upstream publishers do)."""
    ensure_topics(settings)
    publisher = Publisher(settings)
    for event in events:
        publisher.send(event, partition)
    publisher.flush()


def wait_exact(worker: Worker, events: list[SimEvent], timeout: float = 120) -> dict:
    worker.wait(lambda: sum(worker.events_accounted().values()) >= len(events), timeout, "every record accounted")
    expected = expected_regions(events, scale=SCALE)
    assert_regions_soon(worker, expected)
    return expected


def assert_regions_soon(worker: Worker, expected: dict, timeout: float = 60) -> None:
    """The worker's /regions equals ``expected`` within ``timeout``; otherwise fail showing the difference."""
    try:
        worker.wait(lambda: worker.comparable_regions() == expected, timeout,
                    "region tables to equal the independent fold")
    except AssertionError:
        got = worker.comparable_regions()
        diff = {c: (got.get(c), expected[c]) for c in expected if got.get(c) != expected[c]}
        raise AssertionError(f"regions differ from the fold: {diff}\n{worker.tail(60)}") from None


@pytest.fixture(scope="module")
def run(kafka, registry, tmp_path_factory):
    """One seeded scenario published to its own topics, processed by one worker."""
    tmp = tmp_path_factory.mktemp("topology")
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=3, state_dir=tmp / "state",
                        app_id=unique("app-"), target_scale=SCALE)
    events = with_late_and_out_of_order(scenario_events())
    publish(settings, events)
    webhook = WebhookReceiver(fail_first=2)  # the first two POSTs are refused: the alert sink must retry
    worker = Worker(settings, tmp / "worker.log")
    # the alert sink (in the `sink` process) delivers what the worker puts on the alerts topic
    sink = Sink(settings.model_copy(update={"warehouse_url": f"sqlite:///{tmp / 'warehouse.db'}"}), tmp / "sink.log",
                ALERT_WEBHOOK_URL=webhook.url)
    try:
        worker.start()
        sink.start()
        expected = wait_exact(worker, events)
        worker.webhook, worker.sink = webhook, sink
        yield settings, events, worker, expected
    finally:
        sink.stop()
        worker.stop()
        webhook.close()


def test_region_tables_equal_an_independent_fold(run):
    settings, events, worker, expected = run
    regions = worker.regions()
    assert {c: comparable(v) for c, v in regions.items()} == expected
    # the scenario's story is visible: Mahakam Ulu's enrolment stalled at month 3 with quota left; Kutai Timur largest
    mahulu = regions["64.11"]
    stall = Scenario.load().month_bounds(Scenario.load().plans["64.11"].stall_from_month)[0]
    assert 0 < mahulu["registered"] and mahulu["last_registration_at"] < stall
    assert mahulu["quota"]["APBD_PROVINCE"]["remaining"] > 0
    assert max(regions.values(), key=lambda r: r["registered"])["code"] == "64.08"  # Kutai Timur, its own programme
    assert all(0 <= r["coverage_ratio"] <= 1.5 for r in regions.values())
    # the comparison covers what matters: claims turnaround measured, people in arrears and ended memberships
    assert sum(t["paid"] for v in expected.values() for t in v["claims_turnaround"].values()) > 0
    assert sum(c["ended"] + sum(c["in_arrears"].values()) for v in expected.values() for c in v["cohorts"].values()) > 0


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
    assert "late" not in reasons  # late data is data
    late = {dict(labels)["topic"]: value for (name, labels), value in worker.metrics().items()
            if name == "jamsostek_late_events_total"}
    assert late == {settings.topics.contributions: 1}, late
    # the simulator publishes with the contract's partitioner (murmur2): no record is counted as misplaced
    assert not [(labels, v) for (name, labels), v in worker.metrics().items()
                if name == "jamsostek_misplaced_records_total" and v]
    regions = worker.regions()
    assert sum(r["late"]["events"] for r in regions.values()) == 1
    assert regions[events[-2].record["region_code"]]["late"]["events"] == 1


def test_the_paid_claims_metric_counts_what_the_regions_show(run):
    """``jamsostek_claims_paid_idr`` per region and programme: the rupiah of the PAID claims in each region's view
    (the region stage counts them from the summed deltas it applies)."""
    settings, events, worker, _ = run
    metric = {(dict(labels)["region"], dict(labels)["program"]): value
              for (name, labels), value in worker.metrics().items() if name == "jamsostek_claims_paid_idr_total"}
    shown = {(code, program): statuses["PAID"]["amount_idr"]
             for code, view in worker.regions().items() for program, statuses in view["claims"].items()
             if "PAID" in statuses}
    assert shown and metric == shown


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
    niks = {e.key for e in events if e.expect == "processed"}
    inputs = b"\n".join(r.key for r in read_all(kafka.bootstrap, settings.topics.registrations))
    assert niks_in(inputs, niks), "the scan finds NIKs where they are allowed (input keys)"
    scanned = 0
    for topic in internal:
        blob = b"\n".join((r.key or b"") + b" " + (r.value or b"") for r in read_all(kafka.bootstrap, topic))
        assert not niks_in(blob, niks), f"raw NIK found in {topic}"
        scanned += len(blob)
    assert scanned > 1_000_000


def test_sigusr1_reports_where_fetching_stands(run):
    """``kill -USR1``: after the tasks, the consumer thread's tasks (aiokafka's fetch routine among them), then each
    input partition's fetch state: aiokafka's position at the end of what was published, not paused, beside
    Faust's read and committed offsets."""
    settings, events, worker, _ = run
    before = len(worker.log.read_text(errors="replace"))
    worker.dump_stacks()
    worker.wait(lambda: "--- fetch state" in worker.log.read_text(errors="replace")[before:], 30, "the dump")
    worker.wait(lambda: "_fetch_requests_routine" in worker.log.read_text(errors="replace")[before:], 30, "the dump")
    dump = worker.log.read_text(errors="replace")[before:]
    for (topic, partition), end in end_offsets(settings.kafka_bootstrap_servers, settings.topics.inputs).items():
        line = re.search(rf"^{re.escape(topic)}\[{partition}\] position=(\d+) paused=False .* read=\S+ committed=\S+ ",
                         dump, re.MULTILINE)
        assert line and int(line[1]) == end, (topic, partition, end, line and line[0])
    assert "flow_active=True" in dump and "task_done=False" in dump


def test_web_views(run):
    import requests
    settings, events, worker, _ = run
    one = requests.get(worker.url("/regions/64.72/"), timeout=5)
    assert one.ok and one.json()["name"] == "Samarinda"
    # the contract's spelling, without the trailing slash, answers the same
    assert requests.get(worker.url("/regions/64.72"), timeout=5).json() == one.json()
    assert requests.get(worker.url("/regions"), timeout=5).json() == requests.get(worker.url("/regions/"), timeout=5).json()
    assert requests.get(worker.url("/healthz"), timeout=5).ok
    assert '<canvas id="chart"' in requests.get(worker.url("/"), timeout=5).text
    missing = requests.get(worker.url("/regions/99.99/"), timeout=5)
    assert missing.status_code == 404 and "Traceback" not in missing.text
    # the live pages' stream: server-sent events, the /regions list at once (each change after it: the quota test)
    assert requests.get(worker.url("/regions/stream?every=x"), timeout=5).status_code == 400
    with requests.get(worker.url("/regions/stream"), stream=True, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        first = next(stream_messages(response))  # (the figures; an idle clock's tick may move the rest)
        assert {view["code"]: comparable(view) for view in first} == worker.comparable_regions()
    assert requests.get(worker.url("/healthz/"), timeout=5).json()["status"] == "ok"
    assert requests.get(worker.url("/livez"), timeout=5).json() | {"app": None} == \
        {"status": "ok", "app": None, "loop": settings.event_loop,  # uvloop unless configured otherwise
         "gc": [700, 10, settings.gc_full_every]}  # CPython's young thresholds, rare full collections
    worker.wait(worker.ready_to_work, 60, "the worker ready")
    # the alert schema and the three inputs' writer schemas, asked for at start (streams/serde.py ``warm``)
    assert re.search(r"schema registry warmed: schema ids \[\d+, \d+, \d+, \d+\]", worker.log.read_text())
    assert requests.get(worker.url("/readyz/"), timeout=5).json()["checks"] == {
        "assigned": True, "recovered": True, "read_model": True, "lag_known": True}
    gauges = worker.metrics()
    regions = worker.regions()
    assert gauges[("jamsostek_region_registered", (("region", "64.72"),))] == regions["64.72"]["registered"]

    def protection_gauges_follow_the_tables() -> bool:  # (the gauges refresh every second)
        cohorts, got = worker.regions()["64.72"]["cohorts"].values(), worker.metrics()
        return (got[("jamsostek_region_protected", (("region", "64.72"),))] == sum(c["protected"] for c in cohorts)
                and got[("jamsostek_region_in_arrears", (("months", "1"), ("region", "64.72")))]
                == sum(c["in_arrears"]["1"] for c in cohorts))
    worker.wait(protection_gauges_follow_the_tables, 30, "the protection gauges to equal /regions")
    # the correctly named quota gauge and its deprecated twin carry the same figures
    quota = {k[1]: v for k, v in gauges.items() if k[0] == "jamsostek_region_quota"}
    assert quota and quota == {k[1]: v for k, v in gauges.items() if k[0] == "jamsostek_region_quota_total"}
    worker.wait(lambda: worker.metrics()[("jamsostek_stream_clock_seconds", ())]
                == worker.regions()["64.72"]["clock_ms"] / 1000, 30, "the stream clock gauge to follow the tables")
    # one series per input partition this worker holds (all: it is alone), and only the worker's own series
    lag = {dict(k[1])["partition"] for k in gauges if k[0] == "jamsostek_consumer_lag_records"}
    assert lag == {str(p) for p in range(settings.topic_partitions)}
    assert not any(name.startswith("jamsostek_sink_") for name, _ in gauges)


def first_half_processed(kafka, registry, tmp_path, months: int, **changes):
    """A seeded scenario of ``months`` on topics of its own; a worker processes its first half exactly, then
    stops. Returns (settings, events, first half, rest, the worker's comparable regions before the stop): every
    counted figure (the stream clock and what follows it — evaluation, alerts — move with wall time as idle
    sources are noticed, so a snapshot of those can be overtaken before the stop: not compared)."""
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=3, state_dir=tmp_path / "state",
                        app_id=unique("app-"), target_scale=SCALE, **changes)
    events = list(Scenario.load(scale=SCALE, duplicate_share=0.02).events(months))
    first, rest = events[: len(events) // 2], events[len(events) // 2:]
    publish(settings, first)
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        worker.start()
        wait_exact(worker, first)
        before = worker.comparable_regions()
    finally:
        worker.stop()
    return settings, events, first, rest, before


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_restart_recovers_identical_tables_from_changelogs(kafka, registry, tmp_path, store):
    settings, events, first, rest, before = first_half_processed(kafka, registry, tmp_path, 4, store=store)
    if store == "memory":
        assert not any((settings.state_dir / "faust").rglob("*.sst"))
    else:
        assert any((settings.state_dir / "faust").rglob("*.sst")) or any((settings.state_dir / "faust").rglob("*.log"))
        # every table partition's database was opened with the bounded memory settings (RocksDB's OPTIONS files)
        options = [path.read_text() for path in (settings.state_dir / "faust").rglob("OPTIONS-*")]
        assert options and all(f"write_buffer_size={settings.rocksdb_write_buffer_mb << 20}\n" in o for o in options)
    # the participant states reach their changelog in batches (faust_fixes.set_durably) as a table set would
    # write them: every participant of the first half, on the partition of the participant events that changed it
    from streams.ingest import pe_partition
    from streams.rules import participant_key
    records = read_all(kafka.bootstrap, f"{settings.app_id}-participants-changelog")
    assert {json.loads(r.key) for r in records} == {participant_key(e.key, settings.pseudonym_key_bytes())
                                                  for e in first}
    assert all(r.partition == pe_partition(json.loads(r.key), 3) and isinstance(json.loads(r.value), dict)
               for r in records)
    # a new process: tables come back from the changelogs (memory) or local RocksDB + changelog (rocksdb)
    worker = Worker(settings, tmp_path / "worker2.log")
    try:
        worker.start()
        worker.wait(lambda: worker.comparable_regions() == before, 90, "tables recovered after restart")
        publish(settings, rest)  # and it goes on exactly from where it stopped
        worker.wait(lambda: sum(worker.events_accounted().values()) >= len(rest), 120, "rest accounted")
        assert_regions_soon(worker, expected_regions(events, scale=SCALE))
    finally:
        worker.stop()


def test_undecodable_changelog_records_are_dead_lettered_and_the_restore_completes(kafka, registry, tmp_path):
    """Records no worker wrote, on the participant and region changelogs (a key that is not JSON, a value that is
    not JSON, a value that is JSON but not an object): a new worker on an empty state directory restores the
    rest and dead-letters each with its place (it waited for ever before), with each store and restore path in
    turn: the memory store in bulk and by Faust's own loop, RocksDB in bulk. Each key keeps its earlier state:
    the tables are as before, and the last worker goes on exact."""
    from confluent_kafka import Producer

    settings, events, first, rest, before = first_half_processed(kafka, registry, tmp_path, 3)
    participants, regions = (f"{settings.app_id}-{name}-changelog" for name in ("participants", "regions"))
    someone = read_all(kafka.bootstrap, participants)[-1]
    region = next(r for r in read_all(kafka.bootstrap, regions) if r.key == b'"64.08"')
    bad = [(participants, someone.partition, b"not json", b'{"paid_through": 1}'),
           (participants, someone.partition, someone.key, b'{"paid_through": '),
           (participants, someone.partition, someone.key, b"[1, 2]"),
           (regions, region.partition, region.key, b"\xff\xfe")]
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    placed = []
    for topic, partition, key, value in bad:
        producer.produce(topic, key=key, value=value, partition=partition,
                         on_delivery=lambda err, msg: placed.append((msg.topic(), msg.partition(), msg.offset())))
    producer.flush(30)
    assert len(placed) == len(bad)
    variants = [("memory", True), ("memory", False), ("rocksdb", True)]
    for n, (store, bulk) in enumerate(variants, start=1):
        worker = Worker(settings, tmp_path / f"restore{n}.log", STATE_DIR=str(tmp_path / f"empty{n}"), STORE=store,
                        BULK_RESTORE="true" if bulk else "false")
        try:
            worker.start(timeout=120)  # ready: the tables are restored
            worker.wait(lambda: worker.comparable_regions() == before, 60, f"{store}: tables as before the bad records")
            # each restore dead-letters each bad record once: its bytes, reason and place
            dead = read_all(kafka.bootstrap, settings.topics.dead_letter, expected=n * len(bad))
            headers = [dict(record.headers) for record in dead]
            assert {h["dlq.reason"] for h in headers} == {b"undecodable_changelog"}
            assert collections.Counter((h["dlq.topic"].decode(), int(h["dlq.partition"]), int(h["dlq.offset"]))
                                       for h in headers) == collections.Counter(placed * n)
            assert sorted(r.value for r in dead) == sorted(value for *_, value in bad * n)
            assert worker.metrics()[("jamsostek_dead_letter_total", (("reason", "undecodable_changelog"),))] \
                == len(bad)
            text = worker.log.read_text(errors="replace")
            assert ("Restored" in text) == bulk and "Error in recovery" not in text
            if n == len(variants):
                publish(settings, rest)  # and it goes on exactly
                worker.wait(lambda: sum(worker.events_accounted().values()) >= len(rest), 120, "rest accounted")
                assert_regions_soon(worker, expected_regions(events, scale=SCALE))
        finally:
            worker.stop()


def test_a_quota_change_in_the_reference_file_reaches_regions_without_a_restart(kafka, registry, tmp_path):
    """An APBD-P revision is a dated entry added to the reference file; the running worker shows the quota in
    force at the stream's clock within seconds, and a redeploy is not needed. The live pages' stream
    (``GET /regions/stream``) pushes it, though no record came; and the worker stops cleanly with it open."""
    import requests
    from streams.reference import DATA_FILE
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=1, state_dir=tmp_path / "state",
                        app_id=unique("app-"), target_scale=SCALE)
    events = list(Scenario.load(scale=SCALE).events(2))
    publish(settings, events)
    path = tmp_path / "regions.toml"
    path.write_text(DATA_FILE.read_text())
    worker = Worker(settings, tmp_path / "worker.log", REFERENCE_FILE=str(path))
    try:
        worker.start()
        wait_exact(worker, events)
        total = lambda: worker.regions()["64.72"]["quota"]["APBD_REGENCY"]["total"]
        assert total() == round(19_000 * SCALE)
        # Samarinda's city budget is revised to 21,000 places from January 2025 (inside the stream's months); the
        # live pages' stream pushes it though no record came (the views changed)
        followed = requests.get(worker.url("/regions/stream/?every=0.5"), stream=True, timeout=30)
        quotas = (next(v for v in views if v["code"] == "64.72")["quota"]["APBD_REGENCY"]["total"]
                  for views in stream_messages(followed, 60))
        assert next(quotas) == round(19_000 * SCALE)
        target = "target = { VULNERABLE_WORKER = 32000, NON_CIVIL_SERVANT = 11632 }\n"
        path.write_text(DATA_FILE.read_text().replace(target, target + '[[region.quota_change]]\n'
                                                      'funder = "APBD_REGENCY"\nfrom = "2025-01"\nplaces = 21000\n'))
        assert round(21_000 * SCALE) in quotas  # (a message between, of the idle clock, keeps the old one)
        assert total() == round(21_000 * SCALE)
        assert worker.regions()["64.72"]["quota"]["APBD_REGENCY"]["budget_idr"] == round(21_000 * SCALE) * 16_800 * 12
        # and then not renewed at all (0 places from January 2025): the city-funded members leave the programme
        held = worker.regions()["64.72"]["quota"]["APBD_REGENCY"]["used"]
        path.write_text(path.read_text().replace("places = 21000", "places = 0"))
        worker.wait(lambda: worker.regions()["64.72"]["cohorts"]["VULNERABLE_WORKER"]["exited"].get("budget_ended")
                    == held > 0, 30, "the members of the budget not renewed counted as left")
        assert worker.regions()["64.72"]["quota"]["APBD_REGENCY"]["used"] == 0
        # a worker stopping with a stream open closes it and stops cleanly, not after aiohttp's 60 s shutdown
        # timeout (which the stop would wait out before its SIGKILL)
        with followed:
            stopping = time.monotonic()
            os.killpg(worker.proc.pid, signal.SIGTERM)
            for _ in quotas:  # until the stream ends
                pass
            ended = time.monotonic() - stopping
        assert worker.proc.wait(60) == 0
        assert ended < 45, f"the stream stayed open {ended:.0f} s after the stop"
    finally:
        worker.stop()


def test_two_workers_split_the_work_and_both_answer_for_every_region(kafka, registry, tmp_path):
    """Two workers in one group: partitions are shared between them, yet either one's /regions shows all 10
    regions with exact totals (every worker follows the region changelog: streams/read_model.py)."""
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=4, state_dir=tmp_path / "a",
                        app_id=unique("app-"), target_scale=SCALE)
    events = list(Scenario.load(scale=SCALE, duplicate_share=0.01).events(4))
    ensure_topics(settings)
    # the default idleness (30 s, not the harness's 10 s): the join's pause must not make sources look idle
    a = Worker(settings, tmp_path / "a.log", CLOCK_IDLE_SECONDS="30")
    b = Worker(settings, tmp_path / "b.log", STATE_DIR=str(tmp_path / "b"), CLOCK_IDLE_SECONDS="30")
    half = len(events) // 2
    try:
        a.start()
        publish(settings, events[:half])
        a.wait(lambda: sum(a.events_accounted().values()) > half // 4, 60, "the first worker under way")
        b.start()  # joins mid-stream: partitions are revoked from a while it is processing
        # a batching worker may finish the first half before b is in: the rest is published once b holds partitions
        b.wait(lambda: assigned_members(settings.kafka_bootstrap_servers, settings.app_id) == 2, 120,
               "the second worker assigned partitions")
        publish(settings, events[half:])
        accounted = lambda: sum(a.events_accounted().values()) + sum(b.events_accounted().values())
        # at-least-once: records in flight during the join's rebalance may be consumed twice (counted twice);
        # the tables below must still be exact (event-id dedup, replay guard on region deltas)
        a.wait(lambda: accounted() >= len(events), 180, "both workers together account for every record")
        assert a.events_accounted() and b.events_accounted(), "both workers processed a share"
        expected = expected_regions(events, scale=SCALE)
        for w in (a, b):
            assert_regions_soon(w, expected, 90)
        # rebalance, two producers, interleaved partitions: still exactly the sequential fold's alerts
        assert_alerts_equal_the_sequential_fold(settings, a, events, SCALE)
        # each input partition's lag is shown by the worker that holds it, and only by it (revoked series go)
        def lag_series(w: Worker) -> set:
            return {(dict(labels)["topic"], dict(labels)["partition"]) for name, labels in w.metrics()
                    if name == "jamsostek_consumer_lag_records"}
        a.wait(lambda: lag_series(a).isdisjoint(lag_series(b))
               and len(lag_series(a) | lag_series(b)) == len(settings.topics.inputs) * settings.topic_partitions,
               30, "one lag series per input partition across the two workers")
    finally:
        a.stop()
        b.stop()


def pipeline_alerts(settings: Settings, worker: Worker) -> tuple[list[dict], dict[str, dict]]:
    """Every RegionAlert on the alerts topic (decoded), and the regions as the worker shows them."""
    from streams.serde import AvroSerde
    serde = AvroSerde(settings.schema_registry_url)
    records = read_all(settings.kafka_bootstrap_servers, settings.topics.region_alerts)
    return [serde.decode(r.value, "RegionAlert") | {"_key": r.key} for r in records], worker.regions()


def assert_alerts_equal_the_sequential_fold(settings: Settings, worker: Worker, events, scale: float) -> list[dict]:
    """The distributed pipeline raised exactly the alerts a one-event-at-a-time fold raises, at the same days."""
    from streams.stall import DAY_MS, iso_day
    # once the stream is quiet, idle sources stop holding the clock back: every region reaches the last day
    last = iso_day(max(e.occurred_at for e in events if e.expect == "processed") // DAY_MS)
    worker.wait(lambda: all((r["evaluated_through"] or "") >= last for r in worker.regions().values()), 120,
                f"every region evaluated through {last}")
    alerts, regions = pipeline_alerts(settings, worker)
    day = lambda iso: int(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp() * 1000) // DAY_MS
    until = min(day(r["evaluated_through"]) for r in regions.values())
    first = {code: day(r["evaluating_since"]) for code, r in regions.items()}
    want = expected_alerts(events, scale, first, until)
    got = sorted({(a["alert_id"], a["status"], a["occurred_at"]) for a in alerts if a["occurred_at"] // DAY_MS <= until})
    assert got == want
    return alerts


def test_stall_alerts_equal_the_fold_and_reach_every_channel(run):
    """Mahakam Ulu stalls (registrations stop in April, contributions in July); Berau pauses in May-June and
    recovers. The alerts equal the sequential fold, and go out on the topic, the gauge, the webhook (retried
    in Alertmanager's format) and the log, with no NIK anywhere."""
    settings, events, worker, _ = run
    alerts = assert_alerts_equal_the_sequential_fold(settings, worker, events, SCALE)
    by = collections.defaultdict(list)
    for a in alerts:
        by[(a["region_code"], a["kind"])].append(a["status"])
    assert "FIRING" in by[("64.11", "NO_REGISTRATIONS")] and set(by[("64.11", "CONTRIBUTIONS_STOPPED")]) == {"FIRING"}
    assert by[("64.03", "NO_REGISTRATIONS")][-2:] == ["FIRING", "RESOLVED"]  # Berau recovers
    # contributions judged per funder: the province's late March transfer to Kutai Kartanegara alerts in March and
    # resolves in April, while its regency budget and employers paid; PPU's budget pays a quarter ahead: no alert
    stopped = {(a["region_code"], a["details"]["funder"], a["status"]): a["occurred_at"] for a in alerts
               if a["kind"] == "CONTRIBUTIONS_STOPPED"}
    month = lambda ms: datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m")
    assert month(stopped["64.02", "APBD_PROVINCE", "FIRING"]) == "2025-03"
    assert month(stopped["64.02", "APBD_PROVINCE", "RESOLVED"]) == "2025-04"
    assert not [k for k in stopped if k[:2] in (("64.02", "APBD_REGENCY"), ("64.09", "APBD_REGENCY"))]
    # Bontang enrols nobody in June-July, between two of the province's tranches: silence, not a stall (its
    # thin enrolment may stall inside a tranche; an alert then resolves when the tranche closes)
    bontang = [(a["status"], month(a["occurred_at"])) for a in alerts
               if a["region_code"] == "64.74" and a["kind"] == "NO_REGISTRATIONS"]
    assert not [m for status, m in bontang if status == "FIRING" and m in ("2025-06", "2025-07")]
    assert not bontang or (bontang[-1][0] == "RESOLVED" and bontang[-1][1] <= "2025-06")  # none open over it
    assert all(a["_key"] == a["region_code"].encode() for a in alerts)
    regions = worker.regions()
    assert regions["64.11"]["stalled"] and "CONTRIBUTIONS_STOPPED" in {a["kind"] for a in regions["64.11"]["alerts"]}
    assert worker.metrics()[("jamsostek_region_stalled", (("region", "64.11"),))] == 1
    firing = {dict(labels)["kind"]: dict(labels)["severity"] for name, labels in worker.metrics()
              if name == "jamsostek_region_alert_firing" and dict(labels)["region"] == "64.11"}
    assert firing == {a["kind"]: a["severity"].lower() for a in regions["64.11"]["alerts"]}
    assert firing["CONTRIBUTIONS_STOPPED"] == "critical"
    # the webhook: every transition arrives (after two refusals), in Alertmanager's webhook format
    worker.wait(lambda: len(worker.webhook.received) == len(alerts), 60, "every alert delivered to the webhook")
    assert worker.webhook.refused == 2
    # each transition once, and per region (one partition) in the order the worker published them
    from sinks.alerts.webhook import alertmanager_payload

    def per_region(payloads) -> dict[str, list]:
        out = collections.defaultdict(list)
        for p in payloads:
            out[p["alerts"][0]["labels"]["region"]].append((p["alerts"][0]["fingerprint"], p["status"]))
        return dict(out)
    assert per_region(worker.webhook.received) == per_region(alertmanager_payload(a) for a in alerts)
    sink_metrics = worker.sink.metrics()
    assert sink_metrics[("jamsostek_alert_webhook_deliveries_total", ())] == len(alerts)
    assert not any(name.startswith("jamsostek_alert_webhook") for name, _ in worker.metrics())
    posted = worker.webhook.received[0]
    assert posted["version"] == "4" and posted["alerts"][0]["labels"]["alertname"] == "RegionStalled"
    assert {p["alerts"][0]["labels"]["region"] for p in worker.webhook.received} == {a["region_code"] for a in alerts}
    log = worker.log.read_text()
    assert "ALERT FIRING CONTRIBUTIONS_STOPPED" in log and "Mahakam Ulu" in log
    blob = json.dumps(worker.webhook.received) + json.dumps([{k: str(v) for k, v in a.items()} for a in alerts])
    assert not niks_in(blob + log, {e.key for e in events})


def test_changelogs_are_compacted_with_small_segments(run, kafka):
    """The worker creates its changelogs compacted, with segments that close early enough for the broker to
    compact them (a restore then reads about the latest states, not every update): 1 MiB, Kafka's least."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
    settings, _, _, _ = run
    client = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for table in ("participants", "regions", "watermarks", "clocks"):
        resource = ConfigResource(ResourceType.TOPIC, f"{settings.app_id}-{table}-changelog")
        configs = {k: v.value for k, v in client.describe_configs([resource])[resource].result(30).items()}
        assert configs["cleanup.policy"] == "compact"
        assert configs["min.cleanable.dirty.ratio"] == "0.1"
        assert configs["segment.bytes"] == str(1 << 20), table
    # Compaction works on closed segments only; whether the run closed one depends on how much it wrote. So one
    # roll is forced: segments of this topic close after 100 ms, and each partition's newest record is appended
    # again (same key and value: nothing changes for a restore) until the broker has rolled. Then the cleaner
    # must shrink the log (waited for by condition: it runs every second on this broker, streams/launcher).
    from confluent_kafka import Producer
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    from kafka import KafkaConsumer, TopicPartition

    from tests.helpers import wait_for
    changelog = settings.regions_changelog
    roll = ConfigResource(ResourceType.TOPIC, changelog, incremental_configs=[
        ConfigEntry("segment.ms", "100", incremental_operation=AlterConfigOpType.SET)])
    client.incremental_alter_configs([roll])[roll].result(30)
    newest = {r.partition: r for r in read_all(kafka.bootstrap, changelog)}
    producer = Producer({"bootstrap.servers": kafka.bootstrap})

    def rolled(partition: int) -> bool:
        if len(list((kafka.workdir / "data" / f"{changelog}-{partition}").glob("*.log"))) >= 2:
            return True
        record = newest[partition]
        producer.produce(changelog, key=record.key, value=record.value, partition=partition)
        producer.flush(10)
        return False
    for partition in newest:
        wait_for(lambda: rolled(partition), 60, f"a segment roll of {changelog}-{partition}")
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap)
    written = sum(consumer.end_offsets([TopicPartition(changelog, p)
                                        for p in range(settings.topic_partitions)]).values())
    consumer.close()
    records = wait_for(lambda: (got := read_all(kafka.bootstrap, changelog)) and len(got) < written and got, 120,
                       f"the cleaner to compact {changelog} ({written} records written)")
    latest = {json.loads(r.key): json.loads(r.value) for r in records}  # a restore's view: the newest per key
    assert set(latest) == set(run[2].regions()) and len(latest) == 10


def test_worker_consumer_fetches_a_bounded_amount_per_partition(kafka, registry, tmp_path):
    """Faust's own driver builds the worker's aiokafka consumer with the configured per-partition fetch size (what a
    backlog holds buffered per partition), not Faust's 1 MiB."""
    from streams.app import create_app
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        state_dir=tmp_path / "state", app_id=unique("app-"), consumer_max_fetch_kb=192)
    app = create_app(settings).app

    async def fetch_size() -> int:  # aiokafka objects are made inside an event loop (not started: no connection)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        await consumer.stop()
        return consumer._max_partition_fetch_bytes
    assert asyncio.run(fetch_size()) == 192 << 10


def test_each_participant_partition_is_rechecked_for_idleness_by_its_owner_only(kafka, registry, tmp_path):
    """Two idle workers: every participant-events partition still gets the idle re-check ticks (a source's clock
    must move on wall time alone), and from one worker only — the one that holds it (each sent to every
    partition before: twice the ticks, each a participant-stage batch)."""
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=4, state_dir=tmp_path / "a",
                        app_id=unique("app-"), target_scale=SCALE)
    ensure_topics(settings)
    topic = f"{settings.app_id}-participant-events"
    period = 1.0  # CLOCK_IDLE_SECONDS / 3 (streams/participants.py), at least a second
    a = Worker(settings, tmp_path / "a.log", CLOCK_IDLE_SECONDS="3")
    b = Worker(settings, tmp_path / "b.log", STATE_DIR=str(tmp_path / "b"), CLOCK_IDLE_SECONDS="3")
    try:
        a.start()
        b.start()
        b.wait(lambda: assigned_members(settings.kafka_bootstrap_servers, settings.app_id) == 2, 120,
               "both workers assigned partitions")
        start = end_offsets(settings.kafka_bootstrap_servers, [topic])
        window = 12.0
        time.sleep(window)
        ends = end_offsets(settings.kafka_bootstrap_servers, [topic])
        assert assigned_members(settings.kafka_bootstrap_servers, settings.app_id) == 2, "no rebalance meanwhile"
    finally:
        a.stop()
        b.stop()
    ticks = collections.Counter(r.partition for r in read_all(settings.kafka_bootstrap_servers, topic)
                                if start[(topic, r.partition)] <= r.offset < ends[(topic, r.partition)]
                                for v in json.loads(r.value)["events"] if v["kind"] == "Tick" and v["src"] is None)
    assert set(ticks) == set(range(settings.topic_partitions)), ticks  # every partition re-checked
    # one sender: about a tick a period (timers only fall behind under load); two senders made ~2 a period
    assert max(ticks.values()) <= 1.5 * window / period + 2, ticks
