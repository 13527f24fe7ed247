"""The warehouse sink against the real broker, registry and databases (SQLite file and a real PostgreSQL server):
migrations both ways, exact facts vs an independent computation, re-delivery without duplicates, a database outage
mid-run, region snapshots from the stream tables, analyst queries, and no raw NIK anywhere it can reach."""
from __future__ import annotations

import collections
from dataclasses import replace
import hashlib
import hmac
import os
import re
import time

import pytest
from confluent_kafka import TopicPartition as CKTopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient
from sqlalchemy import create_engine, inspect, text

from sinks.warehouse import db
from sinks.warehouse.models import BREAKDOWN_VIEWS
from streams.config import DEV_PSEUDONYM_KEY, PROJECT_ROOT, Settings
from streams.simulator import Scenario
from tests.conftest import unique
from streams.occupation import normalise
from tests.expected import nik_cells, small_cells_hidden
from tests.helpers import committed_offsets, niks_in, read_all
from tests.test_topology import publish, wait_exact
from tests.worker import Sink, Worker

SCALE = 0.01
CONTRACT_TABLES = {"dim_region", "dim_program", "fact_registration", "fact_contribution", "fact_claim",
                   "region_snapshot", "region_alert"}
FACTS = {"Registration": "fact_registration", "Contribution": "fact_contribution", "Claim": "fact_claim"}


def expected_facts(events) -> dict[str, dict[str, tuple]]:
    """table -> event_id -> (participant_key, region, amount): first occurrence of every valid event, the
    pseudonym recomputed here from the HMAC definition (docs/domain.md), not with the project's function."""
    out: dict[str, dict[str, tuple]] = {t: {} for t in FACTS.values()}
    for e in events:
        if e.expect == "dead_letter":
            continue
        key = hmac.new(DEV_PSEUDONYM_KEY, e.key.encode(), hashlib.sha256).hexdigest()[:32]
        out[FACTS[e.record_name]].setdefault(e.record["event_id"],
                                             (key, e.record["region_code"], e.record.get("amount_idr")))
    return out


def warehouse_facts(url: str) -> dict[str, dict[str, tuple]]:
    engine = create_engine(url)
    out = {}
    with engine.connect() as conn:
        for table in FACTS.values():
            amount = "amount_idr" if table != "fact_registration" else "NULL"
            out[table] = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
                text(f"SELECT event_id, participant_key, region_code, {amount} FROM {table}"))}
    engine.dispose()
    return out


def sink_settings(base: Settings, url: str, **changes) -> Settings:
    return base.model_copy(update={"warehouse_url": url, "app_id": unique("app-"), "snapshot_interval_seconds": 1.0,
                                   "sink_batch_size": 500, "sink_max_backoff_seconds": 2.0, **changes})


def committed_total(settings: Settings) -> int:
    return committed_offsets(settings.kafka_bootstrap_servers, settings.sink_group_id)


def wait_facts(sink: Sink, url: str, expected, total_records: int, timeout: float = 120) -> None:
    sink.wait(lambda: committed_total(sink.settings) >= total_records, timeout, "offsets committed to the end")
    got = warehouse_facts(url)
    assert got == expected


@pytest.fixture(scope="module")
def published(kafka, registry, tmp_path_factory):
    """One seeded scenario (with bad records and duplicates) on its own topics."""
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=3,
                        state_dir=tmp_path_factory.mktemp("wh") / "state", target_scale=SCALE)
    # claims five times as often as the default: at this scale every claims partition then has records from the
    # first weeks, so no input partition waits to be declared idle and stall evaluation starts with the data
    # (the snapshot test needs alerts in four months; an empty partition held the clock until the data was read)
    sc = Scenario.load(scale=SCALE, bad_share=0.02, duplicate_share=0.03)
    events = list(replace(sc, claim_rates={p: 5 * r for p, r in sc.claim_rates.items()}).events(4))
    publish(settings, events)
    return settings, events


