"""Unit tier: the readiness answer, per-partition gauges that forget revoked partitions, the one retry policy,
which series each process registers, the batch histogram, and the worker's garbage-collector thresholds."""
from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from hypothesis import given, strategies as st
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from streams import metrics
from streams.app import tune_collector
from streams.config import Settings
from streams.metrics import BatchHistogram, PartitionGauge
from streams.probes import readiness
from streams.retrying import retried, retrying, wait_policy


def test_readiness_names_what_fails():
    assert readiness({"assigned": True, "database": True}) == (
        200, {"status": "ready", "checks": {"assigned": True, "database": True}, "failing": []})
    status, body = readiness({"assigned": True, "database": False, "read_model": False})
    assert status == 503 and body["failing"] == ["database", "read_model"]


def test_a_partition_gauge_removes_series_of_partitions_no_longer_held():
    registry = CollectorRegistry()
    lag = PartitionGauge(Gauge("lag_records", "lag", ["topic", "partition"], registry=registry))
    lag.set({("t", 0): 5, ("t", 1): 7})
    lag.set({("t", 1): 3})  # partition 0 revoked
    text = generate_latest(registry).decode()
    assert 'lag_records{partition="1",topic="t"} 3.0' in text and 'partition="0"' not in text


def test_the_wait_grows_exponentially_with_jitter_up_to_the_cap():
    from tenacity import RetryCallState
    wait = wait_policy(first=0.5, cap=8.0)
    waits = []
    for attempt in range(1, 9):
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        waits.append([wait(state) for _ in range(200)])
    for n, samples in enumerate(waits[:4]):  # 0.5, 1, 2, 4 plus up to 0.5 of jitter
        base = 0.5 * 2 ** n
        assert all(base <= w <= base + 0.5 for w in samples) and len(set(samples)) > 1  # really random
    assert all(w == 8.0 for samples in waits[5:] for w in samples)  # capped


def assert_retries_only_the_named_errors_and_gives_up_after_the_attempts(caplog, retry) -> None:
    """``retry(call, on_retry)`` runs ``call`` through one of streams/retrying.py's forms (4 attempts, errors
    named: ConnectionError): two failures then a success, too many failures, a failure not named."""
    calls, retries = [], []

    async def flaky(fail: int, error: type[Exception]):
        async def call():
            calls.append(1)
            if len(calls) <= fail:
                raise error("down")
            return "ok"
        return await retry(call, retries.append)

    with caplog.at_level(logging.WARNING, logger="t"):
        assert asyncio.run(flaky(2, ConnectionError)) == "ok" and len(calls) == 3
    assert caplog.text.count("a flaky call failed (down); attempt") == 2 and len(retries) == 2
    calls.clear()
    with pytest.raises(ConnectionError):
        asyncio.run(flaky(10, ConnectionError))
    assert len(calls) == 4
    calls.clear()
    with pytest.raises(ValueError):  # not transient: raised at once
        asyncio.run(flaky(1, ValueError))
    assert len(calls) == 1


POLICY = {"first": 0.001, "cap": 0.002, "attempts": 4}


def test_retrying_retries_only_the_named_errors_and_gives_up_after_the_attempts(caplog):
    async def through_retrying(call, on_retry):
        async for attempt in retrying("a flaky call", (ConnectionError,), logging.getLogger("t"), **POLICY,
                                      on_retry=on_retry):
            with attempt:
                return await call()
    assert_retries_only_the_named_errors_and_gives_up_after_the_attempts(caplog, through_retrying)


def test_retried_retries_as_retrying_does_and_leaves_no_cyclic_garbage_when_the_first_call_succeeds(caplog):
    """streams/retrying.py ``retried``: a first failure is tenacity's first attempt (logged, counted, backed off);
    the happy path never enters tenacity, whose retry state is a nest of reference cycles (the sink wrote through
    it once per batch)."""
    assert_retries_only_the_named_errors_and_gives_up_after_the_attempts(
        caplog, lambda call, on_retry: retried(call, "a flaky call", (ConnectionError,), logging.getLogger("t"),
                                               **POLICY, on_retry=on_retry))

    async def ok():
        return 1

    async def unreachable_after(calls_of) -> int:
        """Objects the cyclic collector finds unreachable after 20 happy calls (none before them)."""
        gc.collect()
        for _ in range(20):
            assert await calls_of() == 1
        return gc.collect()

    async def through_tenacity():
        async for attempt in retrying("x", (ConnectionError,), logging.getLogger("t")):
            with attempt:
                return await ok()

    async def both():
        return (await unreachable_after(lambda: retried(ok, "x", (ConnectionError,), logging.getLogger("t"))),
                await unreachable_after(through_tenacity))
    enabled = gc.isenabled()
    gc.disable()  # only the explicit collections count
    try:
        ours, tenacity = asyncio.run(both())
    finally:
        if enabled:
            gc.enable()
    assert tenacity > 0, "tenacity made no cycles: this check would not see any"
    assert ours == 0


