"""Smoke test of the benchmark (`python -m benchmarks --quick`) on the session's broker, registry and PostgreSQL:
it runs every part and writes its report, and every pipeline it measures (ours with both stores, the Quix Streams
peer) computed the same aggregates as the independent fold. No timing is asserted: figures are the benchmark's."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streams.config import PROJECT_ROOT


@pytest.mark.timeout(600)
def test_quick_benchmark_runs_every_part_and_results_equal_the_fold(kafka, registry, postgres, tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path),
                           "--bootstrap", kafka.bootstrap, "--registry", registry.url,
                           "--postgres", postgres.url("postgres")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "quick.json").read_text())
    assert (tmp_path / "quick.md").read_text().startswith("# Benchmark quick")
    assert (tmp_path / "quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = results["throughput"]
    assert set(runs) == {"ceiling", "faust floor (no-op agent)", "faust floor (a table write per event)",
                         "quix streams", "ours (memory)", "ours (rocksdb)", "ours (memory, two workers)"}
    assert all(run["events"] == results["workload"]["events"] for run in runs.values())
    assert [name for name, run in runs.items() if run.get("equal_to_fold") is False] == []
    assert all(runs[name]["equal_to_fold"] for name in ("quix streams", "ours (memory)", "ours (rocksdb)",
                                                        "ours (memory, two workers)"))
    assert runs["ours (memory, two workers)"]["workers"] == 2
    mix = results["workload"]
    assert mix["Registration"] + mix["Contribution"] + mix["Claim"] == mix["events"]
    assert max(mix["by_region"], key=mix["by_region"].get) == "64.08"  # Kutai Timur largest (its own programme)
    assert results["latency"]["measured"] == results["latency"]["events"]
    hops = results["latency"]["hops"]  # every event found in the worker's participant events, and its deltas'
    assert hops["ingest"]["events"] == hops["participants"]["events"] == results["latency"]["events"]
    assert 0 <= hops["ingest"]["p50_ms"] <= hops["ingest"]["p99_ms"]
    assert results["sink"]["sink"]["rows"] == results["sink"]["copy"]["rows"] == mix["events"]
    assert results["recovery"]["changelog_records"] >= mix["participants"]
    keys = results["restore_keys"]  # a restore of 20,000 keys written one record each, with both stores
    assert keys["keys"] == 20_000 and keys["memory"] > 0 and keys["rocksdb"] > 0 and keys["states_sampled"] > 0
    # the stateful floor wrote one changelog record per event (compaction may have dropped some since)
    restored = runs["faust floor (a table write per event)"]["restore"]["changelog_records"]
    assert mix["participants"] <= restored <= mix["events"]
    assert "streams/" in results["profile"]  # the worker's own functions are in the profile


def test_profile_hot_path_ranks_the_projects_functions_by_inclusive_time(tmp_path):
    import importlib.util

    from pyinstrument import Profiler

    from benchmarks.ours import profile_hot_path
    package = tmp_path / "streams"
    package.mkdir()
    (package / "hot.py").write_text(
        "import time\n"
        "def busy(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"
        "def outer():\n    time.sleep(0.05)\n    return busy(3_000_000) + recursive(3)\n"
        "def recursive(k):\n    return busy(300_000) if k == 0 else recursive(k - 1)\n")
    spec = importlib.util.spec_from_file_location("hot_under_test", package / "hot.py")
    hot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hot)
    profiler = Profiler(interval=0.001)
    profiler.start()
    hot.outer()
    profiler.stop()
    profiler.last_session.save(str(tmp_path / "p.pyisession"))
    lines = profile_hot_path(tmp_path / "p.pyisession").splitlines()
    names = [line.split("%", 1)[1].strip().split(" ")[0] for line in lines]
    assert names[0] == "outer"  # inclusive: the caller first, the sleep included
    assert names.index("busy") < names.index("recursive")  # busy's two call paths add up
    assert names.count("recursive") == 1  # a recursive function counted once per path, not per frame
    seconds = {name: float(line.split()[0]) for name, line in zip(names, lines)}
    assert seconds["recursive"] <= seconds["busy"] <= seconds["outer"]


@pytest.mark.timeout(300)
def test_memory_only_mode_measures_the_rocksdb_worker_at_two_sizes(kafka, registry, postgres, tmp_path):
    """``--memory-only`` (the issue's memory target on its own): the RocksDB worker on the backlog and on a tenth
    of it, both equal to the fold, and the peak-RSS growth between them written and printed."""
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--memory-only", "--out", str(tmp_path),
                           "--bootstrap", kafka.bootstrap, "--registry", registry.url,
                           "--postgres", postgres.url("postgres")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(next(tmp_path.glob("memory-*.json")).read_text())
    small, big = results["memory"]
    assert small["store"] == big["store"] == "rocksdb" and small["equal_to_fold"] and big["equal_to_fold"]
    assert big["participants"] > 2 * small["participants"] and small["peak_rss_mb"] > 0 and big["peak_rss_mb"] > 0
    growth, target = results["ratios"]["RocksDB RSS growth, 10x participants"]
    assert growth == round(big["peak_rss_mb"] / small["peak_rss_mb"], 3) and target == "≤ 1.2"
    assert "RocksDB RSS growth, 10x participants" in done.stdout
