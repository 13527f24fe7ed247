"""Region deltas summed: what a run of one message's per-event deltas does to a region, as one delta.

The participant stage makes a delta per event and change (``rules.apply_event``); the region stage applied each
of them to the region's state, a few dictionary updates and a stall ``record`` apiece, after each had been
encoded, sent, fetched and decoded on its own. Every one of them is a count, a sum or a maximum, so a run of them
adds up to one delta of kind ``sum`` (``add``), and applying that (``apply_in_place``) leaves the region's state
exactly as applying the run one by one would (``tests/test_delta_sums.py``, on the simulator's events; the
independent fold in ``tests/expected.py`` still applies them one by one).

Two things in a region's state depend on *when* a delta is applied, not only on what it is: whether an event's
day counts as a correction and whether its member moves are kept for the days ahead of the evaluation frontier.
Both depend on ``evaluated``, which only a tick moves; a sum never spans a tick (``participants.fold_message``
closes the open sums at each), and it keeps its days so that both are decided when it is applied, as they were
for each delta.

The replay rule (docs/reliability.md, "Write order") holds as before: a sum's ``src`` is the
[partition, offset, index] of the last delta in it, numbered as the deltas are, so a re-read of a message gives the
same sums (no state of it durable) or sums whose indices are no larger than the first reading's (the ones after
it), all of which the region stage had been sent already.
"""
from __future__ import annotations

from streams import stall
from streams.clock import DAY_MS, is_correction
from streams.rules import BREAKDOWNS, COUNTED, NO_DEMOGRAPHY
from streams.state import RegionState

SUM = "sum"


def new(region: str) -> dict:
    """An empty sum for a region: ``n`` deltas in it, ``at`` the latest event time."""
    return {"k": SUM, "region": region, "n": 0, "at": 0}


def _add(d: dict, key: str, by: int = 1) -> None:  # zeros are kept: applying one touches what the deltas touched
    d[key] = d.get(key, 0) + by


def _sub(total: dict, field: str) -> dict:
    found = total.get(field)
    if found is None:
        found = total[field] = {}
    return found


