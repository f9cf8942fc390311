"""Rolling restarts: ``pool.rolling_restart(*new_spawn_args)`` replaces the workers one at a
time, each replacement ready before the worker it replaces leaves, so no call fails and the
serving capacity never drops."""

from __future__ import annotations

import os
import threading
import time
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
