"""Workers for tests/test_zygote.py (importable by reference in the worker processes)."""

from __future__ import annotations

import os
import sys
from typing import Any

from workers import Faulty


class Inspect(Faulty):
    """Reports what a worker process sees of itself: its parent, working directory,
    environment, descriptors and the modules it found already imported."""

    def facts(self, *names: str) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "pgid": os.getpgid(0),
            "cwd": os.getcwd(),
            "env": {name: os.environ.get(name) for name in names},
            "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
            "argv": sys.argv,
        }

    def imported_in(self, module: str) -> int | None:
        """The pid that imported ``module``, as the module recorded it (``None``: not imported)."""
        found = sys.modules.get(module)
        return None if found is None else int(found.IMPORTED_IN)
