"""The commit-offset rule of streams/faust_fixes.py on Faust's own bookkeeping structures (the kill -9 drills in
tests/test_reliability.py exercise it on the real broker): a commit never passes a record that was not processed;
the producer buffer's flush waits for every queued state write; the patched Faust code is the code the patches
were written for."""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from faust.transport.producer import ProducerBuffer
from faust.types import TP as TopicPartition
from intervaltree import IntervalTree

from streams import faust_fixes
from streams.faust_fixes import _new_offset_without_passing_a_hole as new_offset

TP = ("participant-events", 2)


class Books:
    """The attributes of faust.transport.consumer.Consumer that the rule reads and updates."""

    def __init__(self, committed, acked, gaps=()):
        self._committed_offset = defaultdict(lambda: None, {TP: committed})
        self._acked = defaultdict(list, {TP: list(acked)})
        self._acked_index = defaultdict(set, {TP: set(acked)})
        self._gap = defaultdict(IntervalTree)
        for start, end in gaps:
            self._gap[TP].addi(start, end)

    def ack(self, offset: int) -> None:
        """As Faust's ``Consumer.ack``: an offset already in the index is not added again."""
        if offset not in self._acked_index[TP]:
            self._acked[TP].append(offset)
            self._acked_index[TP].add(offset)


@pytest.mark.parametrize("committed, acked, expected", [
    (None, [], None),
    (5, [5, 6, 7], 8),          # a run from the committed offset
    (1, [2, 3], None),          # offset 1 not processed: Faust's own check (2 - 1 > 1) let this commit 4
    (0, [1, 2], None),          # ... and it never checked at offset 0
    (0, [0, 1, 3], 2),          # up to the first hole
    (5, [3, 4, 5, 6], 7),       # re-acknowledged older offsets do not block
    (None, [4, 5], 6),          # nothing known (Faust seeks uncommitted partitions to their earliest offset)
])
def test_commits_only_a_run_that_starts_at_the_committed_offset(committed, acked, expected):
    books = Books(committed, acked)
    assert new_offset(books, TP) == expected


def test_registered_gaps_count_as_processed_and_the_rest_waits():
    books = Books(10, [10, 13, 14, 16], gaps=[(11, 13)])  # 11-12: transaction markers; 15 not processed yet
    assert new_offset(books, TP) == 15
    assert books._acked[TP] == [16] and books._acked_index[TP] == {16}
    books._committed_offset[TP] = 15  # what Faust records after committing
    assert new_offset(books, TP) is None  # 15 still missing
    books._acked[TP].append(15)
    assert new_offset(books, TP) == 17


def test_offsets_stepped_over_after_the_last_record_let_the_commit_reach_the_end():
    """A partition that ends in a transaction's marker (and aborted records): the offsets aiokafka stepped over
    after the last record delivered are a hole the commit passes, whether or not the record was committed yet."""
    books = Books(10, [10, 11])
    faust_fixes._add_hole(books, TP, 12, 15)  # 12-14: aborted records and the abort marker
    assert new_offset(books, TP) == 15
    books = Books(12, [])  # the last record committed before the hole was registered
    faust_fixes._add_hole(books, TP, 12, 15)
    assert new_offset(books, TP) == 15


def test_a_hole_at_the_committed_offset_counts_from_there():
    """A worker that committed up to a marker and restarted: the marker sits at the committed offset itself.
    Faust's ``_add_gap`` starts a gap at committed + 1, which held the commit there for good."""
    stock = Books(20, [21, 22])
    asyncio.run(faust_fixes._add_gap(stock, TP, 20, 20))
    assert new_offset(stock, TP) is None
    books = Books(20, [21, 22])
    faust_fixes._add_hole(books, TP, 20, 21)
    assert new_offset(books, TP) == 23
    books = Books(20, [21])
    faust_fixes._add_hole(books, TP, 15, 21)  # what lies below the committed offset is no concern of the rule
    assert new_offset(books, TP) == 22 and books._gap[TP] == IntervalTree()


# --- the producer buffer: state writes are handed to the producer before offsets are committed ---------------

