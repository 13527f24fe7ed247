"""The validation rules, one by one, and fuzzed."""
from __future__ import annotations

import uuid

import pytest
from hypothesis import given, strategies as st

from streams import validation
from streams.validation import Invalid, check, is_valid_nik, parse_period

BASE = {"event_id": str(uuid.uuid4()), "occurred_at": 1_735_700_000_000, "nik": "6472014107850003",
        "region_code": "64.72"}
REG = {**BASE, "segment": "BPU", "cohort": "VULNERABLE_WORKER", "occupation": "petani",
       "funding_source": "APBD_PROVINCE", "programs": ["JKK", "JKM"]}
CON = {**BASE, "period": "2025-01", "amount_idr": 16_800, "funding_source": "APBD_PROVINCE"}
CLM = {**BASE, "program": "JKM", "amount_idr": 42_000_000, "status": "PAID"}


def reason(name: str, record: dict, latest_ms: int | None = None) -> str | None:
    try:
        check(name, record, latest_ms)
    except Invalid as exc:
        return exc.reason
    return None


@pytest.mark.parametrize("name,record", [("Registration", REG), ("Contribution", CON), ("Claim", CLM)])
def test_valid_records_pass(name, record):
    assert reason(name, record) is None


@pytest.mark.parametrize("nik", ["647201410785000", "64720141078500031", "6472O14107850003", "", "６４７２０１４１０７８５０００３"])
def test_nik_must_be_16_ascii_digits(nik):
    assert reason("Contribution", {**CON, "nik": nik}) == "invalid_nik"


@pytest.mark.parametrize("code", ["64.99", "63.71", "6472", "64.5", "", "64.72 "])
def test_region_must_be_one_of_the_ten(code):
    assert reason("Claim", {**CLM, "region_code": code}) == "unknown_region"


@pytest.mark.parametrize("period", ["2025-13", "2025-00", "25-01", "2025/01", "2025-1", "2025-01-01", ""])
def test_period_must_be_yyyy_mm(period):
    assert reason("Contribution", {**CON, "period": period}) == "invalid_period"


def test_amounts_must_not_be_negative():
    assert reason("Contribution", {**CON, "amount_idr": -1}) == "negative_amount"
    assert reason("Claim", {**CLM, "amount_idr": -42}) == "negative_amount"
    assert reason("Contribution", {**CON, "amount_idr": 0}) is None


def test_event_id_timestamp_programs_text():
    assert reason("Claim", {**CLM, "event_id": "not-a-uuid"}) == "invalid_event_id"
    assert reason("Claim", {**CLM, "occurred_at": 0}) == "invalid_timestamp"
    assert reason("Registration", {**REG, "programs": []}) == "invalid_programs"
    assert reason("Registration", {**REG, "programs": ["JKK", "JKK"]}) == "invalid_programs"
    assert reason("Registration", {**REG, "programs": ["JKK", "JKM", "JP"]}) == "invalid_programs"  # BPU: no JP
    assert reason("Registration", {**REG, "segment": "PU", "programs": ["JKK", "JKM", "JHT", "JP"]}) is None
    assert reason("Registration", {**REG, "occupation": "x" * 1000}) == "invalid_text"


def test_future_event_times_are_invalid_beyond_the_allowed_skew():
    from streams.config import Settings
    latest = Settings(max_future_days=1).latest_event_ms()
    assert reason("Claim", {**CLM, "occurred_at": latest + 1}, latest) == "invalid_timestamp"
    assert reason("Claim", {**CLM, "occurred_at": latest - 1}, latest) is None
    assert reason("Claim", {**CLM, "occurred_at": 4_102_444_800_000}, None) is None  # no bound given


def test_details_never_echo_the_nik():
    bad = "647201410785000"
    with pytest.raises(Invalid) as err:
        check("Contribution", {**CON, "nik": bad})
    assert bad not in str(err.value)


def test_parse_period():
    assert parse_period("2025-03") == (2025, 3)


@given(st.text(max_size=20))
def test_nik_rule_matches_definition(text):
    assert is_valid_nik(text) == (len(text) == 16 and all(c in "0123456789" for c in text))


def _uuid_accepts(text) -> bool:
    try:
        uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


@given(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.uuids().map(lambda u: u.hex),
                 st.uuids().map(lambda u: f"{{{u}}}"), st.uuids().map(lambda u: f"urn:uuid:{u}"),
                 st.uuids().map(lambda u: str(u)[:-1] + "g"), st.uuids().map(lambda u: str(u) + "\n"),
                 st.text(max_size=40), st.none(), st.integers()))
def test_uuid_check_accepts_what_uuid_accepts(text):
    assert validation.is_uuid(text) == _uuid_accepts(text)
