"""`jamsostek`: one entry point for the local stack, the simulator and (later) the workers."""
from __future__ import annotations

import os
import shutil
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from streams import privacy
from streams.commands import ConfigOpt, LogLevel, LogLevelOpt, add_plugins, console, fail, safe_url, settings_from
from streams.config import Settings

app = typer.Typer(help="Live BPJS Ketenagakerjaan coverage for East Kalimantan, on Kafka + Faust.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
DEBUG_ENV = "JAMSOSTEK_DEBUG"  # set to 1 for a full traceback instead of the one-line error


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            number = version("kaltim-jamsostek-stream")
        except PackageNotFoundError:  # run from a checkout without installing
            import tomllib

            from streams.config import PROJECT_ROOT
            number = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
        typer.echo(f"jamsostek {number}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="print the version and exit")) -> None:
    """Live BPJS Ketenagakerjaan coverage for East Kalimantan, on Kafka + Faust."""


def main() -> None:
    """The `jamsostek` entry point: usage errors exit 2 (click), runtime errors print one readable line and exit 1
    (``JAMSOSTEK_DEBUG=1`` shows the traceback)."""
    try:
        app()
    except Exception as exc:  # anything a command did not handle itself
        if os.environ.get(DEBUG_ENV):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        console.print(f"[red]error:[/] {type(exc).__name__}{': ' + first if first else ''}  "
                      f"(set {DEBUG_ENV}=1 for the traceback)")
        sys.exit(1)


@app.command()
def fetch(config: Optional[Path] = ConfigOpt) -> None:
    """Resolve the Kafka and Apicurio Registry jars from Maven into the cache (done once; later starts are offline)."""
    from streams.launcher import LauncherError, maven
    s = settings_from(config)
    try:
        with console.status("resolving org.apache.kafka:kafka_2.13 and its runtime dependencies ..."):
            cp = maven.kafka_classpath(s.cache_dir, s.kafka_version)
        console.print(f"[green]✓[/] Kafka {s.kafka_version}: {cp}")
        with console.status("resolving io.apicurio:apicurio-registry-app ..."):
            home = maven.apicurio_home(s.cache_dir, s.apicurio_version)
        console.print(f"[green]✓[/] Apicurio Registry {s.apicurio_version}: {home}")
    except LauncherError as exc:
        fail(exc)


@app.command()
def broker(config: Optional[Path] = ConfigOpt,
           fresh: bool = typer.Option(False, help="delete the stack's stored data first")) -> None:
    """Run Kafka (KRaft) + the schema registry in the foreground until Ctrl-C."""
    from streams.launcher import LauncherError
    from streams.launcher.stack import local_stack
    from streams.topics import ensure_topics
    s = settings_from(config)
    if fresh:
        shutil.rmtree(s.state_dir, ignore_errors=True)
    _stop_on_signals()
    try:
        with local_stack(s, console) as live:
            ensure_topics(live)
            _print_endpoints(live)
            console.print("Ctrl-C stops the stack.")
            _wait_for_a_stop_signal()
    except KeyboardInterrupt as stopped:
        console.print(f"stopped ({stopped})")
    except LauncherError as exc:
        fail(exc)


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt wherever the command is (starting, running), so every ``finally``
    and context manager on the way out stops the children it started. Once stopping, further signals are ignored:
    a second Ctrl-C or a supervisor's repeated TERM must not cut the clean-up short and orphan a broker."""
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _wait_for_a_stop_signal() -> None:
    while True:
        signal.pause()


def _ensure_topics_or_fail(s: Settings) -> list[str]:
    """The contract's topics, or one readable line when no broker answers within 5 s."""
    from streams.topics import BrokerUnreachable, ensure_topics
    try:
        return ensure_topics(s, probe_seconds=5)
    except BrokerUnreachable as exc:
        fail(f"{exc}; is Kafka running? (`jamsostek broker` starts one locally)")


def _print_endpoints(s: Settings) -> None:
    console.print(f"  KAFKA_BOOTSTRAP_SERVERS={s.kafka_bootstrap_servers}")
    console.print(f"  SCHEMA_REGISTRY_URL={s.schema_registry_url}")
    console.print(f"  watch it:  kcat -C -b {s.kafka_bootstrap_servers} -t {s.topics.registrations} -f '%k %s\\n' -o end")


@app.command()
def topics(config: Optional[Path] = ConfigOpt) -> None:
    """Create the contract's topics on the configured broker (idempotent)."""
    created = _ensure_topics_or_fail(settings_from(config))
    console.print(f"created: {', '.join(created) or 'nothing (all exist)'}")


@app.command()
def simulate(
    config: Optional[Path] = ConfigOpt,
    months: Optional[int] = typer.Option(None, min=1, help="months of history to replay (default: the scenario's)"),
    rate: float = typer.Option(0, min=0, help="events/s while replaying history; 0 = as fast as possible"),
    live_rate: float = typer.Option(0, "--live", min=0, help="after the history, go on live at this many events/s"),
    seed: Optional[int] = typer.Option(None, help="random seed (default: the scenario's)"),
    scale: Optional[float] = typer.Option(None, min=0.0001, max=10.0,
                                          help="size relative to the real province (1.0 = ~250k people)"),
    bad_share: float = typer.Option(0.0, min=0.0, max=1.0, help="share of extra, deliberately invalid records (0-1)"),
    duplicate_share: float = typer.Option(0.0, min=0.0, max=1.0,
                                          help="share of records re-sent with the same event_id (0-1)"),
    scenario_file: Optional[Path] = typer.Option(None, "--scenario", exists=True, help="scenario TOML"),
) -> None:
    """Publish a realistic, seeded, event-time-ordered stream of Kaltim events."""
    from streams.simulator.publish import run_simulation
    from streams.simulator.scenario import SCENARIO_FILE, Scenario
    s = settings_from(config)
    sc = Scenario.load(scenario_file or SCENARIO_FILE, seed=seed, scale=scale, bad_share=bad_share,
                       duplicate_share=duplicate_share)
    _ensure_topics_or_fail(s)
    try:
        stats = run_simulation(s, sc, months=months, rate=rate, live_rate=live_rate)
    except KeyboardInterrupt:
        console.print("interrupted")
        return
    _print_stats(stats)


def _print_stats(stats) -> None:
    console.print(f"published {stats.sent:,} events in {stats.seconds:.1f}s ({stats.rate:,.0f}/s): "
                  + ", ".join(f"{t} {n:,}" for t, n in sorted(stats.by_topic.items())))


@app.command()
def regions(on: Optional[str] = typer.Option(None, help="the month (YYYY-MM) whose quotas and targets to show; "
                                              "dated changes such as an APBD-P apply from their month (default: "
                                              "this month)")) -> None:
    """The 10 regions with their targets and quotas in force in a month (reference data)."""
    from streams.reference import reference
    from streams.rules import period_index
    from streams.validation import Invalid, parse_period
    ref = reference()
    month = on or datetime.now(timezone.utc).strftime("%Y-%m")
    try:
        parse_period(month)  # the contract's YYYY-MM check
    except Invalid:
        raise typer.BadParameter(f"{month!r} is not a month (YYYY-MM)", param_hint="--on") from None
    period = period_index(month)
    table = Table(title=f"Kaltim regions in {month} — province quota {ref.province_quota:,} "
                        f"({ref.programme_start} … {ref.programme_end})")
    for col in ("code", "name", "kind", "population", "province quota", "regency/city quota", "other funders",
                "vulnerable target", "non-ASN target"):
        table.add_column(col, justify="right" if col not in ("name", "kind", "other funders") else "left")
    for r in ref.regions.values():
        quota, target = r.quota_at(period), r.target_at(period)
        others = ", ".join(f"{funder} {n:,}" for funder, n in quota.items()
                           if funder not in ("APBD_PROVINCE", "APBD_REGENCY"))
        table.add_row(r.code, r.name, r.kind, f"{r.population:,}", f"{quota.get('APBD_PROVINCE', 0):,}",
                      f"{quota.get('APBD_REGENCY', 0):,}", others, f"{target.get('VULNERABLE_WORKER', 0):,}",
                      f"{target.get('NON_CIVIL_SERVANT', 0):,}")
    Console().print(table)


@app.command()
def worker(config: Optional[Path] = ConfigOpt,
           loglevel: LogLevel = LogLevelOpt) -> None:
    """Run a stream worker: decode, validate, keep the participant and region tables, serve /regions and /metrics."""
    import faulthandler
    from streams.app import create_app, tune_allocator, tune_collector
    from streams.topics import app_topics, ensure_topics
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # until the loop runs: then streams/stacks.py's dump
    privacy.install_log_scrubber()
    s = settings_from(config)
    tune_collector(s)  # before the tables fill (streams/app.py)
    tune_allocator(s)  # before any thread starts (streams/app.py)
    if s.event_loop == "uvloop":  # EVENT_LOOP=asyncio to go back (docs/reliability.md, "Open")
        import mode.loop
        mode.loop.use("uvloop")  # before Faust creates its loop (and its consumer thread's)
    try:
        topo = create_app(s)
        ensure_topics(s, extra=app_topics(topo))
    except ValueError as exc:  # e.g. production mode without PSEUDONYM_KEY
        fail(exc)
    from streams.faust_fixes import BoundedStopWorker
    worker = BoundedStopWorker(topo.app, loglevel=loglevel.value, quiet=True, stop_seconds=s.stop_timeout_seconds)
    if s.profile_path is None:
        worker.execute_from_commandline()
        return
    from pyinstrument import Profiler
    profiler = Profiler(interval=0.005)
    profiler.start()
    try:
        worker.execute_from_commandline()
    finally:
        profiler.stop()
        s.profile_path.with_suffix(".html").write_text(profiler.output_html())
        s.profile_path.with_suffix(".txt").write_text(profiler.output_text(unicode=True, show_all=False))
        profiler.last_session.save(str(s.profile_path.with_suffix(".pyisession")))  # pyinstrument --load: re-render


@app.command()
def run(
    config: Optional[Path] = ConfigOpt,
    live_rate: float = typer.Option(40, "--live", help="events/s once the history is replayed"),
    months: Optional[int] = typer.Option(None, help="months of history to replay first"),
    fresh: bool = typer.Option(False, help="delete the stack's stored data first"),
) -> None:
    """Everything locally: Kafka, the schema registry, a worker, the warehouse sink, and the simulator feeding
    live events. The web page, /regions and /metrics stay up until Ctrl-C."""
    from streams.launcher import LauncherError, process
    from streams.launcher.stack import local_stack
    from streams.simulator.publish import run_simulation
    from streams.simulator.scenario import Scenario
    from streams.topics import ensure_topics
    s = settings_from(config)
    if fresh:
        shutil.rmtree(s.state_dir, ignore_errors=True)
    scenario = Scenario.load()
    _stop_on_signals()
    children = []
    try:
        for port, what in ((s.web_port, "the worker's web page"), (s.metrics_port, "the worker's metrics"),
                           (s.sink_metrics_port, "the sink's metrics")):
            process.require_free(port, what)
        with local_stack(s, console) as live:
            # targets scaled like the simulation; its clock runs ahead of real time once live: no future bound
            live = live.model_copy(update={"target_scale": scenario.scale, "max_future_days": 365_000,
                                           "simulated": True})
            ensure_topics(live)
            for command in ("worker", "sink"):
                log = live.state_dir / f"{command}.log"
                children.append(process.spawn([sys.executable, "-m", "streams.cli", command], log, env=live.as_env()))
                console.print(f"[green]✓[/] {command} started (log: {log})")
            _print_endpoints(live)
            console.print(f"  web page:  http://127.0.0.1:{live.web_port}/   (JSON: /regions/)")
            console.print(f"  metrics:   http://127.0.0.1:{live.metrics_port}/metrics  and  "
                          f"http://127.0.0.1:{live.sink_metrics_port}/metrics (sink)")
            console.print(f"  warehouse: {safe_url(live.warehouse_url)}")
            try:
                run_simulation(live, scenario, months=months, live_rate=live_rate)
                console.print("history replayed; Ctrl-C stops everything")
                _wait_for_a_stop_signal()
            finally:
                for child in children:
                    process.stop(child, 30)
    except KeyboardInterrupt as stopped:
        console.print(f"stopped ({stopped})")
    except LauncherError as exc:
        fail(exc)


add_plugins(app)  # the warehouse sink's `sink` and `migrate` (sinks/cli.py): streams/ does not import sinks/

if __name__ == "__main__":
    main()