class SlowChannel:
    """What the buffer calls for each message: a publish that takes longer than Faust's 0.1 s flush wait, as an
    aiokafka ``send`` does under load or while it fetches metadata."""

    def __init__(self, seconds: float):
        self.seconds, self.published = seconds, []

    async def publish_message(self, fut, wait=False):
        await asyncio.sleep(self.seconds)
        self.published.append(fut)


async def flushed_while_pending(flush, n: int = 3) -> tuple[int, int]:
    """Put ``n`` messages in a running ProducerBuffer with a slow channel, flush with ``flush``, and return
    (published when flush returned, n)."""
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))
    channel = SlowChannel(0.25)
    await buffer.start()
    try:
        for _ in range(n):
            buffer.put(SimpleNamespace(message=SimpleNamespace(channel=channel)))
        await flush(buffer)
        published = len(channel.published)
        while len(channel.published) < n:  # let the drainer finish before stopping (stop flushes)
            await asyncio.sleep(0.05)
        return published, n
    finally:
        await buffer.stop()


def test_an_input_batch_counts_as_processed_only_when_its_event_is_acknowledged_then_all_of_it():
    """faust_fixes.deliver_in_batches: a partition's fetched records are one event, acknowledged with the last
    record's offset; the commit rule counts the batch's other offsets with it, never before it."""
    books = Books(100, [])
    books.batch_first = {TP: {149: 100, 199: 150}}  # two batches delivered: 100-149, 150-199
    books._acked[TP] += [199]  # the second acknowledged first: nothing below 100-149 may be committed
    books._acked_index[TP].add(199)
    assert new_offset(books, TP) is None
    books._acked[TP] += [149]
    books._acked_index[TP].add(149)
    assert new_offset(books, TP) == 200  # both, every offset of them
    assert books.batch_first[TP] == {} and books._acked[TP] == []
    books._committed_offset[TP] = 200
    books.batch_first[TP][260] = 200  # a batch of 200-260 read, not acknowledged: a single record past it waits
    books._acked[TP] += [261]
    books._acked_index[TP].add(261)
    assert new_offset(books, TP) is None


def test_a_batch_read_again_after_a_seek_counts_each_offset_once_and_the_commit_takes_all_of_it():
    """Around a rebalance a partition is read again from its committed offset while batches of the first read are
    still acknowledged: their ranges overlap. Each offset counts once, and one commit takes the whole run (when an
    overlap put offsets in twice, each commit took two of them: a partition read to its end stayed ~1,500 records
    behind in the join-and-leave drill)."""
    books = Books(100, [])
    books.batch_first = {TP: {149: 110, 199: 150}}  # first read: 110-149 and 150-199; 100-109 not acknowledged
    books.ack(149)
    books.ack(199)
    assert new_offset(books, TP) is None  # 100 not processed yet
    books.batch_first[TP][179] = 100  # read again from the committed offset: 100-179, overlapping both
    books.ack(179)
    assert new_offset(books, TP) == 200
    assert books._acked[TP] == [] and books._acked_index[TP] == set()


def test_a_gap_and_a_batch_over_the_same_offsets_count_each_offset_once():
    """A registered gap (offsets without a record for the stream) and an acknowledged batch can cover the same
    offsets, in either order: each counts once, and one commit takes the whole run."""
    books = Books(100, [])
    books._gap[TP].addi(100, 130)  # 100-129 registered as a gap
    books.batch_first = {TP: {139: 120}}  # a batch of 120-139, acknowledged
    books.ack(139)
    assert new_offset(books, TP) == 140
    books._committed_offset[TP] = 140
    books._gap[TP].addi(140, 160)  # the other order: the gap first, then a batch over it
    books.ack(145)
    assert new_offset(books, TP) == 160  # the gap's offsets (145 acknowledged too), up to 159
    books._committed_offset[TP] = 160
    books.batch_first[TP][169] = 150  # a batch read again over offsets already committed
    books.ack(169)
    assert new_offset(books, TP) == 170
    assert books._acked[TP] == [] and books._acked_index[TP] == set()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_the_fetch_loop_registers_a_gap_only_where_a_transaction_can_leave_one(guarantee):
    """The fetch loop's hole (read offset + 1 to the message's offset) is wrong whenever a rebalance's seek moved
    the read offset while it waited. Kept only for internal topics under exactly_once (transaction markers); an
    input batch's holes are registered by the batcher itself."""
    from faust.types.enums import ProcessingGuarantee
    books = Books(100, [])
    books.app = SimpleNamespace(batched_topics={"inputs": 500},
                                conf=SimpleNamespace(processing_guarantee=ProcessingGuarantee(guarantee)))
    batched, internal = TopicPartition("inputs", 1), TopicPartition(*TP)
    books._committed_offset[batched] = books._committed_offset[internal] = 100
    asyncio.run(faust_fixes._add_gap_only_for_transactions(books, batched, 101, 246))
    asyncio.run(faust_fixes._add_gap_only_for_transactions(books, internal, 101, 103))
    assert not books._gap[batched]
    assert sorted((i.begin, i.end) for i in books._gap[internal]) == ([(101, 104)] if guarantee == "exactly_once"
                                                                      else [])


