"""The workloads of ``benches/compare.py``, run in each peer's child process: one ``run_*``
function per workload, each measuring a :class:`~compare_peers.Peer` and reporting its numbers
as JSON-line events (:class:`Emitter`) to the parent, and ``child_main``, the child's entry point."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from compare_peers import PEER_CLASSES, Peer, RayPeer

MB = 1_000_000
PAYLOAD_BYTES = 64 << 20
SPAWN_WORKERS = 8
SPAWN_DELAY_S = 1.0
PARK_SLEEP_S = 0.005
START_SAMPLES = 20


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
