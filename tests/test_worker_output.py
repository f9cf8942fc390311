"""A process worker's print and logging output reaches the parent's stdout and stderr, each
line prefixed with the worker's pid (``worker_output="prefix"``, the default), or untouched
(``"plain"``). Real pools in a fresh interpreter whose streams the test captures."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import run_script
from stateful_pool import SPool, SWorker

SCRIPT = """
import logging, os, sys
from stateful_pool import SPool, SWorker

class Talker(SWorker):
    def spawn(self):
        return os.getpid()

    def talk(self):
        print("first line")
        print("second line")
        print("x" * 200_000)  # more than a pipe takes at once: one prefix, every byte
        print("partial ", end="")
        print("line", end="", flush=True)  # a flush mid-line adds no prefix
        print(" done")
        print("to stderr", file=sys.stderr)
        logging.getLogger("talker").warning("a warning")
        print("tail", end="")  # never ended: written when the worker exits

options = {} if sys.argv[1] == "default" else {"worker_output": sys.argv[1]}
with SPool(Talker, start_method=sys.argv[2], **options) as pool:
    pid = pool.spawn()
    pool.call("talk")
print(f"parent: worker {pid}")
"""

LONG = "x" * 200_000


def _run(output: str, start_method: str) -> tuple[int, list[str], list[str]]:
    out = run_script(SCRIPT, output, start_method, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    stdout = out.stdout.splitlines()
    pid = int(stdout[-1].rpartition(" ")[2])
    return pid, stdout, out.stderr.splitlines()


@pytest.mark.parametrize("start_method", ["zygote", "spawn"])
def test_every_line_of_a_worker_is_prefixed_with_its_pid(start_method: str) -> None:
    pid, stdout, stderr = _run("default", start_method)
    p = f"(pid={pid}) "
    # The worker's partial "tail" ends the worker's output; the parent's line follows it.
    assert stdout == [
        f"{p}first line",
        f"{p}second line",
        f"{p}{LONG}",
        f"{p}partial line done",
        f"{p}tailparent: worker {pid}",
    ]
    assert stderr == [f"{p}to stderr", f"{p}a warning"]


@pytest.mark.parametrize("start_method", ["zygote", "spawn"])
def test_plain_output_is_untouched(start_method: str) -> None:
    pid, stdout, stderr = _run("plain", start_method)
    assert stdout == ["first line", "second line", LONG, "partial line done", f"tailparent: worker {pid}"]
    assert stderr == ["to stderr", "a warning"]


def test_an_unknown_choice_is_refused() -> None:
    with pytest.raises(ValueError, match="worker_output must be one of 'prefix', 'plain', got 'loud'"):
        SPool(SWorker, worker_output="loud")


PRELOADED = """
import logging, sys
from stateful_pool import SPool, SWorker

class Logs(SWorker):
    def execute(self, x):
        logging.getLogger("app").info("got %s", x)

with SPool(Logs, preload=["logging_setup"]) as pool:
    pool.spawn()
    pool.execute(7)
"""


def test_logging_configured_by_a_preloaded_module_is_prefixed(tmp_path: Path) -> None:
    # The zygote imports the module, so its handler holds the stream from before the worker
    # existed: the worker points it at the prefixed one.
    (tmp_path / "logging_setup.py").write_text(
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(name)s: %(message)s')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    out = run_script(PRELOADED, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.fullmatch(r"\(pid=\d+\) app: got 7\n", out.stdout), out.stdout
