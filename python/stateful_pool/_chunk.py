"""``map`` in chunks: many items of one method in one call (one message, one pickle each way).

A chunk is an ordinary call of the reserved method name :data:`CHUNK_METHOD` (not a Python
identifier, so no worker method has it and ``SPool.call`` refuses it); every mode runs it here,
with :func:`call_method`: the process worker (``_worker.py``), the thread, sync and asyncio hosts
(``modes/_host.py``) and the Ray actor (``modes/_ray.py``). The worker calls the method once per
item and replies ``(seconds, results, errors)``: the results in item order (``None`` where an
item failed) and ``(index, exception)`` for each failed item, so one item's exception fails that
item only.

The caller (``SPool.map``, ``TaskPool.map``) turns a chunk's reply back into per-item results
with :func:`chunk_parts`. When the chunk *call* fails as a whole (its worker crashed or was
killed on a timeout, its message was too large, ...), every item of the chunk is run again on
its own, as one task each: an item that crashes its worker then fails alone with
:class:`WorkerCrashedError`, and the others complete. Items of that chunk that had finished
before the crash run a second time (their results died with the worker). :class:`ChunkSizer`
picks chunk sizes from the per-item time the workers measure.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import math
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from ._decode import decode
from ._serialize import dump_exception, encode, load_exception, safe_str
from .errors import ResultPicklingError
from .worker import check_method_name

if TYPE_CHECKING:
    from ._futures import PoolFuture

__all__ = [
    "CHUNK_METHOD",
    "ChunkSizer",
    "call_method",
    "chunk_payload",
    "MapIterator",
    "chunk_parts",
    "iter_handing_over",
    "map_iterator",
    "picklable_errors",
    "portable",
]

CHUNK_METHOD = "\x00chunk"
"""The method name of a chunk call; its arguments are :func:`chunk_payload`'s."""

# What a chunk's work should take: long enough that the per-message cost (tens of µs) is small
# beside it, short enough that slow items still spread over the workers.
_TARGET_SECONDS = 0.001
_FIRST_SIZE = 1
_MAX_SIZE = 1 << 16


def chunk_payload(method: str, prefix: tuple[Any, ...], items: Sequence[Any], spread: bool) -> tuple[Any, ...]:
    """The arguments of a chunk call: per item, ``worker.<method>(*prefix, item)``, or
    ``(*prefix, *item)`` with ``spread`` (items are argument tuples)."""
    return (method, prefix, items, spread)


def run_chunk(worker: Any, method: str, prefix: tuple[Any, ...], items: Sequence[Any], spread: bool) -> Any:
    """Runs the chunk on ``worker``; returns ``(seconds, results, errors)``. An item that raises
    an ``Exception`` or ``SystemExit`` fails alone; anything else (Ctrl-C, a lost host) ends the
    chunk as it would end a single call. Awaitable results (``async def`` methods) are left to
    :func:`await_reply`."""
    fn = getattr(worker, check_method_name(method))
    if prefix:
        fn = functools.partial(fn, *prefix)
    remaining = iter(items)
    calls = itertools.starmap(fn, remaining) if spread else map(fn, remaining)
    results: list[Any] = []
    errors: list[tuple[int, BaseException]] = []
    start = time.perf_counter()
    while True:
        try:
            # At C speed; when an item raises, the results before it are kept and the calls
            # go on from the next item (they share the iterator).
            results.extend(calls)
            break
        except (Exception, SystemExit) as exc:
            errors.append((len(results), exc))
            results.append(None)
    return (time.perf_counter() - start, results, errors)


