"""Prometheus metrics of docs/contract.md. Each process exports only its own series: the worker serves
``WORKER_REGISTRY`` on its metrics port, the sink ``SINK_REGISTRY`` on its own (with the process, platform and
GC collectors in each); a metric both do (redactions) is registered in both."""
from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable

from prometheus_client import (GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, Counter, Gauge,
                               Histogram)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

WORKER_REGISTRY = CollectorRegistry(auto_describe=True)
SINK_REGISTRY = CollectorRegistry(auto_describe=True)
for _registry in (WORKER_REGISTRY, SINK_REGISTRY):
    for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        _registry.register(_collector)


W, S = (WORKER_REGISTRY,), (SINK_REGISTRY,)


def _register(metric, registries):
    for registry in registries:
        registry.register(metric)
    return metric


def counter(name, doc, labels=(), registries=W) -> Counter:
    return _register(Counter(name, doc, labels, registry=None), registries)


def gauge(name, doc, labels=(), registries=W) -> Gauge:
    return _register(Gauge(name, doc, labels, registry=None), registries)


def histogram(name, doc, registries=W, **kwargs) -> Histogram:
    return _register(Histogram(name, doc, registry=None, **kwargs), registries)


class BatchHistogram(Collector):
    """A histogram without labels observed a batch of values at a time (``observe_many``): one lock and one
    update per bucket per batch. ``Histogram.observe`` takes a lock per call and walks the buckets in Python,
    1.2 µs a value against 0.15 µs here (README, "Benchmark") — per input record, the largest metric cost of the
    hot path (2026-11-28). Exposed as ``Histogram`` is (``_bucket{le}``, ``_count``, ``_sum``)."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]):
        self.name, self.documentation = name, documentation
        self.bounds = sorted(float(b) for b in buckets if b != math.inf) + [math.inf]
        self._counts = [0] * len(self.bounds)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Iterable[float]) -> None:
        """Each value counted in the first bucket whose bound is not below it, as ``Histogram.observe`` does."""
        counts, total = [0] * len(self.bounds), 0.0
        for value in values:
            counts[bisect.bisect_left(self.bounds, value)] += 1
            total += value
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts)]
            self._sum += total

    def collect(self):
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip(self.bounds, counts):
            cumulative += n
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total)
        yield family

    def describe(self):
        yield HistogramMetricFamily(self.name, self.documentation)


# -- the worker -------------------------------------------------------------------------------------------------
EVENTS = counter("jamsostek_events", "Consumed input records by outcome", ["topic", "outcome"])
LATE_EVENTS = counter("jamsostek_late_events", "Valid records read more than ALLOWED_LATENESS_DAYS behind their "
                      "partition's clock: counted in the tables like any other", ["topic"])
MISPLACED = counter("jamsostek_misplaced_records", "Input records on another partition than the contract's "
                    "partitioner puts their key (murmur2, as the Java client and kafka-python; librdkafka-based "
                    "publishers must set partitioner=murmur2_random)", ["topic"])
DEAD_LETTERS = counter("jamsostek_dead_letter", "Records sent to the dead-letter topic", ["reason"])
REGISTERED = gauge("jamsostek_region_registered", "Registered participants", ["region"])
ACTIVE = gauge("jamsostek_region_active", "Members: paid for this month or in arrears for at most GRACE_MONTHS "
               "months (BPJS Perdir 22/2022)", ["region"])
PROTECTED = gauge("jamsostek_region_protected", "Participants paid for the current month (in arrears is not protected)",
                  ["region"])
IN_ARREARS = gauge("jamsostek_region_in_arrears", "Members in arrears, by unpaid months counting the current one",
                   ["region", "months"])
EXITED = gauge("jamsostek_region_exited", "Participants who left, by reason (death: a paid JKM claim; "
               "wage_employment: registered as a PU wage earner; budget_ended: its funder's budget not renewed); not "
               "members, their funder's slot is free",
               ["region", "reason"])
COVERAGE = gauge("jamsostek_region_coverage_ratio", "Active programme participants / region target", ["region"])
QUOTA = gauge("jamsostek_region_quota", "Quota places (participants) per region and funder", ["region", "funding_source"])
QUOTA_TOTAL = gauge("jamsostek_region_quota_total", "DEPRECATED: the same as jamsostek_region_quota (a gauge must "
                    "not end in _total); kept for dashboards written against it", ["region", "funding_source"])
QUOTA_USED = gauge("jamsostek_region_quota_used", "Quota used", ["region", "funding_source"])
STALLED = gauge("jamsostek_region_stalled", "1 while a stall alert is firing", ["region"])
ALERT_FIRING = gauge("jamsostek_region_alert_firing", "1 per stall alert firing now, by rule kind and severity "
                     "(series go when it resolves)", ["region", "kind", "severity"])
CLAIMS_PAID = counter("jamsostek_claims_paid_idr", "Paid claim amounts (IDR)", ["region", "program"])
STREAM_CLOCK = gauge("jamsostek_stream_clock_seconds", "Event time (Unix seconds) up to which every region's figures "
                     "are complete (the read model's low watermark); stands still when the feed falls silent")
EVENT_LAG = _register(BatchHistogram("jamsostek_event_lag_seconds", "Processing time minus event time",
                                     buckets=(0.1, 0.5, 1, 5, 30, 60, 300, 3600, 86400, 7 * 86400, 30 * 86400,
                                              365 * 86400)), W)
CONSUMER_LAG = gauge("jamsostek_consumer_lag_records", "Input records not yet read by this worker, per assigned "
                     "partition (series of revoked partitions are removed)", ["topic", "partition"])
ALERTS = counter("jamsostek_alerts", "Stall alert transitions raised by this worker", ["kind", "status"])

# -- the sink ---------------------------------------------------------------------------------------------------
SINK_WRITE = histogram("jamsostek_sink_write_seconds", "Warehouse batch write duration", registries=S)
SINK_RECORDS = counter("jamsostek_sink_records", "Records the warehouse sink consumed, by outcome (written, "
                       "skipped_invalid: the worker dead-letters those)", ["topic", "outcome"], registries=S)
SINK_RETRIES = counter("jamsostek_sink_retries", "Warehouse writes retried after a database error", registries=S)
WEBHOOK_DELIVERED = counter("jamsostek_alert_webhook_deliveries", "Alert transitions POSTed to the webhook (2xx)",
                            registries=S)
WEBHOOK_FAILURES = counter("jamsostek_alert_webhook_failures", "Alert webhook POSTs given up after all retries",
                           registries=S)
SINK_LAG = gauge("jamsostek_sink_lag_records", "Records not yet written to the warehouse, per assigned partition "
                 "(end offset minus committed offset)", ["topic", "partition"], registries=S)

# -- both -------------------------------------------------------------------------------------------------------
NIK_REDACTED = counter("jamsostek_nik_redacted", "NIK-like digit runs replaced in free text before it left the "
                       "process (where: record, dead_letter, alert, log)", ["where"], registries=W + S)

_FIRING: dict[str, "ShownSeries"] = {}  # region -> its alert series shown now


def publish_region(view: dict) -> None:
    """Set the per-region gauges from a region view (streams.rules.region_view)."""
    code = view["code"]
    REGISTERED.labels(code).set(view["registered"])
    ACTIVE.labels(code).set(view["active"])
    cohorts = view.get("cohorts", {}).values()
    PROTECTED.labels(code).set(sum(c["protected"] for c in cohorts))
    for months in sorted({m for c in cohorts for m in c["in_arrears"]}):
        IN_ARREARS.labels(code, months).set(sum(c["in_arrears"].get(months, 0) for c in cohorts))
    for reason in ("death",):  # shown at 0 too: a rule "exits rose" needs the series before the first exit
        EXITED.labels(code, reason).set(sum(c.get("exited", {}).get(reason, 0) for c in cohorts))
    COVERAGE.labels(code).set(view["coverage_ratio"] or 0)
    for funding, q in view["quota"].items():
        QUOTA.labels(code, funding).set(q["total"])
        QUOTA_TOTAL.labels(code, funding).set(q["total"])
        QUOTA_USED.labels(code, funding).set(q["used"])
    STALLED.labels(code).set(1 if view["stalled"] else 0)
    _FIRING.setdefault(code, ShownSeries(ALERT_FIRING)).set(
        {(code, a["kind"], a["severity"].lower()): 1 for a in view["alerts"]})


def publish_clock(views: list[dict]) -> None:
    clock_ms = max((view["clock_ms"] or 0 for view in views), default=0)
    if clock_ms:
        STREAM_CLOCK.set(clock_ms / 1000)


class ShownSeries:
    """Keeps a labelled gauge to the series that exist now: ``set`` removes the series of label tuples no longer
    given (a revoked partition, a resolved alert) instead of leaving them at their last value."""

    def __init__(self, gauge_: Gauge):
        self.gauge, self.shown = gauge_, set()

    def set(self, values: dict[tuple[str, ...], float]) -> None:
        for labels in self.shown - set(values):
            self.gauge.remove(*labels)
        for labels, value in values.items():
            self.gauge.labels(*labels).set(value)
        self.shown = set(values)


class PartitionGauge(ShownSeries):
    """A per-(topic, partition) gauge showing only the partitions a consumer holds now."""

    def set(self, values: dict[tuple[str, int], float]) -> None:
        super().set({(topic, str(partition)): value for (topic, partition), value in values.items()})
