"""Stall detection as plain functions: evaluated per region, once per event-time day, on the stream's clock.

The region stage calls ``advance(stats, ...)`` whenever the region's low watermark (ticks propagated through the
pipeline, see docs/domain.md "Clock and watermarks") passes the start of new days. Day D is evaluated "as of
00:00 UTC of D" using only events that happened before D, so a replay yields the same alerts at the same event
times however the partitions interleave. Rules (thresholds in ``StallRules``; reasoning in docs/domain.md):

- NO_REGISTRATIONS: no vulnerable-worker registration for ``no_registration_days`` while quota remains and an
  enrolment tranche of one of the region's funders has been open at least that long (reference data
  ``enrolment``; a funder without a calendar enrols all the time). Between tranches silence is normal.
- PACE_BELOW_TARGET: recent registration pace is below the pace needed to fill the remaining quota by the
  programme end (fires below ``pace_fire_ratio`` x needed, resolves above ``pace_resolve_ratio`` x needed).
- COVERAGE_FALLING: the protected share — programme members paid for the period due (see CONTRIBUTIONS_STOPPED) —
  fell more than ``coverage_drop_fire`` (points) below the window's peak. (Until 2026-11-26: members counted
  with 3 months of arrears, which fell only ~4 months after payments stopped.)
- CONTRIBUTIONS_STOPPED, per funder of the programme cohorts (not self-payers): at least ``unpaid_fire`` of the
  funder's members have not paid for the period due (the current month from its ``contribution_due_day``, the
  month before until then); resolves below ``unpaid_resolve``. A missed provincial transfer alerts in the month it
  is missed while employers and self-payers go on paying; a funder that pays a quarter ahead never alerts.

Each condition must hold ``for_days`` consecutive days to fire, and its clearing condition as long to resolve
(Prometheus' ``for:`` plus hysteresis): no flapping on noisy input.
"""
from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict

from streams.clock import DAY_MS, day_of
from streams.reference import Region
from streams.state import RegionState

MAX_CATCH_UP_DAYS = 400  # a clock jump longer than this evaluates only its last days
HISTORY_DAYS = 366  # members per evaluated day kept for the page's chart
FORECAST_HORIZON_DAYS = 100 * 366  # a fill date further ahead than this is shown as "never"
ALERT_LOG = 20  # transitions kept for the region page's alert history (the warehouse keeps them all)
SEVERITY = {"NO_REGISTRATIONS": "WARNING", "PACE_BELOW_TARGET": "INFO", "COVERAGE_FALLING": "CRITICAL",
            "CONTRIBUTIONS_STOPPED": "CRITICAL"}
PROGRAMME = ("VULNERABLE_WORKER", "NON_CIVIL_SERVANT")
NOT_A_FUNDER = "SELF"  # self-payers lapse one by one (the protection figures show it), no transfer is missed


def split_key(key: str) -> tuple[str, str | None]:
    """An alert's key in the region state: the rule's kind, and the funder for a per-funder rule
    ("CONTRIBUTIONS_STOPPED:APBD_PROVINCE")."""
    kind, _, funder = key.partition(":")
    return kind, funder or None


