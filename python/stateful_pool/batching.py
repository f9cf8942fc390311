"""Dynamic batching: :func:`batched` marks a worker method that takes a list of items and
returns a list of results; callers still call it with one item at a time, and the pool's core
(``src/sched/gather.rs``) gathers queued calls to it into one *coalesced call*.

This module holds the decorator and what a worker does with a coalesced call, whatever the
mode: split the calls into items, call the method once with the list, and turn what it did into
one outcome per item (a returned value, or an exception: the whole call's, or the item's own
when the method returned an exception object in its place).
"""

from __future__ import annotations

import functools
import inspect
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, overload

__all__ = ["BatchSizeError", "BatchedMethod", "batched", "batched_methods"]

_T = TypeVar("_T")

# A coalesced request (process mode, see src/process/coalesce.rs): the core's COALESCED_MARKER
# where a single call's payload keeps its count of out-of-band buffers (the worker loop checks
# it), a u32 call count, a u64 length per call.
_COUNT = struct.Struct("<I")
_ENTRY = struct.Struct("<BQ")

Outcome = tuple[bool, Any]
"""``(True, result)`` or ``(False, exception)``: one item's share of a coalesced call."""


class BatchSizeError(ValueError):
    """A batched method returned a number of results other than the number of items it got
    (or something without a length); every item of that call fails with it."""


class BatchedMethod(Generic[_T]):
    """A worker method declared with :func:`batched`. On an instance it takes one item and
    returns its result (a batch of one); the pool gathers concurrent calls into lists."""

    def __init__(self, fn: Callable[[_T, list[Any]], Any], max_size: int, max_wait: float) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be an int of at least 1, got {max_size!r}")
        if not isinstance(max_wait, (int, float)) or not math.isfinite(max_wait) or max_wait < 0:
            raise ValueError(f"max_wait must be a finite number of seconds >= 0, got {max_wait!r}")
        self.fn = fn
        self.max_size = max_size
        self.max_wait = float(max_wait)
        self.name = fn.__name__
        functools.update_wrapper(self, fn)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> BatchedMethod[_T]: ...
    @overload
    def __get__(self, instance: _T, owner: type) -> Callable[[Any], Any]: ...
    def __get__(self, instance: _T | None, owner: type) -> Any:
        if instance is None:
            return self
        return functools.partial(self._call_one, instance)

    def __call__(self, instance: _T, item: Any) -> Any:
        """``Class.method(instance, item)``: as ``instance.method(item)``."""
        return self._call_one(instance, item)

    def _call_one(self, instance: _T, item: Any) -> Any:
        """One item alone (a mode that gathers nothing, a direct call): a batch of one."""
        ((returned, value),) = settle(self, instance, 1, _run(self, instance, [item]))
        if returned:
            return value
        raise value

    def __repr__(self) -> str:
        return f"<batched method {self.name} max_size={self.max_size} max_wait={self.max_wait}>"


def batched(
    max_size: int = 32, max_wait: float = 0.005
) -> Callable[[Callable[[_T, list[Any]], Any]], BatchedMethod[_T]]:
    """Declares a worker method as batched: ``def execute(self, items: list) -> list``, called
    by the pool with up to ``max_size`` items gathered from calls made one item at a time, after
    waiting at most ``max_wait`` seconds for the list to fill. It returns one result per item,
    in order; an exception object in the list fails that item only, an exception raised fails
    every item of the call. May be ``async def`` in ``mode="asyncio"``."""

    def wrap(fn: Callable[[_T, list[Any]], Any]) -> BatchedMethod[_T]:
        return BatchedMethod(fn, max_size, max_wait)

    return wrap


def batched_methods(cls: type) -> list[tuple[str, int, float]]:
    """``(name, max_size, max_wait)`` of each batched method of ``cls`` (the engine's option)."""
    found: dict[str, tuple[str, int, float]] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            if isinstance(attr, BatchedMethod):
                found[name] = (name, attr.max_size, attr.max_wait)
            else:
                found.pop(name, None)  # overridden by a plain attribute
    return list(found.values())


def _method(instance: Any, name: str) -> BatchedMethod[Any]:
    attr = inspect.getattr_static(type(instance), name, None)
    if not isinstance(attr, BatchedMethod):
        raise TypeError(f"{type(instance).__name__}.{name}() is not a batched method")
    return attr


def _run(method: BatchedMethod[Any], instance: Any, items: list[Any]) -> Any:
    try:
        return method.fn(instance, items)
    except (Exception, SystemExit) as exc:  # SystemExit fails its tasks only, as for one call
        return exc


