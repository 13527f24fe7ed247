"""The one Avro serde of the project: producers, agents, sinks and tests all go through it.

Wire format (Confluent): byte 0 = 0, bytes 1-4 = schema id (big-endian), then schemaless Avro binary.
Subjects follow the topic-name strategy, ``<topic>-value``. Writer schemas are looked up in the schema
registry by id (cached); records are resolved onto the project's current reader schema, so a v1 consumer
reads v2 data and vice versa. Timestamps stay epoch milliseconds (``int``) on decode: logical types do not
change the binary encoding, and skipping datetime objects keeps the hot path cheap.
"""
from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import struct
import time
from pathlib import Path
from typing import Any, Iterable

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from fastavro.schema import expand_schema, parse_schema

from streams.config import PROJECT_ROOT
from streams.retrying import retrying

log = logging.getLogger(__name__)

MAGIC = 0
HEADER = struct.Struct(">bI")
NAMESPACE = "id.kaltim.jamsostek"


def schema_dir() -> Path:
    """schemas/avro in a checkout, or the copy packaged into a wheel."""
    checkout = PROJECT_ROOT / "schemas" / "avro"
    return checkout if checkout.is_dir() else Path(__file__).parent / "_contract" / "schemas" / "avro"


@functools.cache
def contract_schemas() -> dict[str, dict]:
    """Record name -> self-contained schema (shared enums inlined), as registered with the registry."""
    directory = schema_dir()
    shared = json.loads((directory / "enums.avsc").read_text())
    out = {}
    for path in sorted(directory.glob("*.avsc")):
        if path.name == "enums.avsc":
            continue
        record = json.loads(path.read_text())
        out[record["name"]] = expand_schema([*shared, record])[-1]
    return out


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def _parse(schema: dict | str) -> dict:
    if isinstance(schema, str):
        schema = json.loads(schema)
    return parse_schema(_without_logical_types(schema))


def registry_client(url: str, timeout: float = 10.0, retries: int | None = None) -> SchemaRegistryClient:
    """A registry client whose every request is bounded: the client's default has no timeout at all, and a
    request Apicurio never answered (seen under CI load, 2026-11-27: the registry idle, the connection open, no
    reply) held its caller forever. A timed-out request is retried by the client (``max.retries``, its default
    3, with backoff) like a refused connection."""
    conf = {"url": url, "timeout": timeout}
    if retries is not None:
        conf["max.retries"] = retries
    return SchemaRegistryClient(conf)


