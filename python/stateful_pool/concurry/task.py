"""``TaskWorker``: a pool for plain functions, and a real :class:`concurrent.futures.Executor`
so executor code runs unchanged::

    with TaskWorker.options(mode="process", max_workers=4).init() as pool:
        pool.submit(pow, 2, 10).result()                 # 1024
        list(pool.map(abs, [-1, -2], progress=True))     # [1, 2]
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, ClassVar

import cloudpickle

from .._serialize import by_value
from ..errors import PoolShutDownError
from ._executor_map import executor_map
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

    _function_method: ClassVar[str | None] = "run"

    def run(self, fn_blob: bytes | Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Runs the cloudpickled ``fn_blob`` with the arguments (through a pool, the host runs
        the function itself: see ``WorkerHost.invoke``)."""
        return self._function(fn_blob)(*args, **kwargs)

    def _function(self, handle: Any) -> Callable[..., Any]:
        """The function ``handle`` stands for: a cloudpickle (unpickled once per worker), or
        the function itself in the in-process modes (its closure is shared, as the caller
        expects)."""
        if not isinstance(handle, bytes):
            if not callable(handle):
                raise TypeError(f"expected a function, got {type(handle).__name__}")
            return handle  # type: ignore[no-any-return]
        fn = self._functions.get(handle)
        if fn is None:
            if len(self._functions) > 64:
                self._functions.clear()
            fn = self._functions[handle] = cloudpickle.loads(handle)
        return fn


class TaskPool(WorkerPool, concurrent.futures.Executor):
    """A pool of :class:`TaskWorker`: ``submit(fn, *args)`` and ``map(fn, *iterables)``, and
    everything a :class:`concurrent.futures.Executor` does (``shutdown``, ``with``,
    ``loop.run_in_executor``). Functions travel by cloudpickle (lambdas and ``__main__``
    functions work); retries and limits of the pool apply to every call.

    ``TaskWorker.options(...).init(fn=square)`` binds a function: then ``pool.submit(x)``,
    ``pool(x)`` and ``pool.map(xs)`` take only the data."""

    def __init__(self, worker_cls: type[Worker], args: tuple[Any, ...], kwargs: dict[str, Any], **options: Any):
        max_workers = options.get("max_workers")
        # As executors refuse it; concurry's Ray mode takes 0 (Ray schedules): one actor here,
        # as for a Worker.
        ray_default = max_workers == 0 and options.get("mode") == "ray"
        if max_workers is not None and max_workers <= 0 and not options.get("on_demand") and not ray_default:
            raise ValueError(f"max_workers must be greater than 0, got {max_workers}")
        kwargs = dict(kwargs)
        bound = kwargs.pop("fn", None)
        if bound is not None and not callable(bound):
            raise TypeError(f"fn must be callable, got {type(bound).__name__}")
        self._in_process = options.get("mode") in _IN_PROCESS
        self._bound_blob: bytes | Callable[..., Any] | None = None
        if bound is not None:
            self._bound_blob = bound if self._in_process else by_value(bound)
        self.fn = bound
        super().__init__(worker_cls, args, kwargs, **options)

    def _blob(self, what: str, args: tuple[Any, ...]) -> tuple[bytes | Callable[..., Any], tuple[Any, ...]]:
        """The pickled function to run and its arguments: the bound one, or the first argument."""
        if self._bound_blob is not None:
            return self._bound_blob, args
        fn = args[0] if args else None
        if not callable(fn):
            raise TypeError(f"{what}() requires a callable function, got {type(fn).__name__}")
        return (fn if self._in_process else by_value(fn)), args[1:]

    def _check_accepting(self) -> None:
        # Past shutdown, including the SPool's own at interpreter exit: raise, as executors do.
        if self._stopped:
            raise PoolShutDownError(self._stopped_message())
        spool = self.spool
        if spool is not None and spool._closed:
            raise PoolShutDownError("cannot schedule new futures after shutdown")

    def submit(self, /, *args: Any, **kwargs: Any) -> Any:
        """Runs ``fn(*args, **kwargs)`` on a worker (``submit(fn, *args)``, or ``submit(*args)``
        with a bound function); returns a future (the value with ``blocking=True``). Futures
        among the arguments are waited for first. Any keyword reaches the function (``self``
        and ``fn`` too). Raises :class:`PoolShutDownError` (a ``RuntimeError``) after shutdown."""
        self._check_accepting()
        blob, rest = self._blob("submit", args)
        future = self._submit("run", (blob, *rest), kwargs)
        return future.result() if self._blocking else future

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        """``pool(*args)``: :meth:`submit`."""
        return self.submit(*args, **kwargs)

    def map(
        self,
        /,
        *fn_and_iterables: Any,
        timeout: float | None = None,
        chunksize: int | None = None,
        ordered: bool = True,
        progress: bool | str | dict[str, Any] = False,
        window: int | None = None,
    ) -> Iterator[Any]:
        """Submits ``fn(*items)`` for the items of ``iterables`` zipped and yields the results,
        in input order (or as they finish with ``ordered=False``), with a tqdm bar if
        ``progress``. As :meth:`concurrent.futures.Executor.map`, every call is submitted now
        and ``timeout`` (counted from this call) cancels the calls not done when it runs out;
        with ``window``, at most that many chunks are in flight (the first ``window`` submitted
        now, the rest as results are taken), so huge or endless inputs work. Calls travel in
        chunks of ``chunksize`` (at least 1; ``None``: sized automatically, see
        ``_executor_map``); one call's exception fails that call only."""
        self._check_accepting()
        blob, iterables = self._blob("map", fn_and_iterables)
        bar = None
        if progress:  # no bar at all without progress: even a disabled tqdm starts a thread
            sized = [len(it) for it in iterables if hasattr(it, "__len__")]
            bar_options: dict[str, Any] = {"desc": progress if isinstance(progress, str) else None, "unit": "task"}
            if isinstance(progress, dict):
                bar_options.update(progress)
            bar = ProgressBar(total=min(sized) if sized else None, **bar_options)
        spool = self.spool
        submit_chunk = None
        if spool is not None:  # on demand, every call has a worker of its own: no chunks

            def send(chunk: list[tuple[Any, ...]]) -> Future[Any]:
                return spool._submit_chunk("run", chunk, (blob,), spread=True)

            def submit_chunk(chunk: list[tuple[Any, ...]]) -> Future[Any]:
                return when_resolved((chunk,), {}, send) if self._unwrap_futures else send(chunk)

        return executor_map(
            lambda args: when_resolved((blob, *args), {}, lambda *a: self._dispatch("run", a, {})),
            iterables,
            timeout=timeout,
            chunksize=chunksize,
            ordered=ordered,
            window=window,
            bar=bar,
            submit_chunk=submit_chunk,
            workers=self.max_workers,
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops the pool (:meth:`concurrent.futures.Executor.shutdown`): with ``wait``,
        returns once every worker has exited, even after an earlier ``shutdown(wait=False)``.
        ``cancel_futures`` cancels queued calls. Without ``wait``, the calls already
        submitted still run and the pool's threads end once they are done."""
        spool = self.spool
        self._stopped = True
        if spool is None:  # on demand: the drivers run what is queued, then end
            self._backend.stop(None if wait else 0.0)
            return
        spool.shutdown(wait=wait, cancel_pending=cancel_futures)

    def __enter__(self) -> TaskPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)
