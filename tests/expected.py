"""An independent computation of what the region tables must hold: a plain fold over the simulator's events,
written without the project's rules module (periods and lapse are recomputed here from first principles)."""
from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timezone

from streams.occupation import normalise  # a code list: reference data, not a rule
from streams.reference import regions


def month_number(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return d.year * 12 + d.month


def period_number(period: str) -> int:
    y, m = period.split("-")
    return int(y) * 12 + int(m)


def expected_regions(events, grace_months: int = 3, scale: float = 1.0, clock_ms: int | None = None) -> dict[str, dict]:
    """``events``: SimEvents; only those with expect == 'processed' count. ``clock_ms``: the stream clock the
    figures are read at (default: the latest event time)."""
    applied = [e for e in events if e.expect == "processed"]
    clock = month_number(clock_ms if clock_ms is not None else max(e.occurred_at for e in applied))
    people: dict[str, dict] = {}
    paid: dict[str, int] = defaultdict(int)
    claims = defaultdict(lambda: [0, 0])
    contributions = defaultdict(lambda: [0, 0])
    claim_ends: dict[tuple, dict[str, int]] = defaultdict(dict)  # (nik, claim_id) -> status -> first event time
    claim_of: dict[tuple, tuple[str, str]] = {}  # (nik, claim_id) -> (region, programme) of its PAID event
    funder_paid: dict[tuple, int] = defaultdict(int)  # (region, funder, year of the period) -> rupiah
    dead: set[str] = set()
    moved: set[str] = set()  # vulnerable workers registered again as wage earners (PU)
    for e in applied:
        r = e.record
        if e.record_name == "Registration" and e.key not in people:
            people[e.key] = {"region": r["region_code"], "cohort": r["cohort"], "funding": r["funding_source"],
                             "registered_in": month_number(r["occurred_at"]),
                             "cells": (*nik_cells(r["nik"], r["region_code"], r["occurred_at"]),
                                       normalise(r["occupation"]))}
        elif e.record_name == "Registration" and people[e.key]["cohort"] == "VULNERABLE_WORKER" \
                and r["segment"] == "PU":
            moved.add(e.key)
        elif e.record_name == "Contribution":
            paid[e.key] = max(paid[e.key], period_number(r["period"]))
            contributions[r["region_code"]][0] += 1
            contributions[r["region_code"]][1] += r["amount_idr"]
            funder_paid[r["region_code"], r["funding_source"], int(r["period"][:4])] += r["amount_idr"]
        elif e.record_name == "Claim":
            if r["status"] == "PAID" and (r["program"] == "JKM" or (r["program"] == "JKK" and r.get("death"))):
                dead.add(e.key)  # a paid death benefit ends participation, whenever it arrives
            c = claims[(r["region_code"], r["program"], r["status"])]
            c[0] += 1
            c[1] += r["amount_idr"]
            if r.get("claim_id"):
                ends = claim_ends[(e.key, r["claim_id"])]
                ends[r["status"]] = min(ends.get(r["status"], r["occurred_at"]), r["occurred_at"])
                if r["status"] == "PAID":
                    claim_of[(e.key, r["claim_id"])] = (r["region_code"], r["program"])
    out = {}
    for code, region in regions().items():
        cohorts, breakdowns = {}, {}
        in_force = region.quota_at(clock - 1)  # the places in force at the clock (reference data; ``clock`` from 1)
        not_renewed = {f for f in region.funders if not in_force.get(f)}  # places before, none now: its members left
        for cohort in ("VULNERABLE_WORKER", "NON_CIVIL_SERVANT", "GENERAL"):
            registered = [(k, p) for k, p in people.items() if p["region"] == code and p["cohort"] == cohort]
            gone = not_renewed if cohort == "VULNERABLE_WORKER" else set()
            members = [(k, p) for k, p in registered if k not in dead and k not in moved and p["funding"] not in gone]
            # paid through: the latest paid period, or the month before registration if later; months behind the
            # clock's month: 0 protected, 1..grace in arrears, more: membership ended (BPJS Perdir 22/2022)
            behind = [clock - max(paid.get(k, 0), p["registered_in"] - 1) for k, p in members]
            by_funder = defaultdict(list)
            for (k, p), b in zip(members, behind):
                by_funder[p["funding"]].append(b)
            exited = defaultdict(int)
            for k, p in registered:
                if k in dead or k in moved:
                    exited["death" if k in dead else "wage_employment"] += 1  # death wins
                elif p["funding"] in gone:
                    exited["budget_ended"] += 1
            breakdowns[cohort] = {dimension: small_cells_hidden([p["cells"][i] for _, p in members])
                                  for i, dimension in enumerate(("district", "age_band", "sex", "occupation"))}
            cohorts[cohort] = {"registered": len(registered), "exited": dict(sorted(exited.items())),
                               "active": sum(1 for b in behind if b <= grace_months),
                               **protection(behind, grace_months),
                               "funders": {f: protection(bs, grace_months) for f, bs in sorted(by_funder.items())}}
        used = defaultdict(int)
        for key, p in people.items():
            if p["region"] == code and p["cohort"] == "VULNERABLE_WORKER" and key not in dead | moved \
                    and p["funding"] not in not_renewed:
                used[p["funding"]] += 1  # a slot held now: the dead free theirs
        quota = {}
        for funding in sorted(set(in_force) | set(used)):
            total = round(in_force.get(funding, 0) * scale)
            year, budget = (clock - 1) // 12, total * 16_800 * 12  # the clock's year; a year of the slots
            protected = cohorts["VULNERABLE_WORKER"]["funders"].get(funding, {}).get("protected", 0)
            quota[funding] = {"total": total, "used": used[funding], "remaining": max(total - used[funding], 0),
                              "over_quota": max(used[funding] - total, 0), "filled_this_month": protected,
                              "fiscal_year": year, "paid_idr": funder_paid[code, funding, year], "budget_idr": budget,
                              "absorption": round(funder_paid[code, funding, year] / budget, 4) if budget else None}
        region_claims = defaultdict(dict)
        for (rc, program, status), (count, amount) in claims.items():
            if rc == code:
                region_claims[program][status] = {"count": count, "amount_idr": amount}
        # SUBMITTED -> PAID in whole days per programme; p50/p90 by nearest rank, sorted here from the raw list
        turnaround: dict[str, list[int]] = defaultdict(list)
        for key, (rc, program) in claim_of.items():
            ends = claim_ends[key]
            if rc == code and "SUBMITTED" in ends and "REJECTED" not in ends:
                turnaround[program].append(max(ends["PAID"] - ends["SUBMITTED"], 0) // 86_400_000)

        def rank(values: list[int], p: int) -> int:
            ordered = sorted(values)
            return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]
        out[code] = {"claims_turnaround": {program: {"paid": len(days), "p50_days": rank(days, 50),
                                                     "p90_days": rank(days, 90)}
                                           for program, days in sorted(turnaround.items())},
                     "cohorts": cohorts, "quota": quota, "claims": dict(region_claims), "breakdown": breakdowns,
                     "contributions": {"count": contributions[code][0], "amount_idr": contributions[code][1]}}
    return out


def protection(behind: list[int], grace_months: int) -> dict:
    return {"protected": sum(1 for b in behind if b <= 0),
            "in_arrears": {str(m): sum(1 for b in behind if b == m) for m in range(1, grace_months + 1)},
            "ended": sum(1 for b in behind if b > grace_months)}


def comparable(view: dict) -> dict:
    """The part of a /regions entry that expected_regions() computes."""
    return {"cohorts": {c: {k: v[k] for k in ("registered", "exited", "active", "protected", "in_arrears", "ended",
                                              "funders")}
                        for c, v in view["cohorts"].items()},
            "quota": view["quota"], "claims": view["claims"], "contributions": view["contributions"],
            "claims_turnaround": view["claims_turnaround"], "breakdown": view["breakdown"]}


def nik_cells(nik: str, region_code: str, at_ms: int) -> tuple[str, str, str]:
    """(district, age band, sex) from the NIK's digits, as docs/domain.md describes them."""
    issued_here = nik.startswith(region_code.replace(".", "")) and nik[4:6] != "00"  # districts number from 01
    district = region_code + "." + nik[4:6] if issued_here else "unknown"
    day, month, year = int(nik[6:8]), int(nik[8:10]), int(nik[10:12])
    female = day > 40
    at = datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc)
    year += 2000 if 2000 + year <= at.year else 1900
    try:
        birthday_passed = (at.month, at.day) >= (month, day - 40 if female else day)
        datetime(year, month, day - 40 if female else day)
    except ValueError:
        return district, "unknown", "unknown"
    age = at.year - year - (0 if birthday_passed else 1)
    lower = 25 + (age - 25) // 10 * 10  # ten-year bands from 25
    band = "<25" if age < 25 else "55+" if age >= 55 else f"{lower}-{lower + 9}"
    return district, band, "female" if female else "male"


