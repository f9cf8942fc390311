"""``map`` in chunks (issue 17): ``SPool.map`` and ``TaskPool.map`` send items to a worker in
chunks, one message per chunk, and keep per-item semantics: order, one item's exception failing
that item only, a crash mid-chunk failing the item that was running while the others complete,
per-chunk timeouts, progress counted in items, in every mode."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from stateful_pool import ResultPicklingError, SPool, SWorker, TaskTimeoutError, WorkerCrashedError
from stateful_pool.concurry import TaskWorker

MODES = ["process", "thread", "asyncio", "sync"]


class Items(SWorker):
    """``execute(x)``: ``x + 1``; -1 raises; remembers what it ran (per worker)."""

    def spawn(self) -> None:
        self.seen: list[Any] = []

    def execute(self, x: Any) -> Any:
        self.seen.append(x)
        if x == -1:
            raise ValueError("item -1 fails")
        if x == "lock":
            return threading.Lock()  # does not pickle
        return x + 1

    def seen_items(self) -> list[Any]:
        return self.seen


class Crashy(SWorker):
    """``execute((x, marker))``: exits the process on ``x == 5`` (only while ``marker`` does
    not exist, if one is given; it is created first), and logs ``x`` as done in ``log_dir``."""

    def spawn(self, log_dir: str) -> None:
        self.log_dir = log_dir

    def execute(self, item: tuple[int, str | None]) -> int:
        x, marker = item
        if x == 5 and (marker is None or not os.path.exists(marker)):
            if marker is not None:
                Path(marker).touch()
            os._exit(3)
        Path(self.log_dir, f"done-{x}").touch()
        return x


class AsyncItems(SWorker):
    """``async def execute``: awaited by the asyncio host, the items of a chunk together."""

    def spawn(self) -> None:
        self.napping = self.most_napping = 0

    async def execute(self, x: int) -> int:
        if x % 10 == 0:
            self.napping += 1
            self.most_napping = max(self.most_napping, self.napping)
            await asyncio.sleep(0.2)
            self.napping -= 1
        if x == -1:
            raise ValueError("item -1 fails")
        return x + 1

    def most_at_once(self) -> int:
        return self.most_napping


class Sleepy(SWorker):
    def execute(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


def _workers(mode: str) -> int:
    return 2 if mode in ("process", "thread") else 1


def _pool(cls: type[SWorker], mode: str, *spawn_args: Any, **options: Any) -> SPool[Any]:
    pool: SPool[Any] = SPool(cls, mode=mode, **options)
    for _ in range(_workers(mode)):
        pool.spawn(*spawn_args)
    return pool


def _dispatched(pool: SPool[Any]) -> int:
    return int(pool.stats()["dispatched"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunksize", [None, 1, 7, 1000])
def test_results_in_order_and_unordered_across_chunk_boundaries(mode: str, chunksize: int | None) -> None:
    with _pool(Items, mode) as pool:
        assert list(pool.map(range(500), chunksize=chunksize)) == list(range(1, 501))
        unordered = list(pool.map(iter(range(500)), ordered=False, chunksize=chunksize, window=3))
        assert sorted(unordered) == list(range(1, 501))


@pytest.mark.parametrize("mode", MODES)
def test_one_message_per_chunk(mode: str) -> None:
    with _pool(Items, mode) as pool:
        before = _dispatched(pool)
        assert list(pool.map(range(100), chunksize=10)) == list(range(1, 101))
        assert _dispatched(pool) - before == 10
        # Sized automatically: tiny items go many to a chunk.
        before = _dispatched(pool)
        assert list(pool.map(range(20_000))) == list(range(1, 20_001))
        assert _dispatched(pool) - before < 2_000


@pytest.mark.parametrize("mode", MODES)
def test_an_items_exception_fails_that_item_only(mode: str) -> None:
    with SPool(Items, mode=mode) as pool:
        pool.spawn()
        results = pool.map([1, 2, -1, 4, 5], chunksize=5)
        assert [next(results), next(results)] == [2, 3]
        with pytest.raises(ValueError, match="item -1 fails"):
            next(results)
        # The chunk went on past the failed item: the worker ran every item once.
        assert pool.call("seen_items") == [1, 2, -1, 4, 5]


def test_a_result_that_does_not_pickle_fails_its_item_only() -> None:
    with SPool(Items) as pool:
        pool.spawn()
        results = pool.map([1, "lock", 3], chunksize=3)
        assert next(results) == 2
        with pytest.raises(ResultPicklingError, match="item 1"):
            next(results)
        assert pool.call("seen_items") == [1, "lock", 3]


def test_a_crash_mid_chunk_fails_the_running_item_and_the_others_complete(tmp_path: Path) -> None:
    with _pool(Crashy, "process", str(tmp_path)) as pool:
        results = pool.map([(x, None) for x in range(10)], chunksize=10)
        assert [next(results) for _ in range(5)] == [0, 1, 2, 3, 4]
        with pytest.raises(WorkerCrashedError):
            next(results)
    # The items behind the crash ran once their chunk was re-queued item by item.
    assert {f"done-{x}" for x in range(5)} <= set(os.listdir(tmp_path))


def test_items_of_a_crashed_chunk_are_requeued(tmp_path: Path) -> None:
    marker = str(tmp_path / "crashed-once")
    log = tmp_path / "log"
    log.mkdir()
    with _pool(Crashy, "process", str(log)) as pool:
        assert list(pool.map([(x, marker) for x in range(10)], chunksize=10)) == list(range(10))
        assert os.path.exists(marker), "the chunk did crash its worker"
        assert pool.num_workers == 2, "the crashed worker was replaced"


def _batched_tasks(pool: SPool[Any]) -> int:
    return sum(int(w["batched_tasks"]) for w in pool.stats()["workers"])


def test_a_worker_is_handed_the_next_chunks_behind_the_one_it_runs() -> None:
    # Chunks are pipelined: a worker takes its share of the queued chunks in one go, though its
    # tasks are far from short (a 1 s task, then 20 ms chunks), so it never waits on the
    # supervisor between two of them. Other tasks of slow workers are never batched.
    with _pool(Sleepy, "process") as pool:
        blockers = [pool.submit_execute(1.0) for _ in range(2)]  # both workers busy, so the chunks queue
        assert list(pool.map([0.02] * 8, chunksize=1, window=8)) == [0.02] * 8
        assert [b.result(timeout=30) for b in blockers] == [1.0, 1.0]
        assert _batched_tasks(pool) >= 2, pool.stats()["workers"]
        before = _batched_tasks(pool)
        blockers = [pool.submit_execute(1.0) for _ in range(2)]
        plain = [pool.submit_execute(0.02) for _ in range(8)]
        assert [f.result(timeout=30) for f in blockers + plain] == [1.0] * 2 + [0.02] * 8
        assert _batched_tasks(pool) == before, "slow plain tasks were batched"


@pytest.mark.parametrize("sequence", [list, tuple, iter])
def test_a_crash_requeues_the_chunks_handed_over_behind_it(tmp_path: Path, sequence: Any) -> None:
    # One worker, one item per chunk, ten in flight: the chunks handed over behind the crashing
    # one never ran; they run on the replacement.
    marker = str(tmp_path / "crashed-once")
    log = tmp_path / "log"
    log.mkdir()
    with SPool(Crashy) as pool:
        pool.spawn(str(log))
        items = sequence([(x, marker) for x in range(10)])
        assert list(pool.map(items, chunksize=1, window=10)) == list(range(10))
        assert os.path.exists(marker), "the chunk did crash its worker"
        assert {f"done-{x}" for x in range(10)} <= set(os.listdir(log))


UNPICKLED_IN: list[str] = []


def _unpickled_here(_pad: bytes) -> str:
    UNPICKLED_IN.append(threading.current_thread().name)
    return "probe"


class ThreadProbe:
    """A result that records which thread of the parent unpickles it; 20 KB, as small replies
    are unpickled by the core as it hands them over, whichever thread takes them."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unpickled_here, (b"x" * 20_000,))


