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