@pytest.mark.parametrize("patched, original", [
    ("_on_recovery_completed_without_dropping", "_on_recovery_completed"),
    ("_resume_streams_without_dropping", "_resume_streams")])
def test_a_recovery_resumes_the_streams_with_the_consumer_s_flow_stopped(monkeypatch, patched, original):
    """Faust resumes the stream partitions, seeks, then clears every stream's queue: records the fetch loop
    delivered meanwhile were dropped after being marked read. Faust's code must run with the flow stopped (it
    resumes the flow itself at the end)."""
    consumer = SimpleNamespace(flow_active=True)
    consumer.stop_flow = lambda: setattr(consumer, "flow_active", False)
    seen = []

    async def faust_s(self, generation_id=0):
        seen.append((consumer.flow_active, generation_id))
    monkeypatch.setattr(faust_fixes, original, faust_s)
    asyncio.run(getattr(faust_fixes, patched)(SimpleNamespace(app=SimpleNamespace(consumer=consumer)), 3))
    assert seen == [(False, 3)]


def test_flush_returns_only_when_every_buffered_state_write_is_handed_to_the_producer():
    faust_fixes.install()
    published, n = asyncio.run(flushed_while_pending(ProducerBuffer.flush))
    assert published == n


def test_fausts_own_flush_returns_with_writes_still_buffered():
    """Why the patch: the drill's loss mechanism, shown on Faust's code (this fails the day upstream fixes it,
    and the patch can go)."""
    published, n = asyncio.run(flushed_while_pending(faust_fixes.ORIGINALS["ProducerBuffer.flush"]))
    assert published < n


# --- the patched code as installed ----------------------------------------------------------------------------

#: sha256 (first 16 hex digits) of the source of every Faust function a patch replaces or relies on
PINNED = {
    "Consumer.perform_seek": "0e8c130ff4b0afd8",
    "Consumer.__init__": "302410d59e6972d1",
    "Consumer._new_offset": "1d2c7ea89a7ad4f1",
    "Consumer._commit_offsets": "1a69799041188441",
    "Consumer._drain_messages": "44a2500309e83c63",
    "Consumer.getmany": "4b168d84882a70d6",
    "Consumer.seek": "b86a9fe05f956b30",
    "Consumer._add_gap": "4df2573ded7c1c2c",
    "ProducerBuffer.flush": "26fbebb124ad9c98",
    "ProducerBuffer._send_pending": "4a9d5f932b56bc68",
    "ProducerBuffer._handle_pending": "78d648030fd21016",
    "App._on_agent_error": "bdd12f286de64429",
    "AIOKafkaConsumerThread._create_worker_consumer": "c2701bfc3e6f6cad",
    "Table.on_key_set": "a370e35ca55c2c7e",
    "Collection.send_changelog": "3dd3884e1b5fc0e1",
    "Collection._on_changelog_sent": "60122c86a120d82c",
    "Topic.prepare_key": "e201b689d5cdc828",
    "Topic.prepare_value": "5daf3918f136205c",
    "Recovery._build_offsets": "27eec86be06cb51f",
    "Recovery.on_recovery_completed": "6ef567acf072e46d",
    "Recovery._resume_streams": "d986a6710c1aca98",
    "Recovery._seek_offsets": "19598ca63d94d250",
    "Recovery.active_remaining": "0dcc38568ad5018b",
    "Table.apply_changelog_batch": "b980a78d3ae9b1e8",
    "codecs.json._loads": "97ef26001fffb042",
    "codecs.json._dumps": "e4d58b9aa8933715",
    "SerializedStore._decode_value": "5fe35164ec2e2032",
    "SerializedStore._encode_value": "2c46367a493aa13c",
    "SerializedStore._encode_key": "70702b179cc35028",
    "Monitor.on_message_in": "b2a9a9045b2f456c",
    "Monitor.on_stream_event_in": "df6d2e5f6397ce44",
    "Monitor.on_stream_event_out": "2d2277a6dbda754c",
    "Monitor.on_message_out": "7c4054247cde96c3",
    "Monitor.on_table_get": "240aac793cfe6002",
    "Monitor.on_table_set": "fe5ba12e91b2f6d4",
    "Monitor.on_send_initiated": "6394b4e330614dbb",
    "Monitor.on_send_completed": "4942b34ea1f35eaf",
    "App._producer_flush": "35c92baa028d57bd",
    "AIOKafkaConsumerThread.on_thread_stop": "8dfc004e258b6c25",
    "PartitionRecords._unpack_records": "b803e6d46480732c",
    "FetchResult.getall": "3e717e30de5068d5",
}


