"""The Faust app: topics, tables and agents, built per Settings (so tests can run isolated app ids).

Flow (one module per stage):
  input topics (NIK-keyed, framed Avro)
    └─ ingest.py       decode · validate · pseudonymise · partition clock (late counted) ─▶ dead-letter topic
         └─▶ <app>-participant-events (keyed by participant_key, JSON, no NIK)
              └─ participants.py  participant table: dedup, paid-through, registration
                   └─▶ <app>-region-deltas (keyed by region code)
                        └─ regions.py  region table: registered, paid-through histogram, quota, claims
                             └─▶ <app>-regions-changelog ─▶ read_model.py on every worker (all 10 regions)
  web.py: GET /regions, /regions/{code}, /healthz; metrics.py gauges refreshed from the read model.
Each stage's agent is a module-level function of the topology (``ingest.agent``, ``participants.agent``,
``regions.agent``), registered here per Settings and kept in ``Topology.agents``: a test runs one in-process.
"""
from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
from dataclasses import dataclass, field
from functools import partial, update_wrapper
from typing import Any

import faust

from streams.config import Settings
from streams import stacks
from streams.faults import FaultPoints
from streams.retrying import retried
from streams.serde import AvroSerde, RegistryUnavailable
from streams.topics import CHANGELOG_CONFIG

log = logging.getLogger(__name__)


@dataclass
class Topology:
    app: faust.App
    settings: Settings
    serde: AvroSerde
    dead_letter: Any
    participant_events: Any
    region_deltas: Any
    participants: Any
    regions: Any
    read_model: Any
    watermarks: Any
    clocks: Any
    region_alerts: Any
    pseudonym_key: bytes
    faults: FaultPoints
    #: the agents by name (ingest, for every input topic; participants; regions); each is a module-level function
    #: of its stage over this topology, so a test can run one in-process (``agent.test_context()``,
    #: tests/test_agents.py)
    agents: dict[str, Any] = field(default_factory=dict)

    def add_agent(self, name: str, channel, stage, *args) -> None:
        """Register ``stage`` (a stage module's ``agent(topo, *args, stream)``) as the Faust agent ``name`` on
        ``channel``, bound to this topology and ``args``, and keep it in ``agents``. Labelled by the stage's
        function (Faust's log lines, the stacks dump), not ``functools.partial``."""
        self.agents[name] = self.app.agent(channel, name=name)(update_wrapper(partial(stage, self, *args), stage))

    @property
    def input_partitions(self) -> list[str]:
        """Every input partition as a clock source ("topic:partition", as ingest names them)."""
        return [f"{topic}:{p}" for topic in self.settings.topics.inputs for p in range(self.settings.topic_partitions)]


def tune_collector(settings: Settings) -> tuple[int, int, int]:
    """The cyclic garbage collector of a worker process: CPython's thresholds for the young generations, a full
    collection only every ``gc_full_every`` young ones. A full collection walks every container object: the
    memory store's table values, Faust's and aiokafka's objects. By default it ran whenever the survivors of
    young collections had grown by a quarter, which a filling table does again and again: on a 200k-event
    backlog 36 full collections took 7.1 s of the worker's 21 s (9.6k events/s); with 1,000 none ran and the
    same backlog took 14.4 s (14k events/s), peak RSS alike (2026-11-27, one run each, same broker). What is
    freed by reference counting (nearly everything the stages allocate) never waits for a collection; cycles
    are still collected young: full collections forced every 2 s through a backlog found no unreachable object
    at all, and took 0.08-0.24 s each (README, "Benchmark"). Returns the thresholds before."""
    before = gc.get_threshold()
    gc.set_threshold(before[0], before[1], settings.gc_full_every)
    return before


M_ARENA_MAX = -8  # glibc's malloc.h


