"""Batching (issue 3): short tasks queued behind each other reach a worker several per wake-up,
in order, without losing any when the worker dies mid-batch, and `kill()` still kills the
worker running the task. Slow tasks keep late binding: one at a time, to whichever worker is free.
"""

from __future__ import annotations

import os
from concurrent.futures import CancelledError
from pathlib import Path

import pytest
from conftest import wait_until
from stateful_pool import SPool, WorkerCrashedError
from workers import Ordered

N = 600


def _gate_then(pool: SPool[Ordered], gate: Path, submit: list) -> list:
    """Holds the only worker on a gate while the tasks are queued, so they are all waiting
    when it opens: the first ones run alone (the worker's pace is unknown, then slow), the
    rest in batches once its recent tasks have been short."""
    held = pool.submit_call("wait_for", str(gate))
    futures = [fn() for fn in submit]
    gate.touch()
    assert held.result(timeout=30) is True
    return futures


def _batches(pool: SPool[Ordered]) -> tuple[int, int]:
    workers = pool.stats()["workers"]
    return sum(w["batches"] for w in workers), sum(w["batched_tasks"] for w in workers)


def test_queued_short_tasks_run_in_batches_in_order(tmp_path: Path) -> None:
    with SPool(Ordered) as pool:
        pool.spawn()
        futures = _gate_then(pool, tmp_path / "gate", [lambda i=i: pool.submit_execute(i) for i in range(N)])
        assert [f.result(timeout=60) for f in futures] == list(range(N))
        assert pool.call("ran_so_far") == list(range(N)), "one worker runs its queue in order, batches included"
        batches, batched = _batches(pool)
        assert batches > 0 and batched > batches, pool.stats()


def test_a_crash_mid_batch_fails_only_the_running_task(tmp_path: Path) -> None:
    marker = str(tmp_path / "crashed")
    target = N // 2
    with SPool(Ordered) as pool:
        first_pid = pool.spawn()["pid"]
        calls = [lambda i=i: pool.submit_call("crash_once_at", i, target, marker) for i in range(N)]
        futures = _gate_then(pool, tmp_path / "gate", calls)
        for i, future in enumerate(futures):
            if i == target:
                with pytest.raises(WorkerCrashedError):
                    future.result(timeout=60)
            else:
                assert future.result(timeout=60) == i, f"task {i} was lost or ran wrong"
        assert os.path.exists(marker)
        (worker,) = pool.stats()["workers"]
        assert worker["restarts"] == 1 and worker["pid"] != first_pid
        assert worker["batches"] > 0, "the crash happened with batches in flight"


def test_kill_of_a_batched_task_kills_its_worker_and_spares_the_rest(tmp_path: Path) -> None:
    started = tmp_path / "started"
    target = N // 2
    with SPool(Ordered) as pool:
        pool.spawn()
        calls = [lambda i=i: pool.submit_call("hang_at", i, target, str(started)) for i in range(N)]
        futures = _gate_then(pool, tmp_path / "gate", calls)
        wait_until(started.exists, timeout=30, what="the hanging task to start")
        assert futures[target].kill()
        with pytest.raises(CancelledError):
            futures[target].result(timeout=30)
        for i, future in enumerate(futures):
            if i != target:
                assert future.result(timeout=60) == i
        (worker,) = pool.stats()["workers"]
        assert worker["restarts"] == 1


def test_slow_tasks_are_not_batched(tmp_path: Path) -> None:
    with SPool(Ordered) as pool:
        pids = {pool.submit_spawn().result(timeout=30)["pid"] for _ in range(2)}
        futures = [pool.submit_call("sleep", 0.05) for _ in range(8)]
        assert {f.result(timeout=30) for f in futures} == pids, "both workers took slow tasks"
        assert _batches(pool) == (0, 0)
