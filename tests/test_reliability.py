"""Failure drills on the real broker and PostgreSQL: kill -9 of the worker and of the sink mid-stream, a worker
joining and leaving, a broker restart. After each, the tables and the warehouse equal an independent computation:
nothing lost, nothing counted twice."""
from __future__ import annotations

import os
import random
import time

import pytest

from streams.config import Settings
from streams.simulator import Scenario
from tests.conftest import unique
from tests.expected import expected_regions
from tests.helpers import committed_offsets
from tests.test_topology import assert_regions_soon, publish
from tests.test_warehouse import expected_facts, sink_settings, warehouse_facts
from tests.worker import Sink, Worker

CRASH_EVENTS = int(os.environ.get("CRASH_EVENTS", "40000"))  # CRASH_EVENTS=200000: the size
KILLS = 5


def crash_scenario(events: int) -> tuple[float, list]:
    """A seeded year with bad records and duplicates, scaled to about ``events`` records."""
    scale = 0.1 * events / 175_000
    return scale, list(Scenario.load(scale=scale, seed=11, bad_share=0.01, duplicate_share=0.02).events(12))


def progress(settings: Settings, group: str, topics) -> int:
    return committed_offsets(settings.kafka_bootstrap_servers, group, set(topics))


@pytest.mark.timeout(1200)
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
    procs = {name: make[name](0).start() for name in make}
    kills = {"worker": 0, "sink": 0}
    try:
        deadline = time.monotonic() + 900
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
    worker, sink = Worker(settings, tmp_path / "worker.log").start(), Sink(settings, tmp_path / "sink.log").start()
    try:
        worker.wait(lambda: sum(worker.events_accounted().values()) > half // 3, 120, "the worker under way")
        own_broker.stop()  # clean shutdown; the data directory stays
        time.sleep(10)     # both keep retrying while the broker is away
        assert worker.proc.poll() is None and sink.proc.poll() is None
        own_broker.start()
        publish(settings, events[half:])
        inputs = list(settings.topics.inputs)
        for proc, group in ((worker, settings.app_id), (sink, settings.sink_group_id)):
            proc.wait(lambda: progress(settings, group, inputs) >= len(events), 300, "committed to the end")
        assert_regions_soon(worker, expected_regions(events, scale=scale), 120)
        assert warehouse_facts(settings.warehouse_url) == expected_facts(events)
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
    thirds = [events[: len(events) // 3], events[len(events) // 3: 2 * len(events) // 3], events[2 * len(events) // 3:]]
    publish(settings, thirds[0])
    a = Worker(settings, tmp_path / "a.log", CLOCK_IDLE_SECONDS="30").start()
    b = Worker(settings, tmp_path / "b.log", STATE_DIR=str(tmp_path / "b"), CLOCK_IDLE_SECONDS="30")
    inputs = list(settings.topics.inputs)
    try:
        a.wait(lambda: sum(a.events_accounted().values()) > len(thirds[0]) // 3, 120, "the first worker under way")
        b.start()  # joins mid-stream
        publish(settings, thirds[1])
        b.wait(lambda: sum(b.events_accounted().values()) > 0, 120, "the second worker taking a share")
        a.stop()   # the first one leaves mid-stream: b takes over its partitions and restores their tables
        publish(settings, thirds[2])
        b.wait(lambda: progress(settings, settings.app_id, inputs) >= len(events), 300, "committed to the end")
        assert_regions_soon(b, expected_regions(events, scale=scale), 120)
    finally:
        a.stop()
        b.stop()
