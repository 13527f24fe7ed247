"""The simulator's stream: deterministic, ordered, realistic, and Mahakam Ulu stalls."""
from __future__ import annotations

import collections
import functools

import pytest

from streams.reference import reference, regions
from streams.simulator import Scenario
from streams.simulator.publish import run_simulation
from streams.validation import Invalid, check
from streams.serde import DecodeError
from tests.helpers import read_all


@functools.cache
def default_events() -> tuple:
    return tuple(Scenario.load().events())


def test_same_seed_same_stream_other_seed_other_stream():
    assert tuple(Scenario.load().events()) == default_events()
    assert tuple(Scenario.load(seed=7).events(2)) != tuple(Scenario.load().events(2))


def test_event_time_order_and_history_bounds():
    events = default_events()
    times = [e.occurred_at for e in events]
    assert times == sorted(times)
    sc = Scenario.load()
    assert times[0] >= sc.month_bounds(0)[0] and times[-1] < sc.month_bounds(sc.months)[0]


def test_every_default_event_is_valid_and_keyed_by_its_nik():
    for event in default_events():
        check(event.record_name, event.record)
        assert event.key == event.record["nik"] and event.expect == "processed"
        assert event.key.startswith(event.record["region_code"].replace(".", ""))  # NIK prefix = region


def enrolments(events) -> list:
    """Each NIK's first registration: a later one of the same NIK is a move to a wage job, not an enrolment."""
    first = {}
    for e in events:
        if e.record_name == "Registration":
            first.setdefault(e.key, e)
    return list(first.values())


def test_mix_is_realistic():
    events = default_events()
    kinds = collections.Counter(e.record_name for e in events)
    assert kinds["Contribution"] > 4 * kinds["Registration"] > 0 < kinds["Claim"]
    regs = [e.record for e in events if e.record_name == "Registration"]
    by_region = collections.Counter(r["region_code"] for r in regs)
    # Kutai Timur, with the regency's own programme (~95,000 in 2025), then Kutai Kartanegara (~75,000)
    assert [code for code, _ in by_region.most_common(2)] == ["64.08", "64.02"]
    first = {}
    for r in regs:
        first.setdefault(r["nik"], r)
    again = [r for r in regs if first[r["nik"]] is not r]
    assert 0 < len(again) < 0.05 * len(first)  # a few vulnerable workers move to a wage job
    for r in again:  # registered again by an employer, later, as a wage earner: nothing more of them follows
        assert first[r["nik"]]["cohort"] == "VULNERABLE_WORKER" and r["occurred_at"] > first[r["nik"]]["occurred_at"]
        assert (r["segment"], r["funding_source"]) == ("PU", "EMPLOYER")
        assert not [e for e in events if e.key == r["nik"] and e.occurred_at > r["occurred_at"]]
    for r in regs:
        if r["cohort"] == "VULNERABLE_WORKER":
            assert r["segment"] == "BPU" and r["programs"] == ["JKK", "JKM"]
            assert r["funding_source"] in reference().regions[r["region_code"]].funders  # a funder of that region, dated ones too
    berau = collections.Counter(r["funding_source"] for r in regs
                                if r["region_code"] == "64.03" and r["cohort"] == "VULNERABLE_WORKER")
    assert set(berau) == {"APBD_PROVINCE", "APBD_REGENCY", "DBH"}  # Berau 2025: regency budget + palm-oil DBH
    fees = {e.record["amount_idr"] for e in events if e.record_name == "Contribution"
            and e.record["funding_source"] == "APBD_PROVINCE"}
    assert fees == {16_800}
    claims = [e.record for e in events if e.record_name == "Claim"]
    assert {c["program"] for c in claims} >= {"JKK", "JHT"}
    assert all(c["amount_idr"] == 42_000_000 for c in claims if c["program"] == "JKM")
    lifecycles = collections.defaultdict(list)
    for c in claims:
        lifecycles[c["claim_id"]].append(c["status"])
    paths = []
    for returned in ([], ["RETURNED", "SUBMITTED"]):  # sent back for documents once, then submitted again
        first = ["SUBMITTED", *returned]
        paths += [first[:k] for k in (1, 2)] + [first, first + ["APPROVED"], first + ["APPROVED", "PAID"]]
    paths.append(["SUBMITTED", "REJECTED"])
    for statuses in lifecycles.values():  # in event-time order, each claim moves forward only
        assert statuses in paths, statuses
    assert any("RETURNED" in statuses for statuses in lifecycles.values())


