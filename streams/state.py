"""The participant and region state: typed (msgspec Structs), and versioned in what goes to their changelogs.

A table holds the *stored* form, a JSON object with ``v`` = its format version (what the changelog carries and a
restore reads back); the stages work on the typed form. ``*_from_stored`` reads any version this code knows and
upgrades it, and refuses a newer one (a rollback past a format change) instead of guessing at it. Every container
is typed, so reading a stored state builds new containers: the typed state may be changed in place without
touching what the table holds (a stage's writes become durable in an order, docs/reliability.md "Write order").

Format versions (bump ``VERSION`` and add an upgrade when a field changes meaning; a new field with a default
needs neither, an absent one reads as its default):
- participant 0: the unversioned dict before 2026-11-27; 1: the same fields, ``v`` added, defaults left out.
- region 0: the unversioned dict before 2026-11-27 (perhaps with ``active_series``, a rule's series since
  replaced: dropped); 1: the same fields with ``v``.
"""
from __future__ import annotations

import msgspec
import orjson

PARTICIPANT_VERSION = 1
REGION_VERSION = 1


class StateVersionError(ValueError):
    """A stored state of a format this code does not know (written by a newer worker)."""


class Participant(msgspec.Struct, omit_defaults=True):
    """One participant (keyed by pseudonym): rules.apply_event is its only writer."""

    reg: bool = False                 # registered
    r: str | None = None              # region code
    c: str | None = None              # cohort
    f: str | None = None              # funding source
    s: str | None = None              # segment
    p: list[str] = []                 # programmes
    pt: int | None = None             # paid-through period index (rules.period_index)
    seen: list[int] = []              # recent event-id hashes (dedup), at most rules.SEEN_LIMIT
    dm: list[str] | None = None       # [district, age band, sex, occupation code] (streams/demography.py)
    pre: list[list[int]] | None = None  # [paid period, paid at] of contributions read before the registration
    x: str | None = None              # why it left (None: still a member)
    xa: int | None = None             # when it left
    xp: int | None = None             # its paid-through period when it left
    cl: dict[str, list[int | None]] | None = None  # open claims: claim hash -> [submitted at, paid at]


class RegionState(msgspec.Struct):
    """One region's aggregate (rules.apply_delta_in_place, streams/stall.py)."""

    registered: dict[str, int] = {}                 # per cohort
    hist: dict[str, dict[str, int]] = {}            # per cohort: paid-through period -> members
    fhist: dict[str, dict[str, int]] = {}           # the same per "cohort|funder"
    quota_used: dict[str, int] = {}                 # vulnerable-worker places per funder
    claims: dict[str, dict[str, list[int]]] = {}    # programme -> status -> [count, rupiah]
    turnaround: dict[str, dict[str, int]] = {}      # programme -> whole days SUBMITTED -> PAID -> claims
    exited: dict[str, dict[str, int]] = {}          # cohort -> reason -> members
    people: dict[str, dict[str, dict[str, int]]] = {}  # cohort -> breakdown -> cell -> members
    contrib: list[int] = msgspec.field(default_factory=lambda: [0, 0])  # [count, rupiah]
    paid: dict[str, int] = {}                       # "fiscal year|funder" -> rupiah
    clock: int = 0                                  # latest event time seen
    last_registration: int = 0
    applied: dict[str, list[int]] = {}              # source partition -> [offset, index] of the last delta applied
    late: int = 0                                   # events read late at ingest
    corrections: int = 0                            # counted events of days already evaluated
    # stall detection (streams/stall.py)
    wm: dict[str, int] = {}                         # low watermark per source partition
    evaluated: int | None = None                    # the last day evaluated
    first_day: int | None = None                    # the day before the first evaluated
    days: dict[str, list[int]] = {}                 # day -> [vulnerable-worker registrations, contributions]
    recent: dict[str, dict[str, dict[str, int]]] = {}  # day ahead of ``evaluated`` -> group -> "old>new" -> n
    ahead: dict[str, dict[str, int]] | None = None  # ``recent`` summed over its days (None: not summed yet)
    protected_series: list[list[int | float]] = []  # [day, protected share, members]
    history: list[list[int]] = []                   # [day, programme members] per evaluated day
    alerts: dict[str, dict[str, int | str | None]] = {}  # rule key -> its state (stall._step)
    alert_log: list[list[str | int | None]] = []    # [rule key, status, started day, day]
    forecast_fill_day: int | None = None


