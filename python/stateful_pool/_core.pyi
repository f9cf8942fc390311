"""Stubs for the native module built from src/python/ (checked by mypy.stubtest)."""

from collections.abc import Callable, Mapping
from typing import Any, Self, final

from ._stats import CoalesceStats, WorkerStats

__version__: str
__all__ = [
    "Engine",
    "CallOptions",
    "CoreTicket",
    "CoreEndpoint",
    "Payload",
    "CoreLimits",
    "CoreGrant",
    "CoreLease",
    "CoreNamespace",
    "STATUS_OK",
    "STATUS_RAISED",
    "STATUS_ERROR",
    "STATUS_OBJECT",
    "FRAME_INIT",
    "FRAME_CALL",
    "FRAME_STOP",
    "FRAME_READY",
    "FRAME_OK",
    "FRAME_RAISED",
    "FRAME_UPCALL",
    "FRAME_UPCALL_REPLY",
    "REQUEST_CALL",
    "REQUEST_CANCEL",
    "REQUEST_COALESCED",
    "COALESCED_MARKER",
    "READY_OK",
    "READY_RAISED",
    "READY_FATAL",
    "__version__",
]

# The protocol's codes (src/python/protocol.rs): reply statuses, frame kinds of the process
# channel, an in-process host's request kinds and setup reports.
STATUS_OK: int
STATUS_RAISED: int
STATUS_ERROR: int
STATUS_OBJECT: int
FRAME_INIT: int
FRAME_CALL: int
FRAME_STOP: int
FRAME_READY: int
FRAME_OK: int
FRAME_RAISED: int
FRAME_UPCALL: int
FRAME_UPCALL_REPLY: int
REQUEST_CALL: int
REQUEST_CANCEL: int
REQUEST_COALESCED: int
COALESCED_MARKER: int
READY_OK: int
READY_RAISED: int
READY_FATAL: int

@final
class CoreTicket:
    """Handle a future keeps to cancel its task and to claim its reply."""

    def cancel(self) -> bool: ...
    def cancel_or_kill(self) -> bool: ...
    @property
    def started(self) -> bool: ...
    def claim(self, timeout: float | None = None) -> tuple[int, Any] | None: ...

@final
class CallOptions:
    """One call's options as ``SPool.options`` sets them, checked once per pool or view."""

    def __new__(
        cls,
        timeout: float | None = None,
        submit_timeout: float | None = None,
        priority: int = 0,
        key: Any = None,
        sticky: str = "wait",
    ) -> CallOptions: ...

@final
class Engine:
    """The Rust supervisor of one SPool, for every mode (see ``stateful_pool.modes``).

    ``options`` is a dict: ``mode`` (required), the pool's options as ``SPool`` names them, and
    ``program``, ``args``, ``env``, ``cwd`` (process mode) or ``launcher(channel, init)`` (the
    in-process modes); missing keys take their defaults. Replies are ``(status, value)``, the
    ``STATUS_*`` codes below: a pickled result, a raised payload, an exception to raise, or the
    result object itself (in-process modes).
    """

    def __new__(cls, options: Mapping[str, Any]) -> Self: ...
    @property
    def mode(self) -> str: ...
    @property
    def inline(self) -> bool: ...
    def spawn(
        self, init: Any, placement: tuple[list[tuple[str, str]], list[int]] | None = None, like: int | None = None
    ) -> tuple[int, Any]: ...
    def submit_spawn(
        self, init: Any, token: int, placement: tuple[list[tuple[str, str]], list[int]] | None = None
    ) -> None: ...
    def call(self, payload: Any, options: CallOptions | None = None, method: str | None = None) -> tuple[int, Any]: ...
    def submit(
        self,
        payload: Any,
        token: int,
        options: CallOptions | None = None,
        method: str | None = None,
        pipelined: bool = False,
    ) -> CoreTicket: ...
    def coalesced(self) -> CoalesceStats: ...
    def broadcast(self, payload: Any) -> list[tuple[int, int, Any]]: ...
    def take_completions(self, timeout: float, max_items: int = 4096) -> list[tuple[int, int, Any]]: ...
    def shutdown(self, mode: str) -> None: ...
    def wait_stopped(self, timeout: float) -> bool: ...
    def release(self) -> bool: ...
    @property
    def is_shutdown(self) -> bool: ...
    @property
    def queued(self) -> int: ...
    def live_worker_ids(self) -> list[int]: ...
    def retire_worker(self, worker_id: int) -> bool: ...
    def run_times(self) -> tuple[list[float], list[int], float]: ...
    @property
    def dispatched(self) -> int: ...
    @property
    def sticky(self) -> tuple[int, int]: ...
    @property
    def load_balancing(self) -> str: ...
    def workers(self) -> list[WorkerStats]: ...