def test_the_patched_faust_code_is_the_code_the_patches_were_written_for():
    sources = {name: hashlib.sha256(inspect.getsource(getattr(f, "fun", f)).encode()).hexdigest()[:16]
               for name, f in faust_fixes.ORIGINALS.items()}
    assert sources == PINNED, "Faust changed under a patch: re-check streams/faust_fixes.py against upstream"
    assert faust_fixes.installed_versions() == faust_fixes.VERSIONS


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_a_restored_batch_sets_undecodable_records_aside_and_applies_the_rest(tmp_path, store):
    """In-process, no broker: a changelog batch as the restore hands it to the table (keys and values decoded on
    first use, as Faust's changelog channel decodes them), with records that do not decode among good ones, for
    each store. The good ones are applied in order; the others go to the handler with a reason, and their keys
    keep their earlier value. Without ``dead_letter_undecodable`` the same batch raises (the check can fail)."""
    import asyncio
    from functools import partial

    import faust
    from faust.types import TP

    app = faust.App(f"undecodable-{store[:3]}", store=store, datadir=str(tmp_path), topic_partitions=1)

    def make(name: str, checked: bool):
        table = app.Table(name, default=None, key_type=str)
        if checked:
            faust_fixes.dead_letter_undecodable(table, lambda message, reason: aside.append((message.offset, reason)))
        schema = table.changelog_topic.schema  # decoded as the restore decodes: with the changelog's serializers
        decode = (partial(app.serializers.loads_key, schema.key_type, serializer=schema.key_serializer),
                  partial(app.serializers.loads_value, schema.value_type, serializer=schema.value_serializer))
        tp = TP(table.changelog_topic.get_topic_name(), 0)
        records = [(b'"a"', b'{"n": 1}'), (b"not json", b'{"n": 2}'), (b'"a"', b'{"n": '), (b'"b"', b"[1]"),
                   (b'"b"', b'{"n": 3}'), (b"7", b'{"n": 4}'), (b'"c"', b'{"n": 5}'), (b'"c"', None)]
        return table, [faust_fixes._ChangelogEvent(faust_fixes._ChangelogMessage(tp, offset, key, value), decode)
                       for offset, (key, value) in enumerate(records)]

    async def restore():
        table, batch = make("checked", True)
        table.apply_changelog_batch(batch)
        got = {key: table.data[key] for key in ("a", "b")} | {"c": "c" in table.data}
        unchecked, raw = make("unchecked", False)
        try:
            unchecked.apply_changelog_batch(raw)
            reads = [unchecked.data[key] for key in ("a", "b")]  # RocksDB stores bytes, fails when read
        except Exception as exc:
            return got, type(exc)
        return got, reads

    aside: list = []
    faust_fixes.install()
    got, unchecked = asyncio.run(restore())
    assert got == {"a": {"n": 1}, "b": {"n": 3}, "c": False}
    assert [offset for offset, _ in aside] == [1, 2, 3, 5]
    assert [reason.split(" ")[0] for _, reason in aside] == ["key", "value", "value", "key"]
    assert isinstance(unchecked, type) and issubclass(unchecked, Exception)


