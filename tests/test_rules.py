"""Domain rules as plain functions: participant transitions, region folding, lapse by event time."""
from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime, timezone

from hypothesis import given, strategies as st

from streams import rules, stall
from streams.reference import regions

SAMARINDA = regions()["64.72"]


def ms(year: int, month: int, day: int = 15) -> int:
    return int(datetime(year, month, day, tzinfo=timezone.utc).timestamp() * 1000)


def reg(at: int, cohort="VULNERABLE_WORKER", funding="APBD_PROVINCE") -> dict:
    return {"event_id": str(uuid.uuid4()), "occurred_at": at, "region_code": "64.72", "cohort": cohort,
            "funding_source": funding, "segment": "BPU", "programs": ["JKK", "JKM"]}


def contrib(period: str, at: int, amount=16_800) -> dict:
    return {"event_id": str(uuid.uuid4()), "occurred_at": at, "region_code": "64.72", "period": period,
            "amount_idr": amount, "funding_source": "APBD_PROVINCE"}


def fold(events: list[tuple[str, dict]], scale: float = 1.0) -> dict:
    states, stats = {}, None
    for kind, event in events:
        key = event.get("who", "p1")
        states[key], deltas, _ = rules.apply_event(states.get(key), kind, event)
        for d in deltas:
            stats = rules.apply_delta(stats, d, SAMARINDA, scale)
    return stats


def view(stats: dict, clock: int) -> dict:
    return rules.region_view(SAMARINDA, stats, clock, grace_months=3, target_scale=1.0)


def test_pseudonym_is_keyed_and_stable():
    a = rules.participant_key("6472014107850003", b"k1")
    assert a == rules.participant_key("6472014107850003", b"k1")
    assert a != rules.participant_key("6472014107850003", b"k2")
    assert "6472014107850003" not in a and len(a) == 32


@given(st.binary(max_size=200), st.text(max_size=40))
def test_pseudonym_is_hmac_sha256_for_any_key_length(key, nik):
    """The precomputed pads give the standard's value: short keys, block-sized ones and ones hashed first."""
    assert rules.participant_key(nik, key) == hmac.new(key, nik.encode(), hashlib.sha256).hexdigest()[:32]


def test_lapse_after_grace_and_reactivation_by_paying_again():
    """BPJS Perdir 22/PERDIR.02/072022: arrears may be paid up to 3 months after protection ends; after more than
    3 unpaid months membership ends. People in arrears are not protected."""
    events = [("Registration", reg(ms(2025, 1))), ("Contribution", contrib("2025-01", ms(2025, 1, 20)))]
    stats = fold(events)

    def state(month: int) -> tuple:
        cohort = view(stats, ms(2025, month))["cohorts"]["VULNERABLE_WORKER"]
        return cohort["active"], cohort["protected"], cohort["in_arrears"], cohort["ended"]
    assert state(1) == (1, 1, {"1": 0, "2": 0, "3": 0}, 0)  # paid for January: protected
    assert state(2) == (1, 0, {"1": 1, "2": 0, "3": 0}, 0)  # February unpaid: a member in arrears, not protected
    assert state(4) == (1, 0, {"1": 0, "2": 0, "3": 1}, 0)  # Feb, Mar, Apr unpaid: the last month arrears can be paid
    assert state(5) == (0, 0, {"1": 0, "2": 0, "3": 0}, 1)  # a fourth unpaid month: membership ended
    assert view(stats, ms(2025, 5))["lapsed"] == 1
    stats = fold(events + [("Contribution", contrib("2025-06", ms(2025, 6, 10)))])
    assert view(stats, ms(2025, 6))["active"] == 1  # paying again reactivates (assumption: docs/domain.md)


def test_grace_starts_at_registration():
    stats = fold([("Registration", reg(ms(2025, 3)))])  # nothing paid: in arrears from March
    assert view(stats, ms(2025, 5))["active"] == 1
    assert view(stats, ms(2025, 6))["active"] == 0


def test_contribution_before_registration_is_applied_when_it_arrives():
    early = [("Contribution", contrib("2025-04", ms(2025, 4, 2))), ("Registration", reg(ms(2025, 1)))]
    stats = fold(early)
    assert view(stats, ms(2025, 7))["active"] == 1  # paid through April counts, though it arrived first
    assert view(stats, ms(2025, 8))["active"] == 0  # (and ends after May, June, July and August unpaid)
    assert stats.contrib == [1, 16_800]


