"""Fault injection: every moment a worker can die x every way it dies, plus timeouts,
cancellation, recycling, restart policies and leak checks. Each case is bounded by
pytest-timeout, so a hang is a failure."""

from __future__ import annotations

import concurrent.futures
import gc
import os
import signal
import threading
from pathlib import Path

import pytest
from conftest import child_pids, open_fds, pid_alive, wait_until
from stateful_pool import NoWorkersError, SPool, TaskTimeoutError, WorkerCrashedError
from workers import ArgumentBomb, CrashingSpawn, Faulty, SpawnBomb

FAULTS = {
    "exit": {"exitcode": 3, "signal": None},
    "sigkill": {"exitcode": None, "signal": signal.SIGKILL},
    "segfault": {"exitcode": None, "signal": signal.SIGSEGV},
}


def assert_crash(exc: BaseException | None, fault: str) -> None:
    assert isinstance(exc, WorkerCrashedError), repr(exc)
    expected = FAULTS[fault]
    assert exc.exitcode == expected["exitcode"]
    assert exc.signal == expected["signal"]
    assert exc.worker_id == 0


def wait_restarted(pool: SPool[Faulty], old_pid: int) -> dict[str, object]:
    def restarted() -> bool:
        (w,) = pool.stats()["workers"]
        return w["state"] == "idle" and w["pid"] not in (None, old_pid)

    wait_until(restarted, what="the worker to be restarted")
    (worker,) = pool.stats()["workers"]
    assert worker["restarts"] == 1
    assert not pid_alive(old_pid)
    return worker


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("moment", ["unpickling arguments", "execute", "pickling the result"])
def test_crash_during_a_task_fails_only_that_task_and_restarts_with_same_spawn_args(moment: str, fault: str) -> None:
    with SPool(Faulty) as pool:
        old_pid = pool.spawn(tag="gpu-3")["pid"]
        crashing = {
            "unpickling arguments": lambda: pool.submit_call("take", ArgumentBomb(fault)),
            "execute": lambda: pool.submit_call("boom", fault),
            "pickling the result": lambda: pool.submit_call("boom_result", fault),
        }[moment]()
        queued = [pool.submit_execute(i) for i in range(5)]
        assert_crash(crashing.exception(timeout=20), fault)
        assert [f.result(timeout=20) for f in queued] == list(range(5)), "queued tasks are not lost"
        worker = wait_restarted(pool, old_pid)
        assert "died while running a task" in worker["last_error"]
        me = pool.call("whoami")
        assert me["tag"] == "gpu-3", "spawn ran again with the arguments it was first given"
        assert me["pid"] == worker["pid"]


@pytest.mark.parametrize("fault", FAULTS)
def test_crash_during_spawn_raises_and_leaves_no_process(fault: str) -> None:
    with SPool(SpawnBomb) as pool:
        with pytest.raises(WorkerCrashedError, match="died during setup") as info:
            pool.spawn(fault)
        assert info.value.exitcode == FAULTS[fault]["exitcode"]
        assert info.value.signal == FAULTS[fault]["signal"]
        assert not child_pids()
        assert pool.stats()["workers"] == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM])
def test_crash_while_idle_is_noticed_and_the_worker_restarted(sig: int) -> None:
    with SPool(Faulty) as pool:
        old_pid = pool.spawn(tag="idle")["pid"]
        os.kill(old_pid, sig)
        worker = wait_restarted(pool, old_pid)
        assert f"killed by signal {sig}" in worker["last_error"]
        assert pool.call("whoami")["tag"] == "idle"


def test_crashes_spread_over_two_workers_lose_no_queued_task() -> None:
    with SPool(Faulty) as pool:
        pool.spawn()
        pool.spawn()
        futures = []
        for i in range(40):
            futures.append(pool.submit_call("boom", "exit") if i % 10 == 0 else pool.submit_execute(i))
        for i, f in enumerate(futures):
            if i % 10 == 0:
                assert isinstance(f.exception(timeout=30), WorkerCrashedError)
            else:
                assert f.result(timeout=30) == i


def test_task_timeout_fails_the_task_and_replaces_the_worker() -> None:
    with SPool(Faulty, task_timeout=0.5) as pool:
        old_pid = pool.spawn(tag="t")["pid"]
        with pytest.raises(TaskTimeoutError, match=r"timed out after 0\.500 s"):
            pool.call("sleep", 30)
        wait_restarted(pool, old_pid)
        assert pool.execute(1) == 1
        # A per-call timeout overrides the pool's default.
        assert pool.options(timeout=5).call("sleep", 0.8) > 0


def test_per_call_timeout_view() -> None:
    with SPool(Faulty) as pool:
        old_pid = pool.spawn()["pid"]
        future = pool.options(timeout=0.3).submit_call("sleep", 30)
        assert isinstance(future.exception(timeout=20), TaskTimeoutError)
        wait_restarted(pool, old_pid)
        assert pool.call("sleep", 0.5) > 0, "the view's timeout does not leak into the pool"


