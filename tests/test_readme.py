"""The README's Python examples run as written (as scripts, in fresh interpreters)."""

from __future__ import annotations

import pytest
from conftest import REPO, run_script
from doc_blocks import code_blocks, group_id, needs_cluster, runnable_python

README = REPO / "README.md"
RUNNABLE = runnable_python(README)


@pytest.mark.parametrize("blocks", RUNNABLE, ids=[group_id(b) for b in RUNNABLE])
def test_readme_example_runs(blocks: list[str]) -> None:
    out = run_script("\n".join(blocks), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]


def test_every_example_is_covered() -> None:
    blocks = code_blocks(README, "python")
    assert sum(len(b) for b in RUNNABLE) == len(blocks) - 1  # all but the cluster one
    assert sum(map(needs_cluster, blocks)) == 1
