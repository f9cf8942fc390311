"""``mode="sync"``: every call runs in the caller, at once; futures come back already done.

For debugging and tests: breakpoints and profilers see the worker code in the calling thread.
The engine is the same supervisor as in every other mode (``_core.Engine``): a sync worker is a
host with no thread of its own, whose setup and calls are run by the thread waiting for them
(:func:`launch_sync`), so balancing, restarts and their window, timeouts, stats and errors are
the supervisor's. A call past its timeout (or killed) is interrupted as a thread worker's is: an
exception raised in the calling thread at the call's next bytecode, caught before the caller
sees it; the call fails with ``TaskTimeoutError`` and the worker is set up again.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Any

from .._futures import Completer, PoolFuture, _complete
from ._host import _interrupt, _Interrupted, _set_up, serve_one

__all__ = ["InlineCompleter", "launch_sync"]


def launch_sync(channel: Any, init: Any) -> None:
    """Launcher for ``mode="sync"``, run by a caller thread: sets the worker up at once, then
    leaves each call to whichever caller thread waits next."""
    call = _InlineCall()
    run = _set_up(channel, init, call.interrupt, "worker")
    if run is None:
        channel.exited()
        return
    channel.serve_inline(functools.partial(call.serve, run))


class _InlineCall:
    """The call a sync host runs, if any, so that interrupting it (the supervisor's timeout or
    kill, from another thread) raises in the caller's thread only while the call runs, and the
    exception is always caught here, never in the caller's own code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: int | None = None  # the thread running the call
        self._interrupted = False

    def interrupt(self) -> None:
        with self._lock:
            if self._thread is not None and not self._interrupted:
                self._interrupted = True
                _interrupt(self._thread)

    def serve(self, run: Callable[[Any], Any], request: Any) -> bool:
        """Answers one request on this thread; returns whether the host goes on."""
        delivered = False
        try:
            with self._lock:
                self._thread = threading.get_ident()
            try:
                return serve_one(run, request, inline=True)
            except _Interrupted:
                delivered = True
                return False
            finally:
                with self._lock:
                    self._thread = None
                    pending = self._interrupted and not delivered
                if pending:
                    _await_interrupt()
        except _Interrupted:  # the supervisor gave up on the call and has answered it
            return False


def _await_interrupt() -> None:
    """Runs bytecode until the interrupt already sent to this thread lands (it raises)."""
    while True:
        _tick()


def _tick() -> None:
    pass


class InlineCompleter(Completer):
    """Completes each future inside ``register`` (the engine's sync ``submit`` returns with the
    outcome in): a sync pool's futures are done on return, with no completion thread."""

    def _ensure_thread(self) -> None:
        """No thread for completions; one is started only to wind down a pool nobody waits
        for (``finish_in_background``): it stops the workers and ends the engine's threads."""

    def register(self, future: PoolFuture[Any], submit: Any, payload: Any, *options: Any) -> PoolFuture[Any]:
        super().register(future, submit, payload, *options)
        for token, status, value in self._core.take_completions(0.0):
            pending = self._pending.pop(token, None)
            if pending is not None and not pending.done():
                _complete(pending, status, value)
        if not future.done():
            # Another thread calling the pool took this outcome from the channel first: it is
            # completing the future now.
            concurrent.futures.wait([future])
        return future
