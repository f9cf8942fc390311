"""``Worker``: the concurry face of a stateful worker. ``__init__`` is the per-worker setup and
every public method can be called through a pool::

    pool = DataProcessor.options(mode="process", max_workers=4).init(multiplier=10)
    pool.process(42).result()

A ``Worker`` runs on :class:`~stateful_pool.SPool`: :meth:`Worker.as_sworker` generates an
:class:`~stateful_pool.SWorker` subclass whose ``spawn()`` constructs the worker with the init
arguments and whose methods run the worker's methods (with the pool's retries and limits).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from ..worker import SWorker, check_method_name
from .limits import Limit, LimitSet
from .retry import RetryConfig, call_with_retries

if TYPE_CHECKING:
    from .pool import WorkerPool

__all__ = ["Worker", "WorkerHost", "WorkerOptions"]

# Names a Worker method cannot take through a pool: the host's own.
_RESERVED = frozenset({"spawn", "options", "as_sworker", "init"})


class Worker:
    """Subclass it: ``__init__`` sets the worker up (once per worker), public methods do the
    work. ``self.limits`` is the pool's :class:`LimitSet` (empty without limits)."""

    # ClassVar: a pydantic BaseModel worker must not take it for a field.
    limits: ClassVar[LimitSet] = LimitSet()
    _pool_class: ClassVar[str] = "WorkerPool"

    @classmethod
    def options(
        cls,
        *,
        mode: str = "process",
        max_workers: int | None = None,
        load_balancing: str | None = None,
        max_queued_tasks: int | None = None,
        on_demand: bool = False,
        limits: LimitSet | Iterable[Limit] | None = None,
        num_retries: int = 0,
        retry_algorithm: str = "exponential",
        retry_wait: float = 1.0,
        retry_jitter: float = 0.3,
        retry_on: Any = (Exception,),
        retry_until: Callable[..., bool] | Iterable[Callable[..., bool]] | None = None,
        blocking: bool = False,
        actor_options: dict[str, Any] | None = None,
        **pool_options: Any,
    ) -> WorkerOptions:
        """How to run this worker; ``.init(*args, **kwargs)`` then starts the pool.

        Args:
            mode: ``"process"`` (default), or ``"thread"``/``"asyncio"``/``"sync"``/``"ray"``
                where the core supports them (otherwise the workers are processes).
            max_workers: workers in the pool (default 1; with ``on_demand``, the most running
                at once, 0 meaning ``cpu_count() - 1``).
            load_balancing: ``"round_robin"`` (default), ``"active"``, ``"total"`` or
                ``"random"`` (default for on-demand pools).
            max_queued_tasks: accepted for compatibility and reported in stats: submissions
                never block, tasks wait in the pool's queue.
            on_demand: a fresh worker for every call, destroyed after it.
            limits: a :class:`LimitSet`, or a list of limits (one budget shared by the pool).
            num_retries, retry_algorithm, retry_wait, retry_jitter, retry_on, retry_until: the
                retries run by the worker that received the call (see :mod:`.retry`).
            blocking: calls return results instead of futures.
            actor_options: Ray actor options, passed on where a Ray mode exists.
            pool_options: further :class:`~stateful_pool.SPool` options (``task_timeout``, ...).
        """
        retry = RetryConfig.build(num_retries, retry_on, retry_algorithm, retry_wait, retry_jitter, retry_until)
        return WorkerOptions(
            cls,
            mode=mode,
            max_workers=max_workers,
            load_balancing=load_balancing,
            max_queued_tasks=max_queued_tasks,
            on_demand=on_demand,
            limits=LimitSet.coerce(limits),
            retry=retry,
            blocking=blocking,
            actor_options=actor_options,
            pool_options=pool_options,
        )

    @classmethod
    def as_sworker(cls, limits: LimitSet | None = None, retry: RetryConfig | None = None) -> type[WorkerHost]:
        """An :class:`~stateful_pool.SWorker` subclass hosting this worker: ``spawn(*a, **kw)``
        constructs it, and each public method of the worker is a method of the host::

            with SPool(DataProcessor.as_sworker()) as pool:
                pool.spawn(multiplier=10)
                pool.call("process", 42)
        """
        return host_class(cls, limits or LimitSet(), retry or RetryConfig())


