"""Configuration objects set once: concurry's limits and limit pools are frozen pydantic models,
so code written for concurry may rely on an assignment failing rather than silently changing an
object whose state the pool already copied into shared memory (and whose hash it changes)."""

from __future__ import annotations

from typing import Any

__all__ = ["Frozen"]


def _frozen_error(owner: object, name: str, value: Any) -> Exception:
    """pydantic's ``frozen_instance`` error where pydantic is installed (concurry depends on it,
    so its users catch that), else an ``AttributeError`` like a frozen dataclass's."""
    try:
        from pydantic_core import ValidationError
    except ImportError:
        return AttributeError(f"{type(owner).__name__} is frozen: cannot assign {name!r}")
    return ValidationError.from_exception_data(
        type(owner).__name__, [{"type": "frozen_instance", "loc": (name,), "input": value}]
    )


class Frozen:
    """A public attribute is set once (in ``__init__``); assigning it again raises (see
    :func:`_frozen_error`). Private ones (``_...``) hold runtime state and stay writable."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name in self.__dict__:
            raise _frozen_error(self, name, value)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if not name.startswith("_"):
            raise _frozen_error(self, name, None)
        object.__delattr__(self, name)
