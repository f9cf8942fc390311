"""What the worker processes of ``benches/compare.py`` run: the no-op and CPU-bound tasks, the
timed setups of the ``spawn`` workload, and the worker classes of stateful_pool, concurry and Ray.

They live at module level in a module of their own, importable by name, for the peers' workers:

- the stdlib pickle (multiprocessing, ProcessPoolExecutor, mpire, pebble) sends them by reference: a
  forked worker has this module already; a spawn or forkserver one imports it through the
  ``sys.path`` multiprocessing hands it, which has ``benches/`` (the script's directory);
- cloudpickle (stateful_pool, concurry, loky, and Ray's own copy of it) sends them by value, as it
  did while they lived in the script's ``__main__``: see the ``register_pickle_by_value`` call at
  the end of this module and in ``RayPeer``. A worker then rebuilds them from the bytes it gets
  instead of importing this module, which would import ``stateful_pool.concurry`` too (tens of
  ms) in every new worker and add it to the ``start`` and ``spawn`` times being measured.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import cloudpickle
from stateful_pool import SWorker
from stateful_pool.concurry import Worker


def ident(x: Any) -> Any:
    """The no-op task: returns its argument."""
    return x


def burn(n: int) -> int:
    """A pure-Python CPU-bound loop (holds the GIL the whole time)."""
    total = 0
    for i in range(n):
        total += i ^ (i >> 3)
    return total


def mark_ready(path: str, delay: float) -> None:
    """A setup that takes ``delay`` seconds, then appends its finishing time to ``path``."""
    time.sleep(delay)
    with open(path, "a") as f:  # one short O_APPEND write: lines from many processes do not mix
        f.write(f"{time.monotonic()!r}\n")


def mpire_ident(_state: dict[str, Any], x: Any) -> Any:
    return x


def mpire_burn(_state: dict[str, Any], n: int) -> int:
    return burn(n)


def mpire_ready(path: str, delay: float, state: dict[str, Any]) -> None:
    state["ready"] = True
    mark_ready(path, delay)


class EchoWorker(Worker):
    """The concurry worker of the on-demand peer: ``execute`` is the no-op."""

    def execute(self, x: Any) -> Any:
        return x


class Echo(SWorker):
    """The stateful_pool worker: setup takes ``delay`` seconds; ``execute`` is the no-op."""

    def spawn(self, delay: float = 0.0) -> int:
        time.sleep(delay)
        return os.getpid()

    def execute(self, x: Any) -> Any:
        return x

    def burn(self, n: int) -> int:
        return burn(n)

    def crash(self) -> None:
        os._exit(1)


def crash() -> None:
    """A task that kills its worker."""
    os._exit(1)


class EchoActor:
    """The Ray actor (wrapped with ``ray.remote`` in the child that runs Ray)."""

    def __init__(self, delay: float = 0.0):
        time.sleep(delay)

    def ready(self) -> bool:
        return True

    def execute(self, x: Any) -> Any:
        return x

    def burn(self, n: int) -> int:
        return burn(n)


# Pickled by value by cloudpickle, as while this code lived in the script's ``__main__`` (see the
# module docstring); Ray's vendored cloudpickle is told the same in ``RayPeer``.
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[attr-defined,unused-ignore]  # not in stubs/
