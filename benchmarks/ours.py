"""Our side of the benchmark, each against the real broker (and PostgreSQL): the Faust worker (memory and RocksDB
stores) on the pre-loaded backlog, its participant-table recovery from the changelog, end-to-end latency at a
fixed offered rate, and the warehouse sink against a plain COPY of the same rows."""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import requests

from benchmarks.offsets import backlog, committed, end_offsets, ends_of, records, records_present
from sinks.warehouse import db, rows
from sinks.warehouse.models import FACT_TABLES
from streams.config import Settings
from streams.simulator import SimEvent
from streams.simulator.publish import Publisher
from tests.expected import expected_regions
from tests.helpers import stream_messages
from tests.worker import Sink, Worker


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def processed(region_views: dict) -> int:
    """Events applied to the region tables: each registration, contribution and claim moves one counter."""
    total = 0
    for view in region_views.values():
        total += sum(c["registered"] for c in view["cohorts"].values()) + view["contributions"]["count"]
        total += sum(s["count"] for statuses in view["claims"].values() for s in statuses.values())
    return total


def profile_hot_path(session_file: Path, packages: tuple[str, ...] = ("streams", "sinks"), top: int = 15) -> str:
    """The project's own functions in a saved pyinstrument session, by inclusive time (a function counted once per
    call path, at its outermost frame): what the worker spent its time on, apart from waiting in the event loop."""
    from pyinstrument.session import Session
    root = Session.load(str(session_file)).root_frame()
    if root is None:
        return ""
    total = root.time or 1.0
    spent: dict[str, float] = {}

    def walk(frame, open_names: frozenset[str]) -> None:
        path = frame.file_path or ""
        name = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        ours = any(f"/{package}/" in path for package in packages) and "site-packages" not in path
        if ours and name not in open_names:
            spent[name] = spent.get(name, 0.0) + frame.time
            open_names = open_names | {name}
        for child in frame.children:
            walk(child, open_names)

    walk(root, frozenset())
    ranked = sorted(spent.items(), key=lambda item: -item[1])[:top]
    return "\n".join(f"{seconds:8.3f} s {100 * seconds / total:5.1f} %  {name}" for name, seconds in ranked)


def run_worker(settings: Settings, events: list[SimEvent], workdir: Path, advance: Callable[[int], None],
               profile: Path | None = None, workers: int = 1) -> dict:
    """Start ``workers`` workers of one group (each with its own state directory) on the pre-loaded backlog, timed
    from when all are up; done when every input record is accounted for and the group has no backlog on the
    internal topics (several workers: on the input topics too — records re-read around their rebalance are
    accounted twice). Returns the figures; the workers are stopped."""
    # the view equals the fold once the stream clock has passed the last events: at the end of a backlog that
    # waits for the sources to go idle (wall time), not counted in the figures but in the benchmark's duration
    env = {"CLOCK_IDLE_SECONDS": "3", **({"PROFILE_PATH": str(profile)} if profile else {})}
    group = [Worker(settings if n == 0 else settings.model_copy(update={"state_dir": settings.state_dir / f"w{n}"}),
                    workdir / f"worker-{settings.store}{f'-{n}' if n else ''}.log", **env) for n in range(workers)]
    internal = [f"{settings.app_id}-participant-events", f"{settings.app_id}-region-deltas"]
    watched = internal + (list(settings.topics.inputs) if workers > 1 else [])
    total, seen = len(events), 0
    for worker in group:
        worker.start(wait=False)
    for worker in group:
        worker.wait(worker.ready, 180, "the worker to start")
    started = time.perf_counter()

    def all_running() -> None:  # the waits below run on group[0], which checks only its own process
        for worker in group[1:]:
            assert worker.proc.poll() is None, f"a worker exited ({worker.proc.returncode}):\n{worker.tail()}"

    ends: dict = {}  # the watched topics' end offsets once every input record was accounted for

    def done() -> bool:
        """Every input record accounted for (the participant stage counts an event once its deltas and state are
        written), then the group committed up to where the watched topics ended at that moment. Not up to where
        they end *now*: each worker's idle re-check sends a tick to each participant-events partition it holds
        every second (``CLOCK_IDLE_SECONDS`` 3; to every partition, before), Faust commits every 2.8 s, and with
        two workers the topics were never all committed at one poll — a 1M run waited 10 minutes for it
        (2026-11-29)."""
        nonlocal seen
        all_running()
        if not ends:
            accounted = int(sum(sum(worker.events_accounted().values()) for worker in group))
            advance(min(accounted, total) - seen)
            seen = min(accounted, total)
            if accounted < total:
                return False
            # several workers: records re-read around a rebalance are accounted twice, so the count can reach the
            # total early; the inputs (which do not grow) committed to their ends say ingest has sent everything
            now = ends_of(settings, watched)
            inputs = {tp: end for tp, end in now.items() if tp[0] in settings.topics.inputs}
            if workers > 1 and backlog(settings, settings.app_id, ends=inputs):
                return False
            ends.update(now)
        return backlog(settings, settings.app_id, ends=ends) == 0
    group[0].wait(done, 7200, "the workers through the whole backlog")
    seconds = time.perf_counter() - started
    want = expected_regions(events, scale=settings.target_scale)

    def equal() -> bool:  # the web view follows the region changelog: it may trail the table by a moment
        return all(worker.comparable_regions() == want for worker in group)
    try:
        group[0].wait(equal, 60, "the region view to equal the fold")
        same = True
    except AssertionError:
        same = False
    all_running()  # a view not equal because a worker died is a failed run, not a figure
    figures = {"store": settings.store, "workers": workers, "events": total, "seconds": round(seconds, 2),
               "events_per_s": round(total / seconds), "peak_rss_mb": max(peak_rss_mb(w.proc.pid) for w in group),
               "equal_to_fold": same}
    for worker in group:
        worker.stop()
    return figures


