"""``Worker``: the concurry face of a stateful worker. ``__init__`` is the per-worker setup and
every public method can be called through a pool::

    pool = DataProcessor.options(mode="process", max_workers=4).init(multiplier=10)
    pool.process(42).result()

A ``Worker`` runs on :class:`~stateful_pool.SPool`: :meth:`Worker.as_sworker` generates an
:class:`~stateful_pool.SWorker` subclass whose ``spawn()`` constructs the worker with the init
arguments and whose methods run the worker's methods (with the pool's retries and limits).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from ..worker import SWorker, check_method_name
from .constants import ExecutionMode
from .limits import Limit, LimitSet
from .retry import PerMethodRetry, RetriedCall, RetryConfig, build_retry

if TYPE_CHECKING:
    from .pool import WorkerPool

__all__ = ["Worker", "WorkerHost", "WorkerOptions"]

# Names a Worker method cannot take through a pool: the host's own.
_RESERVED = frozenset({"spawn", "options", "configure", "as_sworker", "init"})
# Class keywords (``class X(Worker, mode="thread", ...)``) that configure the pool.
_CLASS_OPTIONS = frozenset(
    {"mode", "max_workers", "load_balancing", "max_queued_tasks", "on_demand", "limits", "blocking"}
    | {"unwrap_futures"}
    | {"num_retries", "retry_algorithm", "retry_wait", "retry_jitter", "retry_on", "retry_until", "actor_options"}
    | {"mp_context"}
)
_DEFAULT_QUEUED = {"process": 100, "ray": 3}
_MODES = {"Sync": "sync", "Asyncio": "asyncio", "Threads": "thread", "Processes": "process", "Ray": "ray"}
_MODES["Auto"] = "thread"


def _flag(value: Any) -> bool:
    """A boolean option, also from the strings concurry's validation accepts (``"true"``)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    return bool(value)


def mode_name(mode: Any) -> str:
    """``mode`` (an :class:`ExecutionMode` or any of its spellings) as this package's name."""
    return _MODES[ExecutionMode.from_str(mode).value]


