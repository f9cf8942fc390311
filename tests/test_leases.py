"""Leases, not trust, for shared state (issue 11, finding 3): a process killed (real SIGKILL)
while it holds a ResourceLimit permit or the TaskTree namespace lock does not take it to the
grave. Waiters see the holder dead and take back what it held; the supervisor's entry point
(``release_dead_process(pid)``) does the same for a pid it saw exit.

Every wait is bounded: on code without leases these tests fail with a timeout, never hang."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, pid_alive, wait_until
from lease_workers import DiesHoldingLock, LeaseWorker, WaitsForLock
from stateful_pool import Concurrent, TaskTree
from stateful_pool.concurry import LimitSet, ResourceLimit

DEADLINE = 15.0  # seconds a waiter may take to get what a dead holder held (generous)


def _fails(future: Any) -> BaseException:
    error = future.exception(timeout=30)
    assert error is not None, "the worker was killed: its call must fail"
    return error


def test_two_workers_killed_holding_a_permit_leave_capacity_for_the_third() -> None:
    limits = LimitSet([ResourceLimit(key="conn", capacity=2)])
    with LeaseWorker.options(mode="process", max_workers=1, limits=limits).init() as pool:
        _fails(pool.die_holding("conn"))
        _fails(pool.die_holding("conn"))
        # Capacity 2, two holders dead: without leases the count is stuck at 2 and this waits
        # out its deadline.
        result = pool.take("conn", timeout=DEADLINE).result(timeout=DEADLINE + 15)
        assert result["waited"] < DEADLINE
        with limits.acquire(requested={"conn": 2}, timeout=DEADLINE):
            assert limits.available("conn") == 0
    assert limits.available("conn") == 2


@pytest.mark.parametrize("waiter_mode", ["process", "thread"])
def test_a_waiter_blocked_on_the_exhausted_limit_is_woken_when_the_holder_dies(
    tmp_path: Path, waiter_mode: str
) -> None:
    limits = LimitSet([ResourceLimit(key="conn", capacity=1)])
    held, go, waiting = (str(tmp_path / name) for name in ("held", "go", "waiting"))
    with (
        LeaseWorker.options(mode="process", max_workers=1, limits=limits).init() as holders,
        LeaseWorker.options(mode=waiter_mode, max_workers=1, limits=limits).init() as waiters,
    ):
        dying = holders.hold_then_die("conn", held, go)
        wait_until(lambda: os.path.exists(held), timeout=30, what="the holder to take the permit")
        holder_pid = int(Path(held).read_text())
        assert limits.available("conn") == 0
        taken = waiters.take("conn", DEADLINE, waiting)
        wait_until(lambda: os.path.exists(waiting), timeout=30, what="the waiter to start waiting")
        Path(go).touch()  # the holder kills itself inside its `with` block
        _fails(dying)
        assert not pid_alive(holder_pid)
        result = taken.result(timeout=DEADLINE + 15)
        assert result["waited"] < DEADLINE
    assert limits.available("conn") == 1


def test_a_waiter_in_the_parent_is_woken_when_a_worker_dies_holding(tmp_path: Path) -> None:
    limits = LimitSet([ResourceLimit(key="conn", capacity=1)])
    held, go = str(tmp_path / "held"), str(tmp_path / "go")
    with LeaseWorker.options(mode="process", max_workers=1, limits=limits).init() as holders:
        dying = holders.hold_then_die("conn", held, go)
        wait_until(lambda: os.path.exists(held), timeout=30, what="the holder to take the permit")
        outcome: list[Any] = []

        def wait_in_a_thread() -> None:
            try:
                with limits.acquire(requested={"conn": 1}, timeout=DEADLINE):
                    outcome.append("got it")
            except BaseException as exc:  # reported below
                outcome.append(exc)

        waiter = threading.Thread(target=wait_in_a_thread)
        waiter.start()
        Path(go).touch()
        _fails(dying)
        waiter.join(timeout=DEADLINE + 15)
        assert outcome == ["got it"]


_HOLD_AND_DIE = """
import os, signal, sys
from stateful_pool import _core
table = _core.CoreLimits.attach(int(sys.argv[1]), int(sys.argv[2]))
lease = table.lease(0, 1)
assert lease is not None
print("held", flush=True)
if sys.argv[3] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()  # hold until the parent closes our stdin
"""


def _holder(table: Any, mode: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_HOLD_AND_DIE), str(table.pid), str(table.fd), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line != "held\n":
        child.kill()
        child.communicate(timeout=30)  # closes the pipes
        raise AssertionError(f"the holder did not take the permit: {line!r}")
    return child


def test_the_supervisor_entry_point_gives_back_what_a_dead_pid_held_and_nothing_of_a_live_one() -> None:
    from stateful_pool import _core

    table = _core.CoreLimits([("semaphore", 0.0, 2)])
    live = _holder(table, "hold")
    dead = _holder(table, "die")
    try:
        assert dead.wait(timeout=30) == -signal.SIGKILL
        assert table.available(0) == 0
        assert table.release_dead_process(live.pid) == [0], "a live holder keeps its permit"
        assert table.release_dead_process(dead.pid) == [1]
        assert table.available(0) == 1
        assert table.release_dead_process(dead.pid) == [0], "given back once"
        assert [(pid, phase) for pid, _, _, phase in table.leases()] == [(live.pid, "held")]
    finally:
        for child in (live, dead):
            child.kill()
            child.wait(timeout=30)
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()
    assert table.reclaim_dead() == [1]
    assert table.available(0) == 2


def test_a_tree_task_killed_holding_the_namespace_lock_lets_its_sibling_take_it() -> None:
    tree = TaskTree()
    tree.namespace.holder = 0
    tree.namespace.waiting = False
    tree.namespace.count = 0
    tree.set(Concurrent([DiesHoldingLock(), WaitsForLock()]))
    started = time.monotonic()
    future = tree.start(1, on_error="continue", background=True)
    try:
        reports = future.result(timeout=45)
    finally:
        if not future.done():
            tree.kill()  # without leases the sibling waits forever: end the run, fail the test
            future.exception(timeout=60)
    assert time.monotonic() - started < 45
    (report,) = reports
    by_name = {r.name: r for r in report.results}
    assert not by_name["DiesHoldingLock"].ok, "killed: its task fails"
    assert by_name["WaitsForLock"].ok, by_name["WaitsForLock"].error
    assert by_name["WaitsForLock"].value != tree.namespace.holder
    assert not pid_alive(tree.namespace.holder)
    assert tree.namespace.count == 1


def test_the_namespace_lock_is_reentrant_per_thread_and_exclusive_between_threads() -> None:
    tree = TaskTree()
    tree.namespace.holder = 0

    class Probe(WaitsForLock):
        def task(self, ns: Any) -> Any:
            lock = ns.lock()
            assert lock.acquire() and lock.acquire(timeout=1)  # reentrant
            other: list[bool] = []
            t = threading.Thread(target=lambda: other.append(lock.acquire(timeout=0.05)))
            t.start()
            t.join()
            lock.release()
            lock.release()
            with pytest.raises(RuntimeError):
                lock.release()
            t = threading.Thread(target=lambda: other.append(lock.acquire(blocking=False)))
            t.start()
            t.join()
            return other

    tree.set(Probe())
    (report,) = tree.start(1)
    seen: list[bool] = report.results[0].value
    # Another thread of the holding process waited in vain; once free, it got the lock at once
    # (and never released it: its process gives the lease back when the run ends).
    assert seen == [False, True]
