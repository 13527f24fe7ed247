"""Every patch of Faust in this project (no other module touches a Faust private name), for the versions in
``VERSIONS``: the kill -9 drills need them. Records fetched around recovery or a rebalance were lost, and state
writes could still be in Faust's producer buffer when input offsets were committed.

Faust's fetch loop hands each record to the streams with ``wait_first(deliver(record), suspend_flow.wait())``
and marks it read either way; while flow is suspended (recovery, every rebalance) a record is therefore
dropped unread, and Faust's next ``perform_seek`` ("Seek stream partitions to committed offsets") is what brings
it back — but only for partitions with a committed offset. A partition that has none yet (a fresh internal
topic, or one whose worker died before its first commit) keeps the consumer's advanced position, and the dropped
records are never read: the 40k kill -9 drill lost the first participant-events messages of some partitions
(e.g. partition 1 offset 0: 19 contributions) in about half the runs, before this.

Three fixes: the delivery is shielded, so a record that loses the race with ``suspend_flow`` is still delivered
(the first fix alone left the drill 2 records short in one run of two); ``perform_seek`` also does what
``auto_offset_reset=earliest`` means for an assigned stream partition without a committed offset: read it from
its earliest offset; and the offset to commit never passes a record that was not processed. Faust's check for a
hole at the head of the acknowledged offsets is off by one (``min(acked) - committed > 1``, where ``committed``
is the next offset to read) and skipped while nothing is committed: with offset 1 committed after a kill, a
record at offset 1 cleared from a stream's queue by the next rebalance, while offsets 2… were acknowledged, was
committed past and never read again (the 40k drill lost participant-events offset 1 of three partitions, 10
registrations, on the unpatched code). Re-reading is safe here: every stage is idempotent
(docs/reliability.md).

A changelog record that does not decode is set aside and handed to the app (``dead_letter_undecodable``) instead
of stalling the restore: Faust's conductor dropped it before the recovery loop saw its offset, which then never
reached the changelog's end (not reported upstream).

Three more are for speed, not safety: ``deliver_in_batches`` hands an input partition's fetched records to its
agent as one event instead of one per record; ``set_durably`` writes a batch of table values to the store and the
changelog as one produce request instead of one Faust send per key (the same records, partition and persisted
offset), and ``restore_in_bulk`` reads the changelogs of a recovery in batches with a consumer of its own instead
of record by record through Faust's fetch loop.

Upstream: records dropped around rebalances and recovery are the family of robinhood/faust #115 and
faust-streaming #216/#217, #221/#223 and #241 (fixed there for other paths; this one remains in 0.15.3); the
commit offset is the code of faust-streaming #48, whose off-by-one at a hole is not reported."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import threading
import weakref
from functools import partial
from importlib.metadata import version
from time import monotonic

import faust
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import FetchResult, PartitionRecords
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import TopicPartition as KafkaTopicPartition
from faust import App, Schema, Table, Topic
from faust.stores.base import SerializedStore
from faust.stores.memory import Store as MemoryStore
from faust.tables.base import Collection
from faust.sensors import Monitor
from faust.serializers import codecs
from faust.utils import json as faust_json
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, credentials_to_aiokafka_auth, server_list
from faust.streams import _current_event
from faust.transport.consumer import Consumer
from faust.transport.producer import ProducerBuffer
from faust.exceptions import ValueDecodeError
from faust.types import TP
from faust.types.enums import ProcessingGuarantee
from faust.utils.functional import consecutive_numbers

from streams import stacks
from streams.faults import stage_failed

#: the versions these patches were written against and checked on (tests/test_faust_fixes.py also pins the source
#: of every patched method): an upgrade must re-check each patch against its upstream issue, then update both
VERSIONS = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}

#: Faust's code that the patches replace or rely on, as installed (tests/test_faust_fixes.py pins its source)
ORIGINALS = {
    "Consumer.perform_seek": Consumer.perform_seek,
    "Consumer.__init__": Consumer.__init__,
    "Consumer._new_offset": Consumer._new_offset,
    "Consumer._commit_offsets": Consumer._commit_offsets,  # flushes the producer before committing
    # replaced for the input topics' batches (deliver_in_batches): the fetch loop and the records it iterates
    "Consumer._drain_messages": Consumer._drain_messages,
    "Consumer.getmany": Consumer.getmany,
    # sets the read offset to the next offset to read (the batch trim relies on it), and aiokafka's position with no
    # await between (_skip_unreadable relies on that)
    "Consumer.seek": Consumer.seek,
    "Consumer._add_gap": Consumer._add_gap,  # the fetch loop's, kept for transactions (_add_gap_only_for_transactions)
    "ProducerBuffer.flush": ProducerBuffer.flush,
    "ProducerBuffer._send_pending": ProducerBuffer._send_pending,
    "ProducerBuffer._handle_pending": ProducerBuffer._handle_pending,  # calls _send_pending, sets message_sent
    "App._on_agent_error": App._on_agent_error,  # every agent's on_error: commits the consumer's offsets
    "App._producer_flush": App._producer_flush,  # waits for the producer's buffer, unbounded (_flush_bounded_on_stop)
    # builds the worker's aiokafka consumer with fetch_max_wait_ms=1500 written into it
    "AIOKafkaConsumerThread._create_worker_consumer": AIOKafkaConsumerThread._create_worker_consumer,
    # stops the aiokafka consumer, which can raise a fetch's CancelledError (_consumer_stop_through_cancelled_fetch)
    "AIOKafkaConsumerThread.on_thread_stop": AIOKafkaConsumerThread.on_thread_stop,
    # what _skip_unreadable reads: aiokafka's position moves past control and aborted batches after the last
    # record it returns, and only when its getmany hands records over (no fetch of its own moves it)
    "PartitionRecords._unpack_records": PartitionRecords._unpack_records,
    "FetchResult.getall": FetchResult.getall,
    # set_durably does what a table set does, batched: the changelog record, its partition, the persisted offset
    "Table.on_key_set": Table.on_key_set,
    "Collection.send_changelog": Collection.send_changelog,
    "Collection._on_changelog_sent": Collection._on_changelog_sent,
    "Topic.prepare_key": Topic.prepare_key,
    "Topic.prepare_value": Topic.prepare_value,
    # the active changelogs are read in bulk right after it (restore_in_bulk)
    "Recovery._build_offsets": Recovery._build_offsets,
    # the two ways a recovery resumes the streams: run with the consumer's flow stopped (_without_dropping)
    "Recovery.on_recovery_completed": Recovery.on_recovery_completed,
    "Recovery._resume_streams": Recovery._resume_streams,
    # what the bulk read relies on: Faust seeks each active changelog to ``active_offsets`` (the last offset
    # applied), then reads only while ``need_recovery()`` (an active offset below its highwater)
    "Recovery._seek_offsets": Recovery._seek_offsets,
    "Recovery.active_remaining": Recovery.active_remaining,
    "Table.apply_changelog_batch": Table.apply_changelog_batch,  # also where undecodable records are set aside
    "codecs.json._loads": codecs.json._loads,  # what CHECKED_JSON decodes with, not raising
    "codecs.json._dumps": codecs.json._dumps,  # what CHECKED_JSON encodes with (the fast encoders give its bytes)
    # a RocksDB store's reads and writes of our tables: the fast paths of _fast_json_loads / _fast_json_dumps
    "SerializedStore._decode_value": SerializedStore._decode_value,
    "SerializedStore._encode_value": SerializedStore._encode_value,
    "SerializedStore._encode_key": SerializedStore._encode_key,
    # the per-record hooks QuietMonitor turns off (nothing of ours reads what they count)
    "Monitor.on_message_in": Monitor.on_message_in,
    "Monitor.on_stream_event_in": Monitor.on_stream_event_in,
    "Monitor.on_stream_event_out": Monitor.on_stream_event_out,
    "Monitor.on_message_out": Monitor.on_message_out,
    "Monitor.on_table_get": Monitor.on_table_get,
    "Monitor.on_table_set": Monitor.on_table_set,
    "Monitor.on_send_initiated": Monitor.on_send_initiated,
    "Monitor.on_send_completed": Monitor.on_send_completed,
}
log = logging.getLogger(__name__)
_perform_seek = ORIGINALS["Consumer.perform_seek"]
_init = ORIGINALS["Consumer.__init__"]
_send_pending = ORIGINALS["ProducerBuffer._send_pending"]
_getmany = ORIGINALS["Consumer.getmany"]
_add_gap = ORIGINALS["Consumer._add_gap"]
_on_recovery_completed = ORIGINALS["Recovery.on_recovery_completed"]
_resume_streams = ORIGINALS["Recovery._resume_streams"]
_create_worker_consumer = ORIGINALS["AIOKafkaConsumerThread._create_worker_consumer"]
_build_offsets = ORIGINALS["Recovery._build_offsets"]
_apply_changelog_batch = ORIGINALS["Table.apply_changelog_batch"]
_decode_value = ORIGINALS["SerializedStore._decode_value"]
_producer_flush = ORIGINALS["App._producer_flush"]
_consumer_thread_stop = ORIGINALS["AIOKafkaConsumerThread.on_thread_stop"]
_encode_value = ORIGINALS["SerializedStore._encode_value"]
_encode_key = ORIGINALS["SerializedStore._encode_key"]


async def _perform_seek_from_earliest_when_uncommitted(self: Consumer) -> None:
    await _perform_seek(self)
    uncommitted = [tp for tp in self.assignment()
                   if not self._is_changelog_tp(tp) and self._committed_offset.get(tp) is None]
    if uncommitted:
        for tp, offset in (await self.earliest_offsets(*uncommitted)).items():
            await self.seek(tp, offset)
            self._committed_offset[tp] = offset  # the first commit must start from here (see _new_offset)
    batched = getattr(self.app, "batched_topics", {})
    unreturned = self.__dict__.setdefault("unreturned", {})
    unreturned.clear()
    for tp in self.assignment():
        if tp.topic in batched and self._committed_offset.get(tp) is not None:
            # aiokafka stands at the committed offset and has returned nothing since (see _unreturned); Faust's
            # read offset is that offset, or None for offset 0
            unreturned[tp] = (self._committed_offset[tp], self._read_offset.get(tp))


def _new_offset_without_passing_a_hole(self: Consumer, tp) -> int | None:
    """The offset to commit for ``tp``: one past the run of processed offsets that starts at the committed one
    (the next record to read). Offsets Faust registered as gaps (no record for a stream: transaction markers,
    compacted records) count as processed, as in Faust; offsets ``InOrder`` withheld (acknowledged by Faust but
    not processed) do not."""
    acked, gaps = self._acked[tp], self._gap[tp]
    if not acked and not gaps:
        return None
    _expand_batches(self, tp, acked)
    withheld = getattr(self, "withheld", {}).get(tp)
    if withheld and acked and min(withheld) <= max(acked):
        return _run_below(self, tp, min(withheld))
    if gaps:  # all of them, those past the last acknowledged offset too (a trailing transaction marker)
        index = self._acked_index[tp]
        for interval in sorted(gaps, key=lambda i: i.begin):
            _acknowledge_once(acked, index, range(interval.begin, interval.end))
        gaps.clear()
    if not acked:
        return None
    acked.sort()
    committed = self._committed_offset.get(tp)
    if committed is not None and acked[0] > committed:
        return None  # the record at ``committed`` is not processed yet: commit nothing past it
    run = next(consecutive_numbers(acked))
    del acked[:len(run)]
    self._acked_index[tp].difference_update(run)
    return run[-1] + 1


def _run_below(self: Consumer, tp, limit: int) -> int | None:
    """The commit offset from acknowledged offsets below ``limit`` only (the rest stay for later)."""
    acked = self._acked[tp]
    below = sorted(o for o in acked if o < limit)
    committed = self._committed_offset.get(tp)
    if not below or (committed is not None and below[0] > committed):
        return None
    run = next(consecutive_numbers(below))
    for offset in run:
        acked.remove(offset)
        self._acked_index[tp].discard(offset)
    return run[-1] + 1


class RecordBatch(list):
    """The records of one input partition that one fetch returned, in offset order, delivered to the topic's agent
    as one Faust event (``deliver_in_batches``): aiokafka ``ConsumerRecord``s (``topic``, ``partition``,
    ``offset``, ``key``, ``value``, ``headers``, ``timestamp``)."""

    __slots__ = ()


class _RecordBatchSchema(Schema):
    """A batched topic's events: no key, the ``RecordBatch`` as the value (the agent decodes each record)."""

    def loads_key(self, app, message, *, loads=None, serializer=None):
        return None

    def loads_value(self, app, message, *, loads=None, serializer=None):
        return message.value


