"""The `jamsostek` CLI as a user runs it: subprocesses, real broker, kcat."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.launcher.process import free_port, port_in_use
from tests.helpers import descendants, still_running, wait_for

JAMSOSTEK = [sys.executable, "-m", "streams.cli"]


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*JAMSOSTEK, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def env_for(settings) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "SCHEMA_REGISTRY_URL": settings.schema_registry_url, "TOPIC_PREFIX": settings.topic_prefix}


def total_records(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return sum(consumer.end_offsets([TopicPartition(topic, p) for p in parts]).values())
    finally:
        consumer.close()


def test_help_and_regions_table():
    commands = ("run", "broker", "worker", "sink", "migrate", "simulate", "regions", "fetch", "topics")
    calls = [("--help",), *((command, "--help") for command in commands), ("regions",),
             ("regions", "--on", "2024-12"), ("regions", "--on", "2025-01"), ("regions", "--on", "2025-13")]
    with ThreadPoolExecutor(4) as pool:  # separate processes, side by side: ~1 s of start-up each
        out, *subs, table, before, after, bad = pool.map(lambda args: cli(*args), calls)
    assert out.returncode == 0
    for command, sub in zip(commands, subs):
        assert command in out.stdout
        assert sub.returncode == 0 and "Usage" in sub.stdout, command
    assert table.returncode == 0
    assert "Mahakam Ulu" in table.stdout and "100,000" in table.stdout and "19,000" in table.stdout
    kutim = lambda run: next(line for line in run.stdout.splitlines() if "Kutai Timur" in line)  # noqa: E731
    assert "95,000" not in kutim(before) and "95,000" in kutim(after)  # the regency's programme, dated
    assert "160,000" in kutim(after)
    assert bad.returncode != 0 and "not a month" in bad.stderr + bad.stdout


def test_bad_config_file_is_a_readable_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('topic_partitions = "many"\n')
    out = cli("topics", "--config", str(bad))
    assert out.returncode == 2
    assert "configuration error" in out.stderr and "topic_partitions" in out.stderr
    assert "Traceback" not in out.stderr


def test_version():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip().startswith("jamsostek 0.")


@pytest.mark.parametrize("args, says", [
    (("worker", "--loglevel", "loud"), "'loud' is not one of"),
    (("sink", "--loglevel", "loud"), "'loud' is not one of"),
    (("simulate", "--bad-share", "3"), "--bad-share"),
    (("simulate", "--duplicate-share", "-0.5"), "--duplicate-share"),
    (("simulate", "--scale", "0"), "--scale"),
    (("simulate", "--months", "0"), "--months"),
    (("simulate", "--live", "-1"), "--live"),
])
def test_bad_options_are_usage_errors_before_anything_starts(args, says, tmp_path):
    out = cli(*args, env={"STATE_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, timeout=60)
    assert out.returncode == 2, out.stderr
    assert says in out.stderr and "Traceback" not in out.stderr


def test_no_broker_is_a_one_line_runtime_error(tmp_path):
    port = free_port()  # nothing listens there
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "STATE_DIR": str(tmp_path), "COLUMNS": "80"}
    runs = [subprocess.Popen([*JAMSOSTEK, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for args in (("topics",), ("simulate", "--months", "1"))]  # side by side: each waits for the broker
    for proc in runs:
        stdout, stderr = proc.communicate(timeout=90)
        out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 1, out.stderr
        assert len(lines) == 1 and f"no Kafka broker answered at 127.0.0.1:{port}" in lines[0], out.stderr
        assert "Traceback" not in out.stderr


def test_migrate_goes_down_only_when_confirmed(tmp_path):
    import sqlite3
    url = f"sqlite:///{tmp_path / 'w.db'}"

    def tables() -> set[str]:
        with sqlite3.connect(tmp_path / "w.db") as db:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert cli("migrate", env={"WAREHOUSE_URL": url}).returncode == 0
    assert "fact_registration" in tables()
    for revision in ("-1", "base"):  # `-1` is a revision, not an unknown option
        refused = cli("migrate", revision, env={"WAREHOUSE_URL": url})  # no terminal to ask on: refused
        assert refused.returncode == 2 and "--yes" in refused.stderr and "Traceback" not in refused.stderr
        assert "fact_registration" in tables()
    # at a terminal it asks; "n" keeps the tables
    import pty
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(sys.executable, [*JAMSOSTEK, "migrate", "base"], {**os.environ, "WAREHOUSE_URL": url})
    seen = b""
    deadline = time.monotonic() + 60
    while b"drops tables" not in seen and time.monotonic() < deadline:
        seen += os.read(fd, 1024)
    os.write(fd, b"n\n")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert b"Downgrade the warehouse" in seen and os.waitstatus_to_exitcode(status) == 1
    assert "fact_registration" in tables()
    done = cli("migrate", "-1", "--yes", env={"WAREHOUSE_URL": url})  # one step down: the breakdowns go
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(tmp_path / "w.db") as db:
        assert not db.execute("SELECT name FROM sqlite_master WHERE type = 'view'").fetchall()
        assert "district" not in {r[1] for r in db.execute("PRAGMA table_info(fact_registration)")}
    done = cli("migrate", "base", "--yes", env={"WAREHOUSE_URL": url})
    assert done.returncode == 0, done.stderr
    assert "fact_registration" not in tables()


def test_config_file_and_env_precedence(tmp_path, monkeypatch):
    from streams.config import Settings
    f = tmp_path / "c.toml"
    f.write_text('topic_prefix = "file."\ntopic_partitions = 6\n')
    monkeypatch.setenv("JAMSOSTEK_CONFIG", str(f))
    monkeypatch.setenv("TOPIC_PREFIX", "env.")
    s = Settings()
    assert (s.topic_prefix, s.topic_partitions) == ("env.", 6)
    assert s.topics.claims == "env.jamsostek.claims"
    assert Settings(topic_prefix="kw.").topic_prefix == "kw."


def test_simulate_command_publishes(settings):
    out = cli("simulate", "--months", "1", "--bad-share", "0.01", env=env_for(settings))
    assert out.returncode == 0, out.stderr
    assert "published" in out.stderr
    assert total_records(settings.kafka_bootstrap_servers, settings.topics.contributions) > 100


def test_fetch_needs_no_network_the_second_time(base_settings):
    """With jars cached, `fetch` succeeds even with Maven unreachable (no `mvn` on PATH)."""
    assert cli("fetch").returncode == 0
    out = cli("fetch", env={"PATH": "/nonexistent"})
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("kcat") is None, reason="Debian kcat not installed (scripts/bootstrap.sh installs it)")
def test_run_brings_up_the_stack_and_kcat_sees_framed_avro(tmp_path):
    """The README's run command: broker + registry + simulator; `kcat -C` shows Confluent-framed Avro flowing."""
    port, registry_port = free_port(), free_port()
    web, metrics, sink_metrics = free_port(), free_port(), free_port()
    warehouse = tmp_path / "warehouse.db"
    env = {**os.environ, "LOCAL_BROKER_PORT": str(port), "LOCAL_CONTROLLER_PORT": str(free_port()),
           "LOCAL_REGISTRY_PORT": str(registry_port), "STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200",
           "WEB_PORT": str(web), "METRICS_PORT": str(metrics), "SINK_METRICS_PORT": str(sink_metrics),
           "WAREHOUSE_URL": f"sqlite:///{warehouse}"}
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*JAMSOSTEK, "run", "--months", "1", "--live", "200"], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    bootstrap = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while "SCHEMA_REGISTRY_URL" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(1)
        raw = b""
        while not raw and time.monotonic() < deadline:
            kcat = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", "jamsostek.registrations", "-o", "beginning",
                                   "-c", "1", "-e", "-f", "%s"], capture_output=True, timeout=60)
            raw = kcat.stdout
            time.sleep(1)
        assert raw[0] == 0, "magic byte"
        assert int.from_bytes(raw[1:5], "big") > 0, "schema id"
        assert b"64." in raw  # the region code inside the Avro body
        first = total_records(bootstrap, "jamsostek.contributions")
        wait_for(lambda: total_records(bootstrap, "jamsostek.contributions") > first, 60, "live events to flow")
        # the worker serves the page, /regions and /metrics; the sink fills the warehouse
        import requests
        import sqlite3
        def registered() -> int:
            try:
                return sum(r["registered"] for r in requests.get(f"http://127.0.0.1:{web}/regions/", timeout=5).json())
            except (requests.RequestException, ValueError):
                return 0
        while registered() == 0 and time.monotonic() < deadline:
            time.sleep(1)
        assert registered() > 0, log.read_text()[-3000:]
        assert '<table id="regions">' in requests.get(f"http://127.0.0.1:{web}/", timeout=5).text
        assert "jamsostek_events_total" in requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
        assert "jamsostek_sink_records_total" in requests.get(f"http://127.0.0.1:{sink_metrics}/metrics", timeout=5).text
        rows = 0
        while rows == 0 and time.monotonic() < deadline:
            time.sleep(1)
            try:
                with sqlite3.connect(warehouse) as db:
                    rows = db.execute("SELECT count(*) FROM fact_registration").fetchone()[0]
            except sqlite3.OperationalError:  # not migrated yet
                rows = 0
        assert rows > 0
        children = descendants(proc.pid)
        assert len(children) >= 4, children  # Kafka, the registry, the worker, the sink
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(90)
    assert code == 0, log.read_text()[-3000:]
    assert "stopped the local stack" in log.read_text() and "Traceback" not in log.read_text()
    assert "still in queue or transit" not in log.read_text()  # the simulator delivered what it had sent
    wait_for(lambda: not still_running(children), 60, "every child of `run` to stop")
    assert not port_in_use(port) and not port_in_use(registry_port)
    assert not any(port_in_use(p) for p in (web, metrics, sink_metrics)), "worker and sink stopped too"


