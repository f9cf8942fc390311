"""Retries that run inside the worker process: ``num_retries``, ``retry_on`` (exception types
or predicates), ``retry_algorithm`` with ``retry_wait`` and ``retry_jitter``, and
``retry_until`` to validate a result."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .constants import RetryAlgorithm

__all__ = [
    "PerMethodRetry",
    "RetryConfig",
    "RetriedCall",
    "RetryValidationError",
    "build_retry",
]

ALGORITHMS = ("exponential", "linear", "fixed", "fibonacci")
RETRY_OPTIONS = ("num_retries", "retry_on", "retry_algorithm", "retry_wait", "retry_jitter", "retry_until")


class RetryValidationError(Exception):
    """Every attempt returned a result that ``retry_until`` rejected: ``all_results`` holds
    each attempt's result, ``validation_errors`` why each was rejected, ``result`` the last."""

    def __init__(
        self, attempts: int, all_results: list[Any], validation_errors: list[str], method_name: str = "unknown"
    ):
        self.attempts = attempts
        self.all_results = list(all_results)
        self.validation_errors = list(validation_errors)
        self.method_name = method_name
        shown = "".join(f"Attempt {i + 1}:\n{r!r}\n" for i, r in enumerate(self.all_results))
        super().__init__(
            f"Validation failed for method '{method_name}' after {attempts} attempts.\n"
            f"Validation errors: {self.validation_errors}\nResults from all attempts:\n{shown}"
        )

    @property
    def result(self) -> Any:
        """The last attempt's result."""
        return self.all_results[-1] if self.all_results else None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), (self.attempts, self.all_results, self.validation_errors, self.method_name))


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, type) or callable(value):
        return (value,)
    return tuple(value)


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
        retry_algorithm: Any = "exponential",
        retry_wait: float = 1.0,
        retry_jitter: float = 0.3,
        retry_until: Callable[..., bool] | Iterable[Callable[..., bool]] | None = None,
    ) -> RetryConfig:
        """The ``options()`` arguments as settings (checked and normalised as
        ``RetryConfig(...)`` is)."""
        return cls(num_retries, retry_on, retry_algorithm, retry_wait, retry_jitter, retry_until)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        """Checks and normalises the fields: ``retry_on``/``retry_until`` may be one item or a
        list, ``retry_algorithm`` a :class:`RetryAlgorithm` member or any of its spellings."""
        num_retries, retry_wait, retry_jitter = self.num_retries, self.retry_wait, self.retry_jitter
        if isinstance(num_retries, bool) or not isinstance(num_retries, int) or num_retries < 0:
            raise ValueError(f"num_retries must be >= 0, got {num_retries!r}")
        try:
            algorithm = RetryAlgorithm.from_str(self.retry_algorithm).value.lower()
        except ValueError:
            raise ValueError(f"retry_algorithm must be one of {ALGORITHMS}, got {self.retry_algorithm!r}") from None
        if isinstance(retry_wait, bool) or not isinstance(retry_wait, int | float) or retry_wait <= 0:
            raise ValueError(f"retry_wait must be > 0, got {retry_wait!r}")
        if isinstance(retry_jitter, bool) or not isinstance(retry_jitter, int | float) or not 0 <= retry_jitter <= 1:
            raise ValueError(f"retry_jitter must be in [0, 1], got {retry_jitter!r}")
        on = _as_tuple(self.retry_on) or (Exception,)
        for item in on:
            if isinstance(item, type) and not issubclass(item, BaseException):
                raise ValueError(f"retry_on exception types must be subclasses of BaseException, got {item}")
            if not isinstance(item, type) and not callable(item):
                raise ValueError(f"retry_on items must be exception types or callables, got {type(item)}")
        until = _as_tuple(self.retry_until)
        for check in until:
            if not callable(check):
                raise ValueError(f"retry_until items must be callables, got {type(check)}")
        object.__setattr__(self, "retry_on", on)
        object.__setattr__(self, "retry_until", until)
        object.__setattr__(self, "retry_algorithm", algorithm)
        object.__setattr__(self, "retry_wait", float(retry_wait))
        object.__setattr__(self, "retry_jitter", float(retry_jitter))

    def for_method(self, name: str) -> RetryConfig:
        """The settings of method ``name`` (the same for every method)."""
        return self

    def wait(self, attempt: int) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (1-based)."""
        if self.retry_algorithm == "exponential":
            base = self.retry_wait * 2.0 ** (attempt - 1)
        elif self.retry_algorithm == "linear":
            base = self.retry_wait * attempt
        elif self.retry_algorithm == "fibonacci":
            a, b = 1, 1
            for _ in range(attempt - 1):
                a, b = b, a + b
            base = self.retry_wait * a
        else:
            base = self.retry_wait
        # concurry's "full jitter" (AWS): any jitter draws the wait uniformly from [0, base].
        return random.uniform(0.0, base) if self.retry_jitter > 0 else max(0.0, base)

    def should_retry(self, exc: BaseException, context: dict[str, Any]) -> bool:
        """Whether ``exc`` matches ``retry_on``: a type it is an instance of, or a predicate
        called as concurry calls it, ``predicate(exception=exc, **context)``, that returns
        true. A predicate that raises does not ask for a retry (as in concurry)."""
        for item in self.retry_on:
            if isinstance(item, type):
                if isinstance(exc, item):
                    return True
                continue
            try:
                if item(exception=exc, **context):
                    return True
            except Exception:
                continue
        return False

    def rejections(self, result: Any, context: dict[str, Any]) -> list[str]:
        """Why ``result`` is rejected: one line per ``retry_until`` validator that returned
        false or raised (empty: accepted). Validators are called as concurry calls them,
        ``validator(result, **context)``: one without ``**kwargs`` raises ``TypeError``, which
        the rejection (and the final error) names."""
        out = []
        for check in self.retry_until:
            name = getattr(check, "__name__", repr(check))
            try:
                if not check(result, **context):
                    out.append(f"{name} returned False")
            except Exception as exc:
                out.append(f"{name} raised {type(exc).__name__}: {exc}")
        return out

    def accepts(self, result: Any, context: dict[str, Any]) -> bool:
        """Whether every ``retry_until`` validator accepts ``result``."""
        return not self.rejections(result, context)


class PerMethodRetry:
    """Retry settings that differ by method: each option given as ``{"*": default,
    "method": value}`` (``"*"`` optional) in ``options()``."""

    def __init__(self, options: dict[str, Any]):
        defaults = {"num_retries": 0, "retry_on": (Exception,), "retry_algorithm": "exponential"}
        defaults.update({"retry_wait": 1.0, "retry_jitter": 0.3, "retry_until": None})
        for name, value in options.items():
            if isinstance(value, dict) and "*" not in value:
                raise ValueError(
                    f"{name} given per method must include '*' key for default value, got keys {sorted(value)}"
                )
        methods = {m for v in options.values() if isinstance(v, dict) for m in v if m != "*"}
        base = {k: (v.get("*", defaults[k]) if isinstance(v, dict) else v) for k, v in options.items()}
        self.default = RetryConfig.build(**base)
        self.methods = {
            m: RetryConfig.build(**{k: (v.get(m, base[k]) if isinstance(v, dict) else v) for k, v in options.items()})
            for m in methods
        }

    def for_method(self, name: str) -> RetryConfig:
        """The settings of method ``name``."""
        return self.methods.get(name, self.default)

    def check_methods(self, known: Iterable[str], worker: str) -> None:
        """Raises :class:`ValueError` if a setting names a method ``worker`` does not have."""
        unknown = sorted(set(self.methods) - set(known))
        if unknown:
            raise ValueError(f"retry settings name methods {worker} does not have: {unknown}")


def build_retry(**options: Any) -> RetryConfig | PerMethodRetry:
    """``options()``'s retry arguments as settings: per method when any of them is a dict."""
    if any(isinstance(v, dict) for v in options.values()):
        return PerMethodRetry(options)
    return RetryConfig.build(**options)


