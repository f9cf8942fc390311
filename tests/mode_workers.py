"""Worker classes for the mode matrix (importable by reference in worker processes and Ray
actors, like ``workers.py``)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from workers import Echo


class ModeEcho(Echo):
    """``Echo`` plus a crash that suits where the worker lives."""

    def spawn(self, tag: Any = None, caller_pid: int | None = None) -> dict[str, Any]:
        self.caller_pid = caller_pid
        return super().spawn(tag)

    def crash(self) -> None:
        # In the caller's own process a worker cannot die alone: WorkerLost ends its host
        # (SystemExit is only a task's exception, as in concurrent.futures).
        if os.getpid() == self.caller_pid:
            from stateful_pool.modes._host import WorkerLost

            raise WorkerLost("crash")
        os._exit(3)

    async def nap(self, seconds: float) -> float:
        """An awaitable sleep: asyncio mode cancels it on timeout (blocking code it cannot)."""
        await asyncio.sleep(seconds)
        return seconds

    def busy_sleep(self, seconds: float) -> int:
        """Sleeps in Python bytecode, so a thread worker can be interrupted."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return os.getpid()


class CrashLoop(ModeEcho):
    """Spawns fine the first time; then its setup raises ``failures`` times (every time when
    ``None``) before it succeeds again. Spawns are counted in the file ``marker``, which every
    process and thread sees."""

    def spawn(  # type: ignore[override]
        self, marker: str, failures: int | None = None, caller_pid: int | None = None
    ) -> dict[str, Any]:
        with open(marker, "a+") as f:
            f.write("x")
            f.seek(0)
            spawns = len(f.read())
        if spawns > 1 and (failures is None or spawns <= 1 + failures):
            raise RuntimeError(f"setup failed (spawn {spawns})")
        return super().spawn(caller_pid=caller_pid)


class AsyncEcho(Echo):
    """Async methods (asyncio mode; the sync ``Echo`` methods still work there)."""

    async def spawn(self, tag: Any = None) -> dict[str, Any]:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().spawn(tag)

    async def nap(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async def afail(self, message: str) -> None:
        await asyncio.sleep(0)
        raise KeyError(message)
