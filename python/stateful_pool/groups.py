"""Task trees: :class:`ProcTask` objects in nested :class:`Sequential` and :class:`Concurrent`
groups, run in rounds by a :class:`TaskTree` on :class:`SPool` worker processes, sharing one
namespace.

How a tree runs (everything below is torn down when ``start()`` returns)::

    caller thread            scheduler thread (asyncio)        worker processes (SPool)
    -------------            --------------------------        ------------------------
    tree.start() --------->  spawn namespace host   -------->  [_NamespaceHost] SyncManager
                             spawn width(tree) runners ----->  [_TaskRunner] x N  ----+
                             round 0: walk the tree,                                  |
                               submit_call("run", task)  --->  task.task(ns) <--------+-- ns: dict proxy
                               Sequential: one by one          (dict on the host) + lease lock
                               Concurrent: all at once
                             round 1, ... until times/stop()
    tree.stop()  ---------->  no new round; the current one finishes
    tree.kill()  ---------->  runner pool killed now; running tasks end

The namespace lives in a :class:`multiprocessing.managers.SyncManager` server hosted in an SPool
worker of its own, so it gets the pool's cleanup: it dies with the tree's run, on ``kill()``, at
interpreter exit and when the parent process is killed. Before and after a run the namespace is a
plain local copy, so values set before ``start()`` reach the tasks and values left by the tasks
can be read afterwards.

``ns.lock()`` is not served by the manager: it is a lease on a resource of capacity 1 in a
shared-memory limit table the caller's process creates for the run (``_core.CoreLimits``),
recorded with the process holding it. A task killed while it holds the lock therefore does not
take it to the grave: the next process waiting for it sees its holder dead and takes it.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
import os
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, Literal, Self, TypeVar, cast, overload

import cloudpickle

from . import _core
from .errors import PoolShutDownError
from .pool import SPool
from .worker import SWorker

if TYPE_CHECKING:
    from multiprocessing.managers import DictProxy, Token

# multiprocessing.managers and secrets are imported where used: every worker process imports
# this package, and most never host or reach a namespace.

__all__ = [
    "Concurrent",
    "Namespace",
    "ProcTask",
    "RunReport",
    "Sequential",
    "SharedNamespace",
    "TaskResult",
    "TaskTree",
    "TaskTreeError",
]

N = TypeVar("N")

# A process-wide lock for namespaces used outside a tree (a plain dataclass instance passed to
# task() in a unit test, say): coarse, but correct, and it needs no per-instance storage.
_LOCAL_LOCK = threading.RLock()

# Sleep between attempts on the namespace lock held by another process, seconds.
_LOCK_POLL = 0.002


# -- the pieces of a tree -------------------------------------------------------------------------


class ProcTask:
    """One task of a tree: subclass it and define :meth:`task`.

    The instance is pickled (with cloudpickle, so classes from ``__main__`` work) and sent to a
    worker process each time it runs: changes to its attributes are not kept between runs. Keep
    shared or lasting state in the namespace.

    Args:
        name: the label of this task in reports (default: the class name).
    """

    def __init__(self, name: str | None = None):
        self.name = name

    @property
    def label(self) -> str:
        """The name used in reports."""
        return getattr(self, "name", None) or type(self).__name__

    def task(self, ns: Any) -> Any:
        """Does the work, in a worker process. ``ns`` is the tree's shared namespace; the return
        value (if it pickles) is kept in the run's :class:`TaskResult`."""
        raise NotImplementedError(f"{type(self).__name__} does not define task()")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label!r}>"


