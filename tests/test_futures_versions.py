"""`PoolFuture` skips `Future.__init__` and makes the condition, the waiter list and the
callback list lazily (six times cheaper per future than a stdlib `Future`: see `_futures.py`).
That leans on what the standard library's `Future` keeps per instance, so these pin it: on this
interpreter, the attributes `Future()` sets are exactly those `PoolFuture` provides; on every
interpreter from 3.11 to 3.14 that is installed, the futures tests pass.

The other interpreters are the venvs `scripts/test` prepares in `~/.cache/stateful_pool/pythons/`
from any Python 3.12-3.14 it finds (`PATH`, pyenv, uv), or those themselves; each needs
`pytest`, `pytest-timeout`, `cloudpickle` and `tqdm` (the package is taken from this checkout:
`_core` is built for the stable ABI, so one build serves them all). A missing one is skipped
with that reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest
from conftest import REPO
from stateful_pool import PoolFuture

# What `Future.__init__` sets, from 3.11 to 3.14 (and CPython's main branch, Nov 2026).
STDLIB_FUTURE_STATE = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}
NEEDED = ("pytest", "pytest_timeout", "cloudpickle", "tqdm")
# Where scripts/test makes a venv with those for each other version it finds.
PREPARED = Path.home() / ".cache" / "stateful_pool" / "pythons"


def test_pool_future_provides_everything_a_stdlib_future_keeps() -> None:
    state = set(vars(Future()))
    assert state == STDLIB_FUTURE_STATE, (
        f"this Python's Future keeps {sorted(state)}: PoolFuture (which does not call Future.__init__) "
        "must provide each of them, lazily or not; update it and STDLIB_FUTURE_STATE together"
    )
    pending: PoolFuture[int] = PoolFuture()
    assert all(hasattr(pending, name) for name in state)
    with pending._condition:  # a real condition while pending: waiters may block on it
        assert not pending._waiters and not pending._done_callbacks
    pending.set_result(1)
    settled: PoolFuture[int] = PoolFuture()
    settled.set_result(2)
    assert all(hasattr(settled, name) for name in state)
    assert (pending._state, pending._result, settled._result) == ("FINISHED", 1, 2)


def find_interpreter(version: str) -> str | None:
    """A working Python `version`: this one, the venv `scripts/test` prepares, one on `PATH`,
    one pyenv installed, or one uv knows."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    candidates = [str(PREPARED / version / "bin" / "python"), shutil.which(f"python{version}")]
    candidates += sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    if shutil.which("uv") is not None:
        out = subprocess.run(["uv", "python", "find", version], capture_output=True, text=True, timeout=60)
        candidates.append(out.stdout.strip() if out.returncode == 0 else None)
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        try:
            out = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        except OSError:  # not there, or not executable
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return candidate
    return None


@pytest.mark.parametrize("version", ["3.12", "3.13", "3.14"])
def test_futures_tests_pass_on(version: str) -> None:
    """3.11, the oldest supported, is what the rest of the suite runs on (pyproject.toml)."""
    interpreter = find_interpreter(version)
    if interpreter is None:
        pytest.skip(f"no Python {version} here (install one, e.g. `uv python install {version}`, to run this)")
    probe = subprocess.run([interpreter, "-c", f"import {', '.join(NEEDED)}"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"Python {version} ({interpreter}) lacks one of {', '.join(NEEDED)}: pip install them there")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "python"), str(REPO / "tests")])}
    out = subprocess.run(
        [interpreter, "-m", "pytest", "tests/test_futures.py", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"Python {version}:\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}"
    assert " passed" in out.stdout
