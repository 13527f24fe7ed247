"""Targeted fault injection for the crash drills (tests/test_crash_points.py): the worker kills itself with SIGKILL
at a named point of a stage's write order, the n-th time it gets there. Off unless ``FAULT_POINT`` is set
(``stage:point@n``, streams/config.py).

The points are the worst places for a crash in each stage (docs/reliability.md, "Write order"): between an output
becoming durable and the state that records it, and between that state becoming durable and the input offset
commit. Before killing at a point, everything handed to the producer is flushed (changelog writes included), so
the broker holds exactly what the point names."""
from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

POINTS = (
    "ingest:events-acked",           # participant events acknowledged, the partition clocks not written
    "participants:deltas-acked",     # region deltas acknowledged, participant states not written
    "participants:state-durable",    # participant states on their changelog, input offset not committed
    "participants:state-first",      # NOT our order: states durable, deltas never sent (the drill must see a loss)
    "regions:alerts-acked",          # alerts acknowledged, region state not written
    "regions:state-durable",         # region state on its changelog, delta offset not committed
)


class FaultPoints:
    def __init__(self, spec: str | None):
        self.point, self.due = None, 0
        if spec:
            point, _, n = spec.partition("@")
            if point not in POINTS:
                raise ValueError(f"unknown fault point {point!r} (one of {', '.join(POINTS)})")
            self.point, self.due = point, int(n or 1)

    def fires(self, point: str) -> bool:
        """Counts a visit of ``point``: True the ``n``-th time (the caller then calls ``kill``)."""
        if self.point != point:
            return False
        self.due -= 1
        return self.due == 0

    async def reached(self, point: str, producer) -> None:
        """Called at ``point``: the ``n``-th time, kill this process."""
        if self.fires(point):
            await self.kill(point, producer)

    @staticmethod
    async def kill(point: str, producer) -> None:
        """Flush ``producer`` (so the broker holds what was handed to it) and SIGKILL this process."""
        await producer.flush()
        log.warning("fault injection: SIGKILL at %s", point)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
