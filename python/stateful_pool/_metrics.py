"""``SPool.metrics()``: the pool's statistics as Prometheus metrics, through
``prometheus_client`` (an optional dependency: ``pip install 'stateful-pool[metrics]'``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ._stats import PoolStats

__all__ = ["collector", "exposition"]

_PREFIX = "stateful_pool"


def _families(stats: PoolStats, run_times: tuple[list[float], list[int], float], pool: str) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    workers = stats["workers"]
    labels = ["pool"]
    tasks = CounterMetricFamily(f"{_PREFIX}_tasks", "Tasks that ended, by outcome.", labels=[*labels, "outcome"])
    tasks.add_metric([pool, "done"], sum(w["tasks_done"] for w in workers))
    tasks.add_metric([pool, "failed"], sum(w["tasks_failed"] for w in workers))
    yield tasks
    for name, doc, value in (
        ("queue_depth", "Tasks waiting for a worker.", stats["queued"]),
        ("busy_workers", "Workers running a task.", sum(w["state"] == "busy" for w in workers)),
        ("live_workers", "Workers starting or serving.", stats["live_workers"]),
    ):
        gauge = GaugeMetricFamily(f"{_PREFIX}_{name}", doc, labels=labels)
        gauge.add_metric([pool], value)
        yield gauge
    for key, doc in (
        ("restarts", "Worker restarts and recycles."),
        ("health_failures", "Failed health checks (each replaced its worker)."),
        ("batches", "Hand-overs of several queued tasks at once."),
        ("batched_tasks", "Tasks handed over in those batches."),
    ):
        counter = CounterMetricFamily(f"{_PREFIX}_{key}", doc, labels=labels)
        counter.add_metric([pool], sum(int(w.get(key, 0)) for w in workers))  # type: ignore[call-overload]
        yield counter
    bounds, counts, total = run_times
    cumulative, buckets = 0, []
    for bound, count in zip(bounds, counts, strict=False):
        cumulative += count
        buckets.append((repr(bound), cumulative))
    buckets.append(("+Inf", cumulative + counts[-1]))
    run = HistogramMetricFamily(f"{_PREFIX}_task_run_seconds", "How long tasks ran on their workers.", labels=labels)
    run.add_metric([pool], buckets, total)
    yield run


class _Collector:
    """A ``prometheus_client`` collector reading a pool's statistics at every scrape."""

    def __init__(self, read: Callable[[], tuple[PoolStats, tuple[list[float], list[int], float]]], name: str):
        self._read, self._name = read, name

    def collect(self) -> Iterator[Any]:
        stats, run_times = self._read()
        yield from _families(stats, run_times, self._name)


def collector(read: Callable[[], tuple[PoolStats, tuple[list[float], list[int], float]]], name: str) -> Any:
    """A collector for ``prometheus_client.REGISTRY.register``."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ImportError("pool metrics need prometheus_client: pip install 'stateful-pool[metrics]'") from None
    return _Collector(read, name)


def exposition(read: Callable[[], tuple[PoolStats, tuple[list[float], list[int], float]]], name: str) -> str:
    """The metrics in Prometheus text exposition format."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector(read, name))
    return generate_latest(registry).decode()
