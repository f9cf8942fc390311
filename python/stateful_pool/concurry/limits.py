"""Limits shared by every worker of a pool, across processes: :class:`RateLimit`,
:class:`CallLimit` and :class:`ResourceLimit`, grouped in a :class:`LimitSet`.

The state lives in shared memory (a memfd, see ``src/limits/``) updated with atomic
compare-and-swap in Rust, so worker processes draw from one budget. A :class:`LimitSet` pickles
as a reference: unpickled in a worker process it maps the same memory (``shared=True``) or
makes a fresh table of its own (``shared=False``, per-worker limits).

Units of a :class:`ResourceLimit` are held through a lease recorded in the same memory with the
holding process (pid and start time): if that process dies holding them (killed inside the
``with`` block, say), a waiter refused by the limit gives them back (it looks every 50 ms while
it waits), and so does the supervisor when it sees a worker exit. This holds in every mode;
within one process, units come back when the acquisition ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import _core

__all__ = ["Acquisition", "CallLimit", "LimitSet", "RateLimit", "ResourceLimit", "RATE_ALGORITHMS"]

RATE_ALGORITHMS = ("token_bucket", "gcra", "leaky_bucket", "sliding_window", "fixed_window")
"""The algorithms a :class:`RateLimit` may use."""

_POLL = 0.05  # longest sleep between attempts of a refused acquire, seconds
_RESOURCE_POLL = 0.002  # sleep between attempts on a full resource limit (nothing predicts a release)


@dataclass(frozen=True)
class RateLimit:
    """At most ``capacity`` units of ``key`` per ``window_seconds``, by ``algorithm``:
    ``"token_bucket"`` (default: bursts up to ``capacity``, continuous refill), ``"gcra"``
    (the same traffic, one timestamp of state), ``"leaky_bucket"`` (evenly spaced, never
    bursting), ``"sliding_window"`` (weighted rolling window) or ``"fixed_window"``."""

    key: str
    window_seconds: float
    capacity: int
    algorithm: str = "token_bucket"

    def __post_init__(self) -> None:
        if self.algorithm not in RATE_ALGORITHMS:
            raise ValueError(f"algorithm must be one of {RATE_ALGORITHMS}, got {self.algorithm!r}")
        if not self.window_seconds > 0:
            raise ValueError(f"window_seconds must be positive, got {self.window_seconds}")
        if not (isinstance(self.capacity, int) and self.capacity >= 1):
            raise ValueError(f"capacity must be a positive integer, got {self.capacity!r}")

    def _spec(self) -> tuple[str, float, int]:
        return (self.algorithm, float(self.window_seconds), self.capacity)


@dataclass(frozen=True)
class CallLimit(RateLimit):
    """At most ``capacity`` calls per ``window_seconds``: a :class:`RateLimit` on the key
    ``"call_count"`` that every :meth:`LimitSet.acquire` takes one unit of."""

    key: str = "call_count"
    window_seconds: float = 1.0
    capacity: int = 1


@dataclass(frozen=True)
class ResourceLimit:
    """At most ``capacity`` units of ``key`` held at once (a semaphore shared by the pool):
    units are given back when the acquisition ends, or when the process holding them dies."""

    key: str
    capacity: int

    def __post_init__(self) -> None:
        if not (isinstance(self.capacity, int) and self.capacity >= 1):
            raise ValueError(f"capacity must be a positive integer, got {self.capacity!r}")

    def _spec(self) -> tuple[str, float, int]:
        return ("semaphore", 0.0, self.capacity)


Limit = RateLimit | ResourceLimit


class LimitSet:
    """A group of limits used together. ``shared=True`` (default): one budget for every worker
    of the pool, in every process; ``shared=False``: each worker gets its own copy. ``mode`` is
    accepted for compatibility (shared memory works in every mode).

    Inside a worker::

        with self.limits.acquire(requested={"tokens": 100}) as acq:
            used = call_api()
            acq.update(usage={"tokens": used})   # unused tokens go back to the budget
    """

    def __init__(self, limits: Iterable[Limit] = (), shared: bool = True, mode: str | None = None):
        self.limits: tuple[Limit, ...] = tuple(limits)
        keys = [limit.key for limit in self.limits]
        if len(set(keys)) != len(keys):
            raise ValueError(f"limit keys must be unique, got {keys}")
        for limit in self.limits:
            if not isinstance(limit, RateLimit | ResourceLimit):
                raise TypeError(f"not a limit: {limit!r}")
        self.shared = shared
        self.mode = mode
        self._index = {limit.key: i for i, limit in enumerate(self.limits)}
        self._table = _core.CoreLimits([limit._spec() for limit in self.limits]) if self.limits else None
        self._local = threading.local()

    @classmethod
    def coerce(cls, limits: LimitSet | Iterable[Limit] | None) -> LimitSet:
        """``limits`` as a :class:`LimitSet` (a list becomes a shared set)."""
        if isinstance(limits, LimitSet):
            return limits
        return cls(limits or ())

    # -- pickling: a reference to the same shared memory -------------------------------

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        table = self._table
        where = (table.pid, table.fd) if table is not None and self.shared else None
        return (_restore, (self.limits, self.shared, self.mode, where))

    # -- acquiring ----------------------------------------------------------------------

    def acquire(self, requested: Mapping[str, int] | None = None, *, timeout: float | None = None) -> Acquisition:
        """Waits until every requested limit grants its units, then returns the acquisition
        (a context manager). Every :class:`CallLimit` takes one unit; ``requested=None`` takes
        one unit of every limit. Raises :class:`TimeoutError` after ``timeout`` seconds; a
        request above a limit's capacity raises :class:`ValueError` at once."""
        wanted: dict[int, int] = {}
        for i, limit in enumerate(self.limits):
            if isinstance(limit, CallLimit) or requested is None:
                wanted[i] = 1
        for key, amount in (requested or {}).items():
            if key not in self._index:
                if not self.limits:
                    continue
                raise KeyError(f"no limit with key {key!r} (keys: {sorted(self._index)})")
            if not isinstance(amount, int) or amount < 0:
                raise ValueError(f"requested units must be a non-negative integer, got {key}={amount!r}")
            wanted[self._index[key]] = amount
            capacity = self.limits[self._index[key]].capacity
            if amount > capacity:  # checked before taking anything: waiting would never end
                raise ValueError(f"cannot acquire {amount} units from a limit of capacity {capacity}")
        acquisition = Acquisition(self, *self._take(wanted, timeout))
        self._open().append(acquisition)
        return acquisition

    def _take(
        self, wanted: dict[int, int], timeout: float | None
    ) -> tuple[list[tuple[int, int, int]], int, list[_core.CoreLease]]:
        table = self._table
        if table is None or not wanted:
            return [], _core.CoreLimits.now_ns(), []
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            grants: list[tuple[int, int, int]] = []
            leases: list[_core.CoreLease] = []
            wait = 0.0
            delay = 0.0
            at = 0
            for index, amount in wanted.items():
                if isinstance(self.limits[index], ResourceLimit):
                    # A lease: recorded with this process, given back if it dies holding it. A
                    # refused lease also gives back what dead holders held (every 50 ms).
                    lease = table.lease(index, amount)
                    if lease is None:
                        wait = _RESOURCE_POLL
                        break
                    leases.append(lease)
                    grants.append((index, amount, 0))
                    at = _core.CoreLimits.now_ns()
                    continue
                ok, seconds, token, at = table.try_acquire(index, amount)
                if not ok:
                    wait = seconds
                    break
                grants.append((index, amount, token))
                delay = max(delay, seconds)
            else:
                if delay > 0:
                    time.sleep(delay)  # a leaky bucket's slot
                return grants, at, leases
            for lease in leases:  # all or nothing: give back what was taken
                lease.release()
            for index, amount, token in grants:
                if isinstance(self.limits[index], RateLimit):
                    table.refund(index, amount, token)
            if deadline is not None and time.monotonic() + min(wait, _POLL) > deadline:
                raise TimeoutError(f"limits not granted within {timeout} s")
            time.sleep(min(max(wait, 0.0005), _POLL))

    def _open(self) -> list[Acquisition]:
        try:
            return self._local.open  # type: ignore[no-any-return]
        except AttributeError:
            self._local.open = []
            return self._local.open  # type: ignore[no-any-return]

    def release_open(self) -> None:
        """Ends every acquisition this thread still holds (the retry loop calls it between
        attempts, so a failed attempt never keeps resources while it waits)."""
        for acquisition in list(self._open()):
            acquisition.release()

    def available(self, key: str) -> int:
        """Units of ``key`` that would be granted now."""
        if self._table is None or key not in self._index:
            raise KeyError(f"no limit with key {key!r}")
        return self._table.available(self._index[key])

    def __len__(self) -> int:
        return len(self.limits)

    def __repr__(self) -> str:
        return f"LimitSet({list(self.limits)!r}, shared={self.shared})"


