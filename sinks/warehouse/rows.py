"""Pure mappings from decoded, validated records (and region views) to warehouse rows. No I/O, no NIK out."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from streams.demography import from_nik
from streams.occupation import normalise
from streams.privacy import scrubbed
from streams.rules import participant_key


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def fact_row(record_name: str, record: dict, key: bytes, source: tuple[str, int, int], loaded_at: datetime) -> dict:
    """One fact row; ``source`` = (topic, partition, offset). The NIK becomes ``participant_key`` here, and a NIK
    typed into free text becomes ``[NIK]`` (streams/privacy.py)."""
    at = utc(record["occurred_at"])
    row = {"event_id": record["event_id"], "participant_key": participant_key(record["nik"], key),
           "region_code": record["region_code"], "occurred_at": at, "event_month": f"{at.year:04d}-{at.month:02d}",
           "src_topic": source[0], "src_partition": source[1], "src_offset": source[2], "loaded_at": loaded_at}
    if record_name == "Registration":
        district, age_band, sex = from_nik(record["nik"], record["region_code"], record["occurred_at"])
        row.update(segment=record["segment"], cohort=record["cohort"],
                   occupation=None, occupation_code=normalise(record["occupation"]),  # no free text
                   funding_source=record["funding_source"],
                   programs=",".join(record["programs"]), district=district, age_band=age_band, sex=sex)
    elif record_name == "Contribution":
        row.update(period=record["period"], amount_idr=record["amount_idr"], funding_source=record["funding_source"])
    else:
        row.update(program=record["program"], amount_idr=record["amount_idr"], status=record["status"])
    return row


def snapshot_row(view: dict, taken_at: datetime) -> dict | None:
    """A region_snapshot row from a region view (streams.rules.region_view) at the stream clock, or None before
    the stream has seen any event."""
    if not view["clock_ms"]:
        return None
    quota = view["quota"].values()
    return {"region_code": view["code"], "as_of": utc(view["clock_ms"]), "registered": view["registered"],
            "active": view["active"], "lapsed": view["lapsed"], "coverage_ratio": view["coverage_ratio"],
            "quota_total": sum(q["total"] for q in quota), "quota_used": sum(q["used"] for q in quota),
            "taken_at": taken_at}


def alert_row(alert: dict) -> dict:
    """A region_alert row from a decoded RegionAlert (one row per alert id; the newest transition wins)."""
    return {"alert_id": alert["alert_id"], "region_code": alert["region_code"], "kind": alert["kind"],
            "severity": alert["severity"], "status": alert["status"].lower(), "started_at": utc(alert["started_at"]),
            "resolved_at": utc(alert["resolved_at"]) if alert["resolved_at"] is not None else None,
            "details": scrubbed(json.dumps({"summary": alert["summary"], **alert["details"]}, sort_keys=True,
                                           ensure_ascii=False), "alert"),
            "updated_at": utc(alert["occurred_at"])}
