"""Issue 11, findings 7 and 8: pools their user dropped, pools inherited through ``fork()``, and
hostile input on the worker side (exceptions that cannot be formatted or pickled, method names
that lie, classes of ``__main__``). Real processes throughout; nothing here may hang."""

from __future__ import annotations

import gc
import os
import sys
import threading
from typing import Any

import pytest
from conftest import REPO, child_pids, open_fds, run_script, wait_until
from hostile_py_workers import EXCEPTIONS, Guarded, LyingName
from stateful_pool import SPool, Worker
from stateful_pool._serialize import encode

IN_PROCESS = ["thread", "asyncio", "sync"]
MODES = ["process", *IN_PROCESS]
TESTS = str(REPO / "tests")


def _threads() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.ident is not None}


def _memfds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
        except OSError:
            pass
    return count


@pytest.fixture
def baseline() -> tuple[set[int], set[int]]:
    """Descriptors and threads before the test, after one pool has run: the first pool of a
    process opens what the runtime keeps for good (tokio's signal socket pair)."""
    with SPool(Guarded) as warm:
        warm.spawn()
    gc.collect()
    return open_fds(), _threads()


def _settled(fds: set[int], threads: set[int]) -> bool:
    gc.collect()
    left = {
        "workers": child_pids(),
        "threads": [t.name for t in threading.enumerate() if t.ident not in threads],
        "fds": open_fds() - fds,
        "memfds": _memfds(),
    }
    if any(left.values()):
        print("still held:", left)  # shown by pytest if the wait times out
        return False
    return True


