"""Execution modes: where an ``SPool``'s workers run. Every mode runs on the same engine,
``_core.Engine`` (the Rust supervisor), so queueing, balancing, timeouts, restarts, stats,
errors, futures, ``map`` and decoding are the same in all of them; a mode only says what one
worker is.

========== ============================================================================
mode       a worker is
========== ============================================================================
process    a fresh interpreter (default)
thread     a daemon thread in this process
asyncio    an event loop thread; ``max_concurrency`` calls in flight on it
ray        a Ray actor (``actor_options``), driven from a thread in this process
sync       an instance in this process with no thread of its own: the threads that call
           the pool run its setup and calls while they wait; futures come back done
========== ============================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import _core
from .._futures import Completer
from . import _host

__all__ = ["MODES", "launcher", "make_completer"]

MODES = ("process", "thread", "asyncio", "ray", "sync")


def launcher(mode: str, actor_options: dict[str, Any] | None = None) -> Callable[[Any, Any], None] | None:
    """How the engine starts one in-process worker (``launcher(channel, init)``); ``None`` for
    process workers (and for an unknown mode, which the engine rejects)."""
    if actor_options is not None and mode != "ray":
        raise ValueError("actor_options needs mode='ray'")
    if mode == "ray":
        from . import _ray

        return _ray.launcher(actor_options)
    if mode == "sync":
        from ._sync import launch_sync

        return launch_sync
    hosts: dict[str, Callable[[Any, Any], None]] = {"thread": _host.launch_thread, "asyncio": _host.launch_asyncio}
    return hosts.get(mode)


def make_completer(engine: _core.Engine) -> Completer:
    """The completer for ``engine``: in sync mode, futures are completed inline, without a
    thread."""
    if engine.inline:
        from ._sync import InlineCompleter

        return InlineCompleter(engine)
    return Completer(engine)
