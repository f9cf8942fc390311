"""``mode="sync"``: every call runs in the caller, at once; futures come back already done.

For debugging and tests: breakpoints and profilers see the worker code in the calling thread.
It implements the ``_core.CorePool`` interface in Python (there is nothing to queue or
supervise), with the same replies, errors and stats keys as the other modes.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from .. import _lifecycle
from .._futures import Completer, PoolFuture, _complete
from .._serialize import safe_str
from ..errors import NoWorkersError, PoolShutDownError, TaskTimeoutError, WorkerCrashedError
from ._host import WorkerLost, call_args, init_args, remote_exception

__all__ = ["InlineCompleter", "SyncCore"]

_OBJECT, _ERROR = 3, 2
_RESTARTS = ("never", "on-failure", "on_failure", "always")


class _DoneTicket:
    """A finished task's ticket: there is never anything left to cancel."""

    started = True

    def cancel(self) -> bool:
        return False

    def cancel_or_kill(self) -> bool:
        return False


class _Worker:
    def __init__(self, worker_id: int, worker_cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.id = worker_id
        self.args, self.kwargs = args, kwargs
        self.instance = worker_cls()
        self.state = "starting"
        self.restarts = self.tasks_done = self.tasks_failed = self.dispatched = 0
        self.last_error: str | None = None

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "pid": os.getpid() if self.state in ("idle", "busy") else None,
            "restarts": self.restarts,
            "tasks_done": self.tasks_done,
            "tasks_failed": self.tasks_failed,
            "last_error": self.last_error,
            "dispatched": self.dispatched,
            "batches": 0,
            "batched_tasks": 0,
        }