def add(total: dict, delta: dict) -> None:
    """Fold one of ``rules.apply_event``'s region deltas (not a tick) into ``total``, as
    ``rules.apply_delta_in_place`` would apply it (the same branches, the same keys)."""
    kind, at = delta["k"], delta["at"]
    total["n"] += 1
    if at > total["at"]:
        total["at"] = at
    if delta.get("late"):
        total["late"] = total.get("late", 0) + 1
    day = str(at // DAY_MS)
    if kind in COUNTED:  # a correction or not: decided when applied
        _add(_sub(total, "cd"), day)
    # stall.record: the daily counts, and the member moves by day (kept if ahead of the frontier when applied)
    if kind == "reg" and delta["cohort"] == "VULNERABLE_WORKER":
        _sub(total, "days").setdefault(day, [0, 0])[0] += 1
    elif kind == "contrib":
        _sub(total, "days").setdefault(day, [0, 0])[1] += 1
    found = stall.move_of(delta)
    if found is not None:
        group, move = found
        _add(_sub(total, "moves").setdefault(day, {}).setdefault(group, {}), move)
    if kind == "reg":
        cohort, funding, pt = delta["cohort"], delta["funding"], str(delta["pt"])
        _add(_sub(total, "registered"), cohort)
        _add(_sub(total, "hist").setdefault(cohort, {}), pt)
        _add(_sub(total, "fhist").setdefault(f"{cohort}|{funding}", {}), pt)
        if at > total.get("lr", 0):
            total["lr"] = at
        _people(total, cohort, delta.get("dm"), 1)
        if cohort == "VULNERABLE_WORKER":
            _add(_sub(total, "quota"), funding)
    elif kind == "pt":
        hist = _sub(total, "hist").setdefault(delta["cohort"], {})
        if delta["from"] is not None:
            _add(hist, str(delta["from"]), -1)
        _add(hist, str(delta["to"]))
        if delta.get("funding"):
            fhist = _sub(total, "fhist").setdefault(f"{delta['cohort']}|{delta['funding']}", {})
            if delta["from"] is not None:
                _add(fhist, str(delta["from"]), -1)
            _add(fhist, str(delta["to"]))
    elif kind == "contrib":
        contrib = total.setdefault("contrib", [0, 0])
        contrib[0] += 1
        contrib[1] += delta["amount"]
        if "funding" in delta:
            _add(_sub(total, "paid"), f"{delta['period'] // 12}|{delta['funding']}", delta["amount"])
    elif kind == "claim":
        count = _sub(total, "claims").setdefault(delta["program"], {}).setdefault(delta["status"], [0, 0])
        count[0] += 1
        count[1] += delta["amount"]
        if delta["status"] == "PAID":
            _add(_sub(total, "paid_claims"), delta["program"], delta["amount"])
    elif kind == "turnaround":
        _add(_sub(total, "turnaround").setdefault(delta["program"], {}), str(delta["days"]))
    elif kind == "exit":
        cohort = delta["cohort"]
        exited = _sub(total, "exited").setdefault(cohort, {})
        _add(exited, delta["reason"])
        if "was" in delta:
            _add(exited, delta["was"], -1)
            return
        pt = str(delta["pt"])
        _add(_sub(total, "hist").setdefault(cohort, {}), pt, -1)
        _add(_sub(total, "fhist").setdefault(f"{cohort}|{delta['funding']}", {}), pt, -1)
        _people(total, cohort, delta.get("dm"), -1)
        if cohort == "VULNERABLE_WORKER":
            _add(_sub(total, "quota"), delta["funding"], -1)


def _people(total: dict, cohort: str, dm: list | None, by: int) -> None:
    cells = _sub(total, "people").setdefault(cohort, {})
    for dimension, value in zip(BREAKDOWNS, dm or NO_DEMOGRAPHY):
        _add(cells.setdefault(dimension, {}), value, by)


def _merge(into: dict, counts: dict) -> None:
    """``into`` += ``counts``, a key whose count reaches zero removed (``rules._inc`` for each)."""
    for key, n in counts.items():
        total = into.get(key, 0) + n
        if total:
            into[key] = total
        else:
            into.pop(key, None)


def _merge_nested(into: dict, nested: dict) -> None:
    for key, counts in nested.items():
        _merge(into.setdefault(key, {}), counts)


def apply_in_place(stats: RegionState, total: dict) -> None:
    """Apply a sum to a region's state: the state every delta in it, applied in turn, would have left."""
    if total["at"] > stats.clock:
        stats.clock = total["at"]
    if total.get("late"):
        stats.late = stats.late + total["late"]
    frontier = stats.evaluated
    if "cd" in total and frontier is not None:
        stats.corrections = stats.corrections + sum(
            n for day, n in total["cd"].items() if is_correction(int(day) * DAY_MS, frontier))
    for day, (registrations, contributions) in total.get("days", {}).items():
        counts = stats.days.setdefault(day, [0, 0])
        counts[0] += registrations
        counts[1] += contributions
    if "moves" in total:
        ahead = None
        for day, groups in total["moves"].items():
            if frontier is None or int(day) > frontier:
                if ahead is None:
                    ahead = stall.ahead_of(stats)  # before ``recent`` changes: it may be summed from it
                stall.add_moves(ahead, groups)
                _merge_nested(stats.recent.setdefault(day, {}), groups)
    if "registered" in total:
        _merge(stats.registered, total["registered"])
    for field in ("hist", "fhist", "turnaround", "exited"):
        if field in total:
            _merge_nested(getattr(stats, field), total[field])
    if total.get("lr", 0) > stats.last_registration:
        stats.last_registration = total["lr"]
    for cohort, dimensions in total.get("people", {}).items():
        _merge_nested(stats.people.setdefault(cohort, {}), dimensions)
    if "quota" in total:
        _merge(stats.quota_used, total["quota"])
    if "contrib" in total:
        stats.contrib = [stats.contrib[0] + total["contrib"][0], stats.contrib[1] + total["contrib"][1]]
    if "paid" in total:
        _merge(stats.paid, total["paid"])
    for program, statuses in total.get("claims", {}).items():
        per_program = stats.claims.setdefault(program, {})
        for status, (count, amount) in statuses.items():
            before = per_program.get(status, [0, 0])
            per_program[status] = [before[0] + count, before[1] + amount]
