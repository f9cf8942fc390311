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

Workloads 7 and 8 have extra peers, which run only these two and workload 4: ``stateful_pool
(spawn)`` (a fresh interpreter per worker, ``start_method="spawn"``; ``stateful_pool`` is the
default zygote), ``stateful_pool (forkserver)`` (a zygote shared by the process's pools and kept
after them: of the ``spawn`` repeats, the first starts it) and ProcessPoolExecutor with the
``forkserver`` and ``spawn`` start methods (the baseline uses the platform default, fork on Linux
before Python 3.14); and, for ``start`` only, two pools that run
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
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

# The benchmark's other modules, beside this script: Python puts the script's directory first on
# sys.path, and multiprocessing hands that on to the workers it spawns (see compare_workers).
from compare_peers import BASELINE
from compare_report import FLOOR, print_report, summarize
from compare_workers import burn
from compare_workloads import child_main

PEERS = (
    "stateful_pool",
    BASELINE,
    "multiprocessing.Pool",
    "loky",
    "mpire",
    "ray",
    "stateful_pool (spawn)",
    "stateful_pool (forkserver)",
    f"{BASELINE} (forkserver)",
    f"{BASELINE} (spawn)",
    "pebble (max_tasks=1)",
    "concurry on_demand",
)
START_WORKLOADS = ("start", "recover")
# Peers that only run the START_WORKLOADS (the start method is all that differs).
START_ONLY_PEERS = PEERS[6:]
START_PEERS = ("stateful_pool", BASELINE, *START_ONLY_PEERS)
# Start-only peers that also run the ``spawn`` workload (a whole pool's start).
SPAWN_TOO = (f"{BASELINE} (forkserver)", f"{BASELINE} (spawn)", "stateful_pool (spawn)", "stateful_pool (forkserver)")
PEER_PACKAGES = {"loky": "loky", "mpire": "mpire", "ray": "ray", "pebble (max_tasks=1)": "pebble"}
WORKLOADS = ("roundtrip", "tiny", "map", "numpy", "spawn", "cpu", "idle", *START_WORKLOADS)


# -- the parent: runs each peer's child under a watchdog, then prints the tables ----------------


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
            or (w == "spawn" and peer in SPAWN_TOO)
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
