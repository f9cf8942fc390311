"""``SPool``: a pool of stateful worker processes run by the Rust supervisor."""

from __future__ import annotations

import asyncio
import copy
import os
import sys
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

from . import _core, _lifecycle
from ._chunk import CHUNK_METHOD, ChunkSizer, MapIterator, chunk_payload, chunk_source, map_iterator, map_parts
from ._decode import decode
from ._futures import PoolFuture, RawReplyFuture
from ._output import worker_env
from ._placement import Placement, health_call, placement, ray_init
from ._protocol import encode_init
from ._routing import Routing, view_routing
from ._serialize import by_value, encode
from ._stats import PoolStats
from ._zygote import zygote_command
from .batching import batched_methods
from .errors import PoolShutDownError
from .worker import SWorker, check_method_name

__all__ = ["SPool"]

W = TypeVar("W", bound=SWorker)

_WORKER_ARGS = ["-c", "from stateful_pool._worker import main; main()"]
_live_pools: weakref.WeakSet[SPool[Any]] = weakref.WeakSet()


def _stop_live_pools() -> None:
    """At interpreter exit, pools still running finish the work already submitted, then stop
    (as ``concurrent.futures`` executors do); Ctrl-C while waiting kills their workers."""
    pools = list(_live_pools)
    for pool in pools:  # first stop taking work everywhere, then wait for each
        if pool._generation == _lifecycle.GENERATION:
            pool._core.shutdown("graceful")
    for pool in pools:
        pool.shutdown(wait=True)


_lifecycle.at_interpreter_exit(_stop_live_pools)


# A forked child must not shut the parent's pools down at its exit (see `_lifecycle`).
_lifecycle.on_fork_in_child(_live_pools.clear)


