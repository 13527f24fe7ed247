"""Prometheus metrics of CONTRACT.md, exported by prometheus_client on the worker's metrics port."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("jamsostek_events", "Consumed input records by outcome", ["topic", "outcome"])
LATE_EVENTS = Counter("jamsostek_late_events", "Valid records read more than ALLOWED_LATENESS_DAYS behind their "
                      "partition's clock: counted in the tables like any other", ["topic"])
DEAD_LETTERS = Counter("jamsostek_dead_letter", "Records sent to the dead-letter topic", ["reason"])
REGISTERED = Gauge("jamsostek_region_registered", "Registered participants", ["region"])
ACTIVE = Gauge("jamsostek_region_active", "Active (paid-up within grace) participants", ["region"])
COVERAGE = Gauge("jamsostek_region_coverage_ratio", "Active programme participants / region target", ["region"])
QUOTA_TOTAL = Gauge("jamsostek_region_quota_total", "Quota", ["region", "funding_source"])
QUOTA_USED = Gauge("jamsostek_region_quota_used", "Quota used", ["region", "funding_source"])
STALLED = Gauge("jamsostek_region_stalled", "1 while a stall alert is firing", ["region"])
CLAIMS_PAID = Counter("jamsostek_claims_paid_idr", "Paid claim amounts (IDR)", ["region", "program"])
EVENT_LAG = Histogram("jamsostek_event_lag_seconds", "Processing time minus event time",
                      buckets=(0.1, 0.5, 1, 5, 30, 60, 300, 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400))
CONSUMER_LAG = Gauge("jamsostek_consumer_lag_records", "Input records not yet read by this worker",
                     ["topic", "partition"])
ALERTS = Counter("jamsostek_alerts", "Stall alert transitions raised by this worker", ["kind", "status"])
WEBHOOK_FAILURES = Counter("jamsostek_alert_webhook_failures", "Alert webhook POSTs given up after all retries")
NIK_REDACTED = Counter("jamsostek_nik_redacted", "NIK-like digit runs replaced in free text before it left the process "
                       "(where: record, dead_letter, alert, log)", ["where"])
SINK_WRITE = Histogram("jamsostek_sink_write_seconds", "Warehouse batch write duration")
SINK_RECORDS = Counter("jamsostek_sink_records", "Records the warehouse sink consumed, by outcome (written, "
                       "skipped_invalid: the worker dead-letters those)", ["topic", "outcome"])
SINK_RETRIES = Counter("jamsostek_sink_retries", "Warehouse writes retried after a database error")


def publish_region(view: dict) -> None:
    """Set the per-region gauges from a region view (streams.rules.region_view)."""
    code = view["code"]
    REGISTERED.labels(code).set(view["registered"])
    ACTIVE.labels(code).set(view["active"])
    COVERAGE.labels(code).set(view["coverage_ratio"] or 0)
    for funding, q in view["quota"].items():
        QUOTA_TOTAL.labels(code, funding).set(q["total"])
        QUOTA_USED.labels(code, funding).set(q["used"])
    STALLED.labels(code).set(1 if view["stalled"] else 0)