def test_migrations_upgrade_and_downgrade(warehouse_url):
    db.migrate(warehouse_url)
    engine = create_engine(warehouse_url)
    assert set(inspect(engine).get_table_names()) == CONTRACT_TABLES | {"alembic_version"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM dim_region")).scalar() == 10
        assert conn.execute(text("SELECT name FROM dim_region WHERE region_code='64.11'")).scalar() == "Mahakam Ulu"
    columns = {t: {c["name"] for c in inspect(engine).get_columns(t)} for t in CONTRACT_TABLES}
    assert not any("nik" in c for cols in columns.values() for c in cols)  # no NIK column anywhere
    assert {"event_id", "participant_key", "src_topic", "src_partition", "src_offset"} <= columns["fact_claim"]
    indexed = {tuple(i["column_names"]) for i in inspect(engine).get_indexes("fact_contribution")}
    assert ("region_code", "event_month") in indexed and ("participant_key",) in indexed
    db.downgrade(warehouse_url, "base")
    engine.dispose()
    engine = create_engine(warehouse_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    db.migrate(warehouse_url)  # and up again, idempotently twice
    db.migrate(warehouse_url)
    assert set(inspect(engine).get_table_names()) == CONTRACT_TABLES | {"alembic_version"}
    engine.dispose()


@pytest.mark.parametrize("n", [db.COPY_MIN_ROWS - 1, 3 * db.COPY_MIN_ROWS])
def test_upsert_keeps_facts_and_takes_newer_alerts_plain_and_staged(warehouse_url, n):
    """``db.upsert`` below and above the COPY-staging threshold (PostgreSQL stages through COPY, SQLite never):
    facts keep their first row, alerts take the newest transition and ignore an older one delivered again."""
    from datetime import datetime, timedelta, timezone
    from sinks.warehouse.models import fact_claim, region_alert
    db.migrate(warehouse_url)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def claim(i: int, amount: int) -> dict:
        return {"event_id": f"e{i}", "participant_key": f"k{i}", "region_code": "64.72", "occurred_at": t0,
                "event_month": "2026-01", "src_topic": "t", "src_partition": 0, "src_offset": i, "loaded_at": t0,
                "program": "JKK", "amount_idr": amount, "status": "PAID"}

    def alert(i: int, status: str, minutes: int) -> dict:
        return {"alert_id": f"a{i}", "region_code": "64.11", "kind": "NO_REGISTRATIONS", "severity": "WARNING",
                "status": status, "started_at": t0, "resolved_at": None, "details": "{}",
                "updated_at": t0 + timedelta(minutes=minutes)}
    engine = db.make_engine(warehouse_url)
    with engine.begin() as conn:
        # a duplicate inside the batch too: the first fact row wins, the newest alert row wins
        db.upsert(conn, fact_claim, [claim(i, 100) for i in range(n)] + [claim(0, 999)], update=False)
        db.upsert(conn, region_alert, [alert(i, "firing", 1) for i in range(n)] + [alert(0, "resolved", 2)],
                  update=True, newer="updated_at")
    with engine.begin() as conn:  # again: new amounts ignored; alerts: even rows newer, odd rows older
        db.upsert(conn, fact_claim, [claim(i, 5) for i in range(n + 1)], update=False)
        db.upsert(conn, region_alert, [alert(i, "resolved" if i % 2 == 0 else "stale", 3 if i % 2 == 0 else 0)
                                       for i in range(n)], update=True, newer="updated_at")
    with engine.connect() as conn:
        amounts = dict(conn.execute(text("SELECT event_id, amount_idr FROM fact_claim")).all())
        statuses = dict(conn.execute(text("SELECT alert_id, status FROM region_alert")).all())
    engine.dispose()
    assert amounts == {f"e{i}": 100 for i in range(n)} | {f"e{n}": 5}
    assert statuses == {f"a{i}": "resolved" if i % 2 == 0 else "firing" for i in range(n)}


def test_sink_writes_exact_facts_and_redelivery_adds_nothing(published, warehouse_url, tmp_path):
    base, events = published
    settings = sink_settings(base, warehouse_url)
    expected = expected_facts(events)
    total = len(events)
    sink = Sink(settings, tmp_path / "sink.log")
    try:
        sink.start()
        wait_facts(sink, warehouse_url, expected, total)
        outcomes = sink.outcomes("jamsostek_sink_records_total")
        assert outcomes == {"written": sum(1 for e in events if e.expect != "dead_letter"),
                            "skipped_invalid": sum(1 for e in events if e.expect == "dead_letter")}
    finally:
        sink.stop()
    # a consumer reset: every record is delivered again; the upserts keyed on event_id absorb them
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    partitions = [CKTopicPartition(t, p, 0) for t in settings.topics.inputs for p in range(settings.topic_partitions)]
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(settings.sink_group_id, partitions)])[
        settings.sink_group_id].result()
    assert committed_total(settings) == 0
    sink = Sink(settings, tmp_path / "sink2.log")
    try:
        sink.start()
        wait_facts(sink, warehouse_url, expected, total)
        assert sink.outcomes("jamsostek_sink_records_total")["written"] > 0  # it really did re-read them
    finally:
        sink.stop()
    # every fact traces back to its record
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT event_id, src_topic, src_partition, src_offset FROM fact_claim LIMIT 1")).one()
    engine.dispose()
    records = {(r.topic, r.partition, r.offset): r for r in read_all(settings.kafka_bootstrap_servers, row[1])}
    assert row[0].encode() in records[(row[1], row[2], row[3])].value