class RetriedCall:
    """One call of a worker method with its retries, run here (in the worker): :meth:`run`
    blocks, :meth:`run_async` awaits. Each attempt's outcome goes to :meth:`judge`, which says
    to return, to raise, or to sleep and try again; ``between_attempts`` runs after each failed
    attempt (it releases held limits)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: RetryConfig,
        *,
        method_name: str,
        worker_class: str,
        between_attempts: Callable[[], None] | None = None,
    ):
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.config = config
        self.total = config.num_retries + 1
        self.start = time.monotonic()
        self.base = {"method_name": method_name, "worker_class": worker_class, "args": args, "kwargs": kwargs}
        self.between = between_attempts
        self.results: list[Any] = []
        self.errors: list[str] = []

    def run(self) -> Any:
        """Runs ``fn(*args, **kwargs)`` up to ``1 + num_retries`` times, sleeping between."""
        if not self.config.num_retries and not self.config.retry_until:
            return self.fn(*self.args, **self.kwargs)
        for attempt in range(1, self.total + 1):
            try:
                verdict, value = self.judge(attempt, None, self.fn(*self.args, **self.kwargs))
            except Exception as exc:
                verdict, value = self.judge(attempt, exc, None)
            if verdict != "sleep":
                return self.finish(verdict, value)
            time.sleep(value)
        raise AssertionError("unreachable")

    async def run_async(self) -> Any:
        """:meth:`run` for an ``async def`` method, on the worker's event loop."""
        for attempt in range(1, self.total + 1):
            try:
                verdict, value = self.judge(attempt, None, await self.fn(*self.args, **self.kwargs))
            except Exception as exc:
                verdict, value = self.judge(attempt, exc, None)
            if verdict != "sleep":
                return self.finish(verdict, value)
            await asyncio.sleep(value)
        raise AssertionError("unreachable")

    @staticmethod
    def finish(verdict: str, value: Any) -> Any:
        """Returns the result (``"return"``) or raises the exception (``"raise"``)."""
        if verdict == "raise":
            raise value
        return value

    def judge(self, attempt: int, exc: BaseException | None, result: Any) -> tuple[str, Any]:
        """``("return", result)``, ``("raise", exception)`` or ``("sleep", seconds)``."""
        context = {"attempt": attempt, "elapsed_time": time.monotonic() - self.start, **self.base}
        if exc is not None:
            if self.between is not None:
                self.between()
            if attempt == self.total or not isinstance(exc, Exception) or not self.config.should_retry(exc, context):
                return "raise", exc
            return "sleep", self.config.wait(attempt)
        rejected = self.config.rejections(result, context)
        if not rejected:
            return "return", result
        self.results.append(result)
        self.errors.extend(f"attempt {attempt}: {r}" for r in rejected)
        if self.between is not None:
            self.between()
        if attempt == self.total:
            return "raise", RetryValidationError(self.total, self.results, self.errors, str(self.base["method_name"]))
        return "sleep", self.config.wait(attempt)
