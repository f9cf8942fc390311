"""``TaskWorker``: a pool for plain functions, and a real :class:`concurrent.futures.Executor`
so executor code runs unchanged::

    with TaskWorker.options(mode="process", max_workers=4).init() as pool:
        pool.submit(pow, 2, 10).result()                 # 1024
        list(pool.map(abs, [-1, -2], progress=True))     # [1, 2]
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import cloudpickle

from .futures import when_resolved
from .pool import WorkerPool
from .progress import ProgressBar
from .worker import Worker

__all__ = ["TaskPool", "TaskWorker"]

_IN_PROCESS = ("sync", "thread", "asyncio")  # modes whose workers share the caller's memory


class TaskWorker(Worker):
    """A worker that runs whatever function it is given."""

    _pool_class: ClassVar[str] = "TaskPool"
    # Per-method retry settings name the pool's methods; every one of them runs ``run``.
    _method_aliases: ClassVar[dict[str, str]] = {"submit": "run", "map": "run", "__call__": "run"}

    def __init__(self, fn: Callable[..., Any] | None = None) -> None:
        del fn  # a bound function stays with the pool, which sends it with each call
        self._functions: dict[bytes, Callable[..., Any]] = {}

    def run(self, fn_blob: bytes | Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Runs the cloudpickled ``fn_blob`` with the arguments (the function is unpickled
        once per worker); in-process modes pass the function itself (its closure is shared,
        as the caller expects)."""
        if not isinstance(fn_blob, bytes):
            return fn_blob(*args, **kwargs)
        fn = self._functions.get(fn_blob)
        if fn is None:
            if len(self._functions) > 64:
                self._functions.clear()
            fn = self._functions[fn_blob] = cloudpickle.loads(fn_blob)
        return fn(*args, **kwargs)


class TaskPool(WorkerPool, concurrent.futures.Executor):
    """A pool of :class:`TaskWorker`: ``submit(fn, *args)`` and ``map(fn, *iterables)``, and
    everything a :class:`concurrent.futures.Executor` does (``shutdown``, ``with``,
    ``loop.run_in_executor``). Functions travel by cloudpickle (lambdas and ``__main__``
    functions work); retries and limits of the pool apply to every call.

    ``TaskWorker.options(...).init(fn=square)`` binds a function: then ``pool.submit(x)``,
    ``pool(x)`` and ``pool.map(xs)`` take only the data."""

    def __init__(self, worker_cls: type[Worker], args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any):
        kwargs = dict(kwargs)
        bound = kwargs.pop("fn", None)
        if bound is not None and not callable(bound):
            raise TypeError(f"fn must be callable, got {type(bound).__name__}")
        self._in_process = options.get("mode") in _IN_PROCESS
        self._bound_blob: bytes | Callable[..., Any] | None = None
        if bound is not None:
            self._bound_blob = bound if self._in_process else cloudpickle.dumps(bound, protocol=5)
        self.fn = bound
        super().__init__(worker_cls, args, kwargs, **options)

    def _blob(self, what: str, args: tuple[Any, ...]) -> tuple[bytes | Callable[..., Any], tuple[Any, ...]]:
        """The pickled function to run and its arguments: the bound one, or the first argument."""
        if self._bound_blob is not None:
            return self._bound_blob, args
        fn = args[0] if args else None
        if not callable(fn):
            raise TypeError(f"{what}() requires a callable function, got {type(fn).__name__}")
        return (fn if self._in_process else cloudpickle.dumps(fn, protocol=5)), args[1:]

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """Runs ``fn(*args, **kwargs)`` on a worker (``submit(fn, *args)``, or ``submit(*args)``
        with a bound function); returns a future (the value with ``blocking=True``). Futures
        among the arguments are waited for first."""
        blob, rest = self._blob("submit", args)
        future = self._submit("run", (blob, *rest), kwargs)
        return future.result() if self._blocking else future

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``pool(*args)``: :meth:`submit`."""
        return self.submit(*args, **kwargs)

    def map(
        self,
        *fn_and_iterables: Any,
        timeout: float | None = None,
        chunksize: int = 1,
        ordered: bool = True,
        progress: bool | str | dict[str, Any] = False,
        window: int | None = None,
    ) -> Iterator[Any]:
        """Yields ``fn(*items)`` for the items of ``iterables`` zipped, in input order (or as
        they finish with ``ordered=False``), at most ``window`` calls in flight (default
        ``4 * max_workers``, at least 64), with a tqdm bar if ``progress``. ``timeout`` and
        ``chunksize`` mean what they mean for :meth:`concurrent.futures.Executor.map`."""
        del chunksize  # each call is one task; the pool's queue already batches
        blob, iterables = self._blob("map", fn_and_iterables)
        window = window or max(64, 4 * self.max_workers)
        sized = [len(it) for it in iterables if hasattr(it, "__len__")]
        bar_options: dict[str, Any] = {"desc": progress if isinstance(progress, str) else None, "unit": "task"}
        bar_options.update(progress if isinstance(progress, dict) else {"disable": not progress})
        bar = ProgressBar(total=min(sized) if sized else None, **bar_options)
        items = zip(*iterables, strict=False)
        inflight: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        def generate() -> Iterator[Any]:
            try:
                exhausted = False
                while True:
                    while not exhausted and len(inflight) < window:
                        try:
                            args = next(items)
                        except StopIteration:
                            exhausted = True
                            break
                        inflight.append(when_resolved((blob, *args), {}, lambda *a: self._dispatch("run", a, {})))
                    if not inflight:
                        return
                    if ordered:
                        done = inflight.popleft()
                    else:
                        finished, _ = concurrent.futures.wait(
                            inflight, timeout=remaining(), return_when=concurrent.futures.FIRST_COMPLETED
                        )
                        if not finished:
                            raise TimeoutError(f"map did not finish within {timeout} s")
                        done = next(iter(finished))
                        inflight.remove(done)
                    result = done.result(timeout=remaining())
                    bar.update(1)
                    yield result
            finally:
                for future in inflight:
                    future.cancel()
                bar.close()

        return generate()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops the pool (:meth:`concurrent.futures.Executor.shutdown`): with ``wait``,
        returns once every worker has exited. ``cancel_futures`` cancels queued calls."""
        if cancel_futures and self.spool is not None and not self._stopped:
            self._stopped = True
            self.spool.shutdown(wait=wait, cancel_pending=True)
            return
        if wait:
            self.stop()
        else:
            self._stopped = True
            if self.spool is not None:
                self.spool.shutdown(wait=False)

    def __enter__(self) -> TaskPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
