"""The concurry worker-pool guide's examples, on the Rust core (mode="process": the guide's
mode="thread" examples run the same with processes until the core has a thread mode)."""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import child_pids, wait_until
from stateful_pool import PoolShutDownError, SPool
from stateful_pool.concurry import LimitSet, RateLimit, ResourceLimit, Worker, WorkerPool

MODE = "process"


class DataProcessor(Worker):
    def __init__(self, multiplier: int):
        self.multiplier = multiplier
        self.processed = 0

    def process(self, value: int) -> int:
        self.processed += 1
        return value * self.multiplier


class StatefulWorker(Worker):
    def __init__(self, multiplier: int = 2):
        self.multiplier = multiplier
        self.count = 0

    def process(self, x: int) -> dict[str, int]:
        self.count += 1
        return {"result": x * self.multiplier, "count": self.count, "pid": os.getpid()}


class RiskyWorker(Worker):
    def risky_operation(self, value: int) -> int:
        if value < 0:
            raise ValueError(f"Negative value not allowed: {value}")
        return value * 2


class Gate(Worker):
    def wait_for(self, path: str) -> bytes:
        while not os.path.exists(path):
            time.sleep(0.005)
        return path.encode()

    def try_hold(self, key: str) -> bool:
        try:
            with self.limits.acquire(requested={key: 1}, timeout=0.05):
                return True
        except TimeoutError:
            return False

    def slow_task(self, duration: float) -> str:
        time.sleep(duration)
        return f"Completed after {duration}s"


class Fetcher(Worker):
    def fetch(self, url: str) -> bytes:
        return url.encode()


class Processor(Worker):
    def process(self, data: bytes) -> dict[str, Any]:
        return {"length": len(data), "upper": data.decode().upper()}

    def fail(self, data: Any) -> None:
        raise RuntimeError("processing failed")


class Storer(Worker):
    def store(self, data: dict[str, Any]) -> str:
        return f"stored {data['upper']}"


class APIWorker(Worker):
    def __init__(self, api_key: str):
        self.api_key = api_key

    def call_api(self, endpoint: str, tokens: int = 100) -> dict[str, Any]:
        with self.limits.acquire(requested={"tokens": tokens}) as acq:
            acq.update(usage={"tokens": tokens})
            return {"endpoint": endpoint, "tokens": tokens, "at": acq.at_ns}


def test_creating_a_pool_and_its_stats() -> None:
    pool = DataProcessor.options(mode=MODE, max_workers=2).init(multiplier=10)
    future = pool.process(42)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result() == 420
    stats = pool.get_pool_stats()
    assert stats["total_workers"] == 2 and stats["max_workers"] == 2
    assert stats["on_demand"] is False and stats["stopped"] is False
    assert stats["load_balancer"]["algorithm"] == "RoundRobin"
    assert stats["load_balancer"]["total_dispatched"] == 1
    assert stats["latency"]["count"] == 1 and stats["latency"]["p50"] > 0
    pool.stop()
    assert pool.get_pool_stats()["stopped"] is True
    with pytest.raises(PoolShutDownError):
        pool.process(1)


def test_context_manager_blocking_and_cleanup_on_exception() -> None:
    with DataProcessor.options(mode=MODE, max_workers=2, blocking=True).init(multiplier=10) as pool:
        assert [pool.process(i) for i in range(10)] == [i * 10 for i in range(10)]
        pids = {w["pid"] for w in pool.get_pool_stats()["workers"]}
    assert pids and not (pids & child_pids())
    with pytest.raises(ValueError, match="Error occurred"):
        with DataProcessor.options(mode=MODE, max_workers=2).init(multiplier=2) as pool:
            raise ValueError("Error occurred")
    assert pool.get_pool_stats()["stopped"]


@pytest.mark.parametrize(
    ("name", "algorithm"),
    [
        ("round_robin", "RoundRobin"),
        ("rr", "RoundRobin"),
        ("active", "LeastActiveLoad"),
        ("least_total", "LeastTotalLoad"),
        ("random", "Random"),
    ],
)
def test_every_load_balancer_serves_and_reports_its_name(name: str, algorithm: str) -> None:
    with StatefulWorker.options(mode=MODE, max_workers=2, load_balancing=name).init() as pool:
        results = [f.result() for f in [pool.process(i) for i in range(20)]]
        stats = pool.get_pool_stats()
    assert [r["result"] for r in results] == [i * 2 for i in range(20)]
    lb = stats["load_balancer"]
    assert lb["algorithm"] == algorithm and lb["total_dispatched"] == 20
    assert sum(lb["total_calls"]) == 20 and len(lb["active_calls"]) == 2


def test_round_robin_gives_each_worker_its_turn() -> None:
    # The guide's state-isolation example: 9 sequential calls on 3 workers, 3 each.
    with StatefulWorker.options(mode=MODE, max_workers=3, load_balancing="round_robin").init(multiplier=2) as pool:
        results = [pool.process(10).result() for _ in range(9)]
    assert all(r["result"] == 20 for r in results)
    by_pid: dict[int, list[int]] = {}
    for r in results:
        by_pid.setdefault(r["pid"], []).append(r["count"])
    assert sorted(by_pid.values()) == [[1, 2, 3]] * 3


def test_submissions_return_futures_and_all_complete() -> None:
    with DataProcessor.options(mode=MODE, max_workers=2, max_queued_tasks=10).init(multiplier=1) as pool:
        futures = [pool.process(i) for i in range(300)]
        assert sum(f.result() for f in futures) == sum(range(300))
        assert pool.get_pool_stats()["max_queued_tasks"] == 10


