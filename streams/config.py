"""The one typed configuration object.

Values come from, highest priority first: keyword arguments, environment variables, a TOML file named by
``JAMSOSTEK_CONFIG`` (or passed as ``Settings.load(path)``), then the defaults below. Environment variable
names are the field names upper-cased (``KAFKA_BOOTSTRAP_SERVERS``, ``SCHEMA_REGISTRY_URL``, ...), as in
CONTRACT.md.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from streams.stall import StallRules

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEV_PSEUDONYM_KEY = b"kaltim-jamsostek-dev-key-not-secret"


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("kaltim-jamsostek-stream"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    # --- Kafka and the schema registry -------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    schema_registry_url: str = "http://127.0.0.1:8081/apis/ccompat/v7"
    topic_prefix: str = Field("", description="put in front of every topic name, e.g. 'staging.'")
    topic_partitions: int = Field(4, ge=1)
    # a member that stops heart-beating (kill -9, a lost node) leaves the group after this: its partitions move on
    # then (Kafka's default 45 s, Faust's 60 s would stall a restarted worker's rejoin for that long)
    kafka_session_timeout_seconds: float = Field(10, ge=6, le=300)
    # a worker told to stop (SIGTERM, Ctrl-C) that has not stopped after this exits as a crash would: without a
    # broker, Faust's stop can wait for ever on a commit or a flush (docs/reliability.md, "Failure behaviour")
    stop_timeout_seconds: float = Field(40, gt=0)
    # broker authentication/encryption, for every client of the project (worker, sink, read model, admin, simulator)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle to verify the broker (SSL, SASL_SSL)")

    # --- local stack (launcher) --------------------------------------------------------------------
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Maven jars and Apicurio live here")
    state_dir: Path = Field(PROJECT_ROOT / ".run", description="broker/registry data of the `run` command")
    kafka_version: str = "4.1.1"
    apicurio_version: str = "3.3.3"
    local_broker_port: int = 9092
    local_controller_port: int = 9093
    local_registry_port: int = 8081

    # --- warehouse, alerts, privacy ----------------------------------------------------------------
    warehouse_url: str = f"sqlite:///{PROJECT_ROOT / '.run' / 'warehouse.db'}"
    alert_webhook_url: str | None = Field(None, description="the `sink` process POSTs every alert transition here "
                                          "(Alertmanager webhook format)")
    pseudonym_key: SecretStr | None = Field(None, description="HMAC key for NIK pseudonyms; required in production")
    mode: Literal["dev", "production"] = "dev"

    # --- stream batching: per-message costs in Faust/aiokafka dominate, so stages exchange batches ------------------
    batch_size: int = Field(1000, ge=1, description="input records of one partition delivered as one Faust event at "
                            "most (streams/faust_fixes.py deliver_in_batches)")
    batch_seconds: float = Field(0.05, gt=0, description="wait at most this long to fill an input batch")
    batch_messages: int = Field(64, ge=1, description="internal messages (each a batch) the participant and region "
                                "stages take together at most: written with one round trip, a region's state "
                                "copied and written once")

    # --- warehouse sink (cf. Kafka Connect JDBC: batch.size, linger, upsert keyed on the record's id) ---------------
    sink_batch_size: int = Field(2000, ge=1, description="rows per database transaction at most")
    sink_linger_seconds: float = Field(1.0, gt=0, description="wait at most this long to fill a batch")
    sink_max_backoff_seconds: float = Field(30.0, gt=0, description="retry delay cap while the database is down")
    sink_max_poll_interval_seconds: float = Field(300.0, gt=0, description="Kafka max.poll.interval of the sink: "
                                                  "a member silent this long leaves its group")
    sink_poll_seconds: float = Field(1.0, gt=0, description="while a write is slow (database down), poll the group "
                                     "this often with partitions paused")
    snapshot_interval_seconds: float = Field(60.0, gt=0, description="how often region snapshots are written")
    sink_metrics_port: int = 9109

    # --- worker ------------------------------------------------------------------------------------
    app_id: str = "jamsostek"
    store: Literal["memory", "rocksdb"] = "memory"
    # Faust opens one RocksDB per table partition (16 with 4 tables x 4 partitions), by default with 64 MiB write
    # buffers (3 of them) and a 2 GiB block cache each: memory then grows with the data until those caps. Bounded
    # per database here (2 x 2 MiB memtables, 4 MiB cache: at most ~128 MiB over 16 databases).
    rocksdb_write_buffer_mb: int = Field(2, ge=1, description="RocksDB memtable size per table partition")
    rocksdb_block_cache_mb: int = Field(4, ge=1, description="RocksDB block cache per table partition")
    # Faust fetches up to 1 MiB per partition per request and buffers what it fetched: on a backlog that is
    # megabytes per input and internal partition held at once. A quarter of that kept the worker's speed
    # (benchmarks/: 40k-event backlog, peak RSS 164 -> 129 MB with the memory store).
    consumer_max_fetch_kb: int = Field(256, ge=1, description="bytes fetched per partition per request (KiB)")
    # Faust lets a stream hold 4,096 unprocessed events: an input event is a partition's fetched batch (up to
    # ``batch_size`` records), so on a backlog that was most of the backlog prefetched, and the worker's peak memory
    # grew with the backlog (RocksDB, 20k -> 200k participants: peak RSS x1.085 and x1.495 in two runs; with 64:
    # x1.017, and 9 % faster, one run, 2026-11-27). With the region deltas summed (2026-11-28) the stages ran ahead
    # of each other further and 64 held more: 200k participants' peak RSS 378-437 MB, x1.41-1.59 of 20k's in six
    # runs; 16: 302-344 MB, x1.09-1.31 in four (``--memory-only --events 1000000``), the 1M backlog about as fast
    # (57-64 s against 57-63 s; one run beside other work 74 s). Ingest takes 16 partition batches at once
    # (``EVENTS_AT_ONCE``); the other stages take up to ``batch_messages``, fewer when fewer are buffered, but an
    # internal message holds up to 1,000 events: 16 of them are still thousands of events a batch.
    stream_buffer_events: int = Field(16, ge=1, description="events a stage's stream may hold unprocessed")
    # Faust's 1.5 s: a fetch parked on caught-up internal topics held back the inputs behind it (faust_fixes)
    consumer_fetch_wait_ms: int = Field(100, ge=0, le=1500, description="longest the broker may hold a worker's "
                                        "fetch request that has no data yet (ms)")
    event_loop: Literal["uvloop", "asyncio"] = Field("uvloop", description="the worker's event loop")
    # why (a third of the worker's time went to full collections of filling tables): streams/app.py tune_collector
    gc_full_every: int = Field(1000, ge=1, description="young (generation-1) collections between two full ones "
                               "at least (CPython's third threshold; its default: 10)")
    # why (the RocksDB worker's peak RSS at 10x participants): streams/app.py tune_allocator
    malloc_arena_max: int = Field(2, ge=0, description="glibc malloc arenas at most (0: glibc's default, 8 per "
                                  "core); set when the worker starts, before its threads")
    bulk_restore: bool = Field(True, description="restore tables from their changelogs in batches with a consumer "
                               "of our own (streams/faust_fixes.py restore_in_bulk); false: Faust's own loop")
    profile_path: Path | None = Field(None, description="write a pyinstrument CPU profile of the worker here "
                                         "(.html and .txt) when it stops (benchmarks)")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="exactly_once: Faust's Kafka transactions; stalls on this topology with "
        "faust-streaming 0.15.3 (docs/reliability.md), kept to re-test upstream fixes")
    http_host: str = Field("127.0.0.1", description="address the web page and metrics listen on (0.0.0.0 in containers)")
    web_port: int = 6066
    metrics_port: int = 9108
    grace_months: int = Field(3, ge=0, description="complete unpaid months before a participant counts as lapsed")
    allowed_lateness_days: float = Field(45, ge=0, description="behind its partition's clock by more: "
                                         "counted as late (still applied; docs/domain.md)")
    max_future_days: float = Field(1, ge=0, description="event time ahead of the wall clock by more: dead-letter "
                                   "'invalid_timestamp' (the demo's simulator runs ahead of real time: raised there)")
    target_scale: float = Field(1.0, gt=0, description="multiply targets/quotas (a scaled-down simulation uses <1)")
    simulated: bool = Field(False, description="the stack is fed by the simulator (`jamsostek run`, docker-compose): "
                            "the page says so, with the scale")
    clock_idle_seconds: float = Field(30, ge=0, description="a source partition whose clock has not moved for this "
                                                           "long (wall time) is idle: the stream clock does not wait for it")
    stall: StallRules = Field(default_factory=StallRules, description="stall rule thresholds (docs/domain.md)")
    fault_point: str | None = Field(None, pattern=r"^[a-z]+:[a-z-]+(@[1-9][0-9]*)?$",
                                    description="drills only: `stage:point@n` kills the worker with SIGKILL the n-th "
                                    "time it reaches that point of its write order (streams/faults.py)")

    @property
    def sink_group_id(self) -> str:
        return f"{self.app_id}-warehouse"

    @property
    def regions_changelog(self) -> str:
        """The region table's changelog topic (Faust names it ``<app id>-<table>-changelog``)."""
        return f"{self.app_id}-regions-changelog"

    def as_env(self) -> dict[str, str]:
        """These settings as environment variables: what a child process (worker, sink) needs to see the same."""
        env = {}
        for name, value in self.model_dump(mode="json", exclude={"pseudonym_key", "kafka_sasl_password"}).items():
            if value is not None:
                env[name.upper()] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        for name in ("pseudonym_key", "kafka_sasl_password"):
            if getattr(self, name) is not None:
                env[name.upper()] = getattr(self, name).get_secret_value()
        return env

    def rocksdb_options(self) -> dict:
        """Faust's per-table RocksDB options (faust.stores.rocksdb.RocksDBOptions)."""
        return {"write_buffer_size": self.rocksdb_write_buffer_mb << 20, "max_write_buffer_number": 2,
                "block_cache_size": self.rocksdb_block_cache_mb << 20}

    @property
    def kafka_heartbeat_seconds(self) -> float:
        """Group heartbeats: a fifth of the session timeout (worker and sink)."""
        return self.kafka_session_timeout_seconds / 5

    # -- Kafka clients: one place that knows the security settings ------------------------------------------------
    @property
    def _sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL")

    @property
    def _sasl_password(self) -> str | None:
        return self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None

    def _ssl_context(self):
        """An SSL context for aiokafka/Faust (None without SSL)."""
        if not self.kafka_security_protocol.endswith("SSL"):
            return None
        from aiokafka.helpers import create_ssl_context
        return create_ssl_context(cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None)

    def librdkafka_conf(self) -> dict[str, str]:
        """confluent-kafka (librdkafka) client settings."""
        conf = {"bootstrap.servers": self.kafka_bootstrap_servers, "security.protocol": self.kafka_security_protocol}
        if self._sasl:
            conf.update({"sasl.mechanism": self.kafka_sasl_mechanism, "sasl.username": self.kafka_sasl_username or "",
                         "sasl.password": self._sasl_password or ""})
        if self.kafka_ssl_cafile:
            conf["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        return conf

    def aiokafka_conf(self) -> dict:
        """aiokafka client keyword arguments."""
        conf: dict = {"bootstrap_servers": self.kafka_bootstrap_servers,
                      "security_protocol": self.kafka_security_protocol}
        if self._sasl:
            conf.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                        sasl_plain_password=self._sasl_password)
        ssl_context = self._ssl_context()
        if ssl_context is not None:
            conf["ssl_context"] = ssl_context
        return conf

    def faust_credentials(self):
        """Faust's ``broker_credentials`` (None: plaintext)."""
        import faust
        ssl_context = self._ssl_context()
        if self._sasl:
            return faust.SASLCredentials(username=self.kafka_sasl_username, password=self._sasl_password,
                                         mechanism=self.kafka_sasl_mechanism, ssl_context=ssl_context)
        return faust.SSLCredentials(ssl_context) if ssl_context else None

    def latest_event_ms(self) -> int:
        """The latest acceptable event time now (worker and sink agree on what is invalid)."""
        return int((time.time() + self.max_future_days * 86_400) * 1000)

    def pseudonym_key_bytes(self) -> bytes:
        """The HMAC key for NIK pseudonyms. Production refuses to run on the development key."""
        if self.pseudonym_key is not None and self.pseudonym_key.get_secret_value():
            return self.pseudonym_key.get_secret_value().encode()
        if self.mode == "production":
            raise ValueError("PSEUDONYM_KEY must be set in production mode (NIK pseudonyms need a secret key)")
        return DEV_PSEUDONYM_KEY

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("JAMSOSTEK_CONFIG")
        if path:
            if not Path(path).is_file():
                raise FileNotFoundError(f"JAMSOSTEK_CONFIG names {path!r}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


@dataclass(frozen=True)
class Topics:
    """Topic names of CONTRACT.md, with the configured prefix."""

    prefix: str = ""

    @property
    def registrations(self) -> str:
        return f"{self.prefix}jamsostek.registrations"

    @property
    def contributions(self) -> str:
        return f"{self.prefix}jamsostek.contributions"

    @property
    def claims(self) -> str:
        return f"{self.prefix}jamsostek.claims"

    @property
    def region_alerts(self) -> str:
        return f"{self.prefix}jamsostek.region-alerts"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}jamsostek.dead-letter"

    @property
    def inputs(self) -> dict[str, str]:
        """Input topic name -> Avro record name."""
        return {self.registrations: "Registration", self.contributions: "Contribution", self.claims: "Claim"}

    @property
    def all(self) -> list[str]:
        return [self.registrations, self.contributions, self.claims, self.region_alerts, self.dead_letter]
