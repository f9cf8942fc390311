"""SPool behaviour: the seed README, spawning, executing, futures, asyncio, map, shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, child_pids, pid_alive, run_script, wait_until
from stateful_pool import NoWorkersError, PoolFuture, PoolShutDownError, RemoteTraceback, SPool
from workers import Echo, FailingSpawn


def test_seed_readme_first_example_runs_unchanged() -> None:
    readme = REPO.parent / "shared" / "seeds" / "stateful-pool-readme.md"
    source = SEED_FIRST if not readme.exists() else _python_blocks(readme.read_text())[0]
    out = run_script(source)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "Worker initialized on GPU: [0, 1]",
        "[Execute] Square of 100 is 10000 (computed on GPU: [0, 1])",
    ]


def test_seed_readme_second_example_runs_with_the_first_class() -> None:
    readme = REPO.parent / "shared" / "seeds" / "stateful-pool-readme.md"
    blocks = [SEED_FIRST, SEED_SECOND] if not readme.exists() else _python_blocks(readme.read_text())
    class_part = blocks[0].split('if __name__ == "__main__":')[0]
    out = run_script(class_part + "\n" + blocks[1])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["Worker initialized on GPU: [0, 1]", "Worker initialized on GPU: [2, 3]"]
    assert len(lines) == 6
    for i, line in enumerate(lines[2:]):
        assert line.startswith(f"[Execute] Square of {i} is {i * i} (computed on GPU: [")


def _python_blocks(markdown: str) -> list[str]:
    parts = markdown.split("```python\n")[1:]
    return [p.split("```")[0] for p in parts]


SEED_FIRST = """
from stateful_pool import SPool, SWorker
import time, random

class SquareWorker(SWorker):
    gpu_ids: list[int]

    def spawn(self, gpu_ids: list[int]):
        self.gpu_ids = gpu_ids
        return f"Worker initialized on GPU: {self.gpu_ids}"

    def execute(self, value):
        time.sleep(random.uniform(0.1, 1.0))
        return f"[Execute] Square of {value} is {value * value} (computed on GPU: {self.gpu_ids})"

if __name__ == "__main__":

    with SPool(SquareWorker, queue_size=100) as pool:
        s = pool.spawn(gpu_ids=[0, 1])
        print(f"{s}")
        r = pool.execute(100)
        print(r)
"""
SEED_SECOND = """
with SPool(SquareWorker) as pool:
    spawn_futures = [pool.submit_spawn(gpu_ids=[i, i+1]) for i in range(0, 4, 2)]
    for f in spawn_futures:
        print(f.result())

    execute_futures = [pool.submit_execute(i) for i in range(4)]
    for f in execute_futures:
        print(f.result())
