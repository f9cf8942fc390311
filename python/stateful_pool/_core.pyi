"""Stubs for the native module built from src/python/ (checked by mypy.stubtest)."""

from typing import Any

__version__: str

class CoreTicket:
    """Handle a future keeps to cancel its task."""

    def cancel(self) -> bool: ...
    def cancel_or_kill(self) -> bool: ...
    @property
    def started(self) -> bool: ...

class CorePool:
    """The Rust supervisor of one SPool, running process workers.

    Replies are ``(status, value)``: status 0 -> value is the pickled result (bytes);
    1 -> value is a raised payload (bytes, see ``_serialize.load_exception``);
    2 -> value is an exception instance to raise.
    """

    def __init__(
        self,
        program: str,
        args: list[str],
        env: list[tuple[str, str]],
        cwd: str | None = None,
        *,
        queue_size: int | None = None,
        task_timeout: float | None = None,
        restart: str = "on-failure",
        max_restarts: int = 5,
        restart_window: float = 60.0,
        max_tasks_per_worker: int | None = None,
        max_memory_per_worker: int | None = None,
        stop_timeout: float = 5.0,
    ) -> None: ...
    def spawn(self, init: bytes) -> tuple[int, Any]: ...
    def submit_spawn(self, init: bytes, token: int) -> None: ...
    def call(self, payload: bytes, timeout: float | None = None, submit_timeout: float | None = None) -> tuple[int, Any]: ...
    def submit(
        self, payload: bytes, token: int, timeout: float | None = None, submit_timeout: float | None = None
    ) -> CoreTicket: ...
    def broadcast(self, payload: bytes) -> list[tuple[int, int, Any]]: ...
    def take_completions(self, timeout: float, max_items: int = 4096) -> list[tuple[int, int, Any]]: ...
    def shutdown(self, mode: str) -> None: ...
    def wait_stopped(self, timeout: float) -> bool: ...
    @property
    def is_shutdown(self) -> bool: ...
    @property
    def queued(self) -> int: ...
    def live_worker_ids(self) -> list[int]: ...
    def workers(self) -> list[dict[str, Any]]: ...
