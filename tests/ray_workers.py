"""Worker classes for the Ray tests: the Ray examples of the concurry worker-pool guide
(validated workers, nested pools), adapted to SPool/SWorker."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from pydantic import validate_call
from stateful_pool import SPool, SWorker
from stateful_pool.concurry import Worker


class PydanticValidatedWorker(SWorker):
    """The guide's ``@validate_call`` worker: arguments are coerced (``"10"`` -> ``10``)."""

    @validate_call
    def spawn(self, base: int) -> int:
        self.base = base
        self.call_count = 0
        return base

    @validate_call
    def compute(self, x: int, y: int = 0) -> int:
        self.call_count += 1
        return (x + y) * self.base

    @validate_call
    def process(self, x: int, offset: float = 0.0) -> float:
        return x * self.base + offset


class LeafWorker(SWorker):
    """Leaf worker that does the actual work."""

    def work(self, x: int) -> int:
        return x * 2


class BranchWorker(SWorker):
    """Branch worker that manages its own pool of leaf actors."""

    def spawn(self, leaves: int) -> int:
        self.leaf_pool: SPool[LeafWorker] = SPool(LeafWorker, mode="ray", actor_options={"num_cpus": 0.1})
        for future in [self.leaf_pool.submit_spawn() for _ in range(leaves)]:
            future.result()
        return leaves

    def process_group(self, values: list[int]) -> list[int]:
        futures = [self.leaf_pool.submit_call("work", x) for x in values]
        return [f.result() for f in futures]

    def leaf_pids(self) -> list[int]:
        return sorted({w["pid"] for w in self.leaf_pool.stats()["workers"]})


class ResourceProbe(SWorker):
    """Reports what Ray gave the actor hosting it."""

    def execute(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "resources": ray.get_runtime_context().get_assigned_resources()}


class Pipelined(SWorker):
    """Records the calls it runs, in order. ``gate`` blocks until a file exists (a test opens
    it), writing ``started`` first; ``rendezvous`` (in a threaded actor) waits until ``n``
    calls run at once and returns the most it saw."""

    def spawn(self, tag: Any = None) -> dict[str, Any]:
        self.tag, self.ran, self.running, self.peak = tag, [], 0, 0
        self.lock = threading.Lock()
        return {"tag": tag, "pid": os.getpid()}

    def whoami(self) -> dict[str, Any]:
        return {"tag": self.tag, "pid": os.getpid()}

    def gate(self, path: str, started: str, label: str) -> str:
        open(started, "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.ran.append(label)
        return label

    def record(self, label: str) -> str:
        self.ran.append(label)
        return label

    def history(self) -> list[str]:
        return list(self.ran)

    def rendezvous(self, n: int) -> int:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        deadline = time.monotonic() + 30
        while self.peak < n and time.monotonic() < deadline:
            time.sleep(0.01)
        with self.lock:
            self.running -= 1
        return self.peak


class Scaler(Worker):
    """A concurry-style worker (``stateful_pool.concurry.Worker``) for ``mode="ray"``."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def scale(self, value: int) -> int:
        return value * self.factor
