"""The alert sink: every transition on the alerts topic is POSTed to ``ALERT_WEBHOOK_URL`` in Alertmanager's webhook
JSON format (version "4"), in order, at least once.

Receivers written for Alertmanager (chat bridges, incident tools, Alertmanager-compatible gateways) take these
as they are. It runs in the `sink` process as a consumer group of its own (``<sink group>-webhook``), so a slow
receiver never holds the warehouse back and the worker never waits for HTTP. A transition's offset is committed
once it is delivered, so a crash or restart re-sends at most the uncommitted ones (receivers deduplicate on the
alert's fingerprint, which is stable). It reads ``read_committed``, as the warehouse sink does: a transition the
worker wrote in a transaction it then aborted (``PROCESSING_GUARANTEE=exactly_once``) never happened and is never
POSTed. A failed POST is retried (streams/retrying.py, ``attempts`` times); what still fails is logged, counted
(``jamsostek_alert_webhook_failures_total``, alerted on) and passed over.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime, timezone

import aiohttp

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from sinks.positions import positions
from streams.config import Settings
from streams.metrics import WEBHOOK_DELIVERED, WEBHOOK_FAILURES
from streams.retrying import retrying
from streams.serde import AvroSerde, DecodeError

log = logging.getLogger(__name__)
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end time"


def rfc3339(ms: int | None) -> str:
    if ms is None:
        return ZERO_TIME
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def alertmanager_payload(alert: dict, receiver: str = "jamsostek", external_url: str = "") -> dict:
    status = alert["status"].lower()
    labels = {"alertname": "RegionStalled", "region": alert["region_code"], "kind": alert["kind"].lower(),
              "severity": alert["severity"].lower()}
    if alert["details"].get("funder"):  # a per-funder rule: one alert per funder, told apart by a label
        labels["funder"] = alert["details"]["funder"]
    annotations = {"summary": alert["summary"], **{k: str(v) for k, v in alert["details"].items()}}
    group_labels = {"alertname": "RegionStalled", "region": alert["region_code"]}
    return {
        "version": "4", "receiver": receiver, "status": status, "truncatedAlerts": 0,
        "groupKey": '{}:{alertname="RegionStalled", region="%s"}' % alert["region_code"],
        "groupLabels": group_labels, "commonLabels": labels, "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": status, "labels": labels, "annotations": annotations,
            "startsAt": rfc3339(alert["started_at"]), "endsAt": rfc3339(alert.get("resolved_at")),
            "generatorURL": external_url,
            "fingerprint": hashlib.sha256(alert["alert_id"].encode()).hexdigest()[:16],
        }],
    }


class WebhookRefused(Exception):
    """The receiver answered, but not with 2xx."""


class WebhookSender:
    def __init__(self, url: str, attempts: int = 8, first_delay: float = 0.5, max_delay: float = 30.0):
        self.url, self.attempts, self.first_delay, self.max_delay = url, attempts, first_delay, max_delay

    async def deliver(self, session: aiohttp.ClientSession, alert: dict) -> bool:
        payload = alertmanager_payload(alert)
        try:
            async for attempt in retrying("alert webhook POST", (WebhookRefused, aiohttp.ClientError,
                                                                  asyncio.TimeoutError), log,
                                          first=self.first_delay, cap=self.max_delay, attempts=self.attempts):
                with attempt:
                    async with session.post(self.url, json=payload) as response:
                        if response.status >= 300:
                            raise WebhookRefused(f"HTTP {response.status}")
            WEBHOOK_DELIVERED.inc()
            return True
        except (WebhookRefused, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            WEBHOOK_FAILURES.inc()
            log.error("alert webhook gave up on %s after %d attempts (%s)", alert["alert_id"], self.attempts,
                      str(exc) or type(exc).__name__)
            return False


async def run_alert_sink(settings: Settings) -> None:
    """Consume the alerts topic from the group's committed offsets (the earliest, the first time) and deliver each
    transition in partition order; commit after each fetched run of a partition is delivered. The offset committed
    is the consumer's position, not the last alert's + 1: a transaction's marker (and aborted records) after it
    would otherwise stay as lag that never drains."""
    sender = WebhookSender(settings.alert_webhook_url)
    serde = AvroSerde(settings.schema_registry_url)
    consumer = AIOKafkaConsumer(settings.topics.region_alerts, **settings.aiokafka_conf(),
                                group_id=f"{settings.sink_group_id}-webhook", enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    committed: dict[TopicPartition, int] = {}

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            committed.update(offsets)
        except (CommitFailedError, IllegalStateError) as exc:  # rebalanced meanwhile: re-sent, receivers deduplicate
            log.warning("alert sink: offset commit failed (%s); what it covered is sent again", exc)

    await consumer.start()
    log.info("alert sink: %s -> %s", settings.topics.region_alerts, settings.alert_webhook_url)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while True:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=100)
                reached = await positions(consumer)  # past what was returned and the markers after it
                for tp, messages in fetched.items():
                    for message in messages:
                        try:
                            alert = await serde.decode_waiting(message.value, "RegionAlert")
                        except DecodeError as exc:  # not ours to judge: the warehouse sink skips it too
                            log.error("alert sink: skipping undecodable %s@%d (%s)", tp, message.offset, exc.reason)
                            continue
                        await sender.deliver(session, alert)
                    await commit({tp: reached.get(tp, messages[-1].offset + 1)})
                # partitions that returned nothing but moved: markers and aborted records stepped over
                await commit({tp: offset for tp, offset in reached.items() if committed.get(tp) != offset})
    finally:
        await consumer.stop()
