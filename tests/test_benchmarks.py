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
                         "quix streams", "ours (memory)", "ours (rocksdb)"}
    assert all(run["events"] == results["workload"]["events"] for run in runs.values())
    assert [name for name, run in runs.items() if run.get("equal_to_fold") is False] == []
    assert all(runs[name]["equal_to_fold"] for name in ("quix streams", "ours (memory)", "ours (rocksdb)"))
    mix = results["workload"]
    assert mix["Registration"] + mix["Contribution"] + mix["Claim"] == mix["events"]
    assert max(mix["by_region"], key=mix["by_region"].get) == "64.02"  # Kutai Kartanegara largest
    assert results["latency"]["measured"] == results["latency"]["events"]
    assert results["sink"]["sink"]["rows"] == results["sink"]["copy"]["rows"] == mix["events"]
    assert results["recovery"]["changelog_records"] >= mix["participants"]
    # the stateful floor wrote one changelog record per event (compaction may have dropped some since)
    restored = runs["faust floor (a table write per event)"]["restore"]["changelog_records"]
    assert mix["participants"] <= restored <= mix["events"]
    assert "region_agent" in results["profile"]  # the worker's hot path is in the profile
