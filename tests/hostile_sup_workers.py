"""Workers for tests/test_hostile_supervisor.py (importable by reference in the worker
processes): they exit mid-task with status 0, crash on demand, or fail every spawn after the
first."""

from __future__ import annotations

import os
import sys

from stateful_pool import SWorker


class Exiter(SWorker):
    """Answers with its pid; ``execute(how)`` ends the process mid-task when asked."""

    def spawn(self) -> int:
        return os.getpid()

    def execute(self, how: str | None = None) -> int:
        if how == "sys.exit(0)":
            sys.exit(0)
        if how == "os._exit(0)":
            os._exit(0)
        if how == "crash":
            os._exit(3)
        return os.getpid()

    def ident(self) -> int:
        return os.getpid()


class SpawnFailsAfterFirst(SWorker):
    """Spawns once; every later spawn (a restart) raises, and ``execute`` crashes the worker."""

    def spawn(self, marker: str) -> int:
        if os.path.exists(marker):
            raise RuntimeError("gpu 3 is gone")
        open(marker, "w").close()
        return os.getpid()

    def execute(self) -> None:
        os._exit(1)
