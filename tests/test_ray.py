"""mode="ray" against a real local Ray (2 CPUs, one session): actor options, actor deaths, and
the Ray examples of the concurry worker-pool guide adapted to SPool. The behaviour shared with
the other modes runs in test_modes.py (its ``[ray]`` cases)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
from typing import Any

import pytest
from conftest import pid_alive, wait_until
from mode_workers import ModeEcho
from stateful_pool import SPool, TaskTimeoutError, WorkerCrashedError

ray = pytest.importorskip("ray")
pytest.importorskip("pydantic")

from ray_workers import BranchWorker, Pipelined, PydanticValidatedWorker, ResourceProbe, Scaler  # noqa: E402


@pytest.fixture(autouse=True)
def _ray(ray_cluster: Any) -> None:
    """Every test here needs the session's Ray."""


def test_actor_options_pass_through_and_each_worker_is_an_actor() -> None:
    with SPool(ResourceProbe, mode="ray", actor_options={"num_cpus": 0.5}) as pool:
        pool.spawn()
        pool.spawn()
        probes = [f.result(timeout=30) for f in [pool.submit_execute() for _ in range(4)]]
        assert all(p["resources"] == {"CPU": 0.5} for p in probes)
        pids = {w["pid"] for w in pool.stats()["workers"]}
        assert len(pids) == 2 and os.getpid() not in pids
        assert {p["pid"] for p in probes} <= pids


def test_an_actor_killed_mid_call_fails_it_like_a_crashed_process() -> None:
    with SPool(ModeEcho, mode="ray", actor_options={"num_cpus": 0.1}) as pool:
        info = pool.spawn(tag="kept")
        future = pool.submit_call("sleep", 30)
        wait_until(lambda: pool.stats()["workers"][0]["state"] == "busy", what="the call to start")
        os.kill(info["pid"], signal.SIGKILL)
        with pytest.raises(WorkerCrashedError, match="ray actor died"):
            future.result(timeout=30)
        # Restarted as a new actor with the worker's own spawn arguments.
        again = pool.call("whoami")
        assert again["tag"] == "kept" and again["pid"] != info["pid"]
        (worker,) = pool.stats()["workers"]
        assert worker["restarts"] == 1 and worker["tasks_failed"] == 1
    wait_until(lambda: not pid_alive(again["pid"]), what="the actor to be killed on shutdown")


def test_futures_work_with_wait_as_completed_and_asyncio() -> None:
    with SPool(ModeEcho, mode="ray", actor_options={"num_cpus": 0.1}) as pool:
        pool.spawn()
        futures = [pool.submit_execute(i) for i in range(20)]
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=30)) == list(range(20))

        async def main() -> list[Any]:
            return list(await asyncio.gather(*(pool.async_execute(i) for i in range(5))))

        assert asyncio.run(main()) == list(range(5))


def test_guide_validated_worker_coerces_arguments() -> None:
    # concurry: PydanticValidatedWorker.options(mode="ray", max_workers=10).init(base=3)
    with SPool(PydanticValidatedWorker, mode="ray", actor_options={"num_cpus": 0.1}) as pool:
        for f in [pool.submit_spawn(base="3") for _ in range(2)]:
            assert f.result(timeout=30) == 3
        futures = [pool.submit_call("compute", "10", y=str(i)) for i in range(5)]
        assert [f.result(timeout=30) for f in futures] == [30, 33, 36, 39, 42]
        assert pool.call("process", "2", offset="0.5") == 6.5
        with pytest.raises(ValueError, match="validation error"):
            pool.call("compute", "not a number")


def test_guide_nested_pools_branch_workers_with_leaf_pools() -> None:
    # concurry: BranchWorker.options(mode="ray", max_workers=3, actor_options={"num_cpus": 0.2}),
    # each branch with its own LeafWorker pool (scaled down for a 2-CPU test cluster).
    with SPool(BranchWorker, mode="ray", actor_options={"num_cpus": 0.2}) as pool:
        for f in [pool.submit_spawn(leaves=2) for _ in range(2)]:
            assert f.result(timeout=60) == 2
        assert pool.call("process_group", [1, 2, 3, 4, 5]) == [2, 4, 6, 8, 10]
        results = [f.result(timeout=60) for f in [pool.submit_call("process_group", [i, i + 1]) for i in range(4)]]
        assert results == [[2 * i, 2 * i + 2] for i in range(4)]
        leaves = [pid for pids in pool.broadcast("leaf_pids") for pid in pids]
        assert len(set(leaves)) == 4, "two leaf actors per branch"
    # Killing a branch actor takes its leaf actors with it (Ray's owner fate-sharing).
    wait_until(lambda: not any(pid_alive(p) for p in leaves), timeout=20, what="leaf actors to end")


