"""Running a task tree: :class:`TaskTree` runs its rounds on an :class:`SPool` of task runner
processes, serving them the namespace.

How a tree runs (everything below is torn down when ``start()`` returns)::

    caller                      the pool's engine                   worker processes (SPool)
    ------                      -----------------                   ------------------------
    tree.start() ------------>  spawn width(tree) runners ------->  [_TaskRunner] x N
                                round 0: submit the first tasks -->  task.task(ns)
                                a task's future completes:            ns.x, ns.lock() are
                                  submit the next (Sequential)        upcalls on the worker's
                                  or count down (Concurrent)          channel, answered by the
                                a round completes: the next one       supervisor from the
                                  ... until times / stop()            namespace in this process
    tree.stop()  ------------>  no new round; the current one finishes
    tree.kill()  ------------>  runner pool killed now; running tasks end

No thread or event loop schedules the tasks: each task's completion (a done-callback on its pool
future, run by the pool's completion thread) submits what comes next. The thread that called
``start()`` (or, with ``background=True``, one thread of the run) only starts the runners, waits
for the rounds to end and stops the runners.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import functools
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar, cast, overload

import cloudpickle

from .. import _core
from ..errors import PoolShutDownError
from ..pool import SPool
from ..worker import SWorker
from .namespace import ParentStore, SharedNamespace, WorkerStore
from .report import RunReport, TaskResult, TaskTreeError
from .tree import Concurrent, Item, ProcTask, Sequential, _Group, leaves, width

__all__ = ["TaskTree"]

N = TypeVar("N")

#: Called once when a part of a round is done: whether every task in it succeeded.
Done = Callable[[bool], None]


_running_trees: weakref.WeakSet[TaskTree[Any]] = weakref.WeakSet()


def _kill_running_trees() -> None:
    """A run left in the background ends with the interpreter: its tasks may run forever, so it
    is killed (the pools' own exit hook, which lets submitted work finish, would wait on them)."""
    for tree in list(_running_trees):
        tree.kill()


# Registered after the pools' hook, so it runs first (the main thread's exit hooks run last
# registered first), as concurrent.futures runs its own.
_register_exit = getattr(threading, "_register_atexit", None)
(atexit.register if _register_exit is None else _register_exit)(_kill_running_trees)


class TaskTree(Generic[N]):
    """Runs a tree of tasks in rounds on worker processes, with a shared namespace.

    ``set()`` the tree, put initial values on :attr:`namespace`, then ``start()``: each round
    runs the whole tree (``Sequential`` items one by one, ``Concurrent`` items at once), on as
    many :class:`SPool` workers as the tree can use at once. ``stop()`` and ``kill()`` end a
    run from another thread. No process outlives ``start()``.

    Args:
        namespace: a dataclass declaring the namespace's fields (typed namespace): its defaults
            are the initial values and other attributes are refused. ``None``: any attribute.
        max_workers: at most this many worker processes (default: the tree's width). Fewer
            workers than the width make ``Concurrent`` items wait for a free worker.
        task_timeout: seconds a task may run; past it the task fails with
            :class:`~stateful_pool.TaskTimeoutError` and its worker is replaced.

    Example::

        tree = TaskTree()
        tree.set(Concurrent([Fetch(), Sequential([Parse(), Store()])]))
        tree.namespace.count = 0
        reports = tree.start(2)          # two rounds; raises TaskTreeError if a task failed
    """

    @overload
    def __init__(
        self: TaskTree[SharedNamespace],
        namespace: None = None,
        *,
        max_workers: int | None = None,
        task_timeout: float | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self, namespace: type[N], *, max_workers: int | None = None, task_timeout: float | None = None
    ) -> None: ...

    def __init__(
        self, namespace: type[N] | None = None, *, max_workers: int | None = None, task_timeout: float | None = None
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be at least 1 or None, got {max_workers}")
        values: dict[str, Any] = {}
        fields: frozenset[str] | None = None
        self._required: frozenset[str] = frozenset()
        if namespace is not None:
            if not (isinstance(namespace, type) and dataclasses.is_dataclass(namespace)):
                raise TypeError(f"namespace must be a dataclass type or None, got {namespace!r}")
            fields = frozenset(f.name for f in dataclasses.fields(namespace))
            clashes = sorted(name for name in fields if name.startswith("_") or hasattr(SharedNamespace, name))
            if clashes:
                raise ValueError(f"namespace field names cannot start with '_' or be lock/snapshot: {clashes}")
            for f in dataclasses.fields(namespace):
                if f.default is not dataclasses.MISSING:
                    values[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    values[f.name] = f.default_factory()
            self._required = fields - values.keys()
        # The namespace lives in this process for the tree's whole life; runs serve it to the
        # tasks (see namespace.py).
        self._core = _core.CoreNamespace()
        store = ParentStore(self._core)
        self._ns = SharedNamespace(store, store.lock(), fields)
        for name, value in values.items():
            store[name] = value
        self._namespace_type = namespace
        self._max_workers = max_workers
        self._task_timeout = task_timeout
        self._root: Item | None = None
        # Guards the run state below against stop()/kill() from other threads.
        self._state_lock = threading.Lock()
        self._running = False
        self._stopping = False
        self._killed = False
        self._runner_pool: SPool[_TaskRunner] | None = None

    @property
    def namespace(self) -> N:
        """The shared namespace. Set initial values before ``start()``; during a run reads and
        writes are those the tasks see; afterwards it holds the values the run left."""
        # A typed tree hands out the namespace as the dataclass type: it has the same attributes.
        return cast(N, self._ns)

    @property
    def running(self) -> bool:
        """Whether a ``start()`` is in progress."""
        return self._running

    def set(self, item: Item) -> None:
        """Sets the tree to run: a :class:`ProcTask`, a :class:`Sequential` or a
        :class:`Concurrent` group (groups nest)."""
        if not isinstance(item, (ProcTask, _Group)):
            raise TypeError(f"expected a ProcTask, Sequential or Concurrent, got {item!r}")
        if self._running:
            raise RuntimeError("cannot set the tree while it is running")
        self._root = item

    @overload
    def start(
        self,
        times: int | None = None,
        *,
        unbound: bool = False,
        on_error: Literal["raise", "continue"] = "raise",
        background: Literal[False] = False,
    ) -> list[RunReport]: ...

    @overload
    def start(
        self,
        times: int | None = None,
        *,
        unbound: bool = False,
        on_error: Literal["raise", "continue"] = "raise",
        background: Literal[True],
    ) -> concurrent.futures.Future[list[RunReport]]: ...

    def start(
        self,
        times: int | None = None,
        *,
        unbound: bool = False,
        on_error: Literal["raise", "continue"] = "raise",
        background: bool = False,
    ) -> list[RunReport] | concurrent.futures.Future[list[RunReport]]:
        """Runs the tree ``times`` rounds (``None``: until :meth:`stop` or :meth:`kill`) and
        returns one :class:`RunReport` per round.

        Args:
            times: how many rounds; ``None`` runs until stopped.
            unbound: the tree must be a root :class:`Concurrent`; each of its items then repeats
                on its own (``times`` each), without waiting for its slowest sibling. Reports
                say which ``branch`` they belong to.
            on_error: ``"raise"`` (default): after a round in which a task failed, no new round
                starts (the running ones finish) and :class:`TaskTreeError` is raised with every
                error. ``"continue"``: keep going; errors are only in the reports.
            background: return a :class:`concurrent.futures.Future` of the reports at once
                instead of blocking.

        Blocking ``start()`` is ended by ``stop()`` / ``kill()`` from another thread (or a
        signal handler); Ctrl-C kills the run. A forever run keeps one small report per round.
        """
        if times is not None and times < 0:
            raise ValueError(f"times must be at least 0 or None, got {times}")
        if on_error not in ("raise", "continue"):
            raise ValueError(f"on_error must be 'raise' or 'continue', got {on_error!r}")
        root = self._root
        if root is None:
            raise RuntimeError("nothing to run: call set() first")
        if unbound and not isinstance(root, Concurrent):
            raise ValueError("unbound=True needs a Concurrent group at the root of the tree")
        missing = self._required - set(self._ns._store.keys())
        if missing:
            raise TypeError(
                f"namespace field(s) without a value: {', '.join(sorted(missing))}; set them before start()"
            )
        # Pickle every task up front, here: an unpicklable task fails the call, not a round.
        blobs = {id(task): cloudpickle.dumps(task, protocol=5) for task in leaves(root)}
        with self._state_lock:
            if self._running:
                raise RuntimeError("this tree is already running")
            self._running, self._stopping, self._killed = True, False, False
        _running_trees.add(self)
        run = _Run(self, root, blobs, times, unbound, on_error)
        if not background:
            # This thread opens the run, waits for its end and closes it; the rounds are driven
            # by the pool's task completions (see _Run).
            return run.run()
        future: concurrent.futures.Future[list[RunReport]] = concurrent.futures.Future()
        threading.Thread(target=run.main, args=(future,), name="stateful-pool-tasktree", daemon=True).start()
        return future

    def stop(self) -> None:
        """Lets the round in progress finish (each branch's, in unbound mode), then ends the
        run. Returns at once; ``start()`` returns when the round is done."""
        self._stopping = True

    def kill(self) -> None:
        """Ends the run now: the worker processes are killed and running tasks are abandoned
        (they are not reported as errors). Returns at once; ``start()`` returns promptly."""
        with self._state_lock:
            if not self._running:
                return
            self._stopping = self._killed = True
            pool = self._runner_pool
        if pool is not None:
            # Fails every running and queued task with PoolShutDownError, which ends the rounds;
            # start() waits for the processes to be gone.
            pool.shutdown(wait=False, kill=True)

    def __repr__(self) -> str:
        kind = self._namespace_type.__name__ if isinstance(self._namespace_type, type) else "untyped"
        state = "running" if self._running else "idle"
        return f"<TaskTree {state}, {kind} namespace: {self._root!r}>"


class _TaskRunner(SWorker):
    """The SPool worker running tasks; its namespace talks to the caller's process through
    upcalls, and its lock is this process's for as long as it lives."""

    _ns: SharedNamespace | None = None

    def run(self, fields: frozenset[str] | None, blob: bytes) -> tuple[float, float, Any]:
        if self._ns is None:
            store = WorkerStore()
            self._ns = SharedNamespace(store, store.lock(), fields)
        task = cloudpickle.loads(blob)
        started = time.time()
        value = task.task(self._ns)
        return started, time.time(), value


class _Handoff:
    """Tells who goes on after a part of the tree started by a loop: the loop itself, when the
    part finished before the loop looked (no recursion, however many rounds finish at once), or
    the callback that finished it, when it finished later."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finished = False
        self._left = False
        self.go_on: Callable[[], None] | None = None

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            go_on = self.go_on if self._left else None
        if go_on is not None:
            go_on()

    def leave(self, go_on: Callable[[], None]) -> bool:
        """Whether the part finished already (the caller goes on); else ``go_on`` runs later."""
        with self._lock:
            self._left, self.go_on = True, go_on
            return self._finished


class _CountDown:
    """Calls ``done`` once ``count`` parts are done: ``all`` of them ok or not."""

    def __init__(self, count: int, done: Done):
        self._lock = threading.Lock()
        self._left = count
        self._ok = True
        self._done = done

    def one(self, ok: bool) -> None:
        with self._lock:
            self._ok &= ok
            self._left -= 1
            last = self._left == 0
        if last:
            self._done(self._ok)


class _Run:
    """One ``start()``: opens the runner processes, drives the rounds from task completions,
    closes everything."""

    def __init__(
        self,
        tree: TaskTree[Any],
        root: Item,
        blobs: dict[int, bytes],
        times: int | None,
        unbound: bool,
        on_error: str,
    ):
        self.tree = tree
        self.root = root
        self.blobs = blobs
        self.times = times
        self.unbound = unbound
        self.on_error = on_error
        self.reports: list[RunReport] = []
        self.failed = False
        self.pool: SPool[_TaskRunner] | None = None
        # Guards the counters below; the rounds advance on the pool's completion thread.
        self.lock = threading.Lock()
        self.branches_left = 0
        #: Set when every branch has run its last round.
        self.ended = threading.Event()
        #: A bug in the scheduling itself (a callback that raised), re-raised by start().
        self.broken: BaseException | None = None

    def main(self, future: concurrent.futures.Future[list[RunReport]]) -> None:
        future.set_running_or_notify_cancel()
        try:
            reports = self.run()
        except BaseException as exc:  # delivered to start()'s caller, whatever it is
            future.set_exception(exc)
        else:
            future.set_result(reports)

    def run(self) -> list[RunReport]:
        tree = self.tree
        pool: SPool[_TaskRunner] = SPool(_TaskRunner, task_timeout=tree._task_timeout, _namespace=tree._core)
        try:
            with tree._state_lock:
                tree._runner_pool = pool
                if tree._killed:  # kill() came before the pool existed
                    pool.shutdown(wait=False, kill=True)
            workers = max(1, width(self.root))
            if tree._max_workers is not None:
                workers = min(workers, tree._max_workers)
            spawns = [pool.submit_spawn() for _ in range(workers)]
            for spawned in spawns:
                try:
                    spawned.result()
                except PoolShutDownError:
                    if not tree._killed:
                        raise
            self.pool = pool
            if not tree._stopping:
                self.begin()
                self.ended.wait()
        except BaseException:
            tree.kill()  # Ctrl-C (or a failure here) ends the run now: nothing outlives start()
            raise
        finally:
            try:
                pool.shutdown(wait=True, kill=tree._killed)
            finally:
                with tree._state_lock:
                    tree._runner_pool = None
                    tree._running = False
        if self.broken is not None:
            raise self.broken
        errors = [e for report in self.reports for e in report.errors]
        if errors and self.on_error == "raise":
            rounds = len({(r.branch, r.round) for r in self.reports if r.errors})
            raise TaskTreeError(
                f"{len(errors)} task error{'s' * (len(errors) != 1)} in {rounds} round{'s' * (rounds != 1)}",
                errors,
                self.reports,
            )
        return self.reports

    # -- the scheduling: every step runs from the completion of the one before --

    def begin(self) -> None:
        if self.unbound:
            assert isinstance(self.root, Concurrent)
            branches: list[tuple[int | None, Item]] = list(enumerate(self.root.items))
        else:
            branches = [(None, self.root)]
        self.branches_left = len(branches)
        if not branches:
            self.ended.set()
        for branch, item in branches:
            self.rounds(item, branch, 0)

    def rounds(self, item: Item, branch: int | None, round_no: int) -> None:
        """Runs rounds ``round_no``, ``round_no + 1``, ... of ``item``: in this loop while they
        finish at once, from the completion of the last task of a round otherwise."""
        tree = self.tree
        while (self.times is None or round_no < self.times) and not tree._stopping and not self.failed:
            if not self.one_round(item, branch, round_no):
                return
            round_no += 1
        with self.lock:
            self.branches_left -= 1
            last = self.branches_left == 0
        if last:
            self.ended.set()

    def one_round(self, item: Item, branch: int | None, round_no: int) -> bool:
        """Starts round ``round_no``; whether it finished already (the caller starts the next
        one), else the completion that finishes it does."""
        results: list[TaskResult] = []
        started = time.time()
        handoff = _Handoff()

        def finished(ok: bool) -> None:
            complete = not self.tree._killed
            report = RunReport(round_no, branch, started, time.time(), tuple(results), complete=complete)
            with self.lock:
                self.reports.append(report)
                if report.errors and self.on_error == "raise":
                    self.failed = True  # other branches finish their round, then stop
            handoff.finish()

        self.node(item, results, finished)
        return handoff.leave(functools.partial(self.rounds, item, branch, round_no + 1))

    def node(self, item: Item, results: list[TaskResult], done: Done) -> None:
        """Runs ``item`` once, then calls ``done`` (whether every task in it succeeded)."""
        if isinstance(item, ProcTask):
            self.leaf(item, results, done)
        elif isinstance(item, Sequential):
            self.sequence(item.items, 0, results, done)
        elif not item.items:
            done(True)
        else:
            count = _CountDown(len(item.items), done)
            for child in item.items:
                self.node(child, results, count.one)

    def sequence(self, items: tuple[Item, ...], at: int, results: list[TaskResult], done: Done) -> None:
        if at == len(items):
            done(True)
            return

        def next_one(ok: bool) -> None:
            if ok:
                self.sequence(items, at + 1, results, done)
            else:
                done(False)  # the rest of this group is skipped this round

        self.node(items[at], results, next_one)

    def leaf(self, task: ProcTask, results: list[TaskResult], done: Done) -> None:
        if self.tree._killed:
            done(False)
            return
        assert self.pool is not None
        dispatched = time.time()
        try:
            future = self.pool.submit_call("run", self.tree._ns._fields, self.blobs[id(task)])
        except PoolShutDownError as exc:  # killed between the check and the submit
            self.settle(task, dispatched, exc, None, results, done)
            return
        future.add_done_callback(lambda f: self.settled(task, dispatched, f, results, done))

    def settled(
        self,
        task: ProcTask,
        dispatched: float,
        future: concurrent.futures.Future[Any],
        results: list[TaskResult],
        done: Done,
    ) -> None:
        try:
            if future.cancelled():  # a queued task cancelled by the pool's shutdown
                error: BaseException | None = concurrent.futures.CancelledError("the task was cancelled")
            else:
                error = future.exception()
            self.settle(task, dispatched, error, None if error is not None else future.result(), results, done)
        except BaseException as exc:  # a bug here would stall the run: end it instead
            self.broken = exc
            self.tree.kill()
            self.ended.set()

    def settle(
        self,
        task: ProcTask,
        dispatched: float,
        error: BaseException | None,
        value: tuple[float, float, Any] | None,
        results: list[TaskResult],
        done: Done,
    ) -> None:
        if error is None:
            assert value is not None
            started, finished, returned = value
            results.append(TaskResult(task.label, started, finished, returned))
            done(True)
            return
        if self.tree._killed and isinstance(error, (PoolShutDownError, concurrent.futures.CancelledError)):
            done(False)  # killed on purpose: not the task's fault
            return
        failure = error if isinstance(error, Exception) else RuntimeError(f"the task ended with {error!r}")
        results.append(TaskResult(task.label, dispatched, time.time(), None, failure))
        done(False)
