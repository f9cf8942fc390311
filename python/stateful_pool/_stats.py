"""The typed dictionaries that the pools' statistics methods return.

They are plain ``dict`` objects at run time (cheap to build, easy to log or serialise); the
classes document each key and let a type checker verify what callers read.
"""

from __future__ import annotations

from typing import Literal, TypedDict

WorkerState = Literal["starting", "idle", "busy", "failed", "stopping", "stopped"]
"""A worker's state (the states are defined in ``src/SUPERVISOR.md``)."""


class WorkerStats(TypedDict):
    """One worker of an :class:`~stateful_pool.SPool`, as :meth:`SPool.stats` reports it."""

    id: int
    """The worker's id; it keeps it across restarts."""
    state: WorkerState
    """Where the worker is in its life."""
    pid: int | None
    """The process it runs in (this one in the in-process modes; a Ray actor's in ``"ray"``);
    ``None`` while it has none, e.g. before it started."""
    restarts: int
    """How many times it was restarted."""
    tasks_done: int
    """Tasks that ran to their end, whether they returned or raised."""
    tasks_failed: int
    """Tasks that did not: they crashed the worker, timed out, or were killed (cancelled
    while running, or by a killing shutdown)."""
    last_error: str | None
    """Why it last failed (``None`` if it never did)."""
    dispatched: int
    """Tasks handed to it over its life."""
    batches: int
    """Hand-overs of several short tasks at once (one wake-up for the lot)."""
    batched_tasks: int
    """Tasks handed over in those batches."""
    health_failures: int
    """Health checks it failed (answered false, raised, hung or crashed it): each replaced it."""


class CoalesceStats(TypedDict):
    """Coalesced calls of batched methods (:func:`~stateful_pool.batched`), pool-wide."""

    calls: int
    """Calls made to batched methods, each with a list of gathered items."""
    tasks: int
    """Items those calls carried (``tasks / calls`` is the mean batch size)."""
    max_size: int
    """The largest batch."""
    histogram: list[tuple[int | None, int]]
    """``(bound, calls)`` per bucket: calls of more items than the previous bound and at most
    ``bound`` (``None``: every larger call)."""


class PoolStats(TypedDict):
    """What :meth:`SPool.stats` returns."""

    workers: list[WorkerStats]
    """The live workers, and those that stopped or gave up (a retired worker, or one whose first
    setup failed, is dropped)."""
    queued: int
    """Tasks waiting for a worker."""
    live_workers: int
    """Workers starting, idle or busy."""
    dispatched: int
    """Tasks handed to workers so far, in total."""
    load_balancing: str
    """The balancer's canonical name (``"round_robin"``, ``"active"``, ``"total"``, ``"random"``)."""
    sticky_hits: int
    """Keyed calls (``options(key=...)``) that ran on their key's worker."""
    sticky_misses: int
    """Keyed calls that spilled to another worker (``sticky="spill"``) while theirs was busy."""
    coalesced: CoalesceStats
    """Batch sizes of the batched methods' coalesced calls."""


class PoolWorkerStats(TypedDict, total=False):
    """One live worker of a concurry :class:`~stateful_pool.concurry.WorkerPool`."""

    id: int
    """The worker's id."""
    pid: int | None
    """Its process."""
    state: str
    """``"starting"``, ``"idle"`` or ``"busy"``."""
    active_calls: int
    """Calls it runs now (0 or 1)."""
    total_calls: int
    """Calls handed to it over its life."""
    tasks_failed: int
    """Calls that failed on it."""
    restarts: int
    """How many times it was restarted."""


class LoadBalancerStats(TypedDict):
    """The ``load_balancer`` entry of :meth:`WorkerPool.get_pool_stats`."""

    algorithm: str
    """concurry's name of the balancer (``"RoundRobin"``, ...)."""
    total_dispatched: int
    """Calls dispatched through the pool."""
    active_calls: list[int]
    """Per live worker, the calls it runs now."""
    total_active: int
    """Their sum."""
    total_calls: list[int]
    """Per live worker, the calls handed to it over its life."""


class LatencyStats(TypedDict):
    """Seconds from dispatch to result over the last 10,000 calls (``None`` before any)."""

    count: int
    """How many calls the figures cover."""
    mean: float | None
    """The mean."""
    p50: float | None
    """The median."""
    p90: float | None
    """The 90th percentile."""
    p99: float | None
    """The 99th percentile."""
    max: float | None
    """The slowest."""


class WorkerPoolStats(TypedDict):
    """What :meth:`WorkerPool.get_pool_stats` returns."""

    total_workers: int
    """Live workers."""
    max_workers: int
    """The pool's size (an on-demand pool's cap)."""
    on_demand: bool
    """Whether each call gets a fresh worker."""
    on_demand_active: int
    """Workers an on-demand pool runs now (0 for other pools)."""
    stopped: bool
    """Whether :meth:`WorkerPool.stop` was called."""
    mode: str
    """The execution mode."""
    load_balancer: LoadBalancerStats
    """The balancer and its counters."""
    workers: list[PoolWorkerStats]
    """Every live worker."""
    queued: int
    """Calls waiting for a worker."""
    max_queued_tasks: int | None
    """The bound on calls in flight (``None``: no bound)."""
    latency: LatencyStats
    """Dispatch-to-result latency."""


__all__ = [
    "CoalesceStats",
    "LatencyStats",
    "LoadBalancerStats",
    "PoolStats",
    "PoolWorkerStats",
    "WorkerPoolStats",
    "WorkerState",
    "WorkerStats",
]
