"""POST alerts to a webhook in Alertmanager's webhook JSON format (version "4"), with retries.

Receivers written for Alertmanager (chat bridges, incident tools, Alertmanager-compatible gateways) take these
as they are. Each transition is one POST with one alert; a failed POST is retried with capped exponential
backoff (``attempts`` times); what still fails is logged and counted, and the worker goes on.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime, timezone

import aiohttp

from streams.metrics import WEBHOOK_FAILURES
from streams.retrying import retrying

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
        self.queue: asyncio.Queue[dict] = asyncio.Queue()

    def enqueue(self, alert: dict) -> None:
        self.queue.put_nowait(alert)

    async def run(self) -> None:
        """Deliver queued alerts one by one, in order."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while True:
                alert = await self.queue.get()
                await self.deliver(session, alert)

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
            return True
        except (WebhookRefused, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            WEBHOOK_FAILURES.inc()
            log.error("alert webhook gave up on %s after %d attempts (%s)", alert["alert_id"], self.attempts,
                      str(exc) or type(exc).__name__)
            return False
