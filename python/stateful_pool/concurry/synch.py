"""concurry 0.13's ``wait``/``gather`` (and ``async_wait``/``async_gather``) over
:class:`concurrent.futures.Future`: many futures given as a list, a dict (keys kept), a single
future or several positional ones; plain values count as finished futures; ``iter=True`` yields
``(index or key, result)`` as they finish; ``progress`` is a bool, tqdm options or a callback
``(completed, total, elapsed)``. ``polling`` is accepted: completion here is event-driven."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypedDict, Unpack

from .constants import PollingAlgorithm, ReturnWhen
from .progress import ProgressBar

__all__ = [
    "BaseFuture",
    "ConcurrentFuture",
    "GatherOptions",
    "SyncFuture",
    "WaitOptions",
    "async_gather",
    "async_wait",
    "gather",
    "wait",
    "wrap_future",
]

BaseFuture = Future
"""Every future of this package is a :class:`concurrent.futures.Future`."""
ConcurrentFuture = Future
"""concurry's name for a future of a thread or process: the same class here."""


class SyncFuture(Future):  # type: ignore[type-arg]
    """A future finished at creation: ``SyncFuture(result_value=42)`` or
    ``SyncFuture(exception_value=ValueError(...))``."""

    def __init__(self, result_value: Any = None, exception_value: BaseException | None = None):
        super().__init__()
        if exception_value is not None:
            if not isinstance(exception_value, BaseException):
                raise TypeError(f"exception_value must be an exception, got {type(exception_value).__name__}")
            self.set_exception(exception_value)
        else:
            self.set_result(result_value)

    @classmethod
    def of(cls, done: Future[Any]) -> SyncFuture:
        """The outcome of the finished future ``done`` (a sync-mode call's) as a ``SyncFuture``."""
        exc = done.exception(timeout=0)
        return cls(exception_value=exc) if exc is not None else cls(result_value=done.result(timeout=0))


class _Options(TypedDict, total=False):
    timeout: float | None
    """Seconds to wait at most (absent or ``None``: no limit); then :class:`TimeoutError`."""
    polling: PollingAlgorithm | str
    """Accepted for concurry's sake and checked; completion here is event-driven."""
    progress: Any
    """``True``, a description, tqdm options (a dict) or a callback ``(completed, total, elapsed)``."""
    recurse: bool
    """Also wait for futures nested in lists, tuples, sets and dicts (default ``False``)."""


class WaitOptions(_Options, total=False):
    """The keyword arguments of :func:`wait` and :func:`async_wait`."""

    return_when: ReturnWhen | str
    """``ALL_COMPLETED`` (default), ``FIRST_COMPLETED`` or ``FIRST_EXCEPTION``."""


class GatherOptions(_Options, total=False):
    """The keyword arguments of :func:`gather` and :func:`async_gather`."""

    return_exceptions: bool
    """Return a failure in its result's place instead of raising it (default ``False``)."""
    iter: bool
    """Return an iterator of ``(index or key, result)`` in completion order (default ``False``)."""


