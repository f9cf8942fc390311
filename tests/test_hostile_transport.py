"""A worker may stop, stall or lie at any instant (issue 11, findings 1 and 2).

Each scenario runs in a child interpreter with a deadline: on a broken supervisor the parent
hangs, aborts or segfaults, and that must show up as a clean test failure, not take pytest down.
The child prints one JSON line with what it saw; the tests assert on it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from conftest import run_script
from hostile_workers import Hostile
from stateful_pool import SPool

# Generous: the point is "promptly, not never"; timing goals belong in benchmarks.
PROMPT = 5.0

PRELUDE = """
import json, os, signal, sys, threading, time
sys.path.insert(0, HERE)
from concurrent.futures import wait
from stateful_pool import SPool
from stateful_pool.errors import PoolShutDownError, TaskTimeoutError, WorkerCrashedError
from hostile_workers import Hostile
from conftest import child_pids, pid_alive, wait_until

out = {}

def report():
    print(json.dumps(out), flush=True)

def interrupt_after(seconds):
    threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT)).start()

def outcome(future):
    if not future.done():
        return "pending"
    error = future.exception()
    return type(error).__name__ if error else future.result()[0]

def timed(fn):
    start = time.monotonic()
    try:
        return fn(), None, time.monotonic() - start
    except BaseException as e:
        return None, e, time.monotonic() - start
"""


def scenario(body: str, timeout: float = 50) -> dict[str, Any]:
    """Runs ``body`` after the prelude in a fresh interpreter; returns what it reported."""
    try:
        here = repr(os.path.dirname(os.path.abspath(__file__)))
        done = run_script(PRELUDE.replace("HERE", here, 1) + body, timeout=timeout)
    except Exception as e:  # subprocess.TimeoutExpired: the parent hung
        pytest.fail(f"the pool's process hung: {e!r}")
    if done.returncode != 0:
        pytest.fail(f"the pool's process died (exit {done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report:\n{done.stdout}\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- finding 1: a stopped worker must not freeze the pool --------------------------------------


def test_a_stopped_worker_freezes_nothing_but_its_own_task() -> None:
    seen = scenario("""
pool = SPool(Hostile)
stopped, healthy = pool.spawn(), pool.spawn()
os.kill(stopped, signal.SIGSTOP)
big = bytes(24 << 20)  # three times the default 8 MiB ring
# Round robin over two idle workers: one of these lands on the stopped worker.
timed_calls = [pool.options(timeout=3).submit_call("size", big) for _ in range(2)]
start = time.monotonic()
tiny = [pool.submit_execute(i) for i in range(20)]
done, _ = wait(tiny, timeout=20)
out["tiny_done"] = sum(1 for f in done if f.exception() is None)
out["tiny_seconds"] = time.monotonic() - start
wait(timed_calls, timeout=20)
out["timed"] = [outcome(f) for f in timed_calls]
out["healthy"] = healthy
# Now stop every worker (the replacement too) with big calls stuck on them, and kill the pool.
live = lambda: [w["pid"] for w in pool.stats()["workers"] if w["pid"] and w["state"] in ("idle", "busy")]
wait_until(lambda: len(live()) == 2, timeout=20, what="two live workers")
for pid in live():
    os.kill(pid, signal.SIGSTOP)
dispatched = pool.stats()["dispatched"]
stuck = [pool.submit_call("size", big) for _ in range(2)]
wait_until(lambda: pool.stats()["dispatched"] == dispatched + 2, timeout=10, what="both big calls to be sent")
_, err, took = timed(lambda: pool.shutdown(kill=True, timeout=3))
out["shutdown_error"] = repr(err) if err else None
out["shutdown_seconds"] = took
wait_until(lambda: not child_pids(), timeout=10, what="workers to be gone")
out["left"] = sorted(child_pids())
report()
""")
    assert seen["tiny_done"] == 20, seen
    assert seen["tiny_seconds"] < 15, seen
    assert "TaskTimeoutError" in seen["timed"], seen
    assert seen["healthy"] in seen["timed"] or seen["timed"].count("TaskTimeoutError") == 2, seen
    assert seen["shutdown_error"] is None and seen["shutdown_seconds"] < 3 + PROMPT, seen
    assert seen["left"] == [], seen


@pytest.mark.parametrize("argument", ["big", "small"], ids=["blocked-sending", "blocked-waiting"])
def test_ctrl_c_reaches_a_call_to_a_stopped_worker(argument: str) -> None:
    seen = scenario(f"""
pool = SPool(Hostile)
pid = pool.spawn()
os.kill(pid, signal.SIGSTOP)
arg = bytes(24 << 20) if {argument!r} == "big" else b"x"
interrupt_after(0.5)
_, err, took = timed(lambda: pool.call("size", arg))
out["error"] = type(err).__name__
out["seconds"] = took
_, err, took = timed(lambda: pool.shutdown(kill=True, timeout=3))
out["shutdown_error"] = repr(err) if err else None
out["shutdown_seconds"] = took
wait_until(lambda: not child_pids(), timeout=10, what="workers to be gone")
report()
""")
    assert seen["error"] == "KeyboardInterrupt", seen
    assert seen["seconds"] < 0.5 + PROMPT, seen
    assert seen["shutdown_error"] is None and seen["shutdown_seconds"] < 3 + PROMPT, seen


def test_ctrl_c_reaches_a_call_whose_reply_stalls_half_way_and_the_worker_is_replaced() -> None:
    seen = scenario("""
