"""Worker classes with batched methods (importable by reference in worker processes)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from stateful_pool import SWorker, batched


class Doubler(SWorker):
    """Doubles each item; records the size of every batch it was handed. Items steer it:
    ``"boom"`` raises for the whole batch, ``"crash"`` kills the process (or its host),
    ``"short"`` makes it return one result too few, ``"sleep"`` hangs for a minute, an
    ``("odd", n)`` item fails alone."""

    def spawn(self, caller_pid: int | None = None) -> int:
        self.caller_pid = caller_pid
        self.sizes: list[int] = []
        return os.getpid()

    @batched(max_size=16, max_wait=0.05)
    def execute(self, items: list[Any]) -> list[Any]:
        self.sizes.append(len(items))
        if "sleep" in items:
            time.sleep(60)
        if "boom" in items:
            raise RuntimeError(f"boom in a batch of {len(items)}")
        if "crash" in items:
            if os.getpid() == self.caller_pid:  # an in-process host cannot die alone
                from stateful_pool.modes._host import WorkerLost

                raise WorkerLost("crash")
            os._exit(3)
        results: list[Any] = []
        for item in items:
            if isinstance(item, tuple):
                results.append(ValueError(f"item {item[1]} is odd"))
            else:
                results.append(item * 2)
        if "short" in items:
            return results[:-1]
        return results

    def batch_sizes(self) -> list[int]:
        return self.sizes


class FullBatches(Doubler):
    """Waits up to 30 s for 8 items: a batch is exactly what was queued, whatever the timing."""

    @batched(max_size=8, max_wait=30.0)
    def execute(self, items: list[Any]) -> list[Any]:
        return Doubler.execute.fn(self, items)  # type: ignore[no-any-return]


class AsyncDoubler(Doubler):
    """An ``async def`` batched method (asyncio mode)."""

    @batched(max_size=8, max_wait=30.0)
    async def execute(self, items: list[Any]) -> list[Any]:  # type: ignore[override]
        await asyncio.sleep(0)
        self.sizes.append(len(items))
        return [x * 2 for x in items]