def test_each_process_registers_only_its_own_series():
    worker = generate_latest(metrics.WORKER_REGISTRY).decode()
    sink = generate_latest(metrics.SINK_REGISTRY).decode()
    assert "jamsostek_sink_" not in worker and "jamsostek_events_total" in worker
    assert "jamsostek_events_total" not in sink and "jamsostek_region_" not in sink
    assert "jamsostek_sink_records_total" in sink
    for text in (worker, sink):
        assert "jamsostek_nik_redacted_total" in text and "process_cpu_seconds_total" in text


def test_the_firing_gauge_carries_kind_and_severity_and_forgets_resolved_alerts():
    view = {"code": "64.99", "registered": 1, "active": 1, "coverage_ratio": 0.1, "stalled": True, "quota": {},
            "alerts": [{"kind": "CONTRIBUTIONS_STOPPED", "severity": "CRITICAL", "since": "2025-01-01"},
                       {"kind": "NO_REGISTRATIONS", "severity": "WARNING", "since": "2025-01-01"}]}
    metrics.publish_region(view)
    text = generate_latest(metrics.WORKER_REGISTRY).decode()
    assert ('jamsostek_region_alert_firing{kind="CONTRIBUTIONS_STOPPED",region="64.99",severity="critical"} 1.0'
            in text)
    metrics.publish_region({**view, "alerts": view["alerts"][1:]})  # the critical one resolved
    text = generate_latest(metrics.WORKER_REGISTRY).decode()
    assert 'kind="CONTRIBUTIONS_STOPPED",region="64.99"' not in text
    assert 'jamsostek_region_alert_firing{kind="NO_REGISTRATIONS",region="64.99",severity="warning"} 1.0' in text


def test_the_worker_s_collector_runs_full_collections_rarely_and_young_ones_as_cpython_does():
    """streams/app.py tune_collector: only the third threshold changes (the worker's /livez shows it live:
    test_topology.py)."""
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        assert tune_collector(Settings(gc_full_every=1000)) == (700, 10, 10)
        assert gc.get_threshold() == (700, 10, 1000)
        tune_collector(Settings(gc_full_every=50))
        assert gc.get_threshold() == (700, 10, 50)
    finally:
        gc.set_threshold(*before)


ARENAS_SCRIPT = """
import ctypes, sys, threading
from streams.app import tune_allocator
from streams.config import Settings
print(tune_allocator(Settings(malloc_arena_max=int(sys.argv[1]))))
together = threading.Barrier(6)
def churn():
    kept = [bytearray(200) for _ in range(20000)]  # small blocks: from the thread's arena, not mmap
    together.wait()  # all six alive at once: an exited thread's arena would be handed to the next one
    del kept
threads = [threading.Thread(target=churn) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena n:" block per arena, on stderr
"""


def test_the_worker_s_allocator_keeps_to_its_arena_limit():
    """streams/app.py tune_allocator: with ``malloc_arena_max`` 2, six allocating threads share two glibc arenas;
    with 0 (glibc's default, 8 per core) they get more. A process of its own: arenas made stay made."""
    import subprocess
    import sys

    def arenas(limit: int) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT, str(limit)], capture_output=True, text=True,
                              timeout=60, check=True)
        return done.stdout.strip(), done.stderr.count("Arena ")
    assert arenas(2) == ("True", 2)
    applied, default = arenas(0)
    assert applied == "False" and default > 2


@given(st.lists(st.one_of(st.floats(min_value=0, max_value=1e9), st.sampled_from([0.1, 0.5, 1.0, 3600.0, 86400.0]),
                          st.integers(min_value=0, max_value=10**8)), max_size=60),
       st.integers(min_value=1, max_value=4))
def test_a_batch_histogram_exposes_what_a_histogram_observing_one_value_at_a_time_does(values, batches):
    bounds = (0.1, 0.5, 1, 5, 3600, 86400)
    registry, reference = CollectorRegistry(), CollectorRegistry()
    batched = BatchHistogram("lag_seconds", "doc", buckets=bounds)
    registry.register(batched)
    one_by_one = Histogram("lag_seconds", "doc", buckets=bounds, registry=reference)
    for n in range(batches):  # the values split over several batches
        batched.observe_many(values[n::batches])
    for value in values:
        one_by_one.observe(value)

    def samples(reg):
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in reg.collect()
                for s in family.samples if not s.name.endswith("_created")}
    got, want = samples(registry), samples(reference)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