class Probes(SWorker):
    def execute(self, seconds: float) -> ThreadProbe:
        time.sleep(seconds)
        return ThreadProbe()


def test_chunk_replies_are_unpickled_by_the_thread_consuming_the_map() -> None:
    # The first chunk is slow; the others finish on the second worker while the map waits for
    # it. Their replies are not unpickled by the pool's completion thread (which would hold the
    # interpreter while the consuming thread waits for it), but by the consumer.
    UNPICKLED_IN.clear()
    with _pool(Probes, "process") as pool:
        assert list(pool.map([0.5] + [0.0] * 6, chunksize=1, window=7)) == ["probe"] * 7
    assert UNPICKLED_IN == [threading.current_thread().name] * 7


def test_a_task_timeout_applies_per_chunk_and_fails_the_slow_item_only() -> None:
    with _pool(Sleepy, "process", task_timeout=1.0) as pool:
        results = pool.map([0.0, 0.0, 30.0, 0.0], chunksize=4)
        assert [next(results), next(results)] == [0.0, 0.0]
        with pytest.raises(TaskTimeoutError):
            next(results)


@pytest.mark.parametrize("chunksize", [0, -1])
def test_chunksize_below_one_is_refused(chunksize: int) -> None:
    with SPool(Items, mode="thread") as pool:
        pool.spawn()
        with pytest.raises(ValueError, match="chunksize"):
            pool.map([1], chunksize=chunksize)
    with TaskWorker.options(mode="thread", max_workers=1).init() as tasks, pytest.raises(ValueError, match="chunksize"):
        tasks.map(abs, [1], chunksize=chunksize)


