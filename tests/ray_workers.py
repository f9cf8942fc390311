"""Worker classes for the Ray tests: the Ray examples of the concurry worker-pool guide
(validated workers, nested pools), adapted to SPool/SWorker."""

from __future__ import annotations

import os
from typing import Any

from pydantic import validate_call
from stateful_pool import SPool, SWorker


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