"""


def test_spawn_returns_value_and_each_worker_keeps_its_own_arguments() -> None:
    with SPool(Echo) as pool:
        first = pool.spawn(tag="a")
        second = pool.submit_spawn(tag="b").result(timeout=30)
        assert first["tag"] == "a" and second["tag"] == "b"
        assert first["pid"] != second["pid"]
        assert {first["pid"], second["pid"]} <= child_pids()
        seen = pool.broadcast("whoami")
        assert sorted(w["tag"] for w in seen) == ["a", "b"]
        assert pool.num_workers == 2


def test_execute_keeps_state_between_calls() -> None:
    with SPool(Echo) as pool:
        pool.spawn()
        for i in range(5):
            assert pool.execute(i) == i
        assert pool.call("whoami")["calls"] == 5


def test_futures_work_with_wait_as_completed_and_asyncio() -> None:
    with SPool(Echo) as pool:
        pool.spawn()
        pool.spawn()
        futures = [pool.submit_execute(i) for i in range(200)]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        _, not_done = concurrent.futures.wait(futures, timeout=30)
        assert not not_done
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == list(range(200))

        async def main() -> list[object]:
            spawned = await pool.async_spawn(tag="c")
            assert spawned["tag"] == "c"
            return list(await asyncio.gather(*(pool.async_execute(i) for i in range(50))))

        assert asyncio.run(main()) == list(range(50))


def test_futures_cost_no_thread_per_call() -> None:
    with SPool(Echo) as pool:
        pool.spawn()
        before = threading.active_count()
        futures = [pool.submit_call("sleep", 0.001) for _ in range(100)]
        during = threading.active_count()
        concurrent.futures.wait(futures)
        assert during <= before + 1  # at most the pool's one completion thread


def test_map_ordered_unordered_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    with SPool(Echo) as pool:
        pool.spawn()
        pool.spawn()
        assert list(pool.map(range(300))) == list(range(300))
        assert sorted(pool.map(iter(range(300)), ordered=False, window=8)) == list(range(300))
        assert list(pool.map(range(20), progress="squares")) == list(range(20))
    assert "squares" in capsys.readouterr().err


def test_worker_exception_reaches_caller_with_type_message_and_traceback() -> None:
    with SPool(Echo) as pool:
        pool.spawn()
        with pytest.raises(ValueError, match="bad input") as info:
            pool.call("fail", "bad input")
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "in fail" in cause.tb and "raise ValueError(message)" in cause.tb
        future = pool.submit_call("fail", "again")
        assert isinstance(future.exception(timeout=10), ValueError)
        assert pool.execute(1) == 1, "the pool keeps serving"


def test_spawn_exception_reaches_caller_and_leaves_no_process() -> None:
    with SPool(FailingSpawn) as pool:
        with pytest.raises(RuntimeError, match="no gpu"):
            pool.spawn("no gpu")
        future = pool.submit_spawn("still none")
        with pytest.raises(RuntimeError, match="still none"):
            future.result(timeout=30)
        wait_until(lambda: not child_pids(), what="the failed worker to be gone")
        assert pool.num_workers == 0


def test_execute_without_workers_and_after_shutdown_fail_at_once() -> None:
    pool = SPool(Echo)
    with pytest.raises(NoWorkersError):
        pool.execute(1)
    assert isinstance(pool.submit_execute(1).exception(timeout=1), NoWorkersError)
    pool.spawn()
    pool.shutdown()
    assert not child_pids()
    for call in (lambda: pool.execute(1), lambda: pool.spawn(), lambda: pool.submit_execute(1).result(1)):
        with pytest.raises(PoolShutDownError, match="after shutdown"):
            call()
    pool.shutdown()  # idempotent


def test_shutdown_waits_for_queued_tasks_by_default() -> None:
    pool = SPool(Echo)
    pool.spawn()
    futures = [pool.submit_call("sleep", 0.01) for _ in range(20)]
    pool.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in futures)
    assert not child_pids()


def test_shutdown_cancel_pending_cancels_queued_tasks_only() -> None:
    pool = SPool(Echo)
    pool.spawn()
    running = pool.submit_call("sleep", 0.5)
    wait_until(lambda: pool.stats()["workers"][0]["state"] == "busy", what="the task to start")
    queued = [pool.submit_execute(i) for i in range(10)]
    pool.shutdown(cancel_pending=True)
    assert isinstance(running.result(), int)
    assert all(f.cancelled() for f in queued)
    assert not child_pids()


def test_shutdown_kill_fails_running_task() -> None:
    pool = SPool(Echo)
    pool.spawn()
    running = pool.submit_call("sleep", 30)
    wait_until(lambda: pool.stats()["workers"][0]["state"] == "busy", what="the task to start")
    started = time.monotonic()
    pool.shutdown(kill=True)
    assert time.monotonic() - started < 10
    assert isinstance(running.exception(timeout=5), PoolShutDownError)
    assert not child_pids()


def test_queue_size_applies_backpressure_and_drops_nothing() -> None:
    with SPool(Echo, queue_size=2, submit_timeout=0.2) as pool:
        pool.spawn()
        blocker = pool.submit_call("sleep", 1.0)
        wait_until(lambda: pool.stats()["workers"][0]["state"] == "busy", what="the task to start")
        queued = [pool.submit_execute(i) for i in range(2)]
        overflow = pool.submit_execute(99)
        assert isinstance(overflow.exception(timeout=5), queue.Full)
        with pytest.raises(queue.Full):
            pool.execute(100)
        assert blocker.result(timeout=10) > 0
        assert [f.result(timeout=10) for f in queued] == [0, 1]


def test_max_in_flight_counts_running_tasks_too() -> None:
    with SPool(Echo, max_in_flight=2, submit_timeout=0.2) as pool:
        pool.spawn()
        running = pool.submit_call("sleep", 1.0)
        wait_until(lambda: pool.stats()["workers"][0]["state"] == "busy", what="the task to start")
        queued = pool.submit_execute(1)  # one running, one queued: two unanswered, the bound
        assert isinstance(pool.submit_execute(2).exception(timeout=5), queue.Full)
        assert running.result(timeout=10) > 0 and queued.result(timeout=10) == 1
        # Answered: room again, without a timeout to wait on.
        assert pool.submit_execute(3).result(timeout=10) == 3
    with pytest.raises(ValueError, match="max_in_flight"):
        SPool(Echo, max_in_flight=0)


def test_full_queue_blocks_submit_until_space_frees() -> None:
    with SPool(Echo, queue_size=1) as pool:
        pool.spawn()
        pool.submit_call("sleep", 0.3)
        wait_until(lambda: pool.stats()["workers"][0]["state"] == "busy", what="the task to start")
        pool.submit_execute(1)
        # Blocks (no timeout configured) until the sleeping task ends, then succeeds.
        assert pool.submit_execute(2).result(timeout=10) == 2


def test_cancel_removes_a_queued_task() -> None:
    with SPool(Echo) as pool:
        pool.spawn()
        running = pool.submit_call("sleep", 0.3)
        wait_until(lambda: pool.stats()["workers"][0]["state"] == "busy", what="the task to start")
        queued = pool.submit_call("whoami")
        assert queued.cancel()
        assert queued.cancelled()
        done, _ = concurrent.futures.wait([queued], timeout=1)
        assert queued in done
        assert not running.cancel(), "a running task cannot be cancelled"
        running.result(timeout=10)
        assert pool.call("whoami")["calls"] == 0, "the cancelled task never ran"


def test_unknown_method_and_unpicklable_values_fail_clearly() -> None:
    with SPool(Echo) as pool:
        pool.spawn()
        with pytest.raises(AttributeError, match="no public method 'nope'"):
            pool.call("nope")
        with pytest.raises(AttributeError):
            pool.call("_private")
        lock = threading.Lock()
        with pytest.raises(TypeError, match="pickle"):
            pool.execute(lock)
        assert isinstance(pool.submit_execute(lock).exception(timeout=1), TypeError)
        with pytest.raises(TypeError, match=r"Echo.unpicklable_result\(\) could not be pickled"):
            pool.call("unpicklable_result")
        assert pool.execute(3) == 3


def test_lambda_arguments_go_through_cloudpickle() -> None:
    with SPool(Echo) as pool:
        pool.spawn()
        result = pool.execute({"f": (lambda x: x + 1)})
        assert result["f"](1) == 2


def test_stats_report_each_worker() -> None:
    with SPool(Echo) as pool:
        info = pool.spawn()
        for i in range(3):
            pool.execute(i)
        stats = pool.stats()
        (worker,) = stats["workers"]
        assert worker["pid"] == info["pid"]
        assert worker["state"] == "idle"
        assert worker["tasks_done"] == 3
        assert worker["restarts"] == 0
        assert stats["queued"] == 0 and stats["live_workers"] == 1


def test_ctrl_c_interrupts_a_blocking_execute_and_cleans_up() -> None:
    script = """
        import os, signal, threading, time, sys
        sys.path.insert(0, "tests")
        from stateful_pool import SPool
        from workers import Echo
        with SPool(Echo) as pool:
            pool.spawn()
            print("ready", flush=True)
            started = time.monotonic()
            try:
                pool.call("sleep", 60)
            except KeyboardInterrupt:
                print(f"interrupted after {time.monotonic() - started:.1f}s", flush=True)
                raise
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", _dedent(script)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    workers = child_pids(proc.pid)
    assert len(workers) == 1
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert "interrupted after" in out, err
    assert "KeyboardInterrupt" in err
    for pid in workers:
        assert not pid_alive(pid)