# -- finding 7: abandoned pools -------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_hundred_dropped_pools_leave_no_worker_thread_or_descriptor(baseline: tuple[set[int], set[int]]) -> None:
    fds, threads = baseline
    futures = []
    for i in range(100):
        pool: SPool[Any] = SPool(Guarded)
        pool.spawn()
        futures.append(pool.submit_execute(i))
        del pool  # the user lets go; only the future is left
    # The futures of dropped pools still complete: the work submitted is done, as with a
    # dropped ProcessPoolExecutor.
    assert [f.result(timeout=60) for f in futures] == list(range(100))
    del futures
    wait_until(
        lambda: _settled(fds, threads),
        timeout=120,
        what="dropped pools to release their workers, threads, descriptors and memfds",
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_dropped_pool_finishes_its_queued_tasks_then_stops(mode: str, baseline: tuple[set[int], set[int]]) -> None:
    fds, threads = baseline
    pool: SPool[Any] = SPool(Guarded, mode=mode, **({"max_concurrency": 1} if mode == "asyncio" else {}))
    pool.spawn()
    slow = pool.submit_call("apply", _sleep_then, 0.3, "slow")
    queued = [pool.submit_execute(i) for i in range(5)]
    del pool
    gc.collect()
    assert slow.result(timeout=30) == "slow"
    assert [f.result(timeout=30) for f in queued] == list(range(5))
    wait_until(lambda: _settled(fds, threads), timeout=30, what=f"the dropped {mode} pool to stop")


def test_a_view_keeps_its_pool(baseline: tuple[set[int], set[int]]) -> None:
    fds, threads = baseline
    view = SPool(Guarded).options(timeout=30)  # the pool itself is dropped at once
    gc.collect()
    worker_pid = view.spawn()
    gc.collect()
    assert view.execute(5) == 5 and view.call("pid") == worker_pid
    del view
    wait_until(lambda: _settled(fds, threads), timeout=30, what="the pool of the dropped view to stop")


def _sleep_then(seconds: float, value: Any) -> Any:
    import time

    time.sleep(seconds)
    return value


class Doubler(Worker):
    def double(self, x: int) -> int:
        return 2 * x


@pytest.mark.parametrize("on_demand", [False, True])
def test_a_dropped_concurry_pool_stops(on_demand: bool, baseline: tuple[set[int], set[int]]) -> None:
    fds, threads = baseline
    pool = Doubler.options(mode="process", max_workers=2, on_demand=on_demand).init()
    futures = [pool.double(i) for i in range(4)]
    del pool
    assert [f.result(timeout=60) for f in futures] == [0, 2, 4, 6]
    del futures
    wait_until(lambda: _settled(fds, threads), timeout=60, what="the dropped concurry pool to stop")


# -- finding 7: fork ------------------------------------------------------------------------------

FORK_SCRIPT = """
import os, sys, time
sys.path.insert(0, {tests!r})
from stateful_pool import SPool, Worker
from hostile_py_workers import Guarded

mode, child_uses_pool = sys.argv[1], sys.argv[2] == "use"
if mode == "concurry":
    class Doubler(Worker):
        def double(self, x):
            return 2 * x
    pool = Doubler.options(mode="process").init()
    call = lambda x: pool.double(x).result(timeout=30)
    pid = lambda: pool.get_pool_stats()["workers"][0]["pid"]
else:
    pool = SPool(Guarded, mode=mode)
    pool.spawn()
    call = lambda x: pool.execute(x) if mode != "concurry" else None
    pid = lambda: pool.call("pid")
stats = pool.get_pool_stats if mode == "concurry" else lambda: pool.num_workers
worker_pid = pid()
assert call(1) in (1, 2)
# A task still running at fork() (a sync pool has none: its futures come back done).
pending = None if mode in ("concurry", "sync") else pool.submit_call("apply", time.sleep, 1.0)

child = os.fork()
if child == 0:
    if child_uses_pool:
        errors = []
        for attempt in (
            lambda: call(2),
            lambda: pool.submit_execute(3).result(timeout=10) if mode != "concurry" else pool.double(3),
            lambda: pending.result(timeout=10) if pending else stats(),
            lambda: pool.stats() if mode != "concurry" else pool.resize(2),
        ):
            try:
                attempt()
            except RuntimeError as e:
                errors.append("fork()" in str(e))
            else:
                errors.append("no error")
        print("child errors:", errors, flush=True)
        if mode != "concurry":  # a pool made in the child is the child's, and works
            with SPool(Guarded, mode=mode) as fresh:
                fresh.spawn()
                assert fresh.execute(9) == 9 and fresh.submit_execute(8).result(timeout=30) == 8
        sys.exit(0 if errors == [True] * 4 else 3)
    sys.exit(0)  # a plain exit: atexit runs, and must not wait on the parent's pool

deadline = time.monotonic() + 20
while True:
    done, status = os.waitpid(child, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(child, 9)
        os.waitpid(child, 0)
        sys.exit("the forked child hung on the parent's pool")
    time.sleep(0.02)
assert os.waitstatus_to_exitcode(status) == 0, f"child exit status {{status}}"
if pending is not None:
    pending.result(timeout=30)
assert [call(i) for i in range(5)] in ([0, 1, 2, 3, 4], [0, 2, 4, 6, 8])
assert pid() == worker_pid, "the parent's worker was not touched"
(pool.stop() if mode == "concurry" else pool.shutdown())
print("parent ok", flush=True)
"""


@pytest.mark.parametrize("mode", [*MODES, "concurry"])
@pytest.mark.parametrize("child", ["exit", "use"])
def test_a_forked_child_leaves_the_parents_pool_alone(mode: str, child: str) -> None:
    out = run_script(FORK_SCRIPT.format(tests=TESTS), mode, child, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "parent ok" in out.stdout, out.stdout + out.stderr


# -- finding 8: exceptions that cannot be formatted or pickled ------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(EXCEPTIONS))
def test_a_hostile_exception_fails_only_its_task(mode: str, kind: str) -> None:
    with SPool(Guarded, mode=mode) as pool:
        worker_pid = pool.spawn()
        with pytest.raises(Exception) as info:
            pool.call("raise_hostile", kind)
        # The exception itself when it survives the trip, or a stand-in named after its type.
        assert type(info.value) is EXCEPTIONS[kind] or EXCEPTIONS[kind].__name__ in _safe_str(info.value)
        assert isinstance(pool.submit_call("raise_hostile", kind).exception(timeout=30), Exception)
        assert pool.call("pid") == worker_pid, "the same worker serves the next call"
        assert pool.execute(7) == 7
        assert pool.stats()["workers"][0]["restarts"] == 0


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return type(exc).__name__


# -- finding 8: method names ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_str_subclass_cannot_reach_a_private_method(mode: str) -> None:
    with SPool(Guarded, mode=mode) as pool:
        pool.spawn()
        with pytest.raises(TypeError, match="must be a str"):
            pool.call(LyingName("_secret"))
        assert isinstance(pool.submit_call(LyingName("_secret")).exception(timeout=30), TypeError)
        with pytest.raises(TypeError, match="must be a str"):
            pool.broadcast(LyingName("_secret"))
        with pytest.raises(AttributeError):
            pool.call("_secret")
        # Past the caller's check (a forged payload), the worker refuses too.
        payload = ("_secret", (), {}) if mode in IN_PROCESS else encode(("_secret", (), {}))
        status, _value = pool._core.call(payload)
        assert status != 0 and status != 3, "the worker ran a private method"
        payload = (LyingName("_secret"), (), {}) if mode in IN_PROCESS else encode((LyingName("_secret"), (), {}))
        status, _value = pool._core.call(payload)
        assert status != 0 and status != 3, "the worker ran a private method"
        assert pool.call("was_breached") is False


class Vault(Worker):
    def __init__(self) -> None:
        self.breached = False

    def _secret(self) -> str:
        self.breached = True
        return "secret"

    def was_breached(self) -> bool:
        return self.breached


def test_a_str_subclass_cannot_reach_a_private_method_of_a_concurry_worker() -> None:
    with Vault.options(mode="process").init() as pool:
        with pytest.raises(AttributeError):
            getattr(pool, LyingName("_secret"))
        assert pool.spool is not None
        with pytest.raises(AttributeError, match="private"):
            pool.spool.call("invoke", "_secret", (), {})
        with pytest.raises(TypeError, match="must be a str"):
            pool.spool.call("invoke", LyingName("_secret"), (), {})
        assert pool.was_breached().result(timeout=30) is False


# -- finding 8: classes and functions of __main__ -------------------------------------------------

MAIN_SCRIPT = """
import sys
from dataclasses import dataclass
sys.path.insert(0, {tests!r})
from stateful_pool import SPool
from hostile_py_workers import Guarded

@dataclass
class Point:
    x: int
    y: int

def make_point(n):
    return Point(n, -n)

with SPool(Guarded) as pool:
    pool.spawn()
    back = pool.execute(Point(1, 2))
    assert back == Point(1, 2) and type(back) is Point, (back, type(back))
    made = pool.call("apply", make_point, 3)
    assert made == Point(3, -3) and type(made) is Point, (made, type(made))
    assert pool.submit_execute([Point(4, 5)]).result(timeout=30) == [Point(4, 5)]
    assert pool.call("apply", lambda p: p.x + p.y, Point(6, 7)) == 13
print("main ok")
"""


def test_dataclass_and_function_of_main_travel_by_value() -> None:
    out = run_script(MAIN_SCRIPT.format(tests=TESTS), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "main ok" in out.stdout


def test_only_main_references_leave_the_plain_pickle_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from stateful_pool._serialize import refers_to_main

    class MainThing:
        pass

    MainThing.__module__, MainThing.__qualname__ = "__main__", "MainThing"
    monkeypatch.setattr(sys.modules["__main__"], "MainThing", MainThing, raising=False)
    large = (b"\0" * (1 << 20), "y" * (1 << 17), bytearray(1 << 17))
    assert not refers_to_main(pickle.dumps(("execute", (1, 2.0, "x"), {}), protocol=5))
    assert not refers_to_main(pickle.dumps(("execute", large, {}), protocol=5))
    assert refers_to_main(pickle.dumps(("execute", (MainThing,), {}), protocol=5))
    # After large data (written outside the pickle's frames) a reference is still found.
    assert refers_to_main(pickle.dumps(("execute", (*large, MainThing()), {}), protocol=5))
    assert refers_to_main(pickle.dumps(("execute", (*large, [MainThing] * 3), {}), protocol=5))
