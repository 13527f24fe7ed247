"""Personal data out of free text (UU PDP 27/2022): a NIK typed into a text field is replaced before the text
leaves the worker or the sink (internal topics, warehouse, dead-letter headers, alerts, logs).

The ``nik`` field itself never leaves: it becomes a keyed pseudonym (``rules.participant_key``). What this module
catches is the NIK *inside* text: an occupation written as "nelayan, NIK 6472015508900417", a claim reference that
is someone's NIK, a decoder error that quotes a value. Any run of 16 or more digits, with or without the
separators people type in a NIK ("6472 0155 0890 0417", "64.72.01-550890-0417"), becomes ``[NIK]``. A longer run
(a NIK with a typo, two NIKs run together) goes whole: over-redacting free text costs little, leaking costs much.
Each replacement is counted in ``jamsostek_nik_redacted_total{where}``.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from streams.metrics import NIK_REDACTED

REDACTED = "[NIK]"
# 16+ digits, each pair optionally separated by one space, dot, dash or slash; not part of a longer digit run
NIK_LIKE = re.compile(r"(?<![0-9])[0-9](?:[ .\-/]?[0-9]){15,}(?![0-9])")
# the string fields of the contract nobody validates the shape of: free text, scrubbed. Every other string field
# is checked by streams/validation.py (event_id a UUID, nik 16 digits, region_code one of ten, period YYYY-MM);
# tests/test_privacy.py fails when a schema gains a string field that is in neither list.
FREE_TEXT = {"Registration": ("occupation", "channel"), "Contribution": (), "Claim": ("claim_id",)}
VALIDATED = ("event_id", "nik", "region_code", "period")


def scrub(text: str) -> tuple[str, int]:
    """``text`` with every NIK-like digit run replaced by ``[NIK]``, and how many were replaced."""
    return NIK_LIKE.subn(REDACTED, text)


def scrubbed(text: str, where: str) -> str:
    """``scrub`` that counts what it replaced under ``where``."""
    clean, n = scrub(text)
    if n:
        NIK_REDACTED.labels(where).inc(n)
    return clean


def scrub_fields(record: dict, fields: Iterable[str], where: str) -> None:
    """Scrub ``record``'s string ``fields`` in place (absent or null fields are left alone)."""
    for field in fields:
        value = record.get(field)
        if isinstance(value, str):
            record[field] = scrubbed(value, where)


def scrub_record(record_name: str, record: dict, where: str) -> None:
    """Scrub the free-text fields of a decoded contract record in place."""
    scrub_fields(record, FREE_TEXT.get(record_name, ()), where)


class _Scrubbing:
    """A log record factory that scrubs the formatted message and any traceback text as the record is made, so no
    handler, formatter or log shipper downstream ever sees a NIK."""
    scrubs_nik = True

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: left for logging to report as it always does
            return record
        clean, n = scrub(message)
        if n:  # args (): mode's formatter turns None into (None,) and then fails to format the message
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            text, m = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_text, n = text, n + m  # formatters use exc_text when set
        if record.stack_info:
            record.stack_info, m = scrub(record.stack_info)
            n += m
        if n:
            NIK_REDACTED.labels("log").inc(n)
        return record


def install_log_scrubber() -> None:
    """Scrub every log record of this process (idempotent)."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "scrubs_nik", False):
        logging.setLogRecordFactory(_Scrubbing(current))
