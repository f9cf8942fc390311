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

# A payload is a small header (buffer count, then the length of the pickle body and of each
# out-of-band buffer), the body, then the buffers. Large arrays travel as protocol-5 buffers,
# copied once into the channel and rebuilt on the receiving side without another copy.
_COUNT = struct.Struct("<I")
_PLAIN = struct.Struct("<IQ")  # no out-of-band buffer: count 0, body length


def encode(obj: Any) -> list[Any]:
    """``obj`` as a list of buffers to send: header, pickle body, out-of-band buffers."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        body = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    except (pickle.PicklingError, TypeError, AttributeError):
        buffers.clear()
        body = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    if not buffers:  # the common case, without building a format string
        return [_PLAIN.pack(0, len(body)), body]
    try:
        raws = [b.raw() for b in buffers]
    except BufferError:  # a non-contiguous buffer: let pickle copy it in-band
        body = pickle.dumps(obj, protocol=5)
        return [_PLAIN.pack(0, len(body)), body]
    sizes = struct.pack(f"<{len(raws) + 1}Q", len(body), *(r.nbytes for r in raws))
    return [_COUNT.pack(len(raws)) + sizes, body, *raws]


def decode(data: Any) -> Any:
    """The object of a payload made by :func:`encode` (``data`` is any bytes-like object; arrays
    in it are rebuilt as views of ``data``, which they keep alive)."""
    view = memoryview(data).cast("B")
    (count,) = _COUNT.unpack_from(view)
    if count == 0:
        return pickle.loads(view[_PLAIN.size :])
    sizes = struct.unpack_from(f"<{count + 1}Q", view, _COUNT.size)
    offset = _COUNT.size + 8 * (count + 1)
    body = view[offset : offset + sizes[0]]
    offset += sizes[0]
    buffers = []
    for size in sizes[1:]:
        buffers.append(view[offset : offset + size])
        offset += size
    return pickle.loads(body, buffers=buffers)


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
