"""Failure drills on the real broker and PostgreSQL: kill -9 of the worker and of the sink mid-stream, a worker
joining and leaving, a broker restart. After each, the tables and the warehouse equal an independent computation:
nothing lost, nothing counted twice."""
from __future__ import annotations

import collections
import json
import os
import random
import signal
import time

import pytest

from streams.config import Settings
from streams.faust_fixes import STOP_OVERDUE_EXIT
from streams.simulator import Scenario
from tests.conftest import unique
from tests.expected import expected_regions
from tests.helpers import MixedLoad, committed_offsets, read_all
from tests.test_topology import assert_regions_soon, publish
from tests.test_warehouse import expected_facts, sink_settings, warehouse_facts
from tests.worker import Sink, Worker

CRASH_EVENTS = int(os.environ.get("CRASH_EVENTS", "40000"))  # CRASH_EVENTS=200000: the size
KILLS = 5


def crash_scenario(events: int) -> tuple[float, list]:
    """A seeded year with bad records and duplicates, scaled to about ``events`` records."""
    scale = 0.1 * events / 245_000
    return scale, list(Scenario.load(scale=scale, seed=11, bad_share=0.01, duplicate_share=0.02).events(12))


def progress(settings: Settings, group: str, topics) -> int:
    return committed_offsets(settings.kafka_bootstrap_servers, group, set(topics))


@pytest.mark.timeout(1200 if CRASH_EVENTS <= 50_000 else 3600)
def test_kill_9_worker_and_sink_five_times_each_loses_and_doubles_nothing(kafka, registry, postgres, tmp_path):
    scale, events = crash_scenario(CRASH_EVENTS)
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=4, state_dir=tmp_path / "state",
                        app_id=unique("app-"), target_scale=scale)
    settings = sink_settings(settings, postgres.create_database(unique("wh")), sink_batch_size=2000)
    publish(settings, events)
    inputs, total = list(settings.topics.inputs), len(events)
    rng = random.Random(7)
    # kill points: fractions of the input committed, one sorted list per process
    points = {"worker": sorted(rng.uniform(0.05, 0.9) for _ in range(KILLS)),
              "sink": sorted(rng.uniform(0.05, 0.9) for _ in range(KILLS))}
    groups = {"worker": settings.app_id, "sink": settings.sink_group_id}
    make = {"worker": lambda n: Worker(settings, tmp_path / f"worker{n}.log"),
            "sink": lambda n: Sink(settings, tmp_path / f"sink{n}.log")}
    with MixedLoad(tmp_path, seconds=1200):  # beside heavy mixed load, every run (DEVELOPERS.md)
        procs = {name: make[name](0).start() for name in make}
        kills = {"worker": 0, "sink": 0}
        try:
            deadline = time.monotonic() + (900 if CRASH_EVENTS <= 50_000 else 2400)
            while any(points.values()) and time.monotonic() < deadline:
                for name, due in points.items():
                    done = progress(settings, groups[name], inputs) / total
                    if due and done >= due[0]:
                        due.pop(0)
                        procs[name].kill()  # SIGKILL: no flush, no commit, no leave-group
                        kills[name] += 1
                        procs[name] = make[name](kills[name]).start()
                time.sleep(0.5)
            assert kills == {"worker": KILLS, "sink": KILLS}, f"kill points not reached in time: {points}"
            for name, proc in procs.items():
                proc.wait(lambda: progress(settings, groups[name], inputs) >= total, 600, f"{name} committed to the end")
            # the inputs are read; the internal topics (participant events, region deltas) may still have a backlog
            assert_regions_soon(procs["worker"], expected_regions(events, scale=scale), 600)
            assert warehouse_facts(settings.warehouse_url) == expected_facts(events)
        finally:
            for proc in procs.values():
                proc.stop()


@pytest.fixture
def own_broker(tmp_path, base_settings):
    """A broker of this test's own: it is stopped and started mid-stream (the session's broker is shared)."""
    from streams.launcher import KafkaBroker
    broker = KafkaBroker.start_new(tmp_path / "kafka", cache_dir=base_settings.cache_dir,
                                   version=base_settings.kafka_version)
    yield broker
    broker.stop()


