"""Turns the core's ``(status, value)`` replies into results or raised exceptions."""

from __future__ import annotations

from typing import Any

from ._serialize import load_exception, loads

STATUS_OK, STATUS_RAISED, STATUS_ERROR = 0, 1, 2


def decode(status: int, value: Any) -> Any:
    """The result for ``STATUS_OK``; raises the worker's or the pool's exception otherwise."""
    if status == STATUS_OK:
        return loads(value)
    if status == STATUS_RAISED:
        raise load_exception(value)
    raise value
