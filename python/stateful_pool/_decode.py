"""Turns the core's ``(status, value)`` replies into results or raised exceptions."""

from __future__ import annotations

from typing import Any

from ._protocol import STATUS_OBJECT, STATUS_OK, STATUS_RAISED
from ._serialize import decode as decode_payload
from ._serialize import load_exception, safe_str
from .errors import ResultUnpicklingError


def decode(status: int, value: Any) -> Any:
    """The result for ``STATUS_OK`` (a pickled result) and ``STATUS_OBJECT`` (the result
    itself); raises the worker's (``STATUS_RAISED``) or the pool's (``STATUS_ERROR``) exception
    otherwise."""
    if status == STATUS_OBJECT:
        return value
    if status == STATUS_OK:
        try:
            return decode_payload(value)
        except (Exception, SystemExit) as exc:  # even SystemExit: it fails this result only
            raise ResultUnpicklingError(
                f"the task's result could not be unpickled: {type(exc).__name__}: {safe_str(exc)}"
            ) from exc
    if status == STATUS_RAISED:
        raise load_exception(value)
    raise value
