"""The peers of ``benches/compare.py``: one adapter per process pool, giving each workload the
same few operations (a warm pool of n workers, blocking calls, futures, map, a timed spawn, a
timed start and crash recovery), and ``PEER_CLASSES``, the adapter of each peer by name."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import multiprocessing
import multiprocessing.pool
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from compare_workers import (
    Echo,
    EchoActor,
    EchoWorker,
    burn,
    crash,
    ident,
    mark_ready,
    mpire_burn,
    mpire_ident,
    mpire_ready,
)
from stateful_pool import SPool

TASK_TIMEOUT_S = 120.0
BASELINE = "ProcessPoolExecutor"  # the peer every ratio is taken against


def _ready_file(tmp: str) -> str:
    fd, path = tempfile.mkstemp(prefix="ready-", dir=tmp)
    os.close(fd)
    return path


def _wait_ready_file(path: str, n: int, timeout: float) -> float:
    """The time (``time.monotonic``) at which the last of ``n`` workers wrote ``path``."""
    deadline = time.monotonic() + timeout
    while True:
        with open(path) as f:
            stamps = [float(line) for line in f if line.endswith("\n")]
        if len(stamps) >= n:
            return max(stamps)
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(stamps)} of {n} workers ready after {timeout} s")
        time.sleep(0.002)


def _gather_async_results(handles: Sequence[Any], timeout: float) -> list[Any]:
    """``get()`` of each ``AsyncResult`` (multiprocessing's, mpire's), all within ``timeout``."""
    deadline = time.monotonic() + timeout
    return [h.get(max(0.0, deadline - time.monotonic())) for h in handles]


def _gather_futures(handles: Sequence[concurrent.futures.Future[Any]], timeout: float) -> list[Any]:
    _done, pending = concurrent.futures.wait(handles, timeout)
    if pending:
        raise TimeoutError(f"{len(pending)} tasks still pending after {timeout} s")
    return [f.result() for f in handles]


class Peer:
    """What a workload needs from a pool: a warm pool of n workers, blocking calls, futures."""

    name = ""

    def __init__(self, tmp: str):
        self.tmp = tmp

    def open(self, workers: int) -> None:
        """Starts ``workers`` workers and waits until each is up."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def call(self, x: Any) -> Any:
        """A blocking no-op call that returns ``x``."""
        raise NotImplementedError

    def submit(self, x: Any) -> Any:
        """A no-op task; returns a handle for :meth:`gather`."""
        raise NotImplementedError

    def submit_burn(self, n: int) -> Any:
        raise NotImplementedError

    def gather(self, handles: list[Any], timeout: float = TASK_TIMEOUT_S) -> list[Any]:
        raise NotImplementedError

    def spawn_ready(self, workers: int, delay: float, timeout: float) -> float:
        """Seconds from creating a fresh pool of ``workers`` workers (setup: sleep ``delay``) until
        all have finished their setup; the pool is closed again (not timed)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Peer-wide teardown, once, at the end."""

    def map(self, items: Sequence[int], chunksize: int | None) -> list[Any]:
        """``ident`` over ``items`` through the warm pool, in order; ``chunksize=None``: the
        pool's own choice of chunks."""
        raise NotImplementedError

    def warm(self, workers: int, burn_iters: int) -> None:
        """A burst of work on every worker (starts lazily created workers, fills caches)."""
        self.gather([self.submit(i) for i in range(50 * workers)])
        self.gather([self.submit_burn(burn_iters // 10) for _ in range(2 * workers)])

    def start_first_call(self, samples: int) -> list[float]:
        """Seconds for a new worker's start and first call, ``samples`` times."""
        raise NotImplementedError

    def crash_recover(self, samples: int) -> list[float]:
        """Seconds from a call that kills its worker until the next call is done, ``samples`` times."""
        raise NotImplementedError


class SPoolPeer(Peer):
    name = "stateful_pool"
    start_method = "zygote"

    def open(self, workers: int) -> None:
        self.pool: SPool[Echo] = SPool(Echo, start_method=self.start_method)
        for f in [self.pool.submit_spawn() for _ in range(workers)]:
            f.result(timeout=TASK_TIMEOUT_S)

    def close(self) -> None:
        self.pool.shutdown()

    def call(self, x: Any) -> Any:
        return self.pool.execute(x)

    def submit(self, x: Any) -> Any:
        return self.pool.submit_execute(x)

    def submit_burn(self, n: int) -> Any:
        return self.pool.submit_call("burn", n)

    def map(self, items: Sequence[int], chunksize: int | None) -> list[Any]:
        return list(self.pool.map(items, chunksize=chunksize))

    def gather(self, handles: list[Any], timeout: float = TASK_TIMEOUT_S) -> list[Any]:
        return _gather_futures(handles, timeout)

    def spawn_ready(self, workers: int, delay: float, timeout: float) -> float:
        started = time.monotonic()
        pool = SPool(Echo, start_method=self.start_method)
        try:
            _gather_futures([pool.submit_spawn(delay) for _ in range(workers)], timeout)
            return time.monotonic() - started
        finally:
            pool.shutdown()

    def start_first_call(self, samples: int) -> list[float]:
        times: list[float] = []
        with SPool(Echo, start_method=self.start_method) as pool:
            for _ in range(samples + 1):  # the first one starts the zygote too: not counted
                t0 = time.perf_counter()
                pool.spawn()
                pool.execute(1)
                times.append(time.perf_counter() - t0)
                pool.resize(0)  # and wait until it has exited, as an executor's shutdown does
                while any(w["state"] != "stopped" for w in pool.stats()["workers"]):
                    time.sleep(0.001)
        return times[1:]

    def crash_recover(self, samples: int) -> list[float]:
        from stateful_pool import WorkerCrashedError

        times: list[float] = []
        with SPool(Echo, start_method=self.start_method, max_restarts=samples + 1) as pool:
            pool.spawn()
            pool.execute(1)
            for _ in range(samples):
                t0 = time.perf_counter()
                try:
                    pool.call("crash")
                except WorkerCrashedError:
                    pass
                pool.execute(1)
                times.append(time.perf_counter() - t0)
        return times


class SPoolSpawnPeer(SPoolPeer):
    name = "stateful_pool (spawn)"
    start_method = "spawn"


class SPoolForkserverPeer(SPoolPeer):
    """The zygote shared by the process's pools and kept after them: the first pool (the first
    ``spawn`` repeat) starts it, later ones fork from it at once."""

    name = "stateful_pool (forkserver)"
    start_method = "forkserver"


class PerCallProcessPeer(Peer):
    """A pool that runs every call in a fresh process: ``start`` times one call after another
    (each on a new process, started by the pool when and how it likes); ``recover`` does not
    apply."""

    def start_first_call(self, samples: int) -> list[float]:
        times: list[float] = []
        for _ in range(samples + 1):  # the first one starts the pool's helpers: not counted
            t0 = time.perf_counter()
            self.call(1)
            times.append(time.perf_counter() - t0)
        self.close()
        return times[1:]


class PebblePeer(PerCallProcessPeer):
    """pebble's ``ProcessPool(max_tasks=1)``: one process per task."""

    name = "pebble (max_tasks=1)"

    def call(self, x: Any) -> Any:
        if not hasattr(self, "pool"):
            import pebble

            self.pool = pebble.ProcessPool(max_workers=1, max_tasks=1)
        return self.pool.schedule(ident, (x,)).result(timeout=TASK_TIMEOUT_S)

    def close(self) -> None:
        self.pool.stop()
        self.pool.join()
        del self.pool


class ConcurryOnDemandPeer(PerCallProcessPeer):
    """stateful_pool's concurry API, ``on_demand=True``: a fresh worker process (forked from the
    zygote) per call, at most ``max_workers`` at once."""

    name = "concurry on_demand"

    def call(self, x: Any) -> Any:
        if not hasattr(self, "pool"):
            self.pool = EchoWorker.options(mode="process", on_demand=True, max_workers=2).init()
        return self.pool.execute(x).result(timeout=TASK_TIMEOUT_S)

    def close(self) -> None:
        self.pool.stop()
        del self.pool


class ExecutorPeer(Peer):
    """A ``concurrent.futures`` executor: ProcessPoolExecutor here, loky below."""

    name = BASELINE
    context: str | None = None  # the multiprocessing start method (None: the platform's)

    def make(
        self, workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
    ) -> concurrent.futures.Executor:
        context = multiprocessing.get_context(self.context)
        return concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=initializer, initargs=initargs
        )

    def start_first_call(self, samples: int) -> list[float]:
        times: list[float] = []
        for _ in range(samples + 1):  # the first one may start a forkserver: not counted
            t0 = time.perf_counter()
            executor = self.make(1)
            executor.submit(ident, 1).result(timeout=TASK_TIMEOUT_S)
            times.append(time.perf_counter() - t0)
            self.shut(executor)
        return times[1:]

    def crash_recover(self, samples: int) -> list[float]:
        times: list[float] = []
        executor = self.make(1)
        executor.submit(ident, 1).result(timeout=TASK_TIMEOUT_S)
        for _ in range(samples):
            t0 = time.perf_counter()
            with contextlib.suppress(concurrent.futures.BrokenExecutor):
                executor.submit(crash).result(timeout=TASK_TIMEOUT_S)
            self.shut(executor)  # a broken executor serves nothing more: a new one does
            executor = self.make(1)
            executor.submit(ident, 1).result(timeout=TASK_TIMEOUT_S)
            times.append(time.perf_counter() - t0)
        self.shut(executor)
        return times

    def shut(self, executor: concurrent.futures.Executor) -> None:
        executor.shutdown(wait=True)

    def open(self, workers: int) -> None:
        self.executor = self.make(workers)

    def close(self) -> None:
        self.shut(self.executor)

    def call(self, x: Any) -> Any:
        return self.executor.submit(ident, x).result(timeout=TASK_TIMEOUT_S)

    def submit(self, x: Any) -> Any:
        return self.executor.submit(ident, x)

    def submit_burn(self, n: int) -> Any:
        return self.executor.submit(burn, n)

    def map(self, items: Sequence[int], chunksize: int | None) -> list[Any]:
        return list(self.executor.map(ident, items, chunksize=chunksize or 1000))

    def gather(self, handles: list[Any], timeout: float = TASK_TIMEOUT_S) -> list[Any]:
        return _gather_futures(handles, timeout)

    def spawn_ready(self, workers: int, delay: float, timeout: float) -> float:
        path = _ready_file(self.tmp)
        started = time.monotonic()
        executor = self.make(workers, mark_ready, (path, delay))
        try:
            for _ in range(workers):  # workers may start on demand
                executor.submit(ident, None)
            return _wait_ready_file(path, workers, timeout) - started
        finally:
            self.shut(executor)


class ForkserverExecutorPeer(ExecutorPeer):
    name = f"{BASELINE} (forkserver)"
    context = "forkserver"


class SpawnExecutorPeer(ExecutorPeer):
    name = f"{BASELINE} (spawn)"
    context = "spawn"


class LokyPeer(ExecutorPeer):
    name = "loky"

    def make(
        self, workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
    ) -> concurrent.futures.Executor:
        from loky import get_reusable_executor

        # timeout: idle workers live 300 s (default 10 s), so none is replaced during the run.
        executor: concurrent.futures.Executor = get_reusable_executor(
            max_workers=workers, timeout=300, initializer=initializer, initargs=initargs
        )
        return executor


class MPPoolPeer(Peer):
    name = "multiprocessing.Pool"

    def open(self, workers: int) -> None:
        self.pool = multiprocessing.Pool(workers)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def call(self, x: Any) -> Any:
        return self.pool.apply_async(ident, (x,)).get(TASK_TIMEOUT_S)

    def map(self, items: Sequence[int], chunksize: int | None) -> list[Any]:
        return self.pool.map(ident, items, chunksize)

    def submit(self, x: Any) -> Any:
        return self.pool.apply_async(ident, (x,))

    def submit_burn(self, n: int) -> Any:
        return self.pool.apply_async(burn, (n,))

    def gather(self, handles: list[Any], timeout: float = TASK_TIMEOUT_S) -> list[Any]:
        return _gather_async_results(handles, timeout)

    def spawn_ready(self, workers: int, delay: float, timeout: float) -> float:
        path = _ready_file(self.tmp)
        started = time.monotonic()
        pool = multiprocessing.Pool(workers, mark_ready, (path, delay))
        try:
            return _wait_ready_file(path, workers, timeout) - started
        finally:
            pool.terminate()
            pool.join()


class MpirePeer(Peer):
    name = "mpire"

    def open(self, workers: int) -> None:
        from mpire import WorkerPool

        self.pool = WorkerPool(n_jobs=workers, use_worker_state=True)  # workers start on first task

    def close(self) -> None:
        self.pool.stop_and_join()
        self.pool.terminate()

    def warm(self, workers: int, burn_iters: int) -> None:
        # With map: mpire 2.10's map on a pool whose workers were started by apply_async passes
        # them one argument too many (TypeError); apply_async after map is fine.
        self.pool.map(mpire_ident, range(50 * workers))
        self.pool.map(mpire_burn, [burn_iters // 10] * (2 * workers), chunk_size=1)

    def call(self, x: Any) -> Any:
        return self.pool.apply(mpire_ident, args=(x,), task_timeout=TASK_TIMEOUT_S)

    def map(self, items: Sequence[int], chunksize: int | None) -> list[Any]:
        return list(self.pool.map(mpire_ident, items, chunk_size=chunksize))

    def submit(self, x: Any) -> Any:
        return self.pool.apply_async(mpire_ident, args=(x,))

    def submit_burn(self, n: int) -> Any:
        return self.pool.apply_async(mpire_burn, args=(n,))

    def gather(self, handles: list[Any], timeout: float = TASK_TIMEOUT_S) -> list[Any]:
        return _gather_async_results(handles, timeout)

    def spawn_ready(self, workers: int, delay: float, timeout: float) -> float:
        from mpire import WorkerPool

        path = _ready_file(self.tmp)
        started = time.monotonic()
        pool = WorkerPool(n_jobs=workers, use_worker_state=True)
        try:
            init = functools.partial(mpire_ready, path, delay)
            for _ in range(workers):
                pool.apply_async(mpire_ident, args=(None,), worker_init=init)
            return _wait_ready_file(path, workers, timeout) - started
        finally:
            pool.terminate()


class RayPeer(Peer):
    name = "ray"

    def __init__(self, tmp: str):
        super().__init__(tmp)
        import ray
        import ray.cloudpickle

        # The actor class by value, as from the script's __main__: see compare_workers.
        ray.cloudpickle.register_pickle_by_value(sys.modules[EchoActor.__module__])  # type: ignore[no-untyped-call]
        self.ray = ray
        started = time.monotonic()
        ray.init(
            address="local",  # a private instance of our own, never an already running cluster
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
        self.init_s = time.monotonic() - started
        self.actor_cls = ray.remote(EchoActor)
        self.actors: list[Any] = []
        self.turn = 0

    def _actors(self, workers: int, delay: float, timeout: float) -> list[Any]:
        actors = [self.actor_cls.remote(delay) for _ in range(workers)]
        self.ray.get([a.ready.remote() for a in actors], timeout=timeout)
        return actors

    def open(self, workers: int) -> None:
        self.actors = self._actors(workers, 0.0, TASK_TIMEOUT_S)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []

    def _next(self) -> Any:
        self.turn += 1
        return self.actors[self.turn % len(self.actors)]

    def call(self, x: Any) -> Any:
        return self.ray.get(self.actors[0].execute.remote(x), timeout=TASK_TIMEOUT_S)

    def submit(self, x: Any) -> Any:
        return self._next().execute.remote(x)

    def submit_burn(self, n: int) -> Any:
        return self._next().burn.remote(n)

    def gather(self, handles: list[Any], timeout: float = TASK_TIMEOUT_S) -> list[Any]:
        result: list[Any] = self.ray.get(handles, timeout=timeout)
        return result

    def spawn_ready(self, workers: int, delay: float, timeout: float) -> float:
        started = time.monotonic()
        actors = self._actors(workers, delay, timeout)
        elapsed = time.monotonic() - started
        for actor in actors:
            self.ray.kill(actor)
        return elapsed

    def finish(self) -> None:
        self.ray.shutdown()


PEER_CLASSES: dict[str, type[Peer]] = {
    "stateful_pool": SPoolPeer,
    BASELINE: ExecutorPeer,
    "multiprocessing.Pool": MPPoolPeer,
    "loky": LokyPeer,
    "mpire": MpirePeer,
    "ray": RayPeer,
    "stateful_pool (spawn)": SPoolSpawnPeer,
    "stateful_pool (forkserver)": SPoolForkserverPeer,
    f"{BASELINE} (forkserver)": ForkserverExecutorPeer,
    f"{BASELINE} (spawn)": SpawnExecutorPeer,
    "pebble (max_tasks=1)": PebblePeer,
    "concurry on_demand": ConcurryOnDemandPeer,
}
