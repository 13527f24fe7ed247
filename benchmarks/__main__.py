"""`python -m benchmarks [--quick]`: the pipeline, its ceiling and a peer on one pre-loaded backlog, on the real
local broker (and PostgreSQL), started by the project's launcher unless given. Writes benchmarks/results/."""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks import ceiling, faust_floor, ours, peer_quix, report, workload
from streams.config import Settings

RESULTS = Path(__file__).parent / "results"
STATEFUL_FLOOR = "faust floor (a table write per event)"
TWO_WORKERS = "ours (memory, two workers)"
console = Console()
cli = typer.Typer(add_completion=False)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def infrastructure(stack: ExitStack, workdir: Path, bootstrap: str | None, registry: str | None,
                   postgres: str | None) -> tuple[str, str, Callable[[str], str]]:
    """The broker, registry and PostgreSQL to use: given ones, or fresh ones from the project's launcher."""
    from streams.launcher import KafkaBroker, SchemaRegistry
    from streams.launcher.postgres import PostgresServer
    base = Settings()
    if bootstrap is None:
        broker = KafkaBroker.start_new(workdir / "kafka", cache_dir=base.cache_dir, version=base.kafka_version)
        stack.callback(broker.stop)
        bootstrap = broker.bootstrap
    if registry is None:
        reg = SchemaRegistry.start_new(workdir / "registry", bootstrap=bootstrap, cache_dir=base.cache_dir,
                                       version=base.apicurio_version)
        stack.callback(reg.stop)
        registry = reg.url
    if postgres is None:
        server = PostgresServer.start_new(workdir / "postgres")
        stack.callback(server.destroy)
        return bootstrap, registry, server.create_database
    from sqlalchemy import create_engine, text

    def create_database(name: str) -> str:
        engine = create_engine(postgres, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return postgres.rsplit("/", 1)[0] + f"/{name}"
    return bootstrap, registry, create_database


@cli.command()
def main(quick: bool = typer.Option(False, help="a small run (< 2 min): smoke test of the benchmark itself"),
         events: int = typer.Option(1_000_000, help="events in the backlog (20 % of them distinct participants)"),
         partitions: int = typer.Option(4, help="partitions per topic"),
         rate: float = typer.Option(5000, help="offered rate for the latency run (capped at half our backlog throughput)"),
         peer: bool = typer.Option(True, help="run the Quix Streams peer (its own virtualenv, made once)"),
         memory_only: bool = typer.Option(False, "--memory-only", help="only the worker's peak RSS with RocksDB on "
                                          "the backlog and on a tenth of it (1M events: 200k and 20k participants)"),
         out: Path = typer.Option(RESULTS, help="where the JSON, Markdown and PNG go"),
         keep: bool = typer.Option(False, help="keep the work directory (logs, state) for a look afterwards"),
         bootstrap: Optional[str] = typer.Option(None, help="use this broker instead of starting one"),
         registry: Optional[str] = typer.Option(None, help="use this schema registry instead of starting one"),
         postgres: Optional[str] = typer.Option(None, help="use this PostgreSQL server (URL of a database to "
                                                "connect to for CREATE DATABASE) instead of starting one")) -> None:
    """Measure and print ratios: ours / the raw ceiling, ours / Quix Streams, sink / COPY; latency, recovery, memory."""
    if quick:
        events = min(events, 4_000)
    clock = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with ExitStack() as stack, Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                                        TimeElapsedColumn(), console=console) as progress:
        workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        if not keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        else:
            console.print(f"work directory: {workdir}")
        task = progress.add_task("starting broker, registry, PostgreSQL", total=1)
        bootstrap, registry, create_database = infrastructure(stack, workdir, bootstrap, registry, postgres)
        progress.update(task, completed=1)

        def bar(description: str, total: int):
            task = progress.add_task(description, total=total)
            return lambda n: progress.advance(task, n)

        def settings_for(topics: str, **changes) -> Settings:
            return Settings(kafka_bootstrap_servers=bootstrap, schema_registry_url=registry, topic_prefix=topics,
                            topic_partitions=partitions, state_dir=workdir / "state", target_scale=1.0,
                            app_id=unique("bench-"), **changes)

        task = progress.add_task("generating the workload", total=1)
        backlog = workload.generate(events)
        progress.update(task, completed=1)
        main_topics = unique("b") + "."
        base = settings_for(main_topics)
        workload.preload(base, backlog, bar("pre-loading the topics", len(backlog)))
        results = {"name": "quick" if quick else f"run-{len(backlog)}", "started": started, "mode": "quick" if quick
                   else "full", "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}", "partitions": partitions, "workload": workload.mix(backlog),
                   "throughput": {}}
        tp = results["throughput"]
        if memory_only:
            big = ours.run_worker(base.model_copy(update={"store": "rocksdb"}), backlog, workdir,
                                  bar("ours: Faust worker, RocksDB", len(backlog)))
            small = workload.generate(max(len(backlog) // 10, 1000), seed=7)
            small_settings = settings_for(unique("s") + ".", store="rocksdb")
            workload.preload(small_settings, small)
            figures = ours.run_worker(small_settings, small, workdir, bar("ours: a tenth, RocksDB", len(small)))
            results.update(name=f"memory-{len(backlog)}", mode="memory only", memory=[
                {"store": "rocksdb", "participants": workload.mix(small)["participants"],
                 "peak_rss_mb": figures["peak_rss_mb"], "equal_to_fold": figures["equal_to_fold"]},
                {"store": "rocksdb", "participants": results["workload"]["participants"],
                 "peak_rss_mb": big["peak_rss_mb"], "equal_to_fold": big["equal_to_fold"]}])
            growth = report.ratio(big["peak_rss_mb"], figures["peak_rss_mb"])
            results["ratios"] = {"RocksDB RSS growth, 10x participants": (growth, "≤ 1.2")}
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"{results['name']}.json"
            path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
            for row in results["memory"]:
                console.print(f"{row['participants']:,} participants: peak RSS {row['peak_rss_mb']} MB "
                              f"(equal to the fold: {row['equal_to_fold']})")
            console.print(f"RocksDB RSS growth, 10x participants: [bold]{growth}[/] (target ≤ 1.2); written: {path}")
            if not (big["equal_to_fold"] and figures["equal_to_fold"]):
                raise typer.Exit(1)
            return
        tp["ceiling"] = ceiling.run(base, len(backlog), bar("ceiling: consume + decode", len(backlog)))
        tp["faust floor (no-op agent)"] = faust_floor.run(base, len(backlog), workdir,
                                                           bar("Faust floor: a no-op agent", len(backlog)))
        tp[STATEFUL_FLOOR] = faust_floor.run(base, len(backlog), workdir,
                                             bar("Faust floor: a table write per event", len(backlog)), table=True)
        if peer:
            tp["quix streams"] = peer_quix.run(base, backlog, workdir, bar("peer: Quix Streams", len(backlog)))
        memory_settings = base.model_copy(update={"app_id": unique("bench-"), "store": "memory"})
        tp["ours (memory)"] = ours.run_worker(memory_settings, backlog, workdir,
                                              bar("ours: Faust worker, memory", len(backlog)))
        task = progress.add_task("ours: participant-table recovery", total=1)
        rec = ours.recovery(memory_settings, workdir)
        participants = results["workload"]["participants"]
        per_s = rec["changelog_records"] / max(rec["seconds"], 0.001)
        # the changelog holds more records than keys (updates not yet compacted); a key is at least one record
        rec.update(participants=participants, records_per_s=round(per_s),
                   one_million_keys_s=round(1_000_000 / per_s * rec["changelog_records"] / participants, 1))
        results["recovery"] = rec
        progress.update(task, completed=1)
        # the restore target as stated: a changelog of 1M participants' states on an empty disk, both stores
        keys = 20_000 if quick else 1_000_000
        results["restore_keys"] = ours.restore_of_keys(memory_settings, unique("bench-"), workdir, keys,
                                                       bar(f"ours: restore of {keys:,} keys", keys))
        rocks = base.model_copy(update={"app_id": unique("bench-"), "store": "rocksdb"})
        tp["ours (rocksdb)"] = ours.run_worker(rocks, backlog, workdir, bar("ours: Faust worker, RocksDB",
                                                                              len(backlog)))
        # the group of two the second target names (each its own process and state directory)
        two = base.model_copy(update={"app_id": unique("bench-"), "store": "memory"})
        tp[TWO_WORKERS] = ours.run_worker(two, backlog, workdir, bar("ours: two workers, memory", len(backlog)),
                                          workers=2)

        # memory as participants grow 10x: the same workload at a tenth, for both stores
        small = workload.generate(max(len(backlog) // 10, 1000), seed=7)
        small_settings = settings_for(unique("s") + ".")
        workload.preload(small_settings, small)
        results["memory"], growth = [], {}
        # (two more worker runs: minutes of fixed start-up cost that a smoke test of the benchmark does not need)
        for store, big in () if quick else (("memory", tp["ours (memory)"]), ("rocksdb", tp["ours (rocksdb)"])):
            figures = ours.run_worker(small_settings.model_copy(update={"app_id": unique("bench-"), "store": store}),
                                      small, workdir, bar(f"ours: a tenth, {store}", len(small)))
            results["memory"] += [{"store": store, "participants": workload.mix(small)["participants"],
                                   "peak_rss_mb": figures["peak_rss_mb"]},
                                  {"store": store, "participants": participants, "peak_rss_mb": big["peak_rss_mb"]}]
            growth[store] = report.ratio(big["peak_rss_mb"], figures["peak_rss_mb"])
        # the CPU profile: its own run at a tenth (a profiler slows the worker ~2x and adds to its memory)
        profile = workdir / "profile"
        ours.run_worker(small_settings.model_copy(update={"app_id": unique("bench-")}), small, workdir,
                        bar("ours: a tenth, CPU profile", len(small)), profile)
        session = profile.with_suffix(".pyisession")
        results["profile"] = ours.profile_hot_path(session) if session.exists() else ""

        # latency at a fixed offered rate: a fresh pipeline, events published at the rate while it runs
        offered = round(min(rate, 0.5 * tp["ours (memory)"]["events_per_s"]))  # at 80 % a queue built up: p50 14 s
        warmup = int(offered * (1 if quick else 2))  # about a second or two, not measured (ours.latency)
        live = workload.generate(max(int(offered * (3 if quick else 20)), 500) + warmup, seed=11)
        live_settings = settings_for(unique("l") + ".")
        workload.preload(live_settings, [])
        task = progress.add_task(f"ours: latency at {offered:,}/s", total=1)
        worker = ours.Worker(live_settings, workdir / "worker-latency.log").start(timeout=180)
        try:
            worker.wait(worker.ready_to_work, 180, "the worker ready (/readyz)")
            results["latency"] = ours.latency(live_settings, worker, live, offered, warmup)
        finally:
            worker.stop()
        progress.update(task, completed=1)

        sink_settings = base.model_copy(update={"warehouse_url": create_database(unique("wh")),
                                                "app_id": unique("bench-")})
        results["sink"] = {"sink": ours.run_sink(sink_settings, len(backlog), workdir,
                                                 bar("sink → PostgreSQL", len(backlog)))}
        task = progress.add_task("COPY of the same rows", total=1)
        results["sink"]["copy"] = ours.copy_baseline(base, backlog, create_database(unique("copy")))
        progress.update(task, completed=1)

    best = tp["ours (memory)"]["events_per_s"]
    peer_rate = tp.get("quix streams", {}).get("events_per_s")
    copy_rate = results["sink"]["copy"]["rows_per_s"]
    results["ratios"] = {
        "ours / ceiling": (report.ratio(best, tp["ceiling"]["events_per_s"]), "≥ 0.5"),
        "ours / Quix Streams": (report.ratio(best, peer_rate), "≥ 5"),
        "ours, two workers / ceiling": (report.ratio(tp[TWO_WORKERS]["events_per_s"], tp["ceiling"]["events_per_s"]),
                                        "≥ 0.7"),
        "Faust floor / ceiling": (report.ratio(tp["faust floor (no-op agent)"]["events_per_s"],
                                               tp["ceiling"]["events_per_s"]), "(what Faust leaves)"),
        "Faust stateful floor / Quix Streams": (report.ratio(tp[STATEFUL_FLOOR]["events_per_s"], peer_rate),
                                                "(the most ours / Quix can be)"),
        "sink / COPY": (report.ratio(results["sink"]["sink"]["rows_per_s"], copy_rate), "≥ 0.5"),
        # consuming + decoding (the ceiling) and COPY-ing (the baseline) one after the other, in one process
        "one-process sink bound / COPY": (report.ratio(1 / (1 / tp["ceiling"]["events_per_s"] + 1 / copy_rate),
                                                       copy_rate), "(the most for a one-process sink)"),
        f"restore of {results['restore_keys']['keys']:,} keys, memory store (s)": (
            results["restore_keys"]["memory"], "< 30" if results["restore_keys"]["keys"] == 1_000_000 else ""),
        f"restore of {results['restore_keys']['keys']:,} keys, RocksDB store (s)": (
            results["restore_keys"]["rocksdb"], "< 30" if results["restore_keys"]["keys"] == 1_000_000 else ""),
        "recovery of 1M keys, extrapolated from this run's changelogs (s)": (
            results["recovery"]["one_million_keys_s"], "(records per key as the run left them)"),
        "Faust's own restore of 1M one-record keys (s)": (
            round(1_000_000 / max(tp[STATEFUL_FLOOR]["restore"]["records_per_s"], 1), 1), "(the baseline)"),
        # records/s of our restore (bulk read, our table values) over Faust's own loop (trivial values)
        "restore rate / Faust's own loop": (report.ratio(results["recovery"]["records_per_s"],
                                                         tp[STATEFUL_FLOOR]["restore"]["records_per_s"]), "> 1"),
        "RocksDB RSS growth, 10x participants": (growth.get("rocksdb", "not measured with --quick"), "≈ 1 (flat)"),
    }
    results["seconds_total"] = round(time.perf_counter() - clock, 1)
    paths = report.write(results, out)
    table = Table(title=f"benchmark {results['name']}: {len(backlog):,} events")
    for column in ("run", "events/s", "peak RSS MB", "equal to the fold"):
        table.add_column(column)
    for name, row in tp.items():
        table.add_row(name, f"{row['events_per_s']:,}", str(row.get("peak_rss_mb", "")), str(row.get("equal_to_fold", "")))
    console.print(table)
    for name, (value, target) in results["ratios"].items():
        console.print(f"{name}: [bold]{value}[/] (target {target})")
    console.print("written: " + ", ".join(str(p) for p in paths))
    unequal = [name for name, row in tp.items() if row.get("equal_to_fold") is False]
    if unequal:
        console.print(f"[red]results differ from the independent fold: {unequal}[/]")
        raise typer.Exit(1)


if __name__ == "__main__":
    cli()
