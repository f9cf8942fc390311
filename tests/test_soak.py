"""Soak test, run by hand: ``pytest -m slow tests/test_soak.py -s`` (SOAK_TASKS overrides the
task count, default 1,000,000). Random SIGKILLs hit the workers while tasks stream through;
every task must either complete exactly once with its own result or fail with
WorkerCrashedError, and nothing may leak."""

from __future__ import annotations

import gc
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import child_pids, open_fds
from stateful_pool import SPool, WorkerCrashedError
from workers import Echo


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_soak_with_random_worker_kills() -> None:
    total = int(os.environ.get("SOAK_TASKS", "1000000"))
    # tokio's SIGCHLD listener (a socket pair) is created once per process, by the first pool:
    # make it exist before counting descriptors.
    with SPool(Echo) as warmup:
        warmup.spawn()
    gc.collect()
    fds_before = len(open_fds())
    threads_before = threading.active_count()
    kills = 0
    stop = threading.Event()

    with SPool(Echo, queue_size=10_000, max_restarts=1_000_000, restart_window=1) as pool:
        for _ in range(2):
            pool.spawn()

        def killer() -> None:
            nonlocal kills
            rng = random.Random(7)
            while not stop.wait(rng.uniform(0.005, 0.05)):
                pids = [w["pid"] for w in pool.stats()["workers"] if w["pid"]]
                if pids:
                    try:
                        os.kill(rng.choice(pids), signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass

        thread = threading.Thread(target=killer)
        thread.start()
        started = time.perf_counter()
        completed = crashed = 0
        try:
            window = 20_000
            for base in range(0, total, window):
                futures = [pool.submit_execute(i) for i in range(base, min(total, base + window))]
                for i, f in enumerate(futures, base):
                    exc = f.exception(timeout=120)
                    if exc is None:
                        assert f.result() == i, "a result went to the wrong task"
                        completed += 1
                    else:
                        assert isinstance(exc, WorkerCrashedError), repr(exc)
                        crashed += 1
        finally:
            stop.set()
            thread.join()
        elapsed = time.perf_counter() - started
        restarts = sum(w["restarts"] for w in pool.stats()["workers"])
    gc.collect()
    leaked_fds = len(open_fds()) - fds_before
    leaked_children = len(child_pids())
    leaked_threads = threading.active_count() - threads_before
    print(
        f"\nsoak: tasks={total} completed={completed} crashed={crashed} lost={total - completed - crashed} "
        f"kills={kills} restarts={restarts} leaked_fds={max(0, leaked_fds)} leaked_children={leaked_children} "
        f"leaked_threads={leaked_threads} in {elapsed:.1f}s ({total / elapsed:,.0f} tasks/s)"
    )
    assert completed + crashed == total
    assert crashed <= kills, "only a kill can fail a task"
    assert leaked_fds <= 0 and leaked_children == 0 and leaked_threads <= 0


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_soak_with_hostile_faults(tmp_path: Path) -> None:
    """Random SIGSTOP/SIGCONT and SIGKILL from outside, and tasks whose worker dies holding a
    permit, scribbles on its shared memory or exits with code 0: no task is lost or answered
    twice, every permit comes back, nothing leaks. SOAK_HOSTILE_TASKS overrides the task count
    (default 200,000)."""
    from soak_workers import Hostile
    from stateful_pool.concurry import LimitSet, ResourceLimit

    total = int(os.environ.get("SOAK_HOSTILE_TASKS", "200000"))
    with SPool(Echo) as warmup:
        warmup.spawn()
    # The limit table (a memfd) is the test's own: made before the descriptors are counted.
    limits = LimitSet([ResourceLimit(key="conn", capacity=2)])
    gc.collect()
    fds_before = len(open_fds())
    threads_before = threading.active_count()
    rng = random.Random(11)
    # Roughly one misbehaving task in 500, of each kind.
    kinds = ["die_holding", "corrupt", "exit0", "hold"]
    actions = {i: rng.choice(kinds) for i in rng.sample(range(total), total // 500)}
    counts = {"stops": 0, "kills": 0}
    stop = threading.Event()
    pool = Hostile.options(mode="process", max_workers=3, limits=limits).init()
    spool = pool.spool
    assert spool is not None

    def chaos() -> None:
        chaos_rng = random.Random(13)
        while not stop.wait(chaos_rng.uniform(0.01, 0.05)):
            pids = [w["pid"] for w in spool.stats()["workers"] if w["pid"]]
            if not pids:
                continue
            pid = chaos_rng.choice(pids)
            try:
                if chaos_rng.random() < 0.7:
                    os.kill(pid, signal.SIGSTOP)
                    counts["stops"] += 1
                    time.sleep(chaos_rng.uniform(0.005, 0.05))
                    os.kill(pid, signal.SIGCONT)
                else:
                    os.kill(pid, signal.SIGKILL)
                    counts["kills"] += 1
            except ProcessLookupError:
                pass

    thread = threading.Thread(target=chaos)
    thread.start()
    started = time.perf_counter()
    completed = crashed = protocol_batch = 0
    try:
        window = 5_000
        for base in range(0, total, window):
            futures = [
                (i, pool.work(i, actions[i], str(tmp_path)) if i in actions else pool.work(i))
                for i in range(base, min(total, base + window))
            ]
            for i, f in futures:
                exc = f.exception(timeout=120)
                if exc is None:
                    assert f.result() == i, "a result went to the wrong task"
                    completed += 1
                else:
                    # A FileExistsError here would be a misbehaving task run twice.
                    assert isinstance(exc, WorkerCrashedError), repr(exc)
                    crashed += 1
                    # A worker that broke the protocol takes its whole batch with it: which of
                    # those tasks ran cannot be known, and none may run twice.
                    protocol_batch += "broke the protocol" in str(exc)
    finally:
        stop.set()
        thread.join()
        # A worker stopped at the very end must not hold up the shutdown.
        for w in spool.stats()["workers"]:
            if w["pid"]:
                try:
                    os.kill(w["pid"], signal.SIGCONT)
                except ProcessLookupError:
                    pass
    elapsed = time.perf_counter() - started
    restarts = sum(w["restarts"] for w in spool.stats()["workers"])
    pool.stop()
    permits = limits.available("conn")
    del pool, futures, f, exc
    gc.collect()
    leaked_fds = len(open_fds()) - fds_before
    leaked_children = len(child_pids())
    leaked_threads = threading.active_count() - threads_before
    hostile = sum(1 for a in actions.values() if a != "hold")
    print(
        f"\nhostile soak: tasks={total} completed={completed} crashed={crashed} (protocol={protocol_batch}) "
        f"lost={total - completed - crashed} "
        f"hostile_tasks={hostile} stops={counts['stops']} kills={counts['kills']} restarts={restarts} "
        f"permits={permits}/2 leaked_fds={max(0, leaked_fds)} leaked_children={leaked_children} "
        f"leaked_threads={leaked_threads} in {elapsed:.1f}s ({total / elapsed:,.0f} tasks/s)"
    )
    assert completed + crashed == total
    assert crashed - protocol_batch <= counts["kills"] + hostile, "only a kill or a hostile task can fail a task"
    assert permits == 2, "a permit held by a dead worker was not given back"
    assert leaked_fds <= 0 and leaked_children == 0 and leaked_threads <= 0
