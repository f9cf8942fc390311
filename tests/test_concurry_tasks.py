"""The guide's retries, on-demand workers, TaskWorker pools (a real Executor) and progress bars,
on the Rust core with mode="process"."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from typing import Any

import pytest
from stateful_pool.concurry import (
    ProgressBar,
    ResourceLimit,
    RetryValidationError,
    TaskPool,
    TaskWorker,
    Worker,
    gather,
)
from stateful_pool.concurry.retry import RetryConfig

MODE = "process"
FAST = {"retry_wait": 0.001, "retry_jitter": 0.0}


class Flaky(Worker):
    """Fails the first ``failures`` attempts of each key, then succeeds."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}

    def call(self, key: str, failures: int, exc: type[Exception] = ConnectionError) -> dict[str, Any]:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if self.attempts[key] <= failures:
            raise exc(f"attempt {self.attempts[key]} of {key} failed")
        return {"key": key, "attempts": self.attempts[key], "pid": os.getpid()}

    def count(self, key: str) -> int:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        return self.attempts[key]

    def hold_then_fail(self, key: str, failures: int) -> int:
        # Acquires without a with-block and fails: the retry loop must give the unit back.
        self.limits.acquire(requested={"db": 1}, timeout=2)
        return self.call(key, failures)["attempts"]


class BatchProcessor(Worker):
    def process_batch(self, data: list[int]) -> dict[str, int]:
        time.sleep(0.05)
        return {"processed": len(data), "result": sum(data), "pid": os.getpid(), "start": time.monotonic_ns()}


class ProgressWorker(Worker):
    def process_items(self, items: list[int]) -> list[int]:
        return [item * 2 for item in ProgressBar(items, desc="Processing", style="ray")]


def test_retries_run_on_the_worker_that_got_the_call() -> None:
    with Flaky.options(mode=MODE, max_workers=2, num_retries=3, retry_on=[ConnectionError], **FAST).init() as pool:
        results = [f.result() for f in [pool.call(f"k{i}", 2) for i in range(6)]]
        assert all(r["attempts"] == 3 for r in results)
        with pytest.raises(ConnectionError, match="attempt 4"):
            pool.call("too-flaky", 5).result()
        with pytest.raises(ValueError, match="attempt 1"):  # not in retry_on: no retry
            pool.call("wrong-kind", 1, ValueError).result()
        assert pool.get_pool_stats()["load_balancer"]["total_dispatched"] == 8  # retries are not dispatches


def test_retry_on_predicate_gets_exception_attempt_and_context() -> None:

    def retry_logger(exception: BaseException, attempt: int, worker_class: str, **ctx: Any) -> bool:
        return isinstance(exception, ConnectionError) and worker_class == "Flaky" and ctx["method_name"] == "call"

    with Flaky.options(mode=MODE, num_retries=2, retry_on=retry_logger, **FAST).init() as pool:
        assert pool.call("a", 2).result()["attempts"] == 3


def test_retry_until_validates_results() -> None:
    with Flaky.options(mode=MODE, num_retries=4, retry_until=lambda result, **_: result >= 3, **FAST).init() as pool:
        assert pool.count("x").result() == 3
    with Flaky.options(mode=MODE, num_retries=1, retry_until=[lambda r, **_: r > 10], **FAST).init() as pool:
        with pytest.raises(RetryValidationError, match="after 2 attempts") as info:
            pool.count("y").result()
        assert info.value.result == 2


def test_limits_are_released_between_retry_attempts() -> None:
    limits = [ResourceLimit(key="db", capacity=1)]
    with Flaky.options(mode=MODE, num_retries=3, limits=limits, **FAST).init() as pool:
        assert pool.hold_then_fail("z", 2).result() == 3


def test_backoff_algorithms() -> None:
    exp = RetryConfig.build(retry_algorithm="exponential", retry_wait=0.1, retry_jitter=0)
    lin = RetryConfig.build(retry_algorithm="linear", retry_wait=0.1, retry_jitter=0)
    fixed = RetryConfig.build(retry_algorithm="fixed", retry_wait=0.1, retry_jitter=0)
    assert [round(exp.wait(a), 6) for a in (1, 2, 3)] == [0.1, 0.2, 0.4]
    assert [round(lin.wait(a), 6) for a in (1, 2, 3)] == [0.1, 0.2, 0.3]
    assert [round(fixed.wait(a), 6) for a in (1, 2, 3)] == [0.1, 0.1, 0.1]
    # Full jitter, as concurry: any jitter draws from [0, the algorithm's wait].
    jittered = RetryConfig.build(retry_wait=1.0, retry_jitter=0.5)
    waits = [jittered.wait(2) for _ in range(200)]
    assert all(0.0 <= w <= 2.0 for w in waits) and min(waits) < 0.5 and max(waits) > 1.5
    fib = RetryConfig.build(retry_algorithm="fibonacci", retry_wait=0.1, retry_jitter=0)  # concurry 0.13 has it
    assert [round(fib.wait(a), 6) for a in (1, 2, 3, 4)] == [0.1, 0.1, 0.2, 0.3]
    with pytest.raises(ValueError):
        RetryConfig.build(retry_algorithm="quadratic")


