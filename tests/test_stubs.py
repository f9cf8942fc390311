"""The hand-kept stubs of the native module match what it exports (mypy's stubtest)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_core_stub_matches_the_extension() -> None:
    pytest.importorskip("mypy")
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "stateful_pool._core"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