# -- several calls in flight per actor (max_concurrency) -----------------------------------------


def test_several_calls_in_flight_per_actor_bounded_by_max_concurrency() -> None:
    # A threaded actor runs what is queued at it at once, so it sees how many calls are in
    # flight: exactly the pool's bound, never more.
    actor_options = {"num_cpus": 0.1, "max_concurrency": 8}
    with SPool(Pipelined, mode="ray", actor_options=actor_options, max_concurrency=3) as pool:
        pool.spawn()
        peaks = [f.result(timeout=60) for f in [pool.submit_call("rendezvous", 3) for _ in range(6)]]
        assert peaks == [3] * 6
        (worker,) = pool.stats()["workers"]
        assert worker["tasks_done"] == 6


def _gated(pool: SPool[Pipelined], tmp_path: Any, label: str) -> tuple[Any, str]:
    """Submits a call that blocks at the actor until the returned gate file exists, once it
    runs."""
    gate, started = str(tmp_path / f"{label}.gate"), str(tmp_path / f"{label}.started")
    future = pool.submit_call("gate", gate, started, label)
    wait_until(lambda: os.path.exists(started), timeout=60, what=f"call {label} to start")
    return future, gate


def test_a_queued_call_that_times_out_fails_alone(tmp_path: Any) -> None:
    with SPool(Pipelined, mode="ray", actor_options={"num_cpus": 0.1}, max_concurrency=4) as pool:
        info = pool.spawn()
        running, gate = _gated(pool, tmp_path, "a")
        late = pool.options(timeout=0.5).submit_call("record", "late")
        behind = pool.submit_call("record", "b")
        with pytest.raises(TaskTimeoutError):
            late.result(timeout=30)
        open(gate, "w").close()
        assert running.result(timeout=30) == "a" and behind.result(timeout=30) == "b"
        # The late call was cancelled at the actor, which was not killed.
        assert pool.call("history") == ["a", "b"]
        assert pool.call("whoami")["pid"] == info["pid"]


def test_a_call_queued_at_the_actor_is_cancelled_alone(tmp_path: Any) -> None:
    with SPool(Pipelined, mode="ray", actor_options={"num_cpus": 0.1}, max_concurrency=2) as pool:
        info = pool.spawn()
        running, gate = _gated(pool, tmp_path, "a")
        at_actor = pool.submit_call("record", "b")
        in_pool = pool.submit_call("record", "c")
        assert in_pool.cancel(), "a call still in the pool's queue is cancelled"
        assert at_actor.kill(), "a call queued at the actor is cancelled there"
        with pytest.raises(concurrent.futures.CancelledError):
            at_actor.result(timeout=30)
        open(gate, "w").close()
        assert running.result(timeout=30) == "a"
        assert pool.call("history") == ["a"]
        assert pool.call("whoami")["pid"] == info["pid"]


def test_a_running_call_that_times_out_kills_the_actor_and_its_queued_calls(tmp_path: Any) -> None:
    with SPool(Pipelined, mode="ray", actor_options={"num_cpus": 0.1}, max_concurrency=3) as pool:
        info = pool.spawn(tag="kept")
        gate, started = str(tmp_path / "gate"), str(tmp_path / "started")
        running = pool.options(timeout=1.0).submit_call("gate", gate, started, "a")
        wait_until(lambda: os.path.exists(started), timeout=60, what="the call to start")
        with pytest.raises(TaskTimeoutError):
            running.result(timeout=30)
        # A sync actor cannot be interrupted: it was killed, and replaced with its spawn arguments.
        again = pool.call("whoami")
        assert again == {"tag": "kept", "pid": again["pid"]} and again["pid"] != info["pid"]
        assert pool.call("history") == []


def test_an_actor_killed_mid_flight_fails_only_its_calls_and_restarts(tmp_path: Any) -> None:
    with SPool(Pipelined, mode="ray", actor_options={"num_cpus": 0.1}, max_concurrency=3) as pool:
        info = pool.spawn(tag="kept")
        running, _gate = _gated(pool, tmp_path, "a")
        queued = [pool.submit_call("record", label) for label in ("b", "c")]
        waiting = pool.submit_call("record", "d")  # beyond the bound: still in the pool's queue
        os.kill(info["pid"], signal.SIGKILL)
        with pytest.raises(WorkerCrashedError, match="ray actor died"):
            running.result(timeout=30)
        # Each call queued at the dead actor failed with it, or (not yet at it) ran on the new one.
        outcomes = [f.exception(timeout=30) or f.result() for f in queued]
        assert all(o in ("b", "c") or isinstance(o, WorkerCrashedError) for o in outcomes)
        assert waiting.result(timeout=30) == "d"
        again = pool.call("whoami")
        assert again["tag"] == "kept" and again["pid"] != info["pid"]
        assert "a" not in pool.call("history")
        (worker,) = pool.stats()["workers"]
        assert worker["pid"] == again["pid"]