def deliver_in_batches(app, names: list[str], most: int):
    """The topics ``names`` of ``app`` as one channel (one agent reads them all), whose records reach its agent as
    one event per partition and fetch (a ``RecordBatch`` of ``most`` records at most), instead of one event per
    record. Faust's per-record machinery — a delivery through ``wait_first`` (Tasks created and cancelled), a
    queue put and get, a Message and an Event, an ack and its bookkeeping — cost more per record than decoding,
    validating and pseudonymising it (../shared/PERF.md: a no-op agent ran at ~0.18 of the raw consume+decode
    ceiling). The batch's event is acknowledged as any event is; its offsets count as processed only then, all of
    them (``_expand_batches``). Not reported upstream (Faust has no batch delivery; ``take_events`` batches after
    the per-record costs)."""
    for name in names:
        app.__dict__.setdefault("batched_topics", {})[name] = most
    return app.topic(*names, schema=_RecordBatchSchema(key_type=bytes, value_type=bytes, key_serializer="raw",
                                                       value_serializer="raw"))


class _JsonSchema(Schema):
    """An internal topic's values: JSON written by ``json_topic``'s senders as bytes (orjson), read with orjson
    alone. Faust's json codec hands every decoded value to ``Registry._prepare_payload``, which walks it all for
    model markers (``Model._maybe_reconstruct``): for a participant-events message, hundreds of records walked key
    by key — ~10 % of the worker's CPU on a backlog, for markers our messages never carry."""

    def loads_value(self, app, message, *, loads=None, serializer=None):
        try:
            return orjson.loads(message.value)
        except orjson.JSONDecodeError as exc:  # as Faust's codec fails: the stream's decode-error path
            raise ValueDecodeError(str(exc)) from exc


def json_topic(app, name: str):
    """An internal topic keyed by a string, whose values are JSON objects sent as bytes (``json_value``)."""
    return app.topic(name, schema=_JsonSchema(key_type=str, value_type=bytes, key_serializer="raw",
                                              value_serializer="raw"), internal=True)


def json_value(value) -> bytes:
    """What a ``json_topic`` carries: compact JSON, as Faust's json codec writes it (orjson)."""
    return orjson.dumps(value)


