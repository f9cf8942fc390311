"""Priorities and sticky routing (``pool.options(priority=..., key=..., sticky=...)``), with real
worker processes and in-process workers: the order a blocked worker's backlog runs in, keys
staying on their worker across calls, a killed or retired worker moving only its own keys, and
the two overflow policies (``wait`` and ``spill``)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from stateful_pool import SPool, SWorker

QUEUEING_MODES = ["process", "thread", "asyncio"]


class Router(SWorker):
    """Names itself by a token unique to this worker (a pid alone is not, in-process); records
    the tags it ran, in order; ``hold`` blocks until a gate file exists."""

    def spawn(self) -> str:
        self.token = f"{os.getpid()}:{id(self)}"
        self.ran: list[Any] = []
        return self.token

    def execute(self, tag: Any = None) -> str:
        self.ran.append(tag)
        return self.token

    def hold(self, gate: str, started: str) -> str:
        Path(started).touch()
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.token

    def order(self) -> list[Any]:
        return self.ran

    def pid(self) -> int:
        return os.getpid()


def make_pool(mode: str, workers: int) -> SPool[Router]:
    kwargs: dict[str, Any] = {"mode": mode}
    if mode == "asyncio":
        kwargs["max_concurrency"] = 1
    pool = SPool(Router, **kwargs)
    for _ in range(workers):
        pool.spawn()
    return pool


def hold_worker(pool: SPool[Router], tmp_path: Path, name: str, **options: Any) -> tuple[Path, Any]:
    """Submits ``hold`` and waits until a worker runs it; returns the gate and the future."""
    gate, started = tmp_path / f"{name}.gate", tmp_path / f"{name}.started"
    future = pool.options(**options).submit_call("hold", str(gate), str(started))
    wait_until(started.exists, 30, f"{name} to start")
    return gate, future


# -- priorities -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", QUEUEING_MODES)
def test_backlog_runs_by_priority_fifo_within_each(mode: str, tmp_path: Path) -> None:
    with make_pool(mode, 1) as pool:
        gate, held = hold_worker(pool, tmp_path, "only")
        plan = [("low", 0), ("low", 1), ("mid", 0), ("low", 2), ("high", 0), ("high", 1), ("mid", 1)]
        rank = {"low": -1, "mid": 0, "high": 7}
        futures = [pool.options(priority=rank[level]).submit_execute(f"{level}{i}") for level, i in plan]
        wait_until(lambda: pool.stats()["queued"] == len(plan), 30, "the backlog to queue")
        gate.touch()
        held.result(timeout=30)
        for f in futures:
            f.result(timeout=30)
        assert pool.call("order") == ["high0", "high1", "mid0", "mid1", "low0", "low1", "low2"]


def test_low_priority_is_not_starved(tmp_path: Path) -> None:
    """A low task behind a flood of high ones runs after at most 8 of them (the overtaking
    limit), not after the flood."""
    with make_pool("process", 1) as pool:
        gate, held = hold_worker(pool, tmp_path, "only")
        low = pool.options(priority=0).submit_execute("low")
        high = [pool.options(priority=1).submit_execute(f"h{i}") for i in range(30)]
        wait_until(lambda: pool.stats()["queued"] == 31, 30, "the backlog to queue")
        gate.touch()
        for f in [held, low, *high]:
            f.result(timeout=30)
        order = pool.call("order")
        assert order.index("low") == 8, order
        assert [t for t in order if t != "low"] == [f"h{i}" for i in range(30)], "FIFO within a priority"


def test_bad_options_fail_at_once() -> None:
    with make_pool("thread", 1) as pool:
        with pytest.raises(ValueError, match="sticky"):
            pool.options(key=1, sticky="maybe")
        with pytest.raises(ValueError, match="priority"):
            pool.options(priority=2**40)
        with pytest.raises(ValueError, match="priority"):
            pool.options(priority="high")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="unhashable"):
            pool.options(key=[1, 2])
        # Timeouts too are checked when the view is made, not at its first call.
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            pool.options(timeout=-1)
        with pytest.raises(ValueError, match="timeout must be a non-negative number"):
            pool.options(submit_timeout=float("nan"))
        assert pool.execute("fine") == pool.options(priority=3, key="k").execute("fine")


def test_sync_mode_accepts_the_options_and_runs_inline() -> None:
    """Sync mode has no queue (each call runs in the caller, at once): priorities cannot
    reorder anything, and its one worker owns every key."""
    with make_pool("sync", 1) as pool:
        token = pool.execute(0)
        assert pool.options(priority=5).execute(1) == token
        assert pool.options(key="a", sticky="spill").submit_execute(2).result(timeout=5) == token
        assert pool.call("order") == [0, 1, 2]


# -- sticky routing -------------------------------------------------------------------------


def placements(pool: SPool[Router], keys: list[str], calls: int = 1) -> dict[str, set[str]]:
    futures = [(k, pool.options(key=k).submit_execute(k)) for _ in range(calls) for k in keys]
    seen: dict[str, set[str]] = {k: set() for k in keys}
    for k, f in futures:
        seen[k].add(f.result(timeout=60))
    return seen


@pytest.mark.parametrize("mode", QUEUEING_MODES)
def test_same_key_same_worker(mode: str) -> None:
    keys = [f"user{i}" for i in range(12)]
    with make_pool(mode, 3) as pool:
        seen = placements(pool, keys, calls=50)
        assert all(len(tokens) == 1 for tokens in seen.values()), seen
        assert len(set().union(*seen.values())) > 1, "keys spread over the workers"
        stats = pool.stats()
        assert (stats["sticky_hits"], stats["sticky_misses"]) == (50 * len(keys), 0)
        # Blocking calls (which may take a worker directly) and map stick as well.
        assert all(pool.options(key=k).execute(k) in seen[k] for k in keys)
        assert set(pool.options(key="user0").map(range(20))) == seen["user0"]


def test_killed_worker_moves_only_its_keys(tmp_path: Path) -> None:
    keys = [f"user{i}" for i in range(24)]
    with make_pool("process", 4) as pool:
        before = {k: next(iter(t)) for k, t in placements(pool, keys).items()}
        victim = before["user0"]
        pid = int(victim.split(":")[0])
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: (
                sorted(w["state"] for w in pool.stats()["workers"]) == ["idle"] * 4
                and pid not in [w["pid"] for w in pool.stats()["workers"]]
            ),
            30,
            "the killed worker's replacement",
        )
        after = {k: next(iter(t)) for k, t in placements(pool, keys).items()}
        moved = {k for k in keys if after[k] != before[k]}
        assert moved == {k for k in keys if before[k] == victim}, "only the killed worker's keys move"
        assert len({after[k] for k in moved}) == 1, "all to one worker: the replacement"
        assert after["user0"] not in before.values()


def test_retired_worker_moves_only_its_keys() -> None:
    keys = [f"user{i}" for i in range(24)]
    with make_pool("process", 3) as pool:
        before = {k: next(iter(t)) for k, t in placements(pool, keys).items()}
        pool.resize(2)
        wait_until(lambda: pool.num_workers == 2, 30, "one worker to retire")
        live = {str(w) for w in pool.broadcast("execute")}
        after = {k: next(iter(t)) for k, t in placements(pool, keys).items()}
        for k in keys:
            if before[k] in live:
                assert after[k] == before[k], f"{k} moved off a worker that stayed"
            else:
                assert after[k] in live


def test_wait_queues_for_the_busy_owner_and_spill_goes_elsewhere(tmp_path: Path) -> None:
    with make_pool("process", 2) as pool:
        owner = pool.options(key="k").execute("probe")
        gate, held = hold_worker(pool, tmp_path, "owner", key="k")
        assert held.done() is False
        # Spill: the owner is busy, so an idle worker runs it at once.
        spilled = pool.options(key="k", sticky="spill").execute("spill")
        assert spilled != owner
        # Wait: it stays queued for the owner while the other worker serves other calls.
        # in priority order among the calls waiting for it.
        waiting = pool.options(key="k").submit_execute("wait")
        urgent = pool.options(key="k", priority=1).submit_execute("urgent")
        for i in range(20):
            assert pool.execute(i) != owner
        assert not waiting.done() and not urgent.done()
        assert pool.stats()["queued"] == 2
        gate.touch()
        assert held.result(timeout=30) == owner
        assert waiting.result(timeout=30) == urgent.result(timeout=30) == owner
        assert pool.options(key="k").call("order") == ["probe", "urgent", "wait"]
        stats = pool.stats()
        assert stats["sticky_misses"] == 1
        assert stats["sticky_hits"] == 5