def test_the_restore_s_fast_decoders_give_what_faust_s_give(tmp_path):
    """The bulk restore decodes our tables' changelog records with orjson where that gives Faust's result, and
    Faust's way otherwise: equal for states, tombstones, non-objects, non-JSON, non-string keys, model markers."""
    from functools import partial

    import faust
    import orjson

    app = faust.App("fast-decoders", store="memory://", datadir=str(tmp_path))
    table = app.Table("participants", default=None, key_type=str)
    faust_fixes.dead_letter_undecodable(table, lambda message, reason: None)
    schema = table.changelog_topic.schema
    fast_key, fast_value = faust_fixes._changelog_decoders(app, schema)
    slow_key = partial(app.serializers.loads_key, schema.key_type, serializer=schema.key_serializer)
    slow_value = partial(app.serializers.loads_value, schema.value_type, serializer=schema.value_serializer)
    assert fast_value is not slow_value
    values = [orjson.dumps({"pt": 24312, "seen": ["ab"] * 3, "reg": {"region": "64.08", "demo": ["6408", "F"]}}),
              None, b"[1, 2]", b"7", b"\xff\xfe", b"{not json", orjson.dumps({"name": "Sam\u00e9"}),
              b'{"a": "\\u00e9"}', b'{"__faust": {"ns": "x"}, "a": 1}']

    def outcome(decode, raw):
        try:
            return "value", decode(raw)
        except Exception as exc:  # an unknown model raises in Faust's way: it must in ours too
            return "raises", type(exc)
    for raw in values:
        assert outcome(fast_value, raw) == outcome(slow_value, raw), raw
    for raw in [b'"64.08"', b"5", b"not json", b'["a"]']:
        assert outcome(fast_key, raw) == outcome(slow_key, raw), raw


def test_the_changelog_s_fast_encoders_write_faust_s_bytes(tmp_path):
    """set_durably encodes our tables' changelog records without Faust's registry layers: the same bytes as
    Faust's ``prepare_key``/``prepare_value`` for states (nested lists, non-ASCII, big ints, None), tombstones,
    non-dict values and non-string keys."""
    import datetime

    import faust

    faust_fixes.install()  # registers CHECKED_JSON
    app = faust.App("fast-encoders", store="memory://", datadir=str(tmp_path))
    table = app.Table("participants", default=None, key_type=str)
    faust_fixes.dead_letter_undecodable(table, lambda message, reason: None)
    fast_key, fast_value = faust_fixes._changelog_encoders(table)
    topic = table.changelog_topic
    values = [{"pt": 24312, "seen": [-(2 ** 63), 2 ** 63 - 1], "reg": True, "x": None, "dm": ["6408", "F"]},
              {"name": "Samé", "nested": {"a": [1.5, {"b": []}]}, 1: "int key"}, {}, None, [1, 2], "text", 7,
              {"when": datetime.datetime(2025, 3, 1, tzinfo=datetime.timezone.utc)}]
    for value in values:
        assert fast_value(value) == topic.prepare_value(value, table.value_serializer)[0], value
    for key in ["64.08", "ab" * 16, "Samé", 5, None]:
        assert fast_key(key) == topic.prepare_key(key, table.key_serializer)[0], key