class _Group:
    """Common part of :class:`Sequential` and :class:`Concurrent`."""

    def __init__(self, items: Iterable[Item]):
        self.items: tuple[Item, ...] = tuple(items)
        for item in self.items:
            if not isinstance(item, (ProcTask, _Group)):
                raise TypeError(f"a group holds ProcTask, Sequential or Concurrent items, got {item!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.items)!r})"


class Sequential(_Group):
    """Runs its items one after another. If one fails, the rest of this group is skipped for
    that round (later items usually depend on earlier ones)."""


class Concurrent(_Group):
    """Runs its items at the same time, each on its own worker, and is done when all are done.
    A failing item does not stop its siblings: they run to the end and are reported."""


Item = ProcTask | Sequential | Concurrent


def _width(item: Item) -> int:
    """How many tasks of ``item`` can run at once: the workers it needs."""
    if isinstance(item, ProcTask):
        return 1
    widths = [_width(child) for child in item.items]
    if isinstance(item, Concurrent):
        return sum(widths)
    return max(widths, default=0)


def _leaves(item: Item) -> Iterable[ProcTask]:
    if isinstance(item, ProcTask):
        yield item
    else:
        for child in item.items:
            yield from _leaves(child)


# -- the namespace --------------------------------------------------------------------------------


class Namespace:
    """Optional base class for a typed namespace dataclass: it declares :meth:`lock`, so that
    ``with ns.lock():`` type-checks in tasks annotated ``def task(self, ns: MyNamespace)``.

    Example::

        @dataclass
        class Stats(Namespace):
            count: int = 0

        tree = TaskTree(Stats)
    """

    __slots__ = ()

    def lock(self) -> AbstractContextManager[Any]:
        """A lock shared by every process of the tree (see :meth:`SharedNamespace.lock`).
        On a plain instance, outside a tree, a process-local lock."""
        return _LOCAL_LOCK


class SharedNamespace(Namespace):
    """The namespace every task receives: attributes set on it are visible to every task of the
    tree, in any process, and to the caller (``tree.namespace``).

    Values are copies: ``ns.items.append(x)`` changes a local copy only; assign the new value
    back (``ns.items = [*ns.items, x]``), inside ``with ns.lock():`` when other tasks may update
    the same attribute. With a typed namespace (a dataclass), only its fields may be set.
    """

    __slots__ = ("_fields", "_lock", "_store")

    _store: dict[str, Any] | DictProxy[str, Any]
    _lock: AbstractContextManager[Any]
    _fields: frozenset[str] | None

    def __init__(
        self,
        store: dict[str, Any] | DictProxy[str, Any],
        lock: AbstractContextManager[Any],
        fields: frozenset[str] | None = None,
    ):
        object.__setattr__(self, "_store", store)
        object.__setattr__(self, "_lock", lock)
        object.__setattr__(self, "_fields", fields)

    def __getattr__(self, name: str) -> Any:
        # Private and dunder names are never namespace values: answering them would make
        # copy/pickle/inspect probes hit the server (or mistake a value for a protocol method).
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._store[name]
        except KeyError:
            raise AttributeError(f"namespace has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._check_name(name)
        self._store[name] = value

    def __delattr__(self, name: str) -> None:
        self._check_name(name)
        try:
            del self._store[name]
        except KeyError:
            raise AttributeError(f"namespace has no attribute {name!r}") from None

    def _check_name(self, name: str) -> None:
        if type(name) is not str:  # a str subclass could lie in startswith()
            raise TypeError(f"namespace attribute names must be str, got {type(name).__name__}")
        if name.startswith("_"):
            raise AttributeError(f"namespace attribute names cannot start with '_': {name!r}")
        if hasattr(SharedNamespace, name):
            # ns.lock = ... would be stored but never read back: ns.lock is the method.
            raise AttributeError(f"{name!r} is a method of the namespace, not an attribute name")
        if self._fields is not None and name not in self._fields:
            raise AttributeError(f"namespace has no field {name!r} (fields: {', '.join(sorted(self._fields))})")

    def lock(self) -> AbstractContextManager[Any]:
        """A reentrant lock shared by every process of the tree: ``with ns.lock():`` makes a
        read-modify-write (``ns.count += 1``) safe against other tasks doing the same. A task
        killed while it holds the lock does not keep it: the next task waiting for it gets it
        (within about 50 ms)."""
        return self._lock

    def snapshot(self) -> dict[str, Any]:
        """A plain ``dict`` copy of every attribute, read in one request."""
        return dict(self._store.copy())

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._store.keys()))

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v!r}" for k, v in sorted(self.snapshot().items()))
        return f"SharedNamespace({values})"


