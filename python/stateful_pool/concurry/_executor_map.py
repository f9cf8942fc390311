"""``Executor.map`` with the standard library's contract, for :class:`TaskPool`.

* The calls are submitted when ``map`` is called, not when its results are first asked for
  (``ex.map(os.mkdir, paths); ex.shutdown()`` makes every directory). With a ``window``, the
  first ``window`` chunks are submitted at once and the rest as results are taken, so huge or
  endless inputs work.
* Items travel in chunks (one message and one pickle per chunk; see ``stateful_pool._chunk``):
  ``chunksize`` items each, or with ``chunksize=None`` sizes picked for the input: with a
  ``window``, from the per-item time the workers measure (about 1 ms of work per chunk); all at
  once, growing from 1 to a quarter of a worker's share (``multiprocessing.Pool``'s choice).
  With a ``timeout`` and no ``chunksize``, each call is a chunk of its own, so the deadline
  applies to each result. One item's exception fails that item only; a chunk that fails as a
  whole (its worker crashed) runs its items again one by one.
* ``timeout`` counts from the call to ``map``; when it runs out, the chunk waited on and every
  chunk behind it are cancelled (the ones already running finish).
* The result iterator keeps no reference to a result it has handed over.
* ``chunksize`` below 1 raises :class:`ValueError`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

from .._chunk import ChunkSizer, chunk_parts, iter_handing_over, map_iterator

__all__ = ["executor_map"]


def _result_or_cancel(future: concurrent.futures.Future[Any], timeout: float | None) -> Any:
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()  # a no-op when it finished; a timed-out call is cancelled
    finally:
        del future  # no reference to the future (and its result) stays in this frame


def executor_map(
    submit: Callable[[tuple[Any, ...]], concurrent.futures.Future[Any]],
    iterables: tuple[Iterable[Any], ...],
    *,
    timeout: float | None = None,
    chunksize: int | None = 1,
    ordered: bool = True,
    window: int | None = None,
    bar: Any = None,
    submit_chunk: Callable[[list[tuple[Any, ...]]], concurrent.futures.Future[Any]] | None = None,
    workers: int = 1,
) -> Iterator[Any]:
    """Submits ``fn(*args)`` for each tuple ``args`` of ``zip(*iterables)`` (all now, or the
    first ``window`` chunks) and returns the iterator of their results: in input order, or as
    they finish with ``ordered=False``. ``submit_chunk(chunk)`` submits a chunk (a list of such
    tuples), ``submit(args)`` one call (for a chunk whose call failed; without
    ``submit_chunk`` every call goes alone). ``bar`` (a progress bar or ``None``) counts the
    results and is closed at the end."""
    if chunksize is not None and chunksize < 1:
        raise ValueError("chunksize must be >= 1.")
    if window is not None and window < 1:
        raise ValueError(f"window must be at least 1 or None, got {window}")
    deadline = None if timeout is None else time.monotonic() + timeout
    items: Iterator[tuple[Any, ...]] = zip(*iterables, strict=False)
    sizer = None
    if submit_chunk is None or (chunksize is None and timeout is not None):
        chunksize = 1
    if window is None:  # everything now: the input's size is known
        listed = list(items)
        items = iter(listed)
        sizer = ChunkSizer(chunksize, len(listed), workers, blind=True)
    else:
        sizer = ChunkSizer(chunksize, None, workers)
    # (future, its items); None for a single call of a pool that has no chunks.
    inflight: collections.deque[tuple[concurrent.futures.Future[Any], list[tuple[Any, ...]] | None]]
    inflight = collections.deque()

    def fill() -> bool:
        """Submits until the window is full; returns whether the input is exhausted."""
        while window is None or len(inflight) < window:
            chunk = list(itertools.islice(items, sizer.next_size()))
            if not chunk:
                return True
            if submit_chunk is None:
                inflight.append((submit(chunk[0]), None))
            else:
                inflight.append((submit_chunk(chunk), chunk))
        return False

    try:
        exhausted = fill()
    except BaseException:
        for future, _ in inflight:
            future.cancel()
        if bar is not None:
            bar.close()
        raise

    def remaining() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def wait(future: concurrent.futures.Future[Any]) -> Any:
        return _result_or_cancel(future, remaining())

    def parts() -> Generator[Iterable[Any], None, None]:
        nonlocal exhausted
        try:
            while inflight:
                if ordered:
                    future, chunk = inflight.popleft()
                else:
                    finished, _ = concurrent.futures.wait(
                        [f for f, _ in inflight], timeout=remaining(), return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    if not finished:
                        raise TimeoutError(f"map did not finish within {timeout} s")
                    done = next(iter(finished))
                    at = next(i for i, entry in enumerate(inflight) if entry[0] is done)
                    future, chunk = inflight[at]
                    del inflight[at], finished, done
                if chunk is None:
                    result = [wait(future)]
                    del future
                    if bar is not None:
                        bar.update(1)
                    yield iter_handing_over(result)
                else:
                    yield from chunk_parts(future, chunk, wait, submit, sizer, bar)
                    del future, chunk
                if not exhausted:
                    exhausted = fill()
        finally:
            for future, _ in inflight:
                future.cancel()
            if bar is not None:
                bar.close()

    return map_iterator(parts())
