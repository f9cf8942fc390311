"""The worker process: ``python -c "from stateful_pool._worker import main; main()"``.

Started by the Rust supervisor with the protocol pipes on fds 3 (read) and 4 (write); it hosts
one worker instance and answers frames until told to stop or its pipe closes (parent gone).
"""

from __future__ import annotations

import os
import struct
import sys
from typing import Any

_HEADER = struct.Struct("<BQQ")
INIT, CALL, STOP, READY, OK, RAISED = 1, 2, 3, 10, 11, 12
READ_FD, WRITE_FD = 3, 4


class _Channel:
    """Blocking frame I/O on the two inherited pipe ends."""

    def __init__(self, read_fd: int, write_fd: int):
        os.set_inheritable(read_fd, False)
        os.set_inheritable(write_fd, False)
        self._reader = os.fdopen(read_fd, "rb", buffering=1 << 16)
        self._write_fd = write_fd

    def recv(self) -> tuple[int, int, bytes] | None:
        header = self._reader.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        kind, task_id, length = _HEADER.unpack(header)
        payload = self._reader.read(length)
        if len(payload) < length:
            return None
        return kind, task_id, payload

    def send(self, kind: int, task_id: int, payload: bytes) -> None:
        header = _HEADER.pack(kind, task_id, len(payload))
        data = memoryview(header + payload if len(payload) <= 1 << 16 else header)
        while data:
            data = data[os.write(self._write_fd, data) :]
        if len(payload) > 1 << 16:
            data = memoryview(payload)
            while data:
                data = data[os.write(self._write_fd, data) :]


def _setup(payload: bytes) -> tuple[Any, bytes]:
    import pickle

    import cloudpickle

    from ._serialize import dumps

    sys_path, class_blob, args_blob = pickle.loads(payload)
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    worker_cls = cloudpickle.loads(class_blob)
    args, kwargs = pickle.loads(args_blob)
    worker = worker_cls()
    return worker, dumps(worker.spawn(*args, **kwargs))


def _call(worker: Any, payload: bytes) -> bytes:
    from ._serialize import dumps, loads

    method, args, kwargs = loads(payload)
    result = getattr(worker, method)(*args, **kwargs)
    try:
        return dumps(result)
    except Exception as e:
        raise TypeError(f"the result of {type(worker).__name__}.{method}() could not be pickled: {e}") from e


def main() -> None:
    from ._serialize import dump_exception

    channel = _Channel(READ_FD, WRITE_FD)
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
                channel.send(OK, task_id, _call(worker, payload))
            else:
                raise RuntimeError(f"unexpected frame kind {kind}")
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            if isinstance(exc, (SystemExit, KeyboardInterrupt)) and kind == CALL:
                raise
            channel.send(RAISED, task_id, dump_exception(exc))
    sys.stdout.flush()
    sys.stderr.flush()