async def _getmany_in_batches(self: Consumer, timeout: float):
    """Faust's ``Consumer.getmany`` (what the fetch loop iterates), handing over each batched topic's records of
    a partition as one message: the last record's, whose value is the ``RecordBatch``. Records of a batch the
    fetch loop has read already (a fetch racing a seek) are left out, a hole before the batch is registered as
    Faust registers one, and the read offset is set to just before the last record: the fetch loop, which
    computes holes and what it reads from the message's offset, then sees one record following the one before
    (Faust's hole is ``r_offset + 1 … offset``, the delivered record included: right for one record, wrong for a
    batch). Other topics' records go as Faust hands them over, one message each, round-robin."""
    batched = getattr(self.app, "batched_topics", None)
    if not batched:
        async for item in _getmany(self, timeout):
            yield item
        return
    records, active_partitions = await self._wait_next_records(timeout)
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return
    if not self.flow_active:  # as Faust does
        self.__dict__.get("unreturned", {}).clear()  # the records are dropped (perform_seek notes anew)
        try:
            await self.perform_seek()
        except Exception as exc:
            log.warning("exception performing seek when flow not active %r", exc)
        return
    singles = {}
    unreturned = self.__dict__.setdefault("unreturned", {})
    for tp, fetched in records.items():
        # where aiokafka stood before this fetch: the offsets from there to the first record it returned
        # (transaction markers, aborted records) hold no record to process
        before = _unreturned(self, tp, unreturned.pop(tp, None))
        if not (active_partitions is None or tp in active_partitions or tp in self._buffered_partitions):
            continue
        if tp.topic not in batched:
            singles[tp] = fetched
            continue
        most = batched[tp.topic]
        for start in range(0, len(fetched), most):
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                unreturned.clear()  # records left undelivered behind the consumer's position
                return
            read = self._read_offset[tp]  # the last offset read, or (after a seek) the next one to read
            batch = RecordBatch(r for r in fetched[start:start + most] if read is None or r.offset >= read)
            if not batch:
                continue
            first, last = batch[0].offset, batch[-1].offset
            # offsets aiokafka stepped over before this batch's first record (those left out above were read)
            after = before if start == 0 else fetched[start - 1].offset + 1
            if after is not None:
                _add_hole(self, tp, after, fetched[start].offset)
            elif read is not None:  # no position known before the fetch: from the read offset, as Faust does
                _add_hole(self, tp, read + 1, first)
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            message = self._to_message(tp, batch[-1])
            message.key, message.value = None, batch
            self.__dict__.setdefault("batch_first", {}).setdefault(tp, {})[last] = first
            self._read_offset[tp] = last - 1
            unreturned.pop(tp, None)
            yield tp, message
            if self.app.consumer_generation_id == generation_id and self._read_offset[tp] == last:
                unreturned[tp] = (last + 1, last)  # every record aiokafka returned for tp is delivered
    for tp in list(unreturned):
        _skip_unreadable(self, tp, unreturned)
    to_message = self._to_message
    for tp, record in self.scheduler.iterate(singles):
        if not self.flow_active or self.app.consumer_generation_id != generation_id:
            break
        self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        yield tp, to_message(tp, record)


def _unreturned(self: Consumer, tp, entry: tuple[int, int] | None) -> int | None:
    """Where aiokafka stands for ``tp`` if it has returned no record since ``entry`` was noted: ``entry`` is
    (that position, the read offset then), valid while the read offset is unchanged (a record delivered or a
    seek changes it). Noted where a rebalance's seek put it (the committed offset), after the last record
    delivered, and past what ``_skip_unreadable`` stepped over."""
    if entry is None:
        return None
    position, read = entry
    return position if self._read_offset.get(tp) == read else None


def _skip_unreadable(self: Consumer, tp, unreturned: dict) -> None:
    """Registers as a hole the offsets aiokafka stepped over for ``tp`` since it last returned a record (or since
    a rebalance sought it), without returning one: transaction markers and, reading ``read_committed``, aborted
    records. Faust's commit rule only steps over offsets between two delivered records, so a partition that
    ends in a marker (every transaction's last records are followed by one) was committed one short of its end
    for good, one that ends in an aborted transaction as many short as it has aborted records, and one whose
    committed offset is a marker (a worker that died before stepping over it) never moved: a restarted worker
    read them again and an operator saw a lag that never drained. The read offset moves past them (the consumer
    lag, the next batch's hole check)."""
    start = _unreturned(self, tp, unreturned[tp])
    if start is None:
        del unreturned[tp]
        return
    position = _fetch_position(self, tp)
    if position is None or position <= start:
        return
    _add_hole(self, tp, start, position)
    self._read_offset[tp] = position - 1
    unreturned[tp] = (position, position - 1)


def _add_hole(self: Consumer, tp, start: int, end: int) -> None:
    """Offsets ``start`` … ``end - 1`` of ``tp`` hold no record to process: a gap for the commit rule, from the
    committed offset on. Faust's ``_add_gap`` starts at committed + 1, which leaves a marker at the committed
    offset itself (a worker that committed up to a transaction's marker, then restarted) in the way for good."""
    committed = self._committed_offset.get(tp)
    if committed is not None:
        start = max(start, committed)
    if start < end:
        self._gap[tp].addi(start, end)
        self._acked[tp]  # noqa: B018 — Faust commits only the partitions in ``_acked`` (one never acknowledged too)


def _fetch_position(self: Consumer, tp) -> int | None:
    """aiokafka's position for ``tp``: the offset after the last record it returned and any control or aborted
    records it stepped over after it (``consumed_to`` in its fetcher), read synchronously (``position()`` is a
    coroutine of the consumer's own thread; the attribute is one int)."""
    try:
        state = self._thread._ensure_consumer()._subscription.subscription.assignment.state_value(tp)
    except Exception:  # not assigned any more, no subscription (stopping)
        return None
    return None if state is None or not state.has_valid_position else state.position


async def _add_gap_only_for_transactions(self: Consumer, tp, offset_from: int, offset_to: int) -> None:
    """Faust's ``_add_gap``, called by its fetch loop where offsets lie between the read offset and a delivered
    message's, only where such offsets can be a transaction's markers: the internal topics under
    ``exactly_once``. An input topic's holes (an upstream publisher's transactions) are registered by
    ``_getmany_in_batches`` itself, from a batch's first offset; in ``at_least_once`` every offset of an
    internal topic is a record, so a hole there is a record still to come.

    What the loop registered otherwise was a race: every 100 messages it awaits ``sleep(0)`` between taking a
    message and reading the read offset, and a rebalance's seek in that pause sets the read offset back to the
    committed one. The loop then counted everything from there to the message (a whole batch and more) as a hole —
    offsets not processed in the new generation counted as processed; the stale message itself is then skipped
    as one of the old generation. Seen in the join-and-leave drill (a 146-offset gap at ``registrations[1]``,
    2026-11-27): read again soon after, those offsets were acknowledged twice and the commit crawled; a crash in
    between could have committed past records never processed. Ignoring a gap can only hold a commit back. Not
    reported upstream."""
    if tp.topic in getattr(self.app, "batched_topics", ()) or \
            self.app.conf.processing_guarantee is not ProcessingGuarantee.EXACTLY_ONCE:
        return
    await _add_gap(self, tp, offset_from, offset_to)


