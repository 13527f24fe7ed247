"""Benchmark results as JSON, Markdown and a PNG chart under benchmarks/results/."""
from __future__ import annotations

import json
from pathlib import Path


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def write(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / results["name"]
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")]
    paths[0].write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    paths[1].write_text(markdown(results))
    chart(results, paths[2])
    return paths


def markdown(r: dict) -> str:
    w, t = r["workload"], r["throughput"]
    lines = [f"# Benchmark {r['name']}", "",
             f"{r['started']} · {r['machine']} · mode `{r['mode']}` · {r['seconds_total']:.0f} s in all", "",
             f"Workload: {w['events']:,} events ({w['Registration']:,} registrations, {w['Contribution']:,} "
             f"contributions, {w['Claim']:,} claims), {w['participants']:,} participants, "
             f"{r['partitions']} partitions per topic; largest region {max(w['by_region'], key=w['by_region'].get)}.", "",
             "| Run | events/s | peak RSS MB | equal to the fold | ratio to ceiling |", "|---|---:|---:|---|---:|"]
    ceiling = t["ceiling"]["events_per_s"]
    for name, row in t.items():
        lines.append(f"| {name} | {row['events_per_s']:,} | {row.get('peak_rss_mb', '')} | "
                     f"{row.get('equal_to_fold', '')} | {ratio(row['events_per_s'], ceiling)} |")
    lines += ["", "| Ratio | value | target |", "|---|---:|---:|"]
    for name, (value, target) in r["ratios"].items():
        lines.append(f"| {name} | {value} | {target} |")
    s, lat, rec = r["sink"], r["latency"], r["recovery"]
    lines += ["", f"Sink → PostgreSQL: {s['sink']['rows_per_s']:,} rows/s; plain COPY of the same rows: "
              f"{s['copy']['rows_per_s']:,} rows/s (ratio {ratio(s['sink']['rows_per_s'], s['copy']['rows_per_s'])}).",
              "", f"Latency, publish → region table visible, offered {lat['offered_per_s']:,}/s "
              f"(achieved {lat['achieved_per_s']:,}/s, {lat['measured']:,} events"
              f"{warmed(lat)}): p50 {lat['p50_ms']:,} ms, "
              f"p99 {lat['p99_ms']:,} ms{latency_detail(lat)}.", "",
              f"Recovery from the changelogs, all tables ({rec['participants']:,} participant keys; "
              f"{rec['changelog_records']:,} records read of {rec.get('changelog_written', 0):,} written, the rest "
              f"compacted away): {rec['seconds']} s of restoring "
              f"(≈ {rec['records_per_s']:,} changelog records/s; at that rate 1M keys ≈ "
              f"{rec['one_million_keys_s']} s); the whole restart, process start to ready: "
              f"{rec['restart_seconds']} s.", ""]
    keys = r.get("restore_keys")
    if keys:
        lines += [f"Restore of {keys['keys']:,} participants on an empty disk: their states (sampled from the "
                  f"{keys['states_sampled']:,} this run left) one record per key in a participant changelog "
                  f"({keys['bytes'] / 2**20:,.0f} MiB), restored by a worker with an empty state directory: "
                  f"memory store {keys['memory']} s, RocksDB {keys['rocksdb']} s (Faust's log lines, as above).", ""]
    restore = next((row["restore"] for row in t.values() if "restore" in row), None)
    if restore:
        lines += [f"Faust's own restore loop (the bulk read off), the stateful floor's one-field table on an empty "
                  f"state directory: "
                  f"{restore['changelog_records']:,} records in {restore['seconds']} s "
                  f"(≈ {restore['records_per_s']:,} records/s).", ""]
    if r.get("memory"):
        lines += ["Peak RSS as participants grow:", "", "| store | participants | peak RSS MB |", "|---|---:|---:|"]
        lines += [f"| {m['store']} | {m['participants']:,} | {m['peak_rss_mb']} |" for m in r["memory"]]
        lines.append("")
    if r.get("profile"):
        lines += ["CPU profile of the worker (pyinstrument): the project's functions by inclusive time; the rest is "
                  "Faust, aiokafka and waiting in the event loop:", "", "```",
                  r["profile"].rstrip(), "```", ""]
    return "\n".join(lines)


def chart(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(r["throughput"])
    values = [r["throughput"][n]["events_per_s"] for n in names]
    left.barh(names, values, color=["#888" if n == "ceiling" else "#2a7" for n in names])
    left.set_xscale("log")
    left.set_xlabel("events/s (log)")
    left.set_title("Throughput on the same pre-loaded backlog")
    for y, v in enumerate(values):
        left.text(v, y, f" {v:,}", va="center", fontsize=8)
    memory = r.get("memory") or []
    for store in sorted({m["store"] for m in memory}):
        points = sorted((m["participants"], m["peak_rss_mb"]) for m in memory if m["store"] == store)
        right.plot(*zip(*points), marker="o", label=store)
    right.set_xlabel("participants")
    right.set_ylabel("peak RSS (MB)")
    right.set_title("Worker memory as participants grow")
    if memory:
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_detail(lat: dict) -> str:
    """The latency run's steady part and hops (runs before 2026-11-29 have neither)."""
    if "hops" not in lat:
        return ""
    steady, hops = lat["after_first_tenth"], lat["hops"]
    return (f"; after the run's first tenth p50 {steady['p50_ms']:,} ms, p99 {steady['p99_ms']:,} ms; by hop (the "
            f"records' timestamps): publication → participant events sent p50 {hops['ingest']['p50_ms']:,} ms, "
            f"p99 {hops['ingest']['p99_ms']:,} ms; → the first region delta p50 "
            f"{hops['participants']['p50_ms']:,} ms, p99 {hops['participants']['p99_ms']:,} ms")


def warmed(lat: dict) -> str:
    """The latency run's warm-up, if it had one (runs before 2026-11-29 did not)."""
    n = lat.get("warmup_events", 0)
    return f", after {n:,} events of warm-up at the rate, not measured" if n else ""
