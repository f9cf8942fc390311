"""Rolling restarts: ``pool.rolling_restart(*new_spawn_args)`` replaces the workers one at a
time, each replacement ready before the worker it replaces leaves, so no call fails and the
serving capacity never drops."""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from stateful_pool import SPool, SWorker


class Versioned(SWorker):
    """A "model" of some version, slow to load."""

    def spawn(self, version: str, load_seconds: float = 0.2) -> str:
        time.sleep(load_seconds)
        self.version = version
        return version

    def execute(self, x: int) -> tuple[str, int, int]:
        time.sleep(0.005)
        return self.version, x, os.getpid()

    def whoami(self) -> tuple[str, str | None, list[int]]:
        return self.version, os.environ.get("ROLLING_PROBE"), sorted(os.sched_getaffinity(0))


def serving(pool: SPool[Any]) -> int:
    return sum(1 for w in pool.stats()["workers"] if w["state"] in ("idle", "busy"))


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_rolling_restart_under_load_fails_nothing_and_keeps_capacity(mode: str) -> None:
    n = 3
    with SPool(Versioned, mode=mode) as pool:
        assert [f.result(timeout=60) for f in [pool.submit_spawn("v1") for _ in range(n)]] == ["v1"] * n
        old_pids = {w["pid"] for w in pool.stats()["workers"]}
        stop = threading.Event()
        outcomes: list[Any] = []
        capacity: list[int] = []

        def load() -> None:
            i = 0
            while not stop.is_set():
                futures = [pool.submit_execute(i + k) for k in range(4)]
                outcomes.extend(f.exception(timeout=60) or f.result() for f in futures)
                i += 4

        def sample() -> None:
            while not stop.is_set():
                capacity.append(serving(pool))
                time.sleep(0.002)

        threads = [threading.Thread(target=load), threading.Thread(target=sample)]
        for t in threads:
            t.start()
        wait_until(lambda: len(outcomes) > 20, what="the load to run")
        assert pool.rolling_restart("v2") == ["v2"] * n
        seen_before_end = len(outcomes)
        wait_until(lambda: len(outcomes) > seen_before_end + 20, what="the load to go on")
        stop.set()
        for t in threads:
            t.join(timeout=60)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert failures == [], failures[:3]
        assert min(capacity) >= n, f"serving workers dropped to {min(capacity)}"
        versions = [o[0] for o in outcomes]
        assert versions[0] == "v1" and versions[-1] == "v2"
        # Once a call saw v2, the old workers were retiring: every worker now reports v2.
        assert pool.broadcast("whoami") == [("v2", None, sorted(os.sched_getaffinity(0)))] * n
        assert pool.num_workers == n
        if mode == "process":
            new_pids = {w["pid"] for w in pool.stats()["workers"] if w["state"] == "idle"}
            assert len(new_pids) == n and not new_pids & old_pids


def test_replacements_keep_their_workers_placement() -> None:
    cpu = sorted(os.sched_getaffinity(0))[-1]
    with SPool(Versioned) as pool:
        pool.placement(env={"ROLLING_PROBE": "gpu1"}, cpus=[cpu]).spawn("v1", 0)
        pool.spawn("v1", 0)
        pool.rolling_restart("v2", 0)
        assert sorted(pool.broadcast("whoami"), key=repr) == sorted(
            [("v2", "gpu1", [cpu]), ("v2", None, sorted(os.sched_getaffinity(0)))], key=repr
        )


def test_a_failing_replacement_leaves_the_old_workers_serving() -> None:
    with SPool(Versioned) as pool:
        pool.spawn("v1", 0)
        pool.spawn("v1", 0)
        with pytest.raises(TypeError):
            pool.rolling_restart("v2", "not a number")
        assert pool.num_workers == 2
        assert [v for v, _, _ in pool.broadcast("whoami")] == ["v1", "v1"]
        assert pool.execute(1)[:2] == ("v1", 1)


class Logged(SWorker):
    """Appends its setup's start and end times to a log, then serves."""

    def spawn(self, log: str, load_seconds: float) -> None:
        began = time.monotonic()
        time.sleep(load_seconds)
        with open(log, "a") as f:
            f.write(f"{began} {time.monotonic()}\n")

    def execute(self, x: int) -> tuple[int, int]:
        time.sleep(0.002)
        return x, os.getpid()


def test_recycling_starts_the_replacement_before_the_old_worker_goes(tmp_path: Path) -> None:
    load = 0.4
    with SPool(Logged, max_tasks_per_worker=10) as pool:
        pool.spawn(str(tmp_path / "setups"), load)
        pids: list[int] = []
        slowest = 0.0
        while len(set(pids)) < 3:
            began = time.monotonic()
            pids.append(pool.execute(len(pids))[1])
            slowest = max(slowest, time.monotonic() - began)
            assert len(pids) < 2000, "no recycling"
        # The one worker kept serving while each replacement loaded: no call waited for one.
        assert slowest < load, (slowest, pids)
        runs = [pids.count(pid) for pid in dict.fromkeys(pids)][:-1]
        assert all(n >= 10 for n in runs), runs
        assert pool.stats()["workers"][0]["restarts"] == 2


def test_recycles_of_workers_due_together_are_staggered(tmp_path: Path) -> None:
    log = tmp_path / "setups"
    with SPool(Logged, max_tasks_per_worker=10) as pool:
        for f in [pool.submit_spawn(str(log), 0.3) for _ in range(2)]:
            f.result(timeout=60)
        pids: set[int] = set()
        while len(pids) < 6:
            pids.update(pid for _, pid in (f.result(timeout=60) for f in [pool.submit_execute(i) for i in range(2)]))
            assert len(log.read_text().splitlines()) < 50, "runaway recycling"
        wait_until(lambda: all(w["state"] == "idle" for w in pool.stats()["workers"]), what="the last takeover")
        # Round robin brings both workers to 10 tasks together, yet no two replacements loaded
        # at the same time.
        setups = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())[2:]
        assert len(setups) >= 4
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(setups)), setups
