"""Workers and values of a hostile caller or worker (``tests/test_hostile_python.py``); importable
by reference in the worker processes."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from stateful_pool import SWorker


class BadStr(Exception):
    """Its ``str()`` raises: formatting it must not kill the worker."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


class BadRepr(Exception):
    """Its ``repr()`` raises."""

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ exploded")


class BadPickle(Exception):
    """Pickling it raises (and so does formatting it)."""

    def __reduce__(self) -> Any:
        raise RuntimeError("__reduce__ exploded")

    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


class BadUnpickle(Exception):
    """Pickles, but unpickling it raises a ``BaseException`` (not an ``Exception``)."""

    def __init__(self, required: int, *, _rebuilt: bool = False) -> None:
        if _rebuilt:
            raise SystemExit("unpickling exploded")
        super().__init__(required)

    def __reduce__(self) -> Any:
        return (_rebuild_bad_unpickle, ())


def _rebuild_bad_unpickle() -> BadUnpickle:
    return BadUnpickle(0, _rebuilt=True)


EXCEPTIONS: dict[str, type[Exception]] = {
    "str": BadStr,
    "repr": BadRepr,
    "pickle": BadPickle,
    "unpickle": BadUnpickle,
}


class LyingName(str):
    """A method name that claims to be public: ``startswith`` says no, ``==`` says yes."""

    __slots__ = ()

    def startswith(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("execute")


class Guarded(SWorker):
    """Has a private method that no caller may reach, and raises hostile exceptions on demand."""

    def spawn(self) -> int:
        self.breached = False
        return os.getpid()

    def execute(self, x: Any = None) -> Any:
        return x

    def _secret(self) -> str:
        self.breached = True
        return "secret"

    def was_breached(self) -> bool:
        return self.breached

    def pid(self) -> int:
        return os.getpid()

    def raise_hostile(self, kind: str) -> None:
        exc_type = EXCEPTIONS[kind]
        raise exc_type(1) if kind == "unpickle" else exc_type("hostile")

    def apply(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)
