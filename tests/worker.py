"""Run `jamsostek worker` as a subprocess for a test, and read it over HTTP like an operator would."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from streams.config import Settings
from streams.launcher.process import free_port


class Worker:
    def __init__(self, settings: Settings, log: Path, **env: str):
        self.settings = settings
        self.web_port, self.metrics_port = free_port(), free_port()
        self.log = log
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "SCHEMA_REGISTRY_URL": settings.schema_registry_url,
            "TOPIC_PREFIX": settings.topic_prefix,
            "TOPIC_PARTITIONS": str(settings.topic_partitions),
            "STATE_DIR": str(settings.state_dir),
            "APP_ID": settings.app_id,
            "TARGET_SCALE": str(settings.target_scale),
            "STORE": settings.store,
            "WEB_PORT": str(self.web_port),
            "METRICS_PORT": str(self.metrics_port),
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> "Worker":
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], stdout=out,
                                         stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.wait(lambda: requests.get(self.url("/healthz/"), timeout=2).ok, timeout, "worker web server")
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited ({self.proc.returncode}):\n{self.tail()}"
            try:
                if condition():
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def metrics(self) -> dict[tuple, float]:
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def events_accounted(self) -> dict[str, float]:
        """outcome -> count, summed over input topics."""
        totals: dict[str, float] = {}
        for (name, labels), value in self.metrics().items():
            if name == "jamsostek_events_total":
                outcome = dict(labels)["outcome"]
                totals[outcome] = totals.get(outcome, 0) + value
        return totals

    def regions(self) -> dict[str, dict]:
        return {r["code"]: r for r in requests.get(self.url("/regions/"), timeout=5).json()}

    def stop(self, timeout: float = 60) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