def test_kutai_timur_non_civil_servants_reach_about_68_percent():
    sc = Scenario.load()
    regs = [e.record for e in default_events() if e.record_name == "Registration"]
    ncs = sum(1 for r in regs if r["region_code"] == "64.08" and r["cohort"] == "NON_CIVIL_SERVANT")
    target = regions()["64.08"].target["NON_CIVIL_SERVANT"] * sc.scale
    assert 0.55 < ncs / target < 0.80
    assert not any(r["region_code"] == "64.11" and r["cohort"] == "NON_CIVIL_SERVANT" for r in regs)


def test_mahakam_ulu_stalls_while_quota_remains():
    sc = Scenario.load()
    plan = sc.plans["64.11"]
    mahulu = [e for e in default_events() if e.record["region_code"] == "64.11"]
    regs = enrolments(mahulu)
    assert regs, "Mahakam Ulu registers some people before it stalls"
    assert max(e.occurred_at for e in regs) < sc.month_bounds(plan.stall_from_month)[0]
    assert len(regs) < regions()["64.11"].quota["APBD_PROVINCE"] * sc.scale  # quota remains
    contributions = [e for e in mahulu if e.record_name == "Contribution"]
    assert max(e.occurred_at for e in contributions) < sc.month_bounds(plan.contributions_stop_from_month)[0]
    # every other region keeps enrolling in the last month
    last = sc.month_bounds(sc.months - 1)[0]
    active = {e.record["region_code"] for e in enrolments(default_events()) if e.occurred_at >= last}
    assert active == set(regions()) - {"64.11"}


def test_a_missed_transfer_is_paid_late_and_a_quarterly_funder_pays_ahead():
    from datetime import datetime, timezone
    month = lambda ms: datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m")
    paid = collections.defaultdict(collections.Counter)  # (region, funder) -> (month paid, period) -> payments
    for e in default_events():
        if e.record_name == "Contribution":
            r = e.record
            paid[r["region_code"], r["funding_source"]][month(r["occurred_at"]), r["period"]] += 1
    kukar = paid["64.02", "APBD_PROVINCE"]  # the province's March transfer to Kutai Kartanegara came with April's
    assert kukar["2025-04", "2025-03"] > 2 * kukar["2025-03", "2025-03"] > 0  # March: newcomers' first payments only
    ppu = paid["64.09", "APBD_REGENCY"]  # PPU's own budget pays a quarter ahead
    ahead = sum(n for (paid_in, period), n in ppu.items() if period > paid_in)
    late = sum(n for (paid_in, period), n in ppu.items() if period < paid_in)  # a member's own lapse, resumed
    assert ppu["2025-05", "2025-07"] > 0 and ahead > 10 * late


def test_samarinda_goes_over_its_quota():
    sc = Scenario.load()
    regs = [e.record for e in default_events() if e.record_name == "Registration"
            and e.record["region_code"] == "64.72" and e.record["cohort"] == "VULNERABLE_WORKER"]
    assert len(regs) > sum(regions()["64.72"].quota.values()) * sc.scale


def test_lapses_and_reactivations_happen():
    paid = collections.defaultdict(set)
    for e in default_events():
        if e.record_name == "Contribution":
            paid[e.key].add(e.record["period"])
    periods = [f"2025-{m:02d}" for m in range(1, 13)] + ["2026-01", "2026-02"]  # a quarter ahead runs into 2026
    gaps = resumed = 0
    for months in paid.values():
        idx = [periods.index(p) for p in months]
        first, last = min(idx), max(idx)
        holes = set(range(first, last + 1)) - set(idx)
        gaps += bool(holes) or last < 11
        resumed += any(i - 1 not in idx and i > first for i in idx)
    assert gaps > 0 and resumed > 0


