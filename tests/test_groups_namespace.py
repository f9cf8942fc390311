"""The task tree's namespace served over the pool's own channel (upcalls): values across tasks and
runs, the lock recorded per process and given back when its holder dies (SIGKILL, os._exit), a
worker that writes garbage upcalls is replaced while the rest goes on, and no manager process.

Every wait is a bounded rendezvous on namespace values or process state, never a bare sleep.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import child_pids, pid_alive, run_script, wait_until
from stateful_pool import (
    Concurrent,
    Namespace,
    ProcTask,
    Sequential,
    SharedNamespace,
    SPool,
    SWorker,
    TaskTree,
    TaskTreeError,
    WorkerCrashedError,
)
from stateful_pool._core import CoreNamespace

# -- tasks (pickled by reference: the workers import this module) --------------------------------


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    """Polls inside a task; raises (failing the task) rather than hanging."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("rendezvous timed out")
        time.sleep(0.005)


class DieHoldingLock(ProcTask):
    """Takes the lock, tells the others, waits until one of them waits for it, then dies with
    the lock held (``how``: ``"sigkill"`` or ``"exit"``)."""

    def __init__(self, how: str):
        super().__init__("holder")
        self.how = how

    def task(self, ns: Any) -> None:
        with ns.lock():
            ns.holder = os.getpid()
            wait_for(lambda: getattr(ns, "waiting", False))
            ns.dying_at = time.time()
            if self.how == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(0)


class WaitForLock(ProcTask):
    def task(self, ns: Any) -> float:
        wait_for(lambda: getattr(ns, "holder", None) is not None)
        ns.waiting = True
        lock = ns.lock()
        if not lock.acquire(timeout=30):
            raise TimeoutError("the dead holder's lock never came back")
        try:
            ns.got_at = time.time()
        finally:
            lock.release()
        return float(ns.got_at - ns.dying_at)


class After(ProcTask):
    def task(self, ns: Any) -> None:
        with ns.lock():
            ns.after = ns.after + 1


class HoldUntilKilled(ProcTask):
    def task(self, ns: Any) -> None:
        with ns.lock():
            ns.holder = os.getpid()
            time.sleep(120)


class TryLock(ProcTask):
    """While the caller holds the lock: a timed acquire fails; once it lets go: it succeeds."""

    def task(self, ns: Any) -> tuple[bool, bool]:
        lock = ns.lock()
        refused = lock.acquire(timeout=0.3)
        ns.tried = True
        got = lock.acquire(timeout=30)
        if got:
            ns.got = True
            lock.release()
        return refused, got


class Writer(ProcTask):
    def task(self, ns: Any) -> None:
        ns.seen_before_start = ns.before
        ns.written = {"by": os.getpid(), "items": [1, 2, 3]}
        del ns.to_delete


class Reader(ProcTask):
    def task(self, ns: Any) -> dict[str, Any]:
        return {"written": ns.written, "keys": sorted(ns.snapshot()), "dir": "written" in dir(ns)}


class BadNames(ProcTask):
    """Names the store would refuse: refused here, in the task, without reaching the wire."""

    def task(self, ns: Any) -> list[str]:
        caught = []
        for name in ["", "x" * 5000]:
            try:
                setattr(ns, name, 1)
            except AttributeError:
                caught.append("set")
            try:
                getattr(ns, name)
            except AttributeError:
                caught.append("get")
        ns.before = ns.before  # the namespace still works
        return caught


class Garbage(ProcTask):
    """Writes an upcall the parent cannot accept (the worker must be replaced)."""

    def __init__(self, what: str):
        super().__init__("garbage")
        self.what = what

    def task(self, ns: Any) -> None:
        from stateful_pool import _upcall

        with ns.lock():
            ns.garbage_pids = [*ns.garbage_pids, os.getpid()]
        channel = _upcall._channel
        assert channel is not None
        if self.what == "unknown-op":
            _upcall.call(b"\xff\x00")
        elif self.what == "key-past-end":
            _upcall.call(b"\x02" + (1000).to_bytes(4, "little") + b"key")
        elif self.what == "private-key":
            _upcall.call(b"\x01_secret")
        elif self.what == "nonzero-id":
            channel.send(13, 99, [b"\x01count"])
            channel.recv()
        else:  # a supervisor-side frame kind, from the worker
            channel.send(4, 0, [b""])
            channel.recv()
        raise AssertionError("the parent answered garbage")


class Count(ProcTask):
    def task(self, ns: Any) -> None:
        with ns.lock():
            ns.count += 1