def settle(method: BatchedMethod[Any], instance: Any, n: int, results: Any) -> list[Outcome]:
    """One outcome per item from what the method did with ``n`` items: ``results`` is its
    return value, or the exception it raised."""
    if isinstance(results, BaseException):
        return [(False, results)] * n
    try:
        count = len(results)
    except TypeError:
        count = -1
    if count != n or isinstance(results, (str, bytes)):
        what = f"{count} results" if count >= 0 else f"a {type(results).__name__}"
        error = BatchSizeError(
            f"{type(instance).__name__}.{method.name}() returned {what} for a batch of {n} items "
            "(a batched method returns a list with one result per item)"
        )
        return [(False, error)] * n
    return [(not isinstance(r, BaseException), r) for r in results]


def _items(calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> tuple[str, list[Any], list[Outcome | None]]:
    """The method name and items of a coalesced call's calls; a call that is not one item
    (keywords, or not exactly one argument) gets its failure in the second list."""
    name = calls[0][0]
    items: list[Any] = []
    failed: list[Outcome | None] = []
    for method, args, kwargs in calls:
        if method != name or kwargs or len(args) != 1:
            why = f"a batched method takes one item per call, got {len(args)} arguments and {len(kwargs)} keywords"
            failed.append((False, TypeError(f"{method}(): {why}")))
        else:
            items.append(args[0])
            failed.append(None)
    return name, items, failed


def _merge(failed: list[Outcome | None], outcomes: list[Outcome]) -> list[Outcome]:
    it = iter(outcomes)
    return [f if f is not None else next(it) for f in failed]


def run_coalesced(instance: Any, calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Outcome]:
    """Runs ``calls`` (``(method, args, kwargs)`` each, one batched method) as one call of it."""
    name, items, failed = _items(calls)
    method = _method(instance, name)
    outcomes = settle(method, instance, len(items), _run(method, instance, items)) if items else []
    return _merge(failed, outcomes)


async def arun_coalesced(instance: Any, calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Outcome]:
    """:func:`run_coalesced` for an event loop: the method may be ``async def``."""
    name, items, failed = _items(calls)
    method = _method(instance, name)
    results = _run(method, instance, items) if items else []
    if inspect.isawaitable(results):
        try:
            results = await results
        except (Exception, SystemExit) as exc:
            results = exc
    outcomes = settle(method, instance, len(items), results) if items else []
    return _merge(failed, outcomes)


# -- process mode: the coalesced frame -----------------------------------------------------


def split_request(payload: Any) -> list[memoryview]:
    """The single-call payloads inside a coalesced call's payload (views, not copies)."""
    view = memoryview(payload).cast("B")
    (count,) = _COUNT.unpack_from(view, 4)
    sizes = struct.unpack_from(f"<{count}Q", view, 8)
    offset = 8 + 8 * count
    parts = []
    for size in sizes:
        parts.append(view[offset : offset + size])
        offset += size
    return parts


def encode_reply(outcomes: list[tuple[bool, list[Any]]]) -> list[Any]:
    """The buffers of a coalesced call's reply: ``outcomes`` holds, per item, whether it
    returned and its reply payload's buffers (as a single call's ``Ok`` or ``Raised`` reply)."""
    header = bytearray(_COUNT.pack(len(outcomes)))
    body: list[Any] = []
    for returned, buffers in outcomes:
        header += _ENTRY.pack(0 if returned else 1, sum(memoryview(b).nbytes for b in buffers))
        body.extend(buffers)
    return [bytes(header), *body]


def answer_coalesced(instance: Any, payload: Any) -> list[Any]:
    """A worker process's reply to a coalesced call frame: decodes each call, runs them as one
    call of the batched method, encodes each item's outcome (a result that will not pickle
    fails its item only)."""
    from ._serialize import decode, dump_exception, encode, safe_str
    from .errors import ResultPicklingError

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    undecodable: dict[int, BaseException] = {}
    for index, part in enumerate(split_request(payload)):
        try:
            method, args, kwargs = decode(part)
            calls.append((method, tuple(args), dict(kwargs)))
        except Exception as exc:
            undecodable[index] = exc
            calls.append(("", (), {"": None}))  # fails as "not one item"; replaced below
    outcomes = run_coalesced(instance, calls)
    encoded: list[tuple[bool, list[Any]]] = []
    for index, (returned, value) in enumerate(outcomes):
        value = undecodable.get(index, value)
        if returned:
            try:
                encoded.append((True, encode(value)))
                continue
            except Exception as e:
                name = f"{type(instance).__name__}.{calls[index][0]}()"
                value = ResultPicklingError(f"the result of {name} could not be pickled: {safe_str(e)}")
        encoded.append((False, [dump_exception(value)]))
    return encode_reply(encoded)