async def _on_recovery_completed_without_dropping(self: Recovery, generation_id: int = 0) -> None:
    """Faust's ``on_recovery_completed`` (and ``_resume_streams``, below) with the consumer's flow stopped until
    it resumes it at the end. Faust resumes the stream partitions, awaits the seek to the committed offsets, then
    resumes ``app.flow_control`` — which clears every stream's queue — and the consumer's flow. But the flow was
    already running (resumed to read the changelogs), so the fetch loop delivered records from the committed
    offsets while the seek's awaits ran, and the clear then dropped them after their offsets were marked read:
    never read again, never acknowledged, the partition's commit held at that offset for good. Seen in the
    join-and-leave drill (registrations[0]: a batch of offsets 272–391 delivered after the seek, never processed,
    committed offset stuck at 272; 2026-11-27). Stopped, the loop delivers nothing until the clear is done, and
    seeks to the committed offsets itself meanwhile. Not reported upstream."""
    self.app.consumer.stop_flow()
    await _on_recovery_completed(self, generation_id)


async def _resume_streams_without_dropping(self: Recovery, generation_id: int = 0) -> None:
    """``_on_recovery_completed_without_dropping`` for a worker without tables (Faust's other path)."""
    self.app.consumer.stop_flow()
    await _resume_streams(self, generation_id)


def _acknowledge_once(acked: list, index: set, offsets) -> None:
    """``offsets`` into Faust's acknowledged offsets of a partition, as its ``Consumer.ack`` does: into the list
    and its index, each offset at most once (a repeated offset ends the run a commit takes, see below)."""
    new = [o for o in offsets if o not in index]
    acked.extend(new)
    index.update(new)


def _expand_batches(self: Consumer, tp, acked: list) -> None:
    """A batch's message acknowledged (its last offset in ``acked``) acknowledges every offset of the batch, once:
    each goes in Faust's index too. Without that, a batch read again after a seek (around a rebalance, both reads
    acknowledged before the commit passed them) put its offsets in ``acked`` twice, and a commit then took only
    the run up to the first repeated offset: two offsets per commit, the join-and-leave drill timed out with a
    partition read to its end but committed ~1,500 records behind (2026-11-27)."""
    firsts = getattr(self, "batch_first", {}).get(tp)
    if not firsts:
        return
    index = self._acked_index[tp]
    for last in [last for last in firsts if last in index]:
        _acknowledge_once(acked, index, range(firsts.pop(last), last))
    committed = self._committed_offset.get(tp)
    if committed is not None and len(firsts) > 64:  # batches never acknowledged (revoked, re-read): forget them
        for last in [last for last in firsts if last < committed]:
            del firsts[last]


def _init_with_shielded_delivery(self: Consumer, *args, **kwargs) -> None:
    """The root of it: the delivery of a record that loses the race with ``suspend_flow`` is cancelled while
    the record is marked read. Shielded, it completes (in order: queue putters are served first come, first
    served) and nothing is dropped; a record delivered around a rebalance is at worst read twice."""
    _init(self, *args, **kwargs)
    deliver = self.callback

    async def shielded(message):
        await asyncio.shield(deliver(message))
    self.callback = shielded


async def _send_pending_counted(self: ProducerBuffer, fut) -> None:
    """Faust's buffer drainer, counting the message it is handing to the producer (out of the queue, not yet in
    aiokafka's accumulator): ``flush`` must wait for it too."""
    self.in_flight = getattr(self, "in_flight", 0) + 1
    try:
        await _send_pending(self, fut)
    finally:
        self.in_flight -= 1


async def _flush_until_handed_over(self: ProducerBuffer) -> None:
    """Every message put in the buffer (table changelog writes: ``Table.__setitem__`` is synchronous, so Faust
    queues them) is handed to the producer before this returns. Faust's own ``flush`` returns as soon as one
    message takes longer than 0.1 s to go out, and does not count the message being handed over: under load the
    consumer then flushed aiokafka and committed the input offsets while state writes were still in this buffer —
    a crash right after lost state whose input would not be read again. Upstream: faust-streaming #112 (flush made
    to wait for the buffer, with the timeout kept) and #273 (flush before commit); the timeout hole is not
    reported. Raises like Faust's when the producer stopped with messages left."""
    while self.size or getattr(self, "in_flight", 0):
        if self.state != "running":
            raise RuntimeError("Cannot flush: Producer not Running")
        self.message_sent.clear()
        try:
            await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)
        except asyncio.TimeoutError:
            continue


@contextlib.contextmanager
def routed_by(event):
    """Faust routes a table read/write (changelog and RocksDB partition) by the task's "current event"; in a batch
    that is none or any. Route by ``event`` instead (Faust's context variable: setting the stream's
    ``current_event`` would also change what ``take_events`` buffers next)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


#: a batched changelog write's produce request at most: under aiokafka's and the broker's 1 MiB limits
CHANGELOG_BATCH_BYTES = 512 << 10


async def set_durably(table, writes: list[tuple[dict, object]]) -> None:
    """Set each ``(items, event)`` of ``writes`` in ``table`` and write the items to its changelog, returning once
    the broker has acknowledged every record. The store is updated and the changelog partition chosen as
    ``Table.__setitem__`` does (by ``event``'s partition) and the records are the bytes Faust would write (the
    changelog topic's own key and value serializers: a restore reads them back unchanged; a value given as bytes,
    ``bytes_values``, is the record's value as it is), but they go out as one
    produce request per ``CHANGELOG_BATCH_BYTES`` instead of one send per key through Faust's producer buffer — a
    Faust table set cost ~120 µs a key on this machine kind (../shared/PERF.md), more than decoding, validating and
    folding the event. Every partition's batches are sent before any acknowledgement is awaited (one round trip
    for the lot, not one per partition in turn). Acknowledged before this returns: the caller's input offset is
    committed only after it (the write order of docs/reliability.md), without depending on the producer flush
    before the commit. RocksDB: the persisted offset is advanced as Faust's ``_on_changelog_sent`` does. In
    ``exactly_once`` mode Faust's own path is kept (its transaction must carry the records)."""
    writes = [(items, event) for items, event in writes if items]
    if not writes:
        return
    app = table.app
    if app.in_transaction:
        for items, event in writes:
            with routed_by(event):
                for key, value in items.items():
                    table[key] = orjson.loads(value) if type(value) is bytes else value
        return
    topic = table.changelog_topic
    name = topic.get_topic_name()
    encode_key, encode_value = _changelog_encoders(table)
    producer = app.producer._ensure_producer()
    new_batch = lambda: BatchBuilder(CHANGELOG_BATCH_BYTES, producer._message_accumulator._compression_type)
    sent = []
    for items, event in writes:
        partition, batch = event.message.partition, new_batch()
        with routed_by(event):  # the store's partition (RocksDB): a task-local context, kept across the sends
            for key, value in items.items():
                table.data[key] = value  # the store only: Table.__setitem__ would also send a changelog record
                k, v = encode_key(key), encode_value(value)
                if batch.append(timestamp=None, key=k, value=v) is None:  # full: send it, start the next
                    sent.append((await producer.send_batch(batch, name, partition=partition),
                                 batch.record_count()))
                    batch = new_batch()
                    batch.append(timestamp=None, key=k, value=v)  # the first record of a batch always fits
        sent.append((await producer.send_batch(batch, name, partition=partition), batch.record_count()))
    for delivery, count in sent:
        metadata = await delivery
        table.data.set_persisted_offset(metadata.topic_partition, metadata.offset + count - 1)


def store_get(table):
    """``table.get`` without the Table layer: the store's own lookup, what ``set_durably`` writes to. A Faust
    table's ``get`` goes through ``Mapping.get``, the table's ``__getitem__`` (its sensors' ``on_table_get``, its
    ``__missing__`` check) and a KeyError for each key not there: ~4 % of the worker's samples in a 1M backlog
    for the participant stage's reads (2026-11-28). The memory store's is the dictionary's ``get``. Called per
    batch (a store is made once per table, but nothing here relies on it)."""
    store = table.data
    return store.data.get if isinstance(store, MemoryStore) else store.get


