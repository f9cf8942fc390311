"""Makes ``import concurry`` (and its submodules: ``concurry.core.worker``,
``concurry.core.constants``, ...) load :mod:`stateful_pool.concurry`, so concurry 0.13's own
test suite runs against this package unchanged.

Every ``concurry.<anything>`` module is a view of the flat :mod:`stateful_pool.concurry`
namespace: a name the package does not export is an ``ImportError`` (such tests are either
failures or listed in :mod:`exclusions`).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from typing import Any

import stateful_pool.concurry as target

RAY = os.environ.get("CONCURRY_SUITE_RAY") == "1"

# concurry internals some test modules import at module level. They are stand-ins so the module
# imports; the tests that use them are listed in exclusions.py.
INTERNALS = frozenset(
    {
        "AsyncioFuture",
        "CancelledError",
        "RayFuture",
        "BaseLimitSet",
        "LoadBalancer",
        "Poller",
        "RateLimiter",
        "global_config",
        "temp_config",
        "RayContext",
        "ray_context",
        "calculate_retry_wait",
        "execute_with_retry",
        "_get_user_defined_methods",
        "_normalize_retry_param",
        "Timer",
        "TimerError",
        "_pad_zeros",
        "_readable_datetime",
        "_readable_seconds",
    }
)


class _ModeProxyMeta(type):
    """concurry's per-mode proxy classes: ``isinstance(pool, ThreadWorkerProxy)`` checks the
    pool's mode."""

    mode: str

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, target.WorkerPool) and obj.mode == cls.mode


def _mode_proxy(name: str, mode: str) -> type:
    return _ModeProxyMeta(name, (), {"mode": mode})


# concurry's LimitSet(...) returns one of these implementation classes; here LimitSet is the
# implementation for every mode, so constructing them makes a LimitSet (tests that check which
# class LimitSet() returns are excluded).
LIMIT_SETS = {"InMemorySharedLimitSet", "MultiprocessSharedLimitSet", "NoOpLimitSet"}

PROXIES = {
    "SyncWorkerProxy": _mode_proxy("SyncWorkerProxy", "sync"),
    "ThreadWorkerProxy": _mode_proxy("ThreadWorkerProxy", "thread"),
    "ProcessWorkerProxy": _mode_proxy("ProcessWorkerProxy", "process"),
    "AsyncioWorkerProxy": _mode_proxy("AsyncioWorkerProxy", "asyncio"),
    "RayWorkerProxy": _mode_proxy("RayWorkerProxy", "ray"),
}


class _Internal:
    """Stands in for a concurry internal this package does not provide: any use raises."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} is a concurry internal (excluded test)")

    def __class_getitem__(cls, item: Any) -> Any:
        return cls


def _internal(name: str) -> type:
    return type(name, (_Internal,), {})


class _View(types.ModuleType):
    """``concurry.x.y``: attribute look-ups go to :mod:`stateful_pool.concurry`."""

    def __getattr__(self, name: str) -> Any:
        if name == "_IS_RAY_INSTALLED":
            return RAY
        if name.startswith("__"):
            raise AttributeError(name)
        if name in PROXIES:
            return PROXIES[name]
        if name in LIMIT_SETS:
            return target.LimitSet
        if name in INTERNALS:
            return _internal(name)
        try:
            return getattr(target, name)
        except AttributeError:
            raise AttributeError(
                f"stateful_pool.concurry has no {name!r} (imported as {self.__name__}.{name})"
            ) from None


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target_: Any = None) -> importlib.machinery.ModuleSpec | None:
        # Module names are lowercase; ``from concurry import SomeName`` of a missing class
        # must stay an ImportError, not become an empty module.
        if fullname == "concurry" or (fullname.startswith("concurry.") and fullname.split(".")[-1].islower()):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _View(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install() -> None:
    """Installs the alias (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