def call_method(worker: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``worker.<method>(*args, **kwargs)``, or the chunk it stands for: how every mode runs a
    call whose method name was already checked."""
    if method == CHUNK_METHOD:
        return run_chunk(worker, *args)
    return getattr(worker, method)(*args, **kwargs)


async def await_reply(result: Any, is_chunk: bool) -> Any:
    """For the asyncio host: the result awaited, or for a chunk, its awaitable results awaited
    together (the items' coroutines run concurrently on the worker's loop)."""
    import asyncio  # here: a process worker imports this module at start, and never needs it
    import inspect

    if not is_chunk:
        return await result if inspect.isawaitable(result) else result
    seconds, results, errors = result
    pending = [i for i, r in enumerate(results) if inspect.isawaitable(r)]
    if not pending:
        return result
    start = time.perf_counter()
    done = await asyncio.gather(*(results[i] for i in pending), return_exceptions=True)
    for index, value in zip(pending, done, strict=True):
        if isinstance(value, Exception | SystemExit):
            results[index] = None
            errors.append((index, value))
        elif isinstance(value, BaseException):
            raise value
        else:
            results[index] = value
    errors.sort(key=lambda e: e[0])
    return (seconds + time.perf_counter() - start, results, errors)


def picklable_errors(reply: Any) -> Any:
    """A chunk's reply with its exceptions as ``dump_exception`` payloads (any exception can
    cross to another process that way)."""
    seconds, results, errors = reply
    return (seconds, results, [(i, dump_exception(e)) for i, e in errors])


def portable(reply: Any) -> list[Any]:
    """A chunk's reply encoded for another process (see :func:`picklable_errors`); a result that
    does not pickle fails its item with :class:`ResultPicklingError`."""
    seconds, results, errors = picklable_errors(reply)
    try:
        return encode((seconds, results, errors))
    except Exception:
        pass
    for index, result in enumerate(results):
        try:
            encode(result)
        except Exception as e:
            results[index] = None
            why = ResultPicklingError(f"the result of item {index} could not be pickled: {safe_str(e)}")
            errors.append((index, dump_exception(why)))
    errors.sort(key=lambda e: e[0])
    return encode((seconds, results, errors))


class ChunkSizer:
    """Chunk sizes for one ``map``: a fixed ``chunksize``, or (``None``) sizes that start at 1
    and grow at most fourfold per chunk measured, toward about a millisecond of work per chunk
    as the workers measure it (a moving average of the per-item time), and no more than a
    quarter of a worker's share of a sized input (so every worker gets several chunks). ``blind``: the
    chunks are all sent before any result comes back, so sizes double per chunk up to that
    quarter (``multiprocessing.Pool.map``'s chunk size)."""

    def __init__(self, chunksize: int | None, total: int | None = None, workers: int = 1, *, blind: bool = False):
        if chunksize is not None and (type(chunksize) is not int or chunksize < 1):
            raise ValueError(f"chunksize must be an int >= 1 or None, got {chunksize!r}")
        self.fixed = chunksize
        self._size = _FIRST_SIZE
        self._per_item: float | None = None
        self._blind = blind
        self._cap = _MAX_SIZE if total is None else max(1, min(_MAX_SIZE, math.ceil(total / (4 * max(1, workers)))))

    def next_size(self) -> int:
        """The size of the next chunk to send."""
        if self.fixed is not None:
            return self.fixed
        size = self._size
        if self._blind:  # all chunks sent before any is measured: grow by shape alone
            self._size = min(2 * size, self._cap)
        return size

    def observe(self, items: int, seconds: float) -> None:
        """Records that a worker ran ``items`` items in ``seconds``: the size grows fourfold,
        up to the target (so it grows only on evidence of the items' time)."""
        if items <= 0 or seconds < 0 or self.fixed is not None:
            return
        per_item = max(seconds / items, 1e-9)
        self._per_item = per_item if self._per_item is None else 0.7 * self._per_item + 0.3 * per_item
        target = max(1, min(self._cap, int(_TARGET_SECONDS / self._per_item)))
        self._size = min(4 * self._size, target)


def _item_exception(error: Any) -> BaseException:
    if isinstance(error, bytes):
        return load_exception(error)
    from .modes._host import remote_exception

    return remote_exception(error)


class MapIterator(itertools.chain):  # type: ignore[type-arg]
    """The results of a chunked map, item by item (at the speed of ``itertools.chain``);
    ``close()`` stops the map as closing a generator would."""

    _parts: Generator[Iterable[Any], None, None]

    def close(self) -> None:
        """Cancels the chunks still queued; the iterator ends."""
        self._parts.close()


def map_iterator(parts: Generator[Iterable[Any], None, None]) -> MapIterator:
    """The results of ``parts`` (a generator of each chunk's results) one by one."""
    iterator = cast("MapIterator", MapIterator.from_iterable(parts))
    iterator._parts = parts
    return iterator


def iter_handing_over(results: list[Any]) -> Iterable[Any]:
    """Iterates ``results``, dropping each reference as its result is handed over."""
    results.reverse()
    return map(list.pop, itertools.repeat(results, len(results)))


def chunk_parts(
    future: concurrent.futures.Future[Any],
    items: Sequence[Any],
    wait: Callable[[concurrent.futures.Future[Any]], Any],
    one: Callable[[Any], concurrent.futures.Future[Any]],
    sizer: ChunkSizer | None = None,
    bar: Any = None,
    hand_over: bool = True,
) -> Iterator[Iterable[Any]]:
    """Yields the chunk's results (as iterables, in item order), then raises the first failed
    item's exception. ``wait(future)`` returns a future's result (it may raise ``TimeoutError``
    for the map's own deadline); ``one(item)`` submits an item alone, for a chunk whose call
    failed as a whole. ``bar`` (a progress bar or ``None``) counts the items handed over.
    ``hand_over``: each result is dropped as it is handed over (``Executor.map``'s contract),
    else the chunk's results list is yielded as it is (faster; it lives until the chunk is
    consumed)."""
    try:
        reply = wait(future)
    except Exception:
        if not future.done() or future.cancelled():
            raise  # the map's own deadline or cancel, not the chunk's failure
        singles = collections.deque(one(item) for item in items)  # see the module's docstring
        del future
        try:
            while singles:
                result = [wait(singles.popleft())]
                if bar is not None:
                    bar.update(1)
                yield iter_handing_over(result)
        finally:
            for single in singles:
                single.cancel()
        return
    del future
    seconds, results, errors = reply
    del reply
    if sizer is not None:
        sizer.observe(len(results), seconds)
    if errors:
        index, error = errors[0]  # the first failed item ends the map
        del results[index:]
    if bar is not None:
        bar.update(len(results))
    yield iter_handing_over(results) if hand_over else results
    if errors:
        raise _item_exception(error)


def _decoded(future: concurrent.futures.Future[Any]) -> Any:
    """A future's result; a ``RawReplyFuture``'s (a chunk's) decoded here."""
    result = future.result()
    return decode(*result) if getattr(future, "_raw", False) else result


def chunk_source(iterable: Iterable[Any]) -> Callable[[int], Sequence[Any]]:
    """``take(n)``: the next ``n`` items of ``iterable`` (fewer at its end, none after). A list,
    tuple or range is sliced: no item is touched in this process, and a range's slice is a
    range, which pickles as three numbers (the worker makes its items). Any other iterable is
    read ``n`` items at a time into a list."""
    if type(iterable) in (list, tuple, range):
        sequence = cast("Sequence[Any]", iterable)
        start = 0

        def take(n: int) -> Sequence[Any]:
            nonlocal start
            part = sequence[start : start + n]
            start += len(part)
            return part

        return take
    items = iter(iterable)
    return lambda n: list(itertools.islice(items, n))


def map_parts(
    submit_chunk: Callable[[Sequence[Any]], PoolFuture[Any]],
    submit_one: Callable[[Any], PoolFuture[Any]],
    take: Callable[[int], Sequence[Any]],
    ordered: bool,
    window: int,
    sizer: ChunkSizer,
    bar: Any,
) -> Generator[Iterable[Any], None, None]:
    """``SPool.map``'s engine: keeps at most ``window`` chunks in flight (``submit_chunk``, which
    returns a ``RawReplyFuture``: the replies are decoded here, in the consuming thread), yields
    each chunk's results in input order (or as chunks finish), and re-runs a chunk that failed
    as a whole one item per task (``submit_one``, see ``chunk_parts``)."""
    inflight: collections.deque[tuple[PoolFuture[Any], Sequence[Any]]] = collections.deque()
    try:
        exhausted = False
        while True:
            while not exhausted and len(inflight) < window:
                chunk = take(sizer.next_size())
                if not chunk:
                    exhausted = True
                    break
                inflight.append((submit_chunk(chunk), chunk))
            if not inflight:
                return
            if ordered:
                future, chunk = inflight.popleft()
            else:
                finished, _ = concurrent.futures.wait(
                    [f for f, _ in inflight], return_when=concurrent.futures.FIRST_COMPLETED
                )
                done = finished.pop()
                at = next(i for i, entry in enumerate(inflight) if entry[0] is done)
                future, chunk = inflight[at]
                del inflight[at], finished, done
            yield from chunk_parts(future, chunk, _decoded, submit_one, sizer, bar, hand_over=False)
            del future, chunk
    finally:
        for future, _ in inflight:
            future.cancel()
        if bar is not None:
            bar.close()