def test_a_written_batch_is_committed_without_waiting_for_the_next(published, warehouse_url, tmp_path):
    """The whole backlog is one batch (batch size = its records) and the linger is long: the batch is written and
    its offsets committed then, not once a next batch has been collected (a linger later on a quiet stream)."""
    base, events = published
    settings = sink_settings(base, warehouse_url, sink_batch_size=len(events), sink_linger_seconds=600.0)
    sink = Sink(settings, tmp_path / "sink.log")
    try:
        sink.start()
        wait_facts(sink, warehouse_url, expected_facts(events), len(events), timeout=90)
    finally:
        sink.stop()


def test_postgres_outage_past_max_poll_interval_loses_nothing_and_the_sink_stays_in_its_group(published, postgres,
                                                                                             tmp_path):
    """Stop PostgreSQL while the sink runs beside heavy mixed load, publish more, keep it down three times the
    sink's max.poll.interval (10 s here; the 10-minute drill at the default 300 s: DRILL_OUTAGE_SECONDS=600
    DRILL_MAX_POLL_SECONDS=300): the sink stays a member of its group with partitions (paused, still polling),
    says not ready (database) while alive, commits nothing past unwritten data, and ends complete and exact."""
    import requests

    from tests.helpers import MixedLoad, assigned_members
    max_poll = float(os.environ.get("DRILL_MAX_POLL_SECONDS", "10"))
    outage = float(os.environ.get("DRILL_OUTAGE_SECONDS", str(3 * max_poll)))
    base, first = published
    settings = sink_settings(base, postgres.create_database(unique("wh")), sink_max_poll_interval_seconds=max_poll,
                             topic_prefix=unique() + ".")  # own topics: this test publishes in two halves
    events = list(Scenario.load(scale=SCALE, seed=7, duplicate_share=0.02).events(4))
    half = len(events) // 2
    publish(settings, events[:half])
    sink = Sink(settings, tmp_path / "sink.log")
    probe = lambda path: requests.get(f"http://127.0.0.1:{sink.metrics_port}{path}", timeout=5)  # noqa: E731
    with MixedLoad(tmp_path, seconds=int(outage) + 300):
        try:
            sink.start()
            sink.wait(lambda: committed_total(settings) >= half, 120, "first half committed")
            sink.wait(lambda: probe("/readyz").status_code == 200, 60, "the sink ready")
            postgres.stop()
            down = time.monotonic()
            publish(settings, events[half:])
            retries = lambda: sink.metrics().get(("jamsostek_sink_retries_total", ()), 0)  # noqa: E731
            sink.wait(lambda: retries() >= 2, 60, "the sink retrying while the database is down")
            members, not_ready = set(), 0
            while time.monotonic() - down < outage:  # sample the whole outage
                assert sink.proc.poll() is None, sink.tail()
                members.add(assigned_members(settings.kafka_bootstrap_servers, settings.sink_group_id))
                ready = probe("/readyz")
                not_ready += ready.status_code == 503 and ready.json()["failing"] == ["database"]
                assert probe("/livez").ok
                time.sleep(1)
            assert members == {1}, f"the sink left its group during the outage: {members}\n{sink.tail()}"
            assert not_ready > 0
            assert committed_total(settings) == half  # nothing committed past unwritten data
            assert "partitions paused" in sink.log.read_text()
            postgres.start()
            wait_facts(sink, settings.warehouse_url, expected_facts(events), len(events))
            sink.wait(lambda: probe("/readyz").status_code == 200, 60, "the sink ready again")
            assert "partitions resumed" in sink.log.read_text()
        finally:
            if not postgres.proc:
                postgres.start()
            sink.stop()


