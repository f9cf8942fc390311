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

import asyncio
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, overload

from .. import _core
from .constants import ExecutionMode
from .limit_types import CallLimit, RateLimit, ResourceLimit

__all__ = [
    "RATE_ALGORITHMS",
    "Acquisition",
    "CallLimit",
    "LimitAcquisition",
    "LimitSet",
    "RateLimit",
    "ResourceLimit",
]

RATE_ALGORITHMS = ("token_bucket", "gcra", "leaky_bucket", "sliding_window", "fixed_window")
"""The algorithms a :class:`RateLimit` may use (or a :class:`RateLimitAlgorithm` member)."""

_log = logging.getLogger(__name__)

_POLL = 0.05  # longest sleep between attempts of a refused acquire, seconds
_RESOURCE_POLL = 0.002  # sleep between attempts on a full resource limit (nothing predicts a release)

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

    def __init__(
        self,
        limits: Iterable[Limit] = (),
        shared: bool = True,
        mode: str | None = None,
        config: Mapping[str, Any] | None = None,
    ):
        if mode is not None:
            ExecutionMode.from_str(mode)  # a clear error for a mode that does not exist
        self.config: dict[str, Any] = dict(config or {})
        """Free-form data handed to every :class:`Acquisition` (``acq.config``)."""
        self.limits: tuple[Limit, ...] = tuple(limits)
        keys = [limit.key for limit in self.limits]
        if len(set(keys)) != len(keys):
            raise ValueError(f"Duplicate limit key: limit keys must be unique, got {keys}")
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
        return (_restore, (self.limits, self.shared, self.mode, where, self.config))

    # -- acquiring ----------------------------------------------------------------------

    def acquire(self, requested: Mapping[str, int] | None = None, *, timeout: float | None = None) -> Acquisition:
        """Waits until every requested limit grants its units, then returns the acquisition
        (a context manager). A :class:`CallLimit` or :class:`ResourceLimit` not in ``requested``
        takes one unit, a :class:`RateLimit` not in it nothing (with no request at all, a set
        holding rate limits raises :class:`ValueError`), as in concurry 0.13. Raises
        :class:`TimeoutError` after ``timeout`` seconds; a request above a limit's capacity
        raises :class:`ValueError` at once."""
        wanted: dict[int, int] = {}
        for i, limit in enumerate(self.limits):
            # concurry's rule: a CallLimit or ResourceLimit not named takes one unit; a RateLimit
            # not named takes nothing, and without any request at all it is an error.
            if isinstance(limit, CallLimit | ResourceLimit):
                wanted[i] = 1
            elif not requested:
                raise ValueError(
                    f"Must specify requested amount for RateLimit {limit.key!r}: acquire(requested={{...}})"
                )
        for key, amount in (requested or {}).items():
            if key not in self._index:
                if self.limits:
                    _log.warning("Unknown limit key %r (keys: %s): ignored", key, sorted(self._index))
                continue
            if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount >= 0:
                raise ValueError(f"requested units must be a non-negative number, got {key}={amount!r}")
            limit = self.limits[self._index[key]]
            wanted[self._index[key]] = limit._units(amount) if isinstance(limit, RateLimit) else int(amount)
            capacity = limit.capacity
            if amount > capacity:  # checked before taking anything: waiting would never end
                raise ValueError(
                    f"requested {amount} exceeds capacity {capacity} of limit {key!r}: it can never be fulfilled"
                )
        explicit = {key for key in (requested or {}) if key in self._index and isinstance(self[key], RateLimit)}
        acquisition = Acquisition(self, *self._take(wanted, timeout), must_update=frozenset(explicit))
        self._open().append(acquisition)
        return acquisition

    def try_acquire(self, requested: Mapping[str, int] | None = None) -> Acquisition:
        """:meth:`acquire` without waiting: the acquisition's ``successful`` tells whether the
        limits granted (a failed one holds nothing)."""
        try:
            return self.acquire(requested, timeout=0)
        except TimeoutError:
            return Acquisition(self, [], _core.CoreLimits.now_ns(), successful=False)

    async def async_acquire(
        self, requested: Mapping[str, int] | None = None, *, timeout: float | None = None
    ) -> Acquisition:
        """:meth:`acquire` for ``async`` code: waits with ``asyncio.sleep`` (the event loop
        keeps running). Raises :class:`TimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while True:
            acquisition = self.try_acquire(requested)
            if acquisition.successful:
                return acquisition
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError(f"Failed to acquire all limits within {timeout} s (limits not granted)")
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL)

    def get_stats(self) -> dict[str, dict[str, Any]]:
        """Per key: the limit's configuration and the units ``available`` now."""
        stats = {}
        for limit in self.limits:
            entry = limit.get_stats()
            entry["available"] = self.available(limit.key)
            if isinstance(limit, ResourceLimit):
                entry["current_usage"] = limit.capacity - entry["available"]
                entry["utilization"] = entry["current_usage"] / limit.capacity
            stats[limit.key] = entry
        return stats

    @overload
    def __getitem__(self, key: str) -> Limit: ...

    @overload
    def __getitem__(self, key: int) -> LimitSet: ...

    def __getitem__(self, key: str | int) -> Limit | LimitSet:
        """``limits["tokens"]``: the limit of that key; ``limits[0]``: this set (a worker's
        limits read like concurry's pool of limit sets)."""
        if isinstance(key, int):
            if key not in (0, -1):
                raise IndexError(f"a LimitSet is a pool of one set, got index {key}")
            return self
        if key not in self._index:
            raise KeyError(f"no limit with key {key!r} (keys: {sorted(self._index)})")
        return self.limits[self._index[key]]

    def __contains__(self, key: object) -> bool:
        return key in self._index

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
                raise TimeoutError(f"Failed to acquire all limits within {timeout} s (limits not granted)")
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

    def available(self, key: str) -> int | float:
        """Units of ``key`` that would be granted now (a float for a fractional capacity)."""
        if self._table is None or key not in self._index:
            raise KeyError(f"no limit with key {key!r}")
        return _amount(self.limits[self._index[key]], self._table.available(self._index[key]))

    def __len__(self) -> int:
        return len(self.limits)

    def __repr__(self) -> str:
        return f"LimitSet({list(self.limits)!r}, shared={self.shared})"