def test_a_rocksdb_store_of_our_tables_reads_and_writes_faust_s_bytes_and_values(tmp_path):
    """A RocksDB store of our tables encodes keys and states, and decodes states, by the fast paths: the same
    bytes and values as Faust's own (the originals), for states, non-dicts, model markers and non-JSON."""
    import faust
    import orjson

    faust_fixes.install()
    app = faust.App("fast-store", store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("participants", default=None, key_type=str)
    faust_fixes.dead_letter_undecodable(table, lambda message, reason: None)
    store = table.data
    assert faust_fixes._ours(store)
    originals = {name.split(".")[1]: faust_fixes.ORIGINALS[name] for name in
                 ("SerializedStore._decode_value", "SerializedStore._encode_value", "SerializedStore._encode_key")}
    states = [{"pt": 24312, "seen": [-(2 ** 63)], "x": None, "dm": ["6408", "F"]}, {"name": "Samé", 1: "a"}, {},
              [1, 2], "text", 7, None]
    for value in states:
        assert store._encode_value(value) == originals["_encode_value"](store, value), value
    for key in ["64.08", "Samé", 5]:
        assert store._encode_key(key) == originals["_encode_key"](store, key), key

    def outcome(decode, raw):
        try:
            return "value", decode(store, raw)
        except Exception as exc:
            return "raises", type(exc)
    for raw in [orjson.dumps(states[0]), b"[1, 2]", b"7", b"{not json", b'{"a": "\\u00e9"}',
                b'{"__faust": {"ns": "x"}, "a": 1}', None]:
        assert outcome(type(store)._decode_value, raw) == outcome(originals["_decode_value"], raw), raw
    assert type(store)._decode_value is faust_fixes._store_decode_value  # what the store's reads go through


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_the_store_s_own_lookup_gives_what_the_table_s_get_gives(tmp_path, store):
    """``store_get`` (the participant stage's reads) against ``Table.get`` for each store: values written as the
    stage writes them (bytes, through the store) and as a restore leaves them (dicts), missing keys, falsy
    values."""
    import asyncio
    import types

    import faust
    from faust.types import TP

    faust_fixes.install()
    app = faust.App(f"store-get-{store[:3]}", store=store, datadir=str(tmp_path), topic_partitions=1)
    table = app.Table("participants", default=None, key_type=str)
    faust_fixes.dead_letter_undecodable(table, lambda message, reason: None)

    async def reads():
        if store.startswith("rocksdb"):  # a RocksDB store opens its partitions' databases when assigned
            await table.data.on_rebalance(set(), {TP(table.changelog_topic.get_topic_name(), 0)}, set(), 0)
        values = {"a": b'{"v":1,"pt":24312}', "b": {"v": 1, "pt": 5}, "c": {}, "d": 0}
        class Event:  # what routes RocksDB's partition: the event's message's partition
            message = types.SimpleNamespace(partition=0)
        event = Event()
        with faust_fixes.routed_by(event):  # as the stage reads and writes
            for key, value in values.items():
                table.data[key] = value
            get = faust_fixes.store_get(table)
            return [(get(key), table.get(key)) for key in [*values, "missing"]]
    pairs = asyncio.run(reads())
    assert len(pairs) == 5 and all(mine == theirs for mine, theirs in pairs), pairs
    assert pairs[-1] == (None, None)


def test_the_app_s_monitor_keeps_no_per_record_bookkeeping(tmp_path):
    from faust.sensors import Monitor

    from streams.app import create_app
    from streams.config import Settings
    topo = create_app(Settings(app_id="quiet-monitor", store="memory", state_dir=tmp_path))
    monitor = topo.app.monitor
    assert isinstance(monitor, faust_fixes.QuietMonitor) and isinstance(monitor, Monitor)
    hooks = [name.split(".")[1] for name in faust_fixes.ORIGINALS if name.startswith("Monitor.")]
    assert all(getattr(type(monitor), hook) is not getattr(Monitor, hook) for hook in hooks)
    received = monitor.messages_received_total
    monitor.on_message_in(None, 0, object())
    assert monitor.messages_received_total == received
    stock = Monitor()  # the check can fail: Faust's own monitor counts the same call
    stock.on_message_in(type("TP", (), {"topic": "t"})(), 0, type("M", (), {})())
    assert stock.messages_received_total == 1
    # ...but keeps when each partition's stream last took an event: Faust warns of a stalled stream from it
    monitor.on_stream_event_in("tp", 0, object(), object())
    assert "tp" in monitor.stream_inbound_time


def test_the_worker_consumer_fetches_with_the_configured_wait(tmp_path):
    """Faust writes fetch_max_wait_ms=1500 into its worker consumer; the app's consumer gets the setting instead
    (the check can fail: without the patch the aiokafka consumer says 1500)."""
    from streams.app import create_app
    from streams.config import Settings

    async def consumer_wait() -> int:
        topo = create_app(Settings(app_id="fetch-wait", store="memory", state_dir=tmp_path,
                                   consumer_fetch_wait_ms=77))
        thread = topo.app.consumer._thread
        return thread._create_worker_consumer(topo.app.transport)._fetch_max_wait_ms
    assert asyncio.run(consumer_wait()) == 77


# --- in offset order: a record handed over past a hole is held back and the partition read again -------------

class FakeConsumer:
    """The attributes of Faust's consumer that InOrder reads, and its seek."""

    def __init__(self, committed):
        self._committed_offset = defaultdict(lambda: None, {TP_: committed})
        self._read_offset = defaultdict(lambda: None)
        self.seeks = []

    async def seek(self, tp, offset):
        self.seeks.append((tp, offset))


TP_ = TopicPartition(topic="region-deltas", partition=1)


def handed(gate: faust_fixes.InOrder, offsets: list[int]) -> list[int]:
    """The offsets ``gate`` lets through, of those handed over in this order."""
    async def run():
        admitted = []
        for o in offsets:
            gate.app.consumer._read_offset[TP_] = o  # Faust's fetch loop records it as read
            if await gate.admit(SimpleNamespace(message=SimpleNamespace(tp=TP_, offset=o))):
                admitted.append(o)
        return admitted
    return asyncio.run(run())


def test_in_order_processes_from_the_committed_offset_and_holds_back_what_comes_past_a_hole():
    consumer = FakeConsumer(committed=0)
    app = SimpleNamespace(consumer=consumer, consumer_generation_id=1)
    gate = faust_fixes.InOrder(app, "region-deltas")
    # offset 0 was dropped on its first delivery: 1 and 2 come first, then (after the seek) 0, 1, 2 again
    assert handed(gate, [1, 2]) == []
    # sought back at each withheld record: the last seek follows the last record of the batch being drained
    assert consumer.seeks == [(TP_, 0), (TP_, 0)] and consumer.withheld[TP_] == {1, 2}
    assert handed(gate, [0, 1, 2, 3]) == [0, 1, 2, 3]
    assert consumer.withheld[TP_] == set()
    assert handed(gate, [2, 3, 4]) == [4]  # re-deliveries of what this process did: not again
    app.consumer_generation_id = 2  # a rebalance: start over from the committed offset
    consumer._committed_offset[TP_] = 3
    assert handed(gate, [3, 4]) == [3, 4]


def test_a_withheld_offset_holds_the_commit_below_it():
    books = Books(0, [0, 1, 3, 4])
    books.withheld = {TP: {2, 3}}  # 3 was acknowledged by Faust but not processed; 2 not yet read again
    assert new_offset(books, TP) == 2
    assert books._acked[TP] == [3, 4]
    books._committed_offset[TP] = 2
    books.withheld = {TP: set()}
    books._acked[TP] += [2]
    assert new_offset(books, TP) == 5


def test_a_partition_sought_back_to_a_hole_is_read_to_its_end_on_the_broker(kafka, tmp_path):
    """Faust drops the first delivery of one record (as around recovery); InOrder holds back what comes after it
    and seeks back. Before the fix the partition stalled for good, every time: the agent sought before Faust's
    fetch loop recorded the withheld record as read, which then moved the read offset past the seek again and
    dropped every re-fetched record below it (the crash drill stalled that way under load, 2026-11-26)."""
    from confluent_kafka import Producer

    from streams.launcher.process import log_tail, spawn
    from tests.conftest import unique
    from tests.helpers import wait_for

    topic, total, drop = unique("inorder"), 60, 10
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(total):
        producer.produce(topic, key=b"k", value=str(i).encode(), partition=0)
    producer.flush()
    log = tmp_path / "app.log"
    env = {"APP_ID": topic, "BOOTSTRAP": kafka.bootstrap, "TOPIC": topic, "DROP_OFFSET": str(drop),
           "DATADIR": str(tmp_path / "data"), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = spawn([sys.executable, str(Path(__file__).with_name("in_order_app.py")), "worker", "-l", "info"], log,
                 env=env)
    try:
        def processed() -> list[int]:
            return [int(n) for n in re.findall(r"processed=(\d+)", log.read_text(errors="replace"))]
        try:
            wait_for(lambda: len(processed()) >= total, 90, f"all {total} offsets processed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; processed {len(processed())}\n{log_tail(log)}") from None
        assert processed() == list(range(total))  # each once, in offset order
        assert f"offset {drop + 1} handed over before {drop}" in log.read_text()  # the hole was there
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("store, bulk, handover_after", [
    ("memory://", True, None), ("rocksdb://", True, None),  # the bulk read alone
    ("memory://", True, 1_500), ("rocksdb://", True, 1_500),  # the bulk read, then Faust's loop for the rest
    ("memory://", False, None),  # Faust's own loop
])
def test_a_table_restored_from_its_changelog_holds_each_key_s_last_value(kafka, tmp_path, store, bulk,
                                                                         handover_after):
    """A changelog the test wrote (keys overwritten, deleted by tombstones, some set again after that, on four
    partitions) restored on an empty state directory: the table holds each key's last value and no deleted key,
    whether the bulk read (faust_fixes.restore_in_bulk) reads it all, hands the rest to Faust's loop, or is off."""
    import json
    import random
    import zlib

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from streams.launcher.process import log_tail, spawn
    from tests.conftest import unique
    from tests.helpers import wait_for

    app_id, partitions, rng = unique("restore"), 4, random.Random(17)
    changelog = f"{app_id}-states-changelog"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(changelog, partitions, 1, config={"cleanup.policy": "compact"})])[changelog].result()
    # idempotent: in the order produced (a retried batch on a topic just created could otherwise land after the next)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 20, "enable.idempotence": True})
    expected, written = {}, 0
    for round_ in range(3):
        for i in rng.sample(range(4_000), 3_000):
            key = f"p{i:05d}"
            deleted = round_ > 0 and rng.random() < 0.15
            value = None if deleted else {"v": round_, "paid": [i, round_], "reg": True}
            producer.produce(changelog, key=json.dumps(key).encode(),
                             value=None if value is None else json.dumps(value).encode(),
                             partition=zlib.crc32(key.encode()) % partitions)
            written += 1
            if value is None:
                expected.pop(key, None)
            else:
                expected[key] = value
    producer.flush()
    out, log = tmp_path / "table.json", tmp_path / "app.log"
    env = {"APP_ID": app_id, "BOOTSTRAP": kafka.bootstrap, "STORE": store, "DATADIR": str(tmp_path / "data"),
           "PARTITIONS": str(partitions), "OUT": str(out), "BULK": "1" if bulk else "0",
           "HANDOVER_AFTER": str(handover_after or ""), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = spawn([sys.executable, str(Path(__file__).with_name("restore_app.py")), "worker", "-l", "info"], log,
                 env=env)
    try:
        try:
            wait_for(out.exists, 120, "the table restored")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_tail(log)}") from None
        assert json.loads(out.read_text()) == expected
        text = log.read_text(errors="replace")
        in_bulk = [int(n) for n in re.findall(r"Restored (\d+) changelog records in bulk", text)]
        faust_loop = "Restoring state from changelog topics" in text
        if not bulk:
            assert in_bulk == [] and faust_loop
        elif handover_after is None:
            assert in_bulk == [written] and not faust_loop  # Faust found nothing left to read
        else:
            assert in_bulk == [handover_after] and faust_loop
    finally:
        proc.terminate()
        proc.wait(30)


HANGING_STOP = """
import asyncio, faust, logging
logging.basicConfig()  # as the worker's own log
from streams import faust_fixes

class Hanging(faust_fixes.BoundedStopWorker):
    async def on_stop(self) -> None:  # a stop step that never ends (a commit waiting for a group coordinator)
        await asyncio.Event().wait()

worker = Hanging(faust.App("stop-test", broker="kafka://127.0.0.1:9", store="memory://"), stop_seconds=1.0,
                 quiet=True)
worker.loop.run_until_complete(worker.stop())
print("the stop returned")
"""


def test_a_worker_stop_that_does_not_finish_in_time_ends_the_process():
    """BoundedStopWorker: a stop that hangs (no broker) ends the process with STOP_OVERDUE_EXIT, saying why."""
    import subprocess
    done = subprocess.run([sys.executable, "-c", HANGING_STOP], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == faust_fixes.STOP_OVERDUE_EXIT, done.stderr
    assert "did not stop within 1 s" in done.stderr and "the stop returned" not in done.stdout
