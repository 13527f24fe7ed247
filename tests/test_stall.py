"""Stall rules as pure functions: each rule fires and resolves at exact event-time days, silence is detected,
noisy input does not flap, and the result does not depend on how source partitions interleave."""
from __future__ import annotations

import random
from datetime import datetime, timezone

from hypothesis import given, settings, strategies as st

from streams import rules, stall
from streams.state import RegionState
from streams.reference import regions
from streams.stall import DAY_MS, StallRules

REGION = regions()["64.07"]  # Kutai Barat
SCALE = 0.01
END_DAY = stall.month_day("2026-12")
DAY0 = int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp() * 1000) // DAY_MS
RULES = StallRules()


def reg(day: int, n: int = 0, cohort: str = "VULNERABLE_WORKER") -> dict:
    at = (DAY0 + day) * DAY_MS + 3_600_000 + n
    return {"k": "reg", "region": REGION.code, "cohort": cohort, "funding": "APBD_PROVINCE",
            "pt": rules.period_of_ms(at) - 1, "at": at}


def contrib(day: int) -> dict:
    return {"k": "contrib", "region": REGION.code, "amount": 16_800, "at": (DAY0 + day) * DAY_MS + 7_200_000}


def pay(day: int, old: int, new: int, cohort: str = "VULNERABLE_WORKER") -> dict:
    return {"k": "pt", "region": REGION.code, "cohort": cohort, "from": old, "to": new,
            "at": (DAY0 + day) * DAY_MS + 7_200_000}


def run(deltas: list[dict], days: int, rules_: StallRules = RULES, scale: float = SCALE) -> list[tuple[str, str, str]]:
    """Apply ``deltas`` (in event-time order) with a daily tick after each day's events; the transitions as
    (kind, status, ISO day)."""
    return simulate(deltas, days, rules_, scale)[0]