def test_on_demand_workers_are_fresh_per_call_and_capped() -> None:
    pool = BatchProcessor.options(mode=MODE, on_demand=True, max_workers=2).init()
    assert pool.get_pool_stats()["load_balancer"]["algorithm"] == "Random"
    futures = [pool.process_batch([i, i + 1]) for i in range(4)]
    results = [f.result(timeout=30) for f in futures]
    pool.stop()
    assert [r["result"] for r in results] == [1, 3, 5, 7]
    assert len({r["pid"] for r in results}) == 4, "a new worker per call"
    stats = pool.get_pool_stats()
    assert stats["on_demand"] and stats["max_workers"] == 2 and stats["stopped"]


def test_on_demand_with_retries() -> None:
    with Flaky.options(mode=MODE, on_demand=True, max_workers=1, num_retries=2, **FAST).init() as pool:
        assert pool.call("k", 1).result()["attempts"] == 2


def flaky_function(x: int) -> int:
    if x % 3 == 0 and not os.environ.get(f"SEEN_{x}"):
        os.environ[f"SEEN_{x}"] = "1"
        raise ConnectionError("Transient error")
    return x * 2


def test_task_worker_submit_map_and_retries() -> None:
    with TaskWorker.options(mode=MODE, max_workers=2, num_retries=3, retry_on=[ConnectionError], **FAST).init() as pool:
        assert isinstance(pool, TaskPool) and isinstance(pool, concurrent.futures.Executor)
        assert pool.submit(lambda a, b: a**b, 2, 10).result() == 1024
        assert list(pool.map(flaky_function, range(30))) == [x * 2 for x in range(30)]
        assert sorted(pool.map(abs, [-3, -1, -2], ordered=False, progress="abs")) == [1, 2, 3]
        assert list(pool.map(pow, [2, 3], [3, 2])) == [8, 9]
        chained = pool.submit(abs, pool.submit(lambda: -5))
        assert chained.result() == 5


def test_executor_code_runs_unchanged() -> None:
    def work(executor: concurrent.futures.Executor) -> list[int]:
        with executor:
            futures = [executor.submit(pow, i, 2) for i in range(10)]
            done, _ = concurrent.futures.wait(futures)
            assert len(done) == 10

            async def via_asyncio() -> list[int]:
                loop = asyncio.get_running_loop()
                return list(await asyncio.gather(*(loop.run_in_executor(executor, abs, -i) for i in range(3))))

            return [f.result() for f in futures] + asyncio.run(via_asyncio())

    expected = work(concurrent.futures.ThreadPoolExecutor(2))
    assert work(TaskWorker.options(mode=MODE, max_workers=2).init()) == expected


def test_progress_bars_on_map_futures_and_inside_workers(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressWorker.options(mode=MODE, max_workers=2).init() as pool:
        futures = [pool.process_items(list(range(10))) for _ in range(4)]
        assert gather(futures, progress="batches") == [[i * 2 for i in range(10)]] * 4
    assert "batches" in capsys.readouterr().err
    with TaskWorker.options(mode=MODE, max_workers=1).init() as tasks:
        assert list(tasks.map(abs, [-1, -2], progress=True)) == [1, 2]
    assert "2/2" in capsys.readouterr().err
    bar = ProgressBar(total=3, desc="manual")
    bar.update(3)
    assert bar.n == 3
    bar.close()


# -- async and blocking functions ------------------------------------------------------------

_ASYNC_ATTEMPTS: dict[str, int] = {}


async def _async_flaky(key: str, failures: int) -> int:
    _ASYNC_ATTEMPTS[key] = _ASYNC_ATTEMPTS.get(key, 0) + 1
    await asyncio.sleep(0)
    if _ASYNC_ATTEMPTS[key] <= failures:
        raise ConnectionError(f"attempt {_ASYNC_ATTEMPTS[key]} of {key}")
    return _ASYNC_ATTEMPTS[key]


@pytest.mark.parametrize("mode", ["sync", "thread", "asyncio", "process"])
def test_task_worker_awaits_and_retries_async_functions(mode: str) -> None:
    key = f"{mode}-{time.monotonic_ns()}"
    with TaskWorker.options(mode=mode, num_retries=3, **FAST).init() as pool:
        assert pool.submit(_async_flaky, key, 2).result(timeout=60) == 3  # two failures retried
        with pytest.raises(ConnectionError, match="attempt 4"):
            pool.submit(_async_flaky, key + "-hopeless", 9).result(timeout=60)


def test_asyncio_task_worker_runs_blocking_functions_in_threads() -> None:
    # Both calls wait for each other: they pass the barrier only if they run at the same time
    # (on the event loop itself the first would block the second until its barrier broke).
    barrier = threading.Barrier(2, timeout=30)
    loop_threads: set[str] = set()

    def meet(x: int) -> int:
        barrier.wait()
        return x

    async def on_loop(x: int) -> int:
        loop_threads.add(threading.current_thread().name)
        await asyncio.sleep(0)
        return x

    before = set(threading.enumerate())
    with TaskWorker.options(mode="asyncio", max_concurrency=4).init() as pool:
        futures = [pool.submit(meet, 1), pool.submit(meet, 2), pool.submit(on_loop, 3)]
        assert [f.result(timeout=60) for f in futures] == [1, 2, 3]
    assert [name.startswith("stateful-pool-asyncio-") for name in loop_threads] == [True]
    deadline = time.monotonic() + 30
    while (left := [t for t in set(threading.enumerate()) - before if t.is_alive()]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []  # the call threads were joined when the worker ended
