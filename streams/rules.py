"""Domain rules as plain functions: pseudonyms, periods, participant transitions, region aggregates, views.

The agents call these; tests call them directly. State is typed (streams/state.py); the changelogs carry its
versioned stored form.
"""
from __future__ import annotations

import functools
import hashlib
from datetime import datetime, timezone

import msgspec

from streams import clock, demography, stall
from streams.reference import Region
from streams.state import Participant, RegionState, copy_region

SHA256_BLOCK = 64  # bytes: HMAC pads its key to the hash's block size
_IPAD = bytes(x ^ 0x36 for x in range(256))  # byte translations XORing the padded key (RFC 2104)
_OPAD = bytes(x ^ 0x5C for x in range(256))
SEEN_LIMIT = 256  # event-id hashes kept per participant for dedup (~20 years of monthly payments)
MONTHLY_FEE_IDR = 16_800  # a sponsored vulnerable worker: JKK Rp10,000 + JKM Rp6,800 a month (docs/domain.md)
PRE_REGISTRATION_LIMIT = 12  # contributions read before their participant's registration, kept with their time
OPEN_CLAIMS_LIMIT = 32  # claims of one participant waiting for their other end (submitted or paid) at most
DAY_MS = 86_400_000
PROGRAMME_COHORTS = ("VULNERABLE_WORKER", "NON_CIVIL_SERVANT")
COHORTS = ("VULNERABLE_WORKER", "NON_CIVIL_SERVANT", "GENERAL")
# Exit reasons, strongest first: a later-known stronger reason replaces a weaker one (arrival order across topics
# is not defined; the outcome must not depend on it)
EXIT_REASONS = ("death", "wage_employment")
NO_DEMOGRAPHY = [demography.UNKNOWN] * 4
COUNTED = ("reg", "contrib", "claim")  # the deltas of applied events whose day may be a correction


# -- pseudonyms and periods -------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _hmac_pads(key: bytes) -> tuple:
    """HMAC-SHA256's two keyed hash states (RFC 2104: the key, hashed when longer than a block, padded to the
    block and XORed with 0x36 and 0x5c), computed once per key: ``hmac.new`` pads and hashes the key again on
    every call."""
    if len(key) > SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(SHA256_BLOCK, b"\0")
    return (hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD)))


def participant_key(nik: str, key: bytes) -> str:
    """Keyed HMAC-SHA256 of the NIK (hex, 128 bits kept): stable, not reversible without the key. The same value
    as ``hmac.new(key, nik.encode(), hashlib.sha256).hexdigest()[:32]`` (tests/test_rules.py): 1.7 µs against
    2.4 µs, timed alternately in one process (README, "Benchmark")."""
    inner, outer = _hmac_pads(key)
    inner, outer = inner.copy(), outer.copy()
    inner.update(nik.encode())
    outer.update(inner.digest())
    return outer.hexdigest()[:32]


