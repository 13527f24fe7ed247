"""The crash-exactness argument of the write order (docs/reliability.md), on the stages' pure functions and no
broker: whatever subset of a message's participant states became durable before a crash — its region deltas
having been acknowledged first — re-reading from that message leaves every region's state equal to a run without
a crash; and a region stage re-reading deltas it applied (its state durable, offset not committed) changes
nothing. The opposite order (states durable, deltas never sent) is shown to lose updates, so the check can fail."""
from __future__ import annotations

import copy
import random

from hypothesis import given, settings as hsettings, strategies as st

from streams import stall
from streams.config import Settings
from streams.participants import fold_message
from streams.reference import reference
from streams.regions import apply_message
from streams.rules import apply_delta, apply_event, participant_key
from streams.simulator import Scenario
from streams.state import participant_from_stored, stored


SETTINGS = Settings(target_scale=0.002)
REF = reference()
END_DAY = stall.month_day(REF.programme_end)
KEY = b"k" * 32
PER_MESSAGE = 25


def messages() -> list[list[dict]]:
    """The scenario's valid events as the ingest stage hands them on (pseudonymised), in messages of one
    participant-events partition, each message led by a watermark tick of source ``in:0`` (``in:1`` never ticks:
    whether the tick moves the clock depends on wall time, see ``fold``)."""
    topics = {"Registration": "registrations", "Contribution": "contributions", "Claim": "claims"}
    values = []
    for event in Scenario.load(scale=0.002, seed=3, duplicate_share=0.02).events(4):
        if event.expect == "dead_letter":
            continue
        record = dict(event.record)
        values.append({**record, "kind": event.record_name, "topic": topics[event.record_name],
                       "key": participant_key(record.pop("nik"), KEY)})
    return [[{"kind": "Tick", "src": "in:0", "at": values[i]["occurred_at"]}, *values[i:i + PER_MESSAGE]]
            for i in range(0, len(values), PER_MESSAGE)]


MESSAGES = messages()


def fold(offset: int, states: dict, now: float = 0.0):
    """The participant stage on message ``offset`` over ``states`` (the durable states, stored as the table holds
    them) at wall time ``now``: at 0 the silent source ``in:1`` still counts as moving
    and no tick passes; after a restart (``now`` past the idle time) it is idle and the ticks pass to the regions
    — the one output a re-read need not repeat."""
    return fold_message(copy.deepcopy(MESSAGES[offset]), 0, offset,
                        lambda key: participant_from_stored(states.get(key)),
                        {"v": 1, "src": {}, "sent": 0, "since": 0.0}, REF.regions, ["in:0", "in:1"], now, 0.0, 30.0)


#: region state that follows the stream clock, which moves with wall time (idle sources): a re-run may move it
#: differently, by design (docs/domain.md). Everything else is a count of events and must be exact.
CLOCK_DRIVEN = {"wm", "evaluated", "first_day", "days", "recent", "ahead", "protected_series", "alerts", "forecast_fill_day",
                "history", "alert_log",
                "corrections"}


def region_stage(log: list[tuple[str, list]], regions: dict) -> dict:
    """The region stage reading its topic ``log`` (region code, deltas) in order over ``regions``."""
    for code, deltas in log:
        applied = apply_message(regions.get(code), deltas, REF.regions[code], SETTINGS, 1, END_DAY)
        if applied.stats is not None:
            regions[code] = stored(applied.stats)
    return regions


def counted(regions: dict) -> dict:
    return {code: {k: v for k, v in stats.items() if k not in CLOCK_DRIVEN} for code, stats in regions.items()}


def run(crash_at: int | None = None, durable: random.Random | None = None, states_first: bool = False):
    """Participant stage over every message, with a crash at message ``crash_at``: its deltas were acknowledged
    (unless ``states_first``), a random subset of its states became durable, then the worker restarts from its
    committed offset (``crash_at``) on the durable states."""
    states: dict = {}
    log: list[tuple[str, list]] = []
    offset, now = 0, 0.0
    while offset < len(MESSAGES):
        folded = fold(offset, states, now)
        if offset == crash_at:
            if not states_first:
                log += [(code, deltas) for code, deltas in folded.deltas.items()]
            for key, state in folded.states.items():
                if states_first or durable.random() < 0.5:
                    states[key] = stored(state)
            crash_at, now = None, 1000.0  # the restart re-reads this message, later in wall time
            continue
        log += [(code, deltas) for code, deltas in folded.deltas.items()]
        states.update({key: stored(state) for key, state in folded.states.items()})
        offset += 1
    return log