def test_snapshots_follow_the_stream_tables_and_no_nik_anywhere(published, kafka, tmp_path):
    """Worker + sink on one SQLite warehouse: region snapshots equal the worker's /regions at the same clock;
    then every table, log line, metric and non-input topic is searched for the raw NIKs published."""
    base, events = published
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    settings = sink_settings(base, url)
    worker = Worker(settings, tmp_path / "worker.log")
    sink = Sink(settings, tmp_path / "sink.log")
    try:
        worker.start()
        sink.start()
        wait_exact(worker, events)  # the region tables are final
        wait_facts(sink, url, expected_facts(events), len(events))
        final = worker.regions()
        clock = next(iter(final.values()))["clock_ms"]

        def latest_snapshot():
            engine = create_engine(url)
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT region_code, registered, active, quota_used, as_of FROM region_snapshot s WHERE as_of ="
                    " (SELECT max(as_of) FROM region_snapshot)")).all()
            engine.dispose()
            return {r[0]: (r[1], r[2], r[3]) for r in rows}
        want = {c: (v["registered"], v["active"], sum(q["used"] for q in v["quota"].values())) for c, v in final.items()}
        sink.wait(lambda: latest_snapshot() == want, 60, "a snapshot at the final clock equal to /regions")
        # alerts: the warehouse holds every alert the worker raised, in its latest state
        from streams.serde import AvroSerde
        serde = AvroSerde(settings.schema_registry_url)
        latest = {}
        for r in read_all(settings.kafka_bootstrap_servers, settings.topics.region_alerts):
            alert = serde.decode(r.value, "RegionAlert")
            latest[alert["alert_id"]] = (alert["region_code"], alert["kind"], alert["status"].lower())
        assert latest, "the scenario raises stall alerts (Mahakam Ulu)"

        def warehouse_alerts():
            engine = create_engine(url)
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT alert_id, region_code, kind, status FROM region_alert")).all()
            engine.dispose()
            return {r[0]: (r[1], r[2], r[3]) for r in rows}
        sink.wait(lambda: warehouse_alerts() == latest, 60, "region_alert to hold every alert's latest state")
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(DISTINCT as_of) FROM region_snapshot")).scalar() >= 1
            dump = "\n".join(str(tuple(r)) for t in CONTRACT_TABLES for r in conn.execute(text(f"SELECT * FROM {t}")))
        engine.dispose()
        metrics_text = str(worker.metrics()) + str(sink.metrics())
        # each process exports its own series only
        assert not any(name.startswith("jamsostek_sink_") for name, _ in worker.metrics())
        assert not any(name.startswith(("jamsostek_events", "jamsostek_region_", "jamsostek_consumer_lag"))
                       for name, _ in sink.metrics())
        sink.wait(lambda: sum(v for (name, _), v in sink.metrics().items() if name == "jamsostek_sink_lag_records")
                  == 0 and any(name == "jamsostek_sink_lag_records" for name, _ in sink.metrics()), 30,
                  "the sink's lag series, at 0 once everything is written")
    finally:
        sink.stop()
        worker.stop()
    assert clock and dump
    niks = {e.key for e in events if re.fullmatch(r"[0-9]{16}", e.key)}
    logs = (tmp_path / "worker.log").read_text(errors="replace") + (tmp_path / "sink.log").read_text(errors="replace")
    from kafka import KafkaConsumer
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap)
    # input topics and the dead-letter topic carry the NIK key by contract; everything else must not
    topics = [t for t in consumer.topics() if t.startswith(settings.app_id)]
    consumer.close()
    topic_bytes = b"\n".join((r.key or b"") + b" " + (r.value or b"") for t in topics for r in read_all(kafka.bootstrap, t))
    assert len(niks) > 100
    for where, blob in (("warehouse", dump), ("logs", logs), ("metrics", metrics_text), ("topics", topic_bytes)):
        assert not niks_in(blob, niks), f"raw NIK in the {where}"


