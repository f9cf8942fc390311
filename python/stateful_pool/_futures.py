"""Futures for pool tasks, completed in batches by one thread per pool (no thread per call)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures._base import CANCELLED as _CANCELLED
from concurrent.futures._base import CANCELLED_AND_NOTIFIED as _CANCELLED_AND_NOTIFIED
from concurrent.futures._base import FINISHED as _FINISHED
from concurrent.futures._base import PENDING as _PENDING
from concurrent.futures._base import RUNNING as _RUNNING
from typing import Any, Generic, TypeVar

from . import _core, _lifecycle
from ._decode import decode
from ._protocol import STATUS_OBJECT, STATUS_OK

T = TypeVar("T")

__all__ = ["PoolFuture", "RawReplyFuture", "Completer"]

_CANCELLED_STATES = (_CANCELLED, _CANCELLED_AND_NOTIFIED)
_DONE_STATES = (_CANCELLED, _CANCELLED_AND_NOTIFIED, _FINISHED)
# States a future never leaves (CANCELLED still moves on to CANCELLED_AND_NOTIFIED).
_FINAL_STATES = (_CANCELLED_AND_NOTIFIED, _FINISHED)


# Guards the lazy creation of a future's condition against a completion racing with it.
_LAZY = threading.Lock()


class _Settled:
    """The condition of a future that was already final when first asked for one: its state
    never changes again, so nothing can wait on it or need waking, and locking it guards
    nothing. ``concurrent.futures.wait`` and ``as_completed`` lock every future they are given;
    this spares them making a real condition for each finished one."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        pass

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        pass

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def notify(self, n: int = 1) -> None:
        pass

    def notify_all(self) -> None:
        pass


_SETTLED = _Settled()