class StallRules(BaseModel):
    """Thresholds of the stall rules (config: ``[stall]`` table in the TOML file, or ``STALL`` as JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    no_registration_days: int = 14
    pace_window_days: int = 30
    pace_fire_ratio: float = 1.0
    pace_resolve_ratio: float = 1.1
    coverage_window_days: int = 30
    coverage_drop_fire: float = 0.10
    coverage_drop_resolve: float = 0.05
    coverage_min_participants: int = 10
    no_contribution_days: int = 35  # the history kept of daily contribution counts (the page's and the old rule's)
    contribution_due_day: int = 20  # a funder's payment for a month is due by this day of the month (assumption)
    unpaid_fire: float = 0.5  # share of a funder's members unpaid for the period due that fires
    unpaid_resolve: float = 0.2
    funder_min_members: int = 5
    for_days: int = 3

    @property
    def history_days(self) -> int:
        return max(self.no_registration_days, self.pace_window_days, self.coverage_window_days,
                   self.no_contribution_days)


def iso_day(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_MS / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def month_day(period: str) -> int:
    """First day (days since epoch) of the month after ``period`` ('2026-12' -> 2027-01-01)."""
    year, month = map(int, period.split("-"))
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp()) // 86_400


def alert_id(region_code: str, key: str, started_day: int) -> str:
    """Stable id: the same region, rule (and funder) and start day always give the same id (replays, re-sends)."""
    kind, funder = split_key(key)
    return f"{region_code}:{kind.lower()}{'.' + funder.lower() if funder else ''}:{iso_day(started_day)}"


# -- recording what evaluations need -----------------------------------------------------------------------------
def move_of(delta: dict) -> tuple[str, str] | None:
    """The member move a region delta makes, as ``record`` keeps it for the days ahead of the evaluation
    frontier: (group, "old>new"), or None (not a move). Counted per day, cohort and paid-through move (old empty
    for a registration; an exit is "pt>x": out of the histogram, still registered), per cohort and funder
    ("VULNERABLE_WORKER|APBD_PROVINCE") when it has one: the per-funder rule needs them as of a day too. An exit
    replacing a weaker reason ("was") moves no member."""
    kind = delta["k"]
    if kind not in ("reg", "pt", "exit") or "was" in delta:
        return None
    move = (f"{delta['pt']}>x" if kind == "exit" else
            f"{delta['from'] if kind == 'pt' else ''}>{delta['pt'] if kind == 'reg' else delta['to']}")
    group = f"{delta['cohort']}|{delta['funding']}" if delta.get("funding") else delta["cohort"]
    return group, move


def record(stats: RegionState, delta: dict) -> None:
    """Called by rules.apply_delta for every delta: daily counts, and the deltas after the evaluation frontier."""
    kind, at = delta["k"], delta["at"]
    day = str(day_of(at))
    if kind == "reg" and delta["cohort"] == "VULNERABLE_WORKER":
        stats.days.setdefault(day, [0, 0])[0] += 1
    elif kind == "contrib":
        stats.days.setdefault(day, [0, 0])[1] += 1
    frontier = stats.evaluated  # None before the first evaluation: keep everything until it trims
    found = move_of(delta) if frontier is None or day_of(at) > frontier else None
    if found is not None:
        # the moves (``move_of``), in room that grows with the days ahead of the frontier, not with the events. (A
        # list of every delta reached 3.8 MB for Kutai Kartanegara in the 200k drill, before the first evaluation;
        # a changelog message that size is over the broker's limit and crashed the worker.)
        group, move = found
        add_moves(ahead_of(stats), {group: {move: 1}})  # before ``recent`` changes: ahead_of may sum it
        moves = stats.recent.setdefault(day, {}).setdefault(group, {})
        moves[move] = moves.get(move, 0) + 1


def ahead_of(stats: RegionState) -> dict:
    """Every move in ``recent`` summed per group and move (what ``_as_of`` undoes first), kept with the state:
    undoing each day's moves in turn cost each evaluated day as much as all the days the region's data is ahead
    of its low watermark (a backlog: weeks). States written before 2026-11-26 lack it: summed on first use."""
    ahead = stats.ahead
    if ahead is None:
        ahead = stats.ahead = {}
        for groups in stats.recent.values():
            add_moves(ahead, groups)
    return ahead


def add_moves(into: dict, groups: dict, sign: int = 1) -> None:
    """``into`` += sign x ``groups`` ({group: {move: count}}), dropping what reaches zero."""
    for group, moves in groups.items():
        target = into.setdefault(group, {})
        for move, n in moves.items():
            total = target.get(move, 0) + sign * n
            if total:
                target[move] = total
            else:
                target.pop(move, None)
        if not target:
            del into[group]


# -- evaluation ----------------------------------------------------------------------------------------------------
def tranche_open_since(region: Region, day: int) -> int | None:
    """The first day of the enrolment tranche open on ``day`` (the earliest among the region's quota funders with
    one open), None when every funder's enrolment is closed; a funder without a calendar is always open."""
    starts = []
    for funder in region.quota:
        windows = region.enrolment.get(funder)
        if windows is None:
            return -MAX_CATCH_UP_DAYS * 100  # enrols all the time
        starts += [first for first, last in windows if first <= day <= last]
    return min(starts) if starts else None


def _window(days: dict, day: int, length: int, column: int) -> int:
    return sum(days.get(str(d), (0, 0))[column] for d in range(day - length, day))


