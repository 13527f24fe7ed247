"""Where a sink's consumer stands, for its offset commits."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError


async def positions(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Each assigned partition's position right after a batch was read: past every record returned so far and past
    the transaction markers and aborted records the consumer stepped over after them. Every record before it is in
    this batch or an earlier one, so once they are handled it is the offset to commit: committing only the last
    record's offset + 1 left a partition that ends in a marker (every transaction's end) one record short for good,
    shown as lag that never drains."""
    out = {}
    for tp in consumer.assignment():
        try:
            out[tp] = await asyncio.wait_for(consumer.position(tp), 1)
        except (IllegalStateError, KafkaError, asyncio.TimeoutError):  # revoked meanwhile, no position yet
            continue
    return out
