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
    "regions:bug",                   # an exception in the region stage (stage_failed: the process exits)
)

#: the exit status of a worker whose stage raised (EX_SOFTWARE): its process manager restarts it
STAGE_FAILED_EXIT = 70


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

    def raise_at(self, point: str) -> None:
        """Called at ``point``: the ``n``-th time, raise as a bug in the stage would."""
        if self.fires(point):
            raise RuntimeError(f"fault injection: an error at {point}")

    @staticmethod
    async def kill(point: str, producer) -> None:
        """Flush ``producer`` (so the broker holds what was handed to it) and SIGKILL this process."""
        await producer.flush()
        log.warning("fault injection: SIGKILL at %s", point)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


async def stage_failed(agent, exc: BaseException) -> None:
    """What an agent's exception does (streams/faust_fixes.py routes Faust's handler here): the process ends at
    once, without committing offsets.

    Faust's default restarts the crashed agent in the same process and goes on with the records after the one it
    was processing: that record was never applied, and its offset was committed with the next ones — lost in
    silence (a region stage crash on 2026-11-26 lost two death claims from Kutai Timur's table). Exiting instead is
    a crash like the kill -9 drills: the restarted worker re-reads from the committed offsets, and the write order
    (docs/reliability.md) makes the re-read exact. A bug that recurs on the same record stops the worker instead of
    losing data — visible, and the record is still there once the bug is fixed."""
    log.critical("stage %s failed: %r; exiting without committing (status %d) so that nothing is skipped",
                 getattr(agent, "name", agent), exc, STAGE_FAILED_EXIT, exc_info=exc)
    logging.shutdown()
    os._exit(STAGE_FAILED_EXIT)
