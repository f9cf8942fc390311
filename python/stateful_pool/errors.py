"""Exceptions raised by stateful_pool. Each subclasses the standard exception it means."""

from __future__ import annotations

import pickle
from concurrent.futures import BrokenExecutor, CancelledError
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback

__all__ = [
    "BrokenExecutor",
    "CancelledError",
    "NoWorkersError",
    "PoolError",
    "PoolShutDownError",
    "RemoteError",
    "ResultPicklingError",
    "ResultUnpicklingError",
    "RemoteTraceback",
    "TaskTimeoutError",
    "WorkerCrashedError",
]


class PoolError(Exception):
    """Base class of the errors the pool itself raises (not the ones your worker raises)."""


class PoolShutDownError(PoolError, RuntimeError):
    """The pool is shut down: it takes no new tasks, or shut down before a task ran."""


class NoWorkersError(PoolError, RuntimeError):
    """No worker is running (none spawned yet, or every worker failed for good)."""


class WorkerCrashedError(PoolError, BrokenProcessPool):
    """The worker process running a task died (killed, segfault, OOM, ``os._exit``).

    Only the task that was running fails; the worker is restarted and the pool keeps serving.
    """

    def __init__(
        self, message: str, worker_id: int | None = None, exitcode: int | None = None, signal: int | None = None
    ):
        super().__init__(message)
        self.worker_id = worker_id
        self.exitcode = exitcode
        self.signal = signal

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.worker_id, self.exitcode, self.signal))


class TaskTimeoutError(PoolError, TimeoutError):
    """A task ran past its timeout; its worker was killed and replaced."""


# Carries the worker's formatted traceback (``.tb``); set as ``__cause__`` of re-raised
# exceptions. It is ``concurrent.futures``' own class, so code written for a
# ``ProcessPoolExecutor`` that looks for it finds it.
RemoteTraceback = _RemoteTraceback


class ResultPicklingError(pickle.PicklingError, TypeError):
    """A task's result could not be pickled in the worker (its ``__cause__`` says why): a
    ``PicklingError``, as ``ProcessPoolExecutor`` raises, and a ``TypeError``, as pickle does
    for most unpicklable objects. The worker keeps serving."""


class ResultUnpicklingError(PoolError, BrokenProcessPool):
    """A task's result could not be unpickled in the caller (its ``__cause__`` says why). A
    ``BrokenProcessPool``, as ``ProcessPoolExecutor`` raises then, but the pool is not broken:
    only this task failed, and its worker keeps serving."""


class RemoteError(Exception):
    """Stands in for an exception raised in a worker that could not be pickled."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.type_name, self.message))
