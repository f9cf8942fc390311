"""The zygote start method: workers forked from a single-threaded template process. Real
processes and real signals: where each worker comes from, what it inherits, the fault matrix,
the zygote's own death, the parent's SIGKILL, and descriptor leaks."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, _child_pids, child_pids, is_spare, is_zygote, open_fds, pid_alive, wait_until, zygote_pids
from stateful_pool import SPool, TaskTimeoutError, WorkerCrashedError
from workers import SpawnBomb
from zygote_workers import Inspect


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def only_worker(pool: SPool[Inspect]) -> dict[str, object]:
    (worker,) = pool.stats()["workers"]
    return worker


def wait_replaced(pool: SPool[Inspect], old_pid: int) -> int:
    def replaced() -> bool:
        worker = only_worker(pool)
        return worker["state"] == "idle" and worker["pid"] not in (None, old_pid)

    wait_until(replaced, what="the worker to be replaced")
    assert not pid_alive(old_pid)
    pid = only_worker(pool)["pid"]
    assert isinstance(pid, int)
    return pid


def test_the_zygote_starts_with_the_pool_and_its_shutdown_ends_it() -> None:
    pool = SPool(Inspect)
    # Ready before any worker is asked for, so the first ones need not wait for its start.
    wait_until(lambda: len(zygote_pids()) == 1, what="the pool's zygote to start")
    assert not child_pids(), "the zygote alone, no worker yet"
    pool.shutdown()
    assert not zygote_pids() and not child_pids(), "gone when shutdown returns, not only soon after"
    with SPool(Inspect, start_method="spawn") as spawning:
        spawning.spawn()
        assert not zygote_pids(), "a pool whose workers start afresh has no zygote"


def test_workers_are_forked_from_one_zygote_and_serve() -> None:
    with SPool(Inspect, start_method="spawn") as pool:
        pool.spawn()
        spawned_fds = pool.call("facts")["fds"]
    with SPool(Inspect) as pool:
        pids = {pool.spawn(tag="a")["pid"], pool.spawn(tag="b")["pid"]}
        (zygote,) = zygote_pids()
        assert parent_of(zygote) == os.getpid(), "the zygote is started by the pool, afresh"
        assert pids == child_pids()
        for facts in pool.broadcast("facts"):
            assert facts["ppid"] == zygote and facts["pid"] in pids
            assert facts["pgid"] == facts["pid"], "its own process group, as when spawned"
            assert facts["argv"] == ["-c"], "a spawned worker's argv, not the zygote's"
            kinds = {fd: os.readlink(f"/proc/{facts['pid']}/fd/{fd}") for fd in facts["fds"][3:6]}
            channels = {fd for fd, what in kinds.items() if what.startswith(("pipe:", "socket:"))}
            assert channels == {3, 4}, f"its own channel and none of the zygote's descriptors: {kinds}"
            assert facts["fds"] == spawned_fds, "the same descriptors as a spawned worker"
        assert sorted(pool.execute(i) for i in range(20)) == list(range(20))


def test_spawn_start_method_still_starts_fresh_interpreters() -> None:
    with SPool(Inspect, start_method="spawn") as pool:
        facts = pool.spawn() and pool.call("facts")
        assert facts["ppid"] == os.getpid()
        assert not zygote_pids(), "no zygote without start_method='zygote'"
        assert pool.execute(3) == 3


def test_bad_start_options_are_refused() -> None:
    with pytest.raises(ValueError, match="start_method must be one of"):
        SPool(Inspect, start_method="fork")
    with pytest.raises(ValueError, match="preload needs"):
        SPool(Inspect, start_method="spawn", preload=["json"])
    with pytest.raises(ValueError, match="preload needs"):
        SPool(Inspect, mode="thread", preload=["json"])
    with pytest.raises(TypeError, match="list of module names"):
        SPool(Inspect, preload="json")


def _module(directory: Path, name: str, body: str = "") -> None:
    (directory / f"{name}.py").write_text(f"import os\nIMPORTED_IN = os.getpid()\n{textwrap.dedent(body)}")


def test_a_preloaded_module_is_imported_once_in_the_zygote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _module(tmp_path, "zygote_preloaded")
    monkeypatch.chdir(tmp_path)  # the pool's working directory, where the module is found
    with SPool(Inspect, preload=["zygote_preloaded"]) as pool:
        pool.spawn()
        pool.spawn()
        (zygote,) = zygote_pids()
        seen = set(pool.broadcast("imported_in", "zygote_preloaded"))
        assert seen == {zygote}, "both workers found it imported, by the zygote"
    with SPool(Inspect) as pool:
        pool.spawn()
        assert pool.call("imported_in", "zygote_preloaded") is None, "not preloaded: not imported"


def test_a_forked_worker_imports_nothing_of_its_own_before_its_setup() -> None:
    # What the worker's main loop imports (its output prefixing, the upcall channel, logging)
    # was imported by the zygote, not by each worker as it starts (fails on the old code: 8 ms
    # of every start went to importing them).
    with SPool(Inspect) as pool:
        pool.spawn()
        startup = ("stateful_pool._output", "stateful_pool._upcall", "stateful_pool._worker", "logging", "cloudpickle")
        assert pool.call("imported_since_fork", *startup) == []
        assert pool.call("imported_since_fork", "zygote_workers") == ["zygote_workers"], "the check sees imports"


def test_a_stopped_forked_worker_runs_its_exit_handlers_and_exits_0(tmp_path: Path) -> None:
    # A forked worker skips the interpreter's teardown when told to stop, but not its exit
    # handlers (logging's flush among them).
    marker = tmp_path / "atexit-ran"
    with SPool(Inspect, on_demand=1) as on_demand:
        on_demand.spawn()
        on_demand.call("register_exit_file", str(marker))  # a fresh worker per call: retired after it
        wait_until(marker.exists, what="the retired worker's exit handler")
    marker.unlink()
    pool = SPool(Inspect)
    pool.spawn()
    pid = pool.call("facts")["pid"]
    pool.call("register_exit_file", str(marker))
    pool.shutdown()
    assert marker.read_text() == str(pid)
    assert not pid_alive(pid)


def test_a_preload_that_starts_a_thread_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _module(
        tmp_path,
        "zygote_threaded",
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n",
    )
    monkeypatch.chdir(tmp_path)
    with SPool(Inspect, preload=["json", "zygote_threaded"]) as pool:
        with pytest.raises(RuntimeError, match=r"preloading 'zygote_threaded' started threads") as info:
            pool.spawn()
        assert "start_method='spawn'" in str(info.value), "the error says what to do instead"
        assert not child_pids() and not zygote_pids(), "the refusing zygote is gone"
    with SPool(Inspect, preload=["zygote_no_such_module"]) as pool:
        with pytest.raises(RuntimeError, match=r"preloading 'zygote_no_such_module' raised ModuleNotFoundError"):
            pool.spawn()


def test_environment_and_working_directory_reach_each_forked_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZYGOTE_TEST_DEVICE", "0")
    monkeypatch.setenv("ZYGOTE_TEST_GONE", "here")
    with SPool(Inspect, max_message_size=12345, shm_capacity=None) as pool:
        names = ("ZYGOTE_TEST_DEVICE", "ZYGOTE_TEST_GONE", "WORKER_POOL_MAX_MESSAGE_SIZE", "WORKER_POOL_TRANSPORT")
        first = pool.spawn()
        # Set just before a worker starts, as one does to give each worker its own device.
        monkeypatch.setenv("ZYGOTE_TEST_DEVICE", "1")
        monkeypatch.delenv("ZYGOTE_TEST_GONE")
        monkeypatch.chdir("/")  # the pool's working directory is the one it was created in
        second = pool.spawn()
        by_pid = {facts["pid"]: facts for facts in pool.broadcast("facts", *names)}
        assert by_pid[first["pid"]]["env"] == {
            "ZYGOTE_TEST_DEVICE": "0",
            "ZYGOTE_TEST_GONE": "here",
            "WORKER_POOL_MAX_MESSAGE_SIZE": "12345",
            "WORKER_POOL_TRANSPORT": None,
        }
        assert by_pid[second["pid"]]["env"]["ZYGOTE_TEST_DEVICE"] == "1"
        assert by_pid[second["pid"]]["env"]["ZYGOTE_TEST_GONE"] is None
        assert {f["cwd"] for f in by_pid.values()} == {str(tmp_path)}
        assert all(f["ppid"] in zygote_pids() for f in by_pid.values())


@pytest.mark.parametrize("start_method", ["zygote", "spawn"])
@pytest.mark.parametrize("fault", ["exit", "sigkill", "segfault"])
def test_crash_in_spawn_raises_and_leaves_no_worker(start_method: str, fault: str) -> None:
    with SPool(SpawnBomb, start_method=start_method) as pool:
        with pytest.raises(WorkerCrashedError, match="died during setup"):
            pool.spawn(fault)
        assert not child_pids()
        assert pool.stats()["workers"] == []


@pytest.mark.parametrize("start_method", ["zygote", "spawn"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM])
def test_crash_while_idle_is_reported_with_its_signal_and_replaced(start_method: str, sig: int) -> None:
    with SPool(Inspect, start_method=start_method) as pool:
        old = pool.spawn(tag="idle")["pid"]
        os.kill(old, sig)
        new = wait_replaced(pool, old)
        assert f"killed by signal {sig}" in str(only_worker(pool)["last_error"])
        assert pool.call("whoami") == {"pid": new, "tag": "idle", "calls": 0}


@pytest.mark.parametrize("start_method", ["zygote", "spawn"])
def test_exit_0_and_kill_during_a_task_and_a_stopped_worker(start_method: str) -> None:
    with SPool(Inspect, start_method=start_method) as pool:
        pid = pool.spawn()["pid"]
        with pytest.raises(WorkerCrashedError) as info:
            pool.call("exit", 0)
        assert info.value.exitcode == 0, "exit 0 mid-task is a crash, with its real status"
        pid = wait_replaced(pool, pid)
        running = pool.submit_call("sleep", 30)
        wait_until(lambda: only_worker(pool)["state"] == "busy", what="the task to start")
        assert running.kill()
        with pytest.raises(concurrent.futures.CancelledError):
            running.result(timeout=20)
        pid = wait_replaced(pool, pid)
        os.kill(pid, signal.SIGSTOP)  # it can run nothing now; the timeout kills it
        with pytest.raises(TaskTimeoutError):
            pool.options(timeout=1).call("sleep", 0)
        wait_replaced(pool, pid)
        assert pool.execute(7) == 7


def test_a_dead_zygote_takes_its_workers_and_is_restarted() -> None:
    with SPool(Inspect) as pool:
        old = pool.spawn(tag="z")["pid"]
        (zygote,) = zygote_pids()
        os.kill(zygote, signal.SIGKILL)
        new = wait_replaced(pool, old)  # killed with its zygote, restarted from a new one
        assert "killed by signal 9" in str(only_worker(pool)["last_error"])
        assert parent_of(new) in zygote_pids() and zygote not in zygote_pids()
        assert pool.call("whoami")["tag"] == "z"
        (zygote,) = zygote_pids()
        os.kill(zygote, signal.SIGSTOP)  # hung: a start goes on past the fork timeout
        try:
            assert parent_of(pool.spawn(tag="late")["pid"]) in zygote_pids() - {zygote}
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(zygote, signal.SIGCONT)
        assert sorted(pool.execute(i) for i in range(4)) == list(range(4))


def test_starts_waiting_together_on_a_hung_zygote_all_fork_from_the_next_one() -> None:
    # Fork requests are answered concurrently: four starts time out on the hung zygote at once,
    # which counts as one broken zygote (two in a row would make the pool start fresh
    # interpreters), and all four are forked by its successor.
    with SPool(Inspect) as pool:
        pool.spawn()
        (zygote,) = zygote_pids()
        os.kill(zygote, signal.SIGSTOP)
        try:
            starts = [pool.submit_spawn(tag=str(i)) for i in range(4)]
            pids = [start.result(timeout=60)["pid"] for start in starts]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(zygote, signal.SIGCONT)
        (successor,) = zygote_pids()
        assert successor != zygote and {parent_of(pid) for pid in pids} == {successor}
        assert {w["tag"] for w in pool.broadcast("whoami")} >= {"0", "1", "2", "3"}
        assert sorted(pool.execute(i) for i in range(5)) == list(range(5))


def test_the_spare_becomes_the_next_worker_and_a_dead_spare_costs_nothing() -> None:
    with SPool(Inspect) as pool:
        first = pool.spawn()["pid"]
        (zygote,) = zygote_pids()

        def spares() -> set[int]:
            return {pid for pid in _child_pids(zygote) if is_spare(pid)}

        wait_until(lambda: len(spares()) == 1, what="the zygote to fork a spare once idle")
        (spare,) = spares()
        assert spare not in child_pids(), "a spare is not a worker"
        assert pool.spawn()["pid"] == spare, "the next worker is the spare, handed its job"
        wait_until(lambda: len(spares()) == 1 and spare not in spares(), what="the next spare")
        (spare,) = spares()
        os.kill(spare, signal.SIGKILL)
        wait_until(lambda: not pid_alive(spare), what="the spare to die")
        third = pool.spawn()["pid"]
        assert third != spare and parent_of(third) == zygote, "started all the same, by a fork"
        facts = pool.broadcast("facts")
        assert {f["pid"] for f in facts} == {first, third} | (child_pids() - {first, third})
        assert len(facts) == 3 and all(w["restarts"] == 0 for w in pool.stats()["workers"])


PARENT = """
import json, os, sys, time
sys.path.insert(0, "tests")
from stateful_pool import SPool
from zygote_workers import Inspect

