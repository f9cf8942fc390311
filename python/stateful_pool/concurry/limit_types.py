"""The limits of a :class:`~.limits.LimitSet`: :class:`RateLimit` (``window=`` seconds or a
name like ``"minute"``; capacities may be fractional), :class:`CallLimit` and
:class:`ResourceLimit`. Their state lives in the set's shared memory, not in them."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

from ._frozen import Frozen
from .constants import RateLimitAlgorithm, RateWindow

__all__ = ["CallLimit", "RateLimit", "ResourceLimit"]

_log = logging.getLogger("stateful_pool.concurry.limits")

_NO_WINDOW = object()


def _window_seconds(key: str, window: Any, per: Any, window_seconds: Any, stacklevel: int) -> float:
    """The window of a rate limit from ``window=`` (concurry 0.13's keyword), its alias
    ``per=`` or the older ``window_seconds=`` (a ``DeprecationWarning`` at the caller's line
    ``stacklevel`` frames up, as concurry 0.13 warns): seconds, or a :class:`RateWindow` name."""
    named = (("window", window), ("per", per), ("window_seconds", window_seconds))
    given = [name for name, v in named if v is not None]
    if len(given) > 1:
        raise ValueError(
            f"RateLimit {key!r}: pass one of window= (per= is its alias, window_seconds= deprecated), got {given}"
        )
    if window_seconds is not None:
        warnings.warn(
            f"RateLimit {key!r}: window_seconds= is deprecated, use window= (same value)",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        value: Any = window_seconds
    elif per is not None:
        value = per
    elif window is not None:
        value = window
    else:
        raise TypeError(f"RateLimit {key!r} needs window= (seconds or a name like 'minute')")
    if isinstance(value, str):
        value = RateWindow.from_str(value).to_seconds()
    elif isinstance(value, RateWindow):
        value = value.to_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"window must be positive, got {value!r}")
    return float(value)


def _capacity(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} capacity must be a number >= 1, got {value!r}")
    if not value >= 1:
        raise ValueError(f"{what} capacity must be >= 1, got {value!r}")
    if value != int(value):
        raise ValueError(f"{what} capacity must be a whole number of units here, got {value!r}")
    return int(value)


def _rate_capacity(value: Any, what: str) -> int | float:
    """A rate limit's capacity: a positive number (fractional and infinite ones too, numeric
    strings and ``True`` coerced). The core counts a fractional one in fixed point."""
    if isinstance(value, bool):
        if not value:
            raise ValueError(f"{what} capacity must be > 0, got {value!r}")
        value = 1
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{what} capacity must be a number, got {value!r}") from None
    if not isinstance(value, int | float) or math.isnan(value) or not value > 0:
        raise ValueError(f"{what} capacity must be a number > 0, got {value!r}")
    return value


class RateLimit(Frozen):
    """At most ``capacity`` units of ``key`` per ``window`` seconds (or a name: ``"minute"``,
    ``"per_hour"``...; ``window_seconds=`` is the older spelling), by ``algorithm``: token
    bucket (default: bursts up to ``capacity``, continuous refill), ``"gcra"`` (the same traffic,
    one timestamp of state), ``"leaky_bucket"`` (concurry's: a queue of ``capacity`` units
    draining at ``capacity / window``, granted at once while it fits), ``"leaky_bucket_queue"``
    (a shaper: grants evenly spaced, never bursting, a grant waiting for its slot),
    ``"sliding_window"`` (weighted rolling window) or ``"fixed_window"``; a
    :class:`RateLimitAlgorithm` member works too."""

    def __init__(
        self,
        key: str,
        window: float | str | None = None,
        capacity: float | None = None,
        algorithm: str = "token_bucket",
        *,
        per: float | str | None = None,
        window_seconds: float | None = None,
    ):
        if capacity is None:
            raise TypeError(f"RateLimit {key!r} needs capacity=")
        self.key = key
        # The caller's line: two frames up, or three from CallLimit's __init__.
        stacklevel = 4 if isinstance(self, CallLimit) else 3
        self.window = self.window_seconds = _window_seconds(key, window, per, window_seconds, stacklevel)
        self.capacity = _rate_capacity(capacity, type(self).__name__)
        self.algorithm = RateLimitAlgorithm.from_str(algorithm)

    def _spec(self) -> tuple[str, float, float]:
        return (self.algorithm.short, float(self.window), float(self.capacity))

    def check_amount(self, amount: float) -> None:
        """Raises :class:`ValueError` for a fraction of a limit whose capacity is whole (the
        core counts such a limit in whole units)."""
        if float(self.capacity).is_integer() and not float(amount).is_integer():
            raise ValueError(
                f"fractional amount {amount} of {self.key!r}: a limit with an integer capacity counts integer units"
            )

    def can_acquire(self, requested: float) -> bool:
        """Whether ``requested`` units could ever be granted (they fit the capacity)."""
        self.check_amount(requested)
        return 0 <= requested <= self.capacity

    def validate_usage(self, requested: float, used: float) -> None:
        """Warns when ``used`` exceeds ``requested`` (the units are spent already)."""
        if used > requested:
            _log.warning("usage of %r (%s) exceeds requested amount (%s)", self.key, used, requested)

    def get_stats(self) -> dict[str, Any]:
        """The limit's configuration."""
        return {"key": self.key, "capacity": self.capacity, "window": self.window, "algorithm": str(self.algorithm)}

    def _fields(self) -> tuple[Any, ...]:
        return (type(self), self.key, self.window, self.capacity, self.algorithm)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RateLimit) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(key={self.key!r}, window={self.window}, capacity={self.capacity}, algorithm={self.algorithm})"