def test_progress_counts_items(capsys: pytest.CaptureFixture[str]) -> None:
    with SPool(Items, mode="thread") as pool:
        pool.spawn()
        assert list(pool.map(range(300), progress="items", chunksize=50)) == list(range(1, 301))
    assert "300/300" in capsys.readouterr().err


def test_the_map_stops_its_queued_chunks_when_closed() -> None:
    with SPool(Sleepy, mode="thread") as pool:
        pool.spawn()
        results = pool.map([0.2] * 40, chunksize=1, window=40)
        assert next(results) == 0.2
        results.close()  # the 38 or so chunks still queued are cancelled
        wait_until(lambda: pool.stats()["queued"] == 0, what="the queued chunks are cancelled")
        assert sum(w["tasks_done"] for w in pool.stats()["workers"]) <= 3, "cancelled chunks never run"


def test_asyncio_mode_awaits_the_items_of_a_chunk_together() -> None:
    with SPool(AsyncItems, mode="asyncio") as pool:
        pool.spawn()
        assert list(pool.map(range(100), chunksize=50)) == list(range(1, 101))
        # Ten items nap, five to a chunk: those of a chunk nap at once.
        assert pool.call("most_at_once") >= 5
        results = pool.map([1, -1, 3], chunksize=3)
        assert next(results) == 2
        with pytest.raises(ValueError, match="item -1 fails"):
            next(results)


# -- TaskPool / Executor.map ------------------------------------------------------------------


def _inc(x: int) -> int:
    if x == -1:
        raise ValueError("item -1 fails")
    return x + 1


@pytest.mark.parametrize("mode", MODES)
def test_executor_map_chunks_keep_order_and_per_item_failure(mode: str) -> None:
    with TaskWorker.options(mode=mode, max_workers=_workers(mode)).init() as pool:
        assert list(pool.map(_inc, range(300), chunksize=7)) == list(range(1, 301))
        assert list(pool.map(_inc, range(300))) == list(range(1, 301))
        assert sorted(pool.map(_inc, range(300), ordered=False, window=4)) == list(range(1, 301))
        assert list(pool.map(pow, range(10), range(10), chunksize=3)) == [pow(i, i) for i in range(10)]
        results = pool.map(_inc, [1, -1, 3], chunksize=3)
        assert next(results) == 2
        with pytest.raises(ValueError, match="item -1 fails"):
            next(results)


def test_executor_map_sends_chunks_and_submits_at_once(tmp_path: Path) -> None:
    pool = TaskWorker.options(mode="process", max_workers=2).init()
    spool = pool.spool
    assert spool is not None
    before = _dispatched(spool)
    pool.map(Path.touch, [tmp_path / f"f{i}" for i in range(30)], chunksize=10)  # never iterated
    pool.shutdown(wait=True)
    assert len(os.listdir(tmp_path)) == 30
    assert _dispatched(spool) - before == 3


def test_executor_map_resolves_futures_among_the_items() -> None:
    with TaskWorker.options(mode="thread", max_workers=2).init() as pool:
        futures = [pool.submit(_inc, i) for i in range(5)]
        assert list(pool.map(_inc, futures, chunksize=5)) == [i + 2 for i in range(5)]


def test_ray_mode_runs_chunks(ray_cluster: object) -> None:
    with SPool(Items, mode="ray", actor_options={"num_cpus": 0}) as pool:
        pool.spawn()
        before = _dispatched(pool)
        assert list(pool.map(range(100), chunksize=10)) == list(range(1, 101))
        assert _dispatched(pool) - before == 10
        results = pool.map([1, -1, 3], chunksize=3)
        assert next(results) == 2
        with pytest.raises(ValueError, match="item -1 fails"):
            next(results)
