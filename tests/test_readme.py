"""The README's Python examples run as written (as scripts, in fresh interpreters)."""

from __future__ import annotations

import re

import pytest
from conftest import REPO, run_script

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
# The snippets that continue the one before them run together with it; the Ray cluster example
# needs a running cluster (`ray.init(address="auto")`), which tests/test_ray.py stands in for.
RUNNABLE = [
    [block]
    for i, block in enumerate(BLOCKS)
    if 'address="auto"' not in block and not (i > 0 and block.lstrip().startswith("pool = "))
]
for i, block in enumerate(BLOCKS):
    if i > 0 and block.lstrip().startswith("pool = "):
        RUNNABLE[-1].append(block)


@pytest.mark.parametrize("blocks", RUNNABLE, ids=[b[0].splitlines()[0][:40] for b in RUNNABLE])
def test_readme_example_runs(blocks: list[str]) -> None:
    out = run_script("\n".join(blocks), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]


def test_every_example_is_covered() -> None:
    assert sum(len(b) for b in RUNNABLE) == len(BLOCKS) - 1  # all but the cluster one
