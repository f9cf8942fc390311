"""``WorkerPool``: what ``Worker.options(...).init(...)`` returns. Method calls on it are
dispatched to the workers of an :class:`~stateful_pool.SPool` (or, ``on_demand``, to a fresh
worker per call) and return futures at once.

::

    pool.process(x) ─▶ when_resolved (argument futures) ─▶ SPool.submit_call ─▶ PoolFuture
                                                             │
                     fixed:     max_workers long-lived workers, core load balancing
                     on demand: SPool(on_demand=max_workers): the core starts a fresh worker
                                per call (≤ max_workers at once) and retires it after the call
"""

from __future__ import annotations

import collections
import inspect
import os
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Any

from .. import _lifecycle
from .._stats import PoolWorkerStats, WorkerPoolStats
from ..errors import PoolShutDownError
from ..pool import SPool
from .constants import LoadBalancingAlgorithm
from .futures import when_resolved
from .limits import LimitSet
from .retry import PerMethodRetry, RetryConfig
from .synch import SyncFuture
from .worker import Worker, WorkerHost, host_class, public_methods

__all__ = ["WorkerPool"]

_BALANCERS = {
    "round_robin": "RoundRobin",
    "rr": "RoundRobin",
    "active": "LeastActiveLoad",
    "least_active": "LeastActiveLoad",
    "total": "LeastTotalLoad",
    "least_total": "LeastTotalLoad",
    "random": "Random",
    "rand": "Random",
}
_CANONICAL = {"RoundRobin": "round_robin", "LeastActiveLoad": "active", "LeastTotalLoad": "total", "Random": "random"}
_SPOOL_PARAMS = frozenset(inspect.signature(SPool.__init__).parameters)
_LATENCY_SAMPLES = 10_000