def _changelog_encoders(table) -> tuple:
    """A table's changelog key and value encoders: the bytes Faust writes (``Topic.prepare_key`` /
    ``prepare_value`` with the table's serializers). For ``CHECKED_JSON`` tables (ours) a string key and a dict
    value take a fast path: the call Faust's JSON codec ends in (orjson, Faust's ``on_default`` and options),
    without the registry and schema layers around it (~3 µs of ~8 µs a participant state)."""
    topic = table.changelog_topic

    def slow_key(key):
        return topic.prepare_key(key, table.key_serializer)[0]

    def slow_value(value):
        return topic.prepare_value(value, table.value_serializer)[0]
    if not (table.key_serializer == table.value_serializer == CHECKED_JSON and topic.schema.key_type is str
            and topic.schema.value_type is None):
        return slow_key, slow_value
    return (lambda key: _faust_json_dumps(key) if type(key) is str else slow_key(key),
            lambda value: value if type(value) is bytes else  # a JSON object encoded already (bytes_values)
            _faust_json_dumps(value) if type(value) is dict else slow_value(value))


#: the key and value serializer of every table of ours: Faust's JSON, whose decoding never raises (below)
CHECKED_JSON = "json-checked"


@dataclasses.dataclass(frozen=True)
class Undecodable:
    """What a changelog record's key or value that is not JSON decodes to (``CHECKED_JSON``), instead of an error."""

    error: str


class _CheckedJson(codecs.json):
    """Faust's JSON codec (the same bytes written), whose decoding returns ``Undecodable`` instead of raising. A
    changelog record that fails to decode is otherwise dropped by Faust's conductor before the recovery loop sees
    it: its offset is never reached and the worker waits for the end of the changelog for ever (seen with a record
    written by hand). Tables set aside the records that decode to it (``dead_letter_undecodable``)."""

    def _loads(self, s: bytes):
        try:
            return super()._loads(s)
        except Exception as exc:
            return Undecodable(f"{type(exc).__name__}: not JSON")


def dead_letter_undecodable(table, handler) -> None:
    """Changelog records of ``table`` restored (in bulk or by Faust's loop) whose key is not a JSON string or whose
    value is neither a JSON object nor a tombstone are not applied: ``handler(message, reason)`` is called with
    each instead (the raw record: ``topic``, ``partition``, ``offset``, ``key``, ``value``). The key keeps the
    state of its earlier records. Its keys and values become ``CHECKED_JSON``, the table's and its changelog
    topic's: Faust derives a table's serializers from its types ("json" here) with no setting, and makes the
    topic, taking them, when the table is registered; the channels that read it for a restore are copies of the
    topic made when the worker starts."""
    topic = table.changelog_topic
    assert table.key_serializer == table.value_serializer == topic.key_serializer == topic.value_serializer == "json"
    table.key_serializer = table.value_serializer = CHECKED_JSON
    topic.key_serializer = topic.value_serializer = CHECKED_JSON
    topic.schema.key_serializer = topic.schema.value_serializer = CHECKED_JSON
    table.undecodable_handler = handler


def _undecodable(event) -> str | None:
    """Why a restored changelog record cannot be applied to a table of ours (None: it can)."""
    try:
        key, value = event.key, event.value
    except Exception as exc:  # a codec other than CHECKED_JSON raises
        return f"{type(exc).__name__}: not decodable"
    if isinstance(key, Undecodable):
        return f"key {key.error}"
    if not isinstance(key, str):
        return f"key is a JSON {type(key).__name__}, not a string"
    if event.message.value is not None and not isinstance(value, dict):
        return f"value {value.error}" if isinstance(value, Undecodable) else \
            f"value is a JSON {type(value).__name__}, not an object"
    return None


def _apply_changelog_batch_setting_aside_undecodable(self: Table, batch) -> None:
    """Faust's ``apply_changelog_batch`` (both restore paths call it) for the records that decode; the others go to
    the table's ``undecodable_handler``. Without it the memory store raised on such a record (the bulk read handed
    over to Faust's loop, which never completed) and RocksDB stored it, to fail the stage reading the key."""
    handler = getattr(self, "undecodable_handler", None)
    if handler is not None:
        kept = []
        for event in batch:
            reason = _undecodable(event)
            if reason is None:
                kept.append(event)
            else:
                handler(event.message, reason)
        batch = kept
    _apply_changelog_batch(self, batch)


def fetch_max_wait(app, ms: int) -> None:
    """How long the broker may hold a fetch request of ``app``'s worker consumer that has no data yet (see below)."""
    app.fetch_max_wait_ms = ms


def _create_worker_consumer_with_fetch_wait(self: AIOKafkaConsumerThread, transport):
    """Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` written into the call (no setting). aiokafka
    keeps one fetch request in flight per broker, for the partitions whose fetched records are used up: on a
    pipeline whose later stages read topics the worker itself writes, that request is often parked on caught-up
    internal partitions while the input partitions behind it have data — the worker idled up to 1.5 s at a time
    (about 45 % of a backlog run: worker CPU 51–57 %). With ``fetch_max_wait`` (streams/config.py
    ``consumer_fetch_wait_ms``) instead: 40k-event A/B in one run, 1,805/2,055 → 2,400 (100 ms) events/s, worker CPU
    68 %. Not reported upstream.

    Also reads ``read_committed``: Faust reads uncommitted records unless the app itself is ``exactly_once``, so
    the records of an upstream publisher's aborted transactions were counted in the live tables (and records of
    a transaction still open were counted before it was decided)."""
    consumer = _create_worker_consumer(self, transport)
    wait = getattr(self.app, "fetch_max_wait_ms", None)
    if wait is not None:
        consumer._fetch_max_wait_ms = wait  # read when the consumer starts its fetcher
    consumer._isolation_level = "read_committed"  # read when it starts its fetcher (see _skip_unreadable)
    return consumer


class _ChangelogMessage:
    """The part of a Faust ``Message`` a store's ``apply_changelog_batch`` reads."""

    __slots__ = ("topic", "partition", "offset", "key", "value", "tp")

    def __init__(self, tp: TP, offset: int, key: bytes | None, value: bytes | None):
        self.topic, self.partition, self.offset, self.key, self.value, self.tp = \
            tp.topic, tp.partition, offset, key, value, tp


class _ChangelogEvent:
    """The part of a Faust ``Event`` a store's ``apply_changelog_batch`` reads: the raw message, and (the memory
    store) its key and value decoded as Faust's changelog channel decodes them, on first use, once (RocksDB
    stores the raw bytes; the check for undecodable records reads them)."""

    __slots__ = ("message", "_decode", "_key", "_value")

    def __init__(self, message: _ChangelogMessage, decode):
        self.message, self._decode, self._key, self._value = message, decode, _UNREAD, _UNREAD

    @property
    def key(self):
        if self._key is _UNREAD:
            self._key = self._decode[0](self.message.key)
        return self._key

    @property
    def value(self):
        if self._value is _UNREAD:
            self._value = self._decode[1](self.message.value)
        return self._value


_UNREAD = object()