class CallLimit(RateLimit):
    """At most ``capacity`` calls per ``window`` seconds: a :class:`RateLimit` on the key
    ``"call_count"`` that every :meth:`LimitSet.acquire` takes one unit of."""

    def __init__(
        self,
        window: float | str | None = None,
        capacity: float = 1,
        algorithm: str = "token_bucket",
        *,
        key: str = "call_count",
        per: float | str | None = None,
        window_seconds: float | None = None,
    ):
        if key != "call_count":
            raise ValueError(f"a CallLimit's key is always 'call_count', got {key!r}")
        if window is None and per is None and window_seconds is None:
            window = 1.0
        super().__init__("call_count", window, capacity, algorithm, per=per, window_seconds=window_seconds)

    def validate_usage(self, requested: float, used: float) -> None:
        """An implicit acquisition (one unit) must be used exactly; an explicit request may use
        from 0 to what it requested."""
        if used < 0:
            raise ValueError(f"usage of 'call_count' cannot be negative, got {used}")
        if requested == 1 and used != 1:
            raise ValueError(f"usage of 'call_count' for an implicit acquisition must be 1, got {used}")


class ResourceLimit(Frozen):
    """At most ``capacity`` units of ``key`` held at once (a semaphore shared by the pool):
    units are given back when the acquisition ends, or when the process holding them dies."""

    def __init__(self, key: str, capacity: int):
        self.key = key
        self.capacity = _capacity(capacity, "ResourceLimit")
        self._current_usage = 0

    def _spec(self) -> tuple[str, float, float]:
        return ("semaphore", 0.0, float(self.capacity))

    def can_acquire(self, requested: int) -> bool:
        """Whether ``requested`` more units fit next to those counted in ``_current_usage``."""
        return 0 <= requested <= self.capacity - self._current_usage

    def validate_usage(self, requested: float, used: float) -> None:
        """Nothing to check: resource units come back whole when released."""

    def get_stats(self) -> dict[str, Any]:
        """Capacity, usage counted on this object, availability and utilization."""
        used = self._current_usage
        return {
            "key": self.key,
            "capacity": self.capacity,
            "current_usage": used,
            "available": self.capacity - used,
            "utilization": used / self.capacity,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ResourceLimit) and (self.key, self.capacity) == (other.key, other.capacity)

    def __hash__(self) -> int:
        return hash((ResourceLimit, self.key, self.capacity))

    def __repr__(self) -> str:
        return f"ResourceLimit(key={self.key!r}, capacity={self.capacity})"