def test_duplicate_event_changes_nothing():
    r = reg(ms(2025, 1))
    state, deltas, dup = rules.apply_event(None, "Registration", r)
    again, deltas2, dup2 = rules.apply_event(state, "Registration", r)
    assert (dup, dup2) == (False, True) and deltas and not deltas2 and again == state


def test_second_registration_with_new_event_id_is_not_counted_twice():
    stats = fold([("Registration", reg(ms(2025, 1))), ("Registration", reg(ms(2025, 2)))])
    assert stats.registered == {"VULNERABLE_WORKER": 1}


def test_quota_overflow_is_flagged_not_dropped():
    scale = 0.001  # Samarinda's province quota of 13,000 becomes 13
    events = [("Registration", {**reg(ms(2025, 1)), "who": f"p{i}"}) for i in range(15)]
    stats = fold(events, scale)
    v = rules.region_view(SAMARINDA, stats, ms(2025, 1), 3, scale)
    assert v["quota"]["APBD_PROVINCE"].items() >= {"total": 13, "used": 15, "remaining": 0, "over_quota": 2}.items()
    assert v["registered"] == 15


def test_claims_by_programme_and_status():
    claim = {"event_id": "", "occurred_at": ms(2025, 2), "region_code": "64.72", "program": "JKM",
             "amount_idr": 42_000_000}
    events = [("Claim", {**claim, "event_id": str(uuid.uuid4()), "status": s}) for s in ("SUBMITTED", "APPROVED", "PAID")]
    v = view(fold(events), ms(2025, 2))
    assert v["claims"]["JKM"]["PAID"] == {"count": 1, "amount_idr": 42_000_000}
    assert set(v["claims"]["JKM"]) == {"SUBMITTED", "APPROVED", "PAID"}


def test_coverage_ratio_counts_programme_cohorts_only():
    events = [("Registration", {**reg(ms(2025, 1)), "who": "a"}),
              ("Registration", {**reg(ms(2025, 1), cohort="GENERAL", funding="SELF"), "who": "b"})]
    v = view(fold(events), ms(2025, 1))
    assert v["active"] == 2
    assert v["coverage_ratio"] == round(1 / v["target"], 4)


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 12)), max_size=30))
def test_active_count_is_order_independent(payments):
    events = [("Registration", reg(ms(2025, 1)))] + [
        ("Contribution", contrib(f"2025-{m:02d}", ms(2025, m, 28) + d)) for d, m in payments]
    forward, backward = fold(events), fold(events[:1] + events[1:][::-1])
    for month in range(1, 13):
        assert view(forward, ms(2025, month))["active"] == view(backward, ms(2025, month))["active"]


def claim(status: str, at: int, claim_id: str | None = "K1", program: str = "JKK", who: str = "p1") -> dict:
    return {"event_id": str(uuid.uuid4()), "occurred_at": at, "region_code": "64.72", "program": program,
            "status": status, "amount_idr": 1_000_000, "claim_id": claim_id, "who": who}


def test_claim_turnaround_pairs_submitted_and_paid_in_either_order_and_forgets_rejections():
    day = 86_400_000
    t0 = ms(2025, 3)
    events = [("Claim", claim("SUBMITTED", t0, "A")), ("Claim", claim("APPROVED", t0 + 2 * day, "A")),
              ("Claim", claim("PAID", t0 + 5 * day + 3600_000, "A")),  # 5 days and an hour: 5 whole days
              ("Claim", claim("PAID", t0 + 9 * day, "B")), ("Claim", claim("SUBMITTED", t0 + day, "B")),  # late
              ("Claim", claim("SUBMITTED", t0, "C")), ("Claim", claim("REJECTED", t0 + day, "C")),
              ("Claim", claim("PAID", t0 + 3 * day, "C")),  # C was rejected: its PAID waits alone
              ("Claim", claim("SUBMITTED", t0, "A", who="p2")), ("Claim", claim("PAID", t0 + 20 * day, "A", who="p2")),
              ("Claim", claim("PAID", t0, None))]  # no claim id: counted as a claim, no turnaround
    stats = fold(events)
    assert stats.turnaround == {"JKK": {"5": 1, "8": 1, "20": 1}}
    assert view(stats, ms(2025, 4))["claims_turnaround"] == {"JKK": {"paid": 3, "p50_days": 8, "p90_days": 20}}
    assert view(stats, ms(2025, 4))["claims"]["JKK"]["PAID"]["count"] == 5