def _as_of(stats: RegionState, day: int) -> tuple[dict, dict, dict]:
    """The paid-through histograms per cohort and per cohort and funder, and the registered count per cohort, as
    they were at 00:00 of ``day`` (undoing deltas that happened later but were already applied): every move ahead
    of the frontier undone at once (``ahead_of``), then those of the days before ``day`` done again (none unless a
    catch-up evaluates several days, or before the first evaluation)."""
    hist = {c: dict(h) for c, h in stats.hist.items()}
    fhist = {g: dict(h) for g, h in stats.fhist.items()}
    registered = dict(stats.registered)
    _undo(hist, fhist, registered, ahead_of(stats), 1)
    for earlier, groups in stats.recent.items():
        if int(earlier) < day:
            _undo(hist, fhist, registered, groups, -1)
    return hist, registered, fhist


def _undo(hist: dict, fhist: dict, registered: dict, groups: dict, sign: int) -> None:
    """Undo (sign 1) or redo (sign -1) ``groups``' moves ({group: {"old>new": count}}) in the copies."""
    for group, moves in groups.items():
        cohort = group.partition("|")[0]
        targets = [hist.setdefault(cohort, {})] + ([fhist.setdefault(group, {})] if "|" in group else [])
        for move, n in moves.items():
            n *= sign
            old, new = move.split(">")
            for h in targets:
                if new != "x":
                    h[new] = h.get(new, 0) - n
                if old:
                    h[old] = h.get(old, 0) + n
            if not old:
                registered[cohort] = registered.get(cohort, 0) - n


def due_period(day: int, rules: "StallRules") -> int:
    """The period whose contribution is due on ``day``: the current month from its ``contribution_due_day``, the
    month before until then."""
    from streams.rules import period_of_ms
    period = period_of_ms(day * DAY_MS)
    return period if datetime.fromtimestamp(day * 86_400, tz=timezone.utc).day >= rules.contribution_due_day \
        else period - 1


def _members_and_paid(hist: dict, period: int, due: int, grace_months: int) -> tuple[int, int]:
    """Of a paid-through histogram: the members (at most ``grace_months`` behind ``period``; ended memberships are
    nobody's arrears) and those of them paid for the ``due`` period."""
    members = paid = 0
    for pt, n in hist.items():
        if period - int(pt) <= grace_months:
            members += n
            paid += n if int(pt) >= due else 0
    return members, paid


def protected_for_period_due(hist: dict, day: int, rules: "StallRules", grace_months: int) -> tuple[int, int]:
    """Programme members, and those of them paid for the period due."""
    from streams.rules import period_of_ms
    period, due = period_of_ms(day * DAY_MS), due_period(day, rules)
    counts = [_members_and_paid(hist.get(cohort, {}), period, due, grace_months) for cohort in PROGRAMME]
    return sum(m for m, _ in counts), sum(p for _, p in counts)


def unpaid_by_funder(fhist: dict, day: int, rules: "StallRules", grace_months: int) -> dict[str, tuple[int, int]]:
    """Per funder of the programme cohorts: (members, members unpaid for the period due on ``day``). Due: the
    current month from its ``contribution_due_day``, the month before until then."""
    from streams.rules import period_of_ms
    period, due = period_of_ms(day * DAY_MS), due_period(day, rules)
    out: dict[str, list[int]] = {}
    for group, hist in fhist.items():
        cohort, _, funder = group.partition("|")
        if cohort not in PROGRAMME or funder == NOT_A_FUNDER:
            continue
        members, paid = _members_and_paid(hist, period, due, grace_months)
        counts = out.setdefault(funder, [0, 0])
        counts[0], counts[1] = counts[0] + members, counts[1] + members - paid
    return {f: (m, u) for f, (m, u) in sorted(out.items())}


def _step(alert: dict | None, cond: bool, clear: bool, day: int, for_days: int) -> tuple[dict, str | None]:
    alert = dict(alert or {"status": "ok", "streak": 0, "started": None})
    if alert["status"] == "ok":
        alert["streak"] = alert["streak"] + 1 if cond else 0
        if alert["streak"] >= for_days:
            return {"status": "firing", "streak": 0, "started": day}, "FIRING"
    else:
        alert["streak"] = alert["streak"] + 1 if clear else 0
        if alert["streak"] >= for_days:
            return {"status": "ok", "streak": 0, "started": None, "last_started": alert["started"]}, "RESOLVED"
    return alert, None