def _changelog_decoders(app, schema) -> tuple:
    """A changelog's key and value decoders, as Faust's changelog channel decodes. For ``CHECKED_JSON`` tables
    (ours) with a fast path that gives the same result: ``orjson`` on the bytes, taken when the key is a JSON
    string and the value a JSON object with no Faust model marker; anything else goes Faust's way. Faust's own
    path reconstructs models through the whole decoded value (``_maybe_reconstruct``, for ``value_type=None``):
    ~22 µs a participant state against ~3.5 µs, most of a 1M-key restore (RocksDB: 26 s, decoded once for the
    undecodable check)."""
    loads_key = partial(app.serializers.loads_key, schema.key_type, serializer=schema.key_serializer)
    loads_value = partial(app.serializers.loads_value, schema.value_type, serializer=schema.value_serializer)
    if not (schema.key_serializer == schema.value_serializer == CHECKED_JSON and schema.key_type is str
            and schema.value_type is None):
        return loads_key, loads_value

    def key(raw):
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return loads_key(raw)
        return decoded if isinstance(decoded, str) else loads_key(raw)
    return key, partial(_fast_json_loads, slow=loads_value)


def _fast_json_loads(raw: bytes | None, slow):
    """A ``CHECKED_JSON`` value as Faust decodes it (``slow``), by orjson alone when that gives the same: a JSON
    object without a model marker. Anything else goes ``slow``'s way."""
    if raw is None or b"__faust" in raw or b"\\u" in raw:  # a model marker, perhaps escaped: Faust's way
        return slow(raw)
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return slow(raw)
    return decoded if isinstance(decoded, dict) else slow(raw)


#: the call Faust's JSON codec ends in when encoding (faust.utils.json.dumps with orjson)
_faust_json_dumps = partial(orjson.dumps, default=faust_json.on_default,
                            option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)


def _ours(store) -> bool:
    """A store of one of our tables: JSON keys and values without a model type (``CHECKED_JSON``)."""
    return store.value_serializer == store.key_serializer == CHECKED_JSON and store.value_type is None


def bytes_values(table) -> None:
    """``table`` (one of ours) is written with values that are their JSON object's bytes already (the
    participant states, ``state.encoded``), and read back as such from RocksDB (undecoded: the stage decodes them
    straight into its type). The memory store holds what it is given: those bytes, or after a restore the
    decoded dicts. Faust's own table set (``exactly_once``) still gets dicts (``set_durably``)."""
    table.__dict__["bytes_values"] = True


def _store_decode_value(self: SerializedStore, value):
    """``SerializedStore._decode_value`` (every RocksDB table read): our tables' states by orjson where that gives
    Faust's result (``_fast_json_loads``), a ``bytes_values`` table's as the bytes stored. Faust's way walks the
    whole decoded state for model markers: ~22 µs a participant state against ~3.5 µs, on every read of the
    participant stage."""
    if _ours(self):
        if self.table.__dict__.get("bytes_values") and value is not None:
            return value
        return _fast_json_loads(value, partial(_decode_value, self))
    return _decode_value(self, value)


def _store_encode_value(self: SerializedStore, value):
    """``SerializedStore._encode_value`` (every RocksDB table write): a dict of our tables by the call Faust's
    JSON codec ends in, without the registry layers (the same bytes); bytes (``bytes_values``) as they are."""
    if _ours(self):
        if type(value) is bytes:
            return value
        if type(value) is dict:
            return _faust_json_dumps(value)
    return _encode_value(self, value)


def _store_encode_key(self: SerializedStore, key):
    """``SerializedStore._encode_key`` (every RocksDB table read and write): a string key of our tables, as
    ``_store_encode_value``."""
    if type(key) is str and _ours(self):
        return _faust_json_dumps(key)
    return _encode_key(self, key)


#: a bulk restore hands what is left to Faust's own loop when nothing more arrived for this long (an open
#: transaction past the last stable offset, a broker that stopped answering): slower, never wrong
BULK_RESTORE_IDLE_SECONDS = 5.0
#: records fetched and applied at once (~0.25 s of the event loop for participant states in the memory store)
BULK_RESTORE_RECORDS = 10_000
#: tests only: read at most this many records in bulk, then hand over to Faust's loop (the hand-over, exercised)
BULK_RESTORE_HANDOVER_AFTER: int | None = None


async def _build_offsets_then_restore_in_bulk(self: Recovery, consumer, tps, destination, title: str) -> None:
    await _build_offsets(self, consumer, tps, destination, title)
    if title == "active":
        await restore_in_bulk(self, destination)


async def restore_in_bulk(recovery: Recovery, offsets) -> None:
    """Read the active changelog partitions from ``offsets`` (the last offset applied, per partition) to their
    highwaters with a consumer of our own, ``getmany`` batches applied with ``Table.apply_changelog_batch`` (the
    store's own batch path, as Faust's loop calls it), advancing ``offsets`` after each batch. Faust then seeks to
    those offsets and has nothing (or only what arrived after the deadline) left to read.

    Why: Faust restores a changelog record by record through its fetch loop, a channel queue and its recovery
    loop (an Event, a queue put and get, two f-strings for debug logs, two sums over every partition's remaining
    count): ~3,400 participant records/s on this machine kind, a 1M-key restore ~5 min. Not reported upstream.

    Exactness: a batch is applied, then its last offset recorded, with no await between: a cancellation (a new
    rebalance; Faust times this step out at ``broker_request_timeout``, so the read stops at half of it) or a
    decode error leaves ``offsets`` at the last batch applied, and Faust's loop applies the rest (a changelog
    re-applied from an earlier offset ends in the same state: later records win). A partition whose read position
    passed its highwater without returning the last records (aborted transactions, compacted or control records)
    is done. Tables with a changelog-event callback are left to Faust."""
    app = recovery.app
    highwaters = recovery.active_highwaters
    todo = {tp: highwaters[tp] for tp in recovery.active_tps
            if highwaters.get(tp) is not None and offsets.get(tp) is not None and highwaters[tp] > offsets[tp]
            and not recovery.tp_to_table[tp]._on_changelog_event}
    if not todo:
        return
    conf = app.conf
    started = monotonic()
    deadline = started + conf.broker_request_timeout / 2
    reader = AIOKafkaConsumer(
        bootstrap_servers=server_list(app.transport.url, app.transport.default_port),
        client_id=f"{conf.broker_client_id}-restore", group_id=None, enable_auto_commit=False,
        request_timeout_ms=int(conf.broker_request_timeout * 1000), fetch_max_wait_ms=100,
        max_partition_fetch_bytes=4 << 20, fetch_max_bytes=16 << 20, check_crcs=conf.broker_check_crcs,
        isolation_level="read_committed" if app.in_transaction else "read_uncommitted",
        **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))
    schemas = {tp: recovery.tp_to_table[tp].changelog_topic.schema for tp in todo}
    decoders = {tp: _changelog_decoders(app, s) for tp, s in schemas.items()}
    read, last_progress = 0, monotonic()
    collecting = gc.isenabled()
    gc.disable()  # every record adds containers to the heap: the cyclic collector's passes cost more than decoding
    try:
        await reader.start()
        reader.assign([KafkaTopicPartition(tp.topic, tp.partition) for tp in todo])
        for tp in todo:
            reader.seek(KafkaTopicPartition(tp.topic, tp.partition), offsets[tp] + 1)
        while todo and monotonic() < deadline and not recovery.signal_recovery_start.is_set():
            # at most BULK_RESTORE_RECORDS at once: applying them holds the event loop (heartbeats, the web views)
            fetched = await reader.getmany(timeout_ms=200, max_records=BULK_RESTORE_RECORDS)
            for ktp, records in fetched.items():
                tp = TP(ktp.topic, ktp.partition)
                end = todo.get(tp)
                if end is None:
                    continue
                batch = [_ChangelogEvent(_ChangelogMessage(tp, r.offset, r.key, r.value), decoders[tp])
                         for r in records if r.offset <= end]
                if BULK_RESTORE_HANDOVER_AFTER is not None:
                    batch = batch[:max(BULK_RESTORE_HANDOVER_AFTER - read, 0)]
                if batch:
                    recovery.tp_to_table[tp].apply_changelog_batch(batch)
                    offsets[tp] = batch[-1].message.offset  # no await since the batch was applied
                    read += len(batch)
                    last_progress = monotonic()
            if BULK_RESTORE_HANDOVER_AFTER is not None and read >= BULK_RESTORE_HANDOVER_AFTER:
                break  # (before the position check: what the reader returned was not all applied)
            for tp, end in list(todo.items()):
                ktp = KafkaTopicPartition(tp.topic, tp.partition)
                if offsets[tp] >= end or await reader.position(ktp) > end:
                    offsets[tp] = end
                    del todo[tp]
                    reader.pause(ktp)
            if monotonic() - last_progress > BULK_RESTORE_IDLE_SECONDS:
                break
    except Exception as exc:  # Faust's own loop reads what is left, from the last batch applied
        log.warning("bulk changelog restore stopped (%r); Faust's recovery reads the rest", exc)
    finally:
        if collecting:
            gc.enable()
        await reader.stop()
        seconds = monotonic() - started
        log.info("Restored %d changelog records in bulk in %.2f s (%d/s)%s", read, seconds, read / max(seconds, 1e-6),
                 f"; Faust reads the rest of {len(todo)} partitions" if todo else "")


