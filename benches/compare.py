"""Compare stateful_pool with other Python process pools, all in one run (issue 3).

Run it on a fresh machine (Linux, Python >= 3.11) with::

    python3 -m venv .venv && .venv/bin/pip install -q -e '.[bench]' && .venv/bin/python benches/compare.py

Options: ``--repeat R`` (default 5), ``--quick`` (a smoke run: small sizes, one repeat),
``--only roundtrip,tiny,...`` (pick workloads), ``--peers stateful_pool,loky,...`` (pick peers),
``--json out.json`` (also write every number as JSON).

Peers: stateful_pool (``SPool``), ``concurrent.futures.ProcessPoolExecutor`` (the baseline: every
ratio is taken against it, measured in the same run), ``multiprocessing.Pool``, loky
(``get_reusable_executor``), mpire (``WorkerPool(use_worker_state=True)``) and Ray actors. Each
uses its platform default start method. A peer whose package is not installed is skipped with a
note. Every peer runs in a child process of its own, so no peer's leftover threads or processes
disturb another and the idle-CPU figure counts that peer alone. A watchdog bounds each workload:
one that overruns its time budget is killed and reported as timed out, and the rest go on.

Workloads (each measured ``--repeat`` times; the tables show min / median / max of the
per-repeat values, and the ratio of the median to ProcessPoolExecutor's, > 1 meaning better):

1. ``roundtrip``: a no-op call on one warm worker, blocking (``pool.execute(None)``,
   ``executor.submit(f, None).result()``, ``pool.apply(f, (None,))``,
   ``ray.get(actor.f.remote(None))``); the median latency in µs. "hot": calls back to back;
   "parked": 5 ms of sleep before each call, so the worker has gone idle (stateful_pool spins
   briefly, then parks) and has to be woken up.
2. ``tiny``: N no-op tasks through 2 workers, one future per task (no chunking), then wait for
   them all; tasks/s. N is sized per peer from a pilot run so one measurement takes about 1 s
   (at most 20,000 tasks). The table adds a reference row, ``(floor: stdlib Future)``: the
   same number of stdlib Futures made, pickled, completed by a second thread and waited for,
   with no worker and no IPC, which bounds what any pool handing out one Future per task can
   reach on the machine.
3. ``numpy``: a 64 MiB numpy array sent to one worker, which returns it; MB/s each way, that is
   2 x 64 MiB / round-trip time (MB = 10^6 bytes).
4. ``spawn``: a fresh pool of 8 workers whose setup sleeps 1 s: seconds from creating the pool
   until every worker has finished its setup (stateful_pool: ``submit_spawn``; the executors and
   pools: an initializer that sleeps 1 s, then writes a timestamp; Ray: actors whose
   ``__init__`` sleeps 1 s). 1.0 s is the floor.
5. ``cpu``: 40 pure-Python CPU tasks of about 20 ms each (calibrated on this machine) on 1 warm
   worker, then on 2; speed-up = time with 1 / time with 2 (2.0 is perfect, given 2 free cores).
6. ``idle``: a pool of 2 warm workers, after a burst of work, left idle: the CPU time used by the
   parent and all its descendant processes over 2 s, as % of one core (for Ray this includes its
   GCS and raylet daemons, which a Ray user runs too).
7. ``start``: a new worker's start + first call, ms: ``pool.spawn(); pool.execute(1)`` (no-op
   spawn) on a pool whose earlier worker was retired; for ProcessPoolExecutor a new 1-worker
   executor and its first ``submit(...).result()``. Each repeat is the median of 20 samples.
8. ``recover``: crash recovery, ms: a call that kills its worker, then the next call done on the
   replacement (ProcessPoolExecutor breaks on a crash: a new executor serves the next call).
   Each repeat is the median of 20 samples.

Workloads 7 and 8 have extra peers, which run only these two: ``stateful_pool (spawn)`` (a fresh
interpreter per worker, ``start_method="spawn"``; ``stateful_pool`` is the default zygote) and
ProcessPoolExecutor with the ``forkserver`` and ``spawn`` start methods (the baseline uses the
platform default, fork on Linux before Python 3.14); and, for ``start`` only, two pools that run
every call in a fresh process, timed per call (back to back, each on a new process): pebble's
``ProcessPool(max_tasks=1)`` and a concurry ``Worker.options(mode="process", on_demand=True,
max_workers=2)`` pool of stateful_pool (its per-call overhead).
9. ``map``: ``map`` of a no-op over N tiny items (300,000; 30,000 with ``--quick``) through 2
   workers, items/s. "auto": each pool's own chunking (stateful_pool: ``pool.map(items)``, sized
   from the measured per-item time; ``multiprocessing.Pool.map``: its automatic chunks;
   ProcessPoolExecutor and loky: ``map(chunksize=1000)``, they have no automatic size; mpire:
   its ``map``). The items are a ``range`` (stateful_pool slices a list, tuple or range into
   chunks, and a range's slice travels as a range: its items are made in the worker), then the
   same items as a ``list`` (every pool pickles each item). "one item per message": the same
   with ``chunksize=1`` over N/15 items (stateful_pool's per-item path; the peers'
   ``map(chunksize=1)``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import multiprocessing
import multiprocessing.pool
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stateful_pool import SPool, SWorker
from stateful_pool.concurry import Worker

MB = 1_000_000
PAYLOAD_BYTES = 64 << 20
SPAWN_WORKERS = 8
SPAWN_DELAY_S = 1.0
PARK_SLEEP_S = 0.005
TASK_TIMEOUT_S = 120.0
BASELINE = "ProcessPoolExecutor"
PEERS = (
    "stateful_pool",
    BASELINE,
    "multiprocessing.Pool",
    "loky",
    "mpire",
    "ray",
    "stateful_pool (spawn)",
    f"{BASELINE} (forkserver)",
    f"{BASELINE} (spawn)",
    "pebble (max_tasks=1)",
    "concurry on_demand",
)
START_WORKLOADS = ("start", "recover")
# Peers that only run the START_WORKLOADS (the start method is all that differs).
START_ONLY_PEERS = PEERS[6:]
START_PEERS = ("stateful_pool", BASELINE, *START_ONLY_PEERS)
START_SAMPLES = 20
PEER_PACKAGES = {"loky": "loky", "mpire": "mpire", "ray": "ray", "pebble (max_tasks=1)": "pebble"}
WORKLOADS = ("roundtrip", "tiny", "map", "numpy", "spawn", "cpu", "idle", *START_WORKLOADS)


# -- what the workers run (module level: spawn-based workers import it from here) --------------


def ident(x: Any) -> Any:
    """The no-op task: returns its argument."""
    return x


def burn(n: int) -> int:
    """A pure-Python CPU-bound loop (holds the GIL the whole time)."""
    total = 0
    for i in range(n):
        total += i ^ (i >> 3)
    return total


def mark_ready(path: str, delay: float) -> None:
    """A setup that takes ``delay`` seconds, then appends its finishing time to ``path``."""
    time.sleep(delay)
    with open(path, "a") as f:  # one short O_APPEND write: lines from many processes do not mix
        f.write(f"{time.monotonic()!r}\n")


def mpire_ident(_state: dict[str, Any], x: Any) -> Any:
    return x


def mpire_burn(_state: dict[str, Any], n: int) -> int:
    return burn(n)


def mpire_ready(path: str, delay: float, state: dict[str, Any]) -> None:
    state["ready"] = True
    mark_ready(path, delay)


class EchoWorker(Worker):
    """The concurry worker of the on-demand peer: ``execute`` is the no-op."""

    def execute(self, x: Any) -> Any:
        return x


class Echo(SWorker):
    """The stateful_pool worker: setup takes ``delay`` seconds; ``execute`` is the no-op."""

    def spawn(self, delay: float = 0.0) -> int:
        time.sleep(delay)
        return os.getpid()

    def execute(self, x: Any) -> Any:
        return x

    def burn(self, n: int) -> int:
        return burn(n)

    def crash(self) -> None:
        os._exit(1)


def crash() -> None:
    """A task that kills its worker."""
    os._exit(1)


class EchoActor:
    """The Ray actor (wrapped with ``ray.remote`` in the child that runs Ray)."""

    def __init__(self, delay: float = 0.0):
        time.sleep(delay)

    def ready(self) -> bool:
        return True

    def execute(self, x: Any) -> Any:
        return x

    def burn(self, n: int) -> int:
        return burn(n)


# -- one adapter per peer -----------------------------------------------------------------------


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
        deadline = time.monotonic() + timeout
        return [h.get(max(0.0, deadline - time.monotonic())) for h in handles]

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

    def call(self, x: Any) -> Any:
        return self.pool.apply(mpire_ident, args=(x,), task_timeout=TASK_TIMEOUT_S)

    def map(self, items: Sequence[int], chunksize: int | None) -> list[Any]:
        return list(self.pool.map(mpire_ident, items, chunk_size=chunksize))

    def submit(self, x: Any) -> Any:
        return self.pool.apply_async(mpire_ident, args=(x,))

    def submit_burn(self, n: int) -> Any:
        return self.pool.apply_async(mpire_burn, args=(n,))

    def gather(self, handles: list[Any], timeout: float = TASK_TIMEOUT_S) -> list[Any]:
        deadline = time.monotonic() + timeout
        return [h.get(max(0.0, deadline - time.monotonic())) for h in handles]

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
    f"{BASELINE} (forkserver)": ForkserverExecutorPeer,
    f"{BASELINE} (spawn)": SpawnExecutorPeer,
    "pebble (max_tasks=1)": PebblePeer,
    "concurry on_demand": ConcurryOnDemandPeer,
}


# -- the workloads (run in the peer's child process) -------------------------------------------


class Emitter:
    """Appends one JSON line per event to the file the parent watches."""

    def __init__(self, path: str):
        self.file = open(path, "a")  # kept open for the child's whole life

    def __call__(self, event: str, **fields: Any) -> None:
        self.file.write(json.dumps({"event": event, **fields}) + "\n")
        self.file.flush()


def _median_us(samples_ns: list[int]) -> float:
    return statistics.median(samples_ns) / 1000.0


def run_roundtrip(peer: Peer, cfg: dict[str, Any], emit: Emitter) -> None:
    peer.open(1)
    try:
        for _ in range(50):
            peer.call(None)
        hot: list[float] = []
        parked: list[float] = []
        for _ in range(cfg["repeat"]):
            samples: list[int] = []
            stop = time.perf_counter() + cfg["hot_budget_s"]
            while len(samples) < cfg["hot_calls"] and time.perf_counter() < stop:
                t0 = time.perf_counter_ns()
                peer.call(None)
                samples.append(time.perf_counter_ns() - t0)
            hot.append(_median_us(samples))
            samples = []
            for _ in range(cfg["parked_calls"]):
                time.sleep(PARK_SLEEP_S)
                t0 = time.perf_counter_ns()
                peer.call(None)
                samples.append(time.perf_counter_ns() - t0)
            parked.append(_median_us(samples))
        emit("metric", key="rt_hot_us", values=hot)
        emit("metric", key="rt_parked_us", values=parked)
    finally:
        peer.close()


def run_tiny(peer: Peer, cfg: dict[str, Any], emit: Emitter) -> None:
    peer.open(2)
    try:
        peer.warm(2, cfg["burn_iters"])
        pilot = cfg["tiny_pilot"]
        t0 = time.perf_counter()
        peer.gather([peer.submit(i) for i in range(pilot)])
        rate = pilot / (time.perf_counter() - t0)
        n = int(min(cfg["tiny_max"], max(pilot, rate * cfg["tiny_target_s"])))
        rates: list[float] = []
        for _ in range(cfg["repeat"]):
            t0 = time.perf_counter()
            results = peer.gather([peer.submit(i) for i in range(n)])
            elapsed = time.perf_counter() - t0
            if len(results) != n or results[-1] != n - 1:
                raise AssertionError("wrong results")
            rates.append(n / elapsed)
        emit("metric", key="tiny_per_s", values=rates, extra={"tasks": n})
    finally:
        peer.close()


def run_map(peer: Peer, cfg: dict[str, Any], emit: Emitter) -> None:
    n = cfg["map_items"]
    peer.open(2)
    try:
        peer.warm(2, cfg["burn_iters"])
        try:
            peer.map(range(100), None)
        except NotImplementedError:
            emit("skip", workload="map", why=f"{peer.name} has no map")
            return
        workloads: tuple[tuple[str, int | None, Sequence[int]], ...] = (
            ("map_per_s", None, range(n)),
            ("mapl_per_s", None, list(range(n))),
            ("map1_per_s", 1, range(n // 15)),
        )
        for key, size, items in workloads:
            rates: list[float] = []
            for _ in range(cfg["repeat"]):
                t0 = time.perf_counter()
                results = peer.map(items, size)
                elapsed = time.perf_counter() - t0
                if len(results) != len(items) or results[-1] != len(items) - 1:
                    raise AssertionError("wrong results")
                rates.append(len(items) / elapsed)
            emit("metric", key=key, values=rates, extra={"items": len(items)})
    finally:
        peer.close()


def run_numpy(peer: Peer, cfg: dict[str, Any], emit: Emitter) -> None:
    import numpy as np

    payload = np.full(PAYLOAD_BYTES, 7, dtype=np.uint8)
    payload[-1] = 9
    peer.open(1)
    try:
        peer.call(payload)
        speeds: list[float] = []
        trips: list[float] = []
        for _ in range(cfg["repeat"]):
            times: list[float] = []
            for _ in range(cfg["numpy_trips"]):
                t0 = time.perf_counter()
                out = peer.call(payload)
                times.append(time.perf_counter() - t0)
                if out.nbytes != payload.nbytes or out[-1] != 9:
                    raise AssertionError("array came back wrong")
                del out
            trip = statistics.median(times)
            trips.append(trip * 1000)
            speeds.append(2 * PAYLOAD_BYTES / trip / MB)
        emit("metric", key="numpy_MBps", values=speeds, extra={"roundtrip_ms": statistics.median(trips)})
    finally:
        peer.close()


def run_spawn(peer: Peer, cfg: dict[str, Any], emit: Emitter) -> None:
    values = [peer.spawn_ready(SPAWN_WORKERS, SPAWN_DELAY_S, 60.0) for _ in range(cfg["repeat"])]
    emit("metric", key="spawn8_s", values=values)


def run_cpu(peer: Peer, cfg: dict[str, Any], emit: Emitter) -> None:
    times: dict[int, list[float]] = {}
    for workers in (1, 2):
        peer.open(workers)
        try:
            peer.warm(workers, cfg["burn_iters"])
            times[workers] = []
            for _ in range(cfg["repeat"]):
                t0 = time.perf_counter()
                peer.gather([peer.submit_burn(cfg["burn_iters"]) for _ in range(cfg["cpu_tasks"])])
                times[workers].append(time.perf_counter() - t0)
        finally:
            peer.close()
    speedups = [one / two for one, two in zip(times[1], times[2], strict=True)]
    extra = {"t1_s": statistics.median(times[1]), "t2_s": statistics.median(times[2])}
    emit("metric", key="cpu_speedup", values=speedups, extra=extra)


def _cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of ``pid``: nanosecond-exact from ``schedstat`` where the
    kernel has it (``cpu_times`` counts 10 ms ticks, too coarse for a 1 % target over 2 s)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)


def _tree_cpu_seconds() -> dict[int, float]:
    """CPU seconds used so far by this process and each of its descendants, by pid."""
    import psutil

    me = psutil.Process()
    seconds: dict[int, float] = {}
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error, OSError):
            seconds[proc.pid] = _cpu_seconds(proc.pid)
    return seconds


def run_idle(peer: Peer, cfg: dict[str, Any], emit: Emitter) -> None:
    if importlib.util.find_spec("psutil") is None:
        emit("skip", workload="idle", why="psutil is not installed")
        return
    peer.open(2)
    try:
        values: list[float] = []
        for _ in range(cfg["repeat"]):
            peer.warm(2, cfg["burn_iters"])
            time.sleep(0.3)  # let any post-task spinning end: we measure a pool at rest
            before = _tree_cpu_seconds()
            t0 = time.perf_counter()
            time.sleep(cfg["idle_window_s"])
            after = _tree_cpu_seconds()
            wall = time.perf_counter() - t0
            used = sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in after.items())
            values.append(100.0 * used / wall)
        emit("metric", key="idle_cpu_pct", values=values)
    finally:
        peer.close()


def _run_start_samples(measure: Callable[[int], list[float]], key: str, cfg: dict[str, Any], emit: Emitter) -> None:
    try:
        repeats = [[1000 * t for t in measure(START_SAMPLES)] for _ in range(cfg["repeat"])]
    except NotImplementedError:
        emit("skip", workload=key, why="not measured for this peer")
        return
    flat = [t for samples in repeats for t in samples]
    extra = {"samples": len(flat), "fastest_ms": min(flat), "slowest_ms": max(flat)}
    emit("metric", key=key, values=[statistics.median(samples) for samples in repeats], extra=extra)


def run_start(peer: Peer, cfg: dict[str, Any], emit: Emitter) -> None:
    _run_start_samples(peer.start_first_call, "start_ms", cfg, emit)


def run_recover(peer: Peer, cfg: dict[str, Any], emit: Emitter) -> None:
    _run_start_samples(peer.crash_recover, "recover_ms", cfg, emit)


RUNNERS: dict[str, Callable[[Peer, dict[str, Any], Emitter], None]] = {
    "roundtrip": run_roundtrip,
    "tiny": run_tiny,
    "map": run_map,
    "numpy": run_numpy,
    "spawn": run_spawn,
    "cpu": run_cpu,
    "idle": run_idle,
    "start": run_start,
    "recover": run_recover,
}


def child_main(peer_name: str, config_path: str, events_path: str) -> None:
    with open(config_path) as f:
        cfg: dict[str, Any] = json.load(f)
    emit = Emitter(events_path)
    peer = PEER_CLASSES[peer_name](cfg["tmp"])
    if isinstance(peer, RayPeer):
        emit("note", text=f"ray.init() took {peer.init_s:.1f} s (not counted)")
    try:
        for workload in cfg["workloads"]:
            emit("start", workload=workload)
            if workload == "numpy" and importlib.util.find_spec("numpy") is None:
                emit("skip", workload=workload, why="numpy is not installed")
                continue
            try:
                RUNNERS[workload](peer, cfg, emit)
            except Exception as exc:
                emit("error", workload=workload, why=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc())
            emit("done", workload=workload)
    finally:
        peer.finish()
        emit("end")


# -- the parent: runs each peer's child under a watchdog, then prints the tables ----------------


@dataclass(frozen=True)
class Metric:
    key: str
    workload: str
    title: str
    short: str
    unit: str
    higher_is_better: bool
    digits: int


METRICS = (
    Metric(
        "rt_hot_us",
        "roundtrip",
        "1a. no-op round trip, 1 warm worker, hot (back to back)",
        "round trip, hot (µs)",
        "µs",
        False,
        1,
    ),
    Metric(
        "rt_parked_us",
        "roundtrip",
        "1b. no-op round trip, 1 warm worker, parked (5 ms pause before each call)",
        "round trip, parked (µs)",
        "µs",
        False,
        1,
    ),
    Metric(
        "tiny_per_s",
        "tiny",
        "2. tiny tasks through 2 workers, one future per task",
        "tiny tasks, 2 workers (tasks/s)",
        "tasks/s",
        True,
        0,
    ),
    Metric(
        "map_per_s",
        "map",
        "7a. map over tiny items, 2 workers, each pool's own chunks (stateful_pool: automatic)",
        "map, tiny items, auto chunks (items/s)",
        "items/s",
        True,
        0,
    ),
    Metric(
        "mapl_per_s",
        "map",
        "7c. map over a list of tiny items, 2 workers, each pool's own chunks",
        "map, list of tiny items, auto chunks (items/s)",
        "items/s",
        True,
        0,
    ),
    Metric(
        "map1_per_s",
        "map",
        "7b. map over tiny items, 2 workers, chunksize=1 (one item per message)",
        "map, tiny items, chunksize=1 (items/s)",
        "items/s",
        True,
        0,
    ),
    Metric(
        "numpy_MBps",
        "numpy",
        "3. 64 MiB numpy array round trip",
        "64 MiB numpy round trip (MB/s each way)",
        "MB/s each way",
        True,
        0,
    ),
    Metric(
        "spawn8_s",
        "spawn",
        "4. parallel spawn: 8 workers with a 1 s setup, until all are ready",
        "spawn 8 workers, 1 s setup (s)",
        "s",
        False,
        2,
    ),
    Metric(
        "cpu_speedup",
        "cpu",
        "5. CPU-bound speed-up: 40 x 20 ms pure-Python tasks, 2 workers vs 1",
        "CPU speed-up, 2 workers vs 1 (x)",
        "x",
        True,
        2,
    ),
    Metric(
        "idle_cpu_pct",
        "idle",
        "6. idle CPU: 2 idle warm workers, parent + all descendants, over 2 s",
        "idle CPU, 2 workers (% of a core)",
        "% of one core",
        False,
        2,
    ),
    Metric(
        "start_ms",
        "start",
        "7. a new worker: start + first call (no-op spawn), median of 20 per repeat",
        "new worker: start + first call (ms)",
        "ms",
        False,
        1,
    ),
    Metric(
        "recover_ms",
        "recover",
        "8. crash recovery: crash, then the next call done on the replacement, median of 20 per repeat",
        "crash recovery (ms)",
        "ms",
        False,
        1,
    ),
)


def _budgets(repeat: int) -> dict[str, float]:
    """Seconds a workload may take before the watchdog kills it (generous: Ray is slow to start)."""
    return {
        "setup": 120.0,
        "roundtrip": 60.0 + 10.0 * repeat,
        "tiny": 60.0 + 15.0 * repeat,
        "map": 120.0 + 30.0 * repeat,
        "numpy": 60.0 + 10.0 * repeat,
        "spawn": 60.0 + 30.0 * repeat,
        "cpu": 60.0 + 10.0 * repeat,
        "idle": 30.0 + 10.0 * repeat,
        "start": 60.0 + 20.0 * repeat,
        "recover": 60.0 + 20.0 * repeat,
    }


def _read_events(path: str) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f.read().splitlines(keepends=True) if line.endswith("\n")]
    except FileNotFoundError:
        return []


def _tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_peer(peer: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Runs the workloads of one peer in a child process (restarted after a timeout or a crash)."""
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    budgets = _budgets(cfg["repeat"])
    remaining = list(cfg["workloads"])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    with tempfile.TemporaryDirectory(prefix="spool-bench-") as tmp:
        attempt = 0
        while remaining:
            attempt += 1
            events_path = os.path.join(tmp, f"events-{attempt}.jsonl")
            config_path = os.path.join(tmp, f"config-{attempt}.json")
            log_path = os.path.join(tmp, f"child-{attempt}.log")
            with open(config_path, "w") as f:
                json.dump({**cfg, "workloads": remaining, "tmp": tmp}, f)
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--_child",
                peer,
                "--_config",
                config_path,
                "--_events",
                events_path,
            ]
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
                )
            current, since, seen = "setup", time.monotonic(), 0
            finished: set[str] = set()
            ended_at: float | None = None
            timed_out = False
            while True:
                rc = proc.poll()
                events = _read_events(events_path)
                for event in events[seen:]:
                    kind = event["event"]
                    if kind == "start":
                        current, since = event["workload"], time.monotonic()
                        _log(f"  [{peer}] {current} ...")
                    elif kind == "metric":
                        metrics[event["key"]] = {"values": event["values"], "extra": event.get("extra", {})}
                    elif kind == "note":
                        notes.append(event["text"])
                    elif kind in ("skip", "error"):
                        notes.append(f"{event['workload']}: {event['why']}")
                        if kind == "error":
                            _log(event["tb"])
                    elif kind == "done":
                        finished.add(event["workload"])
                        _log(f"  [{peer}] {event['workload']} done in {time.monotonic() - since:.1f} s")
                    elif kind == "end":
                        ended_at = time.monotonic()
                seen = len(events)
                if rc is not None:
                    break
                now = time.monotonic()
                if ended_at is not None and now - ended_at > 30:
                    notes.append("the child did not exit 30 s after its last workload (killed)")
                    _kill_group(proc)
                    break
                if ended_at is None and current not in finished and now - since > budgets[current]:
                    timed_out = True
                    notes.append(f"{current}: timed out after {budgets[current]:.0f} s (killed)")
                    _log(f"  [{peer}] {current} TIMED OUT")
                    _kill_group(proc)
                    break
                time.sleep(0.1)
            _kill_group(proc)  # whatever the child left in its process group
            if not timed_out and ended_at is None:
                notes.append(f"{current}: the child died (exit {proc.returncode}): {_tail(log_path)}")
            if current == "setup" and not finished:
                notes.append("could not start: " + _tail(log_path))
                break
            finished.add(current)
            remaining = [w for w in remaining if w not in finished]
    return {"metrics": metrics, "notes": notes}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "mp_start_method": multiprocessing.get_start_method(),
        "loadavg_start": os.getloadavg()[0],
        "packages": {
            dist: _version(dist) for dist in ("stateful-pool", "cloudpickle", "numpy", "psutil", "loky", "mpire", "ray")
        },
    }


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _ratio(metric: Metric, value: float | None, base: float | None) -> float | None:
    """How many times better than the baseline (> 1: better)."""
    if value is None or base is None or value <= 0 or base <= 0:
        return None
    return value / base if metric.higher_is_better else base / value


