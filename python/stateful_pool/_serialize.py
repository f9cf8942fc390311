"""Serialization shared by the caller and the worker: plain pickle protocol 5 first (fast),
cloudpickle for what plain pickle cannot do: lambdas, and classes and functions defined in
``__main__`` (plain pickle stores those by name, and the other process's ``__main__`` is another
module, so they must travel by value)."""

from __future__ import annotations

import io
import pickle
import struct
import traceback
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any, ClassVar

import cloudpickle

from .errors import RemoteError, RemoteTraceback

_SUMMARY_LEN = struct.Struct("<I")

# Plain pickle names a module once per pickle, as a string in its opcodes: a pickle without
# these bytes refers to nothing in `__main__`. (A false alarm, e.g. the string "__main__" in the
# data, only costs a slower pickler.)
_MAIN = b"__main__"
# From this size on, skip the raw data of large bytes and strings instead of searching it.
_WALK_FROM = 1 << 16
_DATA_LEN4 = frozenset(b"BX")  # BINBYTES, BINUNICODE: 4-byte length, then the data
_DATA_LEN8 = frozenset(b"\x8d\x8e\x96")  # BINUNICODE8, BINBYTES8, BYTEARRAY8: 8-byte length
_FRAME, _MEMOIZE, _MARK, _STOP = 0x95, 0x94, 0x28, 0x2E


def refers_to_main(body: bytes) -> bool:
    """Whether a plain protocol-5 pickle may refer to a class or function of ``__main__``."""
    if len(body) < _WALK_FROM:
        return body.find(_MAIN) >= 0
    # Large data (64 KiB and up) is written outside the pickle's frames, so walk the frames and
    # jump over that data: a 64 MiB payload costs microseconds, not a 40 ms search.
    i, end = 2, len(body)  # after PROTO 5
    while i < end:
        op = body[i]
        if op == _FRAME:
            start = i + 9
            i = start + int.from_bytes(body[i + 1 : start], "little")
            if body.find(_MAIN, start, i) >= 0:
                return True
        elif op in _DATA_LEN4:
            i += 5 + int.from_bytes(body[i + 1 : i + 5], "little")
        elif op in _DATA_LEN8:
            i += 9 + int.from_bytes(body[i + 1 : i + 9], "little")
        elif op == _MEMOIZE or op == _MARK:
            i += 1
        elif op == _STOP:
            return False
        else:  # an opcode this walk does not size: search the rest
            return body.find(_MAIN, i) >= 0
    return False


_DYNAMIC_CODE = "<dynamic-code>"


