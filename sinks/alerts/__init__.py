"""Alert channels downstream of the alerts topic (the worker only publishes to it: streams/alerts.py): the
Alertmanager-format webhook (webhook.py), run by the `sink` command when ``ALERT_WEBHOOK_URL`` is set."""
