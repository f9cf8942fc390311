"""Per-worker concurrency (asyncio's ``max_concurrency``): a host that takes several calls at once
is ONE worker of the pool, with one set of counts and one id, and the supervisor keeps that many
calls in flight on it. Concurrency is proven with a gate inside the worker that only opens once
enough calls are in, never with timing."""

from __future__ import annotations

import asyncio
from typing import Any

from stateful_pool import SPool, SWorker, TaskTimeoutError, WorkerCrashedError
from stateful_pool.modes._host import WorkerLost


class Gated(SWorker):
    """Calls that wait for each other inside one event loop."""

    def spawn(self, gate_size: int) -> str:
        self.gate_size = gate_size
        self.inside = 0
        self.most_inside = 0
        self.gate = asyncio.Event()
        self.hold = asyncio.Event()
        return "ready"

    async def through_gate(self) -> int:
        """Returns once ``gate_size`` calls are inside at once."""
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        if self.inside == self.gate_size:
            self.gate.set()
        await self.gate.wait()
        return self.most_inside

    async def held(self) -> str:
        """Returns once ``let_go`` ran."""
        await self.hold.wait()
        return "let go"

    async def let_go(self) -> None:
        self.hold.set()

    async def forever(self) -> None:
        await asyncio.Event().wait()

    async def quick(self) -> str:
        return "quick"

    async def calls_seen(self) -> int:
        """How many calls this instance ran (this one included)."""
        self.seen = getattr(self, "seen", 0) + 1
        return self.seen

    async def die(self) -> None:
        raise WorkerLost("the loop ends")


def _only_worker(pool: SPool[Any]) -> dict[str, Any]:
    (worker,) = pool.stats()["workers"]
    return dict(worker)


def test_an_asyncio_worker_of_max_concurrency_4_is_one_worker_running_4_calls_at_once() -> None:
    with SPool(Gated, mode="asyncio", max_concurrency=4) as pool:
        assert pool.spawn(4) == "ready"
        # The gate opens only once all four calls are inside the loop together.
        futures = [pool.submit_call("through_gate") for _ in range(4)]
        assert [f.result(timeout=20) for f in futures] == [4] * 4
        worker = _only_worker(pool)
        assert (worker["tasks_done"], worker["tasks_failed"], worker["restarts"]) == (4, 0, 0)
        assert worker["id"] == pool.stats()["workers"][0]["id"]
        # A broadcast reaches the one worker once.
        assert pool.broadcast("quick") == ["quick"]


def test_a_call_arriving_while_another_runs_starts_at_once() -> None:
    with SPool(Gated, mode="asyncio", max_concurrency=4) as pool:
        pool.spawn(4)
        held = pool.submit_call("held")
        # 1 of 4 seats is busy: this call runs now, beside the held one (which waits for it).
        assert pool.call("quick") == "quick"
        pool.call("let_go")
        assert held.result(timeout=20) == "let go"
        assert _only_worker(pool)["tasks_done"] == 3


def test_a_timeout_cancels_only_its_call_and_the_worker_is_not_restarted() -> None:
    with SPool(Gated, mode="asyncio", max_concurrency=2) as pool:
        pool.spawn(2)
        held = pool.submit_call("held")
        slow = pool.options(timeout=0.2).submit_call("forever")
        assert isinstance(slow.exception(timeout=20), TaskTimeoutError)
        pool.call("let_go")
        assert held.result(timeout=20) == "let go"
        worker = _only_worker(pool)
        # The loop went on: its other call finished, nothing was restarted.
        assert (worker["tasks_failed"], worker["restarts"], worker["state"]) == (1, 0, "idle")


def test_a_dying_loop_fails_every_call_in_flight_naming_the_one_worker() -> None:
    with SPool(Gated, mode="asyncio", max_concurrency=3) as pool:
        pool.spawn(3)
        held = [pool.submit_call("held") for _ in range(2)]
        dying = pool.submit_call("die")
        worker_id = _only_worker(pool)["id"]
        for future in [*held, dying]:
            error = future.exception(timeout=20)
            assert isinstance(error, WorkerCrashedError), error
            assert error.worker_id == worker_id
        # Restarted in place: a fresh loop with a fresh gate runs three calls at once again.
        futures = [pool.submit_call("through_gate") for _ in range(3)]
        assert [f.result(timeout=20) for f in futures] == [3] * 3
        worker = _only_worker(pool)
        assert (worker["id"], worker["restarts"], worker["tasks_failed"]) == (worker_id, 1, 3)


def test_max_tasks_per_worker_renews_a_concurrent_worker_after_its_share() -> None:
    with SPool(Gated, mode="asyncio", max_concurrency=4, max_tasks_per_worker=4) as pool:
        pool.spawn(4)
        # Four calls at once on the first instance: the gate opens only with all four inside.
        assert [f.result(timeout=20) for f in [pool.submit_call("through_gate") for _ in range(4)]] == [4] * 4
        # The next call runs on a fresh instance, set up again with the same arguments.
        assert pool.call("calls_seen") == 1
        worker = _only_worker(pool)
        assert (worker["restarts"], worker["tasks_done"]) == (1, 5)