def _code_reduce_keeping_filename(code: types.CodeType) -> Any:
    """cloudpickle's reduction of a code object, with the real file name instead of its
    ``<dynamic-code>``: a worker's traceback of a ``__main__`` function, lambda or classmethod
    then shows the file and, where the worker can read it, its source lines."""
    reduce = cloudpickle.Pickler.dispatch_table[types.CodeType]
    ctor, args = reduce(code)
    args = list(args)
    for i, arg in enumerate(args):
        if type(arg) is str and arg == _DYNAMIC_CODE:
            args[i] = code.co_filename
            break
    return ctor, tuple(args)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, keeping the file names of the code it sends by value."""

    dispatch_table: ClassVar[ChainMap[Any, Any]] = ChainMap(
        {types.CodeType: _code_reduce_keeping_filename}, cloudpickle.Pickler.dispatch_table
    )


def by_value(obj: Any, buffer_callback: Callable[[Any], object] | None = None) -> bytes:
    """``cloudpickle.dumps(obj, protocol=5)``, keeping the code's file names (see above)."""
    with io.BytesIO() as file:
        _Pickler(file, protocol=5, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue()


def dumps(obj: Any) -> bytes:
    """Pickles ``obj``; raises the pickling error when neither pickler can handle it."""
    try:
        body = pickle.dumps(obj, protocol=5)
        if not refers_to_main(body):
            return body
    except (pickle.PicklingError, TypeError, AttributeError):
        pass
    return by_value(obj)


loads = pickle.loads

# A payload is a small header (buffer count, then the length of the pickle body and of each
# out-of-band buffer), the body, then the buffers. Large arrays travel as protocol-5 buffers,
# copied once into the channel and rebuilt on the receiving side without another copy.
BUFFER_COUNT = struct.Struct("<I")
_PLAIN = struct.Struct("<IQ")  # no out-of-band buffer: count 0, body length
PLAIN_HEADER_LEN = _PLAIN.size


def encode(obj: Any) -> list[Any]:
    """``obj`` as a list of buffers to send: header, pickle body, out-of-band buffers."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        body = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        main_refs = body.find(_MAIN) >= 0 if len(body) < _WALK_FROM else refers_to_main(body)
    except (pickle.PicklingError, TypeError, AttributeError):
        main_refs = True
    if main_refs:
        buffers.clear()
        body = by_value(obj, buffer_callback=buffers.append)
    if not buffers:  # the common case, without building a format string
        return [_PLAIN.pack(0, len(body)), body]
    try:
        raws = [b.raw() for b in buffers]
    except BufferError:  # a non-contiguous buffer: let pickle copy it in-band
        body = pickle.dumps(obj, protocol=5)
        return [_PLAIN.pack(0, len(body)), body]
    sizes = struct.pack(f"<{len(raws) + 1}Q", len(body), *(r.nbytes for r in raws))
    return [BUFFER_COUNT.pack(len(raws)) + sizes, body, *raws]


def decode(data: Any) -> Any:
    """The object of a payload made by :func:`encode` (``data`` is any bytes-like object; arrays
    in it are rebuilt as views of ``data``, which they keep alive)."""
    view = memoryview(data).cast("B")
    (count,) = BUFFER_COUNT.unpack_from(view)
    return decode_counted(view, count)


def decode_counted(view: memoryview, count: int) -> Any:
    """:func:`decode` of a byte view whose buffer count the caller read already (the worker
    loop reads it first: a coalesced call keeps its marker there)."""
    if count == 0:
        return pickle.loads(view[_PLAIN.size :])
    sizes = struct.unpack_from(f"<{count + 1}Q", view, BUFFER_COUNT.size)
    offset = BUFFER_COUNT.size + 8 * (count + 1)
    body = view[offset : offset + sizes[0]]
    offset += sizes[0]
    buffers = []
    for size in sizes[1:]:
        buffers.append(view[offset : offset + size])
        offset += size
    return pickle.loads(body, buffers=buffers)


def safe_str(obj: object) -> str:
    """``str(obj)``, or its type's name when that raises: describing an error never fails."""
    try:
        text = str(obj)
        if type(text) is str:
            return text
    except BaseException:  # even SystemExit from a __str__ is only a failed description
        pass
    return f"<unprintable {_type_name(obj)}>"


def _type_name(obj: object, attribute: str = "__name__") -> str:
    try:
        name = getattr(type(obj), attribute, None)
    except BaseException:  # a metaclass property may raise anything
        name = None
    return name if type(name) is str else "object"


def dump_exception(exc: BaseException) -> bytes:
    """The payload of a ``Raised`` frame: a one-line summary, then the pickled exception and
    its traceback text (a :class:`RemoteError` stands in when the exception will not pickle).
    Never raises: an exception whose ``__str__``, ``__repr__`` or pickling raises still fails
    only its task, described by its type name."""
    name = _type_name(exc)
    message = safe_str(exc)
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException as e:  # a hostile __cause__, __notes__, ...
        tb = f"{name}: {message}\n(traceback unavailable: {_type_name(e)})\n"
    summary = f"{name}: {message}".encode("utf-8", "replace")[:1000]
    try:
        body = dumps((exc, tb))
        pickle.loads(body)  # an exception may pickle but not unpickle (custom __init__)
    except BaseException:  # whatever its (un)pickling raises, send a stand-in
        body = dumps((RemoteError(_type_name(exc, "__qualname__"), message), tb))
    return _SUMMARY_LEN.pack(len(summary)) + summary + body


def load_exception(payload: bytes) -> BaseException:
    """The exception of a ``Raised`` payload, with the worker's traceback as its ``__cause__``."""
    (n,) = _SUMMARY_LEN.unpack_from(payload)
    exc: BaseException
    try:
        exc, tb = pickle.loads(memoryview(payload)[_SUMMARY_LEN.size + n :])
    except Exception as e:  # the caller lacks the exception's class, say
        summary = bytes(payload[_SUMMARY_LEN.size : _SUMMARY_LEN.size + n]).decode("utf-8", "replace")
        name, _, message = summary.partition(": ")
        exc, tb = RemoteError(name, message), f"(traceback unavailable: {_type_name(e)}: {safe_str(e)})\n"
    exc.__cause__ = RemoteTraceback(tb)
    return exc
