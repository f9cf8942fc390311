"""Hosts for the in-process modes: each runs one worker instance and answers the calls the
Rust supervisor (``_core.Engine``) sends it through a ``HostChannel``. A thread or asyncio host
has a daemon thread of its own; a sync host (``_sync.py``) has none: the threads that call the
pool run its setup and its calls while they wait (``HostChannel.serve_inline``).

The supervisor owns queueing, timeouts, restarts and stats; a host only runs calls. A host
answers each call with ``Replier.ok`` (the result object), ``.raised`` (the exception, with the
worker-side traceback as its ``__cause__``, as in process mode) or ``.fatal`` (the host cannot
go on: the call fails with ``WorkerCrashedError`` and the worker is started again).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import functools
import inspect
import os
import pickle
import threading
import traceback
from collections.abc import Callable
from typing import Any

from .. import _protocol as protocol
from .._chunk import CHUNK_METHOD, await_reply, call_method
from .._protocol import decode_init
from .._serialize import safe_str
from ..batching import arun_coalesced, run_coalesced
from ..errors import RemoteTraceback
from ..worker import check_method_name

__all__ = ["WorkerLost", "call_args", "launch_asyncio", "launch_thread", "remote_exception"]


class _Interrupted(BaseException):
    """Raised asynchronously in a thread host whose call the supervisor gave up on."""


class WorkerLost(BaseException):
    """Raised by a host's call when the worker behind it is gone (a dead Ray actor): the call
    fails with ``WorkerCrashedError`` carrying this message, and the worker is restarted."""


def call_args(payload: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """``(method, args, kwargs)`` of a call payload: a tuple, its pickle, or the buffer list
    of ``_serialize.encode`` (header, pickle body, out-of-band buffers: arrays are rebuilt on
    the caller's memory, not copied). Raises if ``method`` is not a public method name."""
    if isinstance(payload, tuple):
        method, args, kwargs = payload
        check_method_name(method)
        return payload
    if isinstance(payload, list):
        method, args, kwargs = pickle.loads(payload[1], buffers=payload[2:])
    else:
        method, args, kwargs = pickle.loads(payload)
    return check_method_name(method), tuple(args), dict(kwargs)


def remote_exception(exc: BaseException) -> BaseException:
    """``exc`` as process mode delivers it: the worker's traceback text as its ``__cause__``,
    no live frames (they would keep the worker's locals alive in the caller)."""
    if isinstance(exc.__cause__, RemoteTraceback):
        return exc
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException as e:  # a hostile __cause__ or __notes__ must not take the host down
        tb = f"{type(exc).__name__}: {safe_str(exc)}\n(traceback unavailable: {type(e).__name__})\n"
    exc.__cause__ = RemoteTraceback(tb)  # type: ignore[arg-type]  # typeshed says a traceback; it is the text
    exc.__context__ = None  # already part of the traceback text
    return exc.with_traceback(None)


def _interrupt(ident: int) -> None:
    # Best effort: lands at the next bytecode, so a blocking C call (time.sleep) finishes first.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(_Interrupted))


# -- thread and sync modes --------------------------------------------------------------------


def _set_up(channel: Any, init: Any, kill: Callable[[], None] | None, what: str) -> Callable[..., Any] | None:
    """Makes the worker instance, runs its ``spawn`` and reports it on ``channel``; returns
    how to run one call on it (``run(payload)``; ``run(payloads, True)`` for a coalesced call,
    see :mod:`stateful_pool.batching`), or ``None`` when the setup failed (and was reported)."""
    try:
        worker_cls, args, kwargs = decode_init(init)
        instance = worker_cls()
        ready = instance.spawn(*args, **kwargs)
    except Exception as exc:
        channel.ready(protocol.READY_RAISED, remote_exception(exc))
        return None
    except BaseException as exc:
        channel.ready(protocol.READY_FATAL, f"{what} exited during setup: {type(exc).__name__}: {safe_str(exc)}")
        return None
    channel.ready(protocol.READY_OK, ready, kill, os.getpid())
    del ready, args, kwargs

    def run(payload: Any, coalesced: bool = False) -> Any:
        if coalesced:
            return run_coalesced(instance, [call_args(p) for p in payload])
        return call_method(instance, *call_args(payload))

    return run


def launch_thread(channel: Any, init: Any) -> None:
    """Launcher for ``mode="thread"``: one daemon thread per worker."""
    name = f"stateful-pool-thread-{decode_init(init)[0].__name__}"
    threading.Thread(target=_serve_thread, args=(channel, init), name=name, daemon=True).start()


def _serve_thread(channel: Any, init: Any) -> None:
    try:
        run = _set_up(channel, init, functools.partial(_interrupt, threading.get_ident()), "worker thread")
        if run is not None:
            serve_calls(channel, run)
    except _Interrupted:
        pass  # the supervisor gave up on this host (timeout or kill) and has replaced it
    finally:
        channel.exited()


def serve_one(run: Callable[..., Any], request: Any, *, inline: bool = False) -> bool:
    """Answers one request; returns whether the host goes on. ``run(payload)`` returns the
    result; an exception that is neither an ``Exception`` nor ``SystemExit`` (a lost Ray actor,
    ...) is fatal, except Ctrl-C in a call run ``inline`` by its caller: it reaches the caller."""
    kind, _call_id, payload, replier = request
    coalesced = payload if kind == protocol.REQUEST_COALESCED else None  # several calls at once (batching)
    if kind != protocol.REQUEST_CALL and coalesced is None:
        return True  # one call at a time: there is nothing to cancel between calls
    try:
        result = run(payload) if coalesced is None else run(payload, True)
    except _Interrupted:
        raise
    except (Exception, SystemExit) as exc:  # SystemExit fails its task only, as in concurrent.futures
        _reply_raised(replier, exc, coalesced)
    except WorkerLost as exc:
        replier.fatal(safe_str(exc))
        return False
    except BaseException as exc:
        replier.fatal(f"worker thread exited: {type(exc).__name__}: {safe_str(exc)}")
        if inline and isinstance(exc, KeyboardInterrupt):
            raise
        return False
    else:
        if coalesced is None:
            replier.ok(result)
        else:
            _reply_coalesced(replier, result)
    return True


def _reply_raised(replier: Any, exc: BaseException, coalesced: list[Any] | None) -> None:
    """Fails a call with ``exc``; a coalesced call (``coalesced``: its payloads) item by item."""
    exc = remote_exception(exc)
    if coalesced is None:
        replier.raised(exc)
    else:
        replier.coalesced([(False, exc)] * len(coalesced))


def _reply_coalesced(replier: Any, outcomes: list[tuple[bool, Any]]) -> None:
    replier.coalesced([(ok, value if ok else remote_exception(value)) for ok, value in outcomes])


def serve_calls(channel: Any, run: Callable[[Any], Any]) -> None:
    """Answers calls one at a time until told to stop (see :func:`serve_one`)."""
    while (request := channel.recv()) is not None:
        if not serve_one(run, request):
            return
        del request  # the caller may drop its arguments and result: this thread keeps neither


# -- asyncio mode -----------------------------------------------------------------------------


def launch_asyncio(channel: Any, init: Any) -> None:
    """Launcher for ``mode="asyncio"``: one event loop thread per worker, with up to
    ``max_concurrency`` calls in flight on the loop. A call may return
    an awaitable (a coroutine, or a ``run_in_executor`` future for blocking work): the host
    awaits it; the loop's default executor is shut down, its threads joined, when the host ends."""
    name = f"stateful-pool-asyncio-{decode_init(init)[0].__name__}"
    threading.Thread(target=_serve_asyncio, args=(channel, init), name=name, daemon=True).start()


class CallThreads(concurrent.futures.ThreadPoolExecutor):
    """An asyncio host's default executor (``run_in_executor(None, ...)``): a thread for each
    call, all joined by ``shutdown``. Unlike its base class it keeps taking calls during
    interpreter shutdown (the stdlib's executors refuse them, and the pool lets submitted work
    finish at exit); a ``ThreadPoolExecutor`` still, as ``loop.set_default_executor`` requires.
    Calls in flight are bounded by the worker's ``max_concurrency``."""

    def __init__(self, name: str) -> None:
        super().__init__(max_workers=1)  # makes no thread; only this class's own are used
        self._name = name
        self._calls: set[threading.Thread] = set()
        self._calls_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Runs ``fn(*args, **kwargs)`` in a new thread; returns its future."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as exc:
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
            finally:
                with self._calls_lock:
                    self._calls.discard(thread)

        thread = threading.Thread(target=call, name=self._name, daemon=True)
        with self._calls_lock:
            self._calls.add(thread)
        thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Waits (with ``wait``) for the calls still running; there is never a queue."""
        while wait:
            with self._calls_lock:
                running = next(iter(self._calls), None)
            if running is None:
                return
            running.join()


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _serve_asyncio(channel: Any, init: Any) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    call_threads = CallThreads(f"{threading.current_thread().name}-call")
    loop.set_default_executor(call_threads)
    try:
        try:
            worker_cls, args, kwargs = decode_init(init)
            instance = worker_cls()
            ready = loop.run_until_complete(_maybe_await(instance.spawn(*args, **kwargs)))
        except Exception as exc:
            channel.ready(protocol.READY_RAISED, remote_exception(exc))
            return
        except BaseException as exc:
            channel.ready(
                protocol.READY_FATAL, f"worker event loop exited during setup: {type(exc).__name__}: {safe_str(exc)}"
            )
            return
        tasks: dict[int, asyncio.Task[None]] = {}

        async def run(payload: Any, replier: Any, coalesced: list[Any] | None) -> None:
            try:
                if coalesced is not None:
                    _reply_coalesced(replier, await arun_coalesced(instance, [call_args(p) for p in coalesced]))
                    return
                method, call_a, call_kw = call_args(payload)
                result = await await_reply(call_method(instance, method, call_a, call_kw), method == CHUNK_METHOD)
            except asyncio.CancelledError:
                return  # the supervisor timed the call out or killed it, and already replied
            except (Exception, SystemExit) as exc:  # SystemExit fails its task only
                _reply_raised(replier, exc, coalesced)
            except BaseException as exc:
                replier.fatal(f"worker event loop exited: {type(exc).__name__}: {safe_str(exc)}")
                loop.stop()
            else:
                replier.ok(result)

        def dispatch(request: Any) -> None:
            if request is None:
                loop.stop()
                return
            kind, call_id, payload, replier = request
            if kind == protocol.REQUEST_CANCEL:
                task = tasks.get(call_id)
                if task is not None:
                    task.cancel()
                return
            task = loop.create_task(run(payload, replier, payload if kind == protocol.REQUEST_COALESCED else None))
            tasks[call_id] = task
            task.add_done_callback(lambda _t: tasks.pop(call_id, None))

        def feed() -> None:
            # The channel blocks; the loop must not, so a helper thread hands requests over.
            while True:
                request = channel.recv()
                last = request is None
                try:
                    loop.call_soon_threadsafe(dispatch, request)
                except RuntimeError:
                    return  # the loop is closed: the host is gone
                del request  # not kept while waiting for the next: the caller may drop its arguments
                if last:
                    return

        channel.ready(protocol.READY_OK, ready, None, os.getpid())
        del ready
        threading.Thread(target=feed, name="stateful-pool-asyncio-feeder", daemon=True).start()
        loop.run_forever()
        for task in tasks.values():
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks.values(), return_exceptions=True))
    finally:
        try:
            # Calls the worker ran with run_in_executor (a TaskWorker's plain functions) end
            # here: the host leaves no thread behind (CallThreads.shutdown joins them). Joined
            # directly: a crashing call may have stopped the loop again, and a stopped loop
            # cannot run `shutdown_default_executor`.
            call_threads.shutdown(wait=True)
        finally:
            loop.close()
            channel.exited()
