"""Futures as arguments (resolved before the call is dispatched, without blocking the caller),
and helpers to wait on many futures with a progress bar."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from .progress import ProgressBar

__all__ = ["ProxyFuture", "as_completed", "find_futures", "resolve", "when_resolved"]


def find_futures(value: Any, found: list[Future[Any]]) -> list[Future[Any]]:
    """Collects the futures in ``value`` (itself, or inside lists, tuples and dict values)."""
    if isinstance(value, Future):
        found.append(value)
    elif isinstance(value, list | tuple):
        for item in value:
            find_futures(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            find_futures(item, found)
    return found


def resolve(value: Any) -> Any:
    """``value`` with every (finished) future replaced by its result."""
    if isinstance(value, Future):
        return value.result()
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if isinstance(value, tuple):
        items = [resolve(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    return value


class ProxyFuture(Future):  # type: ignore[type-arg]
    """The future of a call still waiting for its argument futures; once they are done it
    follows the future of the dispatched call. ``cancel()`` cancels whichever stage it is in."""

    def __init__(self) -> None:
        super().__init__()
        self._inner: Future[Any] | None = None
        self._lock = threading.Lock()

    def follow(self, inner: Future[Any]) -> None:
        """Completes this future as ``inner`` completes."""
        with self._lock:
            self._inner = inner
        if self.cancelled():
            inner.cancel()
            return

        def copy(f: Future[Any]) -> None:
            if self.done():
                return
            if f.cancelled():
                self._cancel_self()
            elif (exc := f.exception()) is not None:
                self.set_exception(exc)
            else:
                self.set_result(f.result())

        inner.add_done_callback(copy)

    def _cancel_self(self) -> bool:
        if super().cancel():
            # Waiters of concurrent.futures.wait() hear of a cancellation only through this.
            self.set_running_or_notify_cancel()
            return True
        return self.cancelled()

    def cancel(self) -> bool:
        with self._lock:
            inner = self._inner
        if inner is not None:
            return inner.cancel() and self._cancel_self()
        return self._cancel_self()


def when_resolved(args: tuple[Any, ...], kwargs: dict[str, Any], dispatch: Callable[..., Future[Any]]) -> Future[Any]:
    """Calls ``dispatch(*args, **kwargs)`` with the futures in the arguments replaced by their
    results, once all are done (from the thread that finishes the last one); returns a
    :class:`ProxyFuture` at once. A failed or cancelled argument fails the call."""
    waiting = list({id(f): f for f in find_futures((args, kwargs), [])}.values())
    if not waiting:
        return dispatch(*args, **kwargs)
    proxy = ProxyFuture()
    lock = threading.Lock()
    left = [len(waiting)]

    def on_done(_: Future[Any]) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        if proxy.cancelled():
            return
        try:
            for f in waiting:
                if f.cancelled():
                    raise concurrent.futures.CancelledError("an argument future was cancelled")
                if (exc := f.exception()) is not None:
                    raise exc
            inner = dispatch(*resolve(args), **resolve(kwargs))
        except BaseException as exc:
            if not proxy.done():
                proxy.set_exception(exc)
            return
        proxy.follow(inner)

    for f in waiting:
        f.add_done_callback(on_done)
    return proxy


def as_completed(
    futures: Iterable[Future[Any]], *, timeout: float | None = None, progress: bool | str = False
) -> Iterator[Future[Any]]:
    """Yields the futures as they finish, advancing a progress bar if ``progress`` (a bool or
    the bar's description)."""
    futures = list(futures)
    bar = ProgressBar(total=len(futures), desc=progress if isinstance(progress, str) else None, disable=not progress)
    try:
        for f in concurrent.futures.as_completed(futures, timeout=timeout):
            bar.update(1)
            yield f
    finally:
        bar.close()
