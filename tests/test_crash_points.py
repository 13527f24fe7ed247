"""Targeted fault injection (streams/faults.py): the worker kills itself with SIGKILL at the worst points of each
stage's write order, beside heavy mixed load, and the tables still equal the independent fold. The order behind
the reported loss (a participant state durable before the region deltas it caused) is forced too, and the same
check catches it as a loss: the drill can fail."""
from __future__ import annotations

import signal

import pytest

from streams.config import Settings
from streams.simulator import Scenario
from tests.conftest import unique
from tests.expected import expected_regions
from tests.helpers import MixedLoad, behind, committed_offsets, unread
from tests.test_topology import assert_regions_soon, publish
from tests.worker import Worker

SCALE = 0.01


def drill_settings(kafka, registry, tmp_path) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                    topic_prefix=unique() + ".", topic_partitions=3, state_dir=tmp_path / "state",
                    app_id=unique("app-"), target_scale=SCALE, batch_size=200)


def input_committed(settings: Settings) -> int:
    return committed_offsets(settings.kafka_bootstrap_servers, settings.app_id, set(settings.topics.inputs))


def pipeline_topics(settings: Settings) -> list[str]:
    """What the worker's stages read: the inputs and both internal topics."""
    return [*settings.topics.inputs, f"{settings.app_id}-participant-events", f"{settings.app_id}-region-deltas"]


def all_read(settings: Settings) -> bool:
    """Every stage has committed all it was given: the inputs and both internal topics (the idle-source timer
    adds a tick to participant events every few seconds, so this is true between such a tick and its commit)."""
    from confluent_kafka import KafkaException
    try:
        return unread(settings.kafka_bootstrap_servers, settings.app_id, pipeline_topics(settings)) == 0
    except KafkaException:  # e.g. an internal topic being created: not read yet
        return False


def killed_at(settings: Settings, tmp_path, point: str, n: int, attempt: int = 1) -> bool:
    """Run a worker armed at ``point`` (the ``n``-th visit) until it kills itself (True) or every stage has read
    everything (False: the point was not reached ``n`` times)."""
    log = tmp_path / f"{point.replace(':', '-')}-{n}{f'-{attempt}' if attempt > 1 else ''}.log"
    worker = Worker(settings, log, FAULT_POINT=f"{point}@{n}")
    try:
        worker.start()
        worker.wait(lambda: all_read(settings), 300, f"the kill at {point} or the end")
    except AssertionError:
        if worker.proc.poll() is None:
            raise
    finally:
        worker.stop()
    if worker.proc.returncode == -signal.SIGKILL:
        assert f"fault injection: SIGKILL at {point}" in worker.log.read_text(), worker.tail()
        return True
    assert worker.proc.returncode == 0, worker.tail()
    return False


def finish(settings: Settings, tmp_path, total: int) -> Worker:
    """A worker that has committed every input record (if it does not, tests/conftest.py stops it after the
    test)."""
    worker = Worker(settings, tmp_path / "final.log").start()
    try:
        worker.wait(lambda: input_committed(settings) >= total, 300, "every input record committed")
    except AssertionError as exc:
        lag = behind(settings.kafka_bootstrap_servers, settings.app_id, pipeline_topics(settings))
        raise AssertionError(f"partitions not committed to their end (resumes at, end): {lag}\n{exc}") from None
    return worker