def test_percentiles_by_nearest_rank():
    assert rules.percentile({}, 50) is None
    assert rules.percentile({"3": 1}, 90) == 3
    histogram = {str(d): 1 for d in range(1, 11)}  # 1..10
    assert (rules.percentile(histogram, 50), rules.percentile(histogram, 90), rules.percentile(histogram, 100)) == (5, 9, 10)


def test_open_claims_stay_bounded():
    events = [("Claim", claim("SUBMITTED", ms(2025, 1), f"open-{i}")) for i in range(rules.OPEN_CLAIMS_LIMIT + 10)]
    state = None
    for kind, event in events:
        state, _, _ = rules.apply_event(state, kind, event)
    assert len(state.cl) == rules.OPEN_CLAIMS_LIMIT


def jkm(status: str, at: int, **extra) -> dict:
    return {"event_id": str(uuid.uuid4()), "occurred_at": at, "region_code": "64.72", "program": "JKM",
            "amount_idr": 42_000_000, "status": status, "claim_id": "K-1", **extra}


def test_a_paid_death_benefit_ends_participation_and_frees_the_slot():
    scale = 0.001  # 13 province slots in Samarinda
    people = [("Registration", {**reg(ms(2025, 1)), "who": f"p{i}"}) for i in range(14)]  # one over quota
    paying = [("Contribution", {**contrib("2025-03", ms(2025, 3)), "who": f"p{i}"}) for i in range(14)]
    death = [("Claim", {**jkm(s, ms(2025, 3, d)), "who": "p0"}) for s, d in (("SUBMITTED", 2), ("PAID", 9))]
    after = [("Contribution", {**contrib("2025-04", ms(2025, 4)), "who": "p0"})]  # refunded later, still money
    v = rules.region_view(SAMARINDA, fold(people + paying + death + after, scale), ms(2025, 3), 3, scale)
    cohort = v["cohorts"]["VULNERABLE_WORKER"]
    assert cohort["registered"] == 14 and cohort["exited"] == {"death": 1}
    assert cohort["active"] == cohort["protected"] == 13 and cohort["lapsed"] == 0
    assert v["quota"]["APBD_PROVINCE"].items() >= {"total": 13, "used": 13, "remaining": 0, "over_quota": 0,
                                                   "filled_this_month": 13}.items()
    assert v["contributions"]["count"] == 15 and v["claims"]["JKM"]["PAID"]["count"] == 1


def test_an_exit_that_arrives_before_the_registration_counts_the_same():
    in_order = [("Registration", reg(ms(2025, 1))), ("Claim", jkm("PAID", ms(2025, 2)))]
    late = list(reversed(in_order))
    views = [view(fold(events), ms(2025, 2))["cohorts"]["VULNERABLE_WORKER"] for events in (in_order, late)]
    assert views[0] == views[1]
    assert views[0]["registered"] == 1 and views[0]["exited"] == {"death": 1} and views[0]["active"] == 0


def test_only_a_paid_jkm_claim_is_an_exit_and_only_once():
    base = [("Registration", reg(ms(2025, 1)))]
    for status in ("SUBMITTED", "APPROVED", "REJECTED", "RETURNED"):
        assert view(fold(base + [("Claim", jkm(status, ms(2025, 2)))]), ms(2025, 2))["cohorts"][
            "VULNERABLE_WORKER"]["exited"] == {}
    jkk = {**jkm("PAID", ms(2025, 2)), "program": "JKK"}
    assert view(fold(base + [("Claim", jkk)]), ms(2025, 2))["cohorts"]["VULNERABLE_WORKER"]["exited"] == {}
    paid = jkm("PAID", ms(2025, 2))
    twice = base + [("Claim", paid), ("Claim", paid), ("Claim", jkm("PAID", ms(2025, 3)))]  # re-sent; a second
    assert view(fold(twice), ms(2025, 3))["cohorts"]["VULNERABLE_WORKER"]["exited"] == {"death": 1}