class Census(ProcTask):
    """Waits for its ``n`` siblings, then reports its pid, its parent's children and whether a
    ``multiprocessing`` manager is loaded here."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def task(self, ns: Any) -> tuple[int, list[int], bool]:
        with ns.lock():
            ns.arrived = ns.arrived + 1
        wait_for(lambda: ns.arrived >= self.n)
        children = sorted(child_pids(os.getppid()))
        with ns.lock():
            ns.left = ns.left + 1
        wait_for(lambda: ns.left >= self.n)  # nobody exits before every census is taken
        return os.getpid(), children, "multiprocessing.managers" in sys.modules


class Asker(SWorker):
    """A plain pool worker that makes an upcall its pool does not serve."""

    def ask(self) -> bytes:
        from stateful_pool import _upcall

        return _upcall.call(b"\x01count")

    def pid(self) -> int:
        return os.getpid()


@dataclass
class Shared(Namespace):
    before: str = "set in the dataclass"
    to_delete: int = 0
    seen_before_start: str = ""
    written: dict[str, Any] = field(default_factory=dict)


# -- the lock and dead holders ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sigkill", "exit"])
def test_task_dying_with_the_lock_frees_it_at_once_and_the_tree_goes_on(how: str) -> None:
    tree = TaskTree()
    tree.namespace.after = 0
    tree.set(Concurrent([DieHoldingLock(how), Sequential([WaitForLock(), After(), After()])]))
    [report] = tree.start(1, on_error="continue")
    by_name = {r.name: r for r in report.results}
    assert isinstance(by_name["holder"].error, WorkerCrashedError)
    assert by_name["WaitForLock"].ok, by_name["WaitForLock"].error
    # Given back by the supervisor's worker-exit path, not found by a waiter's polling.
    assert by_name["WaitForLock"].value < 5.0
    assert tree.namespace.after == 2
    assert tree._core.holder is None
    assert not pid_alive(tree.namespace.holder)


def test_caller_waiting_for_the_lock_gets_it_when_the_holder_is_killed() -> None:
    tree = TaskTree()
    tree.set(HoldUntilKilled())
    run = tree.start(1, on_error="continue", background=True)
    try:
        wait_until(lambda: "holder" in dir(tree.namespace), timeout=30, what="the task to hold the lock")
        holder = tree.namespace.holder
        assert tree._core.holder == holder
        lock = tree.namespace.lock()
        assert not lock.acquire(timeout=0.2), "the caller took a lock a task holds"
        os.kill(holder, signal.SIGKILL)
        started = time.monotonic()
        assert lock.acquire(timeout=20)
        assert time.monotonic() - started < 5.0
        assert tree._core.holder == 0  # this process
        lock.release()
    finally:
        tree.kill()
    [report] = run.result(timeout=60)
    assert isinstance(report.results[0].error, WorkerCrashedError)
    assert tree._core.holder is None


def test_lock_times_out_while_the_caller_holds_it_and_is_granted_when_it_lets_go() -> None:
    tree = TaskTree()
    tree.set(TryLock())
    lock = tree.namespace.lock()
    assert lock.acquire(timeout=5)
    try:
        run = tree.start(1, background=True)
        wait_until(lambda: "tried" in dir(tree.namespace), timeout=30, what="the task's first try")
        assert "got" not in dir(tree.namespace)
    finally:
        lock.release()
    [report] = run.result(timeout=60)
    assert report.results[0].value == (False, True)
    assert tree.namespace.got is True


# -- values -------------------------------------------------------------------------------------


def test_values_cross_tasks_and_survive_before_and_after_runs() -> None:
    tree = TaskTree(Shared)
    tree.set(Sequential([Writer(), Reader(), BadNames()]))
    [first] = tree.start(1)
    written = tree.namespace.written
    assert tree.namespace.seen_before_start == "set in the dataclass"
    assert written["items"] == [1, 2, 3] and written["by"] != os.getpid()
    read = first.results[1].value
    assert read["written"] == written and read["dir"] is True
    assert "to_delete" not in read["keys"]
    assert first.results[2].value == ["set", "get", "set", "get"]
    # The values stay for the next run, and what the caller sets between runs reaches it.
    tree.namespace.before = "set between runs"
    tree.namespace.to_delete = 1
    tree.start(1)
    assert tree.namespace.seen_before_start == "set between runs"
    assert tree.namespace.written["by"] != written["by"], "a fresh worker wrote it"


def test_store_refuses_bad_keys_from_the_caller() -> None:
    store = CoreNamespace()
    for key in ["", "_private", "k" * 5000]:
        with pytest.raises(ValueError):
            store.set(key, b"x")
    with pytest.raises(RuntimeError):
        store.unlock()
    tree = TaskTree()
    with pytest.raises(AttributeError):
        tree.namespace._private = 1
    with pytest.raises(AttributeError):
        setattr(tree.namespace, "", 1)


# -- garbage and processes ----------------------------------------------------------------------


@pytest.mark.parametrize("what", ["unknown-op", "key-past-end", "private-key", "nonzero-id", "wrong-kind"])
def test_garbage_upcall_replaces_the_worker_and_the_tree_keeps_serving(what: str) -> None:
    tree = TaskTree()
    tree.namespace.count = 0
    tree.namespace.garbage_pids = []
    tree.set(Concurrent([Garbage(what), Count()]))
    with pytest.raises(TaskTreeError) as caught:
        tree.start(2)
    errors = caught.value.exceptions
    assert len(errors) == 1, errors  # the first round failed; the second did not start
    assert isinstance(errors[0], WorkerCrashedError)
    assert "protocol" in str(errors[0])
    assert tree.namespace.count == 1
    # The run goes on after garbage too: on_error="continue" runs both rounds on fresh workers.
    reports = tree.start(2, on_error="continue")
    assert [len(r.errors) for r in reports] == [1, 1]
    assert tree.namespace.count == 3
    pids = tree.namespace.garbage_pids
    assert len(pids) == 3 and len(set(pids)) == 3, "each garbage writer was replaced"
    assert tree._core.holder is None


def test_no_manager_process_and_nothing_left_after_a_run() -> None:
    tree = TaskTree()
    tree.namespace.arrived = 0
    tree.namespace.left = 0
    tree.set(Concurrent([Census(3), Census(3), Census(3)]))
    [report] = tree.start(1)
    pids = {r.value[0] for r in report.results}
    assert len(pids) == 3
    for result in report.results:
        _, children, manager_loaded = result.value
        assert set(children) == pids, "the caller's only children are the three task workers"
        assert not manager_loaded
    assert not child_pids()
    assert not any(pid_alive(pid) for pid in pids)


NO_MANAGER = """
    import sys
    from stateful_pool import TaskTree, ProcTask

    class Set(ProcTask):
        def task(self, ns):
            with ns.lock():
                ns.value = 42

    tree = TaskTree()
    tree.set(Set())
    tree.start(1)
    print(tree.namespace.value, "multiprocessing.managers" in sys.modules)