class _LeaseLock:
    """``ns.lock()`` during a run: a reentrant lock shared by every process of the tree, with
    the API of :class:`threading.RLock` (``acquire(blocking, timeout)``, ``release()``, ``with``).

    Between processes it is a lease on the one unit of a shared-memory resource limit, recorded
    with the holding process: if that process dies holding it, the next waiter (which looks
    for dead holders every 50 ms while it waits) takes it back. Between the threads of one
    process a local ``RLock`` takes turns and counts reentry, so the process leases the unit
    once, when a thread enters the outermost ``with``."""

    def __init__(self, table: _core.CoreLimits):
        self._table = table
        self._turn = threading.RLock()
        # Touched only by the thread holding _turn.
        self._owner: int | None = None
        self._depth = 0
        self._lease: _core.CoreLease | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Takes the lock (again, if this thread holds it); ``False`` if not within ``timeout``
        seconds (``-1``: no limit) or at once when ``blocking`` is false."""
        if timeout is None:
            timeout = -1
        deadline = None if timeout < 0 else time.monotonic() + timeout
        if not (self._turn.acquire(True, timeout) if blocking else self._turn.acquire(False)):
            return False
        if self._depth > 0:
            self._depth += 1
            return True
        while (lease := self._table.lease(0, 1)) is None:
            now = time.monotonic()
            if not blocking or (deadline is not None and now >= deadline):
                self._turn.release()
                return False
            time.sleep(_LOCK_POLL if deadline is None else max(0.0, min(_LOCK_POLL, deadline - now)))
        self._lease, self._owner, self._depth = lease, threading.get_ident(), 1
        return True

    def release(self) -> None:
        """Leaves one level; the outermost gives the lease back. Raises ``RuntimeError`` in a
        thread that does not hold the lock."""
        if self._owner != threading.get_ident() or self._depth == 0:
            raise RuntimeError("cannot release un-acquired lock")
        self._depth -= 1
        if self._depth == 0:
            lease, self._lease, self._owner = self._lease, None, None
            if lease is not None:
                lease.release()
        self._turn.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<namespace lock, {'held' if self._depth else 'not held'} in this process>"


@dataclasses.dataclass(frozen=True)
class _NamespaceRef:
    """What a runner needs to reach the namespace server and lock (sent with every task: it is
    small)."""

    address: str
    authkey: bytes
    store: Token
    #: ``(pid, fd)`` of the lock's limit table, in the caller's process
    lock_at: tuple[int, int]
    fields: frozenset[str] | None

    def connect(self, lock: _LeaseLock | None = None) -> SharedNamespace:
        from multiprocessing.managers import DictProxy

        # incref=False: the host keeps its own proxies, so the objects live as long as the
        # server does, and no process has to send decrefs to a server that may be gone.
        store: DictProxy[str, Any] = DictProxy(self.store, "pickle", authkey=self.authkey, incref=False)
        if lock is None:
            lock = _LeaseLock(_core.CoreLimits.attach(*self.lock_at))
        return SharedNamespace(store, lock, self.fields)


class _NamespaceHost(SWorker):
    """The SPool worker hosting the namespace: a SyncManager server on an abstract Unix socket
    (no file to clean up, even when killed) serving one dict."""

    def spawn(self, address: str, authkey: bytes) -> Token:
        from multiprocessing.managers import SyncManager

        server = SyncManager(address, authkey).get_server()
        # Daemon thread: the worker's frame loop stays in charge of its life (STOP or the parent
        # going away ends the process, and the server with it).
        threading.Thread(target=server.serve_forever, name="namespace-server", daemon=True).start()
        client = SyncManager(address, authkey)
        client.connect()
        self._store = client.dict()
        return self._store._token  # type: ignore[attr-defined,no-any-return]


class _TaskRunner(SWorker):
    """The SPool worker running tasks; it connects to the namespace on its first task."""

    _ns: SharedNamespace | None = None
    _address: str | None = None

    def run(self, ref: _NamespaceRef, blob: bytes) -> tuple[float, float, Any]:
        if self._ns is None or self._address != ref.address:
            self._ns, self._address = ref.connect(), ref.address
        task = cloudpickle.loads(blob)
        started = time.time()
        value = task.task(self._ns)
        return started, time.time(), value


# -- reports --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """One run of one task. Times are ``time.time()`` seconds (the worker's, or the caller's
    when the task failed)."""

    #: the task's label
    name: str
    #: when it started
    started: float
    #: when it finished
    finished: float
    #: what ``task()`` returned (``None`` on error)
    value: Any = None
    #: the exception it raised (its worker traceback is ``__cause__``), or ``None``
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """Whether the task returned without raising."""
        return self.error is None


@dataclasses.dataclass(frozen=True)
class RunReport:
    """One round: one run of the whole tree, or in unbound mode, of one root branch."""

    #: 0 for the first round, 1 for the second...; counted per branch in unbound mode
    round: int
    #: in unbound mode, the index of the root ``Concurrent`` item that ran; else ``None``
    branch: int | None
    #: when the round started and finished (``time.time()``)
    started: float
    finished: float
    #: every task that ran, in the order they finished (tasks skipped or killed are absent)
    results: tuple[TaskResult, ...]
    #: ``False`` when ``kill()`` interrupted the round
    complete: bool = True

    @property
    def errors(self) -> list[Exception]:
        """The exceptions raised by this round's tasks."""
        return [r.error for r in self.results if r.error is not None]

    @property
    def ok(self) -> bool:
        """Whether the round completed with no task error."""
        return self.complete and not self.errors


