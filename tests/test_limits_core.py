"""Several limits taken in one call into the core (issue 12, "Limits in the core"): all or
nothing across real processes, waiters parked on the shared memory and woken by a release (no
polling loop in Python), nothing left held after a timeout, a cancellation or a death, and
fractional capacities counted in the core."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, pid_alive, wait_until
from lease_workers import LeaseWorker
from stateful_pool import _core
from stateful_pool.concurry import LimitPool, LimitSet, RateLimit, ResourceLimit, Worker

DEADLINE = 20.0  # seconds any wait may take (generous: a failure is a timeout, never a hang)


class TwoLimits(Worker):
    def hammer(self, seconds: float) -> list[tuple[int, int, int, int]]:
        """Takes both limits, alternating the split, as fast as it can: per grant
        ``(entered, left, a, b)``, timestamps taken inside the hold."""
        out = []
        end = time.monotonic() + seconds
        for i in itertools.count():
            if time.monotonic() >= end:
                return out
            a, b = (1, 2) if i % 2 else (2, 1)
            with self.limits.acquire(requested={"a": a, "b": b}, timeout=DEADLINE):
                entered = _core.CoreLimits.now_ns()
                left = _core.CoreLimits.now_ns()
                out.append((entered, left, a, b))


def test_processes_taking_two_limits_all_or_nothing_never_exceed_either() -> None:
    limits = LimitSet([ResourceLimit(key="a", capacity=2), ResourceLimit(key="b", capacity=3)])
    with TwoLimits.options(mode="process", max_workers=3, limits=limits).init() as pool:
        results = [f.result(timeout=60) for f in [pool.hammer(0.8) for _ in range(3)]]
    assert all(results), "every process got grants"
    # Sweep the holds (each interval lies inside a real hold): never more than a capacity.
    events = sorted(
        [(entered, 1, a, b) for r in results for entered, _, a, b in r]
        + [(left, 0, -a, -b) for r in results for _, left, a, b in r]
    )
    held_a = held_b = 0
    for _, _, a, b in events:
        held_a, held_b = held_a + a, held_b + b
        assert held_a <= 2 and held_b <= 3, "a capacity exceeded"
    assert limits.available("a") == 2 and limits.available("b") == 3


def test_a_waiter_in_another_process_is_woken_by_the_release() -> None:
    limits = LimitSet([ResourceLimit(key="a", capacity=1), ResourceLimit(key="b", capacity=1)])
    table = limits._table
    assert table is not None
    with LeaseWorker.options(mode="process", max_workers=1, limits=limits).init() as pool:
        held = limits.acquire(requested={"a": 1, "b": 1})
        taken = pool.take_several({"b": 1, "a": 1}, 60.0)
        wait_until(lambda: table.parked > 0, timeout=30, what="the worker to park")
        released = _core.CoreLimits.now_ns()
        held.release()
        result = taken.result(timeout=30)
    assert result["at_ns"] >= released
    # Woken by the release: nothing else could end its wait before its 60 s timeout.
    assert (result["at_ns"] - released) / 1e9 < 5.0
    assert table.parked == 0


def test_a_process_killed_holding_two_limits_gives_both_back(tmp_path: Path) -> None:
    limits = LimitSet([ResourceLimit(key="a", capacity=1), ResourceLimit(key="b", capacity=2)])
    held, go = str(tmp_path / "held"), str(tmp_path / "go")
    with LeaseWorker.options(mode="process", max_workers=1, limits=limits).init() as pool:
        dying = pool.hold_several_then_die({"a": 1, "b": 2}, held, go)
        wait_until(lambda: os.path.exists(held), timeout=30, what="the holder to take both limits")
        holder = int(Path(held).read_text())
        assert (limits.available("a"), limits.available("b")) == (0, 0)
        Path(go).touch()
        assert dying.exception(timeout=30) is not None, "killed: its call fails"
        assert not pid_alive(holder)
        # A waiter refused by the dead holder's permits takes them back, all of them.
        with limits.acquire(requested={"a": 1, "b": 2}, timeout=DEADLINE):
            assert not [lease for lease in limits._table.leases() if lease[0] == holder]  # type: ignore[union-attr]
    assert (limits.available("a"), limits.available("b")) == (1, 2)


def test_a_timeout_or_a_refused_try_leaves_nothing_held() -> None:
    limits = LimitSet(
        [ResourceLimit(key="r", capacity=1), RateLimit(key="t", window=3600, capacity=2, algorithm="gcra")]
    )
    with limits.acquire(requested={"t": 2}) as spent:
        spent.update(usage={"t": 2})
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        limits.acquire(requested={"r": 1, "t": 1}, timeout=0.2)
    assert time.monotonic() - started < 5
    assert not limits.try_acquire(requested={"r": 1, "t": 1}).successful
    assert limits.available("r") == 1
    assert limits._table is not None and limits._table.leases() == []
    assert limits._open() == []


def test_a_cancelled_async_acquire_leaves_nothing_held() -> None:
    limits = LimitSet([ResourceLimit(key="r", capacity=1)])
    held = limits.acquire(requested={"r": 1})

    async def cancel_a_waiter() -> None:
        waiter = asyncio.ensure_future(limits.async_acquire(requested={"r": 1}, timeout=60))
        table = limits._table
        assert table is not None
        while table.parked == 0:
            await asyncio.sleep(0.001)  # until the executor thread parked in the core
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(cancel_a_waiter())
    held.release()
    wait_until(lambda: limits._table is not None and limits._table.parked == 0, timeout=10, what="the wait to end")
    assert limits.available("r") == 1


def test_waiting_runs_no_python_code_until_the_limits_grant() -> None:
    """The old acquire polled: a Python loop sleeping between attempts. Now the whole wait is
    one call into the core: profile the waiting thread and count what Python runs meanwhile."""
    limits = LimitSet([ResourceLimit(key="r", capacity=1), ResourceLimit(key="s", capacity=1)])
    held = limits.acquire(requested={"r": 1})
    events: list[str] = []
    outcome: list[BaseException | None] = []

    def wait() -> None:
        sys.setprofile(lambda frame, event, arg: events.append(event))
        try:
            limits.acquire(requested={"s": 1, "r": 1}, timeout=1.0)
            outcome.append(None)
        except TimeoutError as e:
            outcome.append(e)
        finally:
            sys.setprofile(None)

    waiter = threading.Thread(target=wait)
    waiter.start()
    waiter.join(timeout=DEADLINE)
    held.release()
    assert isinstance(outcome[0], TimeoutError)
    # A second of waiting costs a constant handful of calls, not a loop of attempts.
    assert len(events) < 150, f"{len(events)} Python events while waiting"


def test_ctrl_c_interrupts_a_waiter_and_leaves_nothing_held() -> None:
    script = textwrap.dedent(
        """
        import sys
        from stateful_pool.concurry import LimitSet, ResourceLimit
        limits = LimitSet([ResourceLimit(key="r", capacity=1), ResourceLimit(key="s", capacity=1)])
        held = limits.acquire(requested={"r": 1, "s": 0})
        print("waiting", flush=True)
        try:
            limits.acquire(requested={"s": 1, "r": 1})
        except KeyboardInterrupt:
            print("interrupted", len(limits._table.leases()), limits._table.parked, flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "waiting\n"
        # Until it parked, as seen from /proc: the futex wait shows as its wait channel.
        wait_until(lambda: "futex" in Path(f"/proc/{child.pid}/wchan").read_text(), timeout=30, what="parking")
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=DEADLINE)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert out.split() == ["interrupted", "1", "0"], "only the first acquisition's lease is held"


