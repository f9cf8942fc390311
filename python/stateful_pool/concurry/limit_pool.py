"""``LimitPool``: several :class:`LimitSet` used as one; each acquisition goes to one of them,
chosen round-robin (each worker starting at its own offset) or at random. Useful to spread calls
over accounts or regions, each with its own budget: ``acq.config`` tells which was chosen.

The choice looks at the sets' shared state first: when the chosen set cannot grant now, the next
one that can (in round-robin order from the choice) is used; only when none can does the call
wait, on the chosen set (parked in the core, as :meth:`LimitSet.acquire` waits).

Give a pool's workers one with ``Worker.options(limits=[set_a, set_b])``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from ._frozen import Frozen
from .constants import LoadBalancingAlgorithm
from .limits import Acquisition, LimitSet

__all__ = ["LimitPool"]


class LimitPool(Frozen):
    """Acquires from one of ``limit_sets`` per call (``load_balancing``: ``RoundRobin`` from
    ``worker_index``, or ``Random``). Frozen, as concurry's is (see ``_frozen.py``)."""

    def __init__(
        self,
        limit_sets: Iterable[LimitSet],
        load_balancing: Any = LoadBalancingAlgorithm.RoundRobin,
        worker_index: int = 0,
    ):
        sets = list(limit_sets)
        if not sets:
            raise ValueError("a LimitPool needs at least one LimitSet")
        for item in sets:
            if not isinstance(item, LimitSet):
                raise TypeError(f"a LimitPool holds LimitSets, got {type(item).__name__}")
        algorithm = LoadBalancingAlgorithm.from_str(load_balancing)
        if algorithm not in (LoadBalancingAlgorithm.RoundRobin, LoadBalancingAlgorithm.Random):
            raise ValueError(f"Unsupported load balancing algorithm for a LimitPool: {algorithm} (RoundRobin, Random)")
        self.limit_sets = sets
        self.load_balancing = algorithm
        self.worker_index = worker_index
        self._dispatched = 0
        self._lock = threading.Lock()

    def _candidates(self) -> list[LimitSet]:
        """The sets in the order to try: the balancer's choice first, then the others in turn."""
        with self._lock:
            n = self._dispatched
            self._dispatched += 1
        count = len(self.limit_sets)
        if self.load_balancing is LoadBalancingAlgorithm.Random:
            first = random.randrange(count)
        else:
            first = (self.worker_index + n) % count
        return [self.limit_sets[(first + k) % count] for k in range(count)]

    def _try(self, sets: list[LimitSet], requested: Mapping[str, float] | None) -> Acquisition:
        """The first of ``sets`` that grants now, or the chosen one's refusal."""
        refused = None
        for limit_set in sets:
            acquisition = limit_set.try_acquire(requested)
            if acquisition.successful:
                return acquisition
            refused = refused or acquisition
        assert refused is not None  # at least one set
        return refused

    def acquire(self, requested: Mapping[str, float] | None = None, *, timeout: float | None = None) -> Acquisition:
        """:meth:`LimitSet.acquire` on the chosen set, or on another that can grant now."""
        sets = self._candidates()
        acquisition = self._try(sets, requested)
        return acquisition if acquisition.successful else sets[0].acquire(requested, timeout=timeout)

    def try_acquire(self, requested: Mapping[str, float] | None = None) -> Acquisition:
        """:meth:`LimitSet.try_acquire` on the chosen set, or on another that can grant now."""
        return self._try(self._candidates(), requested)

    async def async_acquire(
        self, requested: Mapping[str, float] | None = None, *, timeout: float | None = None
    ) -> Acquisition:
        """:meth:`LimitSet.async_acquire` on the chosen set, or on another that can grant now."""
        sets = self._candidates()
        acquisition = self._try(sets, requested)
        return acquisition if acquisition.successful else await sets[0].async_acquire(requested, timeout=timeout)

    def release_open(self) -> None:
        """Ends every acquisition this thread still holds, in every set."""
        for limit_set in self.limit_sets:
            limit_set.release_open()

    def get_stats(self) -> dict[str, Any]:
        """The pool's configuration, its balancer's counters and each set's stats."""
        return {
            "num_limit_sets": len(self.limit_sets),
            "load_balancing": self.load_balancing.value,
            "worker_index": self.worker_index,
            "balancer_stats": {
                "algorithm": self.load_balancing.value,
                "offset": self.worker_index,
                "total_dispatched": self._dispatched,
            },
            "limit_sets": [s.get_stats() for s in self.limit_sets],
        }

    def __getitem__(self, index: int) -> LimitSet:
        return self.limit_sets[index]

    def __len__(self) -> int:
        return len(self.limit_sets)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LimitPool({len(self.limit_sets)} sets, {self.load_balancing}, worker_index={self.worker_index})"
