"""Typed participant and region state, and its versioned stored form (streams/state.py). No broker."""
from __future__ import annotations

import msgspec
import orjson
import pytest

from streams import rules, state
from streams.reference import regions
from streams.state import Participant, RegionState, StateVersionError

REGION = regions()["64.72"]
KEY = b"k" * 32


def registration(at: int = 1_740_000_000_000, event_id: str = "r1") -> dict:
    return {"event_id": event_id, "occurred_at": at, "region_code": "64.72", "cohort": "VULNERABLE_WORKER",
            "funding_source": "APBD_PROVINCE", "segment": "BPU", "programs": ["JKK", "JKM"],
            "demo": ["64.72.01", "25-34", "female", "9"]}


def contribution(period: str, event_id: str, at: int = 1_745_000_000_000) -> dict:
    return {"event_id": event_id, "occurred_at": at, "region_code": "64.72", "period": period,
            "amount_idr": 16_800, "funding_source": "APBD_PROVINCE"}


def through_the_changelog(value):
    """What a restore gives back: the stored form as JSON bytes and back."""
    return orjson.loads(orjson.dumps(state.stored(value)))


def test_a_participant_survives_its_changelog_and_leaves_its_defaults_out():
    p, _, _ = rules.apply_event(None, "Contribution", contribution("2025-02", "c0"))  # before its registration
    p, deltas, _ = rules.apply_event(p, "Registration", registration())
    p, _, _ = rules.apply_event(p, "Claim", {"event_id": "k1", "occurred_at": 1_746_000_000_000,
                                             "region_code": "64.72", "program": "JKK", "status": "SUBMITTED",
                                             "amount_idr": 5, "claim_id": "claim-1"})
    stored = state.stored(p)
    assert stored["v"] == state.PARTICIPANT_VERSION
    assert "x" not in stored and "pre" not in stored  # defaults (no exit; the early payment applied) left out
    assert state.participant_from_stored(through_the_changelog(p)) == p
    assert p.reg and p.pt == rules.period_index("2025-02") and p.cl and deltas[0]["k"] == "reg"


def test_a_participant_s_encoded_bytes_are_its_stored_form_and_read_back_from_any_writer():
    """The stage writes ``encoded`` bytes (to the table and its changelog): the same JSON object as ``stored``,
    read back straight into the type; the stored dict a memory-store restore leaves, and bytes of the code before
    (orjson of the stored dict: ``v`` last), read back alike; a newer version is refused in both forms."""
    p, _, _ = rules.apply_event(None, "Contribution", contribution("2025-02", "c0"))
    states = [p]
    for kind, value in (("Registration", registration()), ("Contribution", contribution("2025-03", "c1")),
                        ("Claim", {"event_id": "k1", "occurred_at": 1_746_000_000_000, "region_code": "64.72",
                                   "program": "JKK", "status": "SUBMITTED", "amount_idr": 5, "claim_id": "c-1"})):
        p, _, _ = rules.apply_event(p, kind, value)
        states.append(p)
    states.append(Participant())  # every field at its default: ``{"v":1}``
    for p in states:
        raw = state.encoded(p)
        assert orjson.loads(raw) == state.stored(p) and raw.startswith(b'{"v":1')
        for form in (raw, orjson.loads(raw), orjson.dumps(state.stored(p))):
            assert state.participant_from_stored(form) == p
    assert state.encoded(Participant()) == b'{"v":1}'
    with pytest.raises(StateVersionError, match="version 2"):
        state.participant_from_stored(b'{"v":2,"reg":true}')
    with pytest.raises(msgspec.ValidationError):
        state.participant_from_stored(b"[1, 2]")