def test_fractional_capacities_are_counted_in_the_core_and_shared() -> None:
    limits = LimitSet([RateLimit(key="gpu", window=3600, capacity=0.5, algorithm="gcra")])
    with limits.acquire(requested={"gpu": 0.3}) as acq:
        acq.update(usage={"gpu": 0.3})
    assert 0.19 < limits.available("gpu") < 0.201  # refills 0.5 per hour
    assert not limits.try_acquire(requested={"gpu": 0.25}).successful
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); print(s.available('gpu'))",
        ],
        input=__import__("pickle").dumps(limits),
        capture_output=True,
        cwd=str(REPO),
        timeout=60,
        check=True,
    )
    assert 0.19 < float(child.stdout) < 0.21, "another process reads the same fractional budget"
    with pytest.raises(ValueError, match="integer"):
        LimitSet([RateLimit(key="n", window=1, capacity=3)]).acquire(requested={"n": 0.5})


def test_a_limit_pool_uses_a_set_that_can_grant_before_waiting() -> None:
    a = LimitSet([ResourceLimit(key="r", capacity=1)], config={"name": "a"})
    b = LimitSet([ResourceLimit(key="r", capacity=1)], config={"name": "b"})
    pool = LimitPool([a, b])
    first = pool.acquire()
    second = pool.acquire(timeout=1)
    assert {first.config["name"], second.config["name"]} == {"a", "b"}
    # Both full: the round-robin choice (b, the fourth call's) is waited for, and granted
    # when released.
    assert not pool.try_acquire().successful
    on_b = first if first.config["name"] == "b" else second
    releaser = threading.Thread(target=lambda: (wait_until(lambda: b._table.parked > 0), on_b.release()))  # type: ignore[union-attr]
    releaser.start()
    third = pool.acquire(timeout=DEADLINE)
    releaser.join()
    assert third.config["name"] == "b"
    for acq in (first, second, third):
        acq.release()
