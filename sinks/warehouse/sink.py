"""The warehouse sink: input topics -> fact tables, alerts -> region_alert, the region changelog -> region_snapshot
(and, beside it in the same process, the alert sink: alerts -> ALERT_WEBHOOK_URL, sinks/alerts/webhook.py).

Like Quix Streams' sinks and Kafka Connect's JDBC sink, at its core it is "write a batch, then commit": records are
collected by size (``SINK_BATCH_SIZE``) and time (``SINK_LINGER_SECONDS``), written in one database transaction
with idempotent upserts keyed on ``event_id``, and only then are their offsets committed. While the database is
down the same batch is retried with capped, jittered exponential backoff (streams/retrying.py) and the consumer goes
on polling with its partitions paused, so it stays in its group however long the outage; nothing is committed past
unwritten data, so a crash at any point re-delivers at most the uncommitted batches, which the upserts absorb. The next batch is read
and turned into rows while the previous one is written and committed (one batch ahead, at most).

Records that fail decoding or validation are skipped here (counted as ``skipped_invalid``): the stream worker
dead-letters them with the reason, and one dead letter per bad record is enough.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from datetime import datetime, timezone

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError
from sqlalchemy import Table
from sqlalchemy.exc import InterfaceError, OperationalError

from sinks.alerts.webhook import run_alert_sink
from sinks.positions import positions
from sinks.warehouse import db, rows
from sinks.warehouse.models import FACT_TABLES, UPSERT, region_alert, region_snapshot
from streams import validation
from streams.config import Settings
from streams.metrics import SINK_LAG, SINK_RECORDS, SINK_REGISTRY, SINK_RETRIES, SINK_WRITE, PartitionGauge
from streams.probes import serve
from streams.read_model import RegionReadModel
from streams.retrying import retried
from streams.serde import AvroSerde, DecodeError

log = logging.getLogger(__name__)


def _report_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sink helper %s stopped", task.get_coro().__qualname__, exc_info=task.exception())


class WarehouseSink:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = db.make_engine(settings.warehouse_url)
        self.serde = AvroSerde(settings.schema_registry_url)
        self.key = settings.pseudonym_key_bytes()
        self.read_model = RegionReadModel(settings)
        self.record_names = {**settings.topics.inputs, settings.topics.region_alerts: "RegionAlert"}
        self.database_ok = True  # until a write fails
        self.consumer: AIOKafkaConsumer | None = None
        self.committed: dict[TopicPartition, int] = {}  # what this sink last committed per partition

    # -- the loop -----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(*self.record_names, **s.aiokafka_conf(),
                                    session_timeout_ms=int(s.kafka_session_timeout_seconds * 1000),
                                    heartbeat_interval_ms=int(s.kafka_heartbeat_seconds * 1000),
                                    group_id=s.sink_group_id, enable_auto_commit=False,
                                    auto_offset_reset="earliest", isolation_level="read_committed",
                                    max_poll_records=s.sink_batch_size,
                                    max_poll_interval_ms=int(s.sink_max_poll_interval_seconds * 1000))
        await consumer.start()
        self.consumer = consumer
        helpers = [asyncio.create_task(self.read_model.run()), asyncio.create_task(self._snapshots()),
                   asyncio.create_task(serve(s.http_host, s.sink_metrics_port, SINK_REGISTRY, self.health)),
                   asyncio.create_task(self._lag(consumer))]
        if s.alert_webhook_url:
            helpers.append(asyncio.create_task(run_alert_sink(s)))
        for helper in helpers:
            helper.add_done_callback(_report_crash)
        log.info("warehouse sink consuming %s as group %s into %s", ", ".join(self.record_names), s.sink_group_id,
                 self.engine.url.render_as_string(hide_password=True))
        pending = None  # the previous batch's write and then its commit: runs while the next batch is read
        try:
            while True:
                batch = await self._collect(consumer)
                reached = await positions(consumer)
                if not batch:
                    if reached and (pending is None or pending.done()):
                        if pending is not None:
                            pending.result()  # a failed write ends the sink before anything past it is committed
                        await self._commit(consumer, [], reached)
                    continue
                table_rows = await self._rows(batch)
                if pending is not None:  # one batch in flight at most; commits stay in batch order
                    await self._wait_polling(consumer, pending)
                pending = asyncio.create_task(self._write_and_commit(consumer, table_rows, batch, reached))
                # let the write start (its thread) now: reading the next batch need not suspend, and the task
                # would otherwise first run at the ``await pending`` above, one batch later: no overlap at all
                await asyncio.sleep(0)
        finally:
            if pending is not None:
                pending.cancel()
            for task in helpers:
                task.cancel()
            await consumer.stop()
            self.engine.dispose()

    async def _wait_polling(self, consumer: AIOKafkaConsumer, write: asyncio.Task) -> None:
        """Wait for the previous batch's write and commit. While that takes long (the database is down) the
        consumer keeps polling with every partition paused: the group sees a live member however long the outage
        (past ``max.poll.interval`` a silent member is dropped and its partitions move), and nothing more is
        fetched or buffered until the database takes writes again."""
        paused = False
        while True:
            done, _ = await asyncio.wait({write}, timeout=self.settings.sink_poll_seconds)
            if done:
                break
            if not paused:
                log.warning("the warehouse write is taking long; partitions paused, still polling the group")
                paused = True
            consumer.pause(*consumer.assignment())  # newly assigned partitions too
            got = await consumer.getmany(timeout_ms=0)
            assert not any(got.values()), "paused partitions return no records"
        if paused:
            consumer.resume(*consumer.paused())
            log.info("warehouse writes go through again; partitions resumed")
        write.result()

    async def _lag(self, consumer: AIOKafkaConsumer) -> None:
        """Every few seconds: records not yet in the warehouse per assigned partition (end - committed)."""
        lag = PartitionGauge(SINK_LAG)
        while True:
            await asyncio.sleep(5)
            values = {}
            try:
                for tp in consumer.assignment():
                    highwater = consumer.highwater(tp)
                    if highwater is not None:
                        values[(tp.topic, tp.partition)] = max(highwater - (await consumer.committed(tp) or 0), 0)
            except (IllegalStateError, KafkaError) as exc:  # revoked meanwhile, broker away: next round
                log.debug("sink lag not measured this round: %s", exc)
                continue
            lag.set(values)

    def health(self) -> dict[str, bool]:
        """Readiness checks: a member of its group with partitions, the last database write went through, the
        region read model (for snapshots) loaded."""
        consumer = self.consumer
        return {"assigned": bool(consumer is not None and consumer.assignment()),
                "database": self.database_ok, "read_model": self.read_model.ready.is_set()}

    async def _collect(self, consumer: AIOKafkaConsumer) -> list:
        """Up to ``sink_batch_size`` records, waiting at most ``sink_linger_seconds`` for the batch to fill."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.sink_linger_seconds
        batch: list = []
        while len(batch) < self.settings.sink_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            got = await consumer.getmany(timeout_ms=int(remaining * 1000),
                                         max_records=self.settings.sink_batch_size - len(batch))
            for messages in got.values():
                batch.extend(messages)
        return batch

    async def _rows(self, batch: list) -> dict[Table, list[dict]]:
        loaded_at, latest = datetime.now(timezone.utc), self.settings.latest_event_ms()
        out: dict[Table, list[dict]] = defaultdict(list)
        outcomes: Counter = Counter()
        for message in batch:
            record_name = self.record_names[message.topic]
            try:
                record = await self.serde.decode_waiting(message.value, record_name)
                if record_name == "RegionAlert":
                    out[region_alert].append(rows.alert_row(record))
                    continue
                validation.check(record_name, record, latest)
            except (DecodeError, validation.Invalid):
                outcomes[message.topic, "skipped_invalid"] += 1
                continue
            source = (message.topic, message.partition, message.offset)
            out[FACT_TABLES[record_name]].append(rows.fact_row(record_name, record, self.key, source, loaded_at))
            outcomes[message.topic, "written"] += 1
        for (topic, outcome), n in outcomes.items():
            SINK_RECORDS.labels(topic, outcome).inc(n)
        return out

    async def _write(self, batch: dict[Table, list[dict]]) -> None:
        """One transaction for the whole batch; the same rows retried (streams/retrying.py) until the database
        takes them."""
        def failed(_) -> None:
            self.database_ok = False
            SINK_RETRIES.inc()
        async def write() -> None:
            with SINK_WRITE.time():
                await asyncio.to_thread(self._write_sync, batch)
        await retried(write, "warehouse write", (OperationalError, InterfaceError), log,
                      cap=self.settings.sink_max_backoff_seconds, on_retry=failed)
        self.database_ok = True

    def _write_sync(self, batch: dict[Table, list[dict]]) -> None:
        with self.engine.begin() as conn:
            for table, table_rows in batch.items():
                db.upsert(conn, table, table_rows, **UPSERT[table])

    async def _write_and_commit(self, consumer: AIOKafkaConsumer, table_rows: dict[Table, list[dict]],
                                batch: list, reached: dict[TopicPartition, int]) -> None:
        """Written, then committed at once (not when the next batch is in: on a quiet stream that would hold the
        commit back a whole linger)."""
        await self._write(table_rows)
        await self._commit(consumer, batch, reached)

    async def _commit(self, consumer: AIOKafkaConsumer, batch: list, reached: dict[TopicPartition, int]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for m in batch:
            tp = TopicPartition(m.topic, m.partition)
            offsets[tp] = max(offsets.get(tp, 0), m.offset + 1)
        for tp, position in reached.items():
            if position != self.committed.get(tp):
                offsets[tp] = max(offsets.get(tp, 0), position)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self.committed.update(offsets)
        except CommitFailedError as exc:  # the group rebalanced meanwhile: the rows are written, the records
            log.warning("offset commit failed (%s); the records will be re-delivered and upserted again", exc)

    # -- region snapshots ---------------------------------------------------------------------------------------
    async def _snapshots(self) -> None:
        """Every ``snapshot_interval_seconds``: one row per region at the stream clock, when anything changed."""
        last = None
        while True:
            await asyncio.sleep(self.settings.snapshot_interval_seconds)
            if not self.read_model.ready.is_set():
                continue
            taken_at = datetime.now(timezone.utc)
            snapshot = [row for row in (rows.snapshot_row(v, taken_at) for v in self.read_model.views()) if row]
            figures = [{k: v for k, v in row.items() if k != "taken_at"} for row in snapshot]
            if snapshot and figures != last:
                await self._write({region_snapshot: snapshot})
                last = figures
