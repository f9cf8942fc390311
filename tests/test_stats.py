"""The statistics the pools return carry exactly the keys their TypedDicts (``_stats.py``)
document, with values of the documented types, in every local mode."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from stateful_pool import (
    LatencyStats,
    LoadBalancerStats,
    PoolStats,
    PoolWorkerStats,
    SPool,
    WorkerPoolStats,
    WorkerStats,
)
from stateful_pool._stats import WorkerState
from stateful_pool.concurry import Worker
from workers import Echo

LOCAL_MODES = ["process", "thread", "asyncio", "sync"]


class Doubler(Worker):
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def double(self, value: int) -> int:
        return value * self.factor

    def fail(self) -> None:
        raise ValueError("failing on purpose")


def check_worker(worker: WorkerStats) -> None:
    assert set(worker) == WorkerStats.__required_keys__, worker
    assert worker["state"] in get_args(WorkerState), worker
    assert worker["pid"] is None or isinstance(worker["pid"], int)
    assert worker["last_error"] is None or isinstance(worker["last_error"], str)
    counters = [worker[k] for k in ("id", "restarts", "tasks_done", "tasks_failed", "dispatched", "batches")]
    assert all(isinstance(n, int) and n >= 0 for n in [*counters, worker["batched_tasks"]]), worker


@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_spool_stats_have_the_documented_keys_and_types(mode: str) -> None:
    with SPool(Echo, mode=mode) as pool:
        pool.spawn(tag="a")
        pool.spawn(tag="b")
        assert pool.execute(1) == 1
        with pytest.raises(ValueError, match="boom"):
            pool.call("fail", "boom")
        stats = pool.stats()
    assert set(stats) == PoolStats.__required_keys__, stats
    assert isinstance(stats["queued"], int) and isinstance(stats["dispatched"], int)
    assert stats["load_balancing"] == "round_robin"
    assert stats["live_workers"] == 2
    assert len(stats["workers"]) == 2
    for worker in stats["workers"]:
        check_worker(worker)
    # A task that raised ran to its end: it is done, not failed (failed is for crashes,
    # timeouts and kills).
    assert sum(w["tasks_done"] for w in stats["workers"]) == 2
    assert sum(w["tasks_failed"] for w in stats["workers"]) == 0


@pytest.mark.parametrize(("mode", "workers"), [("process", 2), ("thread", 2), ("sync", 1)])
def test_concurry_pool_stats_have_the_documented_keys(mode: str, workers: int) -> None:
    with Doubler.options(mode=mode, max_workers=workers).init(3) as pool:
        assert pool.double(2).result() == 6
        with pytest.raises(ValueError):
            pool.fail().result()
        stats: Any = pool.get_pool_stats()
    assert set(stats) == WorkerPoolStats.__required_keys__, stats
    assert set(stats["load_balancer"]) == LoadBalancerStats.__required_keys__
    assert set(stats["latency"]) == LatencyStats.__required_keys__
    assert stats["latency"]["count"] == 2
    assert stats["total_workers"] == len(stats["workers"]) == workers
    for worker in stats["workers"]:
        assert set(worker) <= PoolWorkerStats.__optional_keys__, worker
        assert {"id", "pid", "state", "active_calls", "total_calls"} <= set(worker), worker
