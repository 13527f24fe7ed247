"""The event-time clock (streams/clock.py) on its own: pure functions, wall time passed in, no broker."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from streams import clock
from streams.clock import DAY_MS, PartitionClock, SourceClock

LATENESS = 45 * DAY_MS
T0 = 20_000 * DAY_MS  # 2024-10-04


def feed(times: list[int], start: PartitionClock | None = None) -> tuple[PartitionClock, list[clock.Observation]]:
    c = start or PartitionClock()
    return c, [c.observe(c.off + 1, at, LATENESS) for at in times]


def test_the_clock_moves_only_to_times_two_consecutive_records_reached():
    c, seen = feed([T0, T0 + DAY_MS, T0 + 2 * DAY_MS])
    assert c.wm == T0 + DAY_MS  # the newest record is a candidate until the next one confirms it
    assert [o.tick for o in seen] == [None, T0, T0 + DAY_MS]


def test_one_record_far_ahead_changes_nothing_for_the_rest():
    """A test event stamped 'now' in the middle of a backfill a year old: nobody after it is late, the clock
    does not jump."""
    backfill = [T0 + i * 3_600_000 for i in range(48)]
    plain, plain_seen = feed(backfill)
    with_outlier, seen = feed(backfill[:24] + [T0 + 365 * DAY_MS] + backfill[24:])
    assert with_outlier.wm == plain.wm
    assert not any(o.late for o in seen)
    assert [o.tick for o in seen if o.tick] == [o.tick for o in plain_seen if o.tick]


def test_a_record_beyond_the_allowed_lateness_is_flagged_late_not_dropped():
    c, seen = feed([T0 + 100 * DAY_MS, T0 + 100 * DAY_MS, T0 + 50 * DAY_MS, T0 + 60 * DAY_MS])
    assert [o.late for o in seen] == [False, False, True, False]
    assert seen[2].late_ms == 50 * DAY_MS and seen[3].late_ms == 40 * DAY_MS
    assert c.wm == T0 + 100 * DAY_MS  # late records never move the clock back


def test_a_replay_from_a_batch_end_judges_records_as_the_first_time():
    c, first = feed([T0, T0 + DAY_MS])
    stored = c.stored()  # batch end at offset 1
    _, rest = feed([T0 + 80 * DAY_MS, T0 + 80 * DAY_MS, T0 + 20 * DAY_MS], PartitionClock.from_stored(stored))
    again = PartitionClock.from_stored(c.stored())  # the same clock went on and stored more
    again.rewind(2)  # a crash before the commit of offsets 2..: re-read from 2
    replay = [again.observe(off, at, LATENESS) for off, at in
              [(2, T0 + 80 * DAY_MS), (3, T0 + 80 * DAY_MS), (4, T0 + 20 * DAY_MS)]]
    assert replay == rest
    assert [o.late for o in rest] == [False, False, True]


def test_a_version_1_watermark_is_read():
    c = PartitionClock.from_stored({"wm": T0, "off": 7, "h": [[7, T0]]})
    assert (c.wm, c.last, c.off) == (T0, T0, 7)
    assert PartitionClock.from_stored(c.stored()) == c


@given(st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=60),
       st.integers(min_value=0, max_value=59))
def test_the_clock_never_passes_the_second_highest_time_read_and_never_goes_back(days, at):
    c, seen = feed([T0 + d * DAY_MS for d in days])
    marks = [o.tick for o in seen if o.tick is not None]
    assert marks == sorted(marks)
    second = sorted(days)[-2] if len(days) > 1 else None
    assert c.wm <= (T0 + second * DAY_MS if second is not None else 0)


@pytest.mark.parametrize("sources,low", [
    ([(5, 99), (7, 99), (9, 99)], 5),  # all moving: the slowest
    ([(5, 10), (7, 99), (9, 99)], 7),  # the slowest has not moved for 90 s: idle, not waited for
    ([(5, 10), (7, 20), (9, 30)], 9),  # all idle: the front
])
def test_low_watermark_waits_for_the_slowest_moving_source(sources, low):
    assert clock.low_watermark(sources, now=100, idle_seconds=30) == low


def test_a_participant_partition_waits_for_every_source_until_it_is_idle():
    sources = ["r:0", "r:1"]
    c = SourceClock.from_stored(None, now=1000.0)
    c, forward = clock.fold_source_tick(c, "r:0", T0 + 5 * DAY_MS, sources, now=1001.0, started=0, idle_seconds=30)
    assert forward is None  # r:1 has said nothing yet, and is not idle
    c, forward = clock.fold_source_tick(c, "r:1", T0 + 3 * DAY_MS, sources, now=1002.0, started=0, idle_seconds=30)
    assert forward == T0 + 3 * DAY_MS
    c, forward = clock.fold_source_tick(c, None, 0, sources, now=1040.0, started=0, idle_seconds=30)
    assert forward == T0 + 5 * DAY_MS  # both idle now: the front
    assert SourceClock.from_stored(c.stored(), now=0) == c


def test_region_and_stream_clocks_wait_for_every_partition():
    assert clock.region_low({"0": 5, "1": 3}, partitions=3) is None
    assert clock.region_low({"0": 5, "1": 3, "2": 9}, partitions=3) == 3
    assert clock.stream_clock([{"0": 5}, {}, {"0": 2, "1": 8}]) == 2
    assert clock.stream_clock([]) == 0


def test_an_event_of_a_day_already_evaluated_is_a_correction():
    day = 20_000
    assert not clock.is_correction(day * DAY_MS, None)
    assert not clock.is_correction(day * DAY_MS + 5, day)      # day D is evaluated from events before D
    assert clock.is_correction((day - 1) * DAY_MS, day)
