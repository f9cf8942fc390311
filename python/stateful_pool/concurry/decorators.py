"""concurry 0.13's ``@worker`` and ``@task`` decorators and its ``Executor(...)`` factory.

::

    @worker(mode="thread", max_workers=4)      # LLM(...) now starts a pool
    class LLM:
        def __init__(self, model): ...

    @task(mode="process", max_workers=4)       # square(3).result(), square.map(xs)
    def square(x): return x * x
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

from .task import TaskPool, TaskWorker
from .worker import Worker

__all__ = ["Executor", "task", "worker"]


def worker(cls: type | None = None, /, **options: Any) -> Any:
    """Makes ``cls`` a :class:`Worker` (if it is not one) whose :meth:`Worker.options` default
    to ``options``. With options (and ``auto_init`` not false), ``cls(...)`` starts a pool.
    Used bare (``@worker``) it only makes the class a worker."""

    def decorate(target: type) -> type:
        auto_init = options.get("auto_init")
        ours = {k: v for k, v in options.items() if k != "auto_init"}
        if ours and issubclass(target, Worker) and target._class_options:
            warnings.warn(
                f"{target.__name__} is configured both by the @worker(...) decorator and by class keywords "
                "(inheritance); this is an anti-pattern: the decorator's options win",
                UserWarning,
                stacklevel=3,
            )
        if issubclass(target, Worker):
            made = target
        else:
            made = type(target.__name__, (target, Worker), {"__module__": target.__module__, "__doc__": target.__doc__})
            made.__qualname__ = target.__qualname__
        if ours or auto_init is not None:
            made._class_options = {**made._class_options, **ours}
            made._auto_init = bool(ours) if auto_init is None else bool(auto_init)
        return made

    return decorate if cls is None else decorate(cls)


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Turns a function into a pool of :class:`TaskWorker` bound to it: ``f(*args)`` and
    ``f.submit(*args)`` return futures (values with ``blocking=True``), ``f.map(xs)`` yields
    results; ``f.stop()`` ends the pool. With ``limits=``, a function that has a ``limits``
    parameter receives the pool's :class:`LimitSet` there (unless the call passes one)."""

    def decorate(function: Callable[..., Any]) -> TaskPool:
        configured = TaskWorker.options(**options)
        bound = function
        limits = configured.options.get("limits")
        if options.get("limits") is not None and "limits" in _parameters(function):
            # The set made by options(): its budget is the pool's (shared memory in every mode).
            bound = functools.partial(_with_limits, function, limits)
        pool = configured.init(fn=bound)
        assert isinstance(pool, TaskPool)
        functools.update_wrapper(pool, function, updated=())
        return pool

    return decorate if fn is None else decorate(fn)


def _parameters(function: Callable[..., Any]) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return frozenset()


def _with_limits(function: Callable[..., Any], limits: Any, /, *args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("limits", limits)
    return function(*args, **kwargs)


def Executor(
    mode: Any = "thread",
    max_workers: int | None = None,
    load_balancing: Any = None,
    on_demand: bool = False,
    limits: Any = None,
    **options: Any,
) -> TaskPool:
    """A :class:`TaskPool` (a :class:`concurrent.futures.Executor`):
    ``TaskWorker.options(mode=..., ...).init()``."""
    pool = TaskWorker.options(
        mode=mode, max_workers=max_workers, load_balancing=load_balancing, on_demand=on_demand, limits=limits, **options
    ).init()
    assert isinstance(pool, TaskPool)
    return pool
