"""What ties a pool to the process that made it.

* **Work submitted is done.** At interpreter exit, live and abandoned pools finish the tasks
  already submitted before their workers stop (Ctrl-C while waiting kills them).
* **Abandoned pools wind down.** A pool nobody references any more (its ``SPool`` and every
  ``options()`` view collected) finishes its queued and running tasks, so their futures still
  complete, then stops its workers and ends its threads, like a dropped
  ``ProcessPoolExecutor``. Its completer does the waiting, on its own thread.
* **A forked child leaves the parent's pools alone.** The child has copies of the parent's pools
  but none of their threads; its workers, rings and pipes are the parent's. In the child every
  inherited pool raises :class:`RuntimeError` on use, shutting it down does nothing, and its Rust
  core is never dropped there (its destructor would stop and wait for threads that do not exist
  in the child, and kill the parent's workers): the child keeps those references until it exits.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["GENERATION", "Users", "forked_error", "on_fork_in_child", "track", "wind_down"]

# Bumped in every child forked from this process: an object made under another generation
# belongs to an ancestor process.
GENERATION = 0


# Every completer of this process (with it, its core): moved to `_inherited` in a forked child.
_engines: weakref.WeakSet[Any] = weakref.WeakSet()
# Abandoned pools still finishing their tasks; killed at interpreter exit like live pools. No
# lock: a set's add, discard and copy are atomic under the GIL, and `wind_down` may run inside
# the garbage collector, where waiting on a lock the interrupted code holds would deadlock.
_winding: set[Any] = set()
# A forked child's copies of the parent's pools, never released (see the module docstring).
_inherited: list[Any] = []
_child_hooks: list[Callable[[], None]] = []


def forked_error(what: str = "pool") -> RuntimeError:
    """The error of using a pool inherited through ``os.fork()``."""
    return RuntimeError(
        f"this {what} was created by a parent of process {os.getpid()} before fork(): its workers "
        "and threads belong to that process; create a new pool in the child"
    )


class Users:
    """Held by a pool and every ``options()`` view of it: once the last is collected, the pool
    is abandoned (a finalizer on this object runs) and winds down."""

    __slots__ = ("__weakref__",)


def track(engine: Any) -> None:
    """Records a completer so a forked child can keep its core out of the destructor's reach."""
    _engines.add(engine)


def wind_down(engine: Any, done: bool) -> None:
    """Marks an abandoned pool's completer as winding down (``done=False``) or finished."""
    if done:
        _winding.discard(engine)
    else:
        _winding.add(engine)


def on_fork_in_child(hook: Callable[[], None]) -> None:
    """Runs ``hook`` in every child forked from now on, after this module's own bookkeeping."""
    _child_hooks.append(hook)


_kept_forever = False


def _after_fork_in_child() -> None:
    global GENERATION, _kept_forever
    GENERATION += 1
    _inherited.extend(_engines)
    _inherited.extend(_winding)
    _engines.clear()
    _winding.clear()
    if _inherited and not _kept_forever:
        # An extra reference never given back: the interpreter's teardown then never frees
        # `_inherited`, so no inherited core's destructor runs in this process.
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(_inherited))
        _kept_forever = True
    for hook in _child_hooks:
        hook()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _finish_winding() -> None:
    """At exit, abandoned pools still finishing their tasks finish them, as live pools do
    (``concurrent.futures`` semantics); Ctrl-C while waiting kills them."""
    try:
        for engine in list(_winding):
            engine.finish_now()
    except BaseException:
        for engine in list(_winding):
            engine.kill_now()
        raise


# When the main thread ends, before atexit handlers, as concurrent.futures does. Hooks run last
# registered first: `pool._stop_live_pools`, registered after this one, stops the live pools
# before this waits for the abandoned ones.
_register = getattr(threading, "_register_atexit", None)
(atexit.register if _register is None else _register)(_finish_winding)


def at_interpreter_exit(hook: Callable[[], object]) -> None:
    """Runs ``hook`` when the main thread ends, before ``atexit`` handlers (as
    ``concurrent.futures`` does): an ``atexit`` handler registered before the pools' module was
    imported then finds the pools stopped, and its submit raises."""
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # not CPython: plain atexit
        atexit.register(hook)
    else:
        register(hook)
