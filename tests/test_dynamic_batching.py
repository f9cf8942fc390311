"""Dynamic batching: calls to a ``@batched`` method, made one item at a time, are gathered by
the core into coalesced calls (``src/sched/gather.rs``), with real worker processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from typing import Any

import pytest
from batch_workers import AsyncDoubler, Doubler, FullBatches
from conftest import wait_until
from stateful_pool import BatchSizeError, SPool, TaskTimeoutError, WorkerCrashedError, batched
from stateful_pool.batching import batched_methods

MODES = ["process", "thread", "asyncio", "sync"]


def sizes(pool: SPool[Any]) -> list[int]:
    return [n for per_worker in pool.broadcast("batch_sizes") for n in per_worker]


def test_concurrent_submits_are_gathered_and_answered_in_order() -> None:
    with SPool(Doubler) as pool:
        pool.spawn()
        pool.spawn()
        futures = [pool.submit_execute(i) for i in range(64)]
        assert [f.result(timeout=60) for f in futures] == [2 * i for i in range(64)]
        seen = sizes(pool)
        assert sum(seen) == 64, seen
        assert max(seen) > 1, f"calls were not gathered: {seen}"
        assert max(seen) <= 16, f"max_size broken: {seen}"
        stats = pool.stats()["coalesced"]
        assert stats["calls"] == len(seen) and stats["tasks"] == 64
        assert stats["max_size"] == max(seen)
        assert sum(calls for _, calls in stats["histogram"]) == stats["calls"]


def test_max_size_is_respected() -> None:
    with SPool(FullBatches) as pool:
        pool.spawn()
        futures = [pool.submit_execute(i) for i in range(20)]
        assert [f.result(timeout=60) for f in futures] == [2 * i for i in range(20)]
        # max_wait is 30 s: the first two batches fill to max_size, the rest waits or flushes.
        assert sizes(pool)[:2] == [8, 8]


def test_max_wait_flushes_a_lone_item() -> None:
    with SPool(Doubler) as pool:
        pool.spawn()
        assert pool.submit_execute(21).result(timeout=30) == 42
        assert pool.execute(5) == 10
        assert sizes(pool) == [1, 1]


def test_an_exception_fails_the_whole_batch() -> None:
    with SPool(FullBatches) as pool:
        pool.spawn()
        futures = [pool.submit_execute(x) for x in [1, 2, "boom", 4, 5, 6, 7, 8]]
        for f in futures:
            with pytest.raises(RuntimeError, match="boom in a batch of 8"):
                f.result(timeout=60)
        assert pool.stats()["workers"][0]["restarts"] == 0


def test_exception_objects_fail_only_their_items() -> None:
    with SPool(FullBatches) as pool:
        pool.spawn()
        items: list[Any] = [1, ("odd", 1), 3, ("odd", 2), 5, 6, 7, 8]
        futures = [pool.submit_execute(x) for x in items]
        for item, f in zip(items, futures, strict=True):
            if isinstance(item, tuple):
                with pytest.raises(ValueError, match=f"item {item[1]} is odd"):
                    f.result(timeout=60)
            else:
                assert f.result(timeout=60) == 2 * item


def test_wrong_length_names_the_method() -> None:
    with SPool(FullBatches) as pool:
        pool.spawn()
        futures = [pool.submit_execute(x) for x in [1, 2, 3, "short", 5, 6, 7, 8]]
        for f in futures:
            with pytest.raises(BatchSizeError, match=r"FullBatches\.execute\(\) returned 7 results for a batch of 8"):
                f.result(timeout=60)
        assert pool.execute(1) == 2  # the worker goes on


def test_a_call_that_is_not_one_item_fails_alone() -> None:
    with SPool(FullBatches) as pool:
        pool.spawn()
        odd = pool.submit_execute(1, 2)
        good = [pool.submit_execute(i) for i in range(7)]
        with pytest.raises(TypeError, match="one item per call"):
            odd.result(timeout=60)
        assert [f.result(timeout=60) for f in good] == [2 * i for i in range(7)]


def test_a_crash_mid_batch_fails_its_items_and_the_pool_goes_on() -> None:
    with SPool(FullBatches) as pool:
        first_pid = pool.spawn()
        futures = [pool.submit_execute(x) for x in [1, 2, 3, "crash", 5, 6, 7, 8]]
        for f in futures:
            with pytest.raises(WorkerCrashedError):
                f.result(timeout=60)
        after = [pool.submit_execute(i) for i in range(8)]
        assert [f.result(timeout=60) for f in after] == [2 * i for i in range(8)]
        worker = pool.stats()["workers"][0]
        assert worker["restarts"] == 1 and worker["pid"] != first_pid


def test_a_timeout_fails_the_whole_batch_and_the_pool_goes_on() -> None:
    with SPool(FullBatches, task_timeout=2.0) as pool:
        pool.spawn()
        futures = [pool.submit_execute(x) for x in [1, 2, 3, "sleep", 5, 6, 7, 8]]
        for f in futures:
            with pytest.raises(TaskTimeoutError):
                f.result(timeout=60)
        after = [pool.submit_execute(i) for i in range(8)]
        assert [f.result(timeout=60) for f in after] == [2 * i for i in range(8)]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gathers_or_runs_batches_of_one(mode: str) -> None:
    options: dict[str, Any] = {"max_concurrency": 1} if mode == "asyncio" else {}
    with SPool(FullBatches, mode=mode, **options) as pool:
        pool.spawn(os.getpid())
        futures = [pool.submit_execute(i) for i in range(16)]
        assert [f.result(timeout=60) for f in futures] == [2 * i for i in range(16)]
        # Sync mode runs each call as its caller submits it: a batch of one each.
        assert sizes(pool) == ([1] * 16 if mode == "sync" else [8, 8])
        items: list[Any] = [1, 2, 3, "crash", 5, 6, 7, 8]
        futures = [pool.submit_execute(x) for x in items]
        for item, f in zip(items, futures, strict=True):
            if mode == "sync" and item != "crash":
                assert f.result(timeout=60) == 2 * item  # alone in its batch of one
            else:
                with pytest.raises(WorkerCrashedError):  # the whole batch failed with the worker
                    f.result(timeout=60)
        wait_until(lambda: pool.stats()["live_workers"] == 1, 30, "the worker to come back")


def test_async_batched_method_in_asyncio_mode() -> None:
    with SPool(AsyncDoubler, mode="asyncio", max_concurrency=1) as pool:
        pool.spawn()

        async def main() -> list[int]:
            return await asyncio.gather(*(pool.async_execute(i) for i in range(16)))

        assert asyncio.run(main()) == [2 * i for i in range(16)]
        assert sizes(pool) == [8, 8]


def test_map_and_blocking_calls_from_threads_are_gathered() -> None:
    with SPool(Doubler) as pool:
        pool.spawn()
        assert list(pool.map(range(100))) == [2 * i for i in range(100)]
        with concurrent.futures.ThreadPoolExecutor(16) as callers:
            assert list(callers.map(pool.execute, range(64))) == [2 * i for i in range(64)]
        assert max(sizes(pool)) > 1


def test_decorator_checks_and_discovery() -> None:
    with pytest.raises(ValueError, match="max_size"):
        batched(max_size=0)(lambda self, items: items)
    with pytest.raises(ValueError, match="max_wait"):
        batched(max_wait=float("nan"))(lambda self, items: items)
    assert batched_methods(FullBatches) == [("execute", 8, 30.0)]
    # Called outside a pool (or by a mode that gathers nothing), it is a batch of one.
    worker = Doubler()
    worker.spawn()
    assert worker.execute(3) == 6
    with pytest.raises(BatchSizeError):
        worker.execute("short")


def test_a_batch_ends_where_the_worker_is_recycled() -> None:
    with SPool(FullBatches, max_tasks_per_worker=4) as pool:
        pool.spawn()
        futures = [pool.submit_execute(i) for i in range(8)]
        assert [f.result(timeout=60) for f in futures] == [2 * i for i in range(8)]
        stats = pool.stats()
        assert (stats["coalesced"]["calls"], stats["coalesced"]["max_size"]) == (2, 4)
        # A worker due for recycling keeps serving until its successor is ready (see "Rolling
        # restart" in the README): the second batch may run before the take-over, so at least one.
        wait_until(lambda: pool.stats()["workers"][0]["restarts"] >= 1, 30, "a recycle")
