"""stateful_pool: a pool of stateful worker processes with a Rust supervisor.

>>> from stateful_pool import SPool, SWorker
"""

from ._core import __version__
from ._futures import PoolFuture
from .errors import (
    NoWorkersError,
    PoolError,
    PoolShutDownError,
    RemoteError,
    RemoteTraceback,
    TaskTimeoutError,
    WorkerCrashedError,
)
from .pool import SPool
from .worker import SWorker

__all__ = [
    "NoWorkersError",
    "PoolError",
    "PoolFuture",
    "PoolShutDownError",
    "RemoteError",
    "RemoteTraceback",
    "SPool",
    "SWorker",
    "TaskTimeoutError",
    "WorkerCrashedError",
    "__version__",
]
