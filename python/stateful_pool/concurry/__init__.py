"""The concurry worker-pool API on the Rust core: ``Worker.options(...).init(...)`` pools,
``TaskWorker`` (a :class:`concurrent.futures.Executor`), limits shared across processes,
worker-side retries, on-demand workers and progress bars. Code written for concurry 0.13 runs
by changing its import: its names, enums, decorators and ``wait``/``gather`` are here.

>>> from stateful_pool.concurry import Worker, RateLimit, ResourceLimit, LimitSet
"""

from .constants import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    ExecutionMode,
    LoadBalancingAlgorithm,
    PollingAlgorithm,
    RateLimitAlgorithm,
    RateWindow,
    RetryAlgorithm,
    ReturnWhen,
)
from .decorators import Executor, task, worker
from .futures import ProxyFuture, as_completed
from .limit_pool import LimitPool
from .limits import Acquisition, CallLimit, Limit, LimitSet, RateLimit, ResourceLimit
from .pool import WorkerPool
from .progress import ProgressBar
from .retry import RetryConfig, RetryValidationError
from .synch import (
    BaseFuture,
    ConcurrentFuture,
    GatherOptions,
    SyncFuture,
    WaitOptions,
    async_gather,
    async_wait,
    gather,
    wait,
    wrap_future,
)
from .task import TaskPool, TaskWorker
from .worker import Worker, WorkerHost, WorkerOptions

WorkerProxy = WorkerPool
"""concurry's name for what ``Worker.options(...).init(...)`` returns."""
WorkerProxyPool = WorkerPool
"""concurry's name for a pool of several workers (the same class here)."""

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Acquisition",
    "BaseFuture",
    "CallLimit",
    "ConcurrentFuture",
    "ExecutionMode",
    "Executor",
    "GatherOptions",
    "Limit",
    "LimitPool",
    "LimitSet",
    "LoadBalancingAlgorithm",
    "PollingAlgorithm",
    "ProgressBar",
    "ProxyFuture",
    "RateLimit",
    "RateLimitAlgorithm",
    "RateWindow",
    "ResourceLimit",
    "RetryAlgorithm",
    "RetryConfig",
    "RetryValidationError",
    "ReturnWhen",
    "SyncFuture",
    "TaskPool",
    "TaskWorker",
    "WaitOptions",
    "Worker",
    "WorkerHost",
    "WorkerOptions",
    "WorkerPool",
    "WorkerProxy",
    "WorkerProxyPool",
    "as_completed",
    "async_gather",
    "async_wait",
    "gather",
    "task",
    "wait",
    "worker",
    "wrap_future",
]