def evaluate_day(stats: RegionState, region: Region, day: int, rules: StallRules, grace_months: int, scale: float,
                 programme_end_day: int, as_of: tuple[dict, dict, dict] | None = None) -> list[tuple[str, str, dict]]:
    """Evaluate every rule for ``day``; update ``stats['alerts']``; return the transitions (kind, status, details).
    ``as_of``: ``_as_of(stats, day)`` when the caller has it (read, not changed)."""
    from streams.rules import PROGRAMME_COHORTS, active_count, not_renewed, period_of_ms, without_ended
    hist, registered, fhist = as_of or _as_of(stats, day)
    hist, fhist = dict(hist), dict(fhist)  # shallow: the ended funders' members are taken out of copies
    period = period_of_ms(day * DAY_MS)
    ended = not_renewed(region, region.quota_at(period))  # a budget not renewed: its members have left
    hist["VULNERABLE_WORKER"], _ = without_ended(hist.get("VULNERABLE_WORKER", {}), fhist, ended)
    for funder in ended:
        fhist.pop(f"VULNERABLE_WORKER|{funder}", None)
    active = sum(active_count(hist.get(c, {}), period, grace_months) for c in PROGRAMME_COHORTS)
    members, paid = protected_for_period_due(hist, day, rules, grace_months)
    share = paid / members if members else 1.0
    series = [p for p in stats.protected_series if p[0] > day - rules.coverage_window_days]
    series = stats.protected_series = series + [[day, round(share, 4), members]]
    # the coverage chart's history (one point per evaluated day, the last HISTORY_DAYS)
    stats.history = stats.history[-(HISTORY_DAYS - 1):] + [[day, active]]
    known = day - stats.first_day  # days of history this region has been evaluated over
    quota = sum(round(q * scale) for q in region.quota_at(period).values())  # in force that day
    remaining = max(quota - registered.get("VULNERABLE_WORKER", 0), 0)
    days = stats.days

    regs_recent = _window(days, day, rules.no_registration_days, 0)
    opened = tranche_open_since(region, day)
    enrolling = opened is not None and day - opened >= rules.no_registration_days
    pace = _window(days, day, rules.pace_window_days, 0) / rules.pace_window_days
    days_left = programme_end_day - day
    needed = remaining / days_left if days_left > 0 else None
    if not remaining:
        stats.forecast_fill_day = day  # full
    else:
        ahead = round(remaining / pace) if pace else None
        # None: never at this pace (or not within FORECAST_HORIZON_DAYS: a date past year 9999 is not a date —
        # formatting one crashed the region stage on a 95,000-place quota filling at 0.03 a day)
        stats.forecast_fill_day = day + ahead if ahead is not None and ahead <= FORECAST_HORIZON_DAYS else None
    peak = max(p[1] for p in series)
    drop = peak - share
    checks = {
        "NO_REGISTRATIONS": (remaining > 0 and regs_recent == 0 and known >= rules.no_registration_days
                             and enrolling,
                             remaining == 0 or regs_recent > 0 or opened is None,
                             {"days_without_registration": str(rules.no_registration_days),
                              "quota_remaining": str(remaining)}),
        "PACE_BELOW_TARGET": (needed is not None and remaining > 0 and known >= rules.pace_window_days
                              and pace < needed * rules.pace_fire_ratio,
                              needed is None or remaining == 0 or pace >= needed * rules.pace_resolve_ratio,
                              {"pace_per_day": f"{pace:.2f}", "needed_per_day": f"{needed or 0:.2f}",
                               "quota_remaining": str(remaining),
                               "forecast_fill_date": iso_day(stats.forecast_fill_day)
                               if stats.forecast_fill_day is not None else "never"}),
        "COVERAGE_FALLING": (members >= rules.coverage_min_participants and drop > rules.coverage_drop_fire,
                             members < rules.coverage_min_participants or drop < rules.coverage_drop_resolve,
                             {"members": str(members), "protected_share": f"{share:.1%}",
                              "window_peak": f"{peak:.1%}", "drop": f"{drop * 100:.1f} points"}),
    }
    by_funder = unpaid_by_funder(fhist, day, rules, grace_months)
    for key, alert in stats.alerts.items():
        kind, funder = split_key(key)
        if kind == "CONTRIBUTIONS_STOPPED" and funder is None:  # the region-wide rule of before 2026-11-26
            checks[key] = (False, True, {})  # resolves; the per-funder rule takes over
        elif kind == "CONTRIBUTIONS_STOPPED" and funder not in by_funder:
            by_funder[funder] = (0, 0)  # its members are all gone: it resolves
    for funder, (members, unpaid) in by_funder.items():
        share = unpaid / members if members else 0.0
        key = f"CONTRIBUTIONS_STOPPED:{funder}"
        if members < rules.funder_min_members and key not in stats.alerts:
            continue  # too few to judge, and nothing to resolve
        checks[key] = (members >= rules.funder_min_members and share >= rules.unpaid_fire,
                       members < rules.funder_min_members or share < rules.unpaid_resolve,
                       {"funder": funder, "members": str(members), "unpaid": str(unpaid),
                        "unpaid_share": f"{share:.0%}"})
    transitions = []
    for kind, (cond, clear, details) in checks.items():
        alert, change = _step(stats.alerts.get(kind), cond, clear, day, rules.for_days)
        stats.alerts[kind] = alert
        if change:
            transitions.append((kind, change, details))
    return transitions