def wage_job(at: int, who: str = "p1") -> dict:
    """An employer registers the worker as a wage earner."""
    return {**reg(at, cohort="GENERAL", funding="EMPLOYER"), "segment": "PU", "programs": ["JKK", "JKM", "JHT", "JP"],
            "who": who}


def test_a_wage_job_ends_the_sponsored_place_and_frees_the_slot():
    scale = 0.001  # 13 province slots in Samarinda
    people = [("Registration", {**reg(ms(2025, 1)), "who": f"p{i}"}) for i in range(13)]
    moved = [("Registration", wage_job(ms(2025, 2), "p0"))]
    v = rules.region_view(SAMARINDA, fold(people + moved, scale), ms(2025, 2), 3, scale)
    cohort = v["cohorts"]["VULNERABLE_WORKER"]
    assert cohort["registered"] == 13 and cohort["exited"] == {"wage_employment": 1} and cohort["active"] == 12
    assert v["quota"]["APBD_PROVINCE"]["used"] == 12 and v["cohorts"]["GENERAL"]["registered"] == 0
    again = [("Registration", wage_job(ms(2025, 3), "p0"))]  # a second employer: gone already
    assert rules.region_view(SAMARINDA, fold(people + moved + again, scale), ms(2025, 3), 3, scale)["cohorts"][
        "VULNERABLE_WORKER"]["exited"] == {"wage_employment": 1}


def test_a_registration_as_wage_earner_of_someone_not_sponsored_changes_nothing():
    events = [("Registration", reg(ms(2025, 1), cohort="GENERAL", funding="SELF")),
              ("Registration", wage_job(ms(2025, 2)))]
    assert view(fold(events), ms(2025, 2))["cohorts"]["GENERAL"]["exited"] == {}


def test_death_outranks_a_wage_job_whatever_arrives_first():
    start = [("Registration", reg(ms(2025, 1)))]
    move, death = ("Registration", wage_job(ms(2025, 2))), ("Claim", jkm("PAID", ms(2025, 3)))
    for events in (start + [move, death], start + [death, move], [death] + start + [move]):
        stats = fold(events)
        cohort = view(stats, ms(2025, 3))["cohorts"]["VULNERABLE_WORKER"]
        assert cohort["exited"] == {"death": 1} and cohort["active"] == 0 and cohort["registered"] == 1
        assert stats.quota_used == {} and stats.hist["VULNERABLE_WORKER"] == {}


def test_members_broken_down_by_district_age_and_sex_with_small_cells_hidden():
    cells = [("64.72.01", "25-34", "female")] * 12 + [("64.72.02", "35-44", "male")] * 11 + \
        [("64.72.03", "35-44", "female")] * 3
    events = [("Registration", {**reg(ms(2025, 1)), "who": f"p{i}", "demo": list(c)}) for i, c in enumerate(cells)]
    shown = view(fold(events), ms(2025, 1))["breakdown"]["VULNERABLE_WORKER"]
    # 64.72.03 has 3: hidden, and then the next smallest too, or 26 - 12 - 11 would give it away
    assert shown["district"] == {"64.72.01": 12, "64.72.02": None, "64.72.03": None}
    assert shown["age_band"] == {"25-34": 12, "35-44": 14} and shown["sex"] == {"female": 15, "male": 11}
    gone = [("Claim", {**jkm("PAID", ms(2025, 2)), "who": f"p{i}"}) for i in range(12, 23)]  # the 11 of 64.72.02
    shown = view(fold(events + gone), ms(2025, 2))["breakdown"]["VULNERABLE_WORKER"]
    assert shown["district"] == {"64.72.01": None, "64.72.03": None}  # one hidden of two: both
    assert view(fold([("Registration", reg(ms(2025, 1)))]), ms(2025, 1))["breakdown"]["VULNERABLE_WORKER"] == {
        "district": {"unknown": None}, "age_band": {"unknown": None}, "sex": {"unknown": None},
        "occupation": {"unknown": None}}