class WorkerHost(SWorker):
    """Hosts one :class:`Worker` in an SPool worker; subclasses are made by
    :func:`host_class`."""

    worker_cls: ClassVar[type[Worker]]
    worker_limits: ClassVar[LimitSet]
    retry: ClassVar[RetryConfig]
    instance: Worker

    def spawn(self, *args: Any, **kwargs: Any) -> int:
        """Constructs the worker (its ``__init__`` runs here, once); returns this pid."""
        cls = self.worker_cls
        instance = cls.__new__(cls)
        # object.__setattr__: validating models (pydantic) refuse attributes that are not fields,
        # and rebuild their __dict__ in __init__, so set it before and, if lost, again after.
        object.__setattr__(instance, "limits", self.worker_limits)
        instance.__init__(*args, **kwargs)  # type: ignore[misc]
        if instance.__dict__.get("limits") is not self.worker_limits:
            object.__setattr__(instance, "limits", self.worker_limits)
        self.instance = instance
        return os.getpid()

    def invoke(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Runs ``instance.<method>(*args, **kwargs)`` with the pool's retries. ``invoke`` is
        itself callable through the pool, so ``method`` is checked like any caller's name."""
        check_method_name(method)
        if method in _RESERVED:
            raise AttributeError(f"{self.worker_cls.__name__} has no method {method!r} callable through a pool")
        return call_with_retries(
            getattr(self.instance, method),
            args,
            kwargs,
            self.retry,
            method_name=method,
            worker_class=self.worker_cls.__name__,
            between_attempts=self.worker_limits.release_open,
        )


def public_methods(cls: type) -> list[str]:
    """The methods of ``cls`` a pool can call."""
    return [
        name
        for name in dir(cls)
        if not name.startswith("_") and name not in _RESERVED and callable(getattr(cls, name, None))
    ]


def _forwarder(name: str) -> Callable[..., Any]:
    def method(self: WorkerHost, /, *args: Any, **kwargs: Any) -> Any:  # a call may pass self=...
        return self.invoke(name, args, kwargs)

    method.__name__ = method.__qualname__ = name
    return method


def host_class(worker_cls: type[Worker], limits: LimitSet, retry: RetryConfig) -> type[WorkerHost]:
    """A :class:`WorkerHost` subclass for ``worker_cls`` with these limits and retries. It is
    sent to the workers by value (cloudpickle), the limits as a reference to shared memory."""
    namespace: dict[str, Any] = {
        "worker_cls": worker_cls,
        "worker_limits": limits,
        "retry": retry,
        "__doc__": f"Hosts a {worker_cls.__name__} in an SPool worker.",
    }
    for name in public_methods(worker_cls):
        if name not in ("invoke",):
            namespace[name] = _forwarder(name)
    return type(f"{worker_cls.__name__}Host", (WorkerHost,), namespace)


class WorkerOptions:
    """The options of a future pool; :meth:`init` starts it."""

    def __init__(self, worker_cls: type[Worker], **options: Any):
        self.worker_cls = worker_cls
        self.options = options

    def init(self, *args: Any, **kwargs: Any) -> WorkerPool:
        """Starts the pool; every worker runs ``worker_cls(*args, **kwargs)`` once."""
        from . import pool, task

        pool_class = {"WorkerPool": pool.WorkerPool, "TaskPool": task.TaskPool}[self.worker_cls._pool_class]
        return pool_class(self.worker_cls, args, kwargs, **self.options)

    def __repr__(self) -> str:
        return f"<WorkerOptions of {self.worker_cls.__name__}: {self.options}>"