BASELINE = counted(region_stage(run(), {}))


@hsettings(max_examples=40, deadline=None)
@given(crash_at=st.integers(0, len(MESSAGES) - 1), seed=st.integers(0, 2**32))
def test_a_crash_between_deltas_acknowledged_and_states_durable_changes_no_region(crash_at, seed):
    log = run(crash_at, random.Random(seed))
    assert counted(region_stage(log, {})) == BASELINE


@hsettings(max_examples=40, deadline=None)
@given(durable_upto=st.integers(0, 400), reread_from=st.integers(0, 400))
def test_the_region_stage_re_reading_what_it_applied_changes_nothing(durable_upto, reread_from):
    """Region state durable up to log position ``durable_upto``, offset committed at ``reread_from`` (≤ it):
    the restart re-reads from there."""
    log = run()
    durable_upto = min(durable_upto, len(log))
    reread_from = min(reread_from, durable_upto)
    regions = region_stage(log[:durable_upto], {})
    assert counted(region_stage(log[reread_from:], regions)) == BASELINE


def test_states_durable_before_their_deltas_lose_updates():
    lost = [offset for offset in range(0, len(MESSAGES), 3)
            if counted(region_stage(run(offset, random.Random(0), states_first=True), {})) != BASELINE]
    assert lost, "the losing order lost nothing: the property above would not catch it"


def region_stage_in_batches(log: list[tuple[str, list]], regions: dict, sizes: list[int]) -> dict:
    """The region stage taking its topic in batches of ``sizes`` messages (``take_events``; the last size repeats):
    a region's deltas from all the messages of a batch are applied on one copy, written once."""
    position, turn = 0, 0
    while position < len(log):
        size = sizes[min(turn, len(sizes) - 1)]
        by_code: dict[str, list] = {}
        for code, deltas in log[position:position + size]:
            by_code.setdefault(code, []).extend(deltas)
        for code, deltas in by_code.items():
            applied = apply_message(regions.get(code), deltas, REF.regions[code], SETTINGS, 1, END_DAY)
            if applied.stats is not None:
                regions[code] = stored(applied.stats)
        position, turn = position + size, turn + 1
    return regions


@hsettings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 80), min_size=1, max_size=12), durable_upto=st.integers(0, 400),
       reread_from=st.integers(0, 400))
def test_the_region_stage_in_batches_of_any_size_and_after_a_re_read_counts_the_same(sizes, durable_upto,
                                                                                     reread_from):
    """Batches cut anywhere (a region's deltas from several messages applied together), and a restart that
    re-reads from a committed offset behind the durable state, batched differently the second time."""
    log = run()
    assert counted(region_stage_in_batches(log, {}, sizes)) == BASELINE
    durable_upto = min(durable_upto, len(log))
    reread_from = min(reread_from, durable_upto)
    regions = region_stage_in_batches(log[:durable_upto], {}, sizes)
    assert counted(region_stage_in_batches(log[reread_from:], regions, sizes[::-1])) == BASELINE


def test_the_stages_count_as_the_events_applied_one_by_one():
    """What the stages leave (a message's deltas summed per region, streams/delta_sums.py) equals every event's
    deltas applied one at a time (rules.apply_delta, as the independent fold in tests/expected.py does)."""
    states: dict = {}
    regions: dict = {}
    for message in MESSAGES:
        for value in copy.deepcopy(message):
            if value["kind"] == "Tick":
                continue
            states[value["key"]], deltas, _ = apply_event(states.get(value["key"]), value["kind"], value)
            for delta in deltas:
                regions[delta["region"]] = apply_delta(regions.get(delta["region"]), delta,
                                                       REF.regions[delta["region"]], SETTINGS.target_scale)
    replays = lambda regions: {code: {k: v for k, v in stats.items() if k != "applied"}  # noqa: E731
                               for code, stats in regions.items()}  # the stages' replay guard: theirs alone
    assert replays(BASELINE) == replays(counted({code: stored(stats) for code, stats in regions.items()}))
    assert any(d["k"] == "sum" and d["n"] > 1 for _, deltas in run() for d in deltas)
