"""Limits shared by every worker of a pool, across processes: :class:`RateLimit`,
:class:`CallLimit` and :class:`ResourceLimit`, grouped in a :class:`LimitSet`.

The state lives in shared memory (a memfd, see ``src/limits/``) updated with atomic
compare-and-swap in Rust, so worker processes draw from one budget. :meth:`LimitSet.acquire` is
one call into the core for every limit of the set, all or nothing; a refused caller sleeps on a
futex in that memory (outside the interpreter) until a holder gives units back or a rate limit
refills. A :class:`LimitSet` pickles
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
from collections.abc import Callable, Iterable, Mapping
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

RATE_ALGORITHMS = ("token_bucket", "gcra", "leaky_bucket", "leaky_bucket_queue", "sliding_window", "fixed_window")
"""The algorithms a :class:`RateLimit` may use (or a :class:`RateLimitAlgorithm` member)."""

_log = logging.getLogger(__name__)


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
        self._warned: set[str] = set()

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

    def acquire(self, requested: Mapping[str, float] | None = None, *, timeout: float | None = None) -> Acquisition:
        """Waits until every requested limit grants its units, then returns the acquisition
        (a context manager). A :class:`CallLimit` or :class:`ResourceLimit` not in ``requested``
        takes one unit, a :class:`RateLimit` not in it nothing (with no request at all, a set
        holding rate limits raises :class:`ValueError`), as in concurry 0.13. All or nothing: one
        call into the core, which parks on the shared memory until units come back (no polling)
        and holds nothing unless every limit granted. Raises :class:`TimeoutError` after
        ``timeout`` seconds; a request above a limit's capacity raises :class:`ValueError` at
        once."""
        requests, must_update = self._requests(requested)
        acquisition = self._grant(requests, must_update, timeout)
        if acquisition is None:
            raise TimeoutError(f"Failed to acquire all limits within {timeout} s (limits not granted)")
        self._open().append(acquisition)
        return acquisition

    def try_acquire(self, requested: Mapping[str, float] | None = None) -> Acquisition:
        """:meth:`acquire` without waiting: the acquisition's ``successful`` tells whether the
        limits granted (a failed one holds nothing)."""
        requests, must_update = self._requests(requested)
        acquisition = self._grant(requests, must_update, 0)
        if acquisition is None:
            return Acquisition(self, None, {}, successful=False)
        self._open().append(acquisition)
        return acquisition

    async def async_acquire(
        self, requested: Mapping[str, float] | None = None, *, timeout: float | None = None
    ) -> Acquisition:
        """:meth:`acquire` for ``async`` code: the core waits on a thread of the loop's
        executor, so the event loop keeps running. Raises :class:`TimeoutError` after
        ``timeout`` seconds; cancelled, it stops the wait and holds nothing."""
        requests, must_update = self._requests(requested)
        acquisition = self._grant(requests, must_update, 0)
        if acquisition is None and timeout != 0:
            stop = threading.Event()
            waiting = asyncio.get_running_loop().run_in_executor(
                None, self._grant, requests, must_update, timeout, stop.is_set
            )
            try:
                acquisition = await asyncio.shield(waiting)
            except asyncio.CancelledError:
                stop.set()  # the core gives up within one slice; a grant made meanwhile goes back
                waiting.add_done_callback(_release_unclaimed)
                raise
        if acquisition is None:
            raise TimeoutError(f"Failed to acquire all limits within {timeout} s (limits not granted)")
        self._open().append(acquisition)
        return acquisition

    def _requests(self, requested: Mapping[str, float] | None) -> tuple[list[tuple[int, float]], frozenset[str]]:
        """``requested`` as ``(index, amount)`` for the core, and the keys that must be
        updated with :meth:`Acquisition.update` (concurry's rule: rate limits requested explicitly, except
        a :class:`CallLimit` asked for its implicit single unit)."""
        wanted: dict[int, float] = {}
        for i, limit in enumerate(self.limits):
            # concurry's rule: a CallLimit or ResourceLimit not named takes one unit; a RateLimit
            # not named takes nothing, and without any request at all it is an error.
            if isinstance(limit, CallLimit | ResourceLimit):
                wanted[i] = 1
            elif not requested:
                raise ValueError(
                    f"Must specify requested amount for RateLimit {limit.key!r}: acquire(requested={{...}})"
                )
        must_update = set()
        for key, amount in (requested or {}).items():
            if key not in self._index:
                if self.limits and key not in self._warned:  # once per key and set, as concurry does
                    self._warned.add(key)
                    _log.warning(
                        "Unknown limit key %r in acquisition request. This key will be ignored. "
                        "Available limit keys: %s",
                        key,
                        list(self._index),
                    )
                continue
            if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount >= 0:
                raise ValueError(f"requested units must be a non-negative number, got {key}={amount!r}")
            limit = self.limits[self._index[key]]
            if amount > limit.capacity:  # checked before taking anything: waiting would never end
                raise ValueError(
                    f"requested {amount} exceeds capacity {limit.capacity} of limit {key!r}: it can never be fulfilled"
                )
            if isinstance(limit, RateLimit):
                limit.check_amount(amount)
                if not (isinstance(limit, CallLimit) and amount == 1):
                    must_update.add(key)
            wanted[self._index[key]] = amount
        return list(wanted.items()), frozenset(must_update)

    def _grant(
        self,
        requests: list[tuple[int, float]],
        must_update: frozenset[str],
        timeout: float | None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Acquisition | None:
        """One call into the core for every limit of ``requests``; ``None`` when they did not
        grant within ``timeout`` (or ``cancelled()`` said to stop): then nothing is held."""
        if self._table is None or not requests:
            return Acquisition(self, None, {}, must_update=must_update)
        grant = self._table.acquire(requests, timeout, cancelled)
        if grant is None:
            return None
        granted = {self.limits[i].key: amount for i, amount in requests}
        return Acquisition(self, grant, granted, must_update=must_update)

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
            acquisition._end()

    def available(self, key: str) -> int | float:
        """Units of ``key`` that would be granted now (a float for a fractional capacity)."""
        if self._table is None or key not in self._index:
            raise KeyError(f"no limit with key {key!r}")
        return self._table.available(self._index[key])

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
    self._warned = set()
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
    used: int | float | None = None
    """The usage reported by :meth:`Acquisition.update` (``None`` before)."""

    @property
    def key(self) -> str:
        """The limit's key."""
        return self.limit.key