@final
class CoreLimits:
    """A table of limits in shared memory (a memfd); specs are ``(algorithm, window_seconds,
    capacity)``, a rate limit's capacity possibly fractional. Other processes map it with
    ``CoreLimits.attach(pid, fd)``."""

    def __new__(cls, specs: list[tuple[str, float, float]]) -> Self: ...
    @staticmethod
    def attach(pid: int, fd: int) -> CoreLimits: ...
    @property
    def parked(self) -> int: ...
    @property
    def pid(self) -> int: ...
    @property
    def fd(self) -> int: ...
    @property
    def specs(self) -> list[tuple[str, float, int, int]]: ...
    def acquire(
        self,
        requests: list[tuple[int, float]],
        timeout: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> CoreGrant | None: ...
    def try_acquire(self, index: int, amount: int, now_ns: int | None = None) -> tuple[bool, float, int, int]: ...
    def refund(self, index: int, amount: int, token: int) -> None: ...
    def lease(self, index: int, amount: int) -> CoreLease | None: ...
    def reclaim_dead(self) -> list[int]: ...
    def release_dead_process(self, pid: int) -> list[int]: ...
    def leases(self) -> list[tuple[int, int, int, str]]: ...
    def available(self, index: int, now_ns: int | None = None) -> int | float: ...
    @staticmethod
    def now_ns() -> int: ...

@final
class CoreGrant:
    """Several limits granted together (``CoreLimits.acquire``): rate units spent, resource
    units held until ``release()`` (or until this process dies)."""

    def release(self) -> bool: ...
    def refund(self, index: int, unused: float) -> None: ...
    @property
    def held(self) -> bool: ...
    @property
    def parts(self) -> list[tuple[int, float]]: ...
    @property
    def at_ns(self) -> int: ...

@final
class CoreLease:
    """Units of a resource limit held by this process (``CoreLimits.lease``), recorded with it
    in the shared memory so that they come back if it dies holding them."""

    def release(self) -> bool: ...
    @property
    def held(self) -> bool: ...
    @property
    def units(self) -> tuple[int, int]: ...

@final
class Payload:
    """Reply bytes owned by the core, exposed through the buffer protocol (zero-copy)."""

    def __len__(self) -> int: ...

@final
class CoreEndpoint:
    """A worker process's channel to its supervisor (used by ``stateful_pool._worker``)."""

    def __new__(cls) -> Self: ...
    def recv(self) -> tuple[int, int, Payload] | None: ...
    def send(self, kind: int, task_id: int, parts: list[Any]) -> None: ...

@final
class CoreNamespace:
    """A task tree's shared namespace, held in this process: named pickled values and one lock,
    served to the workers of an ``Engine`` built with ``namespace`` as upcalls on their channel."""

    def __new__(cls) -> Self: ...
    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes) -> None: ...
    def delete(self, key: str) -> bool: ...
    def keys(self) -> list[str]: ...
    def snapshot(self) -> list[tuple[str, bytes]]: ...
    def lock(self, timeout: float | None = None) -> bool: ...
    def unlock(self) -> None: ...
    @property
    def holder(self) -> int | None: ...
    @staticmethod
    def protocol() -> list[tuple[str, int]]: ...
