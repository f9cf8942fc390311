"""Shared helpers: real processes, real descriptors, bounded polling (no sleep-and-hope)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def child_pids(parent: int | None = None) -> set[int]:
    """Live (non-zombie) worker processes of ``parent`` (default: this process, not counting the
    session's Ray cluster, see ``ray_cluster``): its children, where a pool's zygote (see
    ``zygote_pids``) counts as the workers it forked (not its spare, see ``is_spare``)."""
    parent = os.getpid() if parent is None else parent
    children = _child_pids(parent) - RAY_PIDS
    # A zygote's children run its command line too: they are its workers (and spare).
    if is_zygote(parent):
        return {pid for pid in children if not is_spare(pid)}
    zygotes = {pid for pid in children if is_zygote(pid)}
    forked = set().union(*(_child_pids(z) for z in zygotes))
    return (children - zygotes) | {pid for pid in forked if not is_spare(pid)}


def is_spare(pid: int) -> bool:
    """Whether ``pid``, a zygote's child, is its spare (forked ahead, waiting to become a worker):
    a spare has a socket on descriptor 3 from birth, a worker its request pipe."""
    try:
        return os.readlink(f"/proc/{pid}/fd/3").startswith("socket:")
    except OSError:
        return False


def is_zygote(pid: int) -> bool:
    """Whether ``pid`` is a pool's zygote (the template process its workers are forked from)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"stateful_pool._zygote" in f.read()
    except OSError:
        return False


def zygote_pids(parent: int | None = None) -> set[int]:
    """Live zygotes among the children of ``parent`` (default: this process)."""
    return {pid for pid in _child_pids(os.getpid() if parent is None else parent) if is_zygote(pid)}


def _child_pids(parent: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            out.add(int(entry))
    return out


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def dev_shm() -> set[str]:
    """What is in /dev/shm, less other programs' multiprocessing semaphores (``sem.mp-*``): this
    package creates none (its shared memory is memfd, never in /dev/shm), and another test run on
    the same machine may come and go with its own."""
    return {name for name in os.listdir("/dev/shm") if not name.startswith("sem.mp-")}


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Polls ``predicate`` until it holds; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def run_script(source: str, *args: str, timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Runs ``source`` as a script (its classes live in ``__main__``) in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
        **kwargs,  # type: ignore[arg-type]
    )


# Ray's own processes and descriptors: a Ray session outlives single tests (it is started once,
# by the `ray_cluster` fixture). Recorded when Ray starts and ignored by `no_leaks`, which
# still checks everything else, Ray-mode workers' host threads included.
RAY_PIDS: set[int] = set()
RAY_FDS: set[int] = set()


def pool_threads() -> list[threading.Thread]:
    """The pool's threads: completers and the hosts of thread/asyncio/ray workers."""
    return [t for t in threading.enumerate() if t.name.startswith("stateful-pool-")]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    """A local Ray (2 CPUs) for the whole session, shut down at its end."""
    ray = pytest.importorskip("ray")
    pids, fds = _child_pids(os.getpid()), open_fds()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    RAY_PIDS.update(_child_pids(os.getpid()) - pids)
    RAY_FDS.update(open_fds() - fds)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test must leave no worker process, no zygote, no extra thread and no descriptor
    behind."""
    fds_before = open_fds()
    yield
    wait_until(lambda: not child_pids(), timeout=15, what=f"worker processes {child_pids()} to exit")
    wait_until(lambda: not zygote_pids(), timeout=15, what=f"zygotes {zygote_pids()} to exit")
    wait_until(lambda: not pool_threads(), timeout=15, what=f"pool threads {pool_threads()} to end")
    leaked = open_fds() - fds_before - RAY_FDS
    # Descriptors opened by other libraries during the test (e.g. asyncio's self-pipe) may be
    # legitimately cached; the pool's pipes are what we look for.
    pipes = {
        fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}") and "pipe" in os.readlink(f"/proc/self/fd/{fd}")
    }
    assert not pipes, f"leaked pipe descriptors: {pipes}"