_ENCODER = msgspec.json.Encoder()
_PARTICIPANT_DECODER = msgspec.json.Decoder(Participant)
#: how every participant record this code writes starts (``encoded``): its format version first
_PARTICIPANT_PREFIX = b'{"v":%d,' % PARTICIPANT_VERSION


def encoded(p: Participant) -> bytes:
    """A participant's stored form as the bytes its changelog record carries — the JSON object of ``stored``
    (``v`` first), encoded straight from the typed state: what the participant stage writes to the table and its
    changelog. ``msgspec.to_builtins`` and then orjson took ~4.0 µs a state against ~1.6 µs (2026-11-28; the
    largest single item of a 1M backlog's profile once the stage ran without its input hop)."""
    body = _ENCODER.encode(p)
    return _PARTICIPANT_PREFIX + body[1:] if len(body) > 2 else _PARTICIPANT_PREFIX[:-1] + b"}"


def participant_from_stored(stored: dict | bytes | None) -> Participant | None:
    """The typed state of a table value: ``encoded`` bytes (what the stage writes; RocksDB hands every value back
    as such), or the decoded dict a restore into the memory store leaves (any version this code knows)."""
    if stored is None:
        return None
    if type(stored) is bytes:
        if stored.startswith(_PARTICIPANT_PREFIX):  # this version, written by ``encoded``: straight into the type
            return _PARTICIPANT_DECODER.decode(stored)
        stored = orjson.loads(stored)  # another version or another writer's key order: as a dict
        if not isinstance(stored, dict):
            raise msgspec.ValidationError("a participant's state is a JSON object")
    return msgspec.convert(_checked(stored, PARTICIPANT_VERSION, "participant"), Participant)


def region_from_stored(stored: dict | None) -> RegionState:
    """The region's typed state (a new one for None), its own copy of everything in ``stored``."""
    return RegionState() if stored is None else msgspec.convert(_checked(stored, REGION_VERSION, "region"),
                                                                RegionState)


class _Version(msgspec.Struct):
    v: int = 0  # absent: unversioned (0)


def region_from_json(raw: bytes) -> RegionState:
    """A region's state from a changelog record's bytes, decoded straight into the type (msgspec), its version
    checked first. The read model decodes each region record it shows: orjson and then ``convert`` took twice as
    long (~510–620 against ~260–270 µs for the largest region's 30 kB state in the 0.01-scale scenario, 2026-11-27).
    Raises msgspec's errors for bytes that are not a region's state."""
    _checked({"v": msgspec.json.decode(raw, type=_Version).v}, REGION_VERSION, "region")
    return msgspec.json.decode(raw, type=RegionState)  # ``v`` is not a field: left out, as convert does


def stored(state: Participant | RegionState) -> dict:
    """The form a table and its changelog hold."""
    out = msgspec.to_builtins(state)
    out["v"] = PARTICIPANT_VERSION if isinstance(state, Participant) else REGION_VERSION
    return out


def copy_region(state: RegionState | None) -> RegionState:
    """A deep copy (a new state for None)."""
    return region_from_stored(stored(state)) if state is not None else RegionState()


def _checked(stored: dict, version: int, what: str) -> dict:
    found = stored.get("v", 0)
    if not isinstance(found, int) or found > version:
        raise StateVersionError(f"{what} state of format version {found!r}: this worker knows up to {version}")
    return stored  # 0 -> 1 added ``v`` only; unknown fields (``active_series``) are left out by convert