def log_time(log: Path, text: str) -> datetime:
    """When Faust logged the first line containing ``text`` ("[2026-11-24 02:12:03,929] [pid] [INFO] ...")."""
    for line in log.read_text(errors="replace").splitlines():
        if text in line:
            return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
    raise ValueError(f"{text!r} not in {log}")


def restore_seconds(log: Path) -> float:
    """How long Faust restored tables, by its own log lines: "Highwater for active changelog partitions" (the
    first step of a recovery: the bulk read of streams/faust_fixes.py follows it, Faust's own "Restoring state
    from changelog topics" only when anything is left) to "Recovery complete"."""
    return (log_time(log, "Recovery complete") - log_time(log, "Highwater for active changelog")).total_seconds()


def restored(settings: Settings, log: Path, start_timeout: float = 600) -> tuple[float, float]:
    """Start a worker of ``settings`` (an empty state directory), stop it once it has recovered: its restore
    seconds (``restore_seconds``) and the whole restart (process start to recovered)."""
    worker = Worker(settings, log)
    started = time.perf_counter()
    worker.start(timeout=start_timeout)
    worker.wait(lambda: "Recovery complete" in log.read_text(errors="replace"), 1800, "recovery")
    restart = time.perf_counter() - started
    worker.stop()
    return restore_seconds(log), restart


def recovery(settings: Settings, workdir: Path) -> dict:
    """A worker with an empty state directory restores every table from the changelogs (all of them: Faust
    restores them together; the participant table is most of the records): its restore seconds and the whole
    restart (``restored``)."""
    changelogs = [f"{settings.app_id}-{table}-changelog" for table in ("participants", "regions", "watermarks",
                                                                        "clocks")]
    present = records_present(settings, changelogs)  # what the restore reads (the broker compacts meanwhile)
    fresh = settings.model_copy(update={"state_dir": workdir / f"recovery-{uuid.uuid4().hex[:6]}"})
    seconds, restart = restored(fresh, workdir / "worker-recovery.log")
    return {"seconds": round(seconds, 2), "restart_seconds": round(restart, 2),
            "participant_changelog_written": end_offsets(settings, changelogs[:1]),
            "changelog_records": present, "changelog_written": end_offsets(settings, changelogs)}