def _spool_options(mode: str, load_balancing: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The SPool arguments this core accepts: ``mode`` and ``load_balancing`` pass through
    where SPool has them (without a ``mode`` parameter, workers are processes)."""
    options = dict(extra)
    if "mode" in _SPOOL_PARAMS:
        options["mode"] = mode
    if "load_balancing" in _SPOOL_PARAMS:
        options["load_balancing"] = load_balancing
    if mode == "process" and "worker_output" in _SPOOL_PARAMS:
        # concurry's workers (and the executors built on them, stand-ins for
        # ProcessPoolExecutor) write their output as it is.
        options.setdefault("worker_output", "plain")
    if mode == "process" and options.get("start_method", "zygote") != "spawn" and "preload" in _SPOOL_PARAMS:
        # Every worker runs this package's host: imported once in the zygote, not in each
        # worker (about 0.3 s each, which an on-demand pool would pay on every call).
        options["preload"] = [__package__, *options.get("preload", ())]
    unknown = set(options) - _SPOOL_PARAMS
    if unknown:
        raise TypeError(f"unknown pool options: {sorted(unknown)}")
    return options


class _Backend:
    """The SPool behind a :class:`WorkerPool`: ``n`` long-lived workers, or, ``on_demand``, a
    core on-demand pool of at most ``n`` workers at once (a fresh one per call, spawned with
    the pool's constructor arguments and retired after the call; none while idle)."""

    def __init__(
        self,
        host: type[WorkerHost],
        n: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_demand: bool,
        **options: Any,
    ):
        self.on_demand = on_demand
        self.spool: SPool[Any] = SPool(host, on_demand=n if on_demand else None, **options)
        self._spawn = (args, kwargs)
        try:
            if on_demand:
                self.spool.spawn(*args, **kwargs)  # records them: no worker starts yet
            for f in [self.spool.submit_spawn(*args, **kwargs) for _ in range(0 if on_demand else n)]:
                f.result()
        except BaseException:
            self.spool.shutdown(wait=True, kill=True)
            raise

    def submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        return self.spool.submit_call(method, *args, **kwargs)

    def resize(self, n: int) -> None:
        if self.on_demand:
            raise ValueError("an on-demand pool's max_workers is fixed when it is created")
        args, kwargs = self._spawn
        self.spool.resize(n, *args, **kwargs)

    def workers(self) -> list[PoolWorkerStats]:
        stats = self.spool.stats()
        out: list[PoolWorkerStats] = []
        for w in stats["workers"]:
            if w["state"] not in ("starting", "idle", "busy"):
                continue
            total = w.get("dispatched", w.get("tasks_done", 0) + w.get("tasks_failed", 0))
            out.append(
                {
                    "id": w["id"],
                    "pid": w["pid"],
                    "state": w["state"],
                    "active_calls": 1 if w["state"] == "busy" else 0,
                    "total_calls": total,
                    "tasks_failed": w.get("tasks_failed", 0),
                    "restarts": w.get("restarts", 0),
                }
            )
        return out

    def queued(self) -> int:
        return int(self.spool.stats()["queued"])

    def abandon(self) -> None:
        """Nothing to do: the SPool, collected with this backend, winds itself down."""

    def stop(self, timeout: float | None) -> None:
        if timeout is None:
            self.spool.shutdown(wait=True, cancel_pending=True)
            return
        graceful = threading.Thread(
            target=self.spool.shutdown, kwargs={"cancel_pending": True}, name="concurry-stop", daemon=True
        )
        graceful.start()
        graceful.join(timeout)
        if graceful.is_alive():
            self.spool.shutdown(wait=True, kill=True)
            graceful.join()


class _Method:
    """``pool.<method>``: calling it dispatches the call."""

    def __init__(self, pool: WorkerPool, name: str):
        self._pool = pool
        self._name = name
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        future = self._pool._submit(self._name, args, kwargs)
        return future.result() if self._pool._blocking else future

    def __repr__(self) -> str:
        return f"<pool method {self._name} of {self._pool!r}>"


class _Missing:
    """``pool.<not a method>`` outside sync mode: calling it returns a future failed with
    :class:`AttributeError` (concurry's behaviour: the worker is what refuses the call)."""

    def __init__(self, message: str):
        self._message = message

    def __call__(self, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_exception(AttributeError(self._message))
        return future


class WorkerPool:
    """Workers of one :class:`Worker` class behind a single interface: ``pool.method(*a)``
    runs ``method`` on a worker chosen by the load balancer and returns a future (the value
    with ``blocking=True``). Futures among the arguments are resolved first, without blocking.
    Use it as a context manager, or call :meth:`stop`."""

    def __init__(
        self,
        worker_cls: type[Worker],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        mode: str = "process",
        max_workers: int | None = None,
        load_balancing: str | None = None,
        max_queued_tasks: int | None = None,
        on_demand: bool = False,
        limits: LimitSet | None = None,
        retry: RetryConfig | PerMethodRetry | None = None,
        blocking: bool = False,
        unwrap_futures: bool = True,
        actor_options: dict[str, Any] | None = None,
        mp_context: str | None = None,
        pool_options: dict[str, Any] | None = None,
    ):
        balancer = load_balancing or ("random" if on_demand else "round_robin")
        if balancer not in _BALANCERS:
            try:
                balancer = _CANONICAL[LoadBalancingAlgorithm.from_str(balancer).value]
            except ValueError:
                pass
        if balancer not in _BALANCERS:
            raise ValueError(f"load_balancing must be one of {sorted(_BALANCERS)}, got {balancer!r}")
        if max_workers is not None and max_workers < 0:
            raise ValueError(f"max_workers must be at least 0, got {max_workers}")
        if mode in ("sync", "asyncio") and max_workers not in (None, 1) and not on_demand:
            raise ValueError(
                f"max_workers must be 1 for {mode.capitalize()} mode: mode={mode!r} runs exactly one worker, "
                f"got max_workers={max_workers}"
            )
        self._worker_cls = worker_cls
        self.mode = mode
        self.on_demand = on_demand
        self.max_queued_tasks = max_queued_tasks
        self.actor_options = actor_options
        self.mp_context = mp_context
        self.limits = limits if limits is not None else LimitSet()
        self._algorithm = _BALANCERS[balancer]
        self._blocking = blocking
        self._unwrap_futures = unwrap_futures
        self._methods = frozenset(public_methods(worker_cls))
        self._dispatched = 0
        self._latencies: collections.deque[float] = collections.deque(maxlen=_LATENCY_SAMPLES)
        self._stopped = False
        host = host_class(worker_cls, self.limits, retry or RetryConfig(), mode)
        options = _spool_options(mode, _CANONICAL[self._algorithm], pool_options or {})
        if on_demand:
            self.max_workers = max_workers or max(1, (os.cpu_count() or 2) - 1)
        else:
            self.max_workers = 1 if max_workers in (None, 0) else int(max_workers or 1)
        self._backend = _Backend(host, self.max_workers, args, kwargs, on_demand, **options)
        self._generation = _lifecycle.GENERATION
        # Completers hold the backend, never this pool: a pool nobody references is collected,
        # finishes its queued calls and stops (like a dropped executor).
        weakref.finalize(self, self._backend.abandon).atexit = False

    def __setattr__(self, name: str, value: Any) -> None:
        # As concurry's proxies (frozen models): a started pool's configuration is read-only.
        if "_generation" in self.__dict__ and not name.startswith("_"):
            raise AttributeError(
                f"{type(self).__name__} is immutable: cannot set {name!r} (configure the pool with options())"
            )
        object.__setattr__(self, name, value)

    # -- calls ---------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # An exact str: a subclass could override startswith() or __eq__ to reach a private name.
        if type(name) is not str or name.startswith("_") or name not in self.__dict__.get("_methods", ()):
            owner = self.__dict__.get("_worker_cls", type(None)).__name__
            missing = f"{type(self).__name__} of {owner} has no method {name!r}"
            # concurry: in sync and ray modes at once (as an actor handle does); in the others
            # the call's future fails, as the worker would.
            private = type(name) is not str or name.startswith("_") or "_methods" not in self.__dict__
            if private or self.mode in ("sync", "ray"):
                raise AttributeError(missing)
            return _Missing(missing)
        method = _Method(self, name)
        self.__dict__[name] = method  # cached: __getattr__ is not asked again
        return method

    def _submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        if self._generation != _lifecycle.GENERATION:
            raise _lifecycle.forked_error()
        if self._stopped:
            raise PoolShutDownError(self._stopped_message())
        if not self._unwrap_futures:
            return self._dispatch(method, args, kwargs)
        return when_resolved(args, kwargs, lambda *a, **kw: self._dispatch(method, a, kw))

    def _stopped_message(self) -> str:
        kind = "Worker pool" if self.max_workers > 1 or self.on_demand else "Worker"
        return f"{kind} is stopped: cannot schedule new tasks"

    def _dispatch(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        if self._generation != _lifecycle.GENERATION:
            raise _lifecycle.forked_error()
        if self._stopped:
            raise PoolShutDownError(self._stopped_message())
        self._dispatched += 1
        start = time.perf_counter()
        future = self._backend.submit(method, args, kwargs)
        latencies = self._latencies
        future.add_done_callback(lambda _: latencies.append(time.perf_counter() - start))
        if self.mode == "sync" and future.done() and not future.cancelled():
            return SyncFuture.of(future)  # the call ran in submit: concurry's future class for it
        return future

    # -- management ----------------------------------------------------------------------

    def resize(self, n: int) -> None:
        """Grows or shrinks the pool to ``n`` workers without losing tasks: leaving workers
        finish their current task, queued tasks go to the others. An on-demand pool's cap is
        fixed (:class:`ValueError`)."""
        if n < 1:
            raise ValueError(f"a pool needs at least one worker, got {n}")
        if self._generation != _lifecycle.GENERATION:
            raise _lifecycle.forked_error()
        self._backend.resize(n)
        object.__setattr__(self, "max_workers", n)  # public attributes are read-only to users

    def get_pool_stats(self) -> WorkerPoolStats:
        """``total_workers``, ``max_workers``, ``on_demand``, ``stopped``, ``mode``,
        ``load_balancer`` (``algorithm``, ``total_dispatched``, per-worker ``active_calls`` and
        ``total_calls``, ``total_active``), ``workers``, ``queued``, ``max_queued_tasks`` and
        ``latency`` (seconds from dispatch to result: ``count``, ``mean``, ``p50``, ``p90``,
        ``p99``, ``max`` over the last 10,000 calls)."""
        if self._generation != _lifecycle.GENERATION:
            raise _lifecycle.forked_error()
        workers = [] if self._stopped else self._backend.workers()
        active = [w["active_calls"] for w in workers]
        samples = sorted(self._latencies)

        def pct(q: float) -> float | None:
            return samples[min(len(samples) - 1, int(q * len(samples)))] if samples else None

        return {
            "total_workers": len(workers),
            "max_workers": self.max_workers,
            "on_demand": self.on_demand,
            "on_demand_active": len(workers) if self.on_demand else 0,
            "stopped": self._stopped,
            "mode": self.mode,
            "load_balancer": {
                "algorithm": self._algorithm,
                "total_dispatched": self._dispatched,
                "active_calls": active,
                "total_active": sum(active),
                "total_calls": [w["total_calls"] for w in workers],
            },
            "workers": workers,
            "queued": 0 if self._stopped else self._backend.queued(),
            "max_queued_tasks": self.max_queued_tasks,
            "latency": {
                "count": len(samples),
                "mean": sum(samples) / len(samples) if samples else None,
                "p50": pct(0.50),
                "p90": pct(0.90),
                "p99": pct(0.99),
                "max": samples[-1] if samples else None,
            },
        }

    @property
    def worker_cls(self) -> type[Worker]:
        """The :class:`Worker` class the pool runs (read-only)."""
        return self._worker_cls

    @property
    def blocking(self) -> bool:
        """Whether calls return results (``blocking=True``) instead of futures."""
        return self._blocking

    @property
    def spool(self) -> SPool[Any]:
        """The underlying :class:`~stateful_pool.SPool` (on demand: a core on-demand pool)."""
        return self._backend.spool

    def stop(self, timeout: float | None = None) -> None:
        """Stops the pool as concurry does: queued calls are cancelled, running ones finish;
        with ``timeout``, the workers still busy after that many seconds are killed (their
        calls fail with :class:`PoolShutDownError`). Idempotent. In a child made by
        ``os.fork()``, an inherited pool is the parent's: this only marks it stopped."""
        if self._stopped:
            return
        self._stopped = True
        if self._generation == _lifecycle.GENERATION:
            self._backend.stop(timeout)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"max_workers={self.max_workers}"
        kind = "on-demand " if self.on_demand else ""
        return f"<{kind}{type(self).__name__} of {self.worker_cls.__name__}: {state}>"
