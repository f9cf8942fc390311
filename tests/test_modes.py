"""The same SPool behaviour in every execution mode (process, thread, asyncio, sync, ray), in
the spirit of loky's ``_executor_mixin``: one parametrized ``mode`` fixture, shared test bodies.
Mode-specific behaviour (asyncio concurrency, in-process objects) follows the matrix."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import wait_until
from mode_workers import AsyncEcho, CrashLoop, ModeEcho
from stateful_pool import (
    NoWorkersError,
    PoolShutDownError,
    RemoteTraceback,
    SPool,
    TaskTimeoutError,
    WorkerCrashedError,
)
from stateful_pool.modes import MODES
from workers import FailingSpawn

STATS_KEYS = {
    "id",
    "state",
    "pid",
    "restarts",
    "tasks_done",
    "tasks_failed",
    "last_error",
    "dispatched",
    "batches",
    "batched_tasks",
    "health_failures",
}

MakePool = Callable[..., SPool[Any]]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return str(request.param)


@pytest.fixture
def make_pool(mode: str) -> MakePool:
    """``SPool`` in this mode; asyncio workers take one call at a time unless asked otherwise,
    so queueing tests mean the same thing in every mode."""

    def make(cls: type = ModeEcho, *args: Any, **kwargs: Any) -> SPool[Any]:
        kwargs.setdefault("mode", mode)
        if mode == "asyncio":
            kwargs.setdefault("max_concurrency", 1)
        if mode == "ray":
            kwargs.setdefault("actor_options", {"num_cpus": 0.1})
        return SPool(cls, *args, **kwargs)

    return make


def busy(pool: SPool[Any]) -> bool:
    return any(w["state"] == "busy" for w in pool.stats()["workers"])


def test_spawn_args_per_worker_broadcast_and_state(make_pool: MakePool) -> None:
    with make_pool() as pool:
        first = pool.spawn(tag="a")
        second = pool.submit_spawn(tag="b").result(timeout=30)
        assert (first["tag"], second["tag"]) == ("a", "b")
        assert sorted(w["tag"] for w in pool.broadcast("whoami")) == ["a", "b"]
        assert pool.num_workers == 2
        for i in range(4):
            assert pool.execute(i) == i
        assert sum(w["calls"] for w in pool.broadcast("whoami")) == 4


def test_futures_wait_as_completed_asyncio_and_map(make_pool: MakePool) -> None:
    with make_pool() as pool:
        pool.spawn()
        pool.spawn()
        futures = [pool.submit_execute(i) for i in range(40)]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        _, not_done = concurrent.futures.wait(futures, timeout=30)
        assert not not_done
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == list(range(40))

        async def main() -> list[Any]:
            return list(await asyncio.gather(*(pool.async_execute(i) for i in range(10))))

        assert asyncio.run(main()) == list(range(10))
        assert list(pool.map(range(30))) == list(range(30))
        assert sorted(pool.map(iter(range(30)), ordered=False, window=4)) == list(range(30))


def test_errors_carry_type_message_and_worker_traceback(make_pool: MakePool) -> None:
    with make_pool() as pool:
        pool.spawn()
        with pytest.raises(ValueError, match="bad input") as info:
            pool.call("fail", "bad input")
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "in fail" in cause.tb and "raise ValueError(message)" in cause.tb
        assert isinstance(pool.submit_call("fail", "again").exception(timeout=30), ValueError)
        assert pool.execute(1) == 1, "the pool keeps serving"
        with pytest.raises(AttributeError, match="no public method 'nope'"):
            pool.call("nope")


def test_spawn_error_reaches_caller_and_leaves_no_worker(make_pool: MakePool) -> None:
    with make_pool(FailingSpawn) as pool:
        with pytest.raises(RuntimeError, match="no gpu") as info:
            pool.spawn("no gpu")
        assert isinstance(info.value.__cause__, RemoteTraceback)
        with pytest.raises(RuntimeError, match="still none"):
            pool.submit_spawn("still none").result(timeout=30)
        assert pool.num_workers == 0


def test_no_workers_and_after_shutdown(make_pool: MakePool) -> None:
    pool = make_pool()
    with pytest.raises(NoWorkersError):
        pool.execute(1)
    assert isinstance(pool.submit_execute(1).exception(timeout=5), NoWorkersError)
    pool.spawn()
    pool.shutdown()
    with pytest.raises(PoolShutDownError, match="after shutdown"):
        pool.execute(1)
    assert isinstance(pool.submit_execute(1).exception(timeout=5), PoolShutDownError)
    assert all(w["state"] in ("stopped", "failed") for w in pool.stats()["workers"])
    pool.shutdown()  # idempotent


def test_stats_have_the_same_keys_in_every_mode(make_pool: MakePool, mode: str) -> None:
    with make_pool() as pool:
        pool.spawn()
        for i in range(3):
            pool.execute(i)
        stats = pool.stats()
        (worker,) = stats["workers"]
        assert set(worker) == STATS_KEYS
        assert worker["state"] == "idle" and worker["tasks_done"] == 3 and worker["restarts"] == 0
        assert stats["queued"] == 0 and stats["live_workers"] == 1
        if mode in ("thread", "asyncio", "sync"):
            assert worker["pid"] == os.getpid(), "in-process workers live in the caller's process"
        else:
            assert worker["pid"] != os.getpid()


def test_graceful_shutdown_runs_queued_tasks(make_pool: MakePool) -> None:
    pool = make_pool()
    pool.spawn()
    futures = [pool.submit_call("sleep", 0.01) for _ in range(10)]
    pool.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in futures)


# Sync mode promises that a future comes back done: a task submitted from one thread never
# waits in the queue or runs behind the caller's back. The tests below about queued and running
# tasks assert that promise in sync mode instead: nothing is left to cancel, kill or refuse.


def test_shutdown_cancel_pending_cancels_queued_only(make_pool: MakePool, mode: str) -> None:
    pool = make_pool()
    pool.spawn()
    if mode == "sync":
        futures = [pool.submit_execute(i) for i in range(5)]
        assert all(f.done() for f in futures), "each ran as it was submitted"
        pool.shutdown(cancel_pending=True)
        assert [f.result() for f in futures] == list(range(5)), "nothing was pending to cancel"
        return
    running = pool.submit_call("sleep", 0.5)
    wait_until(lambda: busy(pool), what="the task to start")
    queued = [pool.submit_execute(i) for i in range(5)]
    pool.shutdown(cancel_pending=True)
    assert isinstance(running.result(timeout=10), int)
    assert all(f.cancelled() for f in queued)


def test_shutdown_kill_fails_the_running_task(make_pool: MakePool, mode: str) -> None:
    pool = make_pool()
    pool.spawn()
    if mode == "sync":
        done = pool.submit_call("sleep", 0.01)
        assert done.done()
        pool.shutdown(kill=True)
        assert isinstance(done.result(), int), "a finished task keeps its result"
        assert all(w["state"] == "stopped" for w in pool.stats()["workers"])
        return
    # A thread cannot be killed: its call is abandoned and ends on its own, so keep it short.
    running = pool.submit_call("sleep", 1.5)
    wait_until(lambda: busy(pool), what="the task to start")
    started = time.monotonic()
    pool.shutdown(kill=True)
    assert time.monotonic() - started < 1.0
    assert isinstance(running.exception(timeout=5), PoolShutDownError)


def test_queue_size_backpressure(make_pool: MakePool, mode: str) -> None:
    with make_pool(queue_size=2, submit_timeout=0.2) as pool:
        pool.spawn()
        if mode == "sync":
            futures = [pool.submit_execute(i) for i in range(10)]
            assert [f.result(timeout=0) for f in futures] == list(range(10)), "the queue never fills"
            assert pool.stats()["queued"] == 0
            return
        blocker = pool.submit_call("sleep", 0.8)
        wait_until(lambda: busy(pool), what="the task to start")
        queued = [pool.submit_execute(i) for i in range(2)]
        assert isinstance(pool.submit_execute(99).exception(timeout=5), queue.Full)
        with pytest.raises(queue.Full):
            pool.execute(100)
        assert blocker.result(timeout=10) > 0
        assert [f.result(timeout=10) for f in queued] == [0, 1]


def test_cancel_removes_a_queued_task(make_pool: MakePool, mode: str) -> None:
    with make_pool() as pool:
        pool.spawn()
        if mode == "sync":
            ran = pool.submit_execute(5)
            assert not ran.cancel() and not ran.cancelled(), "a done future cannot be cancelled"
            assert ran.result(timeout=0) == 5 and pool.call("whoami")["calls"] == 1, "it ran"
            return
        running = pool.submit_call("sleep", 0.3)
        wait_until(lambda: busy(pool), what="the task to start")
        queued = pool.submit_call("whoami")
        assert queued.cancel() and queued.cancelled()
        assert not running.cancel(), "a running task cannot be cancelled"
        running.result(timeout=10)
        assert pool.call("whoami")["calls"] == 0, "the cancelled task never ran"


def test_task_timeout_fails_the_task_and_replaces_the_worker(make_pool: MakePool, mode: str) -> None:
    with make_pool(task_timeout=0.3) as pool:
        pool.spawn(tag="t")
        # busy_sleep runs bytecode: a thread worker is interrupted, not just abandoned; an
        # asyncio worker cancels a coroutine (blocking code would hold up its whole loop).
        started = time.monotonic()
        with pytest.raises(TaskTimeoutError):
            pool.call("nap" if mode == "asyncio" else "busy_sleep", 5.0)
        assert time.monotonic() - started < 4.0, "the call was interrupted, not waited out"
        assert pool.execute(5) == 5, "a fresh worker serves"
        assert pool.call("whoami")["tag"] == "t", "restarted with its own spawn arguments"
        (worker,) = pool.stats()["workers"]
        assert worker["restarts"] == 1 and worker["tasks_failed"] == 1


def test_a_crashed_worker_fails_its_call_and_is_restarted(make_pool: MakePool) -> None:
    with make_pool() as pool:
        pool.spawn(tag="c", caller_pid=os.getpid())
        pool.execute(1)
        with pytest.raises(WorkerCrashedError):
            pool.call("crash")
        wait_until(lambda: pool.num_workers == 1, what="the worker to come back")
        assert pool.call("whoami") == {**pool.call("whoami"), "tag": "c", "calls": 0}
        (worker,) = pool.stats()["workers"]
        assert worker["restarts"] == 1 and worker["last_error"]


def test_kill_a_running_task(make_pool: MakePool, mode: str) -> None:
    with make_pool() as pool:
        pool.spawn()
        if mode == "sync":
            done = pool.submit_call("busy_sleep", 0.01)
            assert not done.kill(), "nothing is running to kill"
            assert done.result(timeout=0) == os.getpid() and pool.execute(2) == 2
            return
        future = pool.submit_call("nap" if mode == "asyncio" else "busy_sleep", 5.0)
        wait_until(lambda: busy(pool), what="the task to start")
        assert future.kill()
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=10)
        assert pool.execute(2) == 2


@pytest.mark.parametrize(
    ("balancer", "canonical"),
    [("round_robin", "round_robin"), ("least_active", "active"), ("least_total", "total"), ("random", "random")],
)
def test_load_balancing_is_reported_and_used(make_pool: MakePool, balancer: str, canonical: str) -> None:
    with make_pool(load_balancing=balancer) as pool:
        pool.spawn(tag="a")
        pool.spawn(tag="b")
        for i in range(40):  # through the queue: a blocking call may skip it (process mode)
            assert pool.submit_execute(i).result(timeout=30) == i
        stats = pool.stats()
        assert stats["load_balancing"] == canonical and stats["dispatched"] >= 40
        done = sorted(w["tasks_done"] for w in stats["workers"])
        assert sum(done) == 40
        if balancer in ("round_robin", "least_total"):
            assert done == [20, 20], "one call at a time: the two take turns"
        else:
            # One call at a time finds both idle: any idle worker will do; random picks both
            # (all 40 on one worker has odds of 2^-39).
            assert balancer != "random" or done[0] > 0


def test_restarts_after_task_crashes_do_not_count(make_pool: MakePool) -> None:
    with make_pool(max_restarts=1, restart_window=60) as pool:
        pool.spawn(tag="c", caller_pid=os.getpid())
        for _ in range(3):
            with pytest.raises(WorkerCrashedError):
                pool.call("crash")
            assert pool.call("whoami")["tag"] == "c", "the crash consumed its task: the worker is back"
        (worker,) = pool.stats()["workers"]
        assert worker["restarts"] == 3 and worker["state"] == "idle"


def test_a_crash_loop_gives_up_within_the_restart_window(make_pool: MakePool, tmp_path: Any) -> None:
    with make_pool(CrashLoop, max_restarts=2, restart_window=60) as pool:
        pool.spawn(str(tmp_path / "spawns"), caller_pid=os.getpid())
        with pytest.raises(WorkerCrashedError):
            pool.call("crash")
        # Queued while the worker restarts: fails once its setup has failed 3 times in 60 s.
        with pytest.raises(NoWorkersError, match="gave up: crashed in spawn 3 times in 60 s"):
            pool.execute(1)
        (worker,) = pool.stats()["workers"]
        assert worker["state"] == "failed" and worker["restarts"] == 3


def test_failures_that_leave_the_restart_window_are_forgiven(make_pool: MakePool, tmp_path: Any) -> None:
    # The backoff between restarts (10 ms and up) outlasts a 1 ms window: each failed setup is
    # alone in it, so one restart allowed per window is enough to come back after four.
    with make_pool(CrashLoop, max_restarts=1, restart_window=0.001) as pool:
        pool.spawn(str(tmp_path / "spawns"), failures=4, caller_pid=os.getpid())
        with pytest.raises(WorkerCrashedError):
            pool.call("crash")
        assert pool.execute(1) == 1, "queued while the worker restarted, then run"
        (worker,) = pool.stats()["workers"]
        assert worker["restarts"] == 5 and worker["state"] in ("idle", "busy")


def test_sync_stats_match_process_mode(tmp_path: Any) -> None:
    def run(mode: str) -> dict[str, Any]:
        with SPool(ModeEcho, mode=mode, load_balancing="least_total", max_restarts=1) as pool:
            pool.spawn(caller_pid=os.getpid())
            pool.spawn(caller_pid=os.getpid())
            for i in range(5):
                pool.submit_execute(i).result(timeout=30)
            assert isinstance(pool.submit_call("fail", "x").exception(timeout=30), ValueError)
            pool.broadcast("whoami")
            assert isinstance(pool.submit_call("crash").exception(timeout=30), WorkerCrashedError)
            pool.submit_execute(0).result(timeout=30)
            wait_until(lambda: all(w["state"] == "idle" for w in pool.stats()["workers"]), what="the restart")
            stats = pool.stats()
            for worker in stats["workers"]:
                del worker["pid"]
                worker["last_error"] = bool(worker["last_error"])
            return stats

    assert run("sync") == run("process")


# -- mode-specific behaviour ------------------------------------------------------------------


def test_sync_futures_are_done_on_return_and_run_in_the_caller() -> None:
    with SPool(ModeEcho, mode="sync") as pool:
        assert pool.submit_spawn(tag="s").done()
        future = pool.submit_execute(7)
        assert future.done() and future.result() == 7
        assert pool.call("whoami")["pid"] == os.getpid()


def test_sync_serves_several_threads_and_their_futures_are_done_on_return() -> None:
    import threading

    with SPool(ModeEcho, mode="sync") as pool:
        pool.spawn()
        pool.spawn()
        not_done: list[int] = []

        def caller(k: int) -> None:
            for i in range(150):
                future = pool.submit_execute(i)
                if not future.done() or future.result() != i or pool.execute(k) != k:
                    not_done.append(i)

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads) and not_done == []
        assert sum(w["tasks_done"] for w in pool.stats()["workers"]) == 4 * 150 * 2


def test_sync_interrupts_land_in_the_call_never_in_the_caller() -> None:
    # Calls that end about when their timeout fires: the interrupt raised in the calling thread
    # must be caught before the caller's own code runs again.
    with SPool(ModeEcho, mode="sync", task_timeout=0.02, max_restarts=1000) as pool:
        pool.spawn()
        timed_out = 0
        for i in range(60):
            try:
                pool.call("busy_sleep", 0.012 + (i % 6) * 0.003)
            except TaskTimeoutError:
                timed_out += 1
            for _ in range(2000):  # bytecode where a stray interrupt would land
                pass
        assert pool.execute(1) == 1
        assert pool.stats()["workers"][0]["tasks_failed"] == timed_out


def test_in_process_modes_pass_results_by_reference() -> None:
    with SPool(ModeEcho, mode="thread") as pool:
        pool.spawn()
        result = pool.call("unpicklable_result")  # a lock: process mode could not return it
        assert result.acquire(blocking=False)


def test_asyncio_runs_max_concurrency_calls_at_once_on_one_loop() -> None:
    with SPool(AsyncEcho, mode="asyncio", max_concurrency=8) as pool:
        assert pool.spawn(tag="loop")["tag"] == "loop"
        started = time.monotonic()
        assert [f.result(timeout=10) for f in [pool.submit_call("nap", 0.3) for _ in range(8)]] == [0.3] * 8
        assert time.monotonic() - started < 1.5, "8 naps of 0.3 s overlapped"
        (worker,) = pool.stats()["workers"]
        assert worker["tasks_done"] == 8, "the lanes of one loop are reported as one worker"
        with pytest.raises(KeyError, match="k") as info:
            pool.call("afail", "k")
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert len(pool.broadcast("whoami")) == 1


def test_asyncio_timeout_cancels_the_coroutine_and_keeps_the_loop() -> None:
    with SPool(AsyncEcho, mode="asyncio", max_concurrency=4, task_timeout=0.2) as pool:
        pool.spawn()
        slow = pool.submit_call("nap", 5)
        fast = pool.submit_call("nap", 0.01)
        assert isinstance(slow.exception(timeout=5), TaskTimeoutError)
        assert fast.result(timeout=5) == 0.01
        assert pool.execute(3) == 3
        (worker,) = pool.stats()["workers"]
        assert worker["tasks_failed"] == 1 and worker["tasks_done"] >= 2


def test_invalid_mode_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        SPool(ModeEcho, mode="fiber")
    with pytest.raises(ValueError, match="actor_options"):
        SPool(ModeEcho, mode="thread", actor_options={"num_cpus": 1})
    with pytest.raises(ValueError, match="max_concurrency"):
        SPool(ModeEcho, mode="thread", max_concurrency=4)
    with pytest.raises(ValueError, match="max_memory_per_worker"):
        SPool(ModeEcho, mode="thread", max_memory_per_worker=1 << 30)
    with pytest.raises(ValueError, match="restart"):
        SPool(ModeEcho, mode="sync", restart="sometimes")


@pytest.mark.parametrize("mode", ["thread", "asyncio", "sync"])
def test_in_process_modes_pass_arguments_as_they_are(mode: str) -> None:
    import threading

    shared: list[int] = [1]
    lock = threading.Lock()  # unpicklable: only an in-process worker can take it
    with SPool(ModeEcho, mode=mode) as pool:
        pool.spawn(caller_pid=os.getpid())
        back = pool.execute({"list": shared, "lock": lock})
        assert back["list"] is shared and back["lock"] is lock
