"""Where and how each worker lives: per-worker placement (``pool.placement(env=...,
cpus=...)``: its own environment variables and CPU affinity, checked here and carried to the
engine in process mode or to Ray's actor options in ray mode), and the call of its health
check."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Placement", "placement"]

_IN_PROCESS = ("thread", "asyncio", "sync")


@dataclass(frozen=True)
class Placement:
    """One worker's environment (on top of the parent's) and the CPUs it may run on (empty:
    the parent's)."""

    env: tuple[tuple[str, str], ...] = ()
    cpus: tuple[int, ...] = ()

    def for_engine(self) -> tuple[list[tuple[str, str]], list[int]]:
        """The ``placement`` argument of ``_core.Engine.spawn``."""
        return list(self.env), list(self.cpus)


def placement(mode: str, env: Mapping[str, str] | None, cpus: Iterable[int] | None) -> Placement:
    """Checks a placement for a pool of ``mode``: names and values are strings, CPUs are ones
    this process may use. Raises :class:`ValueError` (or :class:`TypeError`) otherwise."""
    if mode in _IN_PROCESS:
        raise ValueError(
            f"env and cpus per worker need mode='process' or 'ray': a {mode} worker shares this process's"
            " environment and CPUs"
        )
    pairs: list[tuple[str, str]] = []
    for name, value in dict(env or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"env must map str to str, got {name!r}: {value!r}")
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"invalid environment variable {name!r}={value!r}")
        pairs.append((name, value))
    chosen: list[int] = []
    if cpus is not None:
        listed = list(cpus)
        if not all(type(cpu) is int and cpu >= 0 for cpu in listed):
            raise TypeError(f"cpus must be CPU numbers (ints from 0), got {listed!r}")
        chosen = sorted(set(listed))
        if not chosen:
            raise ValueError("cpus must name at least one CPU (or be None: the parent's)")
        allowed = os.sched_getaffinity(0)
        if mode == "process" and not set(chosen) <= allowed:
            missing = sorted(set(chosen) - allowed)
            raise ValueError(f"cpus {missing} are not available to this process (it may use {sorted(allowed)})")
    return Placement(tuple(pairs), tuple(chosen))


def health_call(worker_cls: type, mode: str, interval: float | None) -> tuple[Any, Any] | None:
    """The engine's ``health_call`` for a pool checking its workers every ``interval`` seconds:
    the call of the worker's ``health`` method, and the reply meaning healthy (``True``,
    encoded as a process worker sends it)."""
    if interval is None:
        return None
    if not callable(getattr(worker_cls, "health", None)):
        raise ValueError(f"health_interval needs a health() method: {worker_cls.__name__} has none")
    from ._serialize import encode

    call: tuple[str, tuple[()], dict[str, Any]] = ("health", (), {})
    if mode in _IN_PROCESS:
        return call, True
    healthy = True if mode == "ray" else b"".join(bytes(part) for part in encode(True))
    return encode(call), healthy


def ray_init(init: Any, where: Placement | None) -> Any:
    """A Ray worker's ``init`` carrying its placement as actor options (see ``_ray``)."""
    if where is None:
        return init
    from .modes._ray import placed

    return placed(init, dict(where.env), len(where.cpus))