class PoolFuture(Future, Generic[T]):  # type: ignore[type-arg]
    """A :class:`concurrent.futures.Future` for a pool task: works with ``wait``,
    ``as_completed`` and ``asyncio.wrap_future``. ``cancel()`` removes a queued task from the
    pool's queue; a running task cannot be cancelled (use ``kill()`` to kill its worker).

    Most futures of a large batch are finished before anyone waits on them, so the condition
    variable and the waiter and callback lists every ``Future`` carries are made only when
    something waits on a pending future or registers a callback: making, completing and reading
    one costs 0.8 µs instead of 4.7 µs, and 0.7 µs instead of 6.1 µs each with 20,000 alive (the
    garbage collector's work). Those three are the stdlib's private attributes, provided here as
    lazy properties; ``tests/test_futures_versions.py`` pins what ``Future`` keeps per instance
    and runs the futures tests on every Python from 3.11 to 3.14 that is installed."""

    _ticket: _core.CoreTicket | None
    _token: int
    _completer: Completer | None
    # Whether a result reply is kept as it came, ``(status, value)``, for the caller to decode.
    _raw = False

    def __init__(self) -> None:  # no super().__init__(): see the class docstring
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._lazy_condition: threading.Condition | None = None
        self._lazy_waiters: list[Any] | None = None
        self._lazy_callbacks: list[Any] | None = None
        self._ticket = None
        self._token = 0
        self._completer = None

    @property
    def _condition(self) -> threading.Condition | _Settled:  # type: ignore[override]
        condition = self._lazy_condition
        if condition is not None:
            return condition
        with _LAZY:
            if self._lazy_condition is None:
                if self._state in _FINAL_STATES:
                    return _SETTLED
                self._lazy_condition = threading.Condition()
            return self._lazy_condition

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        if self._lazy_waiters is None:
            self._lazy_waiters = []
        return self._lazy_waiters

    @property
    def _done_callbacks(self) -> list[Any]:
        if self._lazy_callbacks is None:
            self._lazy_callbacks = []
        return self._lazy_callbacks

    def _set_if_unobserved(self, result: Any, exception: BaseException | None) -> bool:
        """Completes the future without a condition when none was made (then nothing waits
        and no callback is registered); returns False when the full ``Future`` protocol must
        run."""
        with _LAZY:
            if self._lazy_condition is not None:
                return False
            state = self._state
            if state not in _DONE_STATES:
                self._result = result
                self._exception = exception
                self._state = _FINISHED
                return True
        raise InvalidStateError(f"{state}: {self!r}")  # outside the lock: repr takes it

    def set_result(self, result: Any) -> None:
        if not self._set_if_unobserved(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._set_if_unobserved(None, exception):
            super().set_exception(exception)

    def done(self) -> bool:
        return self._state in _DONE_STATES

    def running(self) -> bool:
        """Whether a worker is running the task now (``concurrent.futures`` semantics: not
        done, and past the point where ``cancel()`` could stop it)."""
        if self._state == _RUNNING:
            return True
        ticket = self._ticket
        return self._state == _PENDING and ticket is not None and ticket.started

    def __repr__(self) -> str:
        if self._state == _PENDING and self.running():
            return f"<{type(self).__name__} at {id(self):#x} state=running>"
        return super().__repr__()

    def cancelled(self) -> bool:
        return self._state in _CANCELLED_STATES

    def result(self, timeout: float | None = None) -> T:
        if self._state == _FINISHED and self._exception is None:
            return self._result  # type: ignore[return-value]
        return super().result(self._claim(timeout))  # type: ignore[no-any-return]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == _FINISHED:
            return self._exception
        return super().exception(self._claim(timeout))

    def _claim(self, timeout: float | None) -> float | None:
        """Takes this task's reply straight from the core when it arrives, instead of waiting
        for the pool's completion thread to hand it over. Returns the timeout left."""
        completer = self._completer
        if completer is not None and completer._generation != _lifecycle.GENERATION and not self.done():
            raise _lifecycle.forked_error("future's pool")  # its reply goes to the parent process
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
        if self._completer is None:  # never submitted: a plain Future
            return super().cancel()
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


class RawReplyFuture(PoolFuture[Any]):
    """A future whose result is the task's reply as it came, ``(status, value)``, for
    ``_decode.decode``; failures still raise. A ``map`` decodes its chunks' replies in the thread
    that consumes them, so the completion thread never holds the interpreter for a chunk's
    unpickling while that thread waits for it."""

    _raw = True


_RAW_STATUSES = (STATUS_OK, STATUS_OBJECT)


class Completer:
    """Owns the pool's completion thread: it waits (without the GIL) for finished tasks in the
    Rust core and completes their futures, many per wake-up.

    The thread holds the completer (and so the core), never the ``SPool``: a pool dropped by
    its user is collected, and :meth:`abandon` then lets this thread finish the pool's tasks,
    stop its workers and end."""

    def __init__(self, core: _core.Engine):
        self._core = core
        self._pending: dict[int, PoolFuture[Any]] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._abandoned = False
        self._generation = _lifecycle.GENERATION
        _lifecycle.track(self)

    def register(
        self, future: PoolFuture[Any], submit: Callable[..., _core.CoreTicket | None], payload: Any, *options: Any
    ) -> PoolFuture[Any]:
        """Registers ``future`` under a fresh token and calls ``submit(payload, token, *options)``
        (a core's ``submit`` or ``submit_spawn``); a submit error fails the future. No closure
        per call: this is the hot path of every ``submit_*``."""
        token = next(self._tokens)
        future._token = token
        future._completer = self
        self._pending[token] = future
        if self._thread is None:
            self._ensure_thread()
        try:
            future._ticket = submit(payload, token, *options)
        except BaseException as exc:
            self._pending.pop(token, None)
            if not isinstance(exc, Exception):
                raise
            future.set_exception(exc)
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
                if status == STATUS_OBJECT and not future._raw:  # the common case, inline: once per task
                    try:
                        future.set_result(value)
                    except InvalidStateError:  # cancelled meanwhile
                        pass
                    continue
                _complete(future, status, value)
            empty = not batch
            # Hold no result while waiting for the next batch: a caller that dropped one must
            # see it freed (``concurrent.futures`` keeps no such reference either).
            batch = future = value = None  # type: ignore[assignment]
            if empty and self._closing and not pending:
                if self._abandoned:
                    self._release()
                return

    def close(self, timeout: float | None = None) -> None:
        """Lets the thread end once every registered future is complete."""
        self._closing = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def abandon(self) -> None:
        """The pool's user let go of it (``weakref.finalize`` of the ``SPool``): queued and
        running tasks still run and complete their futures, then the workers stop and the
        thread ends, releasing the core's threads. Returns at once (it may run inside the
        garbage collector); the completion thread does the waiting. Does nothing in a forked
        child: the pool is the parent's."""
        if self._generation != _lifecycle.GENERATION or self._abandoned:
            return
        try:
            self._core.shutdown("graceful")
        except Exception:  # an engine that cannot even shut down has nothing left to wait for
            self._abandoned = True
            return
        self.finish_in_background()

    def finish_in_background(self) -> None:
        """The pool was told to shut down and nobody will wait for it (``shutdown(wait=False)``,
        or abandoned): this thread completes the remaining futures, waits for the workers to
        stop, releases the core's threads and ends."""
        if self._generation != _lifecycle.GENERATION or self._abandoned:
            return
        self._abandoned = True
        _lifecycle.wind_down(self, done=False)
        self._closing = True
        with self._lock:
            thread = self._thread
            if thread is None or not thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="stateful-pool-completer", daemon=True)
                self._thread.start()

    def _release(self) -> None:
        """Waits for the abandoned pool's workers to stop, then ends the core's threads."""
        core = self._core
        try:
            while not core.wait_stopped(1.0):
                if self._generation != _lifecycle.GENERATION:
                    return
            core.release()
        finally:
            _lifecycle.wind_down(self, done=True)

    def finish_now(self) -> None:
        """Waits (at interpreter exit) for an abandoned pool to finish its tasks and stop; its
        completion thread completes their futures meanwhile."""
        core = self._core
        while not core.wait_stopped(1.0):
            pass
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(30.0)

    def kill_now(self) -> None:
        """Kills an abandoned pool's workers (at interpreter exit) and ends its threads."""
        core = self._core
        try:
            core.shutdown("kill")
            core.wait_stopped(30.0)
            core.release()
        finally:
            _lifecycle.wind_down(self, done=True)


def _complete(future: PoolFuture[Any], status: int, value: Any) -> None:
    if future._raw and status in _RAW_STATUSES:
        try:
            future.set_result((status, value))
        except InvalidStateError:  # cancelled meanwhile
            pass
        return
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
