"""Retries that run inside the worker process: ``num_retries``, ``retry_on`` (exception types
or predicates), ``retry_algorithm`` with ``retry_wait`` and ``retry_jitter``, and
``retry_until`` to validate a result."""

from __future__ import annotations

import inspect
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RetryConfig", "RetryValidationError", "call_with_retries"]

ALGORITHMS = ("exponential", "linear", "fixed")


class RetryValidationError(Exception):
    """Every attempt returned a result that ``retry_until`` rejected."""

    def __init__(self, method_name: str, attempts: int, result: Any):
        super().__init__(f"{method_name}() returned an invalid result after {attempts} attempts: {result!r}")
        self.method_name = method_name
        self.attempts = attempts
        self.result = result

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), (self.method_name, self.attempts, self.result))


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, type) or callable(value):
        return (value,)
    return tuple(value)


def _call_with_context(fn: Callable[..., Any], first: Any, context: dict[str, Any]) -> Any:
    """Calls a user predicate with ``first`` and whichever context keywords it accepts."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(first)
    names = list(params)
    rest = {k: v for k, v in context.items() if k != (names[0] if names else None)}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(first, **rest)
    return fn(first, **{k: v for k, v in rest.items() if k in names[1:]})


@dataclass(frozen=True)
class RetryConfig:
    """How a worker retries a failed call (the defaults retry nothing)."""

    num_retries: int = 0
    retry_on: tuple[Any, ...] = (Exception,)
    retry_algorithm: str = "exponential"
    retry_wait: float = 1.0
    retry_jitter: float = 0.3
    retry_until: tuple[Callable[..., bool], ...] = field(default=())

    @classmethod
    def build(
        cls,
        num_retries: int = 0,
        retry_on: type[BaseException] | Callable[..., bool] | Iterable[Any] | None = (Exception,),
        retry_algorithm: str = "exponential",
        retry_wait: float = 1.0,
        retry_jitter: float = 0.3,
        retry_until: Callable[..., bool] | Iterable[Callable[..., bool]] | None = None,
    ) -> RetryConfig:
        """Checks and normalises the ``options()`` arguments."""
        if num_retries < 0:
            raise ValueError(f"num_retries must be at least 0, got {num_retries}")
        if retry_algorithm not in ALGORITHMS:
            raise ValueError(f"retry_algorithm must be one of {ALGORITHMS}, got {retry_algorithm!r}")
        if retry_wait < 0 or not 0 <= retry_jitter <= 1:
            raise ValueError("retry_wait must be >= 0 and retry_jitter within [0, 1]")
        on = _as_tuple(retry_on) or (Exception,)
        for item in on:
            if not (isinstance(item, type) and issubclass(item, BaseException)) and not callable(item):
                raise TypeError(f"retry_on takes exception types or predicates, got {item!r}")
        return cls(num_retries, on, retry_algorithm, float(retry_wait), float(retry_jitter), _as_tuple(retry_until))

    def wait(self, attempt: int) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (1-based)."""
        if self.retry_algorithm == "exponential":
            base = self.retry_wait * 2.0 ** (attempt - 1)
        elif self.retry_algorithm == "linear":
            base = self.retry_wait * attempt
        else:
            base = self.retry_wait
        return max(0.0, base * (1 + random.uniform(-self.retry_jitter, self.retry_jitter)))

    def should_retry(self, exc: BaseException, context: dict[str, Any]) -> bool:
        """Whether ``exc`` matches ``retry_on`` (a type it is an instance of, or a predicate
        returning true for it)."""
        for item in self.retry_on:
            if isinstance(item, type):
                if isinstance(exc, item):
                    return True
            elif _call_with_context(item, exc, {"exception": exc, **context}):
                return True
        return False

    def accepts(self, result: Any, context: dict[str, Any]) -> bool:
        """Whether every ``retry_until`` validator accepts ``result``."""
        return all(_call_with_context(check, result, {"result": result, **context}) for check in self.retry_until)


def call_with_retries(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    config: RetryConfig,
    *,
    method_name: str,
    worker_class: str,
    between_attempts: Callable[[], None] | None = None,
) -> Any:
    """Runs ``fn(*args, **kwargs)`` up to ``1 + num_retries`` times, here (in the worker).
    ``between_attempts`` runs after each failed attempt (it releases held limits)."""
    if not config.num_retries and not config.retry_until:
        return fn(*args, **kwargs)
    start = time.monotonic()
    attempts = config.num_retries + 1
    for attempt in range(1, attempts + 1):
        context = {
            "attempt": attempt,
            "elapsed_time": time.monotonic() - start,
            "method_name": method_name,
            "worker_class": worker_class,
            "args": args,
            "kwargs": kwargs,
        }
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if between_attempts is not None:
                between_attempts()
            if attempt == attempts or not config.should_retry(exc, context):
                raise
        else:
            if config.accepts(result, context):
                return result
            if between_attempts is not None:
                between_attempts()
            if attempt == attempts:
                raise RetryValidationError(method_name, attempts, result)
        time.sleep(config.wait(attempt))
    raise AssertionError("unreachable")
