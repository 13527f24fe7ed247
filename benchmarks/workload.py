"""The benchmark workload: mixed events (20 % registration, 70 % contribution, 10 % claim) over the 10 regions,
skewed as the scenario's region plans are (Kutai Timur largest, with its regency's programme), one distinct participant per registration.
Built with the simulator's own record generator, so every record is valid and the fold of tests/expected.py
applies; pre-loaded into the input topics before anything is measured."""
from __future__ import annotations

import collections
from collections.abc import Callable

from streams.config import Settings
from streams.simulator import Scenario, SimEvent
from streams.simulator.publish import Publisher
from streams.simulator.scenario import _Generator
from streams.topics import ensure_topics
from streams.validation import check

MIX = {"Registration": 0.20, "Contribution": 0.70, "Claim": 0.10}
COHORTS = (("VULNERABLE_WORKER", 0.85), ("NON_CIVIL_SERVANT", 0.10), ("GENERAL", 0.05))
MONTHS = 12
CLAIM_EVENTS_PER_CLAIM = 2.9  # SUBMITTED, then APPROVED + PAID or REJECTED


def generate(events: int, seed: int = 2026) -> list[SimEvent]:
    """About ``events`` events in event-time order; ``events * 0.2`` distinct participants."""
    sc = Scenario.load(seed=seed, scale=1.0)
    g = _Generator(sc)
    rng = g.rng
    codes = sorted(sc.plans)
    weights = [sc.plans[c].vulnerable for c in codes]
    people = []
    registrations = events * MIX["Registration"] / MONTHS
    # each registration brings its first contribution; the rest are monthly payments of people already in
    extra_contributions = events * (MIX["Contribution"] - MIX["Registration"]) / MONTHS
    claims = events * MIX["Claim"] / CLAIM_EVENTS_PER_CLAIM / MONTHS
    for month in range(MONTHS):
        for _ in range(g.count(registrations)):
            code = rng.choices(codes, weights)[0]
            cohort = rng.choices([c for c, _ in COHORTS], [w for _, w in COHORTS])[0]
            g.register(sc._regions[code], cohort, month)
            people.append(g.people[code][-1])
        for _ in range(g.count(extra_contributions)):
            person = rng.choice(people)
            g.contribute(person, month, g.when(month), min(person.last_paid + 1, month))
        for _ in range(g.count(claims)):
            person = rng.choice(people)
            g.claim(person, rng.choice(person.programs), month)
    out = [event for _, _, event in sorted(g.pending)]
    for event in out[:: max(1, len(out) // 2000)]:  # a sample through the project's validation: all valid
        check(event.record_name, event.record, None)
    return out


def mix(events: list[SimEvent]) -> dict:
    counts = collections.Counter(e.record_name for e in events)
    return {"events": len(events), "participants": len({e.key for e in events}),
            **{name: counts[name] for name in MIX},
            "by_region": dict(sorted(collections.Counter(e.record["region_code"] for e in events).items()))}


def preload(settings: Settings, events: list[SimEvent], advance: Callable[[int], None] = lambda n: None) -> None:
    """Publish ``events`` (framed Avro, keyed by NIK, as upstream publishers do)."""
    ensure_topics(settings)
    publisher = Publisher(settings, **{"linger.ms": 50, "batch.size": 1_000_000})
    for i, event in enumerate(events, 1):
        publisher.send(event)
        if i % 10_000 == 0:
            advance(10_000)
    publisher.flush(300)
    advance(len(events) % 10_000)
