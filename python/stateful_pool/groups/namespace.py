"""A task tree's shared namespace: :class:`SharedNamespace` over a store of pickled values, and
its lock.

The values live in the caller's process, in a ``_core.CoreNamespace`` the tree owns for its whole
life: the caller reads and writes it directly (before, during and after a run), and the tasks
reach it with upcalls on their worker's own channel (``stateful_pool._upcall``), answered by the
supervisor. ``ns.lock()`` is the store's lock, recorded with the process holding it: when a task's
process dies holding it, the supervisor gives it to the next waiter at once.
"""

from __future__ import annotations

import pickle
import struct
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

from .. import _core, _upcall
from .._serialize import dumps

__all__ = ["Namespace", "SharedNamespace"]

# A process-wide lock for namespaces used outside a tree (a plain dataclass instance passed to
# task() in a unit test, say): coarse, but correct, and it needs no per-instance storage.
_LOCAL_LOCK = threading.RLock()

# The store's wire constants (ops, statuses, the longest key), as the core defines them.
_WIRE = _upcall.protocol()


class Namespace:
    """Optional base class for a typed namespace dataclass: it declares :meth:`lock`, so that
    ``with ns.lock():`` type-checks in tasks annotated ``def task(self, ns: MyNamespace)``.

    Example::

        @dataclass
        class Stats(Namespace):
            count: int = 0

        tree = TaskTree(Stats)
    """

    __slots__ = ()

    def lock(self) -> AbstractContextManager[Any]:
        """A lock shared by every process of the tree (see :meth:`SharedNamespace.lock`).
        On a plain instance, outside a tree, a process-local lock."""
        return _LOCAL_LOCK


class SharedNamespace(Namespace):
    """The namespace every task receives: attributes set on it are visible to every task of the
    tree, in any process, and to the caller (``tree.namespace``).

    Values are copies: ``ns.items.append(x)`` changes a local copy only; assign the new value
    back (``ns.items = [*ns.items, x]``), inside ``with ns.lock():`` when other tasks may update
    the same attribute. With a typed namespace (a dataclass), only its fields may be set.
    """

    __slots__ = ("_fields", "_lock", "_store")

    _store: MutableMapping[str, Any]
    _lock: AbstractContextManager[Any]
    _fields: frozenset[str] | None

    def __init__(
        self, store: MutableMapping[str, Any], lock: AbstractContextManager[Any], fields: frozenset[str] | None = None
    ):
        object.__setattr__(self, "_store", store)
        object.__setattr__(self, "_lock", lock)
        object.__setattr__(self, "_fields", fields)

    def __getattr__(self, name: str) -> Any:
        # Private and dunder names are never namespace values: answering them would make
        # copy/pickle/inspect probes hit the store (or mistake a value for a protocol method).
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._store[name]
        except KeyError:
            raise AttributeError(f"namespace has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._check_name(name)
        self._store[name] = value

    def __delattr__(self, name: str) -> None:
        self._check_name(name)
        try:
            del self._store[name]
        except KeyError:
            raise AttributeError(f"namespace has no attribute {name!r}") from None

    def _check_name(self, name: str) -> None:
        if type(name) is not str:  # a str subclass could lie in startswith()
            raise TypeError(f"namespace attribute names must be str, got {type(name).__name__}")
        if name.startswith("_"):
            raise AttributeError(f"namespace attribute names cannot start with '_': {name!r}")
        if hasattr(SharedNamespace, name):
            # ns.lock = ... would be stored but never read back: ns.lock is the method.
            raise AttributeError(f"{name!r} is a method of the namespace, not an attribute name")
        if not name or len(name.encode("utf-8", "replace")) > _WIRE["MAX_KEY_LEN"]:
            raise AttributeError(f"namespace attribute names are 1 to {_WIRE['MAX_KEY_LEN']} bytes long")
        if self._fields is not None and name not in self._fields:
            raise AttributeError(f"namespace has no field {name!r} (fields: {', '.join(sorted(self._fields))})")

    def lock(self) -> AbstractContextManager[Any]:
        """A reentrant lock shared by every process of the tree: ``with ns.lock():`` makes a
        read-modify-write (``ns.count += 1``) safe against other tasks doing the same. A task
        whose process dies while it holds the lock does not keep it: the next task waiting for
        it gets it at once."""
        return self._lock

    def snapshot(self) -> dict[str, Any]:
        """A plain ``dict`` copy of every attribute, read in one request."""
        return dict(self._store.items())

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._store.keys()))

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v!r}" for k, v in sorted(self.snapshot().items()))
        return f"SharedNamespace({values})"


