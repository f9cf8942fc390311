"""The executor and future contract of ``concurrent.futures``, one finding at a time (the
standard library's own suite runs in test_cpython_futures.py): TaskPool as an Executor,
SPool futures as Futures, SystemExit as a task's exception, work finishing at exit."""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import re
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from conftest import child_pids, run_script, wait_until
from stateful_pool import SPool, SWorker
from stateful_pool.concurry import TaskWorker
from stateful_pool.errors import ResultUnpicklingError, WorkerCrashedError


def _touch(path: str) -> str:
    Path(path).touch()
    return path


def _capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def _exit(code: int) -> None:
    sys.exit(code)


class _ExitAtUnpickle:
    def __reduce__(self) -> Any:
        return (sys.exit, (7,))


class ExitWorker(SWorker):
    def execute(self, how: str) -> Any:
        if how == "sys.exit":
            sys.exit(5)
        if how == "exit-at-unpickle":
            return _ExitAtUnpickle()
        if how == "unpicklable":
            return threading.Lock()
        return os.getpid()

    def sleep(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()


def _completer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "stateful-pool-completer"]


# -- map --------------------------------------------------------------------------------------


def test_map_submits_every_call_at_once(tmp_path: Path) -> None:
    paths = [str(tmp_path / f"f{i}") for i in range(10)]
    pool = TaskWorker.options(mode="process", max_workers=2).init()
    pool.map(_touch, paths)  # the iterator is never consumed
    pool.shutdown(wait=True)
    assert sorted(os.listdir(tmp_path)) == sorted(f"f{i}" for i in range(10))


def test_map_timeout_cancels_the_call_waited_on_and_those_behind(tmp_path: Path) -> None:
    paths = [str(tmp_path / f"f{i}") for i in range(3)]
    with TaskWorker.options(mode="process", max_workers=1).init() as pool:
        blocker = pool.submit(time.sleep, 2.0)
        results = pool.map(_touch, paths, timeout=0)
        with pytest.raises(TimeoutError):
            next(results)
        blocker.result(timeout=30)
    assert os.listdir(tmp_path) == [], "the timed-out calls must not run"


@pytest.mark.parametrize("chunksize", [0, -1])
def test_map_rejects_a_chunksize_below_one(chunksize: int) -> None:
    with TaskWorker.options(mode="thread", max_workers=1).init() as pool, pytest.raises(ValueError, match="chunksize"):
        pool.map(abs, [1], chunksize=chunksize)