pool = SPool(Hostile)
pid = pool.spawn()
interrupt_after(0.5)
_, err, took = timed(lambda: pool.call("partial_reply"))
out["error"] = type(err).__name__
out["seconds"] = took
wait_until(lambda: not pid_alive(pid), timeout=10, what="the torn worker to be killed")
out["next"] = pool.call("pid")
out["old"] = pid
pool.shutdown(kill=True, timeout=3)
report()
""")
    assert seen["error"] == "KeyboardInterrupt", seen
    assert seen["seconds"] < 0.5 + PROMPT, seen
    assert seen["next"] != seen["old"], seen


# -- finding 2: a worker that corrupts its shared memory must not take the parent down ------

ATTACKS = {
    "reply-length-2**60": ("forge_reply_length", 2**60),
    "reply-length-8GiB": ("forge_reply_length", 8 << 30),
    "reply-head-1TiB-ahead": ("push_reply_head", 1 << 40),
}


@pytest.mark.parametrize("path", ["direct", "runtime"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_worker_corrupting_its_replies_is_replaced_and_its_task_fails(attack: str, path: str) -> None:
    method, arg = ATTACKS[attack]
    # The direct lane runs blocking calls on the caller's thread; a per-call timeout sends the
    # call through the supervisor's runtime instead. Both must survive.
    view = "pool" if path == "direct" else "pool.options(timeout=40)"
    seen = scenario(f"""
pool = SPool(Hostile)
pid = pool.spawn()
_, err, took = timed(lambda: {view}.call({method!r}, {arg!r}))
out["error"] = type(err).__name__
out["message"] = str(err)
out["seconds"] = took
out["next"] = pool.execute(7)
out["worker_replaced"] = not pid_alive(pid) and pool.call("pid") != pid
pool.shutdown(kill=True, timeout=3)
report()
""")
    assert seen["error"] == "WorkerCrashedError", seen
    assert "broke the protocol" in seen["message"], seen
    assert seen["seconds"] < PROMPT, seen
    assert seen["next"] == 7 and seen["worker_replaced"], seen


@pytest.mark.parametrize("path", ["direct", "runtime"])
def test_a_request_tail_pushed_past_the_head_is_caught_before_writing(path: str) -> None:
    view = "pool" if path == "direct" else "pool.options(timeout=40)"
    seen = scenario(f"""
pool = SPool(Hostile)
pid = pool.spawn()
out["first"] = pool.call("answer_then_push_request_tail", 1 << 40)
_, err, took = timed(lambda: {view}.call("size", bytes(24 << 20)))
out["error"] = type(err).__name__
out["message"] = str(err)
out["seconds"] = took
out["next"] = pool.execute(7)
out["worker_replaced"] = not pid_alive(pid) and pool.call("pid") != pid
pool.shutdown(kill=True, timeout=3)
report()
""")
    assert seen["first"] == "answered", seen
    assert seen["error"] == "WorkerCrashedError", seen
    assert "broke the protocol" in seen["message"] and "corrupted" in seen["message"], seen
    assert seen["seconds"] < PROMPT, seen
    assert seen["next"] == 7 and seen["worker_replaced"], seen


def test_an_overflowing_shm_capacity_is_a_value_error() -> None:
    seen = scenario("""
for capacity in (2**63, 2**62, (1 << 40) + 1):
    try:
        SPool(Hostile, shm_capacity=capacity)
        out[str(capacity)] = "accepted"
    except BaseException as e:
        out[str(capacity)] = f"{type(e).__name__}: {e}"
report()
""")
    for capacity, outcome in seen.items():
        assert outcome.startswith("ValueError: shm_capacity"), (capacity, outcome)


# -- max_message_size -------------------------------------------------------------------------


def test_max_message_size_bounds_calls_and_results_both_ways() -> None:
    with pytest.raises(ValueError, match="max_message_size"):
        SPool(Hostile, max_message_size=0)
    with SPool(Hostile, max_message_size=1 << 20) as pool:
        pid = pool.spawn()
        with pytest.raises(ValueError, match="over max_message_size"):
            pool.call("size", bytes(2 << 20))
        with pytest.raises(ValueError, match="over max_message_size"):
            pool.submit_call("size", bytes(2 << 20)).result(timeout=30)
        # The worker enforces it on what it sends: the call fails, the worker stays.
        with pytest.raises(ValueError, match="over max_message_size"):
            pool.call("big_result", 2 << 20)
        assert pool.call("size", bytes(1000)) == (pid, 1000)