class InOrder:
    """Hands a stage each partition's records strictly in offset order, from the committed offset on.

    The position-based replay rule of the region stage (streams/regions.py) holds only if every source partition
    is processed in offset order. Right after a restart Faust sometimes hands over offset N+1 before N (N was
    dropped on its first delivery around recovery and is read again later, see the commit rule above): the
    targeted crash drill lost 4 contributions and a claim that way. ``admit`` says whether to process a record:
    the expected offset is processed; an older one was processed by this process already (a re-delivery after a
    seek); a newer one is a hole — not processed, its acknowledgement withheld from the commit, and the partition
    sought back to the hole so Faust delivers it again. Expectations start over at each new consumer generation
    (partitions may have moved; Faust seeks to the committed offsets then)."""

    def __init__(self, app, topic: str):
        self.app, self.topic = app, topic
        self.expected: dict = {}
        self.sought: dict = {}
        self.generation = None

    async def admit(self, event) -> bool:
        message, consumer = event.message, self.app.consumer
        every = consumer.__dict__.setdefault("withheld", {})
        if self.app.consumer_generation_id != self.generation:
            self.generation, self.expected, self.sought = self.app.consumer_generation_id, {}, {}
            for tp in [tp for tp in every if tp.topic == self.topic]:
                del every[tp]
        tp, offset = message.tp, message.offset
        expected = self.expected.get(tp, consumer._committed_offset.get(tp))
        withheld = every.setdefault(tp, set())
        if expected is None or offset == expected:
            self.expected[tp] = offset + 1
            withheld.discard(offset)
            return True
        if offset < expected:
            return False
        withheld.add(offset)
        if self.sought.get(tp) != expected:
            self.sought[tp] = expected
            log.warning("%s[%d] offset %d handed over before %d: reading from %d again", tp.topic, tp.partition,
                        offset, expected, expected)
        # sought back at every withheld record, not once: records of the batch Faust is draining still come after
        # a seek, and each moves its read offset past ``expected`` again, so a single early seek left the
        # re-fetched record below the read offset, dropped for good — the partition stalled (the join-and-leave
        # drill under load, 2026-11-26). The last seek comes after the batch's last record.
        await _after_read_offset_passes(consumer, tp, offset)
        await consumer.seek(tp, expected)
        return False


async def _after_read_offset_passes(consumer, tp, offset: int, *, limit: float = 1.0) -> None:
    """Returns once Faust's fetch loop has recorded ``offset`` as read. It records a record as read only after
    delivering it (``_drain_messages``: deliver, then set the read offset), and the agent can take the record
    from its queue and seek before the fetch loop gets there: the fetch loop then moved the read offset past the
    seek's again, every re-fetched record below it was dropped, and the last one handed over again came before
    the hole again — the partition stalled for good, every time (tests/test_faust_fixes.py reproduces it on the
    broker; the crash drill under load stalled that way, 2026-11-26). Bounded: a fetch loop that stopped (a
    rebalance) seeks again after it anyway."""
    loop = asyncio.get_running_loop()
    deadline, turns = loop.time() + limit, 0
    while loop.time() < deadline:
        read = consumer._read_offset.get(tp)
        if read is not None and read >= offset:
            return
        turns += 1
        await asyncio.sleep(0 if turns < 50 else 0.001)  # a few loop turns are usually enough


async def _stage_failed_exits(self: App, agent, exc: BaseException) -> None:
    """Faust's handler of an agent's exception commits the consumer's offsets (``Consumer.on_task_error``), and
    the agent's supervisor then restarts it in the same process, after the record it was on: that record is
    never applied (upstream: faust-streaming #315 and robinhood/faust #604, both open: the failing record's offset
    is skipped after the agent restarts). Here the process exits without committing instead
    (streams/faults.py ``stage_failed``)."""
    await stage_failed(agent, exc)


#: how long a stopping worker waits for its producer's buffer before dropping what is left (no broker)
STOP_FLUSH_SECONDS = 15.0


async def _flush_bounded_on_stop(self: App, logger) -> None:
    """Faust's ``_producer_flush``; when the app is stopping, for at most ``STOP_FLUSH_SECONDS``. aiokafka's flush
    waits for every buffered batch, and a batch for a broker that refuses connections never fails (aio-libs/aiokafka
    #1101, open): a worker told to stop while its broker was gone waited for ever, logging connection errors (a
    pytest run stopped with SIGTERM left one running an hour after its broker had gone, 2026-11-27), and then
    Faust's producer stop waits the same way. Past the bound the batches are failed, which ends both waits.
    Dropping them loses nothing: every commit of ours waits for the producer's records before it (the write order,
    docs/reliability.md), the consumer is stopped before this flush, so no offset behind a dropped record is
    committed, and a restart reads its input again. During a rebalance (not stopping) Faust's wait is kept: a
    commit follows it there. Not reported upstream (the aiokafka issue is)."""
    producer = self._producer
    if not self.should_stop or producer is None:
        return await _producer_flush(self, logger)
    logger.info("Flush producer buffer...")
    try:
        await asyncio.wait_for(asyncio.shield(producer.flush()), STOP_FLUSH_SECONDS)
    except asyncio.TimeoutError:
        accumulator = producer._ensure_producer()._message_accumulator
        batches = [*(b for bs in accumulator._batches.values() for b in bs), *accumulator._pending_batches]
        logger.warning("producer buffer not flushed within %.0f s while stopping (is the broker gone?): %d "
                       "batches dropped; their input offsets are not committed, and are read again on restart",
                       STOP_FLUSH_SECONDS, len(batches))
        accumulator.fail_all(ConnectionError("the worker stopped before the broker acknowledged the batch"))


async def _consumer_stop_through_cancelled_fetch(self: AIOKafkaConsumerThread) -> None:
    """Faust's ``on_thread_stop`` of its consumer thread, which stops the aiokafka consumer. A fetch that failed
    (no broker) waits out its retry backoff in a task that aiokafka's ``Fetcher.close`` cancels and then awaits
    unguarded: the cancellation escaped ``AIOKafkaConsumer.stop`` (aio-libs/aiokafka #647, open), the thread died
    before telling its parent it had shut down, and the worker's stop waited out mode's 60 s shutdown timeout.
    Here that escaped cancellation (not one of this task's own) ends the consumer's stop, and its client is
    closed; the thread then shuts down as usual. Not reported upstream (the aiokafka issue is)."""
    try:
        await _consumer_thread_stop(self)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this task was cancelled: not the escaped one
        log.warning("consumer stop: a pending fetch's cancellation escaped aiokafka's close (no broker?); "
                    "closing its connections")
        with contextlib.suppress(Exception):
            await self._consumer._client.close()


