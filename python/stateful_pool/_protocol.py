"""The protocol between a pool and its workers, defined once. The codes are Rust's (``_core``
exports them; ``tests/test_protocol.py`` checks nothing else defines them): reply statuses, frame
kinds of the process channel, and what an in-process host reads and reports. The init payload
(worker class and spawn arguments) is built and read here, for every mode."""

from __future__ import annotations

import pickle
import sys
from typing import Any

from ._core import (
    FRAME_CALL,
    FRAME_INIT,
    FRAME_OK,
    FRAME_RAISED,
    FRAME_READY,
    FRAME_STOP,
    FRAME_UPCALL,
    FRAME_UPCALL_REPLY,
    READY_FATAL,
    READY_OK,
    READY_RAISED,
    REQUEST_CALL,
    REQUEST_CANCEL,
    REQUEST_COALESCED,
    STATUS_ERROR,
    STATUS_OBJECT,
    STATUS_OK,
    STATUS_RAISED,
)
from ._serialize import dumps

__all__ = [
    "FRAME_CALL",
    "FRAME_INIT",
    "FRAME_OK",
    "FRAME_RAISED",
    "FRAME_READY",
    "FRAME_STOP",
    "FRAME_UPCALL",
    "FRAME_UPCALL_REPLY",
    "READY_FATAL",
    "READY_OK",
    "READY_RAISED",
    "REQUEST_CALL",
    "REQUEST_CANCEL",
    "REQUEST_COALESCED",
    "STATUS_ERROR",
    "STATUS_OBJECT",
    "STATUS_OK",
    "STATUS_RAISED",
    "decode_init",
    "encode_init",
]


def encode_init(worker: type | bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The init payload of one worker: ``(class, args, kwargs)`` for a worker in this process
    (``worker`` is the class), or for another process (``worker`` is the class pickled by
    value) the bytes of ``(sys.path, class, pickled (args, kwargs))``."""
    if isinstance(worker, type):
        return (worker, args, kwargs)
    return dumps((list(sys.path), worker, dumps((args, kwargs))))


def decode_init(init: Any) -> tuple[type, tuple[Any, ...], dict[str, Any]]:
    """``(class, args, kwargs)`` of an init payload. From another process, the caller's
    ``sys.path`` entries are prepended first (a local cluster shares the file system), so the
    class's modules import here."""
    if isinstance(init, tuple):
        worker_cls, args, kwargs = init
        return worker_cls, tuple(args), dict(kwargs)
    import cloudpickle

    sys_path, class_blob, args_blob = pickle.loads(init)
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    worker_cls = cloudpickle.loads(class_blob)
    args, kwargs = pickle.loads(args_blob)
    return worker_cls, tuple(args), dict(kwargs)
