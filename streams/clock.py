"""The event-time clock, in one place: pure functions and typed state, ``now`` (wall time) always passed in.

Three levels (docs/domain.md "Clock and watermarks"):

1. **Partition clock** (:class:`PartitionClock`, ingest): per input partition, the highest event time that two
   consecutive valid records have both reached. One record far ahead of the others (a test event stamped "now"
   in a backfill, a wrong device clock) does not move it; two in a row do. A record more than the allowed
   lateness behind it is *late*: counted and applied like any other, never dropped.
2. **Stream clock of a participant partition** (:func:`fold_source_tick`): the slowest of the source partitions'
   clocks that is still moving (idleness by wall time, as Flink's ``withIdleness``).
3. **Region clock** (:func:`region_low`): the slowest of the participant partitions' clocks, once all have one.

Stall rules are evaluated on the region clock; active/lapsed is read at the slowest region's clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

DAY_MS = 86_400_000
HISTORY = 64  # batch ends remembered per input partition: a replay restarts from one of them


def day_of(ms: int) -> int:
    return ms // DAY_MS


@dataclass
class Observation:
    """What reading one record did to its partition's clock."""

    late_ms: int        # how far the record is behind the clock (0 if not behind)
    late: bool          # more than the allowed lateness behind: counted as late (still applied)
    tick: int | None    # the clock's new value when it entered a new day (a watermark to pass on), else None


@dataclass
class PartitionClock:
    """One input partition's clock, as a function of the offset read (so a replay judges records as the first
    time: see :meth:`rewind`). Stored once per batch in the ``watermarks`` table (``v`` = format version)."""

    VERSION = 2

    wm: int = 0     # the clock: highest event time confirmed by two consecutive records
    last: int = 0   # the previous valid record's event time (a candidate until the next record confirms it)
    off: int = -1   # the last offset read
    history: list[tuple[int, int, int]] = field(default_factory=list)  # (offset, wm, last) at batch ends

    @classmethod
    def from_stored(cls, stored: dict | None) -> "PartitionClock":
        if not stored:
            return cls()
        if stored.get("v") != cls.VERSION:  # version 1 (before late data counted): a watermark without ``last``
            return cls(wm=stored["wm"], last=stored["wm"], off=stored["off"],
                       history=[(o, w, w) for o, w in stored["h"]])
        return cls(wm=stored["wm"], last=stored["last"], off=stored["off"], history=[tuple(h) for h in stored["h"]])

    def stored(self) -> dict:
        """The state to write at the end of a batch (remembers this batch end for replays)."""
        self.history = (self.history + [(self.off, self.wm, self.last)])[-HISTORY:]
        return {"v": self.VERSION, "wm": self.wm, "last": self.last, "off": self.off,
                "h": [list(h) for h in self.history]}

    def rewind(self, offset: int) -> None:
        """Reading ``offset`` again (a restart or rebalance before the offset commit): go back to the clock after
        the last batch end before it (a replay longer than the history starts from no clock)."""
        if offset <= self.off:
            self.history = [h for h in self.history if h[0] < offset]
            self.off, self.wm, self.last = self.history[-1] if self.history else (offset - 1, 0, 0)

    def observe(self, offset: int, at: int, allowed_lateness_ms: int) -> Observation:
        """A valid record with event time ``at`` was read at ``offset``."""
        self.off = offset
        before = self.wm
        behind = max(before - at, 0)
        self.wm = max(before, min(self.last, at))
        self.last = at
        tick = self.wm if day_of(self.wm) > day_of(before) else None
        return Observation(behind, behind > allowed_lateness_ms, tick)

    def skip(self, offset: int) -> None:
        """An invalid record was read at ``offset``: it does not move the clock."""
        self.off = offset


# -- participant partitions: the slowest source still moving ---------------------------------------------------
def low_watermark(sources: Iterable[tuple[int, float]], now: float, idle_seconds: float) -> int:
    """The stream clock over several sources, each ``(watermark, wall time it last advanced)``: the slowest
    source that is still moving. A source that has not advanced for ``idle_seconds`` (a sparse partition, a
    publisher gone quiet) is idle and not waited for; when all are idle, the clock is the most advanced one.
    Idleness is judged by wall time: in a replay every source keeps moving, so the clock waits for the slowest
    and the result does not depend on how partitions interleave."""
    sources = list(sources)
    moving = [mark for mark, seen in sources if now - seen < idle_seconds]
    return min(moving) if moving else max(mark for mark, _ in sources)


@dataclass
class SourceClock:
    """A participant partition's view of its source partitions (``clocks`` table; ``v`` = format version)."""

    VERSION = 1

    sources: dict[str, tuple[int, float]]  # source "topic:partition" -> (its clock, wall time it last moved)
    sent: int                               # the last low watermark passed on to the regions
    since: float                            # wall time this clock was created (unseen sources count from it)

    @classmethod
    def from_stored(cls, stored: dict | None, now: float) -> "SourceClock":
        if not stored:
            return cls({}, 0, now)
        return cls({src: (mark, seen) for src, (mark, seen) in stored["src"].items()}, stored["sent"],
                   stored["since"])

    def stored(self) -> dict:
        return {"v": self.VERSION, "src": {k: list(v) for k, v in self.sources.items()}, "sent": self.sent,
                "since": self.since}


def fold_source_tick(clock: SourceClock, source: str | None, at: int, all_sources: Iterable[str], now: float,
                     started: float, idle_seconds: float) -> tuple[SourceClock, int | None]:
    """Fold a source partition's watermark tick into a participant partition's clock. Returns (the new clock,
    the new low watermark when it enters a new day, else None: to pass on to every region).

    Every input partition counts as a source from the start, so the clock does not run ahead on the partitions
    read first; one that never ticks (empty) or stops ticking is idle after ``idle_seconds``. ``source`` None is
    the periodic re-check that notices idleness. ``started``: this process's start (wall time); sources restored
    from the changelog count as moving for a while after a (re)start."""
    sources = {src: (mark, max(seen, started)) for src, (mark, seen) in clock.sources.items()}
    if source is not None and at > sources.get(source, (0, 0.0))[0]:
        sources[source] = (at, now)
    since = max(clock.since, started)
    not_yet = [(0, since) for src in all_sources if src not in sources]
    low = low_watermark([*sources.values(), *not_yet], now, idle_seconds)
    sent, forward = clock.sent, None
    if day_of(low) > day_of(sent):
        sent = forward = low
    return SourceClock(sources, sent, since), forward


# -- regions -------------------------------------------------------------------------------------------------
def region_low(marks: dict[str, int], partitions: int) -> int | None:
    """A region's clock: the slowest participant partition's watermark, once every one has sent one."""
    return min(marks.values()) if len(marks) >= partitions else None


def stream_clock(region_marks: Iterable[dict[str, int]]) -> int:
    """The clock all regions are read at: the slowest region's (every event before it is in every region's
    figures). 0: no clock yet."""
    return min((min(marks.values()) for marks in region_marks if marks), default=0)


def is_correction(at: int, evaluated_day: int | None) -> bool:
    """An event of a day whose stall evaluation has already run (day D is evaluated as of 00:00 of D, from
    events before D): it is applied to every figure and counted as a correction; the evaluation is not re-run."""
    return evaluated_day is not None and day_of(at) < evaluated_day