"""


def test_the_caller_never_loads_a_multiprocessing_manager() -> None:
    done = run_script(NO_MANAGER)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["42", "False"]


def test_stop_from_another_thread_while_tasks_wait_for_the_lock() -> None:
    tree = TaskTree()
    tree.namespace.count = 0
    tree.set(Concurrent([Count(), Count(), Count()]))
    stopper = threading.Thread(target=lambda: (wait_until(lambda: tree.namespace.count >= 9, timeout=60), tree.stop()))
    stopper.start()
    reports = tree.start()
    stopper.join()
    assert tree.namespace.count == 3 * len(reports) >= 9
    assert all(r.ok for r in reports)
    assert isinstance(tree.namespace, SharedNamespace)


@pytest.mark.parametrize("how", ["future", "blocking"])
def test_upcall_to_a_pool_that_serves_none_replaces_the_worker(how: str) -> None:
    with SPool(Asker) as pool:
        pool.spawn()
        first = pool.call("pid")
        with pytest.raises(WorkerCrashedError, match="protocol"):
            if how == "future":
                pool.submit_call("ask").result(timeout=30)
            else:
                pool.call("ask")  # through the direct lane
        wait_until(lambda: not pid_alive(first), timeout=10, what="the lying worker to be killed")
        assert pool.call("pid") not in (first, None), "a fresh worker serves the pool"


class Rendezvous(ProcTask):
    def task(self, ns: Any) -> None:
        ns.running = True
        wait_for(lambda: getattr(ns, "checked", False), timeout=30)


def test_a_blocking_run_has_no_scheduler_thread_of_its_own() -> None:
    tree = TaskTree()
    tree.set(Sequential([Rendezvous(), Rendezvous()]))
    before = {t.ident for t in threading.enumerate()}
    during: list[str] = []

    def look() -> None:
        wait_until(lambda: "running" in dir(tree.namespace), timeout=30, what="the first task")
        during.extend(t.name for t in threading.enumerate() if t.ident not in before and t is not helper)
        tree.namespace.checked = True

    helper = threading.Thread(target=look)
    helper.start()
    reports = tree.start(1)
    helper.join()
    assert reports[0].ok
    # The pool's own completion thread drives the rounds; nothing else was started for them.
    assert during == ["stateful-pool-completer"], during