def test_contributions_read_before_the_registration_move_it_when_they_happened():
    """Registrations and contributions come from different topics: which is read first is not defined. The
    region's deltas — and so the stall rules' as-of figures — must not depend on it."""
    registration = ("Registration", reg(ms(2025, 1, 10)))
    paid = [("Contribution", contrib("2025-01", ms(2025, 1, 14))),
            ("Contribution", contrib("2025-02", ms(2025, 2, 12)))]
    prepaid = ("Contribution", contrib("2025-03", ms(2025, 1, 2)))  # paid ahead, before registering

    def deltas(events):
        state, out = None, []
        for kind, event in events:
            state, new, _ = rules.apply_event(state, kind, event)
            out += [(d["k"], d.get("pt"), d.get("from"), d.get("to"), d["at"]) for d in new if d["k"] in ("reg", "pt")]
        return sorted(out, key=lambda d: d[-1])
    in_order = deltas([registration, *paid])
    # (contributions of one participant keep their order: one topic, one key, one partition)
    assert deltas([*paid, registration]) == deltas([paid[0], registration, paid[1]]) == in_order
    assert [d[0] for d in in_order] == ["reg", "pt", "pt"]
    # a payment made before registering counts from the registration
    assert deltas([prepaid, registration])[0][:2] == ("reg", 2025 * 12 + 2)


def test_quota_shows_places_paid_this_month_and_the_budget_absorbed_per_fiscal_year():
    """1,000 province places in Samarinda at scale 1/13: 77 places, a year's budget 77 x Rp16,800 x 12. Ten
    members; eight have paid March, two only February; money paid for 2024 periods is another fiscal year."""
    scale = 77 / 13_000
    people = [("Registration", {**reg(ms(2025, 1)), "who": f"p{i}"}) for i in range(10)]
    paid = [("Contribution", {**contrib(f"2025-{m:02d}", ms(2025, m)), "who": f"p{i}"})
            for i in range(10) for m in (1, 2, 3) if m < 3 or i < 8]
    old = [("Contribution", {**contrib("2024-12", ms(2025, 1)), "who": "p0"})]
    q = rules.region_view(SAMARINDA, fold(people + paid + old, scale), ms(2025, 3, 20), 3, scale)["quota"][
        "APBD_PROVINCE"]
    assert q["total"] == 77 and q["used"] == 10 and q["filled_this_month"] == 8
    assert q["fiscal_year"] == 2025 and q["paid_idr"] == 28 * 16_800 and q["budget_idr"] == 77 * 16_800 * 12
    assert q["absorption"] == round(28 / (77 * 12), 4)


def test_every_late_event_is_counted_once_even_one_that_changes_nothing():
    first, again = reg(ms(2025, 1)), {**reg(ms(2025, 2)), "late": 1}  # registered twice: the second changes nothing
    move = {**wage_job(ms(2025, 3)), "late": 1}  # a move: its only delta is an exit
    paid = {**contrib("2025-01", ms(2025, 1, 20)), "late": 1}  # a pt move and the money: counted once
    stats = fold([("Registration", first), ("Registration", again), ("Contribution", paid), ("Registration", move)])
    assert view(stats, ms(2025, 3))["late"]["events"] == 3


def test_the_quota_shown_is_the_one_in_force_at_the_clock():
    ppu = regions()["64.09"]
    stats = None
    for i in range(3):
        state, deltas, _ = rules.apply_event(None, "Registration", {**reg(ms(2025, 2)), "region_code": "64.09",
                                                                    "funding_source": "APBD_REGENCY"})
        for d in deltas:
            stats = rules.apply_delta(stats, d, ppu, 1.0)
    quota = lambda clock: rules.region_view(ppu, stats, clock, 3, 1.0)["quota"]["APBD_REGENCY"]
    assert quota(ms(2025, 9))["total"] == 17_500 and quota(ms(2025, 10))["total"] == 22_584  # APBD-P
    assert quota(ms(2025, 10))["remaining"] == 22_581 and quota(ms(2025, 10))["budget_idr"] == 22_584 * 16_800 * 12