def test_the_unversioned_states_of_the_code_before_read_as_they_were():
    old_participant = {"reg": True, "r": "64.72", "c": "VULNERABLE_WORKER", "f": "APBD_PROVINCE", "s": "BPU",
                       "p": ["JKK"], "pt": 24_300, "seen": [1, -2], "dm": ["u", "u", "u", "u"], "cl": {}}
    p = state.participant_from_stored(old_participant)
    assert (p.reg, p.r, p.pt, p.seen, p.x, p.cl) == (True, "64.72", 24_300, [1, -2], None, {})
    old_region = {"registered": {"VULNERABLE_WORKER": 3}, "hist": {"VULNERABLE_WORKER": {"24300": 3}},
                  "contrib": [2, 33_600], "evaluated": 20_100, "active_series": [[20_099, 3]], "alerts": {
                      "NO_REGISTRATIONS": {"status": "firing", "streak": 3, "started": 20_098, "last_started": None}}}
    r = state.region_from_stored(old_region)
    assert r.registered == {"VULNERABLE_WORKER": 3} and r.contrib == [2, 33_600] and r.evaluated == 20_100
    assert r.alerts["NO_REGISTRATIONS"]["started"] == 20_098 and r.ahead is None  # summed on first use
    assert "active_series" not in state.stored(r)  # the replaced rule's series is dropped
    assert rules.region_view(REGION, r, 0, 3, 1.0)["registered"] == 3


def test_a_state_of_a_newer_format_is_refused_not_guessed_at():
    with pytest.raises(StateVersionError, match="participant state of format version 2"):
        state.participant_from_stored({"v": 2, "reg": True})
    with pytest.raises(StateVersionError, match="region"):
        state.region_from_stored({**state.stored(RegionState()), "v": state.REGION_VERSION + 1})
    with pytest.raises(msgspec.ValidationError):  # typed: a field of the wrong type does not pass either
        state.region_from_stored({"v": 1, "registered": {"VULNERABLE_WORKER": "three"}})


def test_a_region_read_from_its_table_is_its_own_copy():
    """The region stage changes the state it read in place, and the table's value must not change with it until
    the new state is written (the write order, docs/reliability.md)."""
    r = RegionState()
    for i in range(3):
        rules.apply_delta_in_place(r, {"k": "reg", "region": "64.72", "cohort": "VULNERABLE_WORKER",
                                       "funding": "APBD_PROVINCE", "pt": 24_300, "dm": ["a", "b", "c", "d"],
                                       "at": 1_740_000_000_000 + i}, REGION, 1.0)
    held = state.stored(r)  # what the table holds
    before = orjson.dumps(held)
    copy = state.region_from_stored(held)
    rules.apply_delta_in_place(copy, {"k": "reg", "region": "64.72", "cohort": "VULNERABLE_WORKER",
                                      "funding": "APBD_PROVINCE", "pt": 24_301, "dm": ["a", "b", "c", "d"],
                                      "at": 1_740_100_000_000}, REGION, 1.0)
    assert orjson.dumps(held) == before and copy.registered == {"VULNERABLE_WORKER": 4}
    assert state.region_from_stored(through_the_changelog(r)) == r
    assert state.copy_region(r) == r and state.copy_region(r) is not r


def test_apply_event_leaves_the_state_it_was_given_as_it_was():
    p, _, _ = rules.apply_event(None, "Registration", registration())
    stored = state.stored(p)
    after, deltas, duplicate = rules.apply_event(p, "Contribution", contribution("2025-06", "c1"))
    assert not duplicate and after.pt == rules.period_index("2025-06") and deltas
    assert state.stored(p) == stored and isinstance(after, Participant)


def test_a_region_decoded_from_its_changelog_bytes_equals_the_two_step_read():
    """``region_from_json`` (the read model's path) reads what ``region_from_stored`` reads from the parsed JSON,
    refuses a newer format, and raises msgspec's errors for what is not a region's state."""
    r = RegionState(registered={"VULNERABLE_WORKER": 2}, contrib=[3, 50_400], evaluated=20_100,
                    alerts={"NO_REGISTRATIONS": {"status": "ok", "streak": 0, "started": None, "last_started": 5}},
                    protected_series=[[20_100, 0.5, 2]], alert_log=[["NO_REGISTRATIONS", "RESOLVED", 20_090, 20_100]])
    raw = orjson.dumps(state.stored(r))
    assert state.region_from_json(raw) == state.region_from_stored(orjson.loads(raw)) == r
    old = orjson.dumps({"registered": {"GENERAL": 1}, "active_series": [[1, 2]]})  # unversioned, as before
    assert state.region_from_json(old).registered == {"GENERAL": 1}
    with pytest.raises(StateVersionError):
        state.region_from_json(orjson.dumps({**state.stored(r), "v": state.REGION_VERSION + 1}))
    for bad in (b"{broken", b"[1, 2]", b'{"registered": {"GENERAL": "one"}}'):
        with pytest.raises(msgspec.MsgspecError):
            state.region_from_json(bad)