def advance(stats: RegionState, region: Region, low_watermark_ms: int, rules: StallRules, grace_months: int, scale: float,
            programme_end_day: int) -> list[dict]:
    """Evaluate every day whose start the low watermark has passed; returns alert transition records."""
    target = day_of(low_watermark_ms)
    if stats.evaluated is None:
        # evaluation starts the day after the region's first day of data (none: the clock's day): where the first
        # tick lands must not decide it — one tick per batch, and a backlog's first batch spans weeks, whose days
        # would otherwise never be evaluated. Nothing is trimmed before the first evaluation.
        seen = [int(day) + 1 for day in (*stats.days, *stats.recent)]
        stats.evaluated = stats.first_day = min([target, *seen]) - 1
    start = max(stats.evaluated + 1, target - MAX_CATCH_UP_DAYS + 1)
    out, as_of = [], None
    for day in range(start, target + 1):
        # the figures as of each day in turn: those of the day before with that day's moves done again, instead of
        # every move ahead undone and redone per day (a tick passing many days — one per batch of a backlog —
        # made each day cost as much as all the days ahead)
        if as_of is None:
            as_of = _as_of(stats, day)
        else:
            hist, registered, fhist = as_of
            _undo(hist, fhist, registered, stats.recent.get(str(day - 1), {}), -1)
        for kind, status, details in evaluate_day(stats, region, day, rules, grace_months, scale, programme_end_day,
                                                  as_of):
            alert = stats.alerts[kind]
            started = alert["started"] if status == "FIRING" else alert["last_started"]
            stats.alert_log = stats.alert_log[-(ALERT_LOG - 1):] + [[kind, status, started, day]]
            base = split_key(kind)[0]
            out.append({"alert_id": alert_id(region.code, kind, started), "region_code": region.code, "kind": base,
                        "status": status, "severity": SEVERITY[base], "occurred_at": day * DAY_MS,
                        "started_at": started * DAY_MS, "resolved_at": day * DAY_MS if status == "RESOLVED" else None,
                        "summary": summary(region, kind, status, details), "details": details})
    if target > stats.evaluated:
        stats.evaluated = target
        ahead, kept = ahead_of(stats), {}
        for d, groups in stats.recent.items():
            if int(d) > target:
                kept[d] = groups
            else:
                add_moves(ahead, groups, -1)  # evaluated: no longer ahead
        stats.recent = kept
        oldest = target - rules.history_days
        stats.days = {d: v for d, v in stats.days.items() if int(d) >= oldest}
    return out


def summary(region: Region, key: str, status: str, details: dict) -> str:
    kind = split_key(key)[0]
    what = {
        "NO_REGISTRATIONS": f"no new registrations for {details.get('days_without_registration')} days "
                            f"with {details.get('quota_remaining')} quota places left",
        "PACE_BELOW_TARGET": f"registering {details.get('pace_per_day')}/day, needs {details.get('needed_per_day')}"
                             f"/day to fill the quota in time (forecast {details.get('forecast_fill_date')})",
        "COVERAGE_FALLING": f"protected share down {details.get('drop')} from the 30-day peak, to "
                            f"{details.get('protected_share')} of {details.get('members')} members",
        "CONTRIBUTIONS_STOPPED": f"{details.get('unpaid')} of {details.get('members')} members funded by "
                                 f"{details.get('funder')} unpaid for the month due",
    }[kind]
    return f"{region.name} ({region.code}): {what}" + (" — resolved" if status == "RESOLVED" else "")