class SPool(Generic[W]):
    """A pool of worker processes, each hosting one instance of ``worker_cls``.

    ``spawn()`` starts one worker (its ``spawn`` method runs there, once) and returns what that
    returned; ``execute()`` and the ``submit_*``/``async_*`` variants run tasks on whichever
    worker is free. Use it as a context manager, or call :meth:`shutdown`.

    A pool you drop without shutting it down (no reference to it or to an :meth:`options` view
    is left) is not leaked: like a dropped ``ProcessPoolExecutor`` it runs the tasks already
    submitted, so their futures still complete, then stops its workers and ends its threads.
    At interpreter exit, pools still running finish the tasks already submitted (queued and
    running), then stop, as ``concurrent.futures`` executors do; submitting then raises
    :class:`PoolShutDownError` (a ``RuntimeError``). A child made by ``os.fork()`` cannot use
    the pools it inherited (they raise :class:`RuntimeError`; their workers are the parent's) and
    exits without waiting on them; the parent's pools are untouched.

    Args:
        worker_cls: an :class:`SWorker` subclass.
        queue_size: how many tasks may wait for a worker (``None``: unbounded). When the queue
            is full, submitting blocks, or raises :class:`queue.Full` after ``submit_timeout``.
        max_in_flight: how many submitted tasks may be unanswered, queued or running (``None``:
            unbounded); beyond it submitting blocks as on a full queue, until one is answered.
        task_timeout: default seconds a task may run; past it the future fails with
            :class:`TaskTimeoutError` and the worker is killed and replaced.
        restart: ``"on-failure"`` (default: a crashed worker is started again with the same
            spawn arguments), ``"never"``, or ``"always"``.
        max_restarts: a worker failing without serving (``spawn`` crashes, or it dies idle) is
            restarted, with a backoff, at most this many times within ``restart_window``, then
            stays failed. A crash during a task always restarts it at once and never counts.
        restart_window: the window, in seconds, in which ``max_restarts`` is counted.
        max_tasks_per_worker: replace a worker gracefully after this many tasks: its replacement
            starts while it keeps serving and takes over between tasks once ready, one worker of
            the pool at a time.
        max_memory_per_worker: replace a worker the same way once its RSS exceeds these bytes.
        submit_timeout: seconds a submit may wait on a full queue (``None``: as long as it takes).
        stop_timeout: seconds a worker may take to exit on shutdown before it is killed.
        crash_retries: how many times a task whose worker crashed under it is run again on
            another worker (default 0: its future fails with :class:`WorkerCrashedError`; a task
            that crashes its worker may well crash the next).
        shm_capacity: bytes per direction of each worker's shared-memory channel (default
            8 MiB; larger messages stream through it; at most 1 TiB). ``None`` sends frames
            through pipes.
        max_message_size: the largest pickled call or result, in bytes (default 1 GiB): a call
            over it raises :class:`ValueError` unsent, a result over it fails its task so; a
            worker announcing a larger message is replaced (:class:`WorkerCrashedError`).
        load_balancing: which idle worker gets the next task: ``"round_robin"`` (``"rr"``,
            default), ``"active"`` (``"least_active"``), ``"total"`` (``"least_total"``) or
            ``"random"`` (``"rand"``). Tasks are bound to workers only when one is idle, so no
            balancer queues a task behind a running one while another worker is free.
        mode: where workers run: ``"process"`` (default: fresh interpreters), ``"thread"``
            (threads of this process, for I/O-bound work), ``"asyncio"`` (an event loop per
            worker; methods may be ``async def``), ``"ray"`` (one Ray actor per worker) or
            ``"sync"`` (inline in the caller; futures come back done, for debugging). Errors,
            stats, shutdown, ``queue_size``, ``task_timeout`` and cancelling behave the same in
            every mode; see ``stateful_pool.modes``.
        actor_options: Ray actor options for ``mode="ray"``, e.g. ``{"num_cpus": 0.5}``.
        max_concurrency: calls in flight per worker for ``mode="asyncio"`` (default 32) and
            ``mode="ray"`` (default 1: calls queued at the actor).
        start_method: how a process worker starts: ``"zygote"`` (default: forked, in about a
            millisecond, from a single-threaded template process the pool starts afresh and
            ends with its shutdown), ``"forkserver"`` (the same, from a zygote shared by this
            process's pools and kept until it exits, as ``multiprocessing``'s forkserver is) or
            ``"spawn"`` (a fresh interpreter per worker, about 50 ms). See the README.
        preload: modules the zygote imports once, so forked workers start with them loaded
            (e.g. ``["numpy", "mypkg.model"]``); one that starts a thread (or CUDA) is refused.
        on_demand: run on demand with at most this many workers at once (``None``: workers
            are started with :meth:`spawn`). No worker runs while nothing is queued: each task
            gets a fresh worker, spawned for it with the arguments of the last :meth:`spawn`
            call (which starts nothing and returns ``None``), and retired once it is done. A
            worker whose setup raises fails that task with the exception. Process, thread and
            ray modes only.
        health_interval: seconds between runs of every idle worker's ``health()``; a worker
            whose check returns anything but ``True``, raises, or runs past ``health_timeout``
            seconds (default 10) is replaced (``health_failures`` counts it). Not in sync mode.
        worker_output: what a process worker's ``print`` and ``logging`` output looks like on
            this process's stdout and stderr: ``"prefix"`` (default: every line starts with
            ``(pid=<worker pid>) ``, like Ray's) or ``"plain"`` (untouched). Other modes'
            workers share this process's streams and are never prefixed.
    """

    def __init__(
        self,
        worker_cls: type[W],
        queue_size: int | None = None,
        *,
        max_in_flight: int | None = None,
        task_timeout: float | None = None,
        restart: str = "on-failure",
        max_restarts: int = 5,
        restart_window: float = 60.0,
        max_tasks_per_worker: int | None = None,
        max_memory_per_worker: int | None = None,
        submit_timeout: float | None = None,
        stop_timeout: float = 5.0,
        load_balancing: str = "round_robin",
        crash_retries: int = 0,
        shm_capacity: int | None = 8 << 20,
        max_message_size: int = 1 << 30,
        mode: str = "process",
        actor_options: dict[str, Any] | None = None,
        max_concurrency: int | None = None,
        start_method: str = "zygote",
        preload: Sequence[str] = (),
        on_demand: int | None = None,
        health_interval: float | None = None,
        health_timeout: float = 10.0,
        worker_output: str = "prefix",
        _namespace: _core.CoreNamespace | None = None,
    ):
        if not isinstance(worker_cls, type):
            raise TypeError(f"worker_cls must be a class, got {worker_cls!r}")
        if queue_size is not None and queue_size < 1:
            raise ValueError(f"queue_size must be at least 1 or None, got {queue_size}")
        if max_tasks_per_worker is not None and max_tasks_per_worker < 1:
            raise ValueError(f"max_tasks_per_worker must be at least 1, got {max_tasks_per_worker}")
        zygote = zygote_command(mode, start_method, preload)  # checked in every mode
        from .modes import launcher, make_completer

        self._cls = worker_cls
        # Method names already checked to be public methods of the worker class.
        self._methods: set[str] = set()
        self._submit_timeout = submit_timeout
        # (priority, key, sticky): the routing options of this view's calls (see `options`).
        self._routing: Routing = (0, None, "wait")
        # All of the above, checked and converted once (not on every call) for the engine.
        self._call_options = _core.CallOptions(None, submit_timeout)
        self._mode = mode
        # Where the workers this view spawns run (see `placement`); None: like the parent.
        self._placement: Placement | None = None
        # Every option of the engine, whatever the mode (see src/python/engine/options.rs).
        options: dict[str, Any] = {
            "mode": mode,
            "queue_size": queue_size,
            "max_in_flight": max_in_flight,
            "task_timeout": task_timeout,
            "restart": restart,
            "max_restarts": max_restarts,
            "restart_window": restart_window,
            "max_tasks_per_worker": max_tasks_per_worker,
            "max_memory_per_worker": max_memory_per_worker,
            "stop_timeout": stop_timeout,
            "load_balancing": load_balancing,
            "crash_retries": crash_retries,
            "shm_capacity": shm_capacity,
            "max_message_size": max_message_size,
            "max_concurrency": max_concurrency,
            # Where workers run: a fresh interpreter, or a host the launcher starts.
            "program": sys.executable,
            "args": _WORKER_ARGS,
            "env": worker_env(worker_output),
            "cwd": os.getcwd(),
            "launcher": launcher(mode, actor_options),
            # Served to the workers as upcalls (stateful_pool.groups); process mode only.
            "namespace": _namespace,
            # Process mode: fork workers from a template process (None: a fresh interpreter each).
            "zygote": zygote,
            "zygote_shared": start_method == "forkserver",
            "on_demand": on_demand,
            # Batched methods: the core gathers calls to them (stateful_pool.batching).
            "coalesce": batched_methods(worker_cls),
            "health_interval": health_interval,
            "health_timeout": health_timeout,
            "health_call": health_call(worker_cls, mode, health_interval),
        }
        self._on_demand = on_demand is not None
        self._core = _core.Engine(options)
        self._completer = make_completer(self._core)
        # Workers in this process take arguments as they are, like ThreadPoolExecutor, and use
        # the class as it is; other processes get it by value.
        self._in_process = mode in ("thread", "asyncio", "sync")
        self._worker: type | bytes = worker_cls if self._in_process else by_value(worker_cls)
        self._generation = _lifecycle.GENERATION
        # Not a reference to this pool: the completer finishes the work of a dropped pool.
        self._users = _lifecycle.Users()
        self._abandon = weakref.finalize(self._users, self._completer.abandon)
        self._abandon.atexit = False  # at exit, the exit hook winds every pool down instead
        _live_pools.add(self)

    def options(
        self,
        *,
        timeout: float | None = None,
        submit_timeout: float | None = None,
        priority: int | None = None,
        key: Any = None,
        sticky: str | None = None,
    ) -> SPool[W]:
        """A view of this pool whose calls use these options; it shares the workers::

            pool.options(timeout=5).execute(x)
            pool.options(priority=10).submit_execute(x)
            pool.options(key=user_id).execute(x)

        - ``timeout``: seconds per task (past it the task fails with :class:`TaskTimeoutError`
          and its worker is replaced).
        - ``submit_timeout``: seconds of waiting on a full queue.
        - ``priority``: an int, higher first (default 0); FIFO within a priority, and no task
          starves: once 8 tasks in a row were taken past the oldest waiting one, the oldest
          goes next whatever its priority.
        - ``key``: any hashable; calls with equal keys go to the same worker while it serves
          (rendezvous hashing: a worker that comes or goes moves only its own keys).
        - ``sticky``: when the key's worker is busy, ``"wait"`` for it (default: keeps the
          worker's per-key state warm) or ``"spill"`` to an idle worker (a miss in
          ``stats()["sticky_misses"]``).

        Unset options keep the values of the pool (or view) this is called on; ``timeout``
        always applies as given.
        """
        routing = view_routing(self._routing, priority, key, sticky)
        view = copy.copy(self)
        if submit_timeout is not None:
            view._submit_timeout = submit_timeout
        view._routing = routing
        view._call_options = _core.CallOptions(timeout, view._submit_timeout, *routing)
        return view

    def placement(self, *, env: dict[str, str] | None = None, cpus: Iterable[int] | None = None) -> SPool[W]:
        """A view of this pool whose :meth:`spawn` (``submit_spawn``, ``async_spawn``,
        ``resize``) starts workers with environment variables ``env`` of their own (on top of
        this process's) and pinned to ``cpus``, both set before the worker's interpreter starts
        and kept across its restarts; the view shares everything else::

            pool.placement(env={"CUDA_VISIBLE_DEVICES": "1"}, cpus=[2, 3]).spawn(model_path)

        In ``mode="ray"`` they become actor options: ``env`` goes to
        ``runtime_env={"env_vars": ...}``, except ``CUDA_VISIBLE_DEVICES``, which asks Ray for that
        many GPUs (``num_gpus``; Ray picks them), and ``cpus`` asks for that many (``num_cpus``).
        Thread, asyncio and sync workers share this process: they refuse with
        :class:`ValueError`, as do CPUs this process may not use."""
        view = copy.copy(self)
        view._placement = placement(self._mode, env, cpus)
        return view

    def _init_payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._check_open()
        init = encode_init(self._worker, args, kwargs)
        return ray_init(init, self._placement) if self._mode == "ray" else init

    def _engine_placement(self) -> tuple[list[tuple[str, str]], list[int]] | None:
        if self._placement is None or self._mode == "ray":  # a Ray actor's is in its init
            return None
        return self._placement.for_engine()

    def spawn(self, *args: Any, **kwargs: Any) -> Any:
        """Starts one worker process, runs ``worker.spawn(*args, **kwargs)`` there and returns
        its result. If ``spawn`` raises, the exception is re-raised here and no process is left.
        On an ``on_demand`` pool it only records the arguments every fresh worker is spawned
        with, and returns ``None``."""
        return decode(*self._core.spawn(self._init_payload(args, kwargs), self._engine_placement()))

    def submit_spawn(self, *args: Any, **kwargs: Any) -> PoolFuture[Any]:
        """Like :meth:`spawn`, but returns a future at once: spawn many workers in parallel."""
        future: PoolFuture[Any] = PoolFuture()
        try:
            init = self._init_payload(args, kwargs)
        except Exception as exc:
            future.set_exception(exc)
            return future
        return self._completer.register(future, self._core.submit_spawn, init, self._engine_placement())

    async def async_spawn(self, *args: Any, **kwargs: Any) -> Any:
        """Awaitable :meth:`spawn`."""
        return await asyncio.wrap_future(self.submit_spawn(*args, **kwargs))

    def _check_method(self, method: str) -> None:
        self._check_open()
        if type(method) is not str or method not in self._methods:
            # An exact str only: a subclass could override startswith() to pass as public.
            try:
                check_method_name(method)
            except AttributeError:
                raise AttributeError(f"{self._cls.__name__} has no public method {method!r}") from None
            if not callable(getattr(self._cls, method, None)):
                raise AttributeError(f"{self._cls.__name__} has no public method {method!r}")
            self._methods.add(method)

    def _payload(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        # _check_method's common case inline (a method checked before, an open pool): this runs
        # once per call, and a hot call is ~10 µs in all.
        if not (
            type(method) is str
            and method in self._methods
            and not self._closed
            and self._generation == _lifecycle.GENERATION
        ):
            self._check_method(method)
        if self._in_process:
            return (method, args, kwargs)  # type: ignore[return-value]
        return encode((method, args, kwargs))

    def _submit_chunk(
        self, method: str, items: Sequence[Any], prefix: tuple[Any, ...] = (), spread: bool = False, raw: bool = False
    ) -> PoolFuture[Any]:
        """Queues one chunk of ``method`` calls, one per item (see ``_chunk.py``); its future's
        result is the chunk's reply, for ``_chunk.chunk_parts`` (``raw``: undecoded)."""
        self._check_method(method)
        call: tuple[Any, ...] = (CHUNK_METHOD, chunk_payload(method, prefix, items, spread), {})
        payload = call if self._in_process else encode(call)
        future: PoolFuture[Any] = RawReplyFuture() if raw else PoolFuture()
        # pipelined: a worker is handed the next chunk behind the one it runs (no wait on the
        # supervisor between two chunks of about a millisecond each).
        return self._completer.register(future, self._core.submit, payload, self._call_options, None, True)

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Runs ``worker.<method>(*args, **kwargs)`` on a free worker and returns its result."""
        payload = self._payload(method, args, kwargs)
        return decode(*self._core.call(payload, self._call_options, method))

    def submit_call(self, method: str, /, *args: Any, **kwargs: Any) -> PoolFuture[Any]:
        """Queues ``worker.<method>(*args, **kwargs)``; returns a future."""
        future: PoolFuture[Any] = PoolFuture()
        try:
            payload = self._payload(method, args, kwargs)
        except Exception as exc:
            future.set_exception(exc)
            return future
        return self._completer.register(future, self._core.submit, payload, self._call_options, method)

    async def async_call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Awaitable :meth:`call`."""
        return await asyncio.wrap_future(self.submit_call(method, *args, **kwargs))

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Runs ``worker.execute(*args, **kwargs)`` on a free worker; blocks for the result."""
        return self.call("execute", *args, **kwargs)

    def submit_execute(self, *args: Any, **kwargs: Any) -> PoolFuture[Any]:
        """Queues ``worker.execute(*args, **kwargs)``; returns a future at once (or blocks while
        the queue is full)."""
        return self.submit_call("execute", *args, **kwargs)

    async def async_execute(self, *args: Any, **kwargs: Any) -> Any:
        """Awaitable :meth:`execute`."""
        return await asyncio.wrap_future(self.submit_call("execute", *args, **kwargs))

    def broadcast(self, method: str, /, *args: Any, **kwargs: Any) -> list[Any]:
        """Runs ``worker.<method>(*args, **kwargs)`` once on every live worker; returns the
        results in worker order. Raises the first worker's exception if any raised."""
        payload = self._payload(method, args, kwargs)
        replies = self._core.broadcast(payload)
        results: list[Any] = []
        first_error: BaseException | None = None
        for _worker_id, status, value in replies:
            try:
                results.append(decode(status, value))
            except Exception as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results

    def map(
        self,
        iterable: Iterable[Any],
        *,
        ordered: bool = True,
        progress: bool | str = False,
        window: int | None = None,
        chunksize: int | None = None,
    ) -> MapIterator:
        """Yields ``execute(item)`` for each item, in input order (or as finished with
        ``ordered=False``). The first failing item's exception is raised (after the results
        before it), and the chunks still queued are cancelled. ``progress=True`` (or a
        description string) shows a tqdm progress bar counting items.

        Items travel in chunks: one message and one pickle per chunk, the worker calls
        ``execute`` per item. ``chunksize=None`` sizes them from the per-item time the workers
        measure: 1 item at first, growing to about 1 ms of work per chunk. An item's exception
        fails that item only; a chunk whose call fails as a whole (a crash, a ``task_timeout``,
        which applies per chunk) runs its items again one per task, so the item that crashed
        fails alone with :class:`WorkerCrashedError` and the others complete. At most
        ``window`` chunks are in flight, so huge or endless inputs work."""
        self._check_open()
        workers = max(1, len(self._core.live_worker_ids()))
        # Chunks of about 1 ms: each worker runs one with the next ones handed to it behind it
        # (pipelined), and more wait queued; small fixed chunks need more.
        window = window or (4 * workers + 2 if chunksize is None else max(64, 4 * workers))
        total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
        sizer = ChunkSizer(chunksize, total, workers)
        self._check_method("execute")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=progress if isinstance(progress, str) else None, unit="task")
        parts = map_parts(
            lambda chunk: self._submit_chunk("execute", chunk, raw=True),
            lambda item: self.submit_call("execute", item),
            chunk_source(iterable),
            ordered,
            window,
            sizer,
            bar,
        )
        return map_iterator(parts)

    def resize(self, n: int, *spawn_args: Any, **spawn_kwargs: Any) -> None:
        """Grows the pool to ``n`` workers (new ones spawned in parallel with the given spawn
        arguments) or shrinks it (the newest workers leave after their current task; their
        queued work goes to the others). No task is lost either way."""
        if n < 0:
            raise ValueError(f"n must be at least 0, got {n}")
        if self._on_demand:
            raise ValueError("an on-demand pool starts its workers itself: its cap is fixed at creation")
        self._check_open()
        live = self._core.live_worker_ids()
        if n > len(live):
            futures = [self.submit_spawn(*spawn_args, **spawn_kwargs) for _ in range(n - len(live))]
            for future in futures:
                future.result()
        for worker_id in sorted(live, reverse=True)[: max(0, len(live) - n)]:
            self._core.retire_worker(worker_id)

    def rolling_restart(self, *spawn_args: Any, **spawn_kwargs: Any) -> list[Any]:
        """Replaces every live worker, one at a time, by one spawned with these arguments (e.g.
        a new model version; the same ones to just renew the workers): each replacement is
        spawned, placed as the worker it replaces (or as this view's :meth:`placement` says),
        and ready before that worker is retired after its current task, and that one is gone
        before the next is replaced. So capacity never drops and no task fails. Returns what
        each replacement's ``spawn`` returned. If one raises, it is re-raised here and the
        workers not yet replaced keep serving."""
        self._check_open()
        results: list[Any] = []
        for old in sorted(self._core.live_worker_ids()):
            init = self._init_payload(spawn_args, spawn_kwargs)
            results.append(decode(*self._core.spawn(init, self._engine_placement(), old)))
            if self._core.retire_worker(old):
                while old in self._core.live_worker_ids():
                    time.sleep(0.005)  # it finishes the task it runs, then leaves
        return results

    def stats(self) -> PoolStats:
        """The pool's statistics: each worker's state and counters, the queue, the balancer,
        sticky routing and batched calls (every key is documented in :class:`~stateful_pool.PoolStats`)."""
        self._check_forked()
        workers = self._core.workers()
        sticky_hits, sticky_misses = self._core.sticky
        return {
            "workers": workers,
            "queued": self._core.queued,
            "live_workers": sum(1 for w in workers if w["state"] in ("starting", "idle", "busy")),
            "dispatched": self._core.dispatched,
            "load_balancing": self._core.load_balancing,
            "sticky_hits": sticky_hits,
            "sticky_misses": sticky_misses,
            "coalesced": self._core.coalesced(),
        }

    def metrics(self) -> str:
        """The pool's metrics in Prometheus text format: tasks by outcome, queue depth, busy and
        live workers, restarts, health failures, batches, and a histogram of how long tasks ran
        (needs ``prometheus_client``: ``pip install 'stateful-pool[metrics]'``). To serve them::

            prometheus_client.REGISTRY.register(pool.metrics_collector())
            prometheus_client.start_http_server(9100)
        """
        from ._metrics import exposition

        return exposition(self._metrics_snapshot, self._cls.__name__)

    def metrics_collector(self) -> Any:
        """A ``prometheus_client`` collector of :meth:`metrics`, read at every scrape."""
        from ._metrics import collector

        return collector(self._metrics_snapshot, self._cls.__name__)

    def _metrics_snapshot(self) -> tuple[PoolStats, tuple[list[float], list[int], float]]:
        return self.stats(), self._core.run_times()

    @property
    def num_workers(self) -> int:
        """Workers starting or serving."""
        self._check_forked()
        return len(self._core.live_worker_ids())

    @property
    def _closed(self) -> bool:
        return self._core.is_shutdown

    def _check_forked(self) -> None:
        if self._generation != _lifecycle.GENERATION:
            raise _lifecycle.forked_error()

    def _check_open(self) -> None:
        if self._generation != _lifecycle.GENERATION:
            raise _lifecycle.forked_error()
        if self._closed:
            raise PoolShutDownError("cannot schedule new futures after shutdown")

    def shutdown(
        self, wait: bool = True, *, cancel_pending: bool = False, kill: bool = False, timeout: float | None = None
    ) -> None:
        """Stops the pool. By default running and queued tasks finish first;
        ``cancel_pending=True`` cancels queued tasks; ``kill=True`` kills the workers now (running
        tasks fail with :class:`PoolShutDownError`). With ``wait=True``, no worker process is
        left when this returns; ``timeout`` bounds a graceful wait, after which the workers are
        killed. Ctrl-C while waiting escalates to a kill too.

        In a child made by ``os.fork()``, a pool inherited from the parent is the parent's to
        stop: this returns at once and touches nothing."""
        if self._generation != _lifecycle.GENERATION:
            return
        if cancel_pending and not kill:
            self._let_idle_workers_start()
        self._core.shutdown("kill" if kill else "cancel" if cancel_pending else "graceful")
        if not wait:
            # Nobody waits: the completion thread finishes the futures, then stops the workers'
            # threads and ends (a later shutdown(wait=True) still waits for all of it).
            self._completer.finish_in_background()
            return
        try:
            if timeout is not None and not self._core.wait_stopped(max(0.0, timeout)):
                self._core.shutdown("kill")
            while not self._core.wait_stopped(3600.0):
                pass
        except BaseException:
            self._core.shutdown("kill")
            self._core.wait_stopped(30.0)
            raise
        finally:
            _live_pools.discard(self)
        self._completer.close(timeout=5.0)
        self._core.release()
        self._abandon.detach()  # stopped and released: nothing is left for the finalizer

    def _let_idle_workers_start(self, limit: float = 1.0) -> None:
        """Gives the supervisor a moment to hand queued tasks to idle workers, so that
        ``cancel_pending`` cancels what is waiting for a worker, not what a free worker was
        about to start (``concurrent.futures``: pending calls are those no worker took)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not self._core.is_shutdown:
            if not self._core.queued or not any(w["state"] == "idle" for w in self._core.workers()):
                return
            time.sleep(0.001)

    def __enter__(self) -> SPool[W]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.shutdown(wait=True, kill=exc_type is not None and not issubclass(exc_type, Exception))

    def __repr__(self) -> str:
        if self._generation != _lifecycle.GENERATION:
            return f"<SPool of {self._cls.__name__}: inherited through fork(), unusable here>"
        state = "shut down" if self._closed else f"{self.num_workers} workers"
        return f"<SPool of {self._cls.__name__}: {state}>"
