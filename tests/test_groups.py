"""Task trees (the groups package): the seed's three examples, the shared namespace and its lock, rounds,
stop/kill, typed namespaces, unbound concurrency and error reporting, on real processes.

Concurrency is proven by rendezvous (a task waits, bounded, for a sibling to have started), never
by hoping that sleeps overlap; order is read from timestamps the tasks record in the namespace.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import REPO, child_pids, pid_alive, run_script, wait_until
from stateful_pool import (
    Concurrent,
    Namespace,
    ProcTask,
    RemoteTraceback,
    Sequential,
    SharedNamespace,
    TaskTimeoutError,
    TaskTree,
    TaskTreeError,
    WorkerCrashedError,
)

# -- tasks (pickled by reference: the workers import this module) --------------------------------


def record(ns: Any, event: str) -> None:
    """Appends ``(event, time)`` to ``ns.log`` (values are copies: assign back, under the lock)."""
    with ns.lock():
        ns.log = [*ns.log, (event, time.time())]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Polls inside a task; raises (failing the task) rather than hanging."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("rendezvous timed out")
        time.sleep(0.005)


def started(ns: Any, name: str) -> bool:
    return any(event == f"{name}>" for event, _ in ns.log)


class Step(ProcTask):
    """Records ``name>`` and ``<name``; before finishing it waits until ``meet`` have started."""

    def __init__(self, name: str, sleep: float = 0.05, meet: tuple[str, ...] = ()):
        super().__init__(name)
        self.sleep = sleep
        self.meet = meet

    def task(self, ns: Any) -> str:
        record(ns, f"{self.name}>")
        time.sleep(self.sleep)
        wait_for(lambda: all(started(ns, other) for other in self.meet))
        record(ns, f"<{self.name}")
        return f"{self.name} done in {os.getpid()}"


class Increment(ProcTask):
    def __init__(self, times: int):
        super().__init__()
        self.times = times

    def task(self, ns: Any) -> None:
        for _ in range(self.times):
            with ns.lock():
                ns.count += 1


class Count(ProcTask):
    def task(self, ns: Any) -> None:
        with ns.lock():
            ns.runs += 1
            ns.order = [*ns.order, self.name]


class Gate(ProcTask):
    """Records ``gate>``, then waits until the test sets ``ns.open``."""

    def task(self, ns: Any) -> None:
        record(ns, "gate>")
        wait_for(lambda: ns.open, timeout=30)
        record(ns, "<gate")


class Mark(ProcTask):
    def task(self, ns: Any) -> None:
        record(ns, self.name or "mark")


class Boom(ProcTask):
    def task(self, ns: Any) -> None:
        raise ValueError(f"boom {self.name}")


class Crash(ProcTask):
    def task(self, ns: Any) -> None:
        os._exit(3)


class Fast(ProcTask):
    def task(self, ns: Any) -> None:
        with ns.lock():
            ns.fast += 1


class Slow(ProcTask):
    """Can only finish once the fast branch has run three rounds."""

    def task(self, ns: Any) -> None:
        wait_for(lambda: ns.fast >= 3)


@dataclass
class Tally(Namespace):
    count: int = 0
    names: list[str] = field(default_factory=list)
    label: str = "?"


class Tick(ProcTask):
    def task(self, ns: Tally) -> str:
        with ns.lock():
            ns.count += 1
            ns.names = [*ns.names, self.label]
        return ns.label


class Typo(ProcTask):
    def task(self, ns: Any) -> None:
        ns.cuont = 1


@dataclass
class Needs:
    path: str


# -- helpers ----------------------------------------------------------------------------------


def new_tree() -> TaskTree[SharedNamespace]:
    tree = TaskTree()
    tree.namespace.log = []
    return tree


def spans(log: list[tuple[str, float]]) -> dict[str, tuple[float, float]]:
    """``{name: (started, finished)}`` from ``name>`` / ``<name`` events."""
    begin = {e[:-1]: t for e, t in log if e.endswith(">")}
    end = {e[1:]: t for e, t in log if e.startswith("<")}
    return {name: (begin[name], end[name]) for name in begin if name in end}


def events(tree: TaskTree[SharedNamespace]) -> list[str]:
    return [event for event, _ in tree.namespace.log]


# -- the seed's examples ------------------------------------------------------------------------


def test_one_task() -> None:
    tree = new_tree()
    tree.set(Step("t1"))
    (report,) = tree.start(1)
    assert report.ok and report.round == 0 and report.branch is None
    (result,) = report.results
    assert result.name == "t1" and result.value.startswith("t1 done in ")
    assert result.started <= result.finished
    assert events(tree) == ["t1>", "<t1"]
    assert not tree.running and not child_pids()


def test_sequential_group_runs_in_order() -> None:
    tree = new_tree()
    tree.set(Sequential([Step("t1"), Step("t2"), Step("t3")]))
    (report,) = tree.start(1)
    assert [r.name for r in report.results] == ["t1", "t2", "t3"]
    s = spans(tree.namespace.log)
    assert s["t1"][1] <= s["t2"][0] and s["t2"][1] <= s["t3"][0]


def test_multi_level_tree_orders_and_overlaps() -> None:
    tree = new_tree()
    tree.set(
        Concurrent(
            [
                Step("t1", meet=("t5",)),  # still running when t5 starts: overlaps the sequence
                Sequential(
                    [
                        Step("t2"),
                        Step("t3"),
                        Concurrent([Step("t4", meet=("t5",)), Step("t5", meet=("t4",))]),
                    ]
                ),
            ]
        )
    )
    (report,) = tree.start(1)
    assert report.ok, report.errors
    s = spans(tree.namespace.log)
    assert set(s) == {"t1", "t2", "t3", "t4", "t5"}
    assert s["t2"][1] <= s["t3"][0]
    assert s["t3"][1] <= min(s["t4"][0], s["t5"][0])
    assert s["t1"][0] < s["t5"][0] < s["t1"][1], "t1 overlaps the sequential branch"
    assert max(s["t4"][0], s["t5"][0]) < min(s["t4"][1], s["t5"][1]), "t4 and t5 overlap"
    pids = {r.value.rsplit(" ", 1)[1] for r in report.results}
    assert len(pids) >= 2, "tasks ran in several worker processes"


# -- the namespace ------------------------------------------------------------------------------


def test_lock_makes_increments_from_four_processes_exact() -> None:
    tree = TaskTree()
    tree.namespace.count = 0
    task = Increment(1000)
    tree.set(Concurrent([task, task, task, task]))
    (report,) = tree.start(1)
    assert report.ok and len(report.results) == 4
    assert tree.namespace.count == 4000
    assert tree.namespace.snapshot() == {"count": 4000}


def test_untyped_namespace_rejects_private_names_and_reports_missing_ones() -> None:
    tree = TaskTree()
    with pytest.raises(AttributeError, match="cannot start with '_'"):
        tree.namespace._secret = 1
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = tree.namespace.missing
    with pytest.raises(AttributeError, match="method of the namespace"):
        tree.namespace.lock = 1  # type: ignore[method-assign, assignment]
    tree.namespace.x = 1
    del tree.namespace.x
    assert tree.namespace.snapshot() == {}

    @dataclass
    class Clash:
        snapshot: int = 0

    with pytest.raises(ValueError, match="snapshot"):
        TaskTree(Clash)


def test_typed_dataclass_namespace() -> None:
    tree = TaskTree(Tally)
    assert tree.namespace.count == 0 and tree.namespace.names == []
    tree.namespace.label = "typed"
    with pytest.raises(AttributeError, match="no field 'nope'"):
        tree.namespace.nope = 1  # type: ignore[attr-defined]
    tree.set(Concurrent([Tick("p"), Tick("q")]))
    (report,) = tree.start(1)
    assert [r.value for r in report.results] == ["typed", "typed"]
    assert tree.namespace.count == 2 and sorted(tree.namespace.names) == ["p", "q"]

    tree.set(Typo())
    with pytest.raises(TaskTreeError) as info:
        tree.start(1)
    assert isinstance(info.value.exceptions[0], AttributeError)
    assert "no field 'cuont'" in str(info.value.exceptions[0])

    # A task can be unit-tested on a plain instance: lock() is then a local lock.
    local = Tally()
    assert Tick("local").task(local) == "?" and local.names == ["local"]

    needs = TaskTree(Needs)
    needs.set(Mark("m"))
    with pytest.raises(TypeError, match="path"):
        needs.start(1)
    with pytest.raises(TypeError, match="dataclass"):
        TaskTree(int)


# -- rounds, stop and kill ------------------------------------------------------------------------


def test_start_two_runs_the_tree_exactly_twice() -> None:
    tree = TaskTree()
    tree.namespace.runs = 0
    tree.namespace.order = []
    tree.set(Sequential([Count("a"), Count("b")]))
    reports = tree.start(2)
    assert [r.round for r in reports] == [0, 1]
    assert tree.namespace.runs == 4
    assert tree.namespace.order == ["a", "b", "a", "b"]
    assert tree.start(0) == []


def test_forever_until_stop_from_another_thread() -> None:
    tree = TaskTree()
    tree.namespace.runs = 0
    tree.namespace.order = []
    tree.set(Count("c"))

    def stop_after_three_rounds() -> None:
        wait_until(lambda: tree.namespace.runs >= 3, timeout=30, what="three rounds")
        tree.stop()

    stopper = threading.Thread(target=stop_after_three_rounds)
    stopper.start()
    reports = tree.start()  # blocking, forever
    stopper.join(10)
    assert len(reports) >= 3
    assert len(reports) == tree.namespace.runs, "every round that started also finished"
    assert all(r.ok for r in reports)


def test_stop_lets_the_current_round_finish() -> None:
    tree = new_tree()
    tree.namespace.open = False
    tree.set(Sequential([Gate(), Mark("after")]))
    future = tree.start(background=True)
    wait_until(lambda: "gate>" in events(tree), timeout=30, what="the gate task to start")
    tree.stop()
    tree.namespace.open = True
    reports = future.result(timeout=30)
    assert len(reports) == 1 and reports[0].ok
    assert events(tree) == ["gate>", "<gate", "after"]


@pytest.mark.parametrize("queued", [False, True], ids=["sequential", "queued-behind-max-workers"])
def test_kill_ends_the_run_now(queued: bool) -> None:
    tree = TaskTree(max_workers=1) if queued else TaskTree()
    tree.namespace.log = []
    tree.namespace.open = False
    tree.set(Concurrent([Gate(), Mark("after")]) if queued else Sequential([Gate(), Mark("after")]))
    future = tree.start(background=True)
    wait_until(lambda: "gate>" in events(tree), timeout=30, what="the gate task to start")
    began = time.monotonic()
    tree.kill()
    reports = future.result(timeout=30)
    assert time.monotonic() - began < 10
    (report,) = reports
    assert not report.complete and report.results == () and not report.errors
    assert events(tree) == ["gate>"], "the namespace keeps what the run left"
    assert not tree.running
    tree.kill()  # no run: nothing to do


def test_start_refuses_bad_calls() -> None:
    tree = TaskTree()
    with pytest.raises(RuntimeError, match="set"):
        tree.start(1)
    with pytest.raises(TypeError):
        tree.set("not a task")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Sequential([Mark(), 42])  # type: ignore[list-item]
    tree.set(Sequential([Mark()]))
    with pytest.raises(ValueError, match="Concurrent"):
        tree.start(1, unbound=True)
    with pytest.raises(ValueError, match="times"):
        tree.start(-1)
    with pytest.raises(ValueError, match="max_workers"):
        TaskTree(max_workers=0)


def test_max_workers_caps_processes_and_task_timeout_applies() -> None:
    tree = TaskTree(max_workers=1)
    tree.namespace.runs = 0
    tree.namespace.order = []
    tree.set(Concurrent([Count("a"), Count("b"), Count("c")]))
    (report,) = tree.start(1)
    assert report.ok and tree.namespace.runs == 3
    runs = sorted(report.results, key=lambda r: r.started)
    assert all(a.finished <= b.started for a, b in itertools.pairwise(runs)), "one worker: one at a time"

    slow = TaskTree(task_timeout=0.3)
    slow.namespace.log = []
    slow.namespace.open = False
    slow.set(Gate())
    with pytest.raises(TaskTreeError) as info:
        slow.start(1)
    assert isinstance(info.value.exceptions[0], TaskTimeoutError)


# -- unbound concurrency ------------------------------------------------------------------------


def test_unbound_root_items_repeat_on_their_own_schedule() -> None:
    tree = TaskTree()
    tree.namespace.fast = 0
    tree.set(Concurrent([Fast("fast"), Slow("slow")]))
    reports = tree.start(3, unbound=True)
    fast = [r for r in reports if r.branch == 0]
    slow = [r for r in reports if r.branch == 1]
    assert [r.round for r in fast] == [0, 1, 2] and [r.round for r in slow] == [0, 1, 2]
    assert all(r.ok for r in reports)
    # The slow branch's first round could only end after the fast branch's third: the fast
    # branch did not wait for its slow sibling between rounds.
    assert fast[2].finished <= slow[0].finished
    assert tree.namespace.fast == 3


# -- errors ---------------------------------------------------------------------------------------


def test_failing_task_is_reported_and_siblings_finish() -> None:
    tree = new_tree()
    tree.set(
        Concurrent(
            [
                Boom("x"),
                Sequential([Step("a"), Step("b")]),
                Sequential([Boom("y"), Mark("never")]),
            ]
        )
    )
    with pytest.raises(TaskTreeError, match="2 task errors in 1 round") as info:
        tree.start(3)
    error = info.value
    assert sorted(str(e) for e in error.exceptions) == ["boom x", "boom y"]
    assert all(isinstance(e.__cause__, RemoteTraceback) for e in error.exceptions)
    assert len(error.reports) == 1, "no new round after a failing one"
    assert events(tree) == ["a>", "<a", "b>", "<b"], "siblings ran to the end; the failed sequence stopped"
    matched, rest = error.split(ValueError)
    assert isinstance(matched, TaskTreeError) and matched.reports == error.reports and rest is None


def test_on_error_continue_keeps_running_and_reports_crashes() -> None:
    tree = new_tree()
    tree.set(Concurrent([Crash("crash"), Mark("m")]))
    reports = tree.start(2, on_error="continue")
    assert len(reports) == 2
    for report in reports:
        assert [type(e) for e in report.errors] == [WorkerCrashedError]
        assert not report.ok and report.complete
    assert events(tree) == ["m", "m"]


# -- the README ---------------------------------------------------------------------------------


def test_readme_groups_example_runs() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Groups", 1)[1]
    source = section.split("```python\n", 1)[1].split("```", 1)[0]
    out = run_script(source)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "10 [True, True]"


# -- cleanup on Ctrl-C and at exit ------------------------------------------------------------------

FOREVER = """
    import os, sys, threading, time
    from stateful_pool import ProcTask, TaskTree

    class Forever(ProcTask):
        def task(self, ns):
            with ns.lock():
                ns.pids = [*ns.pids, os.getpid()]
            time.sleep(60)

    tree = TaskTree()
    tree.namespace.pids = []
    tree.set(Forever())

    def announce():
        while not tree.namespace.pids:
            time.sleep(0.01)
        print("ready", flush=True)

    if sys.argv[1] == "exit":            # leave a background run behind and just exit
        tree.start(background=True)
        announce()
        sys.stdin.readline()
    else:                                # block in start() until Ctrl-C
        threading.Thread(target=announce, daemon=True).start()
        tree.start()
"""


@pytest.mark.parametrize("how", ["ctrl-c", "exit"])
def test_no_process_outlives_ctrl_c_or_interpreter_exit(how: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(FOREVER), how],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        workers = child_pids(proc.pid)
        assert len(workers) == 1, "one task worker, no namespace host process"
        if how == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate("\n", timeout=30)
    finally:
        proc.kill()
        proc.wait(10)
    if how == "ctrl-c":
        assert "KeyboardInterrupt" in err
    else:
        assert proc.returncode == 0, err
    wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=10, what="the workers to exit")