def _release_unclaimed(waiting: asyncio.Future[Acquisition | None]) -> None:
    """Gives back a grant made for an ``async_acquire`` cancelled meanwhile."""
    if not waiting.cancelled() and waiting.exception() is None and (acquisition := waiting.result()) is not None:
        acquisition._end()


class Acquisition:
    """Units granted by :meth:`LimitSet.acquire`. Resource units are held until
    :meth:`release` (the end of the ``with`` block); rate units are spent, except what
    :meth:`update` reports as unused. As in concurry 0.13, every rate limit requested explicitly
    must be updated before the acquisition ends: else :meth:`release` raises
    :class:`RuntimeError` (after giving everything back)."""

    def __init__(
        self,
        limits: LimitSet,
        grant: _core.CoreGrant | None,
        granted: dict[str, int | float],
        *,
        successful: bool = True,
        must_update: frozenset[str] = frozenset(),
    ):
        self._must_update = set(must_update)
        self._warned: set[str] = set()
        self._used: dict[str, int | float] = {}
        self._granted = granted
        self.successful = successful
        """Whether the limits granted (false only for a refused :meth:`LimitSet.try_acquire`)."""
        self.config = dict(limits.config)
        """A copy of the :class:`LimitSet`'s ``config`` (changing it changes only this one)."""
        self._limits = limits
        self._grant = grant
        self._released = False
        self.at_ns = grant.at_ns if grant is not None else _core.CoreLimits.now_ns()
        """When the last limit granted (``CLOCK_MONOTONIC`` ns, comparable across processes)."""

    @property
    def granted(self) -> dict[str, int | float]:
        """The units granted, by key."""
        return dict(self._granted)

    @property
    def acquisitions(self) -> dict[str, LimitAcquisition]:
        """Per key, what was granted (``requested``) and by which ``limit``."""
        return {
            key: LimitAcquisition(self._limits[key], amount, self._used.get(key))
            for key, amount in self._granted.items()
        }

    def update(self, usage: Mapping[str, int | float]) -> None:
        """Reports the units of rate limits actually used; the rest of the request goes back
        to the budget when the acquisition ends. Using more than requested only warns (the
        units are spent already); negative usage raises :class:`ValueError`; a key not acquired
        here is ignored with a warning (as in concurry)."""
        if self._released:
            raise RuntimeError("Cannot update an already released acquisition")
        for key, used in usage.items():
            if key not in self._granted:
                if key not in self._warned:  # once per key, as concurry does
                    self._warned.add(key)
                    _log.warning(
                        "Cannot update limit %r: not acquired in this LimitSet. This key will be ignored. "
                        "Available keys: %s",
                        key,
                        list(self._granted),
                    )
                continue
            if used < 0:
                raise ValueError(f"usage of {key!r} cannot be negative, got {used}")
            self._limits[key].validate_usage(self._granted[key], used)
            self._must_update.discard(key)
            self._used[key] = used

    def release(self) -> None:
        """Gives resource units and unused rate units back (idempotent); then raises
        :class:`RuntimeError` if a rate limit requested explicitly was never updated."""
        if self._end() and self.successful and self._must_update:
            raise RuntimeError(f"Not all limits in the LimitSet were updated. Missing: {sorted(self._must_update)}")

    def _end(self) -> bool:
        """Gives everything back without checking updates; ``False`` if it was already."""
        if self._released:
            return False
        self._released = True
        grant, self._grant = self._grant, None
        if grant is not None:
            try:
                for key, used in self._used.items():
                    limit = self._limits[key]
                    if isinstance(limit, RateLimit) and used < self._granted[key]:
                        grant.refund(self._limits._index[key], self._granted[key] - used)
            finally:
                grant.release()
        try:
            self._limits._open().remove(self)
        except ValueError:
            pass
        return True

    def __enter__(self) -> Acquisition:
        return self

    async def __aenter__(self) -> Acquisition:
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        self.__exit__(exc_type, *exc)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.release()
        else:
            self._end()  # the block's own error is what the caller needs to see
