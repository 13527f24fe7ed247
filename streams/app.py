"""The Faust app: topics, tables and agents, built per Settings (so tests can run isolated app ids).

Flow (one module per stage):
  input topics (NIK-keyed, framed Avro)
    └─ ingest.py       decode · validate · late check · pseudonymise ─▶ dead-letter topic
         └─▶ <app>-participant-events (keyed by participant_key, JSON, no NIK)
              └─ participants.py  participant table: dedup, paid-through, registration
                   └─▶ <app>-region-deltas (keyed by region code)
                        └─ regions.py  region GlobalTable: registered, paid-through histogram, quota, claims
  web.py: GET /regions, /regions/{code}, /healthz; metrics.py gauges refreshed from the region table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.config import Settings
from streams.serde import AvroSerde


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
    watermarks: Any
    pseudonym_key: bytes


def create_app(settings: Settings) -> Topology:
    from streams import ingest, participants, regions, web

    datadir = settings.state_dir / "faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_host="127.0.0.1",
        web_port=settings.web_port,
        web_bind="127.0.0.1",
        table_cleanup_interval=30.0,
    )
    t = settings.topics
    key = settings.pseudonym_key_bytes()
    topo = Topology(
        app=app, settings=settings, serde=AvroSerde(settings.schema_registry_url),
        dead_letter=app.topic(t.dead_letter, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw"),
        participant_events=app.topic(f"{settings.app_id}-participant-events", key_type=str,
                                     value_serializer="json", internal=True),
        region_deltas=app.topic(f"{settings.app_id}-region-deltas", key_type=str,
                                value_serializer="json", internal=True),
        participants=app.Table("participants", default=None, key_type=str),
        regions=app.GlobalTable("regions", default=None, key_type=str),
        watermarks=app.Table("watermarks", default=int, key_type=str),
        pseudonym_key=key,
    )
    ingest.register(topo)
    participants.register(topo)
    regions.register(topo)
    web.register(topo)
    return topo