class Worker:
    """Subclass it: ``__init__`` sets the worker up (once per worker), public methods do the
    work. ``self.limits`` is the pool's :class:`LimitSet` (empty without limits)."""

    # ClassVar: a pydantic BaseModel worker must not take it for a field.
    limits: ClassVar[LimitSet] = LimitSet()
    _pool_class: ClassVar[str] = "WorkerPool"
    _class_options: ClassVar[dict[str, Any]] = {}
    _auto_init: ClassVar[bool] = False
    _method_aliases: ClassVar[dict[str, str]] = {}
    # The method that runs a function it is given (``TaskWorker.run``): its first argument is
    # resolved by ``_function`` and the function itself is what is retried (and awaited).
    _function_method: ClassVar[str | None] = None

    def _function(self, handle: Any) -> Callable[..., Any]:
        raise NotImplementedError

    def __init_subclass__(cls, **options: Any) -> None:
        """``class X(Worker, mode="thread", max_workers=4, auto_init=True)``: the class keywords
        are defaults of :meth:`options`; with any of them (and ``auto_init`` not false),
        ``X(...)`` starts a pool instead of making a plain object."""
        auto_init = options.pop("auto_init", None)
        ours = {k: options.pop(k) for k in list(options) if k in _CLASS_OPTIONS}
        super().__init_subclass__(**options)
        if ours or auto_init is not None:
            cls._class_options = {**cls._class_options, **ours}
            cls._auto_init = bool(ours) if auto_init is None else bool(auto_init)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls._auto_init and not getattr(_constructing, "on", False):
            if "mode" not in cls._class_options:
                raise ValueError(
                    f"{cls.__name__}(...) starts a pool (auto_init): the mode parameter is required, "
                    f'e.g. @worker(mode="thread") or class {cls.__name__}(Worker, mode="thread")'
                )
            return cls.options().init(*args, **kwargs)
        return super().__new__(cls)

    @classmethod
    def options(cls, **options: Any) -> WorkerOptions:
        """:meth:`configure` with the class keywords as defaults (and concurry's default
        ``max_queued_tasks`` for the mode: 100 for processes, 3 for Ray, none otherwise)."""
        options = {**cls._class_options, **options}
        if "max_queued_tasks" not in options:
            options["max_queued_tasks"] = _DEFAULT_QUEUED.get(mode_name(options.get("mode", "process")))
        return cls.configure(**options)

    @classmethod
    def configure(
        cls,
        *,
        mode: Any = "process",
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
        unwrap_futures: bool = True,
        actor_options: dict[str, Any] | None = None,
        mp_context: str | None = None,
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
            unwrap_futures: futures among a call's arguments are replaced by their results
                (default); ``False`` passes them as they are.
            actor_options: Ray actor options, passed on where a Ray mode exists.
            mp_context: ``"spawn"``, ``"fork"`` or ``"forkserver"`` for ``mode="process"``:
                checked and reported (``pool.mp_context``); workers are always fresh interpreters.
            pool_options: further :class:`~stateful_pool.SPool` options (``task_timeout``, ...).
        """
        blocking, on_demand, unwrap_futures = _flag(blocking), _flag(on_demand), _flag(unwrap_futures)
        retry_options = {
            "num_retries": num_retries,
            "retry_on": retry_on,
            "retry_algorithm": retry_algorithm,
            "retry_wait": retry_wait,
            "retry_jitter": retry_jitter,
            "retry_until": retry_until,
        }
        aliases = cls._method_aliases
        retry = build_retry(
            **{
                k: {aliases.get(m, m): x for m, x in v.items()} if isinstance(v, dict) else v
                for k, v in retry_options.items()
            }
        )
        if isinstance(retry, PerMethodRetry):
            retry.check_methods(public_methods(cls), cls.__name__)
        mode = mode_name(mode)
        if mp_context is not None and (mode != "process" or mp_context not in ("spawn", "fork", "forkserver")):
            raise ValueError(
                f"mp_context must be 'spawn', 'fork' or 'forkserver', with mode='process'; got {mp_context!r} "
                f"with mode={mode!r}"
            )
        if on_demand and mode in ("sync", "asyncio"):
            raise ValueError(
                f"on_demand mode is not supported for {mode.capitalize()} mode: it needs a mode that can start "
                "workers (thread, process, ray)"
            )
        limits = coerce_limits(limits)
        _check_limit_set_mode(limits, mode)
        return WorkerOptions(
            cls,
            mode=mode,
            max_workers=max_workers,
            load_balancing=load_balancing,
            max_queued_tasks=max_queued_tasks,
            on_demand=on_demand,
            limits=limits,
            retry=retry,
            blocking=blocking,
            unwrap_futures=unwrap_futures,
            actor_options=actor_options,
            mp_context=mp_context,
            pool_options=pool_options,
        )

    @classmethod
    def as_sworker(
        cls, limits: LimitSet | None = None, retry: RetryConfig | PerMethodRetry | None = None
    ) -> type[WorkerHost]:
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
    retry: ClassVar[RetryConfig | PerMethodRetry]
    worker_mode: ClassVar[str] = "process"
    instance: Worker

    def spawn(self, *args: Any, **kwargs: Any) -> int:
        """Constructs the worker (its ``__init__`` runs here, once); returns this pid."""
        cls = self.worker_cls
        _constructing.on = True  # an auto_init class makes an object here, not a pool
        try:
            instance = cls.__new__(cls)
            # object.__setattr__: validating models (pydantic) refuse attributes that are not
            # fields, and rebuild their __dict__ in __init__: set it before and, if lost, after.
            object.__setattr__(instance, "limits", self.worker_limits)
            instance.__init__(*args, **kwargs)
        finally:
            _constructing.on = False
        if instance.__dict__.get("limits") is not self.worker_limits:
            object.__setattr__(instance, "limits", self.worker_limits)
        self.instance = instance
        self.retried = self._wrap_retried_methods(instance)
        return os.getpid()

    def _context(self, method: str) -> dict[str, Any]:
        return {
            "method_name": method,
            "worker_class": self.worker_cls.__name__,
            "between_attempts": self.worker_limits.release_open,
        }

    def _wrap_retried_methods(self, instance: Worker) -> frozenset[str]:
        """Puts each method that has retries behind them on the instance itself, so a call
        from another method (``self.fetch(...)``) is retried too, as in concurry. Returns the
        methods wrapped (a model that refuses instance attributes keeps retries at dispatch)."""
        wrapped = set()
        for name in public_methods(self.worker_cls):
            config = self.retry.for_method(name)
            if name == self.worker_cls._function_method or not (config.num_retries or config.retry_until):
                continue
            original = getattr(instance, name)
            context = self._context(name)
            if inspect.iscoroutinefunction(original):

                async def retried_async(
                    *a: Any, _f: Any = original, _c: Any = config, _x: Any = context, **kw: Any
                ) -> Any:
                    return await RetriedCall(_f, a, kw, _c, **_x).run_async()

                wrapper: Callable[..., Any] = retried_async
            else:

                def retried(*a: Any, _f: Any = original, _c: Any = config, _x: Any = context, **kw: Any) -> Any:
                    return RetriedCall(_f, a, kw, _c, **_x).run()

                wrapper = retried
            try:
                object.__setattr__(instance, name, wrapper)
            except (AttributeError, TypeError):
                continue
            wrapped.add(name)
        return frozenset(wrapped)

    def invoke(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Runs ``instance.<method>(*args, **kwargs)`` with the method's retries. An ``async
        def`` method is awaited on the worker: on its event loop in asyncio mode (the host
        awaits the coroutine returned here), to completion here in the other modes. ``invoke`` is
        itself callable through the pool, so ``method`` is checked like any caller's name."""
        check_method_name(method)
        if method in _RESERVED:
            raise AttributeError(f"{self.worker_cls.__name__} has no method {method!r} callable through a pool")
        runs_function = method == self.worker_cls._function_method
        try:
            fn = getattr(self.instance, method)
        except AttributeError:
            raise AttributeError(f"{self.worker_cls.__name__} has no method {method!r}") from None
        if runs_function:  # the function given is what runs, is retried and is awaited
            fn, args = self.instance._function(args[0] if args else None), args[1:]
        # A method wrapped on the instance retries by itself.
        config = RetryConfig() if method in getattr(self, "retried", ()) else self.retry.for_method(method)
        call = RetriedCall(fn, args, kwargs, config, **self._context(method))
        if inspect.iscoroutinefunction(fn):
            return call.run_async() if self.worker_mode == "asyncio" else run_to_completion(call.run_async())
        if runs_function and self.worker_mode == "asyncio":
            return self._run_off_loop(call)
        result = call.run()
        if inspect.isawaitable(result) and self.worker_mode != "asyncio":
            return run_to_completion(result)
        return result

    @staticmethod
    async def _run_off_loop(call: RetriedCall) -> Any:
        """Runs a plain function (with its retries) in a thread of the event loop's default
        executor, so blocking functions overlap as in a thread pool while coroutines share the
        loop (the asyncio host gives every call a thread and joins them when it ends)."""
        result = await asyncio.get_running_loop().run_in_executor(None, call.run)
        return await result if inspect.isawaitable(result) else result


_constructing = threading.local()


_IN_PROCESS_MODES = {"sync": "Sync", "thread": "Threads", "asyncio": "Asyncio"}
_CROSS_PROCESS_MODES = {"process": "Processes", "ray": "Ray"}


def _check_limit_set_mode(limits: Any, mode: str) -> None:
    """Refuses, as concurry does, a shared limit set made for in-process workers
    (``LimitSet(..., mode="thread")``) given to workers in other processes: asked for that way,
    it was meant for one process, and the error says how to share it instead."""
    from .limit_pool import LimitPool

    sets = limits.limit_sets if isinstance(limits, LimitPool) else [limits]
    for limit_set in sets:
        made_for = None if limit_set.mode is None else mode_name(limit_set.mode)
        if limit_set.shared and made_for in _IN_PROCESS_MODES and mode in _CROSS_PROCESS_MODES:
            raise ValueError(
                f"InMemorySharedLimitSet is not compatible with worker mode '{_CROSS_PROCESS_MODES[mode]}': "
                f"this LimitSet was made with mode={made_for!r}; make it with mode={mode!r} (or without "
                "mode=) to share it between worker processes"
            )


def coerce_limits(limits: Any) -> Any:
    """``options(limits=...)`` as what workers use: a :class:`LimitSet` (from a set or a list
    of limits), or a :class:`LimitPool` (from a list of limit sets)."""
    from .limit_pool import LimitPool

    if isinstance(limits, LimitPool):
        return limits
    if isinstance(limits, list | tuple) and limits and all(isinstance(x, LimitSet) for x in limits):
        return LimitPool(limits)
    return LimitSet.coerce(limits)


def run_to_completion(awaitable: Any) -> Any:
    """Runs a coroutine to its end from blocking code: on a fresh event loop here, or on a
    helper thread when this thread already runs a loop (a sync-mode pool called from async
    code)."""

    async def main() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc

    helper = threading.Thread(target=runner, name="concurry-async-method", daemon=True)
    helper.start()
    helper.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


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


def host_class(
    worker_cls: type[Worker], limits: LimitSet, retry: RetryConfig | PerMethodRetry, mode: str = "process"
) -> type[WorkerHost]:
    """A :class:`WorkerHost` subclass for ``worker_cls`` with these limits and retries. It is
    sent to the workers by value (cloudpickle), the limits as a reference to shared memory."""
    namespace: dict[str, Any] = {
        "worker_cls": worker_cls,
        "worker_limits": limits,
        "retry": retry,
        "worker_mode": mode,
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
        from .pool import WorkerPool
        from .task import TaskPool  # not ``from . import task``: the package's ``task`` is @task

        pool_class = {"WorkerPool": WorkerPool, "TaskPool": TaskPool}[self.worker_cls._pool_class]
        return pool_class(self.worker_cls, args, kwargs, **self.options)

    def __repr__(self) -> str:
        return f"<WorkerOptions of {self.worker_cls.__name__}: {self.options}>"
