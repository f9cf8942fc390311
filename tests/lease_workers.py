"""Workers and tasks for test_leases.py: they die (SIGKILL, sent to themselves) while holding a
resource-limit permit or the namespace lock, and others wait for what they held."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from stateful_pool import ProcTask
from stateful_pool.concurry import Worker

DEADLINE = 20.0  # seconds any wait in here may take before giving up (generous)


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


class LeaseWorker(Worker):
    def die_holding(self, key: str) -> None:
        """Takes one unit of ``key`` and is killed inside the ``with`` block."""
        with self.limits.acquire(requested={key: 1}):
            os.kill(os.getpid(), signal.SIGKILL)

    def hold_then_die(self, key: str, held: str, go: str) -> None:
        """Takes one unit, says so in the file ``held`` (its pid), and is killed inside the
        ``with`` block once the file ``go`` exists."""
        with self.limits.acquire(requested={key: 1}):
            Path(held).write_text(str(os.getpid()))
            _wait_for(go)
            os.kill(os.getpid(), signal.SIGKILL)

    def hold_several_then_die(self, requested: dict[str, int], held: str, go: str) -> None:
        """Takes ``requested`` in one acquisition, writes its pid to the file ``held``, and is
        killed inside the ``with`` block once the file ``go`` exists."""
        with self.limits.acquire(requested=requested):
            Path(held).write_text(str(os.getpid()))
            _wait_for(go)
            os.kill(os.getpid(), signal.SIGKILL)

    def take_several(self, requested: dict[str, int], timeout: float) -> dict[str, Any]:
        """Takes ``requested`` in one acquisition and gives it back: when it was granted, and
        how long the call took."""
        started = time.monotonic()
        with self.limits.acquire(requested=requested, timeout=timeout) as acq:
            return {"pid": os.getpid(), "waited": time.monotonic() - started, "at_ns": acq.at_ns}

    def take(self, key: str, timeout: float, waiting: str | None = None) -> dict[str, Any]:
        """Takes one unit (writing the file ``waiting`` first), and gives it back."""
        if waiting is not None:
            Path(waiting).write_text(str(os.getpid()))
        started = time.monotonic()
        with self.limits.acquire(requested={key: 1}, timeout=timeout):
            return {"pid": os.getpid(), "waited": time.monotonic() - started}


class DiesHoldingLock(ProcTask):
    """Takes ``ns.lock()``, waits until its sibling waits for it, and is killed holding it."""

    def task(self, ns: Any) -> None:
        with ns.lock():
            ns.holder = os.getpid()
            deadline = time.monotonic() + DEADLINE
            while not ns.waiting and time.monotonic() < deadline:
                time.sleep(0.005)
            os.kill(os.getpid(), signal.SIGKILL)


class WaitsForLock(ProcTask):
    """Waits until its sibling holds ``ns.lock()``, then takes it (reentrantly) and counts."""

    def task(self, ns: Any) -> int:
        deadline = time.monotonic() + DEADLINE
        while ns.holder == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        ns.waiting = True
        with ns.lock(), ns.lock():
            ns.count += 1
            return os.getpid()
