"""The data path: shared-memory rings (default) and pipes, direct-lane calls, large arrays."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from conftest import dev_shm, wait_until
from stateful_pool import SPool, WorkerCrashedError
from workers import Faulty


class Arrays(Faulty):
    def double(self, a: np.ndarray) -> np.ndarray:
        assert a.flags.writeable, "arrays arrive writable"
        a *= 2
        return a

    def make(self, n: int) -> np.ndarray:
        return np.arange(n, dtype=np.int64)

    def keep(self, a: np.ndarray) -> int:
        self.kept = a
        return int(a.nbytes)

    def kept_sum(self) -> int:
        return int(self.kept.sum())


@pytest.mark.parametrize("shm_capacity", [8 << 20, 64 << 10, None], ids=["shm", "small-ring", "pipes"])
def test_large_arrays_round_trip_intact_and_writable(shm_capacity: int | None) -> None:
    data = np.arange(3 << 20, dtype=np.int64)  # 24 MiB: bigger than every ring here
    with SPool(Arrays, shm_capacity=shm_capacity) as pool:
        pool.spawn()
        direct = pool.call("double", data)
        queued = pool.submit_call("double", data).result(timeout=60)
        for result in (direct, queued):
            assert result.dtype == np.int64 and result.shape == data.shape
            assert np.array_equal(result, data * 2)
            result[0] = -1  # writable on this side too
        made = pool.call("make", 1000)
        assert made.sum() == 999 * 1000 // 2


@pytest.mark.parametrize("shm_capacity", [8 << 20, None], ids=["shm", "pipes"])
def test_recycled_receive_buffers_never_hold_arrays_still_in_use(shm_capacity: int | None) -> None:
    n = 1 << 20  # 8 MiB of int64: large enough for its buffer to be recycled once released
    with SPool(Arrays, shm_capacity=shm_capacity) as pool:
        pool.spawn()
        ones = np.ones(n, dtype=np.int64)
        assert pool.call("keep", ones) == ones.nbytes  # the worker holds on to what it was sent
        kept_here = pool.call("double", ones)  # and we to what came back
        for k in range(3, 9):
            out = pool.call("double", np.full(n, k, dtype=np.int64))
            assert (out == 2 * k).all()
            del out  # its buffer may serve the next reply
        assert pool.call("kept_sum") == n
        assert (kept_here == 2).all()


@pytest.mark.parametrize("shm_capacity", [8 << 20, None], ids=["shm", "pipes"])
def test_many_small_calls_both_ways(shm_capacity: int | None) -> None:
    with SPool(Faulty, shm_capacity=shm_capacity) as pool:
        pool.spawn()
        pool.spawn()
        assert [pool.execute(i) for i in range(300)] == list(range(300))
        futures = [pool.submit_execute({"i": i, "pad": "x" * (i % 7000)}) for i in range(2000)]
        assert [f.result(timeout=60)["i"] for f in futures] == list(range(2000))


@pytest.mark.parametrize("fault", ["sigkill", "exit", "segfault"])
def test_crash_during_a_direct_call(fault: str) -> None:
    with SPool(Faulty) as pool:
        old = pool.spawn(tag="d")["pid"]
        with pytest.raises(WorkerCrashedError) as info:
            pool.call("boom", fault)
        expected = {"sigkill": (None, signal.SIGKILL), "exit": (3, None), "segfault": (None, signal.SIGSEGV)}[fault]
        assert (info.value.exitcode, info.value.signal) == expected

        def restarted() -> bool:
            (w,) = pool.stats()["workers"]
            return w["state"] == "idle" and w["pid"] not in (None, old)

        wait_until(restarted, what="the worker to be restarted")
        assert pool.call("whoami")["tag"] == "d"
        assert pool.execute(5) == 5


@pytest.mark.parametrize("round_", range(5))
def test_direct_calls_and_queued_tasks_share_workers_safely(round_: int) -> None:
    # Several rounds: the races between direct-lane claims and the dispatcher are timing-bound.
    import concurrent.futures
    import threading

    with SPool(Faulty) as pool:
        pool.spawn()
        pool.spawn()
        errors: list[BaseException] = []

        def caller(k: int) -> None:
            try:
                for i in range(200):
                    assert pool.execute((k, i)) == (k, i)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        futures = [pool.submit_execute(i) for i in range(600)]
        for t in threads:
            t.join()
        assert not errors
        assert len(list(concurrent.futures.as_completed(futures, timeout=60))) == 600
        assert sorted(f.result() for f in futures) == list(range(600))
        assert sum(w["tasks_done"] for w in pool.stats()["workers"]) == 1200


def test_shared_memory_leaves_nothing_in_dev_shm() -> None:
    before = dev_shm()
    with SPool(Faulty) as pool:
        pid = pool.spawn()["pid"]
        pool.execute(1)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pool.stats()["workers"][0]["restarts"] == 1, what="a restart")
        pool.execute(2)
    assert dev_shm() <= before