def test_a_paid_jkk_death_benefit_is_an_exit_and_other_jkk_claims_are_not():
    base = [("Registration", reg(ms(2025, 1)))]
    jkk = lambda status, **extra: {**jkm(status, ms(2025, 2)), "program": "JKK", "amount_idr": 48_000_000, **extra}
    exited = lambda events: view(fold(base + events), ms(2025, 2))["cohorts"]["VULNERABLE_WORKER"]["exited"]
    assert exited([("Claim", jkk("PAID", death=True))]) == {"death": 1}
    assert exited([("Claim", jkk("PAID", death=False)), ("Claim", jkk("PAID"))]) == {}  # not stated: not a death
    assert exited([("Claim", jkk("APPROVED", death=True))]) == {}  # approved is not paid


def test_a_budget_not_renewed_ends_its_members_places():
    """Samarinda's city budget pays for two members; from 2026 it is not renewed (a dated change to 0 places):
    its members leave the programme (``budget_ended``), the province's member stays."""
    from dataclasses import replace
    samarinda = replace(SAMARINDA, quota_changes=((2026 * 12, "APBD_REGENCY", 0),))
    stats = None
    for who, funder in (("a", "APBD_REGENCY"), ("b", "APBD_REGENCY"), ("c", "APBD_PROVINCE")):
        _, deltas, _ = rules.apply_event(None, "Registration", reg(ms(2025, 11), funding=funder))
        for d in deltas:
            stats = rules.apply_delta(stats, d, samarinda, 1.0)
    before, after = (rules.region_view(samarinda, stats, ms(y, m), 3, 1.0) for y, m in ((2025, 12), (2026, 1)))
    assert before["cohorts"]["VULNERABLE_WORKER"]["exited"] == {} and before["quota"]["APBD_REGENCY"]["used"] == 2
    cohort = after["cohorts"]["VULNERABLE_WORKER"]
    assert cohort["exited"] == {"budget_ended": 2} and cohort["active"] == 1 and cohort["registered"] == 3
    assert after["quota"]["APBD_REGENCY"] == {**after["quota"]["APBD_REGENCY"], "total": 0, "used": 0}
    assert list(cohort["funders"]) == ["APBD_PROVINCE"]


def test_a_payment_made_before_an_exit_but_read_after_it_moves_the_months_when_it_was_paid():
    """A quarter paid ahead on 10 February, the worker's wage job registered on 20 February: which topic is read
    first must not change the region's deltas, and so the stall rules' as-of figures."""
    first = ("Registration", reg(ms(2025, 1, 5)))
    quarter = [("Contribution", contrib(p, ms(2025, 2, 10))) for p in ("2025-02", "2025-03", "2025-04")]
    move = ("Registration", wage_job(ms(2025, 2, 20)))

    def as_of(events, day):
        stats = None
        state = None
        for kind, event in events:
            state, deltas, _ = rules.apply_event(state, kind, event)
            for d in deltas:
                stats = rules.apply_delta(stats, d, SAMARINDA, 1.0)
        return stall._as_of(stats, day // 86_400_000)[0]["VULNERABLE_WORKER"]

    for day in (ms(2025, 2, 1), ms(2025, 2, 15), ms(2025, 3, 1)):
        in_order, move_first = as_of([first, *quarter, move], day), as_of([first, move, *quarter], day)
        assert {k: v for k, v in in_order.items() if v} == {k: v for k, v in move_first.items() if v}, day


def test_coverage_is_against_the_target_in_force_at_the_clock_and_on_each_charted_day():
    kutim = regions()["64.08"]  # the regency's own programme dates a 160,000 target from 2025
    stats = None
    for _ in range(4):
        _, deltas, _ = rules.apply_event(None, "Registration", {**reg(ms(2024, 11)), "region_code": "64.08"})
        for d in deltas:
            stats = rules.apply_delta(stats, d, kutim, 1.0)
    target = lambda clock: rules.region_view(kutim, stats, clock, 3, 1.0)["cohorts"]["VULNERABLE_WORKER"]["target"]
    assert target(ms(2024, 12)) == 12_483 and target(ms(2025, 1)) == 160_000
    december, january = ms(2024, 12, 31) // rules.DAY_MS, ms(2025, 1, 1) // rules.DAY_MS
    stats.history = [[december, 4_000], [january, 4_000]]
    ncs = kutim.target["NON_CIVIL_SERVANT"]
    points = rules.history_view(kutim, stats, 1.0)
    assert [p["coverage_ratio"] for p in points] == [round(4_000 / (12_483 + ncs), 4), round(4_000 / (160_000 + ncs), 4)]
