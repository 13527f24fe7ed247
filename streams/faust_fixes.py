"""Fixes for faust-streaming 0.15.3 that the kill -9 drills need: records fetched around recovery or a rebalance
were lost.

Faust's fetch loop hands each record to the streams with ``wait_first(deliver(record), suspend_flow.wait())``
and marks it read either way; while flow is suspended (recovery, every rebalance) a record is therefore
dropped unread, and Faust's next ``perform_seek`` ("Seek stream partitions to committed offsets") is what brings
it back — but only for partitions with a committed offset. A partition that has none yet (a fresh internal
topic, or one whose worker died before its first commit) keeps the consumer's advanced position, and the dropped
records are never read: the 40k kill -9 drill lost the first participant-events messages of some partitions
(e.g. partition 1 offset 0: 19 contributions) in about half the runs, before this.

Two fixes: the delivery is shielded, so a record that loses the race with ``suspend_flow`` is still delivered
(the first fix alone left the drill 2 records short in one run of two); and ``perform_seek`` also does what
``auto_offset_reset=earliest`` means for an assigned stream partition without a committed offset: read it from
its earliest offset. Re-reading is safe here: every stage is idempotent (docs/reliability.md)."""
from __future__ import annotations

import asyncio

from faust.transport.consumer import Consumer

_perform_seek = Consumer.perform_seek
_init = Consumer.__init__


async def _perform_seek_from_earliest_when_uncommitted(self: Consumer) -> None:
    await _perform_seek(self)
    uncommitted = [tp for tp in self.assignment()
                   if not self._is_changelog_tp(tp) and self._committed_offset.get(tp) is None]
    if uncommitted:
        for tp, offset in (await self.earliest_offsets(*uncommitted)).items():
            await self.seek(tp, offset)


def _init_with_shielded_delivery(self: Consumer, *args, **kwargs) -> None:
    """The root of it: the delivery of a record that loses the race with ``suspend_flow`` is cancelled while
    the record is marked read. Shielded, it completes (in order: queue putters are served first come, first
    served) and nothing is dropped; a record delivered around a rebalance is at worst read twice."""
    _init(self, *args, **kwargs)
    deliver = self.callback

    async def shielded(message):
        await asyncio.shield(deliver(message))
    self.callback = shielded


def install() -> None:
    """Idempotent: patch Faust's consumer once per process."""
    if Consumer.perform_seek is not _perform_seek_from_earliest_when_uncommitted:
        Consumer.perform_seek = _perform_seek_from_earliest_when_uncommitted
        Consumer.__init__ = _init_with_shielded_delivery