pool = SPool(Inspect)
workers = [pool.spawn()["pid"] for _ in range(2)]
running = pool.submit_call("sleep", 60)
while not any(w["state"] == "busy" for w in pool.stats()["workers"]):
    time.sleep(0.01)
zygote = pool.call("facts")["ppid"]
print(json.dumps({"zygote": zygote, "workers": workers}), flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def sigkilled_parent(script: str) -> Iterator[tuple[int, Any]]:
    """Runs ``script`` in a child process until it prints a JSON line; yields the child's pid
    and that line's value, then kills the child with SIGKILL."""
    with subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            line = parent.stdout.readline()
            assert line, "the parent script failed"
            yield parent.pid, json.loads(line)
        finally:
            parent.send_signal(signal.SIGKILL)
            parent.wait(timeout=30)


def test_a_sigkilled_parent_leaves_no_process() -> None:
    with sigkilled_parent(PARENT) as (parent, pids):
        wait_until(lambda: any(is_spare(p) for p in _child_pids(pids["zygote"])), what="a spare")
        left = {pids["zygote"], *pids["workers"], *_child_pids(pids["zygote"])}
        assert all(pid_alive(pid) for pid in left) and len(left) == 4, "zygote, 2 workers, spare"
        assert is_zygote(pids["zygote"]) and parent_of(pids["zygote"]) == parent
    wait_until(lambda: not any(pid_alive(pid) for pid in left), timeout=15, what=f"{left} to die with their parent")


def test_no_descriptor_leaks_over_many_worker_and_zygote_restarts() -> None:
    with SPool(Inspect, max_restarts=100, restart_window=3600) as pool:
        pid = pool.spawn()["pid"]
        os.kill(pid, signal.SIGKILL)  # one cycle first: the completion thread and buffers exist
        pid = wait_replaced(pool, pid)
        gc.collect()
        fds = len(open_fds())
        for cycle in range(20):
            if cycle % 5 == 4:
                (zygote,) = zygote_pids()
                os.kill(zygote, signal.SIGKILL)
            else:
                with pytest.raises(WorkerCrashedError):
                    pool.call("kill_self")
            pid = wait_replaced(pool, pid)
            assert pool.execute(cycle) == cycle
        gc.collect()
        assert len(open_fds()) <= fds, "no descriptor leaked"
        assert len(child_pids()) == 1 and len(zygote_pids()) == 1


FORKSERVER = """
import json, os, sys, time
sys.path.insert(0, "tests")
from conftest import pid_alive
from stateful_pool import SPool
from zygote_workers import Inspect

def one_pool(**options):
    with SPool(Inspect, start_method="forkserver", **options) as pool:
        worker = pool.spawn()["pid"]
        zygote = pool.call("facts")["ppid"]
    return {"worker": worker, "zygote": zygote, "worker_left": pid_alive(worker), "zygote_left": pid_alive(zygote)}

def crash_and_recover():
    with SPool(Inspect, start_method="forkserver") as pool:
        old = pool.spawn()["pid"]
        os.kill(old, 9)  # seen through a pidfd registered on the shared zygotes' runtime
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            (worker,) = pool.stats()["workers"]
            if worker["state"] == "idle" and worker["pid"] not in (None, old):
                break
            time.sleep(0.01)
        return {"reported": "killed by signal 9" in str(worker["last_error"]), "serves": pool.execute(7) == 7}

first, second = one_pool(), one_pool()
recovered = crash_and_recover()
os.kill(second["zygote"], 9)
while pid_alive(second["zygote"]):
    time.sleep(0.01)
third = one_pool()
preloading = one_pool(preload=["json"])
print(json.dumps([[first, second, third, preloading], recovered]), flush=True)
time.sleep(120)
"""


def test_forkserver_zygote_is_shared_by_pools_outlives_them_and_dies_with_the_parent() -> None:
    # In a child process: the shared zygote outlives pools, which this test process must not.
    with sigkilled_parent(FORKSERVER) as (parent, (pools, recovered)):
        first, second, third, preloading = pools
        assert recovered == {"reported": True, "serves": True}, "a crash is seen and recovered from"
        assert not any(pool["worker_left"] for pool in pools), "no worker outlives its pool"
        assert all(pool["zygote_left"] for pool in pools), "the zygote outlives each pool"
        assert first["zygote"] == second["zygote"], "one zygote for both pools"
        assert first["worker"] != second["worker"]
        assert third["zygote"] != second["zygote"], "a killed shared zygote is started again"
        assert preloading["zygote"] not in (first["zygote"], third["zygote"]), "another preload, another zygote"
        left = {third["zygote"], preloading["zygote"]}
        assert all(is_zygote(pid) and parent_of(pid) == parent for pid in left)
        left |= {pid for zygote in set(left) for pid in _child_pids(zygote)}  # their spares
    wait_until(lambda: not any(pid_alive(pid) for pid in left), timeout=15, what=f"{left} to die with their parent")


def test_forkserver_is_a_start_method_and_takes_preloads() -> None:
    with pytest.raises(ValueError, match="'forkserver'"):
        SPool(Inspect, start_method="fork")
    with pytest.raises(ValueError, match="preload needs"):
        SPool(Inspect, mode="thread", start_method="forkserver", preload=["json"])
