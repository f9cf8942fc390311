"""Host threads for the in-process modes: each runs one worker instance and answers the calls
the Rust supervisor (``_core.CoreThreadPool``) sends it through a ``HostChannel``.

The supervisor owns queueing, timeouts, restarts and stats; a host only runs calls. A host
answers each call with ``Replier.ok`` (the result object), ``.raised`` (the exception, with the
worker-side traceback as its ``__cause__``, as in process mode) or ``.fatal`` (the host cannot
go on: the call fails with ``WorkerCrashedError`` and the worker is started again).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import inspect
import os
import pickle
import threading
import traceback
from collections.abc import Callable
from typing import Any

from .._serialize import safe_str
from ..errors import RemoteTraceback
from ..worker import check_method_name

__all__ = ["WorkerLost", "call_args", "init_args", "launch_asyncio", "launch_thread", "remote_exception"]

_CALL, _CANCEL = 0, 1
_OK, _RAISED, _FATAL = 0, 1, 2


class _Interrupted(BaseException):
    """Raised asynchronously in a thread host whose call the supervisor gave up on."""


class WorkerLost(BaseException):
    """Raised by a host's call when the worker behind it is gone (a dead Ray actor): the call
    fails with ``WorkerCrashedError`` carrying this message, and the worker is restarted."""


def init_args(init: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The spawn arguments of an init payload: ``(args, kwargs)``, or the process-mode bytes
    ``(sys_path, class_blob, pickled (args, kwargs))`` that ``SPool`` builds."""
    if isinstance(init, tuple):
        return init
    _sys_path, _class_blob, args_blob = pickle.loads(init)
    args, kwargs = pickle.loads(args_blob)
    return tuple(args), dict(kwargs)


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


# -- thread mode ------------------------------------------------------------------------------


def launch_thread(worker_cls: type, channel: Any, init: Any) -> None:
    """``CoreThreadPool`` launcher for ``mode="thread"``: one daemon thread per worker."""
    name = f"stateful-pool-thread-{worker_cls.__name__}"
    threading.Thread(target=_serve_thread, args=(worker_cls, channel, init), name=name, daemon=True).start()


def _serve_thread(worker_cls: type, channel: Any, init: Any) -> None:
    try:
        try:
            args, kwargs = init_args(init)
            instance = worker_cls()
            ready = instance.spawn(*args, **kwargs)
        except Exception as exc:
            channel.ready(_RAISED, remote_exception(exc))
            return
        except BaseException as exc:
            channel.ready(_FATAL, f"worker thread exited during setup: {type(exc).__name__}: {safe_str(exc)}")
            return
        channel.ready(_OK, ready, functools.partial(_interrupt, threading.get_ident()), os.getpid())
        del ready, args, kwargs

        def run(payload: Any) -> Any:
            method, args, kwargs = call_args(payload)
            return getattr(instance, method)(*args, **kwargs)

        serve_calls(channel, run)
    except _Interrupted:
        pass  # the supervisor gave up on this host (timeout or kill) and has replaced it
    finally:
        channel.exited()


def serve_calls(channel: Any, run: Callable[[Any], Any]) -> None:
    """Answers calls one at a time until told to stop. ``run(payload)`` returns the result; an
    exception that is neither an ``Exception`` nor ``SystemExit`` (a lost Ray actor, ...) is fatal."""
    while (request := channel.recv()) is not None:
        kind, _call_id, payload, replier = request
        if kind != _CALL:
            continue  # one call at a time: there is nothing to cancel between calls
        try:
            result = run(payload)
        except _Interrupted:
            raise
        except (Exception, SystemExit) as exc:  # SystemExit fails its task only, as in concurrent.futures
            replier.raised(remote_exception(exc))
        except WorkerLost as exc:
            replier.fatal(safe_str(exc))
            return
        except BaseException as exc:
            replier.fatal(f"worker thread exited: {type(exc).__name__}: {safe_str(exc)}")
            return
        else:
            replier.ok(result)
            del result  # the caller may drop it: this thread must not keep it while it waits
        del request, payload, replier


# -- asyncio mode -----------------------------------------------------------------------------


def launch_asyncio(worker_cls: type, channel: Any, init: Any) -> None:
    """``CoreThreadPool`` launcher for ``mode="asyncio"``: one event loop thread per worker;
    its lanes (``max_concurrency``) put up to that many calls in flight on the loop."""
    name = f"stateful-pool-asyncio-{worker_cls.__name__}"
    threading.Thread(target=_serve_asyncio, args=(worker_cls, channel, init), name=name, daemon=True).start()


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _serve_asyncio(worker_cls: type, channel: Any, init: Any) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        try:
            args, kwargs = init_args(init)
            instance = worker_cls()
            ready = loop.run_until_complete(_maybe_await(instance.spawn(*args, **kwargs)))
        except Exception as exc:
            channel.ready(_RAISED, remote_exception(exc))
            return
        except BaseException as exc:
            channel.ready(_FATAL, f"worker event loop exited during setup: {type(exc).__name__}: {safe_str(exc)}")
            return
        tasks: dict[int, asyncio.Task[None]] = {}

        async def run(payload: Any, replier: Any) -> None:
            try:
                method, call_a, call_kw = call_args(payload)
                result = await _maybe_await(getattr(instance, method)(*call_a, **call_kw))
            except asyncio.CancelledError:
                return  # the supervisor timed the call out or killed it, and already replied
            except (Exception, SystemExit) as exc:  # SystemExit fails its task only
                replier.raised(remote_exception(exc))
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
            if kind == _CANCEL:
                task = tasks.get(call_id)
                if task is not None:
                    task.cancel()
                return
            task = loop.create_task(run(payload, replier))
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

        channel.ready(_OK, ready, None, os.getpid())
        del ready
        threading.Thread(target=feed, name="stateful-pool-asyncio-feeder", daemon=True).start()
        loop.run_forever()
        for task in tasks.values():
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks.values(), return_exceptions=True))
    finally:
        loop.close()
        channel.exited()