def _restore(
    limits: tuple[Limit, ...],
    shared: bool,
    mode: str | None,
    where: tuple[int, int] | None,
    config: dict[str, Any] | None = None,
) -> LimitSet:
    """Unpickles a :class:`LimitSet`: maps the creator's memory, or makes a private table."""
    self = LimitSet.__new__(LimitSet)
    self.config = dict(config or {})
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


@dataclass(frozen=True)
class LimitAcquisition:
    """One limit's part of an :class:`Acquisition`."""

    limit: Limit
    requested: int | float
    used: int | None = None
    """The usage reported by :meth:`Acquisition.update` (``None`` before)."""

    @property
    def key(self) -> str:
        """The limit's key."""
        return self.limit.key


def _amount(limit: Limit, units: int) -> int | float:
    """Core units of ``limit`` as the amount the caller speaks in."""
    scale = getattr(limit, "_scale", 1)
    return units if scale == 1 else units / scale


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
        *,
        successful: bool = True,
        must_update: frozenset[str] = frozenset(),
    ):
        self._must_update = set(must_update)
        self._used: dict[str, int] = {}
        self._requested = {i: amount for i, amount, _ in grants}
        self.successful = successful
        """Whether the limits granted (false only for a refused :meth:`LimitSet.try_acquire`)."""
        self.config = dict(limits.config)
        """A copy of the :class:`LimitSet`'s ``config`` (changing it changes only this one)."""
        self._limits = limits
        self._grants = grants
        self._leases = leases or []
        self._released = False
        self.at_ns = at_ns
        """When the last limit granted (``CLOCK_MONOTONIC`` ns, comparable across processes)."""

    @property
    def granted(self) -> dict[str, int | float]:
        """The units granted, by key."""
        limits = self._limits.limits
        return {limits[i].key: _amount(limits[i], amount) for i, amount, _ in self._grants}

    @property
    def acquisitions(self) -> dict[str, LimitAcquisition]:
        """Per key, what was granted (``requested``) and by which ``limit``."""
        limits = self._limits.limits
        return {
            limits[i].key: LimitAcquisition(
                limits[i], _amount(limits[i], self._requested.get(i, amount)), self._used.get(limits[i].key)
            )
            for i, amount, _ in self._grants
        }

    def update(self, usage: Mapping[str, int]) -> None:
        """Reports the units of rate limits actually used; the rest of the request goes back
        to the budget. Using more than requested only warns (the units are spent already);
        negative usage raises :class:`ValueError`. Every rate limit requested explicitly should be
        updated before the ``with`` block ends (else a warning; concurry raises)."""
        table = self._limits._table
        for key, used in usage.items():
            if used < 0:
                raise ValueError(f"usage of {key!r} cannot be negative, got {used}")
            self._must_update.discard(key)
            self._used[key] = used
            for n, (i, amount, token) in enumerate(self._grants):
                limit = self._limits.limits[i]
                if limit.key != key:
                    continue
                units = round(used * getattr(limit, "_scale", 1))
                if units > amount:
                    limit.validate_usage(_amount(limit, amount), used)  # warns: already spent
                if isinstance(limit, RateLimit) and table is not None and units < amount:
                    table.refund(i, amount - units, token)
                    self._grants[n] = (i, units, token)
                break
            else:
                if key not in self._limits._index:
                    _log.warning(
                        "Unknown limit key %r in update() (keys: %s): ignored", key, sorted(self._limits._index)
                    )
                    continue
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

    async def __aenter__(self) -> Acquisition:
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        self.__exit__(exc_type, *exc)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.release()
        if exc_type is None and self._must_update:
            # concurry 0.13 raises RuntimeError here; the worker-pool guide's own example acquires
            # tokens without update(), so this package warns (the full request stays spent).
            _log.warning(
                "Not all limits in the LimitSet were updated. Missing: %s (call acq.update(usage={...}) "
                "for every rate limit requested explicitly; the full request counts as used)",
                sorted(self._must_update),
            )
