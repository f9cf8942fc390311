"""``Executor.map`` with the standard library's contract, for :class:`TaskPool`.

* The calls are submitted when ``map`` is called, not when its results are first asked for
  (``ex.map(os.mkdir, paths); ex.shutdown()`` makes every directory). With a ``window``, the
  first ``window`` calls are submitted at once and the rest as results are taken, so huge or
  endless inputs work.
* ``timeout`` counts from the call to ``map``; when it runs out, the call waited on and every
  call behind it are cancelled (the ones already running finish).
* The result iterator keeps no reference to a result it has handed over.
* ``chunksize`` below 1 raises :class:`ValueError`; otherwise each call is one task (the pool's
  queue already hands short tasks over several at a time).
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["executor_map"]


def _result_or_cancel(future: concurrent.futures.Future[Any], timeout: float | None) -> Any:
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()  # a no-op when it finished; a timed-out call is cancelled
    finally:
        del future  # no reference to the future (and its result) stays in this frame


def _counted(bar: Any, result: Any) -> Any:
    if bar is not None:
        bar.update(1)
    return result


def executor_map(
    submit: Callable[[tuple[Any, ...]], concurrent.futures.Future[Any]],
    iterables: tuple[Iterable[Any], ...],
    *,
    timeout: float | None = None,
    chunksize: int = 1,
    ordered: bool = True,
    window: int | None = None,
    bar: Any = None,
) -> Iterator[Any]:
    """Submits ``submit(args)`` for each tuple of ``zip(*iterables)`` (all now, or the first
    ``window``) and returns the iterator of their results: in input order, or as they finish
    with ``ordered=False``. ``bar`` (a progress bar or ``None``) is updated per result and
    closed at the end."""
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1.")
    if window is not None and window < 1:
        raise ValueError(f"window must be at least 1 or None, got {window}")
    deadline = None if timeout is None else time.monotonic() + timeout
    items = zip(*iterables, strict=False)
    inflight: collections.deque[concurrent.futures.Future[Any]] = collections.deque()

    def fill() -> bool:
        """Submits until the window is full; returns whether the input is exhausted."""
        while window is None or len(inflight) < window:
            try:
                args = next(items)
            except StopIteration:
                return True
            inflight.append(submit(args))
        return False

    try:
        exhausted = fill()
    except BaseException:
        for future in inflight:
            future.cancel()
        if bar is not None:
            bar.close()
        raise

    def remaining() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def results() -> Iterator[Any]:
        nonlocal exhausted
        try:
            while inflight:
                if ordered:
                    yield _counted(bar, _result_or_cancel(inflight.popleft(), remaining()))
                else:
                    finished, _ = concurrent.futures.wait(
                        inflight, timeout=remaining(), return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    if not finished:
                        raise TimeoutError(f"map did not finish within {timeout} s")
                    first = [next(iter(finished))]
                    del finished
                    inflight.remove(first[0])
                    yield _counted(bar, _result_or_cancel(first.pop(), 0))
                if not exhausted:
                    exhausted = fill()
        finally:
            for future in inflight:
                future.cancel()
            if bar is not None:
                bar.close()

    return results()
