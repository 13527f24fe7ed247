"""The read model (streams/read_model.py) in-process, no broker: records of the regions changelog as its consumer
hands them over. States are decoded when read, the newest record of a region that decodes wins, and a region's
view is computed again only when its state, the stream clock or its reference data changed."""
from __future__ import annotations

import asyncio

import orjson

from streams import rules
from streams.config import Settings
from streams.read_model import RegionReadModel
from streams.state import RegionState, stored
from streams.reference import regions as reference_regions


def fetched(model: RegionReadModel, *records: tuple[str, object]) -> None:
    """What ``RegionReadModel.run`` does with a fetch: the records kept undecoded."""
    for offset, (code, value) in enumerate(records):
        raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
        model._pending.setdefault(orjson.dumps(code), []).append((0, offset, raw))


def state(registered: int, wm: int = 0) -> dict:
    """A region's state as its changelog carries it."""
    stats = RegionState()
    stats.registered = {"VULNERABLE_WORKER": registered}
    stats.wm = {"0": wm} if wm else {}
    return stored(stats)


def test_newest_decodable_state_wins_and_views_follow_only_what_changed(tmp_path):
    model = RegionReadModel(Settings(state_dir=tmp_path))
    fetched(model, ("64.08", state(1)), ("64.08", state(2)), ("64.72", state(5)), ("64.72", b"{broken"))
    views = {v["code"]: v for v in model.views()}
    assert views["64.08"]["registered"] == 2  # the newest of two
    assert views["64.72"]["registered"] == 5  # the newest did not decode: the one before it
    assert views["64.01"]["registered"] == 0  # no record yet
    again = {v["code"]: v for v in model.views()}
    assert all(again[code] is views[code] for code in views)  # nothing changed: the same views, not recomputed

    fetched(model, ("64.08", state(3)))
    after = {v["code"]: v for v in model.views()}
    assert after["64.08"]["registered"] == 3 and after["64.08"] is not views["64.08"]
    assert after["64.72"] is views["64.72"]  # its state and the clock unchanged

    fetched(model, ("64.72", None))  # a tombstone: the region's state is gone
    assert {v["code"]: v for v in model.views()}["64.72"]["registered"] == 0


def test_a_moved_stream_clock_recomputes_every_view(tmp_path):
    model = RegionReadModel(Settings(state_dir=tmp_path))
    day = 86_400_000
    fetched(model, *((code, state(1, wm=20_000 * day)) for code in reference_regions()))
    before = {v["code"]: v for v in model.views()}
    fetched(model, *((code, state(1, wm=20_040 * day)) for code in reference_regions() if code != "64.08"))
    fetched(model, ("64.08", state(1, wm=20_040 * day)))
    after = {v["code"]: v for v in model.views()}
    assert all(after[code] is not before[code] for code in before)
    assert {v["clock_ms"] for v in after.values()} != {v["clock_ms"] for v in before.values()}


def test_a_waiter_wakes_once_for_what_arrived_meanwhile_and_otherwise_at_its_timeout(tmp_path):
    """What the views' event stream (streams/web.py) waits on: the generation moves with each fetch that brought
    records; a waiter behind it returns at once, one at the current generation wakes at the next (however many
    came meanwhile) or returns its own after the timeout."""
    async def scenario() -> None:
        model = RegionReadModel(Settings(state_dir=tmp_path))
        assert await model.changed_since(-1, 60) == model.generation == 0  # behind: at once
        assert await model.changed_since(0, 0.01) == 0  # nothing new: the timeout
        waiters = [asyncio.create_task(model.changed_since(0, 60)) for _ in range(2)]
        await asyncio.sleep(0)
        model._new_generation()
        model._new_generation()
        assert await asyncio.gather(*waiters) == [2, 2]
        late = asyncio.create_task(model.changed_since(2, 60))
        await asyncio.sleep(0.01)
        assert not late.done()
        model._new_generation()
        assert await late == 3
    asyncio.run(scenario())