def test_exceptions_reach_the_caller_per_future() -> None:
    with RiskyWorker.options(mode=MODE, max_workers=2).init() as pool:
        values = [1, 2, -3, 4, -5]
        outcomes: list[Any] = []
        for f in [pool.risky_operation(v) for v in values]:
            try:
                outcomes.append(f.result(timeout=10))
            except ValueError as e:
                outcomes.append(str(e))
    assert outcomes == [2, 4, "Negative value not allowed: -3", 8, "Negative value not allowed: -5"]


def test_pipeline_resolves_argument_futures_without_blocking(tmp_path: Path) -> None:
    gate = tmp_path / "open"
    with (
        Gate.options(mode=MODE, max_workers=1).init() as gates,
        Processor.options(mode=MODE, max_workers=1).init() as processors,
    ):
        upstream = gates.wait_for(str(gate))
        downstream = processors.process(upstream)  # returns at once: the argument is not done
        assert not upstream.done() and not downstream.done()
        gate.touch()
        assert downstream.result(timeout=10) == {"length": len(str(gate)), "upper": str(gate).upper()}


def test_three_pool_pipeline_and_failed_arguments() -> None:
    with (
        Fetcher.options(mode=MODE, max_workers=2).init() as fetcher_pool,
        Processor.options(mode=MODE, max_workers=1).init() as processor_pool,
        Storer.options(mode=MODE, max_workers=1).init() as storer_pool,
    ):
        stored = []
        for url in ["http://example.com/1", "http://example.com/2"]:
            fetched = fetcher_pool.fetch(url)
            processed = processor_pool.process(fetched)
            stored.append(storer_pool.store(processed))
        assert [s.result(timeout=10) for s in stored] == [f"stored HTTP://EXAMPLE.COM/{i}" for i in (1, 2)]
        broken = storer_pool.store(processor_pool.fail(fetcher_pool.fetch("x")))
        with pytest.raises(RuntimeError, match="processing failed"):
            broken.result(timeout=10)
        nested = processor_pool.process(data=fetcher_pool.fetch("nested"))
        assert nested.result(timeout=10)["upper"] == "NESTED"


def test_shared_rate_limit_makes_later_calls_wait() -> None:
    # The guide: 10 workers share 1000 tokens/min; 20 calls of 100 -> 10 at once, then refill.
    # Scaled down: 2 workers share 300 tokens per 0.5 s; 6 calls of 100.
    limits = [RateLimit(key="tokens", window=0.5, capacity=300)]
    with APIWorker.options(mode=MODE, max_workers=2, limits=limits).init(api_key="my-key") as pool:
        results = [f.result() for f in [pool.call_api("/users", tokens=100) for _ in range(6)]]
    times = sorted(r["at"] for r in results)
    # The last 300 tokens cannot be granted before 300 have refilled: 0.5 s after the first.
    assert times[-1] - times[0] >= 0.5e9 * 0.99


def test_shared_and_per_worker_limit_sets() -> None:
    shared = LimitSet([ResourceLimit(key="connections", capacity=1)], shared=True, mode="process")
    per_worker = LimitSet([ResourceLimit(key="connections", capacity=1)], shared=False)
    for limits, worker_gets_one in [(shared, False), (per_worker, True)]:
        with Gate.options(mode=MODE, max_workers=1, limits=limits).init() as pool:
            with limits.acquire(requested={"connections": 1}):  # this process holds the one unit
                assert pool.try_hold("connections").result() is worker_gets_one
            assert pool.try_hold("connections").result() is True


def test_stop_with_timeout_kills_what_is_still_running() -> None:
    pool = Gate.options(mode=MODE, max_workers=1).init()
    long = pool.slow_task(30.0)
    wait_until(lambda: pool.get_pool_stats()["load_balancer"]["total_active"] == 1, what="the task to start")
    pool.stop(timeout=0.2)
    with pytest.raises(PoolShutDownError):
        long.result(timeout=10)


def test_resize_grows_and_shrinks_without_losing_tasks() -> None:
    with StatefulWorker.options(mode=MODE, max_workers=1).init() as pool:
        pool.resize(3)
        assert pool.get_pool_stats()["total_workers"] == 3
        futures = [pool.process(i) for i in range(60)]
        pool.resize(1)
        assert [f.result(timeout=20)["result"] for f in futures] == [i * 2 for i in range(60)]
        wait_until(lambda: pool.get_pool_stats()["total_workers"] == 1, what="two workers to retire")
        assert pool.get_pool_stats()["max_workers"] == 1


def test_a_worker_is_an_sworker_through_as_sworker() -> None:
    with SPool(DataProcessor.as_sworker()) as pool:
        pool.spawn(multiplier=3)
        assert pool.call("process", 5) == 15
        assert pool.broadcast("process", 1) == [3]


def test_unknown_methods_and_options_are_refused() -> None:
    with DataProcessor.options(mode=MODE).init(multiplier=1) as pool:
        assert isinstance(pool, WorkerPool)
        with pytest.raises(AttributeError, match="no method 'nope'"):
            pool.nope(1).result(timeout=10)  # as in concurry 0.13: the call's future fails
    with pytest.raises(ValueError, match="load_balancing"):
        DataProcessor.options(load_balancing="fastest").init(multiplier=1)
    with pytest.raises(TypeError, match="unknown pool options"):
        DataProcessor.options(frobnicate=True).init(multiplier=1)