class TaskTreeError(ExceptionGroup[Exception]):
    """Raised by :meth:`TaskTree.start` when tasks failed (with ``on_error="raise"``): every
    task error, in order, plus ``reports`` (every round that ran). Use ``except*`` to pick
    error types."""

    reports: list[RunReport]

    def __new__(cls, message: str, exceptions: Sequence[Exception], reports: Sequence[RunReport] = ()) -> Self:
        self = super().__new__(cls, message, exceptions)
        self.reports = list(reports)
        return self

    def __init__(self, message: str, exceptions: Sequence[Exception], reports: Sequence[RunReport] = ()):
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> TaskTreeError:  # type: ignore[override]
        # ``except*`` and split() build sub-groups through derive(): keep the reports on them.
        return TaskTreeError(self.message, excs, self.reports)


# -- the manager ----------------------------------------------------------------------------------


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
        self._ns = SharedNamespace(values, _LOCAL_LOCK, fields)
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
        writes go to the tasks' namespace; afterwards it holds the values the run left."""
        # A typed tree hands out the proxy as the dataclass type: it has the same attributes.
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
        blobs = {id(task): cloudpickle.dumps(task, protocol=5) for task in _leaves(root)}
        with self._state_lock:
            if self._running:
                raise RuntimeError("this tree is already running")
            self._running, self._stopping, self._killed = True, False, False
        _running_trees.add(self)
        future: concurrent.futures.Future[list[RunReport]] = concurrent.futures.Future()
        run = _Run(self, root, blobs, times, unbound, on_error)
        threading.Thread(target=run.main, args=(future,), name="stateful-pool-tasktree", daemon=True).start()
        if background:
            return future
        try:
            return future.result()
        except KeyboardInterrupt:
            self.kill()
            concurrent.futures.wait([future], timeout=60)
            raise

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
            # Fails every running and queued task with PoolShutDownError, which wakes the
            # scheduler; start() waits for the processes to be gone.
            pool.shutdown(wait=False, kill=True)

    def __repr__(self) -> str:
        kind = self._namespace_type.__name__ if isinstance(self._namespace_type, type) else "untyped"
        state = "running" if self._running else "idle"
        return f"<TaskTree {state}, {kind} namespace: {self._root!r}>"


