"""The worker process: ``python -c "from stateful_pool._worker import main; main()"``.

Started by the Rust supervisor with its channel on inherited descriptors (shared memory, or
pipes); it hosts one worker instance and answers frames until told to stop or the supervisor
is gone.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ._serialize import decode, encode, safe_str
from .errors import ResultPicklingError
from .worker import check_method_name

if TYPE_CHECKING:
    from ._core import Payload

INIT, CALL, STOP, READY, OK, RAISED = 1, 2, 3, 10, 11, 12


def _setup(payload: Payload) -> tuple[Any, list[Any]]:
    import pickle

    import cloudpickle

    sys_path, class_blob, args_blob = pickle.loads(payload)  # type: ignore[arg-type]  # a buffer
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    worker_cls = cloudpickle.loads(class_blob)
    args, kwargs = pickle.loads(args_blob)
    worker = worker_cls()
    return worker, encode(worker.spawn(*args, **kwargs))


def _call(worker: Any, payload: Payload) -> list[Any]:
    method, args, kwargs = decode(payload)
    if type(method) is not str or method[:1] == "_":  # inline: this runs once per task
        check_method_name(method)  # raises
    result = getattr(worker, method)(*args, **kwargs)
    try:
        return encode(result)
    except Exception as e:
        why = safe_str(e)
        name = f"{type(worker).__name__}.{method}()"
        raise ResultPicklingError(f"the result of {name} could not be pickled: {why}") from e


def main() -> None:
    from . import _upcall
    from ._core import CoreEndpoint
    from ._serialize import dump_exception

    channel = CoreEndpoint()
    _upcall.bind(channel)  # tasks may ask the parent things on this channel (task trees do)
    worker = None
    while True:
        frame = channel.recv()
        if frame is None or frame[0] == STOP:
            break
        kind, task_id, payload = frame
        try:
            if kind == INIT:
                worker, ready = _setup(payload)
                channel.send(READY, task_id, ready)
            elif kind == CALL:
                reply = _call(worker, payload)
                del payload  # the arguments' buffers can go before we wait for the next call
                channel.send(OK, task_id, reply)
            else:
                raise RuntimeError(f"unexpected frame kind {kind}")
        except BaseException as exc:
            # SystemExit from a task is an exception like any other (as in
            # concurrent.futures): its task fails with it and the worker keeps serving.
            if isinstance(exc, KeyboardInterrupt) and kind == CALL:
                raise
            channel.send(RAISED, task_id, [dump_exception(exc)])
    sys.stdout.flush()
    sys.stderr.flush()
