"""Rules a decoded record must satisfy, in one place (CONTRACT.md: "Invalid input").

``check(record_name, record)`` raises ``Invalid(reason, detail)``; ``reason`` is the dead-letter reason and the
``jamsostek_dead_letter_total{reason}`` label. Details never repeat the offending value when it may be personal
data (a NIK): they say what is wrong, not what was sent.
"""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone

from streams.reference import REGION_CODES

NIK = re.compile(r"[0-9]{16}")
HYPHENATED_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
PERIOD = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
# BPJS Ketenagakerjaan started operating on 2014-01-01 (as successor of PT Jamsostek); nothing can happen earlier.
EARLIEST_EVENT_MS = int(datetime(2014, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
MAX_TEXT = 200  # occupation and other free text: longer is a broken or hostile publisher
# BPU (non-wage) participants may join JKK, JKM and JHT, not JP (PP 44/2015); JKP needs a wage-earner employer.
NOT_FOR_BPU = frozenset({"JP", "JKP"})

REASONS = (
    "invalid_event_id", "invalid_nik", "unknown_region", "negative_amount", "invalid_period",
    "invalid_timestamp", "invalid_programs", "invalid_text",
)


class Invalid(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def is_valid_nik(nik: object) -> bool:
    return isinstance(nik, str) and NIK.fullmatch(nik) is not None


def parse_period(period: str) -> tuple[int, int]:
    """'2025-03' -> (2025, 3); raises Invalid."""
    m = PERIOD.fullmatch(period) if isinstance(period, str) else None
    if m is None:
        raise Invalid("invalid_period", "period must be YYYY-MM with month 01-12")
    return int(m.group(1)), int(m.group(2))


def is_uuid(text: object) -> bool:
    """What ``uuid.UUID`` accepts; the hyphenated form every publisher sends is matched first (~0.2 µs against
    ~1.2 µs), the others (braces, ``urn:uuid:``, no hyphens) go to ``uuid.UUID``."""
    if isinstance(text, str) and HYPHENATED_UUID.fullmatch(text) is not None:
        return True
    try:
        uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def _common(record: dict, latest_ms: int | None) -> None:
    if not is_uuid(record["event_id"]):
        raise Invalid("invalid_event_id", "event_id must be a UUID")
    if not is_valid_nik(record["nik"]):
        raise Invalid("invalid_nik", f"nik must be exactly 16 ASCII digits (got {len(record['nik'])} characters)")
    if record["region_code"] not in REGION_CODES:
        raise Invalid("unknown_region", f"region_code {record['region_code'][:16]!r} is not one of the 10 Kaltim codes")
    if record["occurred_at"] < EARLIEST_EVENT_MS:
        raise Invalid("invalid_timestamp", "occurred_at is before 2014-01-01, when BPJS Ketenagakerjaan began")
    if latest_ms is not None and record["occurred_at"] > latest_ms:
        # an event that has not happened yet is not a fact (a wrong device clock, a test record): invalid
        raise Invalid("invalid_timestamp", "occurred_at is in the future (beyond MAX_FUTURE_DAYS)")


def _amount(record: dict) -> None:
    if record["amount_idr"] < 0:
        raise Invalid("negative_amount", "amount_idr must be >= 0")


def check(record_name: str, record: dict, latest_ms: int | None = None) -> None:
    """``latest_ms``: the latest acceptable event time (wall clock + allowed skew); None: no upper bound."""
    _common(record, latest_ms)
    if record_name == "Registration":
        programs = record["programs"]
        if not programs or len(set(programs)) != len(programs):
            raise Invalid("invalid_programs", "programs must be non-empty and without repeats")
        if record["segment"] == "BPU" and NOT_FOR_BPU.intersection(programs):
            raise Invalid("invalid_programs", "BPU participants cannot join JP or JKP")
        if not 0 < len(record["occupation"]) <= MAX_TEXT:
            raise Invalid("invalid_text", f"occupation must be 1-{MAX_TEXT} characters")
    elif record_name == "Contribution":
        parse_period(record["period"])
        _amount(record)
    elif record_name == "Claim":
        _amount(record)
    else:
        raise ValueError(f"no rules for record {record_name!r}")