def test_stats_have_one_entry_per_actor_whatever_its_concurrency() -> None:
    with SPool(Pipelined, mode="ray", actor_options={"num_cpus": 0.1}, max_concurrency=4) as pool:
        pids = {pool.spawn()["pid"] for _ in range(2)}
        assert [f.result(timeout=60) for f in [pool.submit_call("record", str(i)) for i in range(40)]] == [
            str(i) for i in range(40)
        ]
        workers = pool.stats()["workers"]
        assert len(workers) == 2 and {w["pid"] for w in workers} == pids
        assert sum(w["tasks_done"] for w in workers) == 40
        assert len(pool.broadcast("whoami")) == 2


def test_a_blocking_call_whose_actor_dies_fails_and_the_worker_restarts(tmp_path: Any) -> None:
    # A blocking call runs on the caller's thread (no timeout, one call at a time): the same
    # failure and restart as a call through the supervisor.
    with SPool(Pipelined, mode="ray", actor_options={"num_cpus": 0.1}) as pool:
        info = pool.spawn(tag="kept")
        started = str(tmp_path / "started")

        def kill_once_started() -> None:
            wait_until(lambda: os.path.exists(started), timeout=60, what="the call to start")
            os.kill(info["pid"], signal.SIGKILL)

        killer = threading.Thread(target=kill_once_started)
        killer.start()
        with pytest.raises(WorkerCrashedError, match="ray actor died"):
            pool.call("gate", str(tmp_path / "never"), started, "a")
        killer.join()
        again = pool.call("whoami")
        assert again["tag"] == "kept" and again["pid"] != info["pid"]
        (worker,) = pool.stats()["workers"]
        assert worker["restarts"] == 1 and worker["tasks_failed"] == 1


@pytest.mark.parametrize("depth", [1, 4], ids=["one-at-a-time", "pipelined"])
def test_every_value_shape_crosses_to_the_actor_and_back_unchanged(depth: int) -> None:
    # A call crosses as one argument and comes back as a [status, value] list (see
    # RayWorkerHost): the value inside must keep its exact type (a tuple stays a tuple, not
    # msgpack's list), arrays travel as out-of-band buffers, errors and chunks as in every mode.
    np = pytest.importorskip("numpy")
    values: list[Any] = [None, 7, 2.5, "text", b"\x00bytes", (1, 2), [1, (2, 3)], {"k": (1,)}, {3, 4}, 2**80]
    with SPool(ModeEcho, mode="ray", actor_options={"num_cpus": 0.1}, max_concurrency=depth) as pool:
        pool.spawn()
        futures = [pool.submit_execute(value) for value in values]
        for value, future in zip(values, futures, strict=True):
            result = future.result(timeout=30)
            assert result == value and type(result) is type(value)
        assert [pool.execute(value) for value in values] == values
        array = np.arange(100_000, dtype=np.float64)
        for result in (pool.execute(array), pool.submit_execute(array).result(timeout=30)):
            assert isinstance(result, np.ndarray) and np.array_equal(result, array)
        with pytest.raises(ValueError, match="boom") as raised:
            pool.call("fail", "boom")
        assert "RemoteTraceback" in type(raised.value.__cause__).__name__
        with pytest.raises(ValueError, match="late boom"):
            pool.submit_call("fail", "late boom").result(timeout=30)
        assert list(pool.map([(i,) for i in range(50)], chunksize=7)) == [(i,) for i in range(50)]


def test_a_concurry_ray_worker_refuses_an_unknown_method_at_once() -> None:
    # concurry 0.13: in ray (and sync) mode a missing method raises at the attribute, as an
    # actor handle does; in the other modes the call's future fails.
    with Scaler.options(mode="ray", actor_options={"num_cpus": 0.1}).init(3) as worker:
        with pytest.raises(AttributeError, match="no method 'nope'"):
            worker.nope(1)
        assert worker.scale(5).result(timeout=30) == 15


def test_a_concurry_ray_task_worker_takes_max_workers_zero() -> None:
    # concurry 0.13 lets Ray schedule with max_workers=0; here it is one actor, as for a Worker.
    from stateful_pool.concurry import TaskWorker

    with TaskWorker.options(mode="ray", max_workers=0, actor_options={"num_cpus": 0.1}).init() as pool:
        assert pool.max_workers == 1
        assert [f.result(timeout=60) for f in [pool.submit(pow, i, 2) for i in range(5)]] == [0, 1, 4, 9, 16]
    with pytest.raises(ValueError, match="greater than 0"):
        TaskWorker.options(mode="thread", max_workers=0).init()