def test_map_without_progress_starts_no_tqdm_thread() -> None:
    # In a fresh interpreter: tqdm's monitor thread, once started by any earlier test, lives on.
    result = run_script(
        """
        import threading
        from stateful_pool.concurry import TaskWorker

        with TaskWorker.options(mode="process", max_workers=1).init() as pool:
            assert list(pool.map(abs, [-1, -2])) == [1, 2]
            tqdm = [t for t in threading.enumerate() if "tqdm" in type(t).__name__.lower() or "tqdm" in t.name]
            assert not tqdm, tqdm
        print("ok")
        """
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_map_keeps_no_reference_to_a_result() -> None:
    class Box:
        pass

    with TaskWorker.options(mode="thread", max_workers=1).init() as pool:
        for box in pool.map(lambda _: Box(), range(3)):
            ref = weakref.ref(box)
            del box
            assert ref() is None


# -- submit -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_submit_passes_any_keyword_to_the_function(mode: str) -> None:
    with TaskWorker.options(mode=mode, max_workers=1).init() as pool:
        got = pool.submit(_capture, 1, self=2, fn=3, fn_blob=4).result(timeout=30)
    assert got == ((1,), {"self": 2, "fn": 3, "fn_blob": 4})


@pytest.mark.parametrize("n", [0, -1])
def test_max_workers_must_be_positive(n: int) -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        TaskWorker.options(mode="process", max_workers=n).init()


# -- shutdown, dropped pools, interpreter exit ----------------------------------------------------


def test_shutdown_without_wait_ends_the_completion_thread_and_a_later_wait_waits() -> None:
    before = set(_completer_threads())
    pool = TaskWorker.options(mode="process", max_workers=1).init()
    future = pool.submit(time.sleep, 0.5)
    pool.shutdown(wait=False)
    pool.shutdown(wait=True)
    assert future.done(), "shutdown(wait=True) returned before the running call finished"
    assert not child_pids()
    wait_until(lambda: set(_completer_threads()) <= before, what="the completion thread to end")


def test_spool_shutdown_without_wait_ends_its_threads() -> None:
    before = set(_completer_threads())
    pool: SPool[ExitWorker] = SPool(ExitWorker)
    pool.spawn()
    future = pool.submit_call("sleep", 0.3)
    pool.shutdown(wait=False)
    assert isinstance(future.result(timeout=30), int), "a call already submitted still runs"
    wait_until(lambda: not child_pids(), what="the workers to stop")
    wait_until(lambda: set(_completer_threads()) <= before, what="the completion thread to end")


def test_a_dropped_task_pool_stops_its_workers() -> None:
    pool = TaskWorker.options(mode="process", max_workers=2).init()
    future = pool.submit(pow, 2, 5)
    del pool
    assert future.result(timeout=30) == 32
    wait_until(lambda: not child_pids(), timeout=30, what="the dropped pool's workers to stop")


@pytest.mark.parametrize("kind", ["TaskPool", "SPool"])
def test_work_submitted_before_exit_finishes(kind: str) -> None:
    make = (
        "TaskWorker.options(mode='process', max_workers=2).init().submit(sleep_and_print, 0.5, 'apple')"
        if kind == "TaskPool"
        else "SPool(P).submit_spawn().result() or None"
    )
    proc = run_script(
        f"""
        import sys, time
        from stateful_pool import SPool, SWorker
        from stateful_pool.concurry import TaskWorker
        def sleep_and_print(t, msg):
            time.sleep(t)
            print(msg, flush=True)
        class P(SWorker):
            def execute(self):
                sleep_and_print(0.5, "apple")
        if {kind!r} == "SPool":
            pool = SPool(P)
            pool.spawn()
            pool.submit_execute()
        else:
            pool = {make}
        """
    )
    # The worker's line: an SPool prefixes it with the worker's pid (worker_output="prefix", its
    # default); the executor writes it as ProcessPoolExecutor does (concurry pools: "plain").
    expected = r"\(pid=\d+\) apple" if kind == "SPool" else "apple"
    assert re.fullmatch(expected, proc.stdout.strip()), proc.stdout + proc.stderr
    assert not proc.stderr


def test_submit_after_interpreter_shutdown_raises_runtime_error() -> None:
    proc = run_script(
        """
        import atexit
        @atexit.register
        def run_last():
            try:
                t.submit(id, None)
            except RuntimeError:
                print("runtime-error")
        from stateful_pool.concurry import TaskWorker
        t = TaskWorker.options(mode="process", max_workers=1).init()
        t.submit(id, 42).result()
        """
    )
    assert proc.stdout.strip() == "runtime-error", proc.stderr


# -- SystemExit, pickling, tracebacks ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["process", "thread", "sync"])
def test_sys_exit_in_a_task_is_its_exception_and_the_worker_lives(mode: str) -> None:
    with SPool(ExitWorker, mode=mode) as pool:
        pool.spawn()
        before = pool.stats()["workers"][0]
        with pytest.raises(SystemExit) as raised:
            pool.submit_execute("sys.exit").result(timeout=30)
        assert raised.value.code == 5
        with pytest.raises(SystemExit):
            pool.execute("sys.exit")
        after = pool.stats()["workers"][0]
        assert after["pid"] == before["pid"] and after["restarts"] == 0


def test_sys_exit_in_an_executor_task_is_its_exception() -> None:
    with TaskWorker.options(mode="process", max_workers=1).init() as pool:
        pid = pool.submit(os.getpid).result(timeout=30)
        with pytest.raises(SystemExit):
            pool.submit(_exit, 1).result(timeout=30)
        assert pool.submit(os.getpid).result(timeout=30) == pid


def test_a_result_whose_unpickling_exits_fails_its_task_only() -> None:
    with SPool(ExitWorker) as pool:
        pool.spawn()
        with pytest.raises(ResultUnpicklingError) as raised:
            pool.submit_execute("exit-at-unpickle").result(timeout=30)
        assert isinstance(raised.value, concurrent.futures.BrokenExecutor)
        assert isinstance(raised.value.__cause__, SystemExit)
        assert isinstance(pool.execute("pid"), int)


def test_an_unpicklable_result_is_a_pickling_error() -> None:
    with SPool(ExitWorker) as pool:
        pool.spawn()
        with pytest.raises(pickle.PicklingError, match="could not be pickled"):
            pool.execute("unpicklable")


def test_worker_tracebacks_show_main_source_lines(tmp_path: Path) -> None:
    script = tmp_path / "main_script.py"
    script.write_text(
        "from stateful_pool.concurry import TaskWorker\n"
        "class K:\n"
        "    @classmethod\n"
        "    def boom(cls):\n"
        "        raise RuntimeError(1)  # classmethod line\n"
        "def boom():\n"
        "    raise RuntimeError(2)  # function line\n"
        "if __name__ == '__main__':\n"
        "    with TaskWorker.options(mode='process', max_workers=1).init() as pool:\n"
        "        for fn in (K.boom, boom, lambda: 1 / 0):\n"
        "            print(pool.submit(fn).exception(30).__cause__.tb)\n"
    )
    proc = run_script(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')")
    assert "# classmethod line" in proc.stdout, proc.stdout + proc.stderr
    assert "# function line" in proc.stdout
    assert "lambda: 1 / 0" in proc.stdout
    assert "<dynamic-code>" not in proc.stdout


# -- PoolFuture ---------------------------------------------------------------------------------


def test_a_running_future_says_so() -> None:
    with SPool(ExitWorker) as pool:
        pool.spawn()
        future = pool.submit_call("sleep", 1.0)
        wait_until(future.running, timeout=30, what="the future to report running")
        assert "state=running" in repr(future)
        assert not future.cancel()
        future.result(timeout=30)
        assert not future.running()


def test_cancelling_a_queued_future_wakes_a_thread_waiting_on_it() -> None:
    with SPool(ExitWorker) as pool:
        pool.spawn()
        blocker = pool.submit_call("sleep", 3.0)
        queued = pool.submit_call("sleep", 0.0)
        outcome: list[BaseException] = []

        def wait() -> None:
            try:
                queued.result(timeout=60)
            except BaseException as exc:
                outcome.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        wait_until(blocker.running, timeout=30, what="the blocker to run")
        time.sleep(0.2)  # let the waiter block in result() (no assertion depends on it)
        assert queued.cancel()
        started = time.monotonic()
        waiter.join(timeout=60)
        assert time.monotonic() - started < 2.0, "the waiter was not woken by the cancel"
        assert outcome and isinstance(outcome[0], concurrent.futures.CancelledError)
        blocker.result(timeout=30)


def test_worker_crash_stays_a_crash() -> None:
    # os._exit() is no SystemExit: the process is gone, the task fails as crashed.
    with TaskWorker.options(mode="process", max_workers=1).init() as pool:
        with pytest.raises(WorkerCrashedError):
            pool.submit(os._exit, 0).result(timeout=30)
        assert pool.submit(pow, 2, 3).result(timeout=30) == 8