@pytest.mark.timeout(1200)
def test_kills_at_every_worst_point_under_load_leave_the_tables_exact(kafka, registry, tmp_path):
    events = list(Scenario.load(scale=SCALE, seed=17, bad_share=0.01, duplicate_share=0.02).events(7))
    settings = drill_settings(kafka, registry, tmp_path)
    publish(settings, events)
    # each worst point once. Ingest first (only input reaches it); then the first alert, while most alerts are
    # still to come: a life reaches it only if an alert's transition is not durable yet, and a faster worker went
    # through every alert in the lives before it (CI, 2026-11-27, a benchmark beside: the alert point last, never
    # reached). A life whose point needs work the lives before it left none of (they run until killed, and the
    # stages go on meanwhile: the region-state point was once left no region to change) gets more input, a month
    # of another scenario, and one more try, killed at its first visit (a month's input went through the
    # participant stage in fewer than 3 batches once); every point must still be reached.
    points = [("ingest:events-acked", 4), ("regions:alerts-acked", 1), ("participants:deltas-acked", 3),
              ("participants:state-durable", 3), ("regions:state-durable", 5)]
    more = iter(range(18, 18 + len(points)))
    with MixedLoad(tmp_path):
        killed = []
        for point, n in points:
            if not killed_at(settings, tmp_path, point, n):
                extra = list(Scenario.load(scale=SCALE, seed=next(more), bad_share=0.01,
                                           duplicate_share=0.02).events(1))
                publish(settings, extra)
                events += extra
                if not killed_at(settings, tmp_path, point, 1, attempt=2):  # the new input's first visit
                    continue
            killed.append(point)
        worker = finish(settings, tmp_path, len(events))
        try:
            assert set(killed) == {point for point, _ in points}, f"a point never reached: {killed}"
            assert_regions_soon(worker, expected_regions(events, scale=SCALE), 180)
        finally:
            worker.stop()


@pytest.mark.timeout(600)
def test_a_state_durable_before_its_deltas_loses_updates_which_the_drill_detects(kafka, registry, tmp_path):
    """The order behind the reported loss, forced: participant states flushed to their changelog, then the kill,
    before the region deltas were sent. The re-read events are duplicates and their deltas never come: the
    figures fall short of the fold. (The worker's order acknowledges the deltas first, so this cannot happen.)"""
    events = list(Scenario.load(scale=SCALE, seed=19).events(6))
    settings = drill_settings(kafka, registry, tmp_path)
    publish(settings, events)
    assert killed_at(settings, tmp_path, "participants:state-first", 2)
    worker = finish(settings, tmp_path, len(events))
    try:
        # every stage has read all it was given, so the tables are final (no waiting out a timeout for the loss)
        worker.wait(lambda: all_read(settings), 120, "every stage to read what it was given")
        expected = expected_regions(events, scale=SCALE)
        got = worker.comparable_regions()
        assert got != expected

        def counted(figures: dict) -> int:  # every counted event: registrations, contributions, claims
            return sum(c["contributions"]["count"] + sum(x["registered"] for x in c["cohorts"].values())
                       + sum(s["count"] for per in c["claims"].values() for s in per.values())
                       for c in figures.values())
        assert counted(got) < counted(expected), "the forced order lost nothing: the drill would not see a loss"
    finally:
        worker.stop()


@pytest.mark.timeout(600)
def test_a_stage_that_raises_ends_the_worker_and_the_restart_skips_nothing(kafka, registry, tmp_path):
    """A bug in the region stage (an exception on its first batch: a later one is not always reached, the stage
    may take the whole input in two batches, as in a CI run on 2026-11-28 after the deltas were summed): Faust's
    default restarted the agent in the same process and went on after the message it was on, which was never
    applied (two death claims lost on 2026-11-26). The worker now exits without committing, and the next one
    re-reads: the tables are exact."""
    from streams.faults import STAGE_FAILED_EXIT
    events = list(Scenario.load(scale=SCALE, seed=23).events(4))
    settings = drill_settings(kafka, registry, tmp_path)
    publish(settings, events)
    worker = Worker(settings, tmp_path / "bug.log", FAULT_POINT="regions:bug@1")
    try:
        worker.start()
        worker.wait(lambda: False, 180, "the worker to exit on the stage's error")
    except AssertionError:
        if worker.proc.poll() is None:  # still running: the error did not end it
            raise
    finally:
        worker.stop()
    assert worker.proc.returncode == STAGE_FAILED_EXIT, worker.tail()
    assert "fault injection: an error at regions:bug" in worker.log.read_text()
    final = finish(settings, tmp_path, len(events))
    try:
        assert_regions_soon(final, expected_regions(events, scale=SCALE), 180)
    finally:
        final.stop()
