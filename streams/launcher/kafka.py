"""A single-node Apache Kafka 4.x (KRaft: broker + controller in one JVM) on loopback."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from streams.launcher import jdk, maven, process
from streams.launcher.errors import LauncherError

LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
"""


SCRAM = "SCRAM-SHA-512"


def sasl_properties(port: int, sasl_port: int, controller_port: int) -> dict[str, str]:
    """A second client listener that requires SASL/SCRAM logins (the PLAINTEXT one stays for the node itself)."""
    return {
        "listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},"
                     f"CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM,
        f"listener.name.sasl_plaintext.{SCRAM.lower()}.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    }


def server_properties(data_dir: Path, port: int, controller_port: int, partitions: int, extra: dict[str, str]) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": str(partitions),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # let compaction (Faust changelogs) happen within seconds, not the default 15 s backoff
        "log.cleaner.backoff.ms": "1000",
        **extra,
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


@dataclass
class KafkaBroker:
    """``KafkaBroker.start(workdir)`` formats storage on first use and starts the node; ``stop()`` shuts it down.

    The data directory survives ``stop()``/``start()`` with the same ``workdir`` and ports (restart tests,
    the `run` command)."""

    workdir: Path
    port: int
    controller_port: int
    version: str
    cache_dir: Path
    partitions: int = 4
    extra: dict[str, str] = field(default_factory=dict)
    scram_users: dict[str, str] = field(default_factory=dict)  # user -> password: adds the SASL listener
    sasl_port: int = 0
    proc: subprocess.Popen | None = None
    startup_seconds: float = 0.0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def log(self) -> Path:
        return self.workdir / "broker.log"

    @classmethod
    def start_new(cls, workdir: Path, *, cache_dir: Path, version: str, port: int = 0, controller_port: int = 0,
                  partitions: int = 4, extra: dict[str, str] | None = None, timeout: float = 90,
                  scram_users: dict[str, str] | None = None) -> "KafkaBroker":
        broker = cls(Path(workdir), port or process.free_port(), controller_port or process.free_port(), version,
                     Path(cache_dir), partitions, dict(extra or {}), dict(scram_users or {}),
                     process.free_port() if scram_users else 0)
        broker.start(timeout)
        return broker

    def start(self, timeout: float = 90) -> None:
        java = jdk.find_java(17, f"Apache Kafka {self.version}")
        classpath = maven.kafka_classpath(self.cache_dir, self.version)
        process.require_free(self.port, "the Kafka broker")
        process.require_free(self.controller_port, "the KRaft controller")
        data = self.workdir / "data"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "server.properties"
        extra = {**(sasl_properties(self.port, self.sasl_port, self.controller_port) if self.scram_users else {}),
                 **self.extra}
        config.write_text(server_properties(data, self.port, self.controller_port, self.partitions, extra))
        (self.workdir / "log4j2.yaml").write_text(LOG4J2)
        if not (data / "meta.properties").exists():
            self._format(java, classpath, config)
        self.proc = process.spawn(
            [java, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.yaml'}", "-cp", classpath, "kafka.Kafka", str(config)],
            self.log,
        )
        self.startup_seconds = process.wait_until(self.answers_metadata, self.proc, f"Kafka broker on {self.bootstrap}",
                                                  self.log, timeout)

    def _format(self, java: str, classpath: str, config: Path) -> None:
        def tool(*args: str) -> str:
            proc = subprocess.run([java, "-cp", classpath, "kafka.tools.StorageTool", *args],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise LauncherError(f"kafka StorageTool {args[0]} failed:\n{proc.stdout}{proc.stderr}")
            return proc.stdout.strip()

        cluster_id = tool("random-uuid").splitlines()[-1]
        scram = [arg for user, password in self.scram_users.items()
                 for arg in ("--add-scram", f"{SCRAM}=[name={user},password={password}]")]
        tool("format", "--standalone", "-t", cluster_id, "-c", str(config), *scram)

    def answers_metadata(self) -> bool:
        """True once the node listens and returns cluster metadata with itself as a broker."""
        if not process.accepts(self.port):
            return False
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
        return bool(admin.list_topics(timeout=2).brokers)

    def stop(self, timeout: float = 30) -> None:
        process.stop(self.proc, timeout)
        self.proc = None

    def kill(self) -> None:
        process.kill(self.proc)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