class BoundedStopWorker(faust.Worker):
    """Faust's worker, whose stop (SIGTERM, SIGINT, the end of a run) ends the process after ``stop_seconds``
    if it has not finished by then. Without a broker, Faust's stop waits for ever: on the producer's buffer (bounded
    above) and on an offset commit in flight, which aiokafka retries until a group coordinator answers; a worker
    stopped that way kept running for an hour. An exit mid-stop is a crash like any other: the write order keeps
    the tables exact (docs/reliability.md; the kill -9 drills)."""

    def __init__(self, *args, stop_seconds: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop_seconds = stop_seconds
        self._watchdog: threading.Timer | None = None

    async def stop(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.stop_seconds, self._stop_overdue)
            self._watchdog.daemon = True
            self._watchdog.start()
        await super().stop()

    def _stop_overdue(self) -> None:
        log.error("the worker did not stop within %.0f s (is the broker gone?): exiting without finishing the stop; "
                  "uncommitted input is read again on restart", self.stop_seconds)
        logging.shutdown()
        os._exit(STOP_OVERDUE_EXIT)


#: the exit status of a worker whose stop did not finish in time (BoundedStopWorker)
STOP_OVERDUE_EXIT = 75


class QuietMonitor(Monitor):
    """Faust's built-in sensor (``Monitor`` setting) without its per-record bookkeeping: counters, time stamps
    and per-stream dictionaries updated for every record read, event, table access and send — state only
    Faust's own /stats pages read. Ours are Prometheus metrics counted per batch (streams/metrics.py). Rebalance,
    commit and assignment hooks are kept. Measured on a no-op agent on this machine kind: ~+17 % (issue 17)."""

    def on_message_in(self, tp, offset, message) -> None:
        pass

    def on_stream_event_in(self, tp, offset, stream, event) -> None:
        # kept: Faust's consumer reads it to warn of a partition whose stream stopped processing ("Stream has not
        # started processing TP…"); without it that warning fired for every partition, stalled or not
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
        pass

    def on_message_out(self, tp, offset, message) -> None:
        pass

    def on_table_get(self, table, key) -> None:
        pass

    def on_table_set(self, table, key, value) -> None:
        pass

    def on_send_initiated(self, producer, topic, message, keysize, valsize) -> None:
        return None

    def on_send_completed(self, producer, state, metadata) -> None:
        pass


def read_positions(app) -> dict:
    """The next offset this worker will read per assigned partition (None before the first read), from Faust's
    consumer (its read offset is not public)."""
    consumer = app.consumer
    return {tp: (None if consumer._read_offset[tp] is None else consumer._read_offset[tp] + 1)
            for tp in consumer.assignment()}


def assigned_partitions(app, topic: str) -> list[int]:
    """The partitions of ``topic`` this worker's consumer holds now (none before its first assignment)."""
    return sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == topic)


def worker_state(app) -> dict[str, bool]:
    """Readiness inputs Faust knows: a member of its group (not rebalancing, partitions assigned) and the tables
    recovered from their changelogs."""
    return {"assigned": not app.rebalancing and bool(app.consumer.assignment()),
            "recovered": app.tables.recovery.completed.is_set()}


def fetch_report(app) -> str:
    """Where this worker's fetching stands, for ``kill -USR1`` (streams/stacks.py): the consumer thread's own
    asyncio tasks (aiokafka's fetch and coordination run there, not on the worker's loop), then Faust's flow and
    paused partitions and, per assigned partition, aiokafka's position, pause and reset state, what its fetcher
    holds for it and Faust's read and committed offsets — last, so that the tail of a log shows them. Read
    without locks from another thread: a diagnostic, not state."""
    consumer = app.consumer
    lines = []
    try:
        lines.append(stacks.format_tasks(consumer._thread.thread_loop))
        lines.append(f"--- fetch state: flow_active={consumer.flow_active} "
                     f"paused={sorted(map(tuple, consumer._paused_partitions))} "
                     f"buffered={sorted(map(tuple, consumer._buffered_partitions))} "
                     f"generation={app.consumer_generation_id} rebalancing={app.rebalancing} ---")
        kafka = consumer._thread._ensure_consumer()
        assignment = kafka._subscription.subscription.assignment
        fetcher = kafka._fetcher
        lines.append(f"fetcher: task_done={fetcher._fetch_task.done()} in_flight={sorted(fetcher._in_flight)} "
                     f"pending_tasks={len(fetcher._pending_tasks)} assignment_active={assignment.active} "
                     f"coordinator={getattr(kafka._coordinator, 'coordinator_id', None)}")
        for tp in sorted(assignment.tps):
            state = assignment.state_value(tp)
            held = fetcher._records.get(tp)
            lines.append(f"{tp.topic}[{tp.partition}] position={state._position} paused={state.paused} "
                         f"reset={state._reset_strategy} highwater={state.highwater} lso={state.lso} "
                         f"held={type(held).__name__ if held is not None else None} "
                         f"read={consumer._read_offset.get(tp)} committed={consumer._committed_offset.get(tp)} "
                         f"unreturned={consumer.__dict__.get('unreturned', {}).get(tp)}")
    except Exception as exc:  # stopping, no assignment: report what failed instead
        lines.append(f"(fetch state unavailable: {exc!r})")
    return "\n".join(lines) + "\n"


def installed_versions() -> dict[str, str]:
    return {name: version(name) for name in VERSIONS}


def install(bulk_restore: bool = True) -> None:
    """Idempotent: patch Faust's consumer and producer buffer once per process, on the versions checked.
    ``bulk_restore=False``: Faust restores changelogs its own way (the benchmark's baseline)."""
    if installed_versions() != VERSIONS:
        raise RuntimeError(f"streams/faust_fixes.py was checked on {VERSIONS}, installed: {installed_versions()}; "
                           "re-check every patch against its upstream issue before changing VERSIONS")
    if Consumer.perform_seek is not _perform_seek_from_earliest_when_uncommitted:
        ProducerBuffer._send_pending = _send_pending_counted
        ProducerBuffer.flush = _flush_until_handed_over
        Consumer.perform_seek = _perform_seek_from_earliest_when_uncommitted
        Consumer.__init__ = _init_with_shielded_delivery
        Consumer._new_offset = _new_offset_without_passing_a_hole
        Consumer.getmany = _getmany_in_batches
        Consumer._add_gap = _add_gap_only_for_transactions
        App._on_agent_error = _stage_failed_exits
        App._producer_flush = _flush_bounded_on_stop
        AIOKafkaConsumerThread.on_thread_stop = _consumer_stop_through_cancelled_fetch
        Table.apply_changelog_batch = _apply_changelog_batch_setting_aside_undecodable
        codecs.register(CHECKED_JSON, _CheckedJson())
        SerializedStore._decode_value = _store_decode_value
        SerializedStore._encode_value = _store_encode_value
        SerializedStore._encode_key = _store_encode_key
        AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer_with_fetch_wait
        Recovery.on_recovery_completed = _on_recovery_completed_without_dropping
        Recovery._resume_streams = _resume_streams_without_dropping
    Recovery._build_offsets = _build_offsets_then_restore_in_bulk if bulk_restore else _build_offsets