def simulate(deltas: list[dict], days: int, rules_: StallRules = RULES, scale: float = SCALE) -> tuple[list, dict]:
    """``run``, also returning the region's state at the end."""
    stats, out = None, []
    by_day: dict[int, list[dict]] = {}
    for d in deltas:
        by_day.setdefault(d["at"] // DAY_MS - DAY0, []).append(d)
    for day in range(days):
        for d in by_day.get(day, []):
            stats = rules.apply_delta(stats, d, REGION, scale)
        stats = rules.apply_delta(stats, {"k": "tick", "at": (DAY0 + day + 1) * DAY_MS, "src": [0, day, 0]},
                                  REGION, scale)
        for a in stall.advance(stats, REGION, min(stats.wm.values()), rules_, 3, scale, END_DAY):
            out.append((a["kind"], a["status"], stall.iso_day(a["occurred_at"] // DAY_MS)))
    return out, stats


def iso(day: int) -> str:
    return stall.iso_day(DAY0 + day)


def test_no_registrations_fires_after_the_window_and_resolves_when_registrations_resume():
    deltas = [reg(d) for d in range(20)] + [contrib(d) for d in range(0, 120, 5)] + [reg(d) for d in range(60, 90)]
    events = [t for t in run(deltas, 100) if t[0] == "NO_REGISTRATIONS"]
    # last registration on day 19; day 34 is the first whose 14-day window [20, 33] is empty; 3 days to fire
    # registrations resume on day 60: day 61's window holds one; clear for 3 days -> resolved on day 63
    assert events == [("NO_REGISTRATIONS", "FIRING", iso(36)), ("NO_REGISTRATIONS", "RESOLVED", iso(63))]


def test_a_silent_region_is_detected_from_the_clock_alone():
    """No event at all for the region: the ticks (the stream's clock across all regions) still age it."""
    events = run([], 40)
    assert ("NO_REGISTRATIONS", "FIRING", iso(16)) in events  # evaluated from day 0: 14 quiet days + 3 for-days
    assert not any(k == "CONTRIBUTIONS_STOPPED" for k, _, _ in events)  # nobody registered: nothing to pay


def month_day(month: int, day_of_month: int) -> int:
    """Day number (from DAY0) of a day of 2025 month ``month`` (1-12, may run into 2026)."""
    year, month = 2025 + (month - 1) // 12, (month - 1) % 12 + 1
    return (int(datetime(year, month, day_of_month, tzinfo=timezone.utc).timestamp() * 1000) // DAY_MS) - DAY0


def funded(funder: str, cohort: str, n: int, paid: dict[int, int]) -> list[dict]:
    """``n`` members of ``funder`` registered on day 0 (paid through 2024-12); ``paid``: day -> paid-through
    month of 2025 from that day on."""
    deltas = [{**reg(0, i, cohort), "funding": funder} for i in range(n)]
    old = rules.period_of_ms((DAY0 * DAY_MS)) - 1
    for day, month in sorted(paid.items()):
        new = 2025 * 12 + month - 1
        deltas += [{**pay(day, old, new, cohort), "funding": funder} for _ in range(n)]
        old = new
    return deltas


def test_contributions_stopped_is_judged_per_funder_against_the_period_due():
    """April 2025: the province's transfer is missed (paid with May's on 10 May); employers pay every month on the
    5th; the regency pays a quarter ahead. Only the province alerts, from the day April's payment is due (the
    20th) plus the 3 days a condition must hold, and it resolves 3 days after the late payment."""
    months = range(1, 10)
    province = funded("APBD_PROVINCE", "VULNERABLE_WORKER", 20,
                      {month_day(m, 10): m for m in months if m != 4})
    employer = funded("EMPLOYER", "NON_CIVIL_SERVANT", 10, {month_day(m, 5): m for m in months})
    regency = funded("APBD_REGENCY", "VULNERABLE_WORKER", 10, {month_day(m, 10): m + 2 for m in (1, 4, 7)})
    self_paid = funded("SELF", "VULNERABLE_WORKER", 10, {})  # nobody pays: self-payers are not a funder's transfer
    deltas = sorted(province + employer + regency + self_paid + [contrib(d) for d in range(260)],
                    key=lambda d: d["at"])
    events = [t for t in run(deltas, month_day(10, 1)) if t[0] == "CONTRIBUTIONS_STOPPED"]
    assert events == [("CONTRIBUTIONS_STOPPED", "FIRING", iso(month_day(4, 22))),
                      ("CONTRIBUTIONS_STOPPED", "RESOLVED", iso(month_day(5, 13)))]
    _, stats = simulate([d for d in deltas if d["at"] < (DAY0 + month_day(4, 25)) * DAY_MS], month_day(4, 25))
    view = rules.region_view(REGION, stats, (DAY0 + month_day(4, 25)) * DAY_MS, 3, SCALE)
    firing = [a for a in view["alerts"] if a["kind"] == "CONTRIBUTIONS_STOPPED"]
    assert [(a["kind"], a["funder"]) for a in firing] == [("CONTRIBUTIONS_STOPPED", "APBD_PROVINCE")]
    assert firing[0]["alert_id"] == "64.07:contributions_stopped.apbd_province:2025-04-22"
    # protection per funder on 25 April: the province's members in arrears for April, the others protected
    funders = {c: view["cohorts"][c]["funders"] for c in ("VULNERABLE_WORKER", "NON_CIVIL_SERVANT")}
    assert funders["VULNERABLE_WORKER"]["APBD_PROVINCE"] == {"protected": 0, "in_arrears": {"1": 20, "2": 0, "3": 0},
                                                              "ended": 0}
    assert funders["VULNERABLE_WORKER"]["APBD_REGENCY"]["protected"] == 10
    assert funders["NON_CIVIL_SERVANT"] == {"EMPLOYER": {"protected": 10, "in_arrears": {"1": 0, "2": 0, "3": 0},
                                                         "ended": 0}}


def test_a_funder_too_small_to_judge_does_not_alert():
    deltas = funded("APBD_PROVINCE", "VULNERABLE_WORKER", RULES.funder_min_members - 1, {})
    assert not [t for t in run(deltas + [contrib(d) for d in range(100)], 100) if t[0] == "CONTRIBUTIONS_STOPPED"]


def test_coverage_falling_when_payments_stop_fires_in_the_month_they_stop():
    """40 participants register in January 2025 (paid through December 2024) and pay monthly up to 2025-03;
    then payments stop. April's payment is due by the 20th: from then the protected share (members paid for the
    period due) is 0, and the rule fires 3 days later — not in July, when the members' arrears would end their
    membership (the rule before 2026-11-26 watched members and fired then)."""
    deltas = [reg(0, i) for i in range(40)]
    for month, day in ((2025 * 12 + 0, 10), (2025 * 12 + 1, 40), (2025 * 12 + 2, 70)):
        deltas += [pay(day, month - 1, month) for _ in range(40)]
    deltas += [contrib(d) for d in range(0, 260, 3)]  # (others keep paying in: no other rule interferes)
    events = run(sorted(deltas, key=lambda d: d["at"]), 260)
    falling = [t for t in events if t[0] == "COVERAGE_FALLING"]
    april_20 = (int(datetime(2025, 4, 20, tzinfo=timezone.utc).timestamp() * 1000) // DAY_MS) - DAY0
    assert falling[0] == ("COVERAGE_FALLING", "FIRING", iso(april_20 + 2))
    # the drop ages out of the 30-day window: "falling" resolves (the arrears stay visible in /regions)
    assert falling[1][1] == "RESOLVED" and len(falling) == 2


def test_a_month_paid_on_the_10th_is_not_a_fall():
    """Budget funders pay the month around the 10th: between the 1st and the 10th everyone is "behind" the
    calendar month, but nothing is due before the 20th, so the protected share does not dip every month."""
    deltas = [reg(0, i) for i in range(40)]
    months = [(2025 * 12 + m, datetime(2025, m + 1, 10, tzinfo=timezone.utc)) for m in range(8)]
    for month, when in months:
        day = int(when.timestamp() * 1000) // DAY_MS - DAY0
        deltas += [pay(day, month - 1, month) for _ in range(40)]
    deltas += [contrib(d) for d in range(0, 260, 3)]
    assert not [t for t in run(sorted(deltas, key=lambda d: d["at"]), 240) if t[0] == "COVERAGE_FALLING"]


def test_pace_below_target_reports_a_forecast_and_resolves_when_the_pace_picks_up():
    """Full scale: Kutai Barat's quota needs ~5 registrations a day to be filled by the end of 2026."""
    slow = [reg(d, 0) for d in range(0, 120, 10)]  # one every ten days: far too slow
    fast = [reg(d, i) for d in range(120, 200) for i in range(10)]  # then ten a day: enough
    events = [t for t in run(slow + fast, 200, scale=1.0) if t[0] == "PACE_BELOW_TARGET"]
    # judged once 30 days of history exist (day 30), fires after 3 days; resolves once the 30-day pace passes
    # 1.1x the needed pace (~17 days into the fast phase), again after 3 days
    assert events[0] == ("PACE_BELOW_TARGET", "FIRING", iso(32))
    assert len(events) == 2 and events[1][1] == "RESOLVED" and iso(130) < events[1][2] < iso(150)


def test_a_fill_date_beyond_any_calendar_is_never_and_does_not_stop_the_evaluation():
    """One registration in 30 days against a quota of ~2 million places (Kutai Barat's at scale 400): the fill
    date would fall after the year 9999, which no date can show (formatting it crashed the region stage)."""
    events = [reg(0, 0), reg(40, 0)]
    transitions, stats = simulate(events, 60, scale=400.0)
    assert stats.forecast_fill_day is None
    pace = [t for t in transitions if t[0] == "PACE_BELOW_TARGET"]
    assert pace and pace[0][1] == "FIRING"
    # within the horizon the forecast is a date
    _, near = simulate([reg(d, i) for d in range(60) for i in range(3)], 60, scale=1.0)
    assert near.forecast_fill_day is not None and stall.iso_day(near.forecast_fill_day) > "2026"


def test_noisy_input_does_not_flap():
    """A condition that holds on alternate days never fires (it must hold ``for_days`` in a row)."""
    alert, changes = None, []
    for day in range(100):
        alert, change = stall._step(alert, day % 2 == 0, day % 2 == 1, day, 3)
        changes.append(change)
    assert not any(changes)
    # hysteresis: after firing, a value between the fire and resolve thresholds does not resolve
    alert, _ = stall._step(None, True, False, 0, 1)
    alert, change = stall._step(alert, False, False, 1, 1)
    assert alert["status"] == "firing" and change is None


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_alerts_do_not_depend_on_how_two_source_partitions_interleave(rnd: random.Random):
    """Events arrive from two source partitions, each in order and each followed by its own ticks; the region's
    low watermark is the minimum. Any interleaving gives the same transitions at the same days."""
    deltas = [reg(d) for d in range(25)] + [contrib(d) for d in range(0, 40, 2)] + [reg(d) for d in range(70, 80)]
    deltas.sort(key=lambda d: d["at"])
    sources: list[list[dict]] = [[], []]
    for i, d in enumerate(deltas):
        sources[i % 2].append(d)
    for s, items in enumerate(sources):  # each source ticks at every day boundary it passes
        ticked = []
        for day in range(100):
            ticked += [d for d in items if d["at"] // DAY_MS - DAY0 == day]
            ticked.append({"k": "tick", "at": (DAY0 + day + 1) * DAY_MS, "src": [s, day, 0]})
        sources[s] = ticked

    def replay(order: list[int]) -> list:
        stats, out, pos = None, [], [0, 0]
        for s in order:
            d = sources[s][pos[s]]
            pos[s] += 1
            stats = rules.apply_delta(stats, d, REGION, SCALE)
            if d["k"] == "tick" and len(stats.wm) == 2:
                out += stall.advance(stats, REGION, min(stats.wm.values()), RULES, 3, SCALE, END_DAY)
        return out

    in_turn = [0] * len(sources[0]) + [1] * len(sources[1])
    shuffled = in_turn[:]
    rnd.shuffle(shuffled)
    assert replay(in_turn) == replay(shuffled)
    assert replay(in_turn)  # something did fire


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=40))
def test_one_tick_per_batch_gives_the_transitions_of_a_tick_per_day(chunks: list[int]):
    """Ingest passes on at most one watermark per input partition and batch (the clock where the batch left it): a
    batch of a backlog spans many days. Evaluating the days a coarse tick passes over, with the later days' events
    already applied, gives the same transitions on the same days as a tick after every day — the first tick too:
    evaluation starts the day after the region's first day of data, wherever the first tick lands."""
    deltas = [reg(d) for d in range(25)] + [contrib(d) for d in range(0, 40, 2)] + [reg(d) for d in range(70, 80)]
    daily = run(deltas, 100)
    assert daily  # something fires
    stats, out, day = None, [], 0
    by_day: dict[int, list[dict]] = {}
    for d in deltas:
        by_day.setdefault(d["at"] // DAY_MS - DAY0, []).append(d)
    for size in [*chunks, 100]:
        end = min(day + size, 100)
        for d in (d for later in range(day, end) for d in by_day.get(later, [])):
            stats = rules.apply_delta(stats, d, REGION, SCALE)
        stats = rules.apply_delta(stats, {"k": "tick", "at": (DAY0 + end) * DAY_MS, "src": [0, end, 0]}, REGION,
                                  SCALE)
        out += [(a["kind"], a["status"], stall.iso_day(a["occurred_at"] // DAY_MS))
                for a in stall.advance(stats, REGION, min(stats.wm.values()), RULES, 3, SCALE, END_DAY)]
        day = end
        if day == 100:
            break
    assert out == daily


def as_of_day_by_day(stats: RegionState, day: int) -> tuple[dict, dict, dict]:
    """The as-of view the simple way (the code before 2026-11-26): each later day's moves undone in turn (the same
    per-move arithmetic, ``stall._undo``; what differs is which days' moves are undone or done again)."""
    hist = {c: dict(h) for c, h in stats.hist.items()}
    fhist = {g: dict(h) for g, h in stats.fhist.items()}
    registered = dict(stats.registered)
    for later, groups in stats.recent.items():
        if int(later) >= day:
            stall._undo(hist, fhist, registered, groups, 1)
    return hist, registered, fhist


def nonzero(view: tuple[dict, dict, dict]) -> tuple:
    hist, registered, fhist = view
    counts = lambda d: {k: v for k, v in d.items() if v}  # noqa: E731
    return ({c: counts(h) for c, h in hist.items() if counts(h)}, counts(registered),
            {g: counts(h) for g, h in fhist.items() if counts(h)})


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 40))
def test_the_as_of_view_equals_undoing_each_later_day_in_turn(rnd: random.Random, lag: int):
    """The moves ahead of the evaluation frontier are kept summed with the state (``ahead``), so an evaluated day
    undoes them at once: the view equals undoing each later day's moves in turn, for every day a catch-up
    evaluates, with the low watermark up to ``lag`` days behind the events; and ``ahead`` is always the sum of
    ``recent``, also for a state written before it existed."""
    deltas = sorted([reg(d, n) for d in range(60) for n in range(rnd.randint(0, 3))]
                    + [pay(d, rules.period_of_ms((DAY0 + d) * DAY_MS) - 1 - rnd.randint(0, 2),
                           rules.period_of_ms((DAY0 + d) * DAY_MS)) for d in range(5, 60, 3)], key=lambda d: d["at"])
    stats, checked, kept = RegionState(), 0, 0
    for i, delta in enumerate(deltas):
        rules.apply_delta_in_place(stats, delta, REGION, SCALE)
        if i % 7 == 0 and rnd.random() < 0.3:
            stats.ahead = None  # as restored from a changelog written by the code before
        day = delta["at"] // DAY_MS - lag
        if stats.evaluated is not None and day > stats.evaluated:
            for d in range(stats.evaluated + 1, day + 1):  # what a catch-up over these days would see
                assert nonzero(stall._as_of(stats, d)) == nonzero(as_of_day_by_day(stats, d))
                checked += 1
        stall.advance(stats, REGION, day * DAY_MS, RULES, 3, SCALE, END_DAY)
        summed: dict = {}
        for groups in stats.recent.values():
            stall.add_moves(summed, groups)
        if stats.ahead is not None:  # kept up to date (None: summed again on first use, as checked above)
            assert stats.ahead == summed
            kept += 1
    assert checked and kept


def test_alert_ids_are_stable_and_carry_no_personal_data():
    assert stall.alert_id("64.11", "NO_REGISTRATIONS", DAY0) == "64.11:no_registrations:2025-01-01"
    deltas = [reg(d) for d in range(5)]
    stats = None
    for d in deltas:
        stats = rules.apply_delta(stats, d, REGION, SCALE)
    alerts = []
    for day in range(1, 40):
        stats = rules.apply_delta(stats, {"k": "tick", "at": (DAY0 + day) * DAY_MS, "src": [0, day, 0]}, REGION, SCALE)
        alerts += stall.advance(stats, REGION, (DAY0 + day) * DAY_MS, RULES, 3, SCALE, END_DAY)
    assert alerts and all(set(a) >= {"alert_id", "region_code", "kind", "status", "severity", "occurred_at",
                                     "started_at", "summary", "details"} for a in alerts)
    assert all("Kutai Barat" in a["summary"] for a in alerts)


def test_a_late_event_is_a_correction_not_a_revision_of_evaluated_days():
    """docs/domain.md "Late data": an event of a day already evaluated is applied to every figure and counted as
    a correction; the transitions already emitted stand, and later evaluations see it inside their windows."""
    deltas = [reg(d) for d in range(10)] + [contrib(d) for d in range(0, 60, 5)]
    on_time = run(deltas, 30)
    assert ("NO_REGISTRATIONS", "FIRING", iso(26)) in on_time  # day 9 last; window [10, 23] empty on day 24
    stats, fired = None, []
    for day in range(31):  # the same days, the same way as run(): day 30 evaluated
        for d in (d for d in deltas if d["at"] // DAY_MS - DAY0 == day):
            stats = rules.apply_delta(stats, d, REGION, SCALE)
        stats = rules.apply_delta(stats, {"k": "tick", "at": (DAY0 + day) * DAY_MS, "src": [0, day, 0]}, REGION, SCALE)
        fired += stall.advance(stats, REGION, (DAY0 + day) * DAY_MS, RULES, 3, SCALE, END_DAY)
    assert [(a["kind"], a["status"]) for a in fired if a["kind"] == "NO_REGISTRATIONS"] == [
        ("NO_REGISTRATIONS", "FIRING")]
    registered = rules.region_view(REGION, stats, (DAY0 + 30) * DAY_MS, 3, SCALE)["registered"]
    late = {**reg(25), "late": 1}  # a registration of day 25 arriving after day 30 was evaluated
    stats = rules.apply_delta(stats, late, REGION, SCALE)
    view = rules.region_view(REGION, stats, (DAY0 + 30) * DAY_MS, 3, SCALE)
    assert view["registered"] == registered + 1  # counted
    assert view["late"] == {"events": 1, "corrections": 1}
    assert view["stalled"]  # no revision of what was evaluated ...
    later = []
    for day in range(31, 36):  # ... but the next days' windows hold it: clear for 3 days resolves
        later += stall.advance(stats, REGION, (DAY0 + day) * DAY_MS, RULES, 3, SCALE, END_DAY)
    assert [(a["kind"], a["status"], stall.iso_day(a["occurred_at"] // DAY_MS)) for a in later
            if a["kind"] == "NO_REGISTRATIONS"] == [("NO_REGISTRATIONS", "RESOLVED", iso(33))]


def test_no_registrations_between_tranches_is_not_a_stall():
    """The region's only funder enrols from day 0 to day 29 and again from day 60: 30 quiet days in between are
    normal; a stall inside a tranche still fires once the tranche has been open long enough."""
    from dataclasses import replace
    from types import MappingProxyType
    region = replace(REGION, quota=MappingProxyType({"APBD_PROVINCE": REGION.quota["APBD_PROVINCE"]}),
                     enrolment=MappingProxyType({"APBD_PROVINCE": ((DAY0, DAY0 + 29), (DAY0 + 60, DAY0 + 400))}))
    deltas = [reg(d) for d in range(0, 30)] + [reg(d) for d in range(60, 70)] + [contrib(d) for d in range(0, 200, 5)]
    stats, out = None, []
    for day in range(130):
        for d in [d for d in deltas if d["at"] // DAY_MS - DAY0 == day]:
            stats = rules.apply_delta(stats, d, region, SCALE)
        stats = rules.apply_delta(stats, {"k": "tick", "at": (DAY0 + day + 1) * DAY_MS, "src": [0, day, 0]},
                                  region, SCALE)
        out += [(a["kind"], a["status"], stall.iso_day(a["occurred_at"] // DAY_MS))
                for a in stall.advance(stats, region, min(stats.wm.values()), RULES, 3, SCALE, END_DAY)
                if a["kind"] == "NO_REGISTRATIONS"]
    # closed on days 30-59: nothing; open again from 60, registrations until 69, none from 70: day 84's window
    # [70, 83] is empty, and the tranche has been open 14 days by then: fires on day 86
    assert out == [("NO_REGISTRATIONS", "FIRING", iso(86))]
    assert stall.tranche_open_since(region, DAY0 + 45) is None and stall.tranche_open_since(REGION, DAY0) < DAY0