class SharedLock:
    """``ns.lock()``: a reentrant lock shared by every process of the tree, with the API of
    :class:`threading.RLock` (``acquire(blocking, timeout)``, ``release()``, ``with``).

    Between processes it is the store's lock, taken with ``take(timeout)`` (``None``: no limit)
    and given back with ``give()``. Between the threads of one process a local ``RLock`` takes
    turns and counts reentry, so the process takes the store's lock once, when a thread enters
    the outermost ``with``."""

    def __init__(self, take: Callable[[float | None], bool], give: Callable[[], None]):
        self._take = take
        self._give = give
        self._turn = threading.RLock()
        # Touched only by the thread holding _turn.
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Takes the lock (again, if this thread holds it); ``False`` if not within ``timeout``
        seconds (``-1``: no limit) or at once when ``blocking`` is false."""
        if timeout is None:
            timeout = -1
        deadline = None if timeout < 0 else time.monotonic() + timeout
        if not (self._turn.acquire(True, timeout) if blocking else self._turn.acquire(False)):
            return False
        if self._depth > 0:
            self._depth += 1
            return True
        left = 0.0 if not blocking else None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            taken = self._take(left)
        except BaseException:
            self._turn.release()
            raise
        if not taken:
            self._turn.release()
            return False
        self._owner, self._depth = threading.get_ident(), 1
        return True

    def release(self) -> None:
        """Leaves one level; the outermost gives the store's lock back. Raises ``RuntimeError``
        in a thread that does not hold the lock."""
        if self._owner != threading.get_ident() or self._depth == 0:
            raise RuntimeError("cannot release un-acquired lock")
        self._depth -= 1
        try:
            if self._depth == 0:
                self._owner = None
                self._give()
        finally:
            self._turn.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<namespace lock, {'held' if self._depth else 'not held'} in this process>"


class _Store(MutableMapping[str, Any]):
    """Common part of the two views of the store: iteration and size from ``keys()``."""

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


class ParentStore(_Store):
    """The store as the caller's process sees it: the ``CoreNamespace`` itself."""

    def __init__(self, core: _core.CoreNamespace):
        self.core = core

    def __getitem__(self, key: str) -> Any:
        value = self.core.get(key)
        if value is None:
            raise KeyError(key)
        return pickle.loads(value)

    def __setitem__(self, key: str, value: Any) -> None:
        self.core.set(key, dumps(value))

    def __delitem__(self, key: str) -> None:
        if not self.core.delete(key):
            raise KeyError(key)

    def keys(self) -> Any:
        return self.core.keys()

    def items(self) -> Any:
        return [(key, pickle.loads(value)) for key, value in self.core.snapshot()]

    def lock(self) -> SharedLock:
        """A lock over the store's, for this process."""
        return SharedLock(self.core.lock, self.core.unlock)


_KEY_LEN = struct.Struct("<I")
_VALUE_LEN = struct.Struct("<Q")
_TIMEOUT = struct.Struct("<d")


class WorkerStore(_Store):
    """The store as a task sees it: every access is an upcall to the caller's process."""

    def _ask(self, op: str, body: bytes = b"") -> tuple[int, bytes]:
        answer = _upcall.call(bytes([_WIRE[op]]) + body)
        if not answer:
            raise ConnectionError("empty answer to a namespace request")
        status = answer[0]
        if status == _WIRE["REFUSED"]:
            raise RuntimeError(answer[1:].decode("utf-8", "replace"))
        return status, answer[1:]

    @staticmethod
    def _key(key: str) -> bytes:
        """The key's bytes; ``KeyError`` for a key the store would take as garbage (and then
        kill this process for sending)."""
        try:
            encoded = key.encode()
        except UnicodeEncodeError:
            raise KeyError(key) from None
        if not encoded or len(encoded) > _WIRE["MAX_KEY_LEN"] or encoded[:1] == b"_":
            raise KeyError(key)
        return encoded

    def __getitem__(self, key: str) -> Any:
        status, body = self._ask("GET", self._key(key))
        if status == _WIRE["MISSING"]:
            raise KeyError(key)
        return pickle.loads(body)

    def __setitem__(self, key: str, value: Any) -> None:
        encoded = self._key(key)
        self._ask("SET", _KEY_LEN.pack(len(encoded)) + encoded + dumps(value))

    def __delitem__(self, key: str) -> None:
        if self._ask("DELETE", self._key(key))[0] == _WIRE["MISSING"]:
            raise KeyError(key)

    def keys(self) -> Any:
        body = memoryview(self._ask("KEYS")[1])
        keys, at = [], 0
        while at < len(body):
            (n,) = _KEY_LEN.unpack_from(body, at)
            keys.append(bytes(body[at + 4 : at + 4 + n]).decode())
            at += 4 + n
        return keys

    def items(self) -> Any:
        body = memoryview(self._ask("SNAPSHOT")[1])
        items, at = [], 0
        while at < len(body):
            (n,) = _KEY_LEN.unpack_from(body, at)
            key = bytes(body[at + 4 : at + 4 + n]).decode()
            (size,) = _VALUE_LEN.unpack_from(body, at + 4 + n)
            at += 12 + n
            items.append((key, pickle.loads(body[at : at + size])))
            at += size
        return items

    def take(self, timeout: float | None) -> bool:
        """Takes the store's lock for this process within ``timeout`` seconds (``None``: no
        limit); the parent answers when it is free."""
        status, _ = self._ask("LOCK", _TIMEOUT.pack(-1.0 if timeout is None else timeout))
        return status == _WIRE["OK"]

    def give(self) -> None:
        """Gives the store's lock back."""
        self._ask("UNLOCK")

    def lock(self) -> SharedLock:
        """A lock over the store's, for this process."""
        return SharedLock(self.take, self.give)