def restore_of_keys(source: Settings, app_id: str, workdir: Path, keys: int, progress: Callable[[int], None]) -> dict:
    """The participant-table restore target as stated (``keys`` participants, an empty disk), measured instead of
    extrapolated: the participant states the ``source`` run left in its changelog (the newest per key) are written
    again under ``keys`` new pseudonym-shaped keys, one record per key (a compacted changelog; how compacted the
    run's own changelog was is ``recovery``'s records per key), each on its key's partition as the worker puts it,
    in the changelog of app ``app_id`` (new); then a worker of that app with an empty state directory restores it, with
    each store. Returns {store: seconds} (Faust's log lines, as ``recovery``) and the bytes written."""
    import hashlib
    import json

    from confluent_kafka import Producer

    from streams.ingest import pe_partition
    from streams.topics import CHANGELOG_CONFIG, ensure_topics
    partitions = source.topic_partitions
    states = {m.key(): m.value() for m in records(source, [f"{source.app_id}-participants-changelog"])}
    values = [value for value in states.values() if value is not None]  # the newest per key, tombstones not
    target = source.model_copy(update={"app_id": app_id, "topic_prefix": f"{app_id}."})  # inputs empty
    topic = f"{target.app_id}-participants-changelog"
    ensure_topics(target, extra={topic: CHANGELOG_CONFIG})
    producer = Producer({**target.librdkafka_conf(), "linger.ms": 50, "batch.size": 1 << 20,
                         "enable.idempotence": True})
    written = 0
    for i in range(keys):
        key = hashlib.sha256(f"restore-{i}".encode()).hexdigest()  # the shape of a pseudonym (an HMAC in hex)
        value = values[i % len(values)]
        record = json.dumps(key).encode()
        while True:
            try:
                producer.produce(topic, key=record, value=value, partition=pe_partition(key, partitions))
                break
            except BufferError:
                producer.poll(0.1)
        written += len(record) + len(value)
        if i % 10_000 == 9_999:
            producer.poll(0)
            progress(10_000)
    producer.flush()
    out = {"keys": keys, "bytes": written, "states_sampled": len(values)}
    for store in ("memory", "rocksdb"):
        seconds, _ = restored(target.model_copy(update={"store": store, "state_dir": workdir / f"restore-{store}"}),
                              workdir / f"worker-restore-{store}.log", start_timeout=900)
        out[store] = round(seconds, 2)
    progress(keys % 10_000)
    return out


def latency(settings: Settings, worker: Worker, events: list[SimEvent], rate: float, warmup: int = 0,
            watch: str = "stream") -> dict:
    """Publish ``events`` at ``rate`` per second to a running worker; the latency of event i is the time from its
    publication until the region tables (the worker's /regions) have applied i + 1 events past the baseline.
    ``watch``: how the figures are seen — ``stream`` follows ``/regions/stream`` (each change pushed as the live
    page gets it), ``poll`` asks ``GET /regions`` every 20 ms.
    ``worker`` must be ready (``/readyz``), not only alive: publishing from when ``/healthz`` answered, the first
    second's records waited for Faust's fetcher to start (500 events/s: ingest reached them up to 1.3 s after
    the broker appended them; from ``/readyz``, 3.5 s later, none over 0.4 s, 2026-11-29). The first ``warmup``
    events then go first, at the rate, and are waited for, not measured: the latency at a rate, not a start."""
    publisher = Publisher(settings, **{"linger.ms": 5})
    if warmup:
        before = processed(worker.regions())
        publish_at(publisher, events[:warmup], rate)
        deadline = time.perf_counter() + 300
        while processed(worker.regions()) - before < warmup and time.perf_counter() < deadline:
            time.sleep(0.1)
        events = events[warmup:]
    base = processed(worker.regions())
    timeline: list[tuple[float, int]] = []
    stop = threading.Event()
    if watch not in ("stream", "poll"):
        raise ValueError(f"watch: stream or poll, not {watch!r}")

    def poll() -> None:
        while not stop.is_set():
            try:
                timeline.append((time.perf_counter(), processed(worker.regions()) - base))
            except Exception:  # a poll that fails is just a missing sample
                pass
            time.sleep(0.02)

    following = requests.get(worker.url("/regions/stream"), stream=True, timeout=60) if watch == "stream" else None

    def follow() -> None:
        try:
            for views in stream_messages(following, timeout=float("inf")):
                timeline.append((time.perf_counter(), processed({r["code"]: r for r in views}) - base))
                if stop.is_set():
                    return
        except Exception:  # closed below, or the worker went away: the timeline ends there
            return
    watcher = threading.Thread(target=follow if following is not None else poll, daemon=True)
    watcher.start()
    wall = time.time() - time.perf_counter()  # perf_counter -> wall clock (the records' timestamps)
    start = time.perf_counter()
    sent = publish_at(publisher, events, rate)
    deadline = time.perf_counter() + 300
    while (not timeline or timeline[-1][1] < len(events)) and time.perf_counter() < deadline:
        time.sleep(0.1)
    stop.set()
    if following is not None:
        following.close()  # the follower returns at its next line (a change, or the stream's 15 s comment)
    watcher.join(1)
    latencies, j = [], 0
    for i, t in enumerate(sent):
        while j < len(timeline) and timeline[j][1] < i + 1:
            j += 1
        if j == len(timeline):
            break
        latencies.append(timeline[j][0] - t)
    steady = latencies[len(latencies) // 10:]
    return {"offered_per_s": rate, "warmup_events": warmup, "events": len(events), "measured": len(latencies),
            "achieved_per_s": round(len(events) / (sent[-1] - start)), "p50_ms": percentile_ms(latencies, 0.50),
            "p99_ms": percentile_ms(latencies, 0.99),
            # without the run's first tenth: what the pipeline's start still holds (before the harness waited for
            # /readyz, the first second after it started publishing set the p99)
            "after_first_tenth": {"p50_ms": percentile_ms(steady, 0.50), "p99_ms": percentile_ms(steady, 0.99)},
            "hops": hops(settings, events, [wall + t for t in sent])}


def publish_at(publisher: Publisher, events: list[SimEvent], rate: float) -> list[float]:
    """Send ``events`` at ``rate`` per second (event i at i / rate from the start) and flush; returns when each
    was sent (``time.perf_counter``). Encoded before the first is sent, so that the paced loop only sends: the
    Avro encoding is 8.3 µs an event, ~0.04 of a core at 4,866 events/s that competed with the worker and the
    broker for the machine's two cores (three alternating rounds at that rate: the harness's CPU over the run 0.26–
    0.27 → 0.21–0.23 of a core, encoding included; the latency moved within its noise, 2026-11-29)."""
    wired = [publisher.wire(event) for event in events]
    sent: list[float] = []
    start = time.perf_counter()
    for i, (topic, key, value) in enumerate(wired):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        publisher.send_wire(topic, key, value)
        sent.append(time.perf_counter())
    publisher.flush()
    return sent


def percentile_ms(seconds: list[float], q: float) -> int | None:
    ordered = sorted(seconds)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000) if ordered else None


