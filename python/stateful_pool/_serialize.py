"""Serialization shared by the caller and the worker: plain pickle protocol 5 first (fast),
cloudpickle for what plain pickle cannot do (lambdas, classes defined in ``__main__``)."""

from __future__ import annotations

import pickle
import struct
import traceback
from typing import Any

import cloudpickle

from .errors import RemoteError, RemoteTraceback

_SUMMARY_LEN = struct.Struct("<I")


def dumps(obj: Any) -> bytes:
    """Pickles ``obj``; raises the pickling error when neither pickler can handle it."""
    try:
        return pickle.dumps(obj, protocol=5)
    except (pickle.PicklingError, TypeError, AttributeError):
        return cloudpickle.dumps(obj, protocol=5)


loads = pickle.loads


def dump_exception(exc: BaseException) -> bytes:
    """The payload of a ``Raised`` frame: a one-line summary, then the pickled exception and
    its traceback text (a :class:`RemoteError` stands in when the exception will not pickle)."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    summary = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:1000]
    try:
        body = dumps((exc, tb))
        pickle.loads(body)  # an exception may pickle but not unpickle (custom __init__)
    except Exception:
        body = dumps((RemoteError(type(exc).__qualname__, str(exc)), tb))
    return _SUMMARY_LEN.pack(len(summary)) + summary + body


def load_exception(payload: bytes) -> BaseException:
    """The exception of a ``Raised`` payload, with the worker's traceback as its ``__cause__``."""
    (n,) = _SUMMARY_LEN.unpack_from(payload)
    try:
        exc, tb = pickle.loads(memoryview(payload)[_SUMMARY_LEN.size + n :])
    except Exception as e:  # the caller lacks the exception's class, say
        summary = bytes(payload[_SUMMARY_LEN.size : _SUMMARY_LEN.size + n]).decode("utf-8", "replace")
        name, _, message = summary.partition(": ")
        exc, tb = RemoteError(name, message), f"(traceback unavailable: {e!r})\n"
    exc.__cause__ = RemoteTraceback(tb)
    return exc