def test_analyst_queries_run_on_both_databases(published, warehouse_url, tmp_path):
    base, events = published
    settings = sink_settings(base, warehouse_url)
    sink = Sink(settings, tmp_path / "sink.log")
    try:
        sink.start()
        wait_facts(sink, warehouse_url, expected_facts(events), len(events))
    finally:
        sink.stop()
    queries = analyst_queries()
    assert len(queries) >= 3
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        results = {name: conn.execute(text(sql)).all() for name, sql in queries.items()}
    engine.dispose()
    claims = results["claims_by_programme_per_month"]
    paid = sum(e.record["amount_idr"] for e in {e.record["event_id"]: e for e in events if e.expect != "dead_letter"
                                                and e.record_name == "Claim"}.values()
               if e.record["status"] == "PAID")
    assert sum(r.paid_idr for r in claims) == paid
    assert {r.region_code for r in results["registrations_per_region_per_month"]} <= set(db.regions())
    # the breakdown views: people per region, cohort and attribute from the NIK, small cells hidden
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        views = {column: conn.execute(text(f"SELECT region_code, cohort, {column}, people FROM {view}")).all()
                 for view, column in BREAKDOWN_VIEWS.items()}
    engine.dispose()
    people = collections.defaultdict(dict)  # (region, cohort) -> NIK -> cells of its registration
    for e in events:
        if e.expect == "processed" and e.record_name == "Registration":
            r = e.record
            people[r["region_code"], r["cohort"]][e.key] = (*nik_cells(e.key, r["region_code"], r["occurred_at"]),
                                                             normalise(r["occupation"]))
    for i, column in enumerate(BREAKDOWN_VIEWS.values()):
        want = {(region, cohort, cell): n for (region, cohort), niks in people.items()
                for cell, n in small_cells_hidden([c[i] for c in niks.values()]).items()}
        assert {(r[0], r[1], r[2]): r[3] for r in views[column]} == want, column
    assert any(n is None for n in want.values()) and any(n for n in want.values())


def analyst_queries() -> dict[str, str]:
    """docs/analyst-queries.sql: blocks introduced by `-- name: <name>`."""
    text_ = (PROJECT_ROOT / "docs" / "analyst-queries.sql").read_text()
    blocks = re.split(r"^-- name: (\w+)\s*$", text_, flags=re.M)[1:]
    return {name: sql.strip().rstrip(";") for name, sql in zip(blocks[::2], blocks[1::2])}