def test_kill_a_running_task() -> None:
    with SPool(Faulty) as pool:
        old_pid = pool.spawn()["pid"]
        running = pool.submit_call("sleep", 30)
        wait_until(lambda: pool.stats()["workers"][0]["state"] == "busy", what="the task to start")
        assert not running.cancel()
        assert running.kill()
        with pytest.raises(concurrent.futures.CancelledError):
            running.result(timeout=20)
        wait_restarted(pool, old_pid)
        assert pool.execute(2) == 2


def test_max_tasks_per_worker_recycles_between_tasks() -> None:
    # The rule: after its 3rd task a worker's replacement starts while it keeps serving, and
    # takes over between tasks once ready; each process serves at least 3 tasks.
    with SPool(Faulty, max_tasks_per_worker=3) as pool:
        pool.spawn(tag="r")
        pids = [pool.call("sleep", 0) for _ in range(3)]
        assert len(set(pids)) == 1
        for recycles in (1, 2):
            wait_until(lambda: pool.call("sleep", 0) != pids[-1], what="the replacement to take over")
            pids.append(pool.stats()["workers"][0]["pid"])
            assert [pool.call("sleep", 0) for _ in range(2)] == [pids[-1]] * 2
            assert pool.stats()["workers"][0]["restarts"] == recycles
        assert len(set(pids)) == 3
        assert pool.call("whoami")["tag"] == "r"


def test_max_memory_per_worker_recycles_a_bloated_worker() -> None:
    with SPool(Faulty, max_memory_per_worker=150 << 20) as pool:
        pool.spawn()
        small = pool.call("allocate", 1)
        assert pool.call("sleep", 0) == small, "under the limit: same worker"
        big = pool.call("allocate", 200)
        # Over the limit: replaced once its replacement is ready (it serves until then).
        wait_until(lambda: pool.call("sleep", 0) != big, what="the bloated worker to be replaced")
        assert pool.stats()["workers"][0]["restarts"] == 1


def test_restart_never_leaves_the_pool_without_workers() -> None:
    with SPool(Faulty, restart="never") as pool:
        pool.spawn()
        crashing = pool.submit_call("boom", "exit")
        queued = pool.submit_execute(1)
        assert isinstance(crashing.exception(timeout=20), WorkerCrashedError)
        assert isinstance(queued.exception(timeout=20), NoWorkersError)
        with pytest.raises(NoWorkersError):
            pool.execute(2)
        assert pool.stats()["workers"][0]["state"] == "failed"


def test_a_crash_loop_stops_with_a_clear_error(tmp_path: Path) -> None:
    with SPool(CrashingSpawn, max_restarts=3, restart_window=60) as pool:
        pool.spawn(str(tmp_path / "spawned-once"))
        with pytest.raises(WorkerCrashedError):
            pool.execute()
        wait_until(lambda: "gave up" in (pool.stats()["workers"][0]["last_error"] or ""), what="the worker to give up")
        (worker,) = pool.stats()["workers"]
        assert worker["state"] == "failed"
        # The restart after the task crash is free (the crash consumed its task); the failed
        # spawns that follow are the crash loop: three restarts allowed, the fourth failure ends it.
        assert worker["restarts"] == 4
        assert "gave up: crashed in spawn 4 times in 60 s" in worker["last_error"]
        with pytest.raises(NoWorkersError, match="worker 0 gave up: crashed in spawn"):
            pool.execute()


def test_crash_retries_run_the_task_again_elsewhere(tmp_path: Path) -> None:
    marker = str(tmp_path / "crashed")
    with SPool(Faulty, crash_retries=1) as pool:
        pool.spawn()
        pool.spawn()
        assert pool.call("crash_once", marker) in {w["pid"] for w in pool.stats()["workers"]}
    with SPool(Faulty) as pool:
        pool.spawn()
        with pytest.raises(WorkerCrashedError):
            pool.call("crash_once", str(tmp_path / "again"))


def test_no_leaks_after_many_crash_restart_cycles() -> None:
    cycles = 60
    with SPool(Faulty, max_restarts=cycles + 1, restart_window=3600) as pool:
        pool.spawn()
        # One cycle first, so the pool's one completion thread exists before we count.
        assert isinstance(pool.submit_call("boom", "sigkill").exception(timeout=20), WorkerCrashedError)
        pool.execute(0)
        gc.collect()  # earlier tests' garbage must not count as ours
        fds = len(open_fds())
        threads = threading.active_count()
        for _ in range(cycles):
            assert isinstance(pool.submit_call("boom", "sigkill").exception(timeout=20), WorkerCrashedError)
            assert pool.execute(1) == 1
        gc.collect()
        assert len(open_fds()) <= fds, "no descriptor leaked"
        assert threading.active_count() == threads, "no thread leaked"
        assert len(child_pids()) == 1, "exactly one live worker"
        wait_until(lambda: pool.stats()["workers"][0]["restarts"] == cycles + 1, what="all restarts counted")