def test_run_refuses_a_port_in_use_before_starting_anything(tmp_path):
    import socket
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**os.environ, "WEB_PORT": str(port), "STATE_DIR": str(tmp_path / "state")}
        done = subprocess.run([*JAMSOSTEK, "run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"port {port}" in done.stderr and "in use" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "state" / "kafka").exists()  # nothing was started


def start_broker_command(tmp_path) -> tuple[subprocess.Popen, Path, dict]:
    ports = {"LOCAL_BROKER_PORT": free_port(), "LOCAL_CONTROLLER_PORT": free_port(), "LOCAL_REGISTRY_PORT": free_port()}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "STATE_DIR": str(tmp_path / "state"),
           "COLUMNS": "200"}
    log = tmp_path / "broker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*JAMSOSTEK, "broker"], stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, log, ports


@pytest.mark.slow
@pytest.mark.parametrize("moment, sig", [("registry starting", signal.SIGTERM), ("ready", signal.SIGKILL)])
def test_a_stop_signal_to_the_broker_command_stops_kafka_and_the_registry(tmp_path, moment, sig):
    """TERM in the worst moment (Kafka up, the registry half started: nothing yielded yet) and even SIGKILL once
    ready (no handler runs: the kernel's parent-death signal stops the children). Ctrl-C once ready: `run`, in
    test_run_brings_up_the_stack_and_kcat_sees_framed_avro (the same stack and handler)."""
    proc, log, ports = start_broker_command(tmp_path)
    try:
        marker = "Kafka 4" if moment == "registry starting" else "Ctrl-C stops the stack"
        wait_for(lambda: marker in log.read_text() or proc.poll() is not None, 240, marker)
        assert proc.poll() is None, log.read_text()
        def java_children() -> dict[int, int]:
            found = descendants(proc.pid)
            def is_java(pid: int) -> bool:
                try:
                    return "java" in open(f"/proc/{pid}/cmdline").read()
                except FileNotFoundError:
                    return False
            return found if sum(map(is_java, found)) == 2 else {}
        children = wait_for(java_children, 60, "Kafka and the registry (maybe still starting) running")
        proc.send_signal(sig)
        if moment == "registry starting":
            assert "schema registry ready" not in log.read_text()  # the signal came before the stack was up
        code = proc.wait(90)
        wait_for(lambda: not still_running(children), 60, "every child of the command to stop")
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig != signal.SIGKILL:
        assert code == 0, log.read_text()[-3000:]
        assert "stopped the local stack" in log.read_text() and "Traceback" not in log.read_text()
    assert not any(port_in_use(p) for p in ports.values())