def small_cells_hidden(values: list[str], minimum: int = 10) -> dict[str, int | None]:
    """Counts per value; under ``minimum`` hidden (None), and when exactly one cell is hidden, the next smallest
    too (else total minus the rest reveals it)."""
    counts: dict[str, int] = defaultdict(int)
    for v in values:
        counts[v] += 1
    small = sorted(v for v, n in counts.items() if n < minimum)
    if len(small) == 1 and len(counts) > 1:
        small += [sorted((n, v) for v, n in counts.items() if v not in small)[0][1]]
    return {v: None if v in small else counts[v] for v in sorted(counts)}


def expected_alerts(events, scale: float, first_days: dict[str, int], until_day: int, rules_=None) -> list[tuple]:
    """The stall alerts of a sequential fold over the same events (the project's pure rule functions, one event
    after another, one tick per event-time day): what the distributed pipeline must reproduce exactly.
    ``first_days``: region -> first evaluated day, as the pipeline reports it (``evaluating_since``)."""
    from streams import rules, stall  # the alerts' rules themselves (here only the fold is independent)
    from streams.reference import reference
    from streams.stall import DAY_MS, StallRules
    from streams.state import RegionState
    ref = reference()
    end = stall.month_day(ref.programme_end)
    rules_ = rules_ or StallRules()
    people, stats, out = {}, {}, []
    for code, region in ref.regions.items():
        stats[code] = RegionState()
        stats[code].evaluated = stats[code].first_day = first_days[code] - 1

    def tick(day: int) -> None:
        for code, region in ref.regions.items():
            for a in stall.advance(stats[code], region, day * DAY_MS, rules_, 3, scale, end):
                if a["occurred_at"] // DAY_MS <= until_day:
                    out.append((a["alert_id"], a["status"], a["occurred_at"]))

    last = None
    for e in events:
        if e.expect != "processed":
            continue
        day = e.occurred_at // DAY_MS
        if last is not None and day > last:
            for d in range(last + 1, day + 1):
                tick(d)
        last = max(last or day, day)
        record = {k: v for k, v in e.record.items() if k != "nik"}
        state, deltas, _ = rules.apply_event(people.get(e.key), e.record_name, record)
        people[e.key] = state
        for delta in deltas:
            stats[delta["region"]] = rules.apply_delta(stats[delta["region"]], delta, ref.regions[delta["region"]],
                                                       scale)
    return sorted(out)


def partition_clocks(times_by_partition: dict, lateness_ms: int) -> tuple[int, list]:
    """Written from the rule in docs/domain.md, not from streams/clock.py: per partition (event times in offset
    order) the clock is the highest time two consecutive records both reached, and a record more than
    ``lateness_ms`` behind the clock before it is late. Returns (the most advanced partition clock, the
    (partition, index) of every late record)."""
    front, late = 0, []
    for partition, times in times_by_partition.items():
        clock = previous = 0
        for i, at in enumerate(times):
            if clock - at > lateness_ms:
                late.append((partition, i))
            clock, previous = max(clock, min(previous, at)), at
        front = max(front, clock)
    return front, late