def test_workers_do_not_outlive_a_parent_killed_with_sigkill() -> None:
    script = """
        import sys, time
        sys.path.insert(0, "tests")
        from stateful_pool import SPool
        from workers import Echo
        pool = SPool(Echo)
        for _ in range(2):
            print(pool.spawn()["pid"], flush=True)
        time.sleep(120)
    """
    proc = subprocess.Popen([sys.executable, "-c", _dedent(script)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(proc.stdout.readline()) for _ in range(2)]
    assert all(pid_alive(p) for p in pids)
    proc.kill()
    proc.wait(timeout=10)
    proc.stdout.close()
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="orphaned workers to die")


def test_pool_future_pickles_nothing_and_reprs() -> None:
    future: PoolFuture[int] = PoolFuture()
    # Never submitted, it is a plain Future (concurrent.futures' FutureTests): cancel() works.
    assert future.cancel() and future.cancelled()
    with SPool(Echo) as pool:
        assert "0 workers" in repr(pool)
        pool.spawn()
        assert pickle.loads(pickle.dumps(pool.execute({"a": [1, 2]}))) == {"a": [1, 2]}
    assert "shut down" in repr(pool)


def _dedent(source: str) -> str:
    import textwrap

    return textwrap.dedent(source)


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(TypeError):
        SPool(Echo())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue_size"):
        SPool(Echo, queue_size=0)
    with pytest.raises(ValueError, match="restart"):
        SPool(Echo, restart="sometimes")
    with pytest.raises(ValueError, match="task_timeout"):
        SPool(Echo, task_timeout=-1)
    assert os.getpid() not in child_pids()


def test_shutdown_timeout_escalates_to_kill() -> None:
    pool = SPool(Echo)
    pool.spawn()
    running = pool.submit_call("sleep", 60)
    wait_until(lambda: pool.stats()["workers"][0]["state"] == "busy", what="the task to start")
    started = time.monotonic()
    pool.shutdown(timeout=0.3)
    assert time.monotonic() - started < 10
    assert isinstance(running.exception(timeout=5), PoolShutDownError)
    assert not child_pids()
