"""The report of ``benches/compare.py``: the metrics it shows (titles, units, which way is
better), the summary of each metric's repeats against the baseline, and the printed tables."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from compare_peers import BASELINE

FLOOR = "(floor: stdlib Future)"


@dataclass(frozen=True)
class Metric:
    key: str
    workload: str
    title: str
    short: str
    unit: str
    higher_is_better: bool
    digits: int


METRICS = (
    Metric(
        "rt_hot_us",
        "roundtrip",
        "1a. no-op round trip, 1 warm worker, hot (back to back)",
        "round trip, hot (µs)",
        "µs",
        False,
        1,
    ),
    Metric(
        "rt_parked_us",
        "roundtrip",
        "1b. no-op round trip, 1 warm worker, parked (5 ms pause before each call)",
        "round trip, parked (µs)",
        "µs",
        False,
        1,
    ),
    Metric(
        "tiny_per_s",
        "tiny",
        "2. tiny tasks through 2 workers, one future per task",
        "tiny tasks, 2 workers (tasks/s)",
        "tasks/s",
        True,
        0,
    ),
    Metric(
        "map_per_s",
        "map",
        "7a. map over tiny items, 2 workers, each pool's own chunks (stateful_pool: automatic)",
        "map, tiny items, auto chunks (items/s)",
        "items/s",
        True,
        0,
    ),
    Metric(
        "mapl_per_s",
        "map",
        "7c. map over a list of tiny items, 2 workers, each pool's own chunks",
        "map, list of tiny items, auto chunks (items/s)",
        "items/s",
        True,
        0,
    ),
    Metric(
        "map1_per_s",
        "map",
        "7b. map over tiny items, 2 workers, chunksize=1 (one item per message)",
        "map, tiny items, chunksize=1 (items/s)",
        "items/s",
        True,
        0,
    ),
    Metric(
        "numpy_MBps",
        "numpy",
        "3. 64 MiB numpy array round trip",
        "64 MiB numpy round trip (MB/s each way)",
        "MB/s each way",
        True,
        0,
    ),
    Metric(
        "spawn8_s",
        "spawn",
        "4. parallel spawn: 8 workers with a 1 s setup, until all are ready",
        "spawn 8 workers, 1 s setup (s)",
        "s",
        False,
        2,
    ),
    Metric(
        "cpu_speedup",
        "cpu",
        "5. CPU-bound speed-up: 40 x 20 ms pure-Python tasks, 2 workers vs 1",
        "CPU speed-up, 2 workers vs 1 (x)",
        "x",
        True,
        2,
    ),
    Metric(
        "idle_cpu_pct",
        "idle",
        "6. idle CPU: 2 idle warm workers, parent + all descendants, over 2 s",
        "idle CPU, 2 workers (% of a core)",
        "% of one core",
        False,
        2,
    ),
    Metric(
        "start_ms",
        "start",
        "7. a new worker: start + first call (no-op spawn), median of 20 per repeat",
        "new worker: start + first call (ms)",
        "ms",
        False,
        1,
    ),
    Metric(
        "recover_ms",
        "recover",
        "8. crash recovery: crash, then the next call done on the replacement, median of 20 per repeat",
        "crash recovery (ms)",
        "ms",
        False,
        1,
    ),
)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _ratio(metric: Metric, value: float | None, base: float | None) -> float | None:
    """How many times better than the baseline (> 1: better)."""
    if value is None or base is None or value <= 0 or base <= 0:
        return None
    return value / base if metric.higher_is_better else base / value


def _fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric and peer: min, median, max of the repeats and the ratio of the median to the baseline."""
    summary: dict[str, dict[str, Any]] = {}
    for metric in METRICS:
        rows: dict[str, Any] = {}
        for peer, result in results.items():
            data = result["metrics"].get(metric.key)
            if data and data["values"]:
                values = data["values"]
                rows[peer] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
        base = rows.get(BASELINE, {}).get("median")
        for row in rows.values():
            row["vs_baseline"] = _ratio(metric, row["median"], base)
        if rows:
            summary[metric.key] = rows
    return summary


def print_report(
    info: dict[str, Any], cfg: dict[str, Any], results: dict[str, dict[str, Any]], summary: dict[str, dict[str, Any]]
) -> None:
    peers = list(results)
    width = max(len(p) for p in peers) + 2
    for metric in METRICS:
        rows = summary.get(metric.key)
        if not rows:
            continue
        better = "higher" if metric.higher_is_better else "lower"
        print(f"\n{metric.title}  [{metric.unit}, {better} is better]")
        print(f"  {'peer':<{width}}{'min':>12}{'median':>12}{'max':>12}{'vs PPE':>10}  extra")
        for peer in peers:
            row = rows.get(peer)
            if row is None:
                continue
            extra = results[peer]["metrics"][metric.key].get("extra") or {}
            extra_text = ", ".join(f"{k}={_fmt(v, 2) if isinstance(v, float) else v}" for k, v in extra.items())
            print(
                f"  {peer:<{width}}{_fmt(row['min'], metric.digits):>12}{_fmt(row['median'], metric.digits):>12}"
                f"{_fmt(row['max'], metric.digits):>12}{_fmt_ratio(row['vs_baseline']):>10}  {extra_text}"
            )
        if FLOOR in rows:
            print(
                f"  {FLOOR}: one stdlib Future per task, completed by a thread, with no worker and no IPC:\n"
                "  the Python work alone of any pool that hands out a Future per task, on this machine."
            )

    peers = [p for p in peers if p != FLOOR]

    print(f"\nSummary (median of {cfg['repeat']}; in brackets: times better than {BASELINE}, same run)\n")
    print("| workload | " + " | ".join(peers) + " |")
    print("| --- |" + " ---: |" * len(peers))
    for metric in METRICS:
        rows = summary.get(metric.key)
        if not rows:
            continue
        cells = []
        for peer in peers:
            row = rows.get(peer)
            if row is None:
                cells.append("n/a")
            elif peer == BASELINE:
                cells.append(_fmt(row["median"], metric.digits))
            else:
                cells.append(f"{_fmt(row['median'], metric.digits)} ({_fmt_ratio(row['vs_baseline'])})")
        print(f"| {metric.short} | " + " | ".join(cells) + " |")

    if any(result["notes"] for result in results.values()):
        print("\nNotes:")
        for peer, result in results.items():
            for note in result["notes"]:
                print(f"  {peer}: {note}")
