"""Apicurio Registry 3.x on loopback, storing its schemas in Kafka (kafkasql), serving the Confluent API.

Apicurio's default global compatibility is NONE; Confluent's is BACKWARD. We set BACKWARD on start so an
incompatible schema is refused, as publishers used to Confluent Schema Registry expect."""
from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from streams.launcher import jdk, maven, process
from streams.launcher.errors import LauncherError

CCOMPAT = "/apis/ccompat/v7"


@dataclass
class SchemaRegistry:
    workdir: Path
    bootstrap: str
    port: int
    management_port: int
    version: str
    cache_dir: Path
    compatibility: str = "BACKWARD"
    proc: subprocess.Popen | None = None
    startup_seconds: float = 0.0

    @property
    def url(self) -> str:
        """The Confluent-compatible base URL (what SCHEMA_REGISTRY_URL should be)."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT}"

    @property
    def log(self) -> Path:
        return self.workdir / "registry.log"

    @classmethod
    def start_new(cls, workdir: Path, *, bootstrap: str, cache_dir: Path, version: str, port: int = 0,
                  timeout: float = 180) -> "SchemaRegistry":
        registry = cls(Path(workdir), bootstrap, port or process.free_port(), process.free_port(), version,
                       Path(cache_dir))
        registry.start(timeout)
        return registry

    def start(self, timeout: float = 180) -> None:
        java = jdk.find_java(21, f"Apicurio Registry {self.version}")
        home = maven.apicurio_home(self.cache_dir, self.version)
        process.require_free(self.port, "the schema registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            "APICURIO_STORAGE_KIND": "kafkasql",
            "APICURIO_KAFKASQL_BOOTSTRAP_SERVERS": self.bootstrap,
            "QUARKUS_HTTP_HOST": "127.0.0.1",
            "QUARKUS_HTTP_PORT": str(self.port),
            "QUARKUS_MANAGEMENT_HOST": "127.0.0.1",
            "QUARKUS_MANAGEMENT_PORT": str(self.management_port),
            "QUARKUS_LOG_CONSOLE_JSON": "false",
            "QUARKUS_LOG_CATEGORY__ORG_APACHE_KAFKA__LEVEL": "WARN",
            # its journal consumer waits a whole poll timeout (5 s by default) at each of several steps of its start,
            # the journal being empty or caught up: 31 s -> 13 s to answer on this machine kind
            "APICURIO_KAFKASQL_CONSUMER_POLL_TIMEOUT": "250",
        }
        # Killed outright if we die: it keeps nothing of its own (its storage is a Kafka topic), and on SIGTERM
        # with the broker going down beside it, its Kafka clients held the port ~30 s retrying before it exited.
        self.proc = process.spawn([java, "-Xms128m", "-Xmx512m", "-jar", str(home / "quarkus-run.jar")],
                                  self.log, env=env, cwd=self.workdir, death_signal=signal.SIGKILL)
        self.startup_seconds = process.wait_until(self._answers, self.proc, f"Apicurio Registry on port {self.port}",
                                                  self.log, timeout)
        resp = requests.put(f"{self.url}/config", json={"compatibility": self.compatibility}, timeout=10)
        if resp.status_code != 200:
            raise LauncherError(f"could not set registry compatibility to {self.compatibility}: {resp.text}")

    def _answers(self) -> bool:
        return requests.get(f"{self.url}/subjects", timeout=2).status_code == 200

    def stop(self, timeout: float = 30) -> None:
        process.stop(self.proc, timeout)
        self.proc = None
