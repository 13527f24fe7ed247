"""Each agent in-process, on a memory store: Faust's ``agent.test_context()`` feeds an agent events through a channel,
each decoded by its topic's own schema, while everything the agent sends goes to the real broker (its producer
started here, no consumer group, no worker process). The stages are chained by hand: the records the ingest agents send are
read back from the broker and put into the participants agent, whose deltas are put into the regions agent; the
region table must then equal the independent fold (tests/expected.py) — seconds, where a worker process takes a
rebalance and a restore to get there."""
from __future__ import annotations

import asyncio
import collections
import contextlib
from types import SimpleNamespace

import orjson

from streams import rules
from streams.app import Topology, create_app
from streams.config import Settings
from streams.faust_fixes import RecordBatch
from streams.reference import regions as reference_regions
from streams.simulator import Scenario, SimEvent
from streams.state import region_from_stored
from streams.topics import app_topics, ensure_topics
from tests.expected import comparable, expected_regions
from tests.helpers import niks_in, read_all
from tests.test_topology import publish

SCALE = 0.002


@contextlib.asynccontextmanager
async def in_process(settings: Settings):
    """The worker's topology, built as the worker builds it (memory store), with only its producer running."""
    topo = create_app(settings.model_copy(update={"store": "memory"}))
    ensure_topics(settings, extra=app_topics(topo))
    await topo.app.producer.start()
    try:
        yield topo
    finally:
        await topo.app.producer.stop()


async def fetched(settings: Settings, topic: str) -> dict[int, list]:
    """Every record of ``topic`` by partition, in offset order (tests/helpers.py ``read_all``, off the event loop;
    kafka-python records carry what Faust's consumer hands over: topic, partition, offset, key, value)."""
    out: dict[int, list] = {p: [] for p in range(settings.topic_partitions)}
    for record in await asyncio.to_thread(read_all, settings.kafka_bootstrap_servers, topic):
        out[record.partition].append(record)
    return {p: sorted(records, key=lambda r: r.offset) for p, records in out.items()}


async def run_agent(topo: Topology, name: str, messages: dict[int, list], timeout: float = 60) -> list:
    """Put each partition's ``messages`` into agent ``name``, decoded by its topic's own schema (as Faust's
    consumer would), in offset order, a partition at a time (the stage admits each partition's records in
    order), and return the details it yielded, one per batch it took, once it has taken them all (each agent
    yields ``(events taken, detail)`` per batch)."""
    agent, app = topo.agents[name], topo.app
    schema = agent.channel.schema
    async with agent.test_context() as running:
        for partition, records in messages.items():
            for record in records:
                await running.put(schema.loads_value(app, record), key=schema.loads_key(app, record),
                                  partition=partition, wait=False)
        put = sum(len(records) for records in messages.values())
        async with asyncio.timeout(timeout):
            while sum(taken for taken, _ in running.results.values()) < put:
                await asyncio.sleep(0.05)
        assert sum(taken for taken, _ in running.results.values()) == put
        return [detail for _, detail in running.results.values()]


def scenario() -> list[SimEvent]:
    return list(Scenario.load(scale=SCALE, seed=11, bad_share=0.03, duplicate_share=0.03).events(4))


def deltas_in(records: dict[int, list]) -> list[dict]:
    """The region deltas in region-deltas records, ticks left out."""
    return [d for rs in records.values() for r in rs for d in orjson.loads(r.value)["deltas"] if d["k"] != "tick"]


def test_each_agent_in_process_equals_the_fold_and_a_replay_changes_nothing(settings):
    """ingest → participants → regions, one agent at a time in this process, each fed what the one before sent to
    the broker: dead letters with their reasons, no NIK past ingest, and region states equal to the fold. Then
    what a crash before the offset commits would re-deliver, delivered again: the participants agent finds every
    event a duplicate and sends no delta, and the regions agent applies nothing it had applied."""
    events = scenario()
    publish(settings, events)
    niks = {e.key for e in events}

    async def chain():
        async with in_process(settings) as topo:
            batches = collections.defaultdict(list)  # each partition's fetch of each input topic
            for topic in settings.topics.inputs:
                for p, records in (await fetched(settings, topic)).items():
                    if records:
                        batches[p].append(SimpleNamespace(key=None, value=RecordBatch(records)))
            read = sum(await run_agent(topo, "ingest", batches))
            pe = await fetched(settings, topo.participant_events.get_topic_name())
            outcomes = sum(await run_agent(topo, "participants", pe), collections.Counter())
            deltas = await fetched(settings, topo.region_deltas.get_topic_name())
            changed = await run_agent(topo, "regions", deltas)
            states = {code: region_from_stored(topo.regions.get(code)) for code in reference_regions()}
            # the same input again, as after a crash before the commits
            again = sum(await run_agent(topo, "participants", pe), collections.Counter())
            sent_again = deltas_in(await fetched(settings, topo.region_deltas.get_topic_name()))
            changed_again = await run_agent(topo, "regions", deltas)
            replayed = {code: region_from_stored(topo.regions.get(code)) for code in reference_regions()}
            return read, pe, outcomes, deltas, changed, states, (again, sent_again, changed_again, replayed)

    read, pe, outcomes, deltas, changed, states, replay = asyncio.run(chain())
    assert read == len(events)
    dead = [e for e in events if e.expect == "dead_letter"]
    letters = read_all(settings.kafka_bootstrap_servers, settings.topics.dead_letter)
    assert collections.Counter(dict(r.headers)["dlq.reason"].decode() for r in letters) == \
        collections.Counter(e.fault for e in dead)
    internal = b"".join(r.value for records in [*pe.values(), *deltas.values()] for r in records)
    assert not niks_in(internal, niks)  # pseudonymised before leaving the ingest stage
    by_outcome = collections.Counter()
    for (_, outcome), n in outcomes.items():
        by_outcome[outcome] += n
    assert by_outcome == collections.Counter(e.expect for e in events if e.expect != "dead_letter")
    assert {code for codes in changed for code in codes} == {code for code, s in states.items() if s.registered}
    clock = max(e.occurred_at for e in events if e.expect == "processed")
    views = {code: comparable(rules.region_view(region, states[code], clock, settings.grace_months, SCALE))
             for code, region in reference_regions().items()}
    assert views == expected_regions(events, scale=SCALE)
    assert sum(view["contributions"]["count"] for view in views.values()) > 0

    again, sent_again, changed_again, replayed = replay
    assert set(again) == {(topic, "duplicate") for topic, _ in outcomes}
    assert sum(again.values()) == sum(outcomes.values())
    assert sent_again == deltas_in(deltas)  # no delta sent again
    assert changed_again == [[]] * len(changed_again) and replayed == states


def test_each_agent_is_labelled_by_its_stage_function(tmp_path):
    """Faust labels an agent (log lines, the stacks dump) by its function: the stage's, not ``functools.partial``."""
    topo = create_app(Settings(app_id="labels", state_dir=tmp_path))
    labels = {name: agent.label for name, agent in topo.agents.items()}
    assert set(labels) == {"ingest", "participants", "regions"}
    for name, label in labels.items():
        assert f"streams.{name}.agent" in label and "partial" not in label, label