class DecodeError(ValueError):
    """A record that can never be decoded: it belongs on the dead-letter topic under ``reason``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RegistryUnavailable(RuntimeError):
    """The registry could not be asked (network/5xx). Transient: retry, never dead-letter."""


def frame(schema_id: int, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, schema_id) + payload


def unframe(data: bytes | None) -> tuple[int, memoryview]:
    if data is None or len(data) < HEADER.size:
        raise DecodeError("bad_framing", f"{0 if data is None else len(data)} bytes, need at least {HEADER.size}")
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError("bad_framing", f"magic byte {magic & 0xFF:#04x}, expected 0x00")
    return schema_id, memoryview(data)[HEADER.size:]


class AvroSerde:
    """Encode/decode contract records through a Confluent-compatible schema registry."""

    def __init__(self, registry: str | SchemaRegistryClient, schemas: dict[str, dict] | None = None,
                 unknown_seconds: float = 5.0):
        """``schemas``: record name -> schema to write and read with; default: this checkout's schemas/avro.
        (A consumer built from an older or newer contract passes its own.) ``unknown_seconds``: how long a schema
        id the registry did not have is taken as unknown without asking again."""
        self.unknown_seconds = unknown_seconds
        self.registry = registry if isinstance(registry, SchemaRegistryClient) else registry_client(registry)
        self._schemas = dict(contract_schemas()) | (schemas or {})
        self._readers = {name: _parse(schema) for name, schema in self._schemas.items()}
        self._writers: dict[int, dict] = {}
        self._resolution: dict[tuple[int, str], dict | None] = {}  # (writer id, record name) -> reader schema
        self._ids: dict[tuple[str, str], int] = {}
        self._unknown: dict[int, float] = {}  # schema id the registry did not have -> until when to believe it

    # -- producing ------------------------------------------------------------------------------
    def register(self, subject: str, record_name: str) -> int:
        """Register the project's schema for ``record_name`` under ``subject``; returns its id (cached)."""
        key = (subject, record_name)
        if key not in self._ids:
            schema = json.dumps(self._schemas[record_name], separators=(",", ":"))
            self._ids[key] = self.registry.register_schema(subject, Schema(schema, "AVRO"))
        return self._ids[key]

    def encode(self, topic: str, record_name: str, record: dict) -> bytes:
        schema_id = self.register(f"{topic}-value", record_name)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self._readers[record_name], record)
        return frame(schema_id, buf.getvalue())

    def warm(self, produced: dict[str, str], consumed: Iterable[str]) -> list[int]:
        """Ask the registry now for what the first records would otherwise ask for on their way: register the
        schema of each produced topic (topic -> record name), and fetch and parse the latest writer schema of each
        consumed topic's subject that has one yet. Returns the schema ids cached. Raises RegistryUnavailable.

        Why: the client is synchronous, and the worker's calls run on its event loop. The first alert's
        registration (a new subject) took 65–250 ms against Apicurio here (2026-11-27): every stage of the worker
        waited that long, at the moment its first stall transitions went out (a latency run's alert burst)."""
        ids = []
        try:
            for topic, record_name in produced.items():
                ids.append(self.register(f"{topic}-value", record_name))
            for topic in consumed:
                try:
                    latest = self.registry.get_latest_version(f"{topic}-value")
                    self.writer_schema(latest.schema_id)
                except SchemaRegistryError as exc:
                    if exc.http_status_code != 404:
                        raise
                    continue  # nothing published yet: the first record's schema is fetched then
                except DecodeError:  # not Avro: the records will be dead-lettered as such
                    continue
                ids.append(latest.schema_id)
        except RegistryUnavailable:
            raise
        except Exception as exc:  # connection refused, timeout, 5xx
            raise RegistryUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return ids

    # -- consuming ------------------------------------------------------------------------------
    def writer_schema(self, schema_id: int) -> dict:
        """The parsed writer schema of ``schema_id``, cached. An id the registry does not have is remembered as
        such for ``unknown_seconds`` (its records are dead-lettered as ``unknown_schema_id`` meanwhile without
        asking again: ingest's prefetch and then its decode would each have asked, on a flood of such records)."""
        parsed = self._writers.get(schema_id)
        if parsed is None:
            if self._unknown.get(schema_id, 0.0) > time.monotonic():
                raise DecodeError("unknown_schema_id", f"schema id {schema_id} is not in the registry")
            try:
                schema = self.registry.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    if len(self._unknown) >= 10_000:  # a flood of random ids: forget, stay bounded
                        self._unknown.clear()
                    self._unknown[schema_id] = time.monotonic() + self.unknown_seconds
                    raise DecodeError("unknown_schema_id", f"schema id {schema_id} is not in the registry") from None
                raise RegistryUnavailable(str(exc)) from exc
            except Exception as exc:  # connection refused, timeout: the record is fine, the registry is not
                raise RegistryUnavailable(f"{type(exc).__name__}: {exc}") from exc
            if schema.schema_type not in (None, "AVRO"):
                raise DecodeError("wrong_schema_type", f"schema id {schema_id} is {schema.schema_type}, not AVRO")
            parsed = self._writers[schema_id] = _parse(schema.schema_str)
        return parsed

    async def fetch_writers(self, values) -> None:
        """Fetch, off the event loop, the writer schemas of ``values`` (framed records) not cached yet, so that
        decoding them does not call the (synchronous) registry client on the loop; the worker's ingest does this
        per batch. What cannot be fetched now is left to ``decode`` (dead-letter or wait, as for any record)."""
        # the ids' bytes of the framed values (bad framing is dead-lettered by decode): a set of slices, not an
        # unframe per record
        wanted = {value[1:HEADER.size] for value in values
                  if value is not None and len(value) >= HEADER.size and value[0] == MAGIC}
        for schema_id in {int.from_bytes(raw, "big") for raw in wanted}.difference(self._writers):
            try:
                await asyncio.to_thread(self.writer_schema, schema_id)
            except (DecodeError, RegistryUnavailable):
                pass

    def decode(self, data: bytes | None, record_name: str) -> dict:
        """Decode one framed value into a dict shaped by the project's ``record_name`` schema.

        Raises DecodeError (dead-letter it) or RegistryUnavailable (retry later)."""
        schema_id, body = unframe(data)
        writer = self.writer_schema(schema_id)
        if (schema_id, record_name) not in self._resolution:  # None: our own schema, nothing to resolve
            reader = self._readers[record_name]  # (fastavro would compare writer and reader on every call)
            self._resolution[schema_id, record_name] = None if writer == reader else reader
        reader = self._resolution[schema_id, record_name]
        stream = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(stream, writer, reader)
        except fastavro.read.SchemaResolutionError as exc:
            raise DecodeError("schema_mismatch", f"schema id {schema_id} cannot be read as {record_name}: {exc}") from None
        except Exception as exc:  # truncated or garbage body: EOFError, UnicodeDecodeError, IndexError, ...
            raise DecodeError("avro_decode", f"{type(exc).__name__} reading schema id {schema_id}") from None
        if stream.tell() != len(body):
            raise DecodeError("avro_decode", f"{len(body) - stream.tell()} trailing bytes after the record")
        return record

    async def decode_waiting(self, data: bytes | None, record_name: str) -> dict:
        """``decode``, waiting out registry outages (streams/retrying.py): a good record is never dead-lettered for
        them. The retry machinery is entered only after a first attempt failed (it costs ~18 µs per call, more than
        decoding a record)."""
        try:
            return self.decode(data, record_name)
        except RegistryUnavailable:
            pass
        async for attempt in retrying("schema registry lookup", (RegistryUnavailable,), log):
            with attempt:
                return self.decode(data, record_name)