class _Run:
    """One ``start()``: opens the processes, runs the rounds, closes everything."""

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
        self.ref: _NamespaceRef | None = None
        # The namespace lock of this process, over the lock's table (kept open for the run).
        self.lock: _LeaseLock | None = None
        # The caller's values from before the run: restored if the server cannot be read after.
        self.before: dict[str, Any] = dict(tree._ns._store)

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
        host: SPool[_NamespaceHost] = SPool(_NamespaceHost, stop_timeout=2.0)
        pool: SPool[_TaskRunner] = SPool(_TaskRunner, task_timeout=tree._task_timeout)
        local = tree._ns
        try:
            with tree._state_lock:
                tree._runner_pool = pool
                if tree._killed:  # kill() came before the pool existed
                    pool.shutdown(wait=False, kill=True)
            import secrets

            address = f"\0stateful-pool-ns-{os.getpid()}-{secrets.token_hex(8)}"
            authkey = secrets.token_bytes(32)
            store = host.spawn(address, authkey)
            # The lock: one unit of a resource limit in shared memory this process holds for the
            # run; the runners map it through /proc/<pid>/fd/<fd>.
            table = _core.CoreLimits([("semaphore", 0.0, 1)])
            self.ref = _NamespaceRef(address, authkey, store, (table.pid, table.fd), local._fields)
            self.lock = _LeaseLock(table)
            shared = self.ref.connect(self.lock)
            shared._store.update(local._store)
            workers = max(1, _width(self.root))
            if tree._max_workers is not None:
                workers = min(workers, tree._max_workers)
            spawns = [pool.submit_spawn() for _ in range(workers)]
            for spawned in spawns:
                try:
                    spawned.result()
                except PoolShutDownError:
                    if not tree._killed:
                        raise
            # The caller's namespace now reads and writes the shared one.
            object.__setattr__(local, "_store", shared._store)
            object.__setattr__(local, "_lock", shared._lock)
            self.pool = pool
            if not tree._stopping:
                asyncio.run(self.rounds())
        finally:
            self.close(host, pool)
        errors = [e for report in self.reports for e in report.errors]
        if errors and self.on_error == "raise":
            rounds = len({(r.branch, r.round) for r in self.reports if r.errors})
            raise TaskTreeError(
                f"{len(errors)} task error{'s' * (len(errors) != 1)} in {rounds} round{'s' * (rounds != 1)}",
                errors,
                self.reports,
            )
        return self.reports

    def close(self, host: SPool[_NamespaceHost], pool: SPool[_TaskRunner]) -> None:
        tree = self.tree
        local = tree._ns
        try:
            pool.shutdown(wait=True, kill=tree._killed)
        finally:
            values = self.before
            if self.ref is not None:
                try:
                    # Keep what the run left, as a plain local copy, before the server goes.
                    values = self.ref.connect(self.lock).snapshot()
                except Exception:  # the server died with the run (the tasks reported it)
                    pass
            object.__setattr__(local, "_store", values)
            object.__setattr__(local, "_lock", _LOCAL_LOCK)
            try:
                host.shutdown(wait=True, kill=True)
            finally:
                if self.ref is not None:
                    # Proxies keep one connection per thread in this class-level table; dropping
                    # the entry closes those of every thread that used the namespace.
                    from multiprocessing.managers import BaseProxy

                    getattr(BaseProxy, "_address_to_local", {}).pop(self.ref.address, None)
                with tree._state_lock:
                    tree._runner_pool = None
                    tree._running = False

    # -- the scheduler (runs inside asyncio.run) --

    async def rounds(self) -> None:
        if self.unbound:
            assert isinstance(self.root, Concurrent)
            await asyncio.gather(*(self.loop(item, branch) for branch, item in enumerate(self.root.items)))
        else:
            await self.loop(self.root, None)

    async def loop(self, item: Item, branch: int | None) -> None:
        round_no = 0
        tree = self.tree
        while (self.times is None or round_no < self.times) and not tree._stopping and not self.failed:
            results: list[TaskResult] = []
            started = time.time()
            await self.node(item, results)
            report = RunReport(round_no, branch, started, time.time(), tuple(results), complete=not tree._killed)
            self.reports.append(report)
            if report.errors and self.on_error == "raise":
                self.failed = True  # other branches finish their round, then stop
            round_no += 1

    async def node(self, item: Item, results: list[TaskResult]) -> bool:
        """Runs ``item`` once; whether every task in it succeeded."""
        if isinstance(item, ProcTask):
            return await self.leaf(item, results)
        if isinstance(item, Sequential):
            for child in item.items:
                if not await self.node(child, results):
                    return False
            return True
        oks = await asyncio.gather(*(self.node(child, results) for child in item.items))
        return all(oks)

    async def leaf(self, task: ProcTask, results: list[TaskResult]) -> bool:
        if self.tree._killed:
            return False
        assert self.pool is not None
        dispatched = time.time()
        try:
            started, finished, value = await asyncio.wrap_future(
                self.pool.submit_call("run", self.ref, self.blobs[id(task)])
            )
        except (Exception, asyncio.CancelledError) as exc:
            # A queued task cancelled by the pool's shutdown arrives as asyncio's CancelledError
            # (a BaseException); nothing else cancels these awaits, so catching it is safe.
            if self.tree._killed and isinstance(exc, (PoolShutDownError, asyncio.CancelledError)):
                return False  # killed on purpose: not the task's fault
            error = exc if isinstance(exc, Exception) else concurrent.futures.CancelledError("the task was cancelled")
            results.append(TaskResult(task.label, dispatched, time.time(), None, error))
            return False
        results.append(TaskResult(task.label, started, finished, value))
        return True
