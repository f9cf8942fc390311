"""concurry 0.13 code runs on ``stateful_pool.concurry`` by changing the import: one test per
cause of the drop-in gap (issue 14). concurry's own suite runs through ``scripts/concurry-suite``;
these pin the behaviour in the project, with real worker threads and processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
import warnings
from typing import Any

import pytest
from stateful_pool.concurry import (
    CallLimit,
    ExecutionMode,
    Executor,
    LimitPool,
    LimitSet,
    LoadBalancingAlgorithm,
    ProgressBar,
    RateLimit,
    RateLimitAlgorithm,
    ResourceLimit,
    RetryAlgorithm,
    RetryValidationError,
    SyncFuture,
    TaskWorker,
    Worker,
    WorkerProxy,
    async_wait,
    gather,
    task,
    wait,
    worker,
)

FAST = {"retry_wait": 0.001, "retry_jitter": 0.0}


# -- window= (concurry 0.13's keyword) ------------------------------------------------------


def test_rate_limits_take_window_and_named_windows() -> None:
    assert RateLimit(key="t", window=60, capacity=100).window == 60.0
    assert RateLimit(key="t", window="minute", capacity=1).window_seconds == 60.0
    assert RateLimit(key="t", per="per_hour", capacity=1).window == 3600.0
    # The older spelling works and warns, as in concurry 0.13, at the caller's line.
    with pytest.warns(DeprecationWarning, match="window_seconds= is deprecated") as caught:
        assert RateLimit(key="t", window_seconds=2, capacity=1).window == 2.0
        assert CallLimit(window_seconds=3, capacity=1).window == 3.0
    assert [w.filename for w in caught] == [__file__, __file__]
    assert CallLimit(window=1, capacity=10).key == "call_count"
    with pytest.raises(ValueError, match="window_seconds"):
        RateLimit(key="t", window=1, window_seconds=2, capacity=1)
    limit = RateLimit(key="t", window=1, capacity=5, algorithm=RateLimitAlgorithm.GCRA)
    assert limit.algorithm == RateLimitAlgorithm.GCRA == "gcra"
    limits = LimitSet([limit, CallLimit(window=1, capacity=3)])
    with limits.acquire(requested={"t": 5}) as acq:
        assert acq.granted == {"t": 5, "call_count": 1}
        acq.update(usage={"t": 4})


# -- wait / gather -----------------------------------------------------------------------------


class Compute(Worker):
    def __init__(self, k: int = 1) -> None:
        self.k = k

    def times(self, x: int) -> int:
        return x * self.k

    def fail(self, message: str) -> None:
        raise ValueError(message)


def test_gather_and_wait_take_concurrys_shapes() -> None:
    with Compute.options(mode="thread", max_workers=2).init(3) as pool:
        a, b = pool.times(1), pool.times(2)
        assert gather(a, b) == [3, 6]  # variadic
        assert gather({"x": pool.times(3), "y": 7}) == {"x": 9, "y": 7}  # dict in, dict out, plain values
        assert sorted(gather([pool.times(i) for i in range(4)], iter=True)) == [(0, 0), (1, 3), (2, 6), (3, 9)]
        assert gather([[SyncFuture(result_value=1), a]], recurse=True) == [[1, 3]]
        assert gather(pool.times(1), polling="fixed", progress={"disable": True}) == [3]
        failed = pool.fail("boom")
        with pytest.raises(ValueError, match="boom"):
            gather([a, failed])
        assert isinstance(gather([a, failed], return_exceptions=True)[1], ValueError)
        done, not_done = wait([a, b, 5], return_when="first_exception")
        assert len(done) + len(not_done) == 3
        with pytest.raises(ValueError, match="Could not find enum"):
            wait(a, return_when="sometimes")
        # The options are typed keyword arguments: one the function does not take is refused.
        with pytest.raises(TypeError, match="gather\\(\\) got an unexpected keyword argument 'return_when'"):
            gather(a, return_when="all")
        with pytest.raises(TypeError, match="async_wait\\(\\) got an unexpected keyword argument 'iter'"):
            asyncio.run(async_wait([a], iter=True))
    # Nothing finishing within the timeout is a TimeoutError for the async twin too.
    never: concurrent.futures.Future[int] = concurrent.futures.Future()
    for return_when in ("first_completed", "all_completed"):
        with pytest.raises(TimeoutError, match="timed out: 1/1"):
            wait([never], timeout=0.05, return_when=return_when)
        with pytest.raises(TimeoutError, match="timed out: 1/1"):
            asyncio.run(async_wait([never], timeout=0.05, return_when=return_when))


# -- TaskWorker init(fn=), @task, Executor ---------------------------------------------------


def square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_task_worker_with_a_bound_function(mode: str) -> None:
    pool = TaskWorker.options(mode=mode).init(fn=square)
    try:
        assert pool.submit(4).result(timeout=30) == 16
        assert pool(5).result(timeout=30) == 25
        assert list(pool.map(range(4))) == [0, 1, 4, 9]
    finally:
        pool.stop()
    unbound = TaskWorker.options(mode="sync").init()
    with pytest.raises(TypeError, match="submit\\(\\) requires a callable function, got NoneType"):
        unbound.submit(None)
    assert unbound.submit(square, 3).result() == 9
    unbound.stop()


def test_sync_mode_calls_return_sync_futures() -> None:
    # concurry: a sync-mode call runs in submit and returns a SyncFuture; other modes do not.
    pool = TaskWorker.options(mode="sync").init()
    ok, failed = pool.submit(abs, -3), pool.submit(int, "x")
    assert type(ok) is SyncFuture and ok.done() and ok.result() == 3
    assert type(failed) is SyncFuture and isinstance(failed.exception(), ValueError)
    pool.stop()
    with TaskWorker.options(mode="thread").init() as threads:
        assert not isinstance(threads.submit(abs, -3), SyncFuture)


def test_task_decorator_and_executor() -> None:
    @task(mode="thread", max_workers=2)
    def cube(x: int) -> int:
        """Cubes."""
        return x**3

    try:
        assert cube.__name__ == "cube" and cube.__doc__ == "Cubes."
        assert cube(2).result() == 8 and cube.submit(3).result() == 27 and list(cube.map([1, 2])) == [1, 8]
    finally:
        cube.stop()
    with Executor(mode=ExecutionMode.Threads, max_workers=2) as ex:
        assert ex.submit(pow, 2, 5).result() == 32


# -- @worker and class keywords ----------------------------------------------------------------


def test_worker_decorator_and_class_keywords() -> None:
    @worker(mode="thread", max_workers=2)
    class Greeter:
        def __init__(self, name: str) -> None:
            self.name = name

        def hello(self) -> str:
            return f"hello {self.name}"

    pool = Greeter("a")  # auto_init: a pool, not an object
    try:
        assert isinstance(pool, WorkerProxy) and pool.hello().result() == "hello a"
    finally:
        pool.stop()

    class Blocking(Worker, mode="sync", blocking=True):
        def one(self) -> int:
            return 1

    with Blocking() as b:
        assert b.blocking and b.one() == 1
    assert not isinstance(worker(Compute)(2), WorkerProxy)  # bare @worker: a plain object
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        worker(mode="thread")(Blocking)
    assert any("anti-pattern" in str(w.message) for w in caught)


# -- per-method retries and async def methods --------------------------------------------------


class Flaky(Worker):
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def _bump(self, key: str) -> int:
        self.calls[key] = self.calls.get(key, 0) + 1
        return self.calls[key]

    def fetch(self, fail_times: int) -> int:
        n = self._bump("fetch")
        if n <= fail_times:
            raise ConnectionError(f"attempt {n}")
        return n

    def store(self) -> int:
        n = self._bump("store")
        raise ConnectionError(f"store attempt {n}")

    async def slow_double(self, x: int) -> int:
        await asyncio.sleep(0.001)
        return 2 * x

    async def async_fetch(self, fail_times: int) -> int:
        n = self._bump("async_fetch")
        if n <= fail_times:
            raise ConnectionError(f"async attempt {n}")
        return n


@pytest.mark.parametrize("mode", ["sync", "thread", "process", "asyncio"])
def test_per_method_retries_and_async_methods(mode: str) -> None:
    options: dict[str, Any] = {"num_retries": {"*": 0, "fetch": 3, "async_fetch": 2}, **FAST}
    with Flaky.options(mode=mode, **options).init() as pool:
        assert pool.fetch(2).result(timeout=30) == 3
        with pytest.raises(ConnectionError, match="store attempt 1"):  # "*": no retries
            pool.store().result(timeout=30)
        assert pool.slow_double(21).result(timeout=30) == 42  # awaited on the worker
        assert pool.async_fetch(2).result(timeout=30) == 3  # async and retried
    with pytest.raises(ValueError, match="does not have"):
        Flaky.options(mode="thread", num_retries={"*": 0, "nope": 1}).init()
    with pytest.raises(ValueError, match="must include '\\*' key"):
        Flaky.options(mode="thread", num_retries={"fetch": 1}).init()


def test_retry_validation_error_keeps_every_result() -> None:
    class Counter(Worker):
        def __init__(self) -> None:
            self.n = 0

        def next(self) -> int:
            self.n += 1
            return self.n

    opts = {"num_retries": 2, "retry_until": lambda r, **_: r > 5, "retry_algorithm": RetryAlgorithm.Fibonacci}
    with Counter.options(mode="thread", **opts, **FAST).init() as pool:
        with pytest.raises(RetryValidationError) as info:
            pool.next().result(timeout=30)
    assert info.value.all_results == [1, 2, 3] and len(info.value.validation_errors) == 3
    with pytest.raises(ValueError, match="retry_wait"):
        Counter.options(mode="thread", retry_wait=0)
    with pytest.raises(ValueError, match="retry_until"):
        Counter.options(mode="thread", retry_until="not callable")


def test_retry_predicates_are_called_as_concurry_calls_them() -> None:
    class Echo(Worker):
        def echo(self, x: int) -> int:
            return x

        def fail(self) -> None:
            raise ConnectionError("down")

    seen: list[dict[str, object]] = []

    def retry_on(**ctx: object) -> bool:  # keywords only: exception=..., attempt=..., ...
        seen.append(ctx)
        return False

    def only_result(result: int) -> bool:  # no **context: concurry's call raises TypeError
        return True

    with Echo.options(mode="thread", num_retries=1, retry_on=retry_on, retry_until=only_result, **FAST).init() as pool:
        with pytest.raises(RetryValidationError, match="unexpected keyword argument"):
            pool.echo(1).result(timeout=30)
        with pytest.raises(ConnectionError):
            pool.fail().result(timeout=30)
    assert isinstance(seen[0]["exception"], ConnectionError) and seen[0]["attempt"] == 1
    assert seen[0]["method_name"] == "fail"


# -- limits API, enums, missing methods, progress bars, validation -----------------------------


def test_limit_set_api(caplog: pytest.LogCaptureFixture) -> None:
    limits = LimitSet(
        [ResourceLimit(key="db", capacity=1), RateLimit(key="t", window=60, capacity=10)], config={"region": "eu"}
    )
    assert limits["db"].capacity == 1 and "t" in limits
    held = limits.try_acquire({"db": 1})
    assert held.successful and held.config == {"region": "eu"} and held.acquisitions["db"].requested == 1
    assert not limits.try_acquire({"db": 1}).successful
    assert limits.get_stats()["db"]["current_usage"] == 1
    held.release()
    acq = asyncio.run(limits.async_acquire({"db": 1}, timeout=5))
    assert acq.successful
    acq.release()
    with caplog.at_level(logging.WARNING), limits.acquire({"nope": 3}) as tolerant:
        assert "nope" not in tolerant.granted
    assert "nope" in caplog.text
    with pytest.raises(RuntimeError, match="Not all limits"), limits.acquire({"t": 2}):
        pass  # an explicitly requested rate limit must be updated (concurry 0.13 raises)
    with caplog.at_level(logging.WARNING), limits.acquire({"t": 2}) as over:
        over.update(usage={"t": 3})  # spent already: a warning, not an error
    assert "exceeds requested amount" in caplog.text


def test_enums_accept_concurry_and_package_spellings() -> None:
    assert ExecutionMode("thread") is ExecutionMode.Threads == "Threads"
    assert LoadBalancingAlgorithm("round_robin") is LoadBalancingAlgorithm("RoundRobin")
    assert RateLimitAlgorithm("TokenBucket") == "token_bucket"
    with Compute.options(
        mode=ExecutionMode.Threads, max_workers=2, load_balancing=LoadBalancingAlgorithm.LeastActiveLoad
    ).init(2) as pool:
        assert pool.times(2).result() == 4
        assert pool.get_pool_stats()["load_balancer"]["algorithm"] == "LeastActiveLoad"
    with pytest.raises(ValueError, match="on_demand mode is not supported"):
        Compute.options(mode="sync", on_demand=True)


def test_missing_method_fails_the_future_outside_sync_mode() -> None:
    with Compute.options(mode="thread").init() as pool:
        with pytest.raises(AttributeError):
            pool.no_such_method().result(timeout=5)
    with Compute.options(mode="sync").init() as pool, pytest.raises(AttributeError):
        pool.no_such_method()


def test_progress_bar_finishers() -> None:
    bar = ProgressBar(total=10, desc="x", color="MAGENTA", disable=True)
    bar.update(3)
    bar.set_total(20)
    assert bar.total == 20
    bar.success()
    ProgressBar(total=5, disable=True).failure()
    ProgressBar(total=5, disable=True).stop()
    assert os.getpid()  # nothing left behind


def test_fractional_rate_limit_capacities() -> None:
    assert RateLimit(key="x", window=1, capacity="1.5").capacity == 1.5
    for bad in (0, -1, float("nan"), float("-inf"), False):
        with pytest.raises(ValueError):
            RateLimit(key="x", window=1, capacity=bad)
    limits = LimitSet([RateLimit(key="gpu_hours", window=3600, capacity=0.5)])
    with limits.acquire({"gpu_hours": 0.3}) as acq:
        assert acq.granted == {"gpu_hours": 0.3}
        acq.update(usage={"gpu_hours": 0.1})  # 0.2 goes back
    assert 0.39 < limits.available("gpu_hours") < 0.41
    assert not limits.try_acquire({"gpu_hours": 0.45}).successful
    with pytest.raises(ValueError, match="fractional"):
        LimitSet([RateLimit(key="t", window=1, capacity=5)]).acquire({"t": 0.5})


class Layered(Worker):
    def __init__(self) -> None:
        self.n = 0

    def inner(self) -> int:
        self.n += 1
        if self.n < 3:
            raise ConnectionError(f"inner attempt {self.n}")
        return self.n

    def outer(self) -> int:
        return self.inner() * 10  # a call from another method is retried too, as in concurry


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_retries_apply_to_calls_between_methods(mode: str) -> None:
    with Layered.options(mode=mode, num_retries={"*": 0, "inner": 3}, **FAST).init() as pool:
        assert pool.outer().result(timeout=30) == 30


def test_a_started_pool_is_read_only() -> None:
    # concurry's proxies are frozen models: setting a public attribute raises.
    class Counter(Worker):
        def one(self) -> int:
            return 1

    pool = Counter.options(mode="thread").init()
    try:
        for name, value in [("worker_cls", Counter), ("blocking", True), ("max_workers", 5), ("mode", "sync")]:
            with pytest.raises(AttributeError, match=f"immutable: cannot set '{name}'"):
                setattr(pool, name, value)
        assert pool.mode == "thread" and pool.max_workers == 1
        pool.resize(2)  # the pool's own methods still change it
        assert pool.max_workers == 2 and pool.one().result(timeout=30) == 1
    finally:
        pool.stop()


@pytest.mark.parametrize("on_demand", [False, True])
def test_stop_cancels_queued_calls_and_finishes_running_ones(on_demand: bool) -> None:
    # concurry's stop(): what waits in the queue is cancelled, what runs finishes.
    gate = threading.Event()

    class Gated(Worker):
        def hold(self) -> str:
            gate.wait(30)
            return "ran"

        def quick(self, i: int) -> int:
            return i

    pool = Gated.options(mode="thread", max_workers=1, on_demand=on_demand).init()
    running = pool.hold()
    deadline = time.monotonic() + 30
    while not running.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running.running()
    queued = [pool.quick(i) for i in range(3)]
    stopper = threading.Thread(target=pool.stop)
    stopper.start()
    while not all(f.cancelled() for f in queued) and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    stopper.join(30)
    assert not stopper.is_alive()
    assert [f.cancelled() for f in queued] == [True, True, True]
    assert running.result(timeout=30) == "ran"


def test_mp_context_is_checked_and_reported() -> None:
    class Plain(Worker):
        def pid(self) -> int:
            return os.getpid()

    pool = Plain.options(mode="process", mp_context="fork").init()
    try:
        assert pool.mp_context == "fork" and pool.pid().result(timeout=60) != os.getpid()
    finally:
        pool.stop()
    for mode, context in [("process", "invalid"), ("thread", "spawn")]:
        with pytest.raises(ValueError, match="mp_context must be"):
            Plain.options(mode=mode, mp_context=context)


@pytest.mark.parametrize("mode", ["sync", "thread", "process"])
def test_task_with_limits_passes_them_to_a_limits_parameter(mode: str) -> None:
    @task(mode=mode, limits=[ResourceLimit(key="slots", capacity=2)])
    def held(x: int, limits: Any) -> tuple[int, float]:
        with limits.acquire(requested={"slots": 1}):
            return x, limits.available("slots")  # the pool's budget: one of two is held

    try:
        assert held(7).result(timeout=60) == (7, 1)
        own = LimitSet([ResourceLimit(key="slots", capacity=5)])
        assert held.submit(8, limits=own).result(timeout=60) == (8, 4)  # a caller's set wins
    finally:
        held.stop()


def test_a_limit_set_made_for_threads_is_refused_by_process_workers() -> None:
    class Dummy(Worker):
        def run(self) -> int:
            return 1

    made_for_threads = LimitSet([CallLimit(window=1, capacity=10)], shared=True, mode="thread")
    with pytest.raises(ValueError, match="not compatible with worker mode 'Processes'"):
        Dummy.options(mode="process", limits=made_for_threads).init()
    with Dummy.options(mode="thread", limits=made_for_threads).init() as pool:  # what it was made for
        assert pool.run().result(timeout=30) == 1
    shared = LimitSet([CallLimit(window=1, capacity=10)], shared=True)  # no mode: any worker may share it
    with Dummy.options(mode="process", limits=shared).init() as pool:
        assert pool.run().result(timeout=30) == 1


def test_limits_and_limit_pools_are_frozen_as_concurrys_models_are() -> None:
    validation_error = pytest.importorskip("pydantic_core").ValidationError
    rate, slots = RateLimit(key="tokens", window=60, capacity=100), ResourceLimit(key="slots", capacity=2)
    limit_set = LimitSet(limits=[rate, slots], shared=True, mode="sync")
    pool = LimitPool(limit_sets=[limit_set], load_balancing="round_robin")
    for obj, name, value in (
        (pool, "worker_index", 999),
        (pool, "load_balancing", "random"),
        (rate, "capacity", 1),
        (CallLimit(window=1, capacity=3), "capacity", 1),
        (slots, "capacity", 9),
    ):
        before = getattr(obj, name)
        with pytest.raises(validation_error, match="frozen"):
            setattr(obj, name, value)
        assert getattr(obj, name) == before, "a refused assignment changes nothing"
    assert hash(rate) == hash(RateLimit(key="tokens", window=60, capacity=100))
    with pool.acquire({"tokens": 1, "slots": 1}) as acquisition:
        assert acquisition.successful, "a frozen pool still acquires"
        acquisition.update({"tokens": 1})