def hops(settings: Settings, events: list[SimEvent], sent: list[float]) -> dict:
    """Where the latency is spent, from the records' own timestamps (each set by the producer that wrote it):
    publication → the participant events ingest sent (ingest), and → the first region delta of that
    participant-events message (the participant stage); the rest is the region stage and the read model.
    ``sent``: each event's publication, wall clock."""
    sent_of = {event.record["event_id"]: t for event, t in zip(events, sent)}
    events_topic, deltas_topic = f"{settings.app_id}-participant-events", f"{settings.app_id}-region-deltas"
    message_of: dict[str, tuple[int, int]] = {}  # event id -> its participant-events message
    written: dict[tuple[int, int], float] = {}  # participant-events message -> when it was written
    first_delta: dict[tuple[int, int], float] = {}  # participant-events message -> its first region delta
    for record in records(settings, [events_topic, deltas_topic]):
        at = record.timestamp()[1] / 1000
        if record.topic() == events_topic:
            written[record.partition(), record.offset()] = at
            for value in json.loads(record.value())["events"]:
                if value.get("event_id") in sent_of:
                    message_of[value["event_id"]] = (record.partition(), record.offset())
        else:
            for delta in json.loads(record.value())["deltas"]:
                partition, offset, index = delta["src"]
                if index >= 0:  # ticks are numbered -1
                    first_delta[partition, offset] = min(at, first_delta.get((partition, offset), at))
    ingest = [written[m] - sent_of[e] for e, m in message_of.items()]
    participants = [first_delta[m] - written[m] for m in message_of.values() if m in first_delta]
    return {name: {"p50_ms": percentile_ms(xs, 0.50), "p99_ms": percentile_ms(xs, 0.99), "events": len(xs)}
            for name, xs in (("ingest", ingest), ("participants", participants))}


def run_sink(settings: Settings, total: int, workdir: Path, advance: Callable[[int], None]) -> dict:
    sink = Sink(settings, workdir / "sink.log")
    sink.start(timeout=180)
    started, seen = time.perf_counter(), 0

    def done() -> bool:
        nonlocal seen
        n = sum(committed(settings, settings.sink_group_id, set(settings.topics.inputs)).values())
        advance(n - seen)
        seen = n
        return n >= total
    try:
        sink.wait(done, 7200, "the sink through the backlog")
        seconds = time.perf_counter() - started
    finally:
        sink.stop()
    return {"rows": total, "seconds": round(seconds, 2), "rows_per_s": round(total / seconds)}


def copy_baseline(settings: Settings, events: list[SimEvent], url: str) -> dict:
    """The same fact rows with PostgreSQL's COPY (psycopg), one COPY per table, in one transaction: the floor
    of what writing these rows costs. Rows are built before the clock starts."""
    db.migrate(url)
    key, now = settings.pseudonym_key_bytes(), datetime.now(timezone.utc)
    by_table: dict = {}
    for offset, event in enumerate(events):
        row = rows.fact_row(event.record_name, event.record, key, ("bench", 0, offset), now)
        by_table.setdefault(FACT_TABLES[event.record_name], []).append(row)
    engine = db.make_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        for table, table_rows in by_table.items():
            db.copy_rows(conn, table.name, list(table_rows[0]), table_rows)
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"rows": len(events), "seconds": round(seconds, 2), "rows_per_s": round(len(events) / seconds)}
