"""``mode="sync"``: every call runs in the caller, at once; futures come back already done.

For debugging and tests: breakpoints and profilers see the worker code in the calling thread.
The engine is the same supervisor as in every other mode (``_core.Engine``): a sync worker is a
host with no thread of its own, whose setup and calls are run by the thread waiting for them
(see ``_host.launch_sync``), so balancing, restarts and their window, stats and errors are the
supervisor's. ``task_timeout`` cannot interrupt a call running in its caller's own thread: a
call past it fails with ``TaskTimeoutError`` once it returns, and its worker is set up again.
"""

from __future__ import annotations

from typing import Any

from .._futures import Completer, PoolFuture, _complete

__all__ = ["InlineCompleter"]


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
        return future
