"""On-demand pools on the core: ``SPool(on_demand=n)`` and concurry's ``on_demand=True`` get a
fresh worker per call from the Rust supervisor, at most ``n`` at once, none while idle. Process
counts come from ``/proc`` (the test's or, during a burst, the workers' own view of their
siblings), never from timing."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from conftest import child_pids, is_spare, wait_until
from stateful_pool import SPool, SWorker, WorkerCrashedError
from stateful_pool.concurry import Worker

# A spawned worker runs `stateful_pool._worker`; a forked one keeps its zygote's command line.
WORKER_MARKS = (b"stateful_pool._worker", b"stateful_pool._zygote")


def sibling_workers() -> int:
    """Live worker processes of this worker's parent (the test process, or the zygote that forked
    it: not counting its spare), seen from a worker."""
    parent = os.getppid()
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and any(m in cmdline for m in WORKER_MARKS):
            count += not is_spare(int(entry))
    return count


class Census(Worker):
    """Reports its pid and how many worker processes are live while it holds the call."""

    def __init__(self, release: str, cap: int):
        self.release = Path(release)
        self.cap = cap
        self.calls = 0

    def hold(self) -> dict[str, int]:
        # Holds until the pool is full (or the test releases the tail), recording the most
        # sibling workers seen; 30 s is only a safety net, the test never relies on it.
        self.calls += 1
        most = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            most = max(most, sibling_workers())
            if most >= self.cap or self.release.exists():
                break
            time.sleep(0.02)
        return {"pid": os.getpid(), "most": max(most, sibling_workers()), "calls": self.calls}

    def crash(self) -> None:
        os._exit(3)

    def pid(self) -> int:
        return os.getpid()


def test_no_worker_process_while_idle_and_none_left_after_stop(tmp_path: Path) -> None:
    before = child_pids()
    pool = Census.options(mode="process", on_demand=True, max_workers=2).init(str(tmp_path / "go"), 1)
    assert child_pids() == before, "an idle on-demand pool runs no worker"
    assert pool.get_pool_stats()["on_demand_active"] == 0
    pids = [pool.pid().result(timeout=60) for _ in range(3)]
    assert len(set(pids)) == 3 and not set(pids) & before
    wait_until(lambda: child_pids() == before, timeout=30, what="each worker to end after its call")
    assert pool.get_pool_stats()["total_workers"] == 0
    pool.stop()
    assert child_pids() == before


def test_a_burst_of_20_calls_never_runs_more_than_max_workers(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with Census.options(mode="process", on_demand=True, max_workers=3).init(str(release), 3) as pool:
        futures = [pool.hold() for _ in range(20)]
        samples: list[tuple[int, int]] = []

        def seventeen_done() -> bool:
            samples.append((pool.get_pool_stats()["total_workers"], len(child_pids())))
            return sum(f.done() for f in futures) >= 17

        # The first 17 calls each see the pool full; the last three can only see fewer, so the
        # test lets them go once the others are done.
        wait_until(seventeen_done, timeout=120, what="17 calls to see a full pool")
        release.touch()
        reports = [f.result(timeout=60) for f in futures]
    assert max(r["most"] for r in reports) == 3, "the pool filled up to its cap"
    assert all(r["most"] <= 3 for r in reports), reports
    assert max(max(sample) for sample in samples) <= 3, "the pool's stats and /proc agree"
    assert len({r["pid"] for r in reports}) == 20, "every call ran on a fresh worker"
    assert {r["calls"] for r in reports} == {1}, "no worker ran a second call"


def test_a_worker_crash_fails_only_its_call(tmp_path: Path) -> None:
    with Census.options(mode="process", on_demand=True, max_workers=2).init(str(tmp_path), 1) as pool:
        before = pool.pid()
        crashed = pool.crash()
        after = [pool.pid() for _ in range(3)]
        with pytest.raises(WorkerCrashedError):
            crashed.result(timeout=60)
        pids = [before.result(timeout=60), *(f.result(timeout=60) for f in after)]
        assert len(set(pids)) == 4


class Setup(SWorker):
    instances = 0

    def spawn(self, value: int) -> str:
        if value < 0:
            raise ValueError(f"bad value {value}")
        type(self).instances += 1
        self.value = value
        self.calls = 0
        return "never seen by an on-demand pool"

    def execute(self, x: int) -> tuple[int, int, int]:
        self.calls += 1
        return (os.getpid(), threading.get_ident(), self.value + x + 100 * self.calls)


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_spool_on_demand_spawns_a_fresh_worker_per_call_with_the_recorded_arguments(mode: str) -> None:
    with SPool(Setup, on_demand=2, mode=mode) as pool:
        assert pool.spawn(5) is None, "spawn only records the arguments"
        assert pool.num_workers == 0
        results = [f.result(timeout=60) for f in [pool.submit_execute(i) for i in range(6)]]
        assert [value for _, _, value in results] == [105 + i for i in range(6)], "fresh state each call"
        if mode == "process":
            assert len({pid for pid, _, _ in results}) == 6
        wait_until(lambda: pool.num_workers == 0, timeout=30, what="the workers to retire")


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_a_spawn_that_raises_fails_its_call_with_that_exception(mode: str) -> None:
    with SPool(Setup, on_demand=1, mode=mode) as pool:
        pool.spawn(-1)
        for _ in range(2):  # each call tries once: no crash loop, no hang
            with pytest.raises(ValueError, match="bad value -1"):
                pool.execute(1)
        pool.spawn(1)
        assert pool.execute(1)[2] == 102


def test_on_demand_options_are_checked() -> None:
    from stateful_pool import NoWorkersError

    with pytest.raises(ValueError, match="at least 1"):
        SPool(Setup, on_demand=0)
    for mode in ("sync", "asyncio"):
        with pytest.raises(ValueError, match="on_demand needs mode"):
            SPool(Setup, on_demand=2, mode=mode)
    with SPool(Setup, on_demand=2) as pool:
        with pytest.raises(NoWorkersError, match="call spawn"):
            pool.execute(1)
        with pytest.raises(ValueError, match="cap is fixed"):
            pool.resize(4)
