"""A seeded, event-time-ordered stream of registrations, contributions and claims for the 10 Kaltim regions.

Pure Python, no I/O: ``Scenario.load().events()`` yields ``SimEvent``s in non-decreasing event time. The same
seed gives the same events, byte for byte. Each event carries the outcome a correct consumer must reach
(``expect``), so tests can check the pipeline against the generator's own ground truth.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
import tomllib
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from streams.reference import Region, regions
from streams.rules import period_index

SCENARIO_FILE = Path(__file__).with_name("scenario.toml")
DAY_MS = 86_400_000

OCCUPATIONS = {
    "VULNERABLE_WORKER": ["petani", "nelayan", "guru ngaji", "marbot masjid", "pengobat tradisional", "pekebun sawit",
                          "buruh harian lepas", "pedagang kaki lima", "pengemudi ojek", "pemulung", "penganyam rotan"],
    "NON_CIVIL_SERVANT": ["tenaga honorer administrasi", "guru honorer", "tenaga kesehatan honorer",
                          "petugas kebersihan", "satpam kantor pemerintah", "pengemudi dinas"],
    "GENERAL": ["pedagang", "tukang bangunan", "sopir", "penjahit", "montir", "pengrajin"],
}
VULNERABLE_CHANNELS = ["DINSOS", "DISKOP_UKM", "POKMAS", "PROBEBAYA"]
VULNERABLE_FEE = 16_800  # JKK Rp10,000 (minimum) + JKM Rp6,800 per person per month
NCS_RATE = 0.0024 + 0.003 + 0.057 + 0.03  # JKK lowest risk class + JKM + JHT (2 % + 3.7 %) + JP (1 % + 2 %)
# invalid-but-decodable records the scenario can inject, and the byte-level faults the publisher applies
RULE_FAULTS = ("invalid_nik", "unknown_region", "negative_amount", "invalid_period", "invalid_event_id")
BYTE_FAULTS = ("bad_framing", "unknown_schema_id", "avro_decode")


@dataclass(frozen=True, slots=True)
class SimEvent:
    record_name: str  # Registration | Contribution | Claim
    key: str  # the NIK (message key)
    record: dict
    expect: str = "processed"  # processed | duplicate | dead_letter
    fault: str | None = None  # dead-letter reason the consumer must give

    @property
    def occurred_at(self) -> int:
        return self.record["occurred_at"]


@dataclass(frozen=True)
class RegionPlan:
    vulnerable: int
    ncs_coverage: float
    stall_from_month: int | None = None
    contributions_stop_from_month: int | None = None
    pause_months: tuple[int, int] | None = None  # registrations pause from..until (inclusive), then resume
    missed_transfers: dict[str, list[int]] | None = None  # funder -> months its transfer is missed (paid next month)
    quarterly: list[str] | None = None  # funders that pay a quarter ahead


@dataclass(slots=True)
class Person:
    nik: str
    region: str
    cohort: str
    segment: str
    funding: str
    programs: tuple[str, ...]
    income: int
    fee: int
    paying: bool = True
    last_paid: int = -1  # month index of the last paid period
    dead: bool = False   # a paid death benefit (JKM): no more payments or claims
    moved: bool = False  # registered again as a wage earner: the sponsored place ended, no more events here


def month_start_ms(start: str, index: int) -> int:
    year, month = map(int, start.split("-"))
    year, month = year + (month - 1 + index) // 12, (month - 1 + index) % 12 + 1
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def period(start: str, index: int) -> str:
    year, month = map(int, start.split("-"))
    year, month = year + (month - 1 + index) // 12, (month - 1 + index) % 12 + 1
    return f"{year:04d}-{month:02d}"


@dataclass(frozen=True)
class Scenario:
    seed: int
    start: str
    months: int
    scale: float
    plans: dict[str, RegionPlan]
    lapse: dict[str, float]
    resume_monthly: float
    arrears_months: int
    claim_rates: dict[str, float]
    rejected_share: float
    general_per_100k: float
    bad_share: float = 0.0
    duplicate_share: float = 0.0
    byte_faults: bool = True
    wage_move_monthly: float = 0.0  # monthly probability that a vulnerable worker takes a wage job (PU)
    jkk_death_share: float = 0.0  # share of paid JKK claims that are the work-accident death benefit
    returned_share: float = 0.0  # share of claims sent back once for missing documents
    _regions: dict[str, Region] = field(default_factory=lambda: dict(regions()), repr=False)

    @classmethod
    def load(cls, path: Path = SCENARIO_FILE, **overrides) -> "Scenario":
        raw = tomllib.loads(Path(path).read_text())
        plans = {code: RegionPlan(**plan) for code, plan in raw["region"].items()}
        missing = set(regions()) ^ set(plans)
        if missing:
            raise ValueError(f"{path}: region plans must cover exactly the 10 regions; mismatch {sorted(missing)}")
        resume = raw["resume"]
        claims = dict(raw["claims"])
        scenario = cls(
            seed=raw["seed"], start=raw["start"], months=raw["months"], scale=raw["scale"], plans=plans,
            lapse=dict(raw["lapse"]), resume_monthly=resume["monthly"], arrears_months=resume["arrears_months"],
            rejected_share=claims.pop("rejected_share"), jkk_death_share=claims.pop("jkk_death_share", 0.0),
            returned_share=claims.pop("returned_share", 0.0),
            claim_rates=claims,
            general_per_100k=raw["general"]["per_100k_population"],
            wage_move_monthly=raw.get("moves", {}).get("wage_employment_monthly", 0.0),
        )
        return replace(scenario, **{k: v for k, v in overrides.items() if v is not None})

    def events(self, months: int | None = None) -> Iterator[SimEvent]:
        """All events of the first ``months`` months (default: the scenario's history), in event-time order.
        ``months=0`` means: never stop (live mode)."""
        return _Generator(self).run(self.months if months is None else months)

    def month_bounds(self, index: int) -> tuple[int, int]:
        return month_start_ms(self.start, index), month_start_ms(self.start, index + 1)


class _Generator:
    def __init__(self, sc: Scenario):
        self.sc = sc
        self.rng = random.Random(sc.seed)
        self.move_rng = random.Random(sc.seed + 1)  # moves drawn apart: a scenario without them is unchanged
        self.death_rng = random.Random(sc.seed + 2)  # work-accident deaths too
        self.people: dict[str, list[Person]] = {code: [] for code in sorted(sc._regions)}
        self.niks: set[str] = set()
        self.quota_used: dict[tuple[str, str], int] = {}
        self.pending: list[tuple[int, int, SimEvent]] = []  # heap of (occurred_at, seq, event)
        self.seq = itertools.count()
        self.recent: list[SimEvent] = []  # candidates for duplicate re-sends

    # -- helpers -----------------------------------------------------------------------------------
    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def nik(self, region: Region) -> str:
        while True:
            day = self.rng.randint(1, 28) + (40 if self.rng.random() < 0.5 else 0)  # women: day + 40
            month = self.rng.randint(1, 12)
            year = self.rng.randint(1960, 2006) % 100
            district = self.rng.randint(1, 18)
            nik = f"{region.nik_prefix}{district:02d}{day:02d}{month:02d}{year:02d}{self.rng.randint(1, 9999):04d}"
            if nik not in self.niks:
                self.niks.add(nik)
                return nik

    def when(self, month: int, day_lo: float = 0, day_hi: float | None = None) -> int:
        lo, hi = self.sc.month_bounds(month)
        days = (hi - lo) / DAY_MS
        day_hi = days if day_hi is None else min(day_hi, days)
        return lo + int(self.rng.uniform(day_lo, day_hi) * DAY_MS)

    def emit(self, event: SimEvent) -> None:
        heapq.heappush(self.pending, (event.occurred_at, next(self.seq), event))

    def count(self, expected: float) -> int:
        """A random integer with the given mean (keeps small scaled figures from rounding to zero)."""
        base = math.floor(expected)
        return base + (1 if self.rng.random() < expected - base else 0)

    # -- the simulated world -----------------------------------------------------------------------
    def register(self, region: Region, cohort: str, month: int) -> None:
        rng = self.rng
        if cohort == "VULNERABLE_WORKER":
            funding = self.vulnerable_funding(region, month)
            segment, programs, income, fee = "BPU", ("JKK", "JKM"), 0, VULNERABLE_FEE
            channel = rng.choice(VULNERABLE_CHANNELS)
        elif cohort == "NON_CIVIL_SERVANT":
            funding, segment, programs = "EMPLOYER", "PU", ("JKK", "JKM", "JHT", "JP")
            income = rng.randrange(3_200_000, 4_200_000, 50_000)  # around Kaltim's 2025 minimum wages
            fee, channel = round(income * NCS_RATE), "EMPLOYER"
        else:
            funding, segment, programs = "SELF", "BPU", ("JKK", "JKM", "JHT")
            income = rng.randrange(1_000_000, 5_000_000, 100_000)
            fee, channel = max(10_000, income // 100) + 6_800 + income * 2 // 100, "BRANCH_OFFICE"
        person = Person(self.nik(region), region.code, cohort, segment, funding, programs, income, fee)
        self.people[region.code].append(person)
        self.quota_used[(region.code, funding)] = self.quota_used.get((region.code, funding), 0) + 1
        record = {
            "event_id": self.uuid(), "occurred_at": self.when(month), "nik": person.nik, "region_code": region.code,
            "segment": segment, "cohort": cohort, "occupation": rng.choice(OCCUPATIONS[cohort]),
            "funding_source": funding, "programs": list(programs), "channel": channel,
            "declared_income_idr": income or None,
        }
        self.emit(SimEvent("Registration", person.nik, record))
        # the first contribution follows registration within days
        self.contribute(person, month, record["occurred_at"] + rng.randint(1, 5) * DAY_MS)

    def vulnerable_funding(self, region: Region, month: int) -> str:
        """A funder with places left in the quotas in force that month (dated: a regency programme or an APBD-P),
        drawn by remaining places (scaled)."""
        in_force = {src: q for src, q in region.quota_at(period_index(period(self.sc.start, month))).items() if q > 0}
        remaining = {src: q * self.sc.scale - self.quota_used.get((region.code, src), 0) for src, q in in_force.items()}
        open_ = {src: left for src, left in remaining.items() if left > 0}
        pool = open_ or in_force  # all quotas used up: over-quota registrations still happen
        return self.rng.choices(sorted(pool), weights=[max(pool[s], 1) for s in sorted(pool)])[0]

    def contribute(self, person: Person, month: int, at: int, for_month: int | None = None) -> None:
        for_month = month if for_month is None else for_month
        person.last_paid = max(person.last_paid, for_month)
        self.emit(SimEvent("Contribution", person.nik, {
            "event_id": self.uuid(), "occurred_at": at, "nik": person.nik, "region_code": person.region,
            "period": period(self.sc.start, for_month), "amount_idr": person.fee, "funding_source": person.funding,
        }))

    def claim(self, person: Person, program: str, month: int) -> None:
        rng = self.rng
        amount = {
            "JKM": 42_000_000,
            "JKK": min(int(rng.lognormvariate(math.log(5_000_000), 1.0)), 500_000_000),
            "JHT": min(int(rng.lognormvariate(math.log(10_000_000), 0.9)), 300_000_000),
            "JP": min(int(rng.lognormvariate(math.log(4_000_000), 0.6)), 60_000_000),
        }[program] // 1000 * 1000
        claim_id, at, death = self.uuid(), self.when(month), False
        steps = [("SUBMITTED", at)]
        if rng.random() < self.sc.rejected_share:
            steps.append(("REJECTED", at + rng.randint(2, 10) * DAY_MS))
        else:
            if self.sc.returned_share and self.death_rng.random() < self.sc.returned_share:
                # sent back for missing documents, resubmitted a few days later (turnaround runs from the first)
                returned = at + self.death_rng.randint(1, 5) * DAY_MS
                at = returned + self.death_rng.randint(2, 10) * DAY_MS
                steps += [("RETURNED", returned), ("SUBMITTED", at)]
            approved = at + rng.randint(1, 7) * DAY_MS
            steps += [("APPROVED", approved), ("PAID", approved + rng.randint(1, 7) * DAY_MS)]
            if program == "JKK" and self.sc.jkk_death_share and self.death_rng.random() < self.sc.jkk_death_share:
                death = True  # the work-accident death benefit: 48 x the declared wage (Rp1 M floor for BPU)
                amount = 48 * max(person.income, 1_000_000)
            if program == "JKM" or death:
                person.dead, person.paying = True, False
        for status, when in steps:
            self.emit(SimEvent("Claim", person.nik, {
                "event_id": self.uuid(), "occurred_at": when, "nik": person.nik, "region_code": person.region,
                "program": program, "amount_idr": amount, "status": status, "claim_id": claim_id,
                **({"death": True} if death else {}),
            }))

    def move_to_wage_employment(self, person: Person, month: int) -> None:
        """An employer registers the worker as a wage earner (PU): the sponsored place ends (docs/domain.md)."""
        rng = self.rng
        person.moved, person.paying = True, False
        income = rng.randrange(3_200_000, 4_200_000, 50_000)
        self.emit(SimEvent("Registration", person.nik, {
            "event_id": self.uuid(), "occurred_at": self.when(month), "nik": person.nik, "region_code": person.region,
            "segment": "PU", "cohort": "GENERAL", "occupation": rng.choice(OCCUPATIONS["GENERAL"]),
            "funding_source": "EMPLOYER", "programs": ["JKK", "JKM", "JHT", "JP"], "channel": "EMPLOYER",
            "declared_income_idr": income,
        }))

    def simulate_month(self, month: int) -> None:
        sc, rng = self.sc, self.rng
        for code, people in self.people.items():
            region, plan = sc._regions[code], sc.plans[code]
            history = max(plan.stall_from_month or sc.months, 1)  # a stalling region reaches its level by then
            stalled = plan.stall_from_month is not None and month >= plan.stall_from_month
            if plan.pause_months is not None:
                stalled = stalled or plan.pause_months[0] <= month <= plan.pause_months[1]
            stopped = plan.contributions_stop_from_month is not None and month >= plan.contributions_stop_from_month
            # payments of people already registered (before this month's newcomers)
            for person in people:
                if person.dead or person.moved:
                    continue
                if person.cohort == "VULNERABLE_WORKER" and sc.wage_move_monthly \
                        and self.move_rng.random() < sc.wage_move_monthly:
                    self.move_to_wage_employment(person, month)
                    continue
                if stopped:
                    continue
                if person.paying and rng.random() < sc.lapse[person.funding]:
                    person.paying = False
                elif not person.paying and rng.random() < sc.resume_monthly:
                    person.paying = True
                    gap = month - person.last_paid - 1
                    if 0 < gap <= sc.arrears_months:  # arrears first, then the current period
                        for missed in range(person.last_paid + 1, month):
                            self.contribute(person, month, self.when(month, 0, 20), missed)
                missed = month in (plan.missed_transfers or {}).get(person.funding, ())
                if person.paying and person.last_paid < month and not missed:
                    batch = person.funding.startswith("APBD")  # budget-funded: paid in a batch around the 10th
                    at = self.when(month, 9, 12) if batch else self.when(month, 0, 25)
                    through = month + 2 if person.funding in (plan.quarterly or ()) else month
                    late = (plan.missed_transfers or {}).get(person.funding, ())
                    first = person.last_paid + 1 if month - 1 in late else month  # a missed transfer, paid now
                    for paid in range(max(first, month - sc.arrears_months), through + 1):
                        self.contribute(person, month, at, paid)
                for program in person.programs:
                    if rng.random() < sc.claim_rates.get(program, 0):
                        self.claim(person, program, month)
            if not stalled:
                # registrations: reach the plan's level by the end of the history, then keep the pace
                for _ in range(self.count(plan.vulnerable * sc.scale / history)):
                    self.register(region, "VULNERABLE_WORKER", month)
                ncs = region.target.get("NON_CIVIL_SERVANT", 0) * plan.ncs_coverage * sc.scale / history
                for _ in range(self.count(ncs)):
                    self.register(region, "NON_CIVIL_SERVANT", month)
                for _ in range(self.count(region.population / 100_000 * sc.general_per_100k * sc.scale)):
                    self.register(region, "GENERAL", month)

    def faults(self, month: int) -> None:
        """Invalid records and duplicate re-sends, each an extra event (the valid stream stays intact)."""
        sc, rng = self.sc, self.rng
        if not (sc.bad_share or sc.duplicate_share):
            return
        lo, hi = sc.month_bounds(month)
        month_events = [e for _, _, e in self.pending if e.expect == "processed" and lo <= e.occurred_at < hi]
        kinds = RULE_FAULTS + (BYTE_FAULTS if sc.byte_faults else ())
        for base in month_events:
            if rng.random() < sc.bad_share:
                self.emit(self.corrupt(base, rng.choice(kinds)))
            if rng.random() < sc.duplicate_share:
                later = base.occurred_at + rng.randint(0, 3600_000)
                self.emit(SimEvent(base.record_name, base.key, {**base.record, "occurred_at": later}, "duplicate"))

    def corrupt(self, base: SimEvent, fault: str) -> SimEvent:
        record = {**base.record, "event_id": self.uuid()}
        if fault == "invalid_nik":
            record["nik"] = base.key[:15] if self.rng.random() < 0.5 else base.key[:12] + "12A4"
        elif fault == "unknown_region":
            record["region_code"] = self.rng.choice(["64.99", "63.71", "6472", ""])
        elif fault == "negative_amount":
            if "amount_idr" not in record:  # a registration has no amount: corrupt its NIK instead
                return self.corrupt(base, "invalid_nik")
            record["amount_idr"] = -abs(record["amount_idr"] or 1)
        elif fault == "invalid_period":
            if "period" not in record:
                return self.corrupt(base, "unknown_region")
            record["period"] = self.rng.choice(["2025-13", "2025-00", "25-01", "2025/03"])
        elif fault == "invalid_event_id":
            record["event_id"] = "not-a-uuid"
        key = record["nik"]
        return SimEvent(base.record_name, key, record, "dead_letter", fault)

    def run(self, months: int) -> Iterator[SimEvent]:
        month_iter = range(months) if months > 0 else itertools.count()
        for month in month_iter:
            self.simulate_month(month)
            self.faults(month)
            _, end = self.sc.month_bounds(month)
            while self.pending and self.pending[0][0] < end:
                yield heapq.heappop(self.pending)[2]
        # events scheduled past the last month (claims still in progress) lie in the future: not emitted