def event_hash(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big", signed=True)


def period_index(period: str) -> int:
    """'2025-03' -> months since year 0 (2025*12 + 2)."""
    year, month = period.split("-")
    return int(year) * 12 + int(month) - 1


def period_of_ms(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return d.year * 12 + d.month - 1


def period_str(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


# -- participant state --------------------------------------------------------------------------------
def apply_event(state: Participant | None, kind: str, event: dict) -> tuple[Participant, list[dict], bool]:
    """Apply one validated event to a participant. Returns (new state, region deltas, duplicate?).

    ``event``: the pseudonymous event (no NIK): event_id, occurred_at, region_code, and per kind:
    Registration cohort/funding_source/segment; Contribution period/amount_idr/funding_source;
    Claim program/status/amount_idr. Deltas are dicts for the region stage.
    """
    state = msgspec.structs.replace(state) if state is not None else Participant()  # a copy: fields are replaced
    h = event_hash(event["event_id"])
    if h in state.seen:
        return state, [], True
    state.seen = (state.seen + [h])[-SEEN_LIMIT:]
    at, region = event["occurred_at"], event["region_code"]
    deltas: list[dict] = []
    if kind == "Registration":
        if not state.reg:
            # paid-through starts the month before registration: the grace period runs from registration
            start = period_of_ms(at) - 1
            # contributions read before the registration (another topic: arrival order across topics is not
            # defined) count from when they happened: those paid before registering set where it starts, later
            # ones move it at their own time, as if they had arrived after it (the stall rules' as-of figures)
            pre, paid_through = state.pre or [], state.pt
            state.pre = None
            if state.x:  # gone before registering: no member moves, only where its place was
                first, later = max(start, paid_through if paid_through is not None else start), []
            else:  # the last of ``later``: whatever the bounded list dropped
                first = max([start, *(paid for paid, paid_at in pre if paid_at <= at)])
                later = sorted((paid_at, paid) for paid, paid_at in pre if paid_at > at) + [(at, paid_through)]
            state.reg, state.r, state.c, state.f, state.s = (True, region, event["cohort"], event["funding_source"],
                                                             event["segment"])
            state.p, state.dm, state.pt = list(event["programs"]), list(event.get("demo") or NO_DEMOGRAPHY), first
            deltas.append({"k": "reg", "region": region, "cohort": state.c, "funding": state.f,
                           "pt": state.pt, "dm": state.dm, "at": at})
            for paid_at, paid in later:
                if paid is not None and paid > state.pt:
                    deltas.append({"k": "pt", "region": region, "cohort": state.c, "funding": state.f,
                                   "from": state.pt, "to": paid, "at": paid_at})
                    state.pt = paid
            if state.x:  # the exit arrived first (late data is data): registered, and gone
                deltas.append(_exit(state, at))
        elif state.c == "VULNERABLE_WORKER" and event["segment"] == "PU":
            # registered again as a wage earner (an employer pays now): the sponsored place ends
            deltas += _leave(state, "wage_employment", at)
        # any other second registration of a registered participant changes nothing (docs/domain.md)
    elif kind == "Contribution":
        paid = period_index(event["period"])
        old = state.pt
        if not state.reg:  # kept until the registration comes (bounded: a year of monthly payments)
            state.pre = ((state.pre or []) + [[paid, at]])[-PRE_REGISTRATION_LIMIT:]
        if old is None or paid > old:
            state.pt = paid
            if state.reg and not state.x:  # after an exit, money is counted but moves no member
                deltas.append({"k": "pt", "region": state.r, "cohort": state.c, "funding": state.f,
                               "from": old, "to": paid, "at": at})
        if state.x and state.xa is not None and at < state.xa and paid > state.xp:
            # paid before leaving but read after the exit (another topic): the months move when they were paid,
            # and back at the exit, which took the member out of the bucket it had then — the stall rules'
            # as-of figures do not depend on which topic was read first (the final figures do not change)
            was = state.xp
            move = {"k": "pt", "region": state.r, "cohort": state.c, "funding": state.f}
            deltas += [{**move, "from": was, "to": paid, "at": at}, {**move, "from": paid, "to": was, "at": state.xa}]
            state.xp = paid
        deltas.append({"k": "contrib", "region": state.r or region, "amount": event["amount_idr"],
                       "funding": event["funding_source"], "period": paid, "at": at})
    elif kind == "Claim":
        deltas.append({"k": "claim", "region": region, "program": event["program"], "status": event["status"],
                       "amount": event["amount_idr"], "at": at})
        if event.get("claim_id"):
            turnaround = _track_claim(state, event["claim_id"], event["status"], at)
            if turnaround is not None:
                deltas.append({"k": "turnaround", "region": region, "program": event["program"],
                               "days": turnaround, "at": at})
        death = event["program"] == "JKM" or (event["program"] == "JKK" and event.get("death"))
        if death and event["status"] == "PAID":
            deltas += _leave(state, "death", at)  # a paid death benefit ends participation, frees the slot
    if event.get("late"):  # counted once per event, on its first delta (a move has only an exit)
        if not deltas:  # an event that changes nothing (a second registration) still arrived late
            deltas.append({"k": "late", "region": state.r or region, "at": at})
        deltas[0]["late"] = 1
    return state, deltas, False


def _leave(state: Participant, reason: str, at: int) -> list[dict]:
    """The participant leaves for ``reason``; returns the region deltas. Already gone for a weaker reason (a move
    to wage employment, then the death benefit): only the count by reason moves. Not registered yet: the reason
    waits in the state for the registration (late data is data)."""
    was = state.x
    if was and EXIT_REASONS.index(was) <= EXIT_REASONS.index(reason):
        return []
    state.x = reason
    if not state.reg:
        return []
    if was:
        return [{"k": "exit", "region": state.r, "cohort": state.c, "reason": reason, "was": was, "at": at}]
    return [_exit(state, at)]


def _exit(state: Participant, at: int) -> dict:
    """The region delta of a participant leaving (``state.x``: why): out of the members (its paid-through
    bucket), out of its funder's slots and its breakdown cells, counted by reason. When (``xa``) and from which
    bucket as of then (``xp``) are kept for payments made before it and read after it."""
    state.xa, state.xp = at, state.pt
    return {"k": "exit", "region": state.r, "cohort": state.c, "funding": state.f, "pt": state.pt,
            "dm": state.dm or NO_DEMOGRAPHY, "reason": state.x, "at": at}


def _track_claim(state: Participant, claim_id: str, status: str, at: int) -> int | None:
    """Pair a claim's SUBMITTED and PAID events (in either order: late data is data) in the participant's state;
    returns the turnaround in whole days once both are known. A rejected claim is forgotten."""
    key = str(event_hash(claim_id))
    open_claims = dict(state.cl or {})
    ends = list(open_claims.get(key) or [None, None])  # [submitted at, paid at]
    if status == "REJECTED":
        open_claims.pop(key, None)
    elif status in ("SUBMITTED", "PAID"):
        slot = 0 if status == "SUBMITTED" else 1
        ends[slot] = at if ends[slot] is None else min(ends[slot], at)
        open_claims[key] = ends
    result = None
    if ends[0] is not None and ends[1] is not None and key in open_claims:
        result = max(ends[1] - ends[0], 0) // DAY_MS
        del open_claims[key]
    while len(open_claims) > OPEN_CLAIMS_LIMIT:  # one that never completes must not grow the state for ever
        del open_claims[next(iter(open_claims))]
    state.cl = open_claims
    return result


def percentile(histogram: dict[str, int], p: float) -> int | None:
    """Nearest-rank percentile of a {value: count} histogram: the least value with at least p % at or below it."""
    total = sum(histogram.values())
    if not total:
        return None
    need, seen = p / 100 * total, 0
    for value in sorted(histogram, key=int):
        seen += histogram[value]
        if seen >= need:
            return int(value)
    return None


# -- region aggregates --------------------------------------------------------------------------------
def _inc(d: dict, key: str, by: int = 1) -> None:
    d[key] = d.get(key, 0) + by
    if d[key] == 0:
        del d[key]


def apply_delta(stats: RegionState | None, delta: dict, region: Region, target_scale: float) -> RegionState:
    """Fold one participant delta into (a copy of) a region's aggregate."""
    stats = copy_region(stats)
    apply_delta_in_place(stats, delta, region, target_scale)
    return stats


#: the region deltas one event makes (``apply_event``), and the watermark tick
DELTA_KINDS = frozenset({"tick", "reg", "pt", "contrib", "claim", "turnaround", "exit", "late"})


class UnknownDelta(ValueError):
    """A region delta of a kind this code does not know (written by a newer worker): applying what it can of it
    would count it wrong, so the region stage fails instead (streams/faults.py: the worker exits without
    committing, and a worker that knows the kind re-reads it)."""


def apply_delta_in_place(stats: RegionState, delta: dict, region: Region, target_scale: float) -> None:
    kind = delta["k"]
    if kind not in DELTA_KINDS:
        raise UnknownDelta(f"region delta of kind {kind!r}: this worker knows {sorted(DELTA_KINDS)} and sums")
    if kind == "tick":  # the pipeline's low watermark from one source partition (streams/participants.py)
        source = str(delta["src"][0])
        stats.wm[source] = max(stats.wm.get(source, 0), delta["at"])
        return
    stats.clock = max(stats.clock, delta["at"])
    if delta.get("late"):
        stats.late = stats.late + 1
    if kind in COUNTED:
        if clock.is_correction(delta["at"], stats.evaluated):
            stats.corrections = stats.corrections + 1
    stall.record(stats, delta)
    if kind == "reg":
        cohort, funding = delta["cohort"], delta["funding"]
        _inc(stats.registered, cohort)
        _inc(stats.hist.setdefault(cohort, {}), str(delta["pt"]))
        _inc(_funder_hist(stats, delta), str(delta["pt"]))
        stats.last_registration = max(stats.last_registration, delta["at"])
        _count_people(stats, cohort, delta.get("dm"), 1)
        if cohort == "VULNERABLE_WORKER":
            _inc(stats.quota_used, funding)  # over the quota: counted all the same, shown as over_quota
    elif kind == "pt":
        hist = stats.hist.setdefault(delta["cohort"], {})
        if delta["from"] is not None:
            _inc(hist, str(delta["from"]), -1)
        _inc(hist, str(delta["to"]))
        if delta.get("funding"):
            fhist = _funder_hist(stats, delta)
            if delta["from"] is not None:
                _inc(fhist, str(delta["from"]), -1)
            _inc(fhist, str(delta["to"]))
    elif kind == "contrib":
        stats.contrib = [stats.contrib[0] + 1, stats.contrib[1] + delta["amount"]]
        if "funding" in delta:  # rupiah per funder and fiscal year (the calendar year of the period paid for)
            _inc(stats.paid, f"{delta['period'] // 12}|{delta['funding']}", delta["amount"])
    elif kind == "claim":
        per_program = stats.claims.setdefault(delta["program"], {})
        count, amount = per_program.get(delta["status"], [0, 0])
        per_program[delta["status"]] = [count + 1, amount + delta["amount"]]
    elif kind == "turnaround":  # SUBMITTED -> PAID, whole days, per programme
        _inc(stats.turnaround.setdefault(delta["program"], {}), str(delta["days"]))
    elif kind == "exit":  # out of the members and the funder's slots; counted by reason
        cohort = delta["cohort"]
        exited = stats.exited.setdefault(cohort, {})
        _inc(exited, delta["reason"])
        if "was" in delta:  # gone already: a stronger reason replaces the weaker one
            _inc(exited, delta["was"], -1)
            return
        _inc(stats.hist.setdefault(cohort, {}), str(delta["pt"]), -1)
        _inc(_funder_hist(stats, delta), str(delta["pt"]), -1)
        _count_people(stats, cohort, delta.get("dm"), -1)
        if cohort == "VULNERABLE_WORKER":
            _inc(stats.quota_used, delta["funding"], -1)


BREAKDOWNS = ("district", "age_band", "sex", "occupation")


def _funder_hist(stats: RegionState, delta: dict) -> dict:
    """The paid-through histogram of the delta's cohort and funder ("VULNERABLE_WORKER|APBD_PROVINCE")."""
    return stats.fhist.setdefault(f"{delta['cohort']}|{delta['funding']}", {})


def _count_people(stats: RegionState, cohort: str, dm: list | None, by: int) -> None:
    cells = stats.people.setdefault(cohort, {})
    for dimension, value in zip(BREAKDOWNS, dm or NO_DEMOGRAPHY):
        _inc(cells.setdefault(dimension, {}), value, by)


def active_count(hist: dict, clock_period: int, grace_months: int) -> int:
    """Members: paid for the clock's period, or in arrears for at most ``grace_months`` months counting it (BPJS
    Perdir 22/PERDIR.02/072022: arrears may be paid up to 3 months after protection ends; after more than 3 unpaid
    months membership ends). Paid through January: in arrears February to April, ended from May."""
    threshold = clock_period - grace_months
    return sum(n for pt, n in hist.items() if int(pt) >= threshold)


def protection(hist: dict, clock_period: int, grace_months: int) -> dict:
    """Who is protected now (paid for the clock's period; people in arrears are not protected), who is in
    arrears by how many months (1..``grace_months``), and whose membership ended."""
    arrears = {str(k): 0 for k in range(1, grace_months + 1)}
    protected = ended = 0
    for pt, n in hist.items():
        behind = clock_period - int(pt)
        if behind <= 0:
            protected += n
        elif behind <= grace_months:
            arrears[str(behind)] += n
        else:
            ended += n
    return {"protected": protected, "in_arrears": arrears, "ended": ended}


def region_view(region: Region, stats: RegionState | None, clock_ms: int, grace_months: int, target_scale: float) -> dict:
    """What /regions shows for one region at the stream clock ``clock_ms``."""
    stats = stats or RegionState()
    clock_period = period_of_ms(clock_ms) if clock_ms else 0
    in_force = region.quota_at(clock_period) if clock_ms else dict(region.quota)  # effective-dated (APBD-P)
    targets = region.target_at(clock_period) if clock_ms else dict(region.target)  # dated too
    ended = not_renewed(region, in_force)
    fhist = stats.fhist
    cohorts = {}
    for cohort in ("VULNERABLE_WORKER", "NON_CIVIL_SERVANT", "GENERAL"):
        registered = stats.registered.get(cohort, 0)
        hist = stats.hist.get(cohort, {})
        exited = dict(stats.exited.get(cohort, {}))
        if cohort == "VULNERABLE_WORKER":  # the members of a budget not renewed have left the programme
            hist, exited["budget_ended"] = without_ended(hist, fhist, ended)
            exited = {reason: n for reason, n in sorted(exited.items()) if n}
        active = active_count(hist, clock_period, grace_months) if clock_ms else registered
        target = round(targets.get(cohort, 0) * target_scale)
        cohorts[cohort] = {"registered": registered, "active": active,
                           "lapsed": registered - active - sum(exited.values()), "exited": exited,
                           "target": target, "coverage_ratio": round(active / target, 4) if target else None,
                           **(protection(hist, clock_period, grace_months) if clock_ms else
                              {"protected": 0, "in_arrears": {}, "ended": 0}),
                           # the same per funder: whose money is missing, a provincial transfer or an employer's
                           "funders": {group.partition("|")[2]: protection(h, clock_period, grace_months)
                                       for group, h in sorted(fhist.items())
                                       if group.partition("|")[0] == cohort and clock_ms and any(h.values())
                                       and not (cohort == "VULNERABLE_WORKER" and group.partition("|")[2] in ended)}}
    active = sum(cohorts[c]["active"] for c in PROGRAMME_COHORTS)
    target = sum(cohorts[c]["target"] for c in PROGRAMME_COHORTS)
    quota, fiscal_year = {}, clock_period // 12 if clock_ms else None
    for funding in sorted(set(in_force) | set(stats.quota_used)):
        total = round(in_force.get(funding, 0) * target_scale)
        used = 0 if funding in ended else stats.quota_used.get(funding, 0)
        paid = stats.paid.get(f"{fiscal_year}|{funding}", 0)
        budget = total * MONTHLY_FEE_IDR * 12  # the slots for a year: how PPU's budget line is computed
        funded = cohorts["VULNERABLE_WORKER"]["funders"].get(funding)
        quota[funding] = {"total": total, "used": used, "remaining": max(total - used, 0),
                          "over_quota": max(used - total, 0),  # now: slots freed by exits take over-quota members
                          "filled_this_month": funded["protected"] if funded else 0,
                          "fiscal_year": fiscal_year, "paid_idr": paid, "budget_idr": budget,
                          "absorption": round(paid / budget, 4) if budget else None}
    claims = {program: {status: {"count": c, "amount_idr": a} for status, (c, a) in sorted(per.items())}
              for program, per in sorted(stats.claims.items())}
    turnaround = {program: {"paid": sum(days.values()), "p50_days": percentile(days, 50),
                            "p90_days": percentile(days, 90)}
                  for program, days in sorted(stats.turnaround.items())}
    return {
        "code": region.code, "name": region.name, "kind": region.kind,
        "registered": sum(stats.registered.values()),
        "active": sum(cohorts[c]["active"] for c in cohorts),
        "lapsed": sum(cohorts[c]["lapsed"] for c in cohorts),
        "target": target, "coverage_ratio": round(active / target, 4) if target else None,
        "cohorts": cohorts, "quota": quota, "claims": claims, "claims_turnaround": turnaround,
        "contributions": {"count": stats.contrib[0], "amount_idr": stats.contrib[1]},
        "clock": period_str(clock_period) if clock_ms else None, "clock_ms": clock_ms or None,
        "alerts": [{"kind": stall.split_key(key)[0], "funder": stall.split_key(key)[1],
                    "severity": stall.SEVERITY[stall.split_key(key)[0]], "since": stall.iso_day(a["started"]),
                    "alert_id": stall.alert_id(region.code, key, a["started"])}
                   for key, a in sorted(stats.alerts.items()) if a["status"] == "firing"],
        "stalled": any(a["status"] == "firing" for a in stats.alerts.values()),
        "forecast_fill_date": stall.iso_day(stats.forecast_fill_day) if stats.forecast_fill_day else None,
        "evaluated_through": stall.iso_day(stats.evaluated) if stats.evaluated is not None else None,
        "evaluating_since": stall.iso_day(stats.first_day + 1) if stats.first_day is not None else None,
        "last_event_at": stats.clock or None, "last_registration_at": stats.last_registration or None,
        "late": {"events": stats.late, "corrections": stats.corrections},
        "breakdown": breakdown(stats),
        "alert_history": [{"kind": stall.split_key(key)[0], "funder": stall.split_key(key)[1],
                           "severity": stall.SEVERITY[stall.split_key(key)[0]], "status": status,
                           "since": stall.iso_day(started), "on": stall.iso_day(day)}
                          for key, status, started, day in reversed(stats.alert_log)],
    }


def not_renewed(region: Region, in_force: dict[str, int]) -> set[str]:
    """Funders whose budget for the region's vulnerable workers was not renewed: they had places (at the start or
    by a dated change) and have none in force now. Their members leave the programme (``exited.budget_ended``)."""
    return {funder for funder in region.funders if in_force.get(funder, 0) == 0}


def without_ended(hist: dict, fhist: dict, ended: set[str]) -> tuple[dict, int]:
    """A vulnerable-worker paid-through histogram without the members of the funders in ``ended`` (their
    per-funder histograms in ``fhist``), and how many those were."""
    hist, gone = dict(hist), 0
    for funder in ended:
        for pt, n in fhist.get(f"VULNERABLE_WORKER|{funder}", {}).items():
            hist[pt] = hist.get(pt, 0) - n
            gone += n
    return hist, gone


def history_view(region: Region, stats: RegionState | None, target_scale: float) -> list[dict]:
    """Programme members and coverage at the start of each evaluated day (the page's chart), oldest first; each
    day's coverage against the targets in force that day."""
    def target(day: int) -> int:
        in_force = region.target_at(period_of_ms(day * DAY_MS))
        return sum(round(in_force.get(c, 0) * target_scale) for c in PROGRAMME_COHORTS)
    points = []
    for day, active in stats.history if stats is not None else []:
        denominator = target(day)
        points.append({"day": stall.iso_day(day), "day_ms": day * DAY_MS, "active": active,
                       "coverage_ratio": round(active / denominator, 4) if denominator else None})
    return points


def breakdown(stats: RegionState) -> dict:
    """Members per cohort by district, age band, sex and occupation code, with cells under
    ``demography.MIN_CELL`` people shown as None (streams/demography.py ``suppressed``)."""
    people = stats.people
    return {cohort: {dimension: demography.suppressed(people.get(cohort, {}).get(dimension, {}))
                     for dimension in BREAKDOWNS} for cohort in COHORTS}
