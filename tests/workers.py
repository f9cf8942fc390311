"""Worker classes used across tests (importable by reference in the worker processes)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from stateful_pool import SWorker


class Echo(SWorker):
    def spawn(self, tag: Any = None) -> dict[str, Any]:
        self.tag = tag
        self.calls = 0
        return {"pid": os.getpid(), "tag": tag}

    def execute(self, x: Any = None) -> Any:
        self.calls += 1
        return x

    def whoami(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "tag": self.tag, "calls": self.calls}

    def sleep(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    def fail(self, message: str) -> None:
        raise ValueError(message)

    def exit(self, code: int) -> None:
        os._exit(code)

    def kill_self(self, sig: int = signal.SIGKILL) -> None:
        os.kill(os.getpid(), sig)

    def unpicklable_result(self) -> Any:
        import threading

        return threading.Lock()

    def allocate(self, megabytes: int) -> int:
        self.ballast = bytearray(megabytes << 20)
        for i in range(0, len(self.ballast), 4096):
            self.ballast[i] = 1
        return os.getpid()


class FailingSpawn(SWorker):
    def spawn(self, message: str) -> None:
        raise RuntimeError(message)


class CrashingSpawn(SWorker):
    """Spawns fine the first time, then crashes on every restart (a crash loop)."""

    def spawn(self, marker: str) -> int:
        if os.path.exists(marker):
            os._exit(7)
        open(marker, "w").close()
        return os.getpid()

    def execute(self) -> None:
        os._exit(1)


def detonate(how: str) -> None:
    """Ends the calling process the way real workers die."""
    if how == "exit":
        os._exit(3)
    if how == "sigkill":  # what the OOM killer does
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":  # a crash in a C extension
        import ctypes

        ctypes.string_at(0)
    raise ValueError(f"unknown fault {how!r}")


class ArgumentBomb:
    """Detonates in the process that unpickles it (the worker, reading its arguments)."""

    def __init__(self, how: str):
        self.how = how

    def __reduce__(self) -> tuple[Any, ...]:
        return (detonate, (self.how,))


class ResultBomb:
    """Detonates in the process that pickles it (the worker, sending its result)."""

    def __init__(self, how: str):
        self.how = how

    def __reduce__(self) -> tuple[Any, ...]:
        detonate(self.how)
        raise AssertionError("unreachable")


class Faulty(Echo):
    def boom(self, how: str) -> None:
        detonate(how)

    def boom_result(self, how: str) -> ResultBomb:
        return ResultBomb(how)

    def take(self, arg: Any) -> None:
        return None

    def crash_once(self, marker: str) -> int:
        """Crashes the first worker that runs it; succeeds when run again."""
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(5)
        return os.getpid()


class SpawnBomb(SWorker):
    def spawn(self, how: str) -> None:
        detonate(how)


class Ordered(Echo):
    """Records what it ran, in order; helpers to hold the queue back and to fail mid-stream."""

    def spawn(self, tag: Any = None) -> dict[str, Any]:
        self.ran: list[Any] = []
        return super().spawn(tag)

    def execute(self, x: Any = None) -> Any:
        self.ran.append(x)
        return x

    def ran_so_far(self) -> list[Any]:
        return self.ran

    def wait_for(self, path: str, timeout: float = 30.0) -> bool:
        """Blocks until ``path`` exists (a gate the test opens once it has queued its tasks)."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def crash_once_at(self, x: int, target: int, marker: str) -> int:
        """Returns ``x``; the first worker to run ``target`` dies instead."""
        if x == target and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(7)
        return x

    def hang_at(self, x: int, target: int, started: str) -> int:
        """Returns ``x``; ``target`` announces itself in ``started``, then hangs."""
        if x == target:
            open(started, "w").close()
            time.sleep(120)
        return x
