"""How the region stage raises a stall transition: an Avro ``RegionAlert`` on ``jamsostek.region-alerts`` (keyed by
region), a log line and the ``jamsostek_alerts_total`` counter (the ``jamsostek_region_stalled`` gauge follows the
region table). Everything downstream reads the topic: the warehouse sink upserts ``region_alert``, and the alert
sink POSTs each transition to ``ALERT_WEBHOOK_URL`` (sinks/alerts/webhook.py), at least once and in order.

Alerts carry region figures only, never a participant: no NIK, no pseudonym; the text is scrubbed all the same
(streams/privacy.py) before it goes anywhere."""
from __future__ import annotations

import logging

from streams.metrics import ALERTS
from streams.privacy import scrubbed

log = logging.getLogger("jamsostek.alerts")


async def publish(topo, alert: dict):
    """Send ``alert``; returns the delivery (await it for the broker's acknowledgement)."""
    alert = {**alert, "summary": scrubbed(alert["summary"], "alert"),
             "details": {k: scrubbed(v, "alert") for k, v in alert["details"].items()}}
    value = topo.serde.encode(topo.region_alerts.get_topic_name(), "RegionAlert", alert)
    delivery = await topo.region_alerts.send(key=alert["region_code"].encode(), value=value, force=True)  # now
    ALERTS.labels(alert["kind"], alert["status"]).inc()
    log.warning("ALERT %s %s [%s] %s (id %s)", alert["status"], alert["kind"], alert["severity"], alert["summary"],
                alert["alert_id"])
    return delivery
