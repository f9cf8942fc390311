"""The worker process: ``python -c "from stateful_pool._worker import main; main()"``.

Started by the Rust supervisor with its channel on inherited descriptors (shared memory, or
pipes); it hosts one worker instance and answers frames until told to stop or the supervisor
is gone.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ._chunk import CHUNK_METHOD, portable, run_chunk
from ._core import COALESCED_MARKER
from ._protocol import FRAME_CALL, FRAME_INIT, FRAME_OK, FRAME_RAISED, FRAME_READY, FRAME_STOP, decode_init
from ._serialize import BUFFER_COUNT, PLAIN_HEADER_LEN, decode_counted, encode, loads, safe_str
from .batching import answer_coalesced
from .errors import ResultPicklingError
from .worker import check_method_name

if TYPE_CHECKING:
    from ._core import Payload


# A method name starting with one of these is private ("_") or reserved (CHUNK_METHOD).
_RESERVED_FIRST = "_" + CHUNK_METHOD[0]


def _setup(payload: Payload) -> tuple[Any, list[Any]]:
    worker_cls, args, kwargs = decode_init(payload)
    worker = worker_cls()
    return worker, encode(worker.spawn(*args, **kwargs))


def _call(worker: Any, payload: Any) -> list[Any]:  # payload: a Payload (a buffer)
    # Inline and in this order: this runs once per task, and a hot round trip is ~10 µs.
    view = memoryview(payload).cast("B")
    (count,) = BUFFER_COUNT.unpack_from(view)
    if count == 0:  # no out-of-band buffer, as most calls: decode_counted's first case
        method, args, kwargs = loads(view[PLAIN_HEADER_LEN:])
    elif count == COALESCED_MARKER:  # several calls of a batched method (stateful_pool.batching)
        return answer_coalesced(worker, view)
    else:
        method, args, kwargs = decode_counted(view, count)
    if type(method) is not str or method[:1] in _RESERVED_FIRST:
        if method == CHUNK_METHOD:  # many items in one call (see _chunk.py)
            return portable(run_chunk(worker, *args))
        check_method_name(method)  # raises
    result = getattr(worker, method)(*args, **kwargs)
    try:
        return encode(result)
    except Exception as e:
        why = safe_str(e)
        name = f"{type(worker).__name__}.{method}()"
        raise ResultPicklingError(f"the result of {name} could not be pickled: {why}") from e


def main() -> None:
    from . import _output, _upcall

    _output.install()  # print and logging output reaches the parent prefixed (worker_output=)
    from ._core import CoreEndpoint
    from ._serialize import dump_exception

    channel = CoreEndpoint()
    _upcall.bind(channel)  # tasks may ask the parent things on this channel (task trees do)
    worker = None
    while True:
        frame = channel.recv()
        if frame is None or frame[0] == FRAME_STOP:
            break
        kind, task_id, payload = frame
        try:
            if kind == FRAME_INIT:
                worker, ready = _setup(payload)
                channel.send(FRAME_READY, task_id, ready)
            elif kind == FRAME_CALL:
                reply = _call(worker, payload)
                del payload  # the arguments' buffers can go before we wait for the next call
                channel.send(FRAME_OK, task_id, reply)
            else:
                raise RuntimeError(f"unexpected frame kind {kind}")
        except BaseException as exc:
            # SystemExit from a task is an exception like any other (as in
            # concurrent.futures): its task fails with it and the worker keeps serving.
            if isinstance(exc, KeyboardInterrupt) and kind == FRAME_CALL:
                raise
            channel.send(FRAME_RAISED, task_id, [dump_exception(exc)])
    sys.stdout.flush()
    sys.stderr.flush()
