"""`PoolFuture` makes its condition variable lazily (only when something waits on it while it is
pending); these check that it still honours the whole `concurrent.futures.Future` contract,
alone and with waiters racing the pool's completion thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from pathlib import Path

import pytest
from stateful_pool import PoolFuture, SPool
from workers import Echo, Ordered


def test_finished_before_anyone_waits() -> None:
    f: PoolFuture[int] = PoolFuture()
    assert not f.done() and not f.running() and not f.cancelled()
    f.set_result(5)
    assert f.done() and f.result() == 5 and f.exception() is None
    with pytest.raises(InvalidStateError):
        f.set_result(6)
    done, not_done = concurrent.futures.wait([f], timeout=0)
    assert done == {f} and not not_done
    assert list(concurrent.futures.as_completed([f], timeout=0)) == [f]
    seen: list[Future[int]] = []
    f.add_done_callback(seen.append)  # runs at once: already done
    assert seen == [f]
    assert "finished" in repr(f)


def test_waiter_first_then_result_from_another_thread() -> None:
    f: PoolFuture[str] = PoolFuture()
    seen: list[Future[str]] = []
    f.add_done_callback(seen.append)
    threading.Timer(0.01, f.set_result, ("late",)).start()
    assert f.result(timeout=10) == "late"
    assert seen == [f]


def test_exception() -> None:
    f: PoolFuture[int] = PoolFuture()
    f.set_exception(ValueError("x"))
    assert isinstance(f.exception(), ValueError)
    with pytest.raises(ValueError):
        f.result()
    with pytest.raises(InvalidStateError):
        f.set_exception(ValueError("again"))


def test_cancelled_queued_task_is_seen_by_waiters(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with SPool(Ordered) as pool:
        pool.spawn()
        held = pool.submit_call("wait_for", str(gate))
        queued = pool.submit_execute(1)
        waiting = threading.Thread(target=lambda: concurrent.futures.wait([queued], timeout=30))
        waiting.start()
        assert queued.cancel() and queued.cancelled() and queued.done()
        waiting.join(30)
        assert not waiting.is_alive(), "wait() saw the cancellation"
        with pytest.raises(CancelledError):
            queued.result()
        with pytest.raises(InvalidStateError):
            queued.set_result(1)
        gate.touch()
        assert held.result(timeout=30) is True


def test_asyncio_wrap_future_before_and_after_completion() -> None:
    async def main() -> list[int]:
        early: PoolFuture[int] = PoolFuture()
        late: PoolFuture[int] = PoolFuture()
        late.set_result(2)
        asyncio.get_running_loop().call_later(0.01, early.set_result, 1)
        return list(await asyncio.gather(asyncio.wrap_future(early), asyncio.wrap_future(late)))

    assert asyncio.run(main()) == [1, 2]


@pytest.mark.parametrize(
    "waiter",
    [
        pytest.param(
            lambda fs: sorted(f.result() for f in concurrent.futures.as_completed(fs, timeout=60)), id="as_completed"
        ),
        pytest.param(lambda fs: sorted(f.result() for f in concurrent.futures.wait(fs, timeout=60).done), id="wait"),
        pytest.param(lambda fs: sorted(f.result(timeout=60) for f in reversed(fs)), id="result"),
    ],
)
def test_waiters_racing_the_completion_thread(waiter: Callable[[list[PoolFuture[int]]], list[int]]) -> None:
    n = 3000
    with SPool(Echo) as pool:
        for _ in range(2):
            pool.submit_spawn()
        futures = [pool.submit_execute(i) for i in range(n)]
        called = threading.Semaphore(0)
        for f in futures[::3]:
            f.add_done_callback(lambda _f: called.release())
        results: list[list[int]] = []
        threads = [threading.Thread(target=lambda: results.append(waiter(futures))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results == [list(range(n))] * 3
        for _ in futures[::3]:
            assert called.acquire(timeout=10), "every done-callback ran"
