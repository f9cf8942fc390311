"""stateful_pool: a pool of stateful worker processes with a Rust supervisor.

>>> from stateful_pool import SPool, SWorker
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._core import __version__

# Imported on first use: worker processes import this package too and need none of it.
_LAZY = {
    "BatchSizeError": ".batching",
    "CallLimit": ".concurry",
    "CoalesceStats": "._stats",
    "Concurrent": ".groups",
    "LatencyStats": "._stats",
    "LimitSet": ".concurry",
    "LoadBalancerStats": "._stats",
    "Namespace": ".groups",
    "NoWorkersError": ".errors",
    "PoolError": ".errors",
    "PoolFuture": "._futures",
    "PoolShutDownError": ".errors",
    "PoolStats": "._stats",
    "PoolWorkerStats": "._stats",
    "ProcTask": ".groups",
    "RateLimit": ".concurry",
    "RemoteError": ".errors",
    "ResultPicklingError": ".errors",
    "ResultUnpicklingError": ".errors",
    "RemoteTraceback": ".errors",
    "ResourceLimit": ".concurry",
    "RunReport": ".groups",
    "SPool": ".pool",
    "SWorker": ".worker",
    "Sequential": ".groups",
    "SharedNamespace": ".groups",
    "TaskResult": ".groups",
    "TaskTimeoutError": ".errors",
    "TaskTree": ".groups",
    "TaskTreeError": ".groups",
    "TaskWorker": ".concurry",
    "Worker": ".concurry",
    "WorkerCrashedError": ".errors",
    "WorkerPoolStats": "._stats",
    "WorkerStats": "._stats",
    "batched": ".batching",
}

if TYPE_CHECKING:
    from ._futures import PoolFuture
    from ._stats import (
        CoalesceStats,
        LatencyStats,
        LoadBalancerStats,
        PoolStats,
        PoolWorkerStats,
        WorkerPoolStats,
        WorkerStats,
    )
    from .batching import BatchSizeError, batched
    from .concurry import CallLimit, LimitSet, RateLimit, ResourceLimit, TaskWorker, Worker
    from .errors import (
        NoWorkersError,
        PoolError,
        PoolShutDownError,
        RemoteError,
        RemoteTraceback,
        ResultPicklingError,
        ResultUnpicklingError,
        TaskTimeoutError,
        WorkerCrashedError,
    )
    from .groups import (
        Concurrent,
        Namespace,
        ProcTask,
        RunReport,
        Sequential,
        SharedNamespace,
        TaskResult,
        TaskTree,
        TaskTreeError,
    )
    from .pool import SPool
    from .worker import SWorker

__all__ = [
    "CallLimit",
    "LimitSet",
    "RateLimit",
    "ResourceLimit",
    "TaskWorker",
    "Worker",
    "Concurrent",
    "Namespace",
    "NoWorkersError",
    "PoolError",
    "PoolFuture",
    "PoolShutDownError",
    "ProcTask",
    "RemoteError",
    "ResultPicklingError",
    "ResultUnpicklingError",
    "RemoteTraceback",
    "RunReport",
    "SPool",
    "SWorker",
    "Sequential",
    "SharedNamespace",
    "TaskResult",
    "TaskTimeoutError",
    "TaskTree",
    "TaskTreeError",
    "WorkerCrashedError",
    "LatencyStats",
    "LoadBalancerStats",
    "PoolStats",
    "PoolWorkerStats",
    "WorkerPoolStats",
    "WorkerStats",
    "CoalesceStats",
    "BatchSizeError",
    "batched",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stateful_pool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
