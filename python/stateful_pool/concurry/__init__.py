"""The concurry worker-pool API on the Rust core: ``Worker.options(...).init(...)`` pools,
``TaskWorker`` (a :class:`concurrent.futures.Executor`), limits shared across processes,
worker-side retries, on-demand workers and progress bars.

>>> from stateful_pool.concurry import Worker, RateLimit, ResourceLimit, LimitSet
"""

from .futures import ProxyFuture, as_completed, gather
from .limits import Acquisition, CallLimit, LimitSet, RateLimit, ResourceLimit
from .pool import WorkerPool
from .progress import ProgressBar
from .retry import RetryConfig, RetryValidationError
from .task import TaskPool, TaskWorker
from .worker import Worker, WorkerHost, WorkerOptions

__all__ = [
    "Acquisition",
    "CallLimit",
    "LimitSet",
    "ProgressBar",
    "ProxyFuture",
    "RateLimit",
    "ResourceLimit",
    "RetryConfig",
    "RetryValidationError",
    "TaskPool",
    "TaskWorker",
    "Worker",
    "WorkerHost",
    "WorkerOptions",
    "WorkerPool",
    "as_completed",
    "gather",
]