def _fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric and peer: min, median, max of the repeats and the ratio of the median to the baseline."""
    summary: dict[str, dict[str, Any]] = {}
    for metric in METRICS:
        rows: dict[str, Any] = {}
        for peer, result in results.items():
            data = result["metrics"].get(metric.key)
            if data and data["values"]:
                values = data["values"]
                rows[peer] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
        base = rows.get(BASELINE, {}).get("median")
        for row in rows.values():
            row["vs_baseline"] = _ratio(metric, row["median"], base)
        if rows:
            summary[metric.key] = rows
    return summary


def print_report(
    info: dict[str, Any], cfg: dict[str, Any], results: dict[str, dict[str, Any]], summary: dict[str, dict[str, Any]]
) -> None:
    peers = list(results)
    width = max(len(p) for p in peers) + 2
    for metric in METRICS:
        rows = summary.get(metric.key)
        if not rows:
            continue
        better = "higher" if metric.higher_is_better else "lower"
        print(f"\n{metric.title}  [{metric.unit}, {better} is better]")
        print(f"  {'peer':<{width}}{'min':>12}{'median':>12}{'max':>12}{'vs PPE':>10}  extra")
        for peer in peers:
            row = rows.get(peer)
            if row is None:
                continue
            extra = results[peer]["metrics"][metric.key].get("extra") or {}
            extra_text = ", ".join(f"{k}={_fmt(v, 2) if isinstance(v, float) else v}" for k, v in extra.items())
            print(
                f"  {peer:<{width}}{_fmt(row['min'], metric.digits):>12}{_fmt(row['median'], metric.digits):>12}"
                f"{_fmt(row['max'], metric.digits):>12}{_fmt_ratio(row['vs_baseline']):>10}  {extra_text}"
            )
        if FLOOR in rows:
            print(
                f"  {FLOOR}: one stdlib Future per task, completed by a thread, with no worker and no IPC:\n"
                "  the Python work alone of any pool that hands out a Future per task, on this machine."
            )

    peers = [p for p in peers if p != FLOOR]

    print(f"\nSummary (median of {cfg['repeat']}; in brackets: times better than {BASELINE}, same run)\n")
    print("| workload | " + " | ".join(peers) + " |")
    print("| --- |" + " ---: |" * len(peers))
    for metric in METRICS:
        rows = summary.get(metric.key)
        if not rows:
            continue
        cells = []
        for peer in peers:
            row = rows.get(peer)
            if row is None:
                cells.append("n/a")
            elif peer == BASELINE:
                cells.append(_fmt(row["median"], metric.digits))
            else:
                cells.append(f"{_fmt(row['median'], metric.digits)} ({_fmt_ratio(row['vs_baseline'])})")
        print(f"| {metric.short} | " + " | ".join(cells) + " |")

    if any(result["notes"] for result in results.values()):
        print("\nNotes:")
        for peer, result in results.items():
            for note in result["notes"]:
                print(f"  {peer}: {note}")


FLOOR = "(floor: stdlib Future)"


def future_floor(n: int) -> float:
    """Tasks/s of the Python work any pool that hands out one ``concurrent.futures.Future`` per
    task must do, with no worker and no IPC at all: make a Future, pickle the call, have a
    second thread unpickle it and set the result, wait for them all. A ceiling for the "tiny"
    workload on this machine, measured in the same run."""
    import pickle
    import queue
    import threading

    calls: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def complete() -> None:
        while (item := calls.get()) is not None:
            future, payload = item
            future.set_result(pickle.loads(payload)[1][0])

    thread = threading.Thread(target=complete)
    thread.start()
    t0 = time.perf_counter()
    futures = []
    for i in range(n):
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        calls.put((future, pickle.dumps(("execute", (i,), {}), protocol=5)))
        futures.append(future)
    concurrent.futures.wait(futures)
    elapsed = time.perf_counter() - t0
    calls.put(None)
    thread.join()
    return n / elapsed


def calibrate_burn(target_s: float) -> int:
    """Loop count for :func:`burn` that takes about ``target_s`` on this machine."""
    n = 10_000
    while True:
        t0 = time.perf_counter()
        burn(n)
        if time.perf_counter() - t0 > 0.005:
            break
        n *= 2
    best = min(_timed(burn, n) for _ in range(5))
    return max(1, int(n * target_s / best))


def _timed(fn: Callable[[int], Any], arg: int) -> float:
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def _csv(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if item not in allowed:
            raise SystemExit(f"unknown {what} {item!r}; choose from {', '.join(allowed)}")
    return items


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=None, help="repeats per measurement (default 5; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: small sizes, one repeat")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated (default: all)")
    parser.add_argument("--peers", default=",".join(PEERS), help="peers, comma-separated (default: all)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    parser.add_argument("--_config", help=argparse.SUPPRESS)
    parser.add_argument("--_events", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        child_main(args._child, args._config, args._events)
        return

    workloads = [w for w in WORKLOADS if w in _csv(args.only, WORKLOADS, "workload")]
    peers = [p for p in PEERS if p in _csv(args.peers, PEERS, "peer")]
    repeat = args.repeat or (1 if args.quick else 5)
    cfg: dict[str, Any] = {
        "repeat": repeat,
        "quick": args.quick,
        "workloads": workloads,
        "hot_calls": 200 if args.quick else 2000,
        "hot_budget_s": 0.2 if args.quick else 0.5,
        "parked_calls": 20 if args.quick else 100,
        "tiny_pilot": 50 if args.quick else 200,
        "tiny_target_s": 0.2 if args.quick else 1.0,
        "tiny_max": 2000 if args.quick else 20_000,
        "map_items": 30_000 if args.quick else 300_000,
        "numpy_trips": 1,
        "cpu_tasks": 10 if args.quick else 40,
        "idle_window_s": 0.5 if args.quick else 2.0,
        "burn_iters": calibrate_burn(0.020),
    }
    info = machine_info()
    print("stateful_pool vs. other process pools (benches/compare.py)")
    print(f"machine: {info['platform']}; {info['cpu']}; nproc {info['nproc']}; {info['memory_gib']} GiB RAM")
    print(
        f"python {info['python']} (multiprocessing start method: {info['mp_start_method']}); "
        + ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    )
    print(
        f"repeat {repeat}{' (quick)' if args.quick else ''}; workloads {', '.join(workloads)}; "
        f"CPU task = burn({cfg['burn_iters']:,}) ~ 20 ms"
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other work on the machine skews every number)", flush=True)

    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    for peer in peers:
        package = PEER_PACKAGES.get(peer)
        if package and importlib.util.find_spec(package) is None:
            note = f"skipped: {package} is not installed (pip install -e '.[bench]')"
            results[peer] = {"metrics": {}, "notes": [note]}
            _log(f"[{peer}] skipped: not installed")
            continue
        # Only the start peers run the start workloads, and the extra ones run nothing else.
        runs = [
            w
            for w in workloads
            if (peer in START_PEERS and peer not in START_ONLY_PEERS)
            or (w in START_WORKLOADS) == (peer in START_ONLY_PEERS)
        ]
        if not runs:
            continue
        peer_cfg = {**cfg, "workloads": runs}
        _log(f"[{peer}]")
        peer_started = time.monotonic()
        results[peer] = run_peer(peer, peer_cfg)
        _log(f"[{peer}] {time.monotonic() - peer_started:.0f} s")
    if "tiny" in workloads:
        n = cfg["tiny_max"]
        results[FLOOR] = {
            "metrics": {"tiny_per_s": {"values": [future_floor(n) for _ in range(repeat)], "extra": {"tasks": n}}},
            "notes": [],
        }
    summary = summarize(results)
    print_report(info, cfg, results, summary)
    info["loadavg_end"] = os.getloadavg()[0]
    print(f"\ntotal {time.monotonic() - started:.0f} s; load average at the end: {info['loadavg_end']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "settings": cfg, "results": results, "summary": summary}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