def tune_allocator(settings: Settings) -> bool:
    """At most ``malloc_arena_max`` glibc malloc arenas (glibc's default: 8 per core). Each thread that allocates
    (Faust's consumer thread, RocksDB's background threads, the executor's) gets an arena of its own up to that
    limit, and memory freed in one arena serves no other: the RocksDB worker's peak RSS grew with the data it had
    churned through, not with what it held — tracemalloc's traced Python heap stayed at 80–120 MB from 20k to 200k
    participants while RSS rose. Peak RSS at 20k → 200k participants (``--memory-only --events 1000000``, RocksDB,
    one run each, 2026-11-28): glibc's default 1.64× and 1.50×, two arenas 1.23–1.28× (README, "Benchmark"), the
    1M-event backlog as fast. Call before the worker starts its threads (arenas already made stay). Returns
    whether the limit was set (glibc only)."""
    if settings.malloc_arena_max == 0:
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(M_ARENA_MAX, settings.malloc_arena_max))


def create_app(settings: Settings) -> Topology:
    from streams import faust_fixes, ingest, participants, regions, web
    faust_fixes.install(settings.bulk_restore)

    datadir = settings.state_dir / "faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        broker_credentials=settings.faust_credentials(),
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=settings.kafka_heartbeat_seconds,
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_host=settings.http_host,
        web_port=settings.web_port,
        web_bind=settings.http_host,
        table_cleanup_interval=30.0,
        consumer_max_fetch_size=settings.consumer_max_fetch_kb << 10,
        stream_buffer_maxsize=settings.stream_buffer_events,
        # only when asked for: exactly_once stalls on this topology (docs/reliability.md)
        **({"processing_guarantee": "exactly_once"} if settings.processing_guarantee == "exactly_once" else {}),
        # No standby replicas: with them, a worker joining a running group never fetched its active input
        # partitions (seen here with faust 0.15.3 + aiokafka 0.14; cf. faust-streaming #629/#471). Failover then
        # restores from the changelog instead of a hot standby.
        table_standby_replicas=0,
        Monitor=faust_fixes.QuietMonitor,  # no per-record sensor bookkeeping
    )
    faust_fixes.fetch_max_wait(app, settings.consumer_fetch_wait_ms)
    t = settings.topics
    key = settings.pseudonym_key_bytes()
    options = settings.rocksdb_options() if settings.store == "rocksdb" else None
    table = lambda name: app.Table(name, default=None, key_type=str, options=options,  # noqa: E731
                                   extra_topic_configs=CHANGELOG_CONFIG)
    topo = Topology(
        app=app, settings=settings, serde=AvroSerde(settings.schema_registry_url),
        dead_letter=app.topic(t.dead_letter, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw"),
        participant_events=faust_fixes.json_topic(app, f"{settings.app_id}-participant-events"),
        region_deltas=faust_fixes.json_topic(app, f"{settings.app_id}-region-deltas"),
        participants=table("participants"),
        regions=table("regions"),
        read_model=None,
        watermarks=table("watermarks"),
        clocks=table("clocks"),
        region_alerts=app.topic(t.region_alerts, key_type=bytes, value_type=bytes, key_serializer="raw",
                                value_serializer="raw"),
        pseudonym_key=key,
        faults=FaultPoints(settings.fault_point),
    )
    # a changelog record that does not decode is dead-lettered when restored, instead of stalling the restore
    for restored in (topo.participants, topo.regions, topo.watermarks, topo.clocks):
        faust_fixes.dead_letter_undecodable(restored, partial(ingest.dead_letter_changelog_record, topo))
    faust_fixes.bytes_values(topo.participants)  # its states are written as their changelog's bytes
    from streams.read_model import RegionReadModel
    assert topo.regions.changelog_topic.get_topic_name() == settings.regions_changelog
    topo.read_model = RegionReadModel(settings)
    ingest.register(topo)
    participants.register(topo)
    regions.register(topo)
    web.register(topo)

    @app.task
    async def warm_schema_registry():
        """The alert schema registered and the inputs' latest writer schemas fetched before the first records
        need them, off the event loop (streams/serde.py ``AvroSerde.warm``); waits out a registry outage."""
        warm = partial(topo.serde.warm, {t.region_alerts: "RegionAlert"}, list(t.inputs))
        ids = await retried(lambda: asyncio.to_thread(warm),
                            "schema registry warm-up", (RegistryUnavailable,), log)
        log.info("schema registry warmed: schema ids %s", ids)

    @app.task
    async def dump_tasks_on_sigusr1():  # after mode's Worker installed its own SIGUSR1 handler: replaces it
        stacks.install(asyncio.get_running_loop(), report=partial(faust_fixes.fetch_report, app))
    return topo