@pytest.mark.timeout(600)
def test_broker_restart_mid_stream_workers_and_sink_reconnect_and_finish_exact(own_broker, registry, postgres,
                                                                               tmp_path):
    scale = 0.01
    events = list(Scenario.load(scale=scale, seed=5, duplicate_share=0.02).events(6))
    settings = Settings(kafka_bootstrap_servers=own_broker.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=3, state_dir=tmp_path / "state",
                        app_id=unique("app-"), target_scale=scale)
    settings = sink_settings(settings, postgres.create_database(unique("wh")))
    half = len(events) // 2
    publish(settings, events[:half])
    worker = Worker(settings, tmp_path / "worker.log", STOP_TIMEOUT_SECONDS="15").start()
    sink = Sink(settings, tmp_path / "sink.log").start()
    try:
        worker.wait(lambda: sum(worker.events_accounted().values()) > half // 3, 120, "the worker under way")
        own_broker.stop()  # clean shutdown; the data directory stays
        time.sleep(10)  # the fault: the broker stays away 10 s (both keep retrying meanwhile), not a wait for an event
        assert worker.proc.poll() is None and sink.proc.poll() is None
        own_broker.start()
        publish(settings, events[half:])
        inputs = list(settings.topics.inputs)
        for proc, group in ((worker, settings.app_id), (sink, settings.sink_group_id)):
            proc.wait(lambda: progress(settings, group, inputs) >= len(events), 300, "committed to the end")
        assert_regions_soon(worker, expected_regions(events, scale=scale), 120)
        assert warehouse_facts(settings.warehouse_url) == expected_facts(events)
        # the broker goes again, for good: told to stop, each ends on its own (a worker's stop without a broker
        # waited for ever on its producer and on a commit; faust_fixes.BoundedStopWorker)
        own_broker.stop()
        for service in (worker, sink):
            os.killpg(service.proc.pid, signal.SIGTERM)
        for service in (worker, sink):
            status = service.proc.wait(15 + 20)
            assert status in (0, STOP_OVERDUE_EXIT), f"{service.command} ended with {status}:\n{service.tail()}"
    finally:
        worker.stop()
        sink.stop()


@pytest.mark.timeout(600)
def test_a_worker_joins_then_one_leaves_totals_stay_exact(kafka, registry, tmp_path):
    scale = 0.01
    events = list(Scenario.load(scale=scale, seed=9, duplicate_share=0.02).events(8))
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=4, state_dir=tmp_path / "a",
                        app_id=unique("app-"), target_scale=scale)
    parts = [events[i * len(events) // 4: (i + 1) * len(events) // 4] for i in range(4)]
    publish(settings, parts[0])
    a = Worker(settings, tmp_path / "a.log", CLOCK_IDLE_SECONDS="30").start()
    b = Worker(settings, tmp_path / "b.log", STATE_DIR=str(tmp_path / "b"), CLOCK_IDLE_SECONDS="30")
    inputs = list(settings.topics.inputs)
    try:
        a.wait(lambda: sum(a.events_accounted().values()) > len(parts[0]) // 3, 120, "the first worker under way")
        b.start()  # joins mid-stream
        publish(settings, parts[1])  # read by a while b joins
        # b owns its partitions before the next part: a may well have read every record there was by the time b's
        # join completed, and b then had nothing to count (the wait below timed out in 2 of 23 runs, 2026-11-27)
        b.wait(b.ready_to_work, 120, "the second worker ready")
        publish(settings, parts[2])
        b.wait(lambda: sum(b.events_accounted().values()) > 0, 120, "the second worker taking a share")
        a.stop()   # the first one leaves mid-stream: b takes over its partitions and restores their tables
        publish(settings, parts[3])
        b.wait(lambda: progress(settings, settings.app_id, inputs) >= len(events), 300, "committed to the end")
        assert_regions_soon(b, expected_regions(events, scale=scale), 120)
    finally:
        a.stop()
        b.stop()


COUNTED_DELTAS = ("reg", "contrib", "claim")


def output_copies(settings: Settings, events) -> dict[str, collections.Counter]:
    """How many times each unit of output is on the worker's output topics (committed records only), against how
    many times it must be: 0 everywhere means no output was duplicated (or lost)."""
    from streams import rules
    bootstrap = settings.kafka_bootstrap_servers
    want = collections.Counter((e.record_name, e.record["event_id"]) for e in events
                               if e.expect in ("processed", "duplicate"))
    got = collections.Counter((v["kind"], v["event_id"]) for r in read_all(bootstrap, f"{settings.app_id}-participant-events")
                              for v in json.loads(r.value)["events"] if v["kind"] != "Tick")
    # region deltas, by kind, against the deltas of a one-at-a-time fold (ticks depend on timing, paid-through
    # moves on the order registrations and contributions of one person are read from their two topics: left out)
    people, want_deltas = {}, collections.Counter()
    for e in events:
        if e.expect == "processed":
            people[e.key], deltas, _ = rules.apply_event(people.get(e.key), e.record_name,
                                                         {k: v for k, v in e.record.items() if k != "nik"})
            want_deltas.update(d["k"] for d in deltas if d["k"] in COUNTED_DELTAS)
    got_deltas = collections.Counter(d["k"] for r in read_all(bootstrap, f"{settings.app_id}-region-deltas")
                                     for d in json.loads(r.value)["deltas"] if d["k"] in COUNTED_DELTAS)
    dead = collections.Counter(tuple(v for k, v in r.headers if k in ("dlq.topic", "dlq.partition", "dlq.offset"))
                               for r in read_all(bootstrap, settings.topics.dead_letter))
    alerts = collections.Counter((r.key, r.value) for r in read_all(bootstrap, settings.topics.region_alerts))
    return {"participant events": got - want + (want - got), "region deltas": (got_deltas - want_deltas) +
            (want_deltas - got_deltas), "dead letters": collections.Counter({k: n - 1 for k, n in dead.items() if n > 1})
            + collections.Counter({"missing": sum(e.expect == "dead_letter" for e in events) - len(dead)}),
            "alerts": collections.Counter({k: n - 1 for k, n in alerts.items() if n > 1})}


class ExactlyOnceStalled(AssertionError):
    """The known failure of Faust's exactly_once below: records stay in open transactions, so the pipeline never
    commits to the end of its input, or the tables stay short of the fold (nothing more, nothing else)."""


def counts(view: dict) -> tuple[int, int]:
    return sum(c["registered"] for c in view["cohorts"].values()), view["contributions"]["count"]


def short_of(got: dict, expected: dict) -> bool:
    """Every region's counts at most the fold's, and some below: records missing, none extra or wrong."""
    pairs = [(counts(got[code]), counts(want)) for code, want in expected.items()]
    return all(g <= w for (gs, ws) in pairs for g, w in zip(gs, ws)) and any(gs != ws for gs, ws in pairs)


@pytest.mark.xfail(strict=True, raises=ExactlyOnceStalled, reason=(
    "faust-streaming 0.15.3 exactly_once: a send joins the transaction of its *destination* partition number, "
    "committed only when offsets of a same-numbered source partition advance. Records repartitioned to another "
    "partition number stay in an open transaction, invisible to read_committed readers (the worker's own next "
    "stage), until the broker aborts it and fences the producer: the pipeline stalls and loses them "
    "(docs/reliability.md; faust-streaming #323, #517). Strict: turns red the day this is fixed upstream."))
@pytest.mark.timeout(300)
def test_exactly_once_mode_finishes_exact_with_no_duplicate_output(kafka, registry, tmp_path):
    """processing_guarantee=exactly_once (Kafka transactions): with all input on one partition (as from a single
    upstream producer keyed by region), the tables end exact and every output topic, read as a read_committed
    consumer does, holds each output exactly once."""
    scale = 0.01
    events = list(Scenario.load(scale=scale, seed=13, bad_share=0.01, duplicate_share=0.02).events(2))
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=4, state_dir=tmp_path / "state",
                        app_id=unique("app-"), target_scale=scale, processing_guarantee="exactly_once")
    publish(settings, events, partition=0)
    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        try:
            worker.wait(lambda: progress(settings, settings.app_id, list(settings.topics.inputs)) >= len(events),
                        120, "committed to the end")
        except AssertionError as exc:  # exactly this, and nothing else, is the expected failure
            raise ExactlyOnceStalled(f"stalled at {progress(settings, settings.app_id, list(settings.topics.inputs))}"
                                     f" of {len(events)} input records committed") from exc
        expected = expected_regions(events, scale=scale)
        try:  # the expected stall shows within seconds; a fixed upstream finishes well within this
            assert_regions_soon(worker, expected, 20)
        except AssertionError as exc:
            got = worker.comparable_regions()
            if short_of(got, expected):
                raise ExactlyOnceStalled("tables short of the fold: records stuck in open transactions") from exc
            raise
        extra = output_copies(settings, events)
        assert all(not +c and not -c for c in extra.values()), extra
    finally:
        worker.stop()
