"""Workers for tests/test_zygote.py (importable by reference in the worker processes)."""

from __future__ import annotations

import gc
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

    def imported_since_fork(self, *modules: str) -> list[str]:
        """Those of ``modules`` this worker imported itself: a module the zygote imported is
        frozen there (``gc.freeze``), so the collector does not list its namespace."""
        tracked = {id(obj) for obj in gc.get_objects()}
        return [name for name in modules if id(vars(sys.modules[name])) in tracked]

    def register_exit_file(self, path: str) -> None:
        """Writes ``path`` when this worker's interpreter runs its exit handlers."""
        import atexit
        from pathlib import Path

        atexit.register(Path(path).write_text, str(os.getpid()))