class SyncCore:
    """The ``CorePool`` interface, run inline. ``task_timeout`` is checked after the call
    returns (a call cannot be interrupted in the caller's own thread): a late result is
    dropped, the call fails with ``TaskTimeoutError`` and the worker is set up again."""

    def __init__(
        self,
        worker_cls: type,
        *,
        task_timeout: float | None = None,
        restart: str = "on-failure",
        max_restarts: int = 5,
        max_tasks_per_worker: int | None = None,
        **_ignored: Any,
    ):
        if restart not in _RESTARTS:
            raise ValueError(f"restart must be 'never', 'on-failure' or 'always', got {restart!r}")
        if task_timeout is not None and not task_timeout > 0:
            raise ValueError(f"task_timeout must be a positive number of seconds, got {task_timeout}")
        self._cls = worker_cls
        self._timeout = task_timeout
        self._restart = restart
        self._max_restarts = max_restarts
        self._max_tasks = max_tasks_per_worker
        self._workers: list[_Worker] = []
        self._ids = itertools.count()
        self._turn = itertools.count()
        self._outbox: list[tuple[int, int, Any]] = []
        self._shut = False
        self._dispatched = 0

    # -- workers ----------------------------------------------------------------------------

    def spawn(self, init: Any) -> tuple[int, Any]:
        if self._shut:
            return _ERROR, PoolShutDownError("pool shut down while the worker was starting")
        args, kwargs = init_args(init)
        worker = _Worker(next(self._ids), self._cls, args, kwargs)
        try:
            ready = worker.instance.spawn(*args, **kwargs)
        except Exception as exc:
            return _ERROR, remote_exception(exc)
        worker.state = "idle"
        self._workers.append(worker)
        return _OBJECT, ready

    def submit_spawn(self, init: Any, token: int) -> None:
        self._outbox.append((token, *self.spawn(init)))

    def _respawn(self, worker: _Worker, why: str) -> None:
        worker.last_error = why
        if self._restart == "never" or worker.restarts >= self._max_restarts:
            worker.state = "failed"
            return
        worker.restarts += 1
        worker.instance = self._cls()
        try:
            worker.instance.spawn(*worker.args, **worker.kwargs)
            worker.state = "idle"
        except Exception as exc:
            worker.state = "failed"
            worker.last_error = f"worker setup raised {type(exc).__name__}: {safe_str(exc)}"

    # -- calls ------------------------------------------------------------------------------

    def _live(self) -> list[_Worker]:
        return [w for w in self._workers if w.state == "idle"]

    def _run(self, worker: _Worker, payload: Any, timeout: float | None) -> tuple[int, Any]:
        try:
            method, args, kwargs = call_args(payload)
        except Exception as exc:  # a name no caller may call: fails this call only
            return _ERROR, remote_exception(exc)
        worker.state = "busy"
        worker.dispatched += 1
        self._dispatched += 1
        started = time.monotonic()
        try:
            result = getattr(worker.instance, method)(*args, **kwargs)
        except WorkerLost as exc:
            worker.tasks_failed += 1
            why = f"WorkerLost: {safe_str(exc)}"
            self._respawn(worker, f"worker exited: {why}")
            return _ERROR, WorkerCrashedError(f"worker exited while running the task: {why}", worker.id)
        except (Exception, SystemExit) as exc:  # SystemExit fails its task only, as in concurrent.futures
            worker.state = "idle"
            worker.tasks_done += 1
            return _ERROR, remote_exception(exc)
        limit = timeout or self._timeout
        elapsed = time.monotonic() - started
        if limit is not None and elapsed > limit:
            worker.tasks_failed += 1
            self._respawn(worker, f"task timed out after {limit:.3f} s")
            return _ERROR, TaskTimeoutError(f"task timed out after {limit:.3f} s; its worker was replaced")
        worker.state = "idle"
        worker.tasks_done += 1
        if self._max_tasks is not None and worker.tasks_done % self._max_tasks == 0:
            self._respawn(worker, "recycled after max_tasks_per_worker tasks")
            worker.last_error = None
        return _OBJECT, result

    def call(self, payload: Any, timeout: float | None = None, submit_timeout: float | None = None) -> tuple[int, Any]:
        if self._shut:
            raise PoolShutDownError("cannot schedule new futures after shutdown")
        live = self._live()
        if not live:
            raise NoWorkersError("no worker is running: call spawn() first")
        return self._run(live[next(self._turn) % len(live)], payload, timeout)

    def submit(
        self, payload: Any, token: int, timeout: float | None = None, submit_timeout: float | None = None
    ) -> _DoneTicket:
        self._outbox.append((token, *self.call(payload, timeout, submit_timeout)))
        return _DoneTicket()

    def broadcast(self, payload: Any) -> list[tuple[int, int, Any]]:
        if self._shut:
            raise PoolShutDownError("cannot schedule new futures after shutdown")
        return [(w.id, *self._run(w, payload, None)) for w in self._live()]

    def take_completions(self, timeout: float, max_items: int = 4096) -> list[tuple[int, int, Any]]:
        out, self._outbox = self._outbox[:max_items], self._outbox[max_items:]
        return out

    # -- lifecycle --------------------------------------------------------------------------

    def shutdown(self, mode: str) -> None:
        if mode not in ("graceful", "cancel", "kill"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        self._shut = True
        for worker in self._workers:
            if worker.state != "failed":
                worker.state = "stopped"
            worker.instance = None

    def wait_stopped(self, timeout: float) -> bool:
        return self._shut

    def release(self) -> bool:
        return self._shut

    def retire_worker(self, worker_id: int) -> bool:
        for worker in self._live():
            if worker.id == worker_id:
                worker.state = "stopped"
                worker.instance = None
                return True
        return False

    @property
    def dispatched(self) -> int:
        return self._dispatched

    @property
    def load_balancing(self) -> str:
        return "round_robin"

    @property
    def is_shutdown(self) -> bool:
        return self._shut

    @property
    def queued(self) -> int:
        return 0

    def live_worker_ids(self) -> list[int]:
        return [w.id for w in self._live()]

    def workers(self) -> list[dict[str, Any]]:
        return [w.info() for w in self._workers]


class InlineCompleter(Completer):
    """Completes each future inside ``register``: a sync pool's futures are done on return,
    and no completion thread is started."""

    def _ensure_thread(self) -> None:
        pass

    def abandon(self) -> None:
        """Nothing runs in the background: stopping is all there is to do."""
        if self._generation == _lifecycle.GENERATION:
            self._core.shutdown("graceful")

    def finish_in_background(self) -> None:
        """Every future is already complete: nothing is left to finish."""

    def register(self, future: PoolFuture[Any], submit: Any, payload: Any, *options: Any) -> PoolFuture[Any]:
        super().register(future, submit, payload, *options)
        for token, status, value in self._core.take_completions(0.0):
            pending = self._pending.pop(token, None)
            if pending is not None and not pending.done():
                _complete(pending, status, value)
        return future
