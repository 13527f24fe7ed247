"""Run `jamsostek worker` / `jamsostek sink` as subprocesses for a test, and read them like an operator would."""
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
from streams.launcher.process import free_port, spawn


class Service:
    """One `python -m streams.cli <command>` process with its own ports. Every one started is in ``RUNNING`` until
    stopped: tests/conftest.py stops what a test left running (a failed wait must not leave a worker
    reconnecting to the session's broker for the rest of the session)."""

    command = ""

    def __init__(self, settings: Settings, log: Path, **env: str):
        self.settings = settings
        self.web_port, self.metrics_port = free_port(), free_port()
        self.log = log
        # a quiet stream's clock catches up after 10 s instead of 30 (tests wait for it)
        self.env = {**os.environ, **settings.as_env(), "CLOCK_IDLE_SECONDS": "10", "WEB_PORT": str(self.web_port),
                    "METRICS_PORT": str(self.metrics_port), "SINK_METRICS_PORT": str(self.metrics_port), **env}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90, wait: bool = True):
        """Start the process; ``wait``: until it is ready (``ready``), at most ``timeout`` seconds."""
        # dies with the process that started it (the launcher's parent-death signal): a benchmark killed by its
        # test's timeout left two workers running for an hour beside the next CI runs
        self.proc = spawn([sys.executable, "-m", "streams.cli", self.command], self.log, env=self.env)
        RUNNING.append(self)
        if wait:
            self.wait(self.ready, timeout, f"{self.command} to start")
        return self

    def ready(self) -> bool:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).ok

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.command} exited ({self.proc.returncode}):\n{self.tail()}"
            try:
                if condition():
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)
        self.dump_stacks()
        raise AssertionError(f"timed out waiting for {what}\n{self.tail(80)}")

    def dump_stacks(self) -> None:
        """Every thread's stack into the log (the worker registers faulthandler on SIGUSR1): what a hang was
        waiting on, kept with the test's logs."""
        if self.command == "worker" and self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(1)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def metrics(self) -> dict[tuple, float]:
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def outcomes(self, metric: str) -> dict[str, float]:
        """outcome label -> count of a counter, summed over its other labels."""
        totals: dict[str, float] = {}
        for (name, labels), value in self.metrics().items():
            if name == metric:
                outcome = dict(labels)["outcome"]
                totals[outcome] = totals.get(outcome, 0) + value
        return totals

    def stop(self, timeout: float = 60) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


RUNNING: list[Service] = []


def stop_leftovers(keep: set[Service]) -> None:
    """Stop every service in ``RUNNING`` but those in ``keep`` (started by a module or session fixture before the
    test), and forget it (``stop`` does nothing for one that has exited)."""
    for service in [service for service in RUNNING if service not in keep]:
        service.stop(timeout=20)
        RUNNING.remove(service)


class Worker(Service):
    command = "worker"

    def ready(self) -> bool:
        return requests.get(self.url("/healthz/"), timeout=2).ok

    def ready_to_work(self) -> bool:
        """Its readiness probe: assigned partitions, tables recovered, read model loaded, lag known. ``ready``
        (what ``start`` waits for) is its liveness: it answers seconds before records are fetched."""
        return requests.get(self.url("/readyz/"), timeout=5).status_code == 200

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def events_accounted(self) -> dict[str, float]:
        """outcome -> count, summed over input topics."""
        return self.outcomes("jamsostek_events_total")

    def regions(self) -> dict[str, dict]:
        return {r["code"]: r for r in requests.get(self.url("/regions/"), timeout=5).json()}

    def comparable_regions(self) -> dict[str, dict]:
        """``regions()`` reduced to what the independent fold computes (tests/expected.py ``comparable``)."""
        from tests.expected import comparable
        return {code: comparable(view) for code, view in self.regions().items()}


class Sink(Service):
    command = "sink"