def _restore(limits: tuple[Limit, ...], shared: bool, mode: str | None, where: tuple[int, int] | None) -> LimitSet:
    """Unpickles a :class:`LimitSet`: maps the creator's memory, or makes a private table."""
    self = LimitSet.__new__(LimitSet)
    self.limits = limits
    self.shared = shared
    self.mode = mode
    self._index = {limit.key: i for i, limit in enumerate(limits)}
    self._local = threading.local()
    if where is None:
        self._table = _core.CoreLimits([limit._spec() for limit in limits]) if limits else None
    else:
        # In the creating process too, /proc/<pid>/fd/<fd> opens the same memory.
        self._table = _core.CoreLimits.attach(*where)
    return self


class Acquisition:
    """Units granted by :meth:`LimitSet.acquire`. Resource units are held until
    :meth:`release` (the end of the ``with`` block); rate units are spent, except what
    :meth:`update` reports as unused."""

    def __init__(
        self,
        limits: LimitSet,
        grants: list[tuple[int, int, int]],
        at_ns: int,
        leases: list[_core.CoreLease] | None = None,
    ):
        self._limits = limits
        self._grants = grants
        self._leases = leases or []
        self._released = False
        self.at_ns = at_ns
        """When the last limit granted (``CLOCK_MONOTONIC`` ns, comparable across processes)."""

    @property
    def granted(self) -> dict[str, int]:
        """The units granted, by key."""
        return {self._limits.limits[i].key: amount for i, amount, _ in self._grants}

    def update(self, usage: Mapping[str, int]) -> None:
        """Reports the units of rate limits actually used; the rest of the request goes back
        to the budget. Using more than requested raises :class:`ValueError`."""
        table = self._limits._table
        for key, used in usage.items():
            for n, (i, amount, token) in enumerate(self._grants):
                if self._limits.limits[i].key != key:
                    continue
                if used > amount:
                    raise ValueError(f"usage of {key!r} ({used}) exceeds what was requested ({amount})")
                if isinstance(self._limits.limits[i], RateLimit) and table is not None and used < amount:
                    table.refund(i, amount - used, token)
                    self._grants[n] = (i, used, token)
                break
            else:
                raise KeyError(f"{key!r} was not acquired")

    def release(self) -> None:
        """Gives resource units back (idempotent)."""
        if self._released:
            return
        self._released = True
        for lease in self._leases:
            lease.release()
        try:
            self._limits._open().remove(self)
        except ValueError:
            pass

    def __enter__(self) -> Acquisition:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