def _checked(options: _Options, allowed: frozenset[str], caller: str) -> None:
    """A keyword the caller does not take is a :class:`TypeError`, as for a plain signature."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    PollingAlgorithm.from_str(options.get("polling", PollingAlgorithm.Adaptive))


def wrap_future(value: Any) -> Future[Any]:
    """``value`` as a :class:`~concurrent.futures.Future`: a future stays itself, an asyncio
    future or coroutine is followed (a coroutine needs a running event loop), anything else is a
    finished future holding it."""
    if isinstance(value, Future):
        return value
    if inspect.iscoroutine(value):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            value.close()
            raise RuntimeError(
                "Cannot schedule coroutine: there is no running event loop (await it, or use async_gather)"
            ) from None
        value = asyncio.ensure_future(value)
    if isinstance(value, asyncio.Future):
        out: Future[Any] = Future()
        asyncio.futures._chain_future(value, out)  # type: ignore[attr-defined]
        return out
    return SyncFuture(result_value=value)


def _structure(fs: Any, futs: tuple[Any, ...], recurse: bool) -> tuple[list[Any], list[Any] | None, bool]:
    """(keys, items, is_dict): the things waited for, in order."""
    if futs:
        if isinstance(fs, list | tuple | set | dict):
            raise ValueError(
                "Cannot provide both a structure (list, tuple, set, dict) and more futures: pass one structure "
                "or several futures"
            )
        items = [fs, *futs]
        return list(range(len(items))), items, False
    if isinstance(fs, dict):
        return list(fs), list(fs.values()), True
    if isinstance(fs, list | tuple | set | frozenset):
        items = list(fs)
        return list(range(len(items))), items, False
    return [0], [fs], False


def _flatten(value: Any, out: list[Future[Any]]) -> None:
    if isinstance(value, list | tuple | set):
        for item in value:
            _flatten(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            _flatten(item, out)
    else:
        out.append(wrap_future(value))


def _resolve(value: Any) -> Any:
    if isinstance(value, list | tuple | set):
        return type(value)(_resolve(v) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    return wrap_future(value).result()


class _Progress:
    def __init__(self, progress: Any, total: int, desc: str):
        self.callback: Callable[..., Any] | None = None
        self.bar: ProgressBar | None = None
        self.total = total
        self.start = time.monotonic()
        if isinstance(progress, str):
            self.bar = ProgressBar(total=total, desc=progress)
        elif callable(progress):
            self.callback = progress
        elif isinstance(progress, dict):
            self.bar = ProgressBar(total=total, **{"desc": desc, **progress})
        elif progress:
            self.bar = ProgressBar(total=total, desc=desc)
        elif progress not in (None, False):
            raise ValueError(f"progress must be a bool, a dict of options or a callable, got {type(progress)}")

    def update(self, completed: int, step: int) -> None:
        if self.bar is not None and step:
            self.bar.update(step)
        if self.callback is not None:
            self.callback(completed, self.total, time.monotonic() - self.start)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _wait_is_over(when: ReturnWhen, done: set[Any], finished: set[Any]) -> bool:
    """Whether a wait for ``when`` is over, ``finished`` (concurrent or asyncio futures) having
    just joined ``done`` (``ALL_COMPLETED``: only once nothing is pending)."""
    if when is ReturnWhen.FIRST_COMPLETED:
        return bool(done)
    return when is ReturnWhen.FIRST_EXCEPTION and any(not f.cancelled() and f.exception() is not None for f in finished)


class _Waiting:
    """One wait's bookkeeping, shared by the blocking loop (:func:`_wait_set`) and the async
    one (:func:`async_wait`): each takes in what finished since its last look."""

    def __init__(self, items: list[Any], when: ReturnWhen, timeout: float | None, progress: Any, what: str):
        self.when = when
        self.what = what
        self.total = len(items)
        self.pending = set(items)
        self.done: set[Any] = set()
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.bar = _Progress(progress, len(items), what.removeprefix("async_"))

    def left(self) -> float | None:
        """Seconds left to wait (``None``: no limit)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def over(self, finished: set[Any], pending: set[Any]) -> bool:
        """Takes in a look's outcome; returns whether the wait is over. Raises
        :class:`TimeoutError` when the look found nothing finished and time is up."""
        self.pending = pending
        self.done |= finished
        self.bar.update(len(self.done), len(finished))
        if not pending or _wait_is_over(self.when, self.done, finished):
            return True
        if not finished:
            raise TimeoutError(f"{self.what}() timed out: {len(pending)}/{self.total} futures incomplete")
        return False

    def close(self) -> None:
        self.bar.close()


def _wait_set(
    futures: list[Future[Any]], timeout: float | None, return_when: ReturnWhen, progress: Any, what: str
) -> tuple[set[Future[Any]], set[Future[Any]]]:
    waiting = _Waiting(futures, return_when, timeout, progress, what)
    with contextlib.closing(waiting):
        while waiting.pending:
            looked = concurrent.futures.wait(waiting.pending, timeout=waiting.left(), return_when="FIRST_COMPLETED")
            if waiting.over(*looked):
                break
    return waiting.done, waiting.pending


def wait(fs: Any, *futs: Any, **options: Unpack[WaitOptions]) -> tuple[set[Future[Any]], set[Future[Any]]]:
    """Waits for futures; returns ``(done, not_done)`` sets. Raises :class:`TimeoutError` if
    ``return_when`` is not met within ``timeout`` seconds (see :class:`WaitOptions`)."""
    _checked(options, WaitOptions.__optional_keys__, "wait")
    when = ReturnWhen.from_str(options.get("return_when", ReturnWhen.ALL_COMPLETED))
    recurse = options.get("recurse", False)
    _, items, _ = _structure(fs, futs, recurse)
    futures: list[Future[Any]] = []
    for item in items or []:
        if recurse:
            _flatten(item, futures)
        else:
            futures.append(wrap_future(item))
    return _wait_set(futures, options.get("timeout"), when, options.get("progress"), "wait")


def gather(fs: Any, *futs: Any, **options: Unpack[GatherOptions]) -> Any:
    """The results of futures: a list in order (a dict with the same keys for a dict), or with
    ``iter=True`` a generator of ``(index or key, result)`` as they finish. The first failure is
    raised, or returned in its place with ``return_exceptions=True``; :class:`TimeoutError`
    after ``timeout`` seconds (see :class:`GatherOptions`)."""
    _checked(options, GatherOptions.__optional_keys__, "gather")
    recurse, return_exceptions = options.get("recurse", False), options.get("return_exceptions", False)
    timeout, progress = options.get("timeout"), options.get("progress")
    keys, items, is_dict = _structure(fs, futs, recurse)
    if not recurse:
        futures = [wrap_future(item) for item in items or []]
    else:
        futures = []
        for item in items or []:
            nested: list[Future[Any]] = []
            _flatten(item, nested)
            futures.append(_when_all(item, nested))
    if options.get("iter", False):
        return _gather_iter(keys, futures, return_exceptions, timeout, progress)
    _wait_set(
        futures,
        timeout,
        ReturnWhen.ALL_COMPLETED if return_exceptions else ReturnWhen.FIRST_EXCEPTION,
        progress,
        "gather",
    )
    results = [_outcome(f, return_exceptions) for f in futures]
    return dict(zip(keys, results, strict=True)) if is_dict else results


