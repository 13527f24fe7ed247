"""A read-only copy of every region's aggregate on every worker, for the web views and gauges.

The region table is partitioned: each worker owns some regions. Every worker also tails the table's compacted
changelog (all partitions, outside the consumer group) into a dict, so `/regions` answers for all 10 regions from
any worker. This is what Faust's GlobalTable does; we do it with a plain consumer because, with faust 0.15.3 and
aiokafka 0.14, a worker joining a group that has a GlobalTable intermittently never fetched its own input
partitions (cf. faust-streaming #629/#471)."""
from __future__ import annotations

import asyncio
import logging

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams import rules, state as states
from streams.clock import stream_clock
from streams.config import Settings
from streams.reference import regions as reference_regions

log = logging.getLogger(__name__)


class RegionReadModel:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.topic = settings.regions_changelog
        self._stats: dict[str, dict] = {}
        # a key's records not decoded yet, oldest first: decoded when the states are read (the web views, the
        # gauges' refresh each second), not per fetch — a region's state is kilobytes of JSON, written once per
        # batch the region stage takes, and decoding every one cost the worker ~7 % of its CPU in a backlog
        self._pending: dict[bytes | None, list] = {}
        self._state_versions: dict[str, int] = {}  # per region: changes when its decoded state does
        # per region: (its state version, the stream clock, the Region, its view); a view is recomputed only when
        # one of them changed. /regions was polled (the page, the latency benchmark every 20 ms) while the region
        # stage changes a few regions per batch: computing all ten views per request (~8 ms) took CPU from the
        # stages and made latency worse the harder it was watched (now both follow /regions/stream instead)
        self._views: dict[str, tuple] = {}
        self.ready = asyncio.Event()
        # each fetch that brought records: a new generation, and whoever waits for one (the views' event stream,
        # streams/web.py) wakes once, whatever the number of records
        self.generation = 0
        self._changed = asyncio.Event()

    async def changed_since(self, seen: int, timeout: float) -> int:
        """The read model's generation once it differs from ``seen`` (at once if it already does), or ``seen``
        after ``timeout`` seconds without a change."""
        if self.generation == seen:
            changed = self._changed  # the event of this generation: set (and replaced) by the next
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return self.generation

    def _new_generation(self) -> None:
        self.generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def stats(self) -> dict[str, states.RegionState]:
        """Every region's newest state that decodes (each region's newest record; an undecodable one is skipped
        for the one before it)."""
        pending, self._pending = self._pending, {}
        for key, records in pending.items():
            for partition, offset, value in reversed(records):
                state = region_state(key, value)
                if state is None:  # the worker restoring the changelog dead-letters it
                    log.warning("read model: a record of %s[%d]@%d is not a region's state, skipped", self.topic,
                                partition, offset)
                    continue
                code, stats = state
                if stats is None:
                    self._stats.pop(code, None)
                else:
                    self._stats[code] = stats
                self._state_versions[code] = self._state_versions.get(code, 0) + 1
                break
        return self._stats

    def views(self) -> list[dict]:
        """All regions at one stream clock: the low watermark, i.e. the slowest region's (every event before it is
        in every region's figures). Silence still ages: the watermark moves with the other regions' events.
        While one region is still catching up, the others are not aged past what it has seen."""
        ref = reference_regions()
        current = self.stats
        stats = {code: current.get(code) for code in ref}
        clock = stream_clock(s.wm for s in stats.values() if s)
        s, out = self.settings, []
        for code, region in ref.items():
            version = self._state_versions.get(code, 0)
            cached = self._views.get(code)
            if cached is None or cached[0] != version or cached[1] != clock or cached[2] is not region:
                cached = self._views[code] = (version, clock, region,
                                              rules.region_view(region, stats[code], clock, s.grace_months,
                                                                s.target_scale))
            out.append(cached[3])
        return out

    def histories(self) -> dict[str, list[dict]]:
        """Per region: members and coverage per evaluated day (rules.history_view)."""
        return {code: rules.history_view(region, self.stats.get(code), self.settings.target_scale)
                for code, region in reference_regions().items()}

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(**self.settings.aiokafka_conf(), enable_auto_commit=False, group_id=None,
                                    auto_offset_reset="earliest", isolation_level="read_committed")
        await consumer.start()
        try:
            partitions = await self._partitions()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            log.info("read model following %s (partitions %s, end offsets %s)", self.topic, sorted(partitions),
                     sorted(ends.values()))
            if all(offset == 0 for offset in ends.values()):
                self.ready.set()
            while True:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for messages in fetched.values():
                    for message in messages:
                        self._pending.setdefault(message.key, []).append((message.partition, message.offset,
                                                                          message.value))
                if fetched:
                    self._new_generation()
                if not self.ready.is_set() and all(await self._caught_up(consumer, ends)):
                    log.info("read model caught up with %s: %d regions", self.topic, len(self.stats))
                    self.ready.set()
        finally:
            await consumer.stop()

    async def _partitions(self) -> list[int]:
        """The changelog's partitions, once it exists (the worker creates it while starting)."""
        admin = AIOKafkaAdminClient(**self.settings.aiokafka_conf())
        await admin.start()
        try:
            while True:
                described = await admin.describe_topics([self.topic])
                if described and described[0]["error_code"] == 0 and described[0]["partitions"]:
                    return [p["partition"] for p in described[0]["partitions"]]
                await asyncio.sleep(0.5)
        finally:
            await admin.close()

    @staticmethod
    async def _caught_up(consumer, ends) -> list[bool]:
        return [await consumer.position(tp) >= end for tp, end in ends.items()]


def region_state(key: bytes | None, value: bytes | None) -> tuple[str, states.RegionState | None] | None:
    """A regions-changelog record as (region code, its state; None: deleted), or None if it is not one (or of
    a state format this worker does not know)."""
    try:
        code = orjson.loads(key) if key is not None else None
        if not isinstance(code, str):
            return None
        return code, None if value is None else states.region_from_json(value)
    except (orjson.JSONDecodeError, msgspec.MsgspecError, states.StateVersionError):
        return None
