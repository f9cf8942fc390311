"""Per-worker placement: ``pool.placement(env=..., cpus=...)`` gives each worker its own
environment variables and CPU affinity, set before its interpreter starts and kept across
restarts; Ray mode maps it to actor options; in-process modes refuse it."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from conftest import wait_until
from stateful_pool import SPool, SWorker, WorkerCrashedError


class WhereAmI(SWorker):
    """Reports where it runs, as its interpreter saw it from the start."""

    def spawn(self, tag: str = "") -> dict[str, Any]:
        self.tag = tag
        # Read at import time of the worker's own interpreter: set before it started.
        self.started_with = os.environ.get("PLACEMENT_PROBE")
        return self.execute()

    def execute(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "cpus": sorted(os.sched_getaffinity(0)),
            "probe": os.environ.get("PLACEMENT_PROBE"),
            "started_with": self.started_with,
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "tag": self.tag,
        }


needs_two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable CPUs")


@needs_two_cpus
def test_each_worker_gets_its_own_env_and_cpus() -> None:
    first, second = sorted(os.sched_getaffinity(0))[:2]
    with SPool(WhereAmI) as pool:
        a = pool.placement(env={"PLACEMENT_PROBE": "a", "CUDA_VISIBLE_DEVICES": "0"}, cpus=[first]).spawn("a")
        b = pool.placement(env={"PLACEMENT_PROBE": "b", "CUDA_VISIBLE_DEVICES": "1"}, cpus=[second]).spawn("b")
        plain = pool.spawn("plain")
        assert (a["cpus"], a["probe"], a["started_with"], a["cuda"]) == ([first], "a", "a", "0")
        assert (b["cpus"], b["probe"], b["started_with"], b["cuda"]) == ([second], "b", "b", "1")
        # A worker spawned without a placement is placed like the parent.
        assert plain["probe"] is None and plain["cpus"] == sorted(os.sched_getaffinity(0))
        assert len({a["pid"], b["pid"], plain["pid"]}) == 3


@needs_two_cpus
def test_placement_is_kept_across_a_crash_restart() -> None:
    cpu = sorted(os.sched_getaffinity(0))[1]
    with SPool(WhereAmI) as pool:
        before = pool.placement(env={"PLACEMENT_PROBE": "kept"}, cpus=[cpu]).spawn("t")
        os.kill(before["pid"], signal.SIGKILL)
        wait_until(lambda: pool.stats()["workers"][0]["restarts"] == 1, what="the restart")

        def restarted() -> dict[str, Any] | None:
            try:
                after: dict[str, Any] = pool.execute()
            except WorkerCrashedError:  # the call raced the kill
                return None
            return after if after["pid"] != before["pid"] else None

        wait_until(lambda: restarted() is not None, what="the restarted worker to serve")
        after = restarted()
        assert after is not None
        assert (after["cpus"], after["probe"], after["started_with"], after["tag"]) == ([cpu], "kept", "kept", "t")


def test_submit_spawn_and_resize_through_a_view_are_placed() -> None:
    cpu = sorted(os.sched_getaffinity(0))[0]
    with SPool(WhereAmI) as pool:
        placed = pool.placement(env={"PLACEMENT_PROBE": "many"}, cpus=[cpu])
        infos = [f.result(timeout=60) for f in [placed.submit_spawn("s") for _ in range(2)]]
        placed.resize(3, "r")
        assert pool.num_workers == 3
        infos += pool.broadcast("execute")
        assert all(i["probe"] == "many" and i["cpus"] == [cpu] for i in infos), infos


def test_bad_placements_are_refused_before_anything_starts() -> None:
    with SPool(WhereAmI) as pool:
        with pytest.raises(ValueError, match="not available to this process"):
            pool.placement(cpus=[max(os.sched_getaffinity(0)) + 1000])
        with pytest.raises(ValueError, match="at least one CPU"):
            pool.placement(cpus=[])
        with pytest.raises(TypeError, match="CPU numbers"):
            pool.placement(cpus=[-1])
        with pytest.raises(TypeError, match="map str to str"):
            pool.placement(env={"A": 1})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="invalid environment variable"):
            pool.placement(env={"A=B": "c"})
        assert pool.num_workers == 0


@pytest.mark.parametrize("mode", ["thread", "asyncio", "sync"])
def test_in_process_modes_refuse_a_placement(mode: str) -> None:
    with SPool(WhereAmI, mode=mode) as pool:
        with pytest.raises(ValueError, match="need mode='process' or 'ray'"):
            pool.placement(env={"PLACEMENT_PROBE": "x"})
        assert pool.spawn("ok")["tag"] == "ok"


def test_ray_placement_maps_to_actor_options() -> None:
    from stateful_pool.modes._ray import _with_placement, placed

    own = placed(b"init", {"CUDA_VISIBLE_DEVICES": "0,1", "MODEL": "v2"}, 2).actor_options
    assert own == {"num_gpus": 2, "runtime_env": {"env_vars": {"MODEL": "v2"}}, "num_cpus": 2}
    base = {"max_restarts": 0, "num_cpus": 0.5, "runtime_env": {"env_vars": {"BASE": "1"}, "pip": ["x"]}}
    assert _with_placement(base, own) == {
        "max_restarts": 0,
        "num_cpus": 2,
        "num_gpus": 2,
        "runtime_env": {"env_vars": {"BASE": "1", "MODEL": "v2"}, "pip": ["x"]},
    }


def test_ray_actor_gets_the_placed_env(ray_cluster: Any) -> None:
    pytest.importorskip("ray")
    with SPool(WhereAmI, mode="ray", actor_options={"num_cpus": 0.1}) as pool:
        info = pool.placement(env={"PLACEMENT_PROBE": "ray"}).spawn("r")
        assert info["probe"] == "ray" and info["pid"] != os.getpid()
        assert pool.spawn("plain")["probe"] is None
