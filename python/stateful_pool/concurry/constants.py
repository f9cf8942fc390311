"""concurry 0.13's enumerations: :class:`ExecutionMode`, :class:`LoadBalancingAlgorithm`,
:class:`RateLimitAlgorithm`, :class:`RateWindow`, :class:`RetryAlgorithm`,
:class:`PollingAlgorithm` and :class:`ReturnWhen`.

Each is a ``str`` enum whose value is the member's name (``ExecutionMode.Threads == "Threads"``)
and which accepts, case-insensitively and ignoring ``_``/``-``/spaces, the member name, its
concurry aliases and the lowercase names this package documents: ``ExecutionMode("thread")``,
``LoadBalancingAlgorithm("round_robin")``, ``RateLimitAlgorithm("token_bucket")``. A member also
compares equal to any of those strings.
"""

from __future__ import annotations

import enum
import re
from typing import Any

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ExecutionMode",
    "LoadBalancingAlgorithm",
    "PollingAlgorithm",
    "RateLimitAlgorithm",
    "RateWindow",
    "RetryAlgorithm",
    "ReturnWhen",
]


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text).lower()


class _NamedEnum(str, enum.Enum):  # noqa: UP042 - StrEnum's str() differs in 3.11; values are names anyway
    """A str enum matched by normalised name or alias (see the module doc)."""

    @classmethod
    def _lookup(cls) -> dict[str, Any]:
        table: dict[str, Any] = {}
        for member in cls:
            table[_norm(member.name)] = member
            for alias in _ALIASES.get(cls.__name__, {}).get(member.name, ()):
                table[_norm(alias)] = member
        return table

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            return cls._lookup().get(_norm(value))
        return None

    @classmethod
    def from_str(cls, value: Any) -> Any:
        """``value`` (a member, or any accepted spelling) as a member; ``ValueError`` if none."""
        try:
            return cls(value)
        except ValueError:
            names = sorted(_norm(k) for k in cls._lookup())
            raise ValueError(
                f"Could not find enum with value {value!r} in {cls.__name__} (accepted: {names})"
            ) from None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str) and not isinstance(other, enum.Enum):
            return type(self)._missing_(other) is self
        return self is other

    def __hash__(self) -> int:
        return hash(self.value)

    def __str__(self) -> str:
        return str(self.value)

    @property
    def short(self) -> str:
        """The lowercase name this package documents (``"thread"``, ``"token_bucket"``)."""
        return _LOWER.get(self, str(self.value).lower())


_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "ExecutionMode": {
        "Sync": ("synchronous",),
        "Asyncio": ("async", "asynchronous"),
        "Threads": ("thread",),
        "Processes": ("proc", "procs", "process"),
    },
    "LoadBalancingAlgorithm": {
        "RoundRobin": ("rr",),
        "LeastActiveLoad": ("active", "least_active"),
        "LeastTotalLoad": ("total", "least_total"),
        "Random": ("rand",),
    },
    "RateLimitAlgorithm": {
        "TokenBucket": ("token",),
        "LeakyBucket": ("leaky",),
        "SlidingWindow": ("sliding",),
        "FixedWindow": ("fixed",),
        "GCRA": ("Generic cell rate algorithm", "Generic cell rate"),
    },
    "RateWindow": {
        name: tuple(f"{p}{u}{s}" for u in units for p in ("", "per_") for s in ("", "s"))
        for name, units in {
            "Secondly": ("second", "sec"),
            "Minutely": ("minute", "min"),
            "Hourly": ("hour", "hr"),
            "Daily": ("day",),
            "Weekly": ("week", "wk"),
        }.items()
    },
    "RetryAlgorithm": {"Fixed": ("constant",)},
    "ReturnWhen": {"ALL_COMPLETED": ("all",), "FIRST_COMPLETED": ("first",), "FIRST_EXCEPTION": ("exception",)},
}


class ExecutionMode(_NamedEnum):
    """Where workers run: ``Sync``, ``Asyncio``, ``Threads``, ``Processes``, ``Ray``; ``Auto``
    lets the pool pick (threads)."""

    Auto = "Auto"
    Sync = "Sync"
    Asyncio = "Asyncio"
    Threads = "Threads"
    Processes = "Processes"
    Ray = "Ray"


class LoadBalancingAlgorithm(_NamedEnum):
    """How a pool picks a worker."""

    RoundRobin = "RoundRobin"
    LeastActiveLoad = "LeastActiveLoad"
    LeastTotalLoad = "LeastTotalLoad"
    Random = "Random"


class RateLimitAlgorithm(_NamedEnum):
    """How a :class:`~.limits.RateLimit` spends its window."""

    TokenBucket = "TokenBucket"
    LeakyBucket = "LeakyBucket"
    SlidingWindow = "SlidingWindow"
    FixedWindow = "FixedWindow"
    GCRA = "GCRA"


class RateWindow(_NamedEnum):
    """Named windows for ``RateLimit(window=...)``: ``"minute"``, ``"per_hour"``, ``"days"``."""

    Secondly = "Secondly"
    Minutely = "Minutely"
    Hourly = "Hourly"
    Daily = "Daily"
    Weekly = "Weekly"

    def to_seconds(self) -> float:
        """The window's length in seconds."""
        return {"Secondly": 1.0, "Minutely": 60.0, "Hourly": 3600.0, "Daily": 86400.0, "Weekly": 604800.0}[self.value]


class RetryAlgorithm(_NamedEnum):
    """Backoff between retries."""

    Linear = "Linear"
    Exponential = "Exponential"
    Fibonacci = "Fibonacci"
    Fixed = "Fixed"


class PollingAlgorithm(_NamedEnum):
    """How :func:`wait`/:func:`gather` poll (accepted; completion is event-driven here)."""

    Fixed = "Fixed"
    Adaptive = "Adaptive"
    Exponential = "Exponential"
    Progressive = "Progressive"


class ReturnWhen(_NamedEnum):
    """When :func:`wait` returns."""

    ALL_COMPLETED = "ALL_COMPLETED"
    FIRST_COMPLETED = "FIRST_COMPLETED"
    FIRST_EXCEPTION = "FIRST_EXCEPTION"


ALL_COMPLETED = ReturnWhen.ALL_COMPLETED
FIRST_COMPLETED = ReturnWhen.FIRST_COMPLETED
FIRST_EXCEPTION = ReturnWhen.FIRST_EXCEPTION

_LOWER: dict[Any, str] = {
    ExecutionMode.Threads: "thread",
    ExecutionMode.Processes: "process",
    LoadBalancingAlgorithm.RoundRobin: "round_robin",
    LoadBalancingAlgorithm.LeastActiveLoad: "active",
    LoadBalancingAlgorithm.LeastTotalLoad: "total",
    LoadBalancingAlgorithm.Random: "random",
    RateLimitAlgorithm.TokenBucket: "token_bucket",
    RateLimitAlgorithm.LeakyBucket: "leaky_bucket",
    RateLimitAlgorithm.SlidingWindow: "sliding_window",
    RateLimitAlgorithm.FixedWindow: "fixed_window",
    RateLimitAlgorithm.GCRA: "gcra",
}