def test_faults_carry_their_expected_reason():
    events = list(Scenario.load(bad_share=0.05, duplicate_share=0.02).events(2))
    faults = collections.Counter(e.fault for e in events if e.expect == "dead_letter")
    assert set(faults) == {"invalid_nik", "unknown_region", "negative_amount", "invalid_period", "invalid_event_id",
                           "bad_framing", "unknown_schema_id", "avro_decode"}
    ids = collections.Counter(e.record["event_id"] for e in events if e.expect != "dead_letter")
    dups = [e for e in events if e.expect == "duplicate"]
    assert dups and all(ids[d.record["event_id"]] == 2 for d in dups)
    for e in events:
        if e.expect == "dead_letter" and e.fault not in ("bad_framing", "unknown_schema_id", "avro_decode"):
            with pytest.raises(Invalid) as err:
                check(e.record_name, e.record)
            assert err.value.reason == e.fault


OPTIONAL_DEFAULTS = {"Claim": {"death": None}}


def test_published_stream_decodes_to_the_ground_truth(settings, serde):
    """Two months with faults through Kafka and the registry: every record on the topics is either exactly the
    simulated record or fails decoding/validation with the reason the simulator intended."""
    sc = Scenario.load(bad_share=0.03, duplicate_share=0.02)
    from streams.topics import ensure_topics
    ensure_topics(settings)
    stats = run_simulation(settings, sc, months=2, show_progress=False)
    events = list(sc.events(2))
    assert stats.sent == len(events)
    names = settings.topics.inputs
    truth = collections.Counter()
    for e in events:
        truth[(e.record_name, e.expect, e.fault)] += 1
    seen = collections.Counter()
    by_id = {e.record["event_id"]: e for e in events if e.expect == "processed"}
    for topic, name in names.items():
        records = read_all(settings.kafka_bootstrap_servers, topic)
        assert len(records) == stats.by_topic[topic]
        for r in records:
            try:
                value = serde.decode(r.value, name)
                check(name, value)
            except (DecodeError, Invalid) as exc:
                seen[(name, "dead_letter", exc.reason)] += 1
                continue
            assert r.key.decode() == value["nik"]
            original = by_id[value["event_id"]]
            # optional fields the simulator leaves out decode as their schema default (a claim's ``death``: null)
            assert {**value, "occurred_at": original.occurred_at} == {**OPTIONAL_DEFAULTS.get(name, {}),
                                                                       **original.record}
            seen[(name, "duplicate" if value["occurred_at"] != original.occurred_at else "processed", None)] += 1
    # a duplicate re-send may land at the very same millisecond as its original only by chance; compare totals
    assert sum(v for k, v in seen.items() if k[1] == "dead_letter") == sum(v for k, v in truth.items() if k[1] == "dead_letter")
    assert {k: v for k, v in seen.items() if k[1] == "dead_letter"} == {k: v for k, v in truth.items() if k[1] == "dead_letter"}
    assert sum(seen.values()) == sum(truth.values())


def test_work_accident_deaths_are_flagged_and_end_the_worker_events():
    sc = Scenario.load(jkk_death_share=0.5)
    events = list(sc.events(6))
    deaths = [e for e in events if e.record_name == "Claim" and e.record.get("death")]
    paid = [e for e in deaths if e.record["status"] == "PAID"]
    assert paid and all(e.record["program"] == "JKK" for e in deaths)
    assert all(e.record["amount_idr"] >= 48_000_000 for e in deaths)  # 48 x the wage, Rp1 M floor
    for e in paid:  # no payment after the death benefit's month
        assert not [x for x in events if x.key == e.key and x.record_name == "Contribution"
                    and x.occurred_at > e.occurred_at + 40 * 86_400_000]


def test_events_the_broker_refuses_are_reported_not_lost_silently(settings):
    """A topic that takes no record as large as an event: librdkafka drops the sends and reports only to a delivery
    callback; ``flush`` says how many failed and why instead of returning as if they were delivered."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic
    from streams.simulator.publish import Publisher
    topic = next(t for t, name in settings.topics.inputs.items() if name == "Registration")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "64"})])[topic].result(30)
    events = [e for e in Scenario.load(scale=0.001).events(1) if e.record_name == "Registration"][:5]
    publisher = Publisher(settings)
    for event in events:
        publisher.send(event)
    with pytest.raises(KafkaException, match=r"5 messages not delivered: \{'MSG_SIZE_TOO_LARGE': 5\}"):
        publisher.flush(30)
    publisher.flush(30)  # reported once: nothing further failed since
