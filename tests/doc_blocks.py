"""Code blocks of Markdown pages (README.md, docs/*.md), grouped the way their tests run them.

Shared by ``test_readme.py`` and ``test_docs.py``. The rules, which the pages follow:
- a Python block that starts with ``pool = `` continues the block before it (it reuses that
  block's worker class) and runs together with it;
- a Python block that connects to a cluster (``ray.init(address=...)``) is not run: it needs a
  running cluster, which ``tests/test_ray.py`` stands in for.
"""

from __future__ import annotations

import re
from pathlib import Path

_FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


def code_blocks(page: Path, language: str) -> list[str]:
    """The fenced blocks of ``page`` in ``language``, in page order."""
    return [body for lang, body in _FENCE.findall(page.read_text()) if lang == language]


def needs_cluster(block: str) -> bool:
    return "ray.init(address=" in block


def runnable_python(page: Path) -> list[list[str]]:
    """The page's Python blocks as scripts to run: each a list of blocks run as one."""
    groups: list[list[str]] = []
    for block in code_blocks(page, "python"):
        if needs_cluster(block):
            continue
        if block.lstrip().startswith("pool = ") and groups:
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


def group_id(group: list[str]) -> str:
    """A test id: the first line of the group's first block."""
    return group[0].splitlines()[0][:40]