def _when_all(item: Any, nested: list[Future[Any]]) -> Future[Any]:
    out: Future[Any] = Future()
    left = [len(nested)]

    def settle(_: Any = None) -> None:
        left[0] -= 1
        if left[0] <= 0 and not out.done():
            try:
                out.set_result(_resolve(item))
            except Exception as exc:
                out.set_exception(exc)

    if not nested:
        left[0] = 1
        settle()
    for f in nested:
        f.add_done_callback(settle)
    return out


def _outcome(future: Future[Any], return_exceptions: bool) -> Any:
    if return_exceptions and (future.cancelled() or future.exception() is not None):
        return concurrent.futures.CancelledError() if future.cancelled() else future.exception()
    return future.result()


def _gather_iter(
    keys: list[Any], futures: list[Future[Any]], return_exceptions: bool, timeout: float | None, progress: Any
) -> Iterator[tuple[Any, Any]]:
    key_of = {id(f): k for k, f in zip(keys, futures, strict=True)}
    bar = _Progress(progress, len(futures), "gather")
    count = 0
    try:
        for f in concurrent.futures.as_completed(futures, timeout=timeout):
            count += 1
            bar.update(count, 1)
            yield key_of[id(f)], _outcome(f, return_exceptions)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"gather() timed out: {len(futures) - count}/{len(futures)} futures incomplete") from None
    finally:
        bar.close()


def _to_awaitable(value: Any) -> Any:
    if inspect.isawaitable(value):
        return asyncio.ensure_future(value)
    if isinstance(value, Future):
        return asyncio.wrap_future(value)
    done = asyncio.get_running_loop().create_future()
    done.set_result(value)
    return done


async def async_wait(fs: Any, *futs: Any, **options: Unpack[WaitOptions]) -> tuple[set[Any], set[Any]]:
    """:func:`wait` for coroutines, asyncio futures and futures, awaited on the running loop."""
    _checked(options, WaitOptions.__optional_keys__, "async_wait")
    when = ReturnWhen.from_str(options.get("return_when", ReturnWhen.ALL_COMPLETED))
    _, items, _ = _structure(fs, futs, options.get("recurse", False))
    tasks = [_to_awaitable(item) for item in items or []]
    if not tasks:
        return set(), set()
    waiting = _Waiting(tasks, when, options.get("timeout"), options.get("progress"), "async_wait")
    with contextlib.closing(waiting):
        while waiting.pending:
            looked = await asyncio.wait(waiting.pending, timeout=waiting.left(), return_when=asyncio.FIRST_COMPLETED)
            if waiting.over(*looked):
                break
    return waiting.done, waiting.pending


async def async_gather(fs: Any, *futs: Any, **options: Unpack[GatherOptions]) -> Any:
    """:func:`gather` for coroutines, asyncio futures and futures, awaited on the running loop
    (``iter=True`` returns an async generator of ``(index or key, result)``)."""
    _checked(options, GatherOptions.__optional_keys__, "async_gather")
    recurse, return_exceptions = options.get("recurse", False), options.get("return_exceptions", False)
    timeout = options.get("timeout")
    keys, items, is_dict = _structure(fs, futs, recurse)
    tasks = [_to_awaitable(item) for item in items or []]
    if options.get("iter", False):
        return _async_iter(keys, tasks, return_exceptions, timeout)
    when = "all" if return_exceptions else "exception"
    try:
        await async_wait(tasks, timeout=timeout, return_when=when, progress=options.get("progress"))
    except TimeoutError as exc:
        raise TimeoutError(str(exc).replace("async_wait()", "async_gather()")) from None
    results = []
    for t in tasks:
        if not t.done():
            await asyncio.wait([t], timeout=timeout)
        results.append(_outcome_async(t, return_exceptions))
    return dict(zip(keys, results, strict=True)) if is_dict else results


def _outcome_async(task: Any, return_exceptions: bool) -> Any:
    if return_exceptions and (task.cancelled() or task.exception() is not None):
        return asyncio.CancelledError() if task.cancelled() else task.exception()
    return task.result()


async def _async_iter(keys: list[Any], tasks: list[Any], return_exceptions: bool, timeout: float | None) -> Any:
    key_of = {id(t): k for k, t in zip(keys, tasks, strict=True)}
    pending = set(tasks)
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        finished, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        if not finished:
            raise TimeoutError(f"async_gather() timed out: {len(pending)}/{len(tasks)} incomplete")
        for t in finished:
            yield key_of[id(t)], _outcome_async(t, return_exceptions)
