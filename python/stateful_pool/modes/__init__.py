"""Execution modes: where an ``SPool``'s workers run. Every mode is an *engine* with the
interface of ``_core.CorePool``, so ``SPool``'s futures, completer, ``map`` and decoding are
shared by all of them.

========== ================================================ =========================================
mode       engine                                           a worker is
========== ================================================ =========================================
process    ``_core.CorePool`` (Rust supervisor)             a fresh interpreter (default)
thread     ``_core.CoreThreadPool`` (same Rust supervisor)  a daemon thread in this process
asyncio    ``_core.CoreThreadPool``                         an event loop thread; ``max_concurrency``
                                                            calls in flight on it
ray        ``_core.CoreThreadPool``                         a Ray actor (``actor_options``)
sync       :class:`SyncCore` (Python)                       an object called inline, in the caller
========== ================================================ =========================================
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

from .. import _core
from .._futures import Completer
from . import _host

__all__ = ["DEFAULT_MAX_CONCURRENCY", "MODES", "Engine", "make_engine", "make_completer"]

MODES = ("process", "thread", "asyncio", "ray", "sync")
DEFAULT_MAX_CONCURRENCY = 32


class Engine(Protocol):
    """What ``SPool`` needs from an engine (``_core.CorePool``'s interface)."""

    def spawn(self, init: Any) -> tuple[int, Any]: ...
    def submit_spawn(self, init: Any, token: int) -> None: ...
    def call(
        self, payload: Any, timeout: float | None = None, submit_timeout: float | None = None
    ) -> tuple[int, Any]: ...
    def submit(
        self, payload: Any, token: int, timeout: float | None = None, submit_timeout: float | None = None
    ) -> Any: ...
    def broadcast(self, payload: Any) -> list[tuple[int, int, Any]]: ...
    def take_completions(self, timeout: float, max_items: int = 4096) -> list[tuple[int, int, Any]]: ...
    def shutdown(self, mode: str) -> None: ...
    def wait_stopped(self, timeout: float) -> bool: ...
    @property
    def is_shutdown(self) -> bool: ...
    @property
    def queued(self) -> int: ...
    def release(self) -> bool: ...
    def retire_worker(self, worker_id: int) -> bool: ...
    @property
    def dispatched(self) -> int: ...
    @property
    def load_balancing(self) -> str: ...
    def live_worker_ids(self) -> list[int]: ...
    def workers(self) -> list[dict[str, Any]]: ...


def make_engine(
    mode: str,
    worker_cls: type,
    *,
    actor_options: dict[str, Any] | None = None,
    max_concurrency: int | None = None,
    max_memory_per_worker: int | None = None,
    **options: Any,
) -> Engine:
    """The engine of a non-process ``SPool``; ``options`` are ``CorePool``'s pool options."""
    if mode not in MODES or mode == "process":
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if max_memory_per_worker is not None:
        raise ValueError(f"max_memory_per_worker needs mode='process' (a {mode} worker has no memory of its own)")
    if actor_options is not None and mode != "ray":
        raise ValueError("actor_options needs mode='ray'")
    if max_concurrency is not None and mode != "asyncio":
        raise ValueError("max_concurrency needs mode='asyncio'")
    if mode == "sync":
        from ._sync import SyncCore

        return SyncCore(worker_cls, **options)
    if mode == "asyncio":
        concurrency = DEFAULT_MAX_CONCURRENCY if max_concurrency is None else max_concurrency
        if concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {concurrency}")
        if options.get("max_tasks_per_worker") is not None and concurrency > 1:
            # Lanes share one instance; recycling one lane cannot renew the instance.
            raise ValueError("max_tasks_per_worker needs max_concurrency=1 in asyncio mode")
        launch = functools.partial(_host.launch_asyncio, worker_cls)
        return _core.CoreThreadPool(launch, "asyncio", concurrency=concurrency, **options)
    if mode == "ray":
        from . import _ray

        return _core.CoreThreadPool(_ray.launcher(actor_options), "ray", **options)
    return _core.CoreThreadPool(functools.partial(_host.launch_thread, worker_cls), "thread", **options)


def make_completer(engine: Any) -> Completer:
    """The completer for ``engine``: a sync engine completes futures inline, without a thread."""
    from ._sync import InlineCompleter, SyncCore

    cls = InlineCompleter if isinstance(engine, SyncCore) else Completer
    return cls(engine)
