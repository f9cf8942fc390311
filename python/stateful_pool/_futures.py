"""Futures for pool tasks, completed in batches by one thread per pool (no thread per call)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any, Generic, TypeVar

from . import _core
from ._decode import decode

T = TypeVar("T")

__all__ = ["PoolFuture", "Completer"]


class PoolFuture(Future, Generic[T]):  # type: ignore[type-arg]
    """A :class:`concurrent.futures.Future` for a pool task: works with ``wait``,
    ``as_completed`` and ``asyncio.wrap_future``. ``cancel()`` removes a queued task from the
    pool's queue; a running task cannot be cancelled (use ``kill()`` to kill its worker)."""

    _ticket: _core.CoreTicket | None
    _token: int
    _completer: Completer | None

    def __init__(self) -> None:
        super().__init__()
        self._ticket = None
        self._token = 0
        self._completer = None

    def result(self, timeout: float | None = None) -> T:
        return super().result(self._claim(timeout))  # type: ignore[no-any-return]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return super().exception(self._claim(timeout))

    def _claim(self, timeout: float | None) -> float | None:
        """Takes this task's reply straight from the core when it arrives, instead of waiting
        for the pool's completion thread to hand it over. Returns the timeout left."""
        claim = getattr(self._ticket, "claim", None)  # engines without reply slots complete via the completer
        if claim is None or self.done():
            return timeout
        started = time.monotonic()
        got = claim(timeout)
        if got is not None:
            if self._completer is not None:
                self._completer.forget(self._token)
            _complete(self, *got)
        return None if timeout is None else max(0.0, timeout - (time.monotonic() - started))

    def cancel(self) -> bool:
        if self.done():
            return self.cancelled()
        if self._ticket is None or not self._ticket.cancel():
            return False
        return self._mark_cancelled()

    def kill(self) -> bool:
        """Cancels the task if queued, or kills the worker running it (the worker is restarted
        and the future fails with ``CancelledError``). Returns whether it was queued or running."""
        if self.done() or self._ticket is None:
            return False
        if self._ticket.cancel():
            return self._mark_cancelled()
        return self._ticket.cancel_or_kill()

    def _mark_cancelled(self) -> bool:
        if self._completer is not None:
            self._completer.forget(self._token)
        if super().cancel():
            # Futures in CANCELLED are invisible to concurrent.futures.wait() until notified.
            self.set_running_or_notify_cancel()
            return True
        return self.cancelled()


class Completer:
    """Owns the pool's completion thread: it waits (without the GIL) for finished tasks in the
    Rust core and completes their futures, many per wake-up."""

    def __init__(self, core: _core.CorePool):
        self._core = core
        self._pending: dict[int, PoolFuture[Any]] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False

    def register(self, future: PoolFuture[Any], submit: Callable[[int], _core.CoreTicket | None]) -> PoolFuture[Any]:
        """Registers ``future`` and calls ``submit(token)``; a submit error fails the future."""
        token = next(self._tokens)
        future._token = token
        future._completer = self
        self._pending[token] = future
        self._ensure_thread()
        try:
            future._ticket = submit(token)
        except BaseException as exc:
            self._pending.pop(token, None)
            if isinstance(exc, Exception):
                future.set_exception(exc)
            else:
                raise
        return future

    def forget(self, token: int) -> None:
        self._pending.pop(token, None)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stateful-pool-completer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        take = self._core.take_completions
        pending = self._pending
        while True:
            batch = take(0.1)
            for token, status, value in batch:
                future = pending.pop(token, None)
                if future is None or future.done():
                    continue
                _complete(future, status, value)
            if not batch and self._closing and not pending:
                return

    def close(self, timeout: float | None = None) -> None:
        """Lets the thread end once every registered future is complete."""
        self._closing = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


def _complete(future: PoolFuture[Any], status: int, value: Any) -> None:
    from concurrent.futures import InvalidStateError

    try:
        result = decode(status, value)
    except CancelledError:
        future._mark_cancelled()
        return
    except BaseException as exc:
        try:
            future.set_exception(exc)
        except InvalidStateError:
            pass
        return
    try:
        future.set_result(result)
    except InvalidStateError:  # cancelled meanwhile
        pass
