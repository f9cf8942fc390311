"""``mode="ray"``: each worker is a Ray actor hosting one worker instance.

The Rust supervisor still owns the queue, timeouts, restarts and stats: every worker is a host
thread in the caller that forwards its calls to its actor without waiting (Ray queues them at
the actor, which runs them in order) and answers each when its result is ready. Up to
``max_concurrency`` calls (default 1) are in flight per actor. A restart creates a new actor
with the worker's own spawn arguments. A timeout or ``future.kill()`` of the call the actor
runs kills the actor; of a call still queued behind it, cancels that call alone. An actor that
dies fails the calls in flight on it with ``WorkerCrashedError``, as a crashed worker process
does; calls that had not reached it go back to the queue.

Ray is optional: ``pip install 'stateful-pool[ray]'``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import os
import struct
import threading
from collections.abc import Callable
from typing import Any

from .._chunk import CHUNK_METHOD, call_method, picklable_errors
from .._protocol import READY_FATAL, READY_OK, READY_RAISED, REQUEST_CANCEL, decode_init
from .._serialize import dump_exception, load_exception
from ._host import WorkerLost, call_args, remote_exception, serve_calls

__all__ = ["RayWorkerHost", "launcher"]

# A call's status when it was cancelled before it ran (beside READY_OK / READY_RAISED).
_SKIPPED = -1
# A pipelined call's id, in front of its pickle.
_CALL_ID = struct.Struct("<Q")


class RayWorkerHost:
    """The actor class (wrapped with ``ray.remote`` on first use): holds one worker instance.

    A call comes back as ``[status, value]``: the result, or the exception in the process-mode
    payload format, so the caller sees the same type, message and ``RemoteTraceback`` cause in
    every mode. A list, not a tuple: Ray encodes a list (of plain values) with msgpack, and
    pickles a tuple, which cost about 8% of a no-op round trip; so does each argument beyond
    one, hence the call id framed into the payload (:func:`_framed`).

    Calls run in order on the actor's default thread; ``cancel`` runs at once on a thread of
    its own (Ray's ``control`` concurrency group) and makes a call still queued a no-op when
    its turn comes (``ray.cancel`` marks a queued actor call cancelled but still runs it)."""

    cancelled: set[int]

    def setup(self, init: bytes) -> tuple[int, Any, int]:
        """Prepends the caller's ``sys.path`` (a local cluster shares the file system; on a real
        cluster ship code with ``actor_options={"runtime_env": ...}``), loads the worker class
        and runs its ``spawn``."""
        try:
            worker_cls, args, kwargs = decode_init(init)
            self.cancelled = set()
            self.instance = worker_cls()
            return READY_OK, self.instance.spawn(*args, **kwargs), os.getpid()
        except Exception as exc:
            return READY_RAISED, dump_exception(exc), os.getpid()

    def run(self, payload: Any) -> list[Any]:
        """Runs one call sent alone (the caller waits for it: nothing to cancel)."""
        try:
            method, args, kwargs = call_args(payload)
            result = call_method(self.instance, method, args, kwargs)
            return [READY_OK, picklable_errors(result) if method == CHUNK_METHOD else result]
        except Exception as exc:
            return [READY_RAISED, dump_exception(exc)]

    def call(self, framed: Any) -> list[Any]:
        """Runs a pipelined call (its id framed in, see :func:`_framed`) unless it was
        cancelled."""
        if isinstance(framed, tuple):
            call_id, payload = framed
        elif isinstance(framed, list):
            call_id, payload = framed[0], framed
        else:
            (call_id,) = _CALL_ID.unpack_from(framed)
            payload = memoryview(framed)[_CALL_ID.size :]
        if self.cancelled:
            # Ids grow: a cancel that came after its call ran is dropped here. A copy, as
            # `cancel` may add to the set meanwhile.
            for old in self.cancelled.copy():
                if old <= call_id:
                    self.cancelled.discard(old)
                    if old == call_id:
                        return [_SKIPPED, None]
        return self.run(payload)

    def cancel(self, call_id: int) -> None:
        """Call ``call_id``, if still queued, will not run (called in the ``control`` group)."""
        self.cancelled.add(call_id)


@functools.cache
def _actor_class() -> Any:
    import ray

    # typeshed-less ray overloads omit `concurrency_groups`, which ray.remote accepts.
    return ray.remote(concurrency_groups={"control": 1})(RayWorkerHost)  # type: ignore[call-overload]


def launcher(actor_options: dict[str, Any] | None) -> functools.partial[None]:
    """A launcher creating actors with ``actor_options`` (e.g.
    ``{"num_cpus": 0.5}``). Ray's own ``max_restarts`` defaults to 0: the supervisor restarts
    workers (with their spawn arguments, under the pool's restart policy), and two layers of
    restarts would start every worker twice."""
    import ray

    if not ray.is_initialized():
        ray.init()
    options = {"max_restarts": 0, **(actor_options or {})}
    return functools.partial(_launch, options)


class _Placed:
    """A worker's ``init`` with actor options of its own (its placement), kept across its
    restarts as the init is."""

    __slots__ = ("actor_options", "init")

    def __init__(self, init: Any, actor_options: dict[str, Any]):
        self.init = init
        self.actor_options = actor_options


def placed(init: Any, env: dict[str, str], num_cpus: int) -> _Placed:
    """``init`` for an actor placed as ``pool.placement(env=..., cpus=...)`` asks: the
    environment becomes ``runtime_env={"env_vars": ...}``, except ``CUDA_VISIBLE_DEVICES``,
    which asks Ray for that many GPUs (``num_gpus``: Ray picks the devices and sets the variable
    itself); ``cpus`` asks for that many CPUs (``num_cpus``: Ray does not pin actors)."""
    env = dict(env)
    options: dict[str, Any] = {}
    devices = env.pop("CUDA_VISIBLE_DEVICES", None)
    if devices is not None:
        options["num_gpus"] = len([d for d in devices.split(",") if d.strip()])
    if env:
        options["runtime_env"] = {"env_vars": env}
    if num_cpus:
        options["num_cpus"] = num_cpus
    return _Placed(init, options)


def _with_placement(options: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The pool's actor options with one worker's own on top (its env vars merged in)."""
    merged = {**options, **own}
    if "runtime_env" in own:
        base = dict(options.get("runtime_env") or {})
        env_vars = {**base.get("env_vars", {}), **own["runtime_env"]["env_vars"]}
        merged["runtime_env"] = {**base, "env_vars": env_vars}
    return merged


def _launch(options: dict[str, Any], channel: Any, init: Any) -> None:
    if isinstance(init, _Placed):
        options, init = _with_placement(options, init.actor_options), init.init
    threading.Thread(target=_serve, args=(options, channel, init), name="stateful-pool-ray", daemon=True).start()


def _serve(options: dict[str, Any], channel: Any, init: Any) -> None:
    import ray
    from ray.exceptions import RayActorError

    actor = None
    try:
        try:
            actor = _actor_class().options(**options).remote()
            status, value, pid = ray.get(actor.setup.remote(init))
        except RayActorError as exc:
            channel.ready(READY_FATAL, f"ray actor died during setup: {exc}")
            return
        except Exception as exc:
            channel.ready(READY_FATAL, f"cannot start ray actor: {type(exc).__name__}: {exc}")
            return
        if status != READY_OK:
            channel.ready(READY_RAISED, load_exception(value))
            return
        kill = functools.partial(ray.kill, actor, no_restart=True)
        if channel.concurrency == 1:
            # Blocking calls may run on the caller's thread (`direct`); the others come here.
            channel.ready(READY_OK, value, kill, pid, _direct_caller(actor))
            del value
            serve_calls(channel, _host_caller(actor))
        else:
            channel.ready(READY_OK, value, kill, pid)
            del value
            # Ray runs an actor's calls in the order sent unless it may run several at once.
            _forward_calls(channel, actor, in_order=options.get("max_concurrency", 1) == 1)
    finally:
        if actor is not None:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        channel.exited()


def _direct_caller(actor: Any) -> Callable[[Any], tuple[int, Any]]:
    """The blocking-call path on the caller's thread: ``call(payload)`` returns ``(READY_OK,
    result)``, ``(READY_RAISED, exception)`` or ``(READY_FATAL, why the actor is gone)`` (see
    ``HostChannel.ready``). What it needs is looked up once here, not on every call: a no-op
    round trip is a millisecond, of which Ray takes nearly all."""
    import ray
    from ray.exceptions import RayActorError

    get, run = ray.get, actor.run

    def call(payload: Any, _actor: Any = actor) -> tuple[int, Any]:  # holds the handle `run` refers to
        try:
            status, value = get(run.remote(_shippable(payload)))
        except RayActorError as exc:
            return READY_FATAL, f"ray actor died: {_first_line(exc)}"
        except (Exception, SystemExit) as exc:  # SystemExit fails its call only, as on the host thread
            return READY_RAISED, remote_exception(exc)
        if status == READY_OK:
            return READY_OK, value
        return READY_RAISED, load_exception(value)

    return call


def _host_caller(actor: Any) -> Callable[[Any], Any]:
    """The host thread's path for a worker that runs one call at a time (calls submitted as
    futures): the result, or raises what the call raised (``WorkerLost`` when the actor is
    gone)."""
    direct = _direct_caller(actor)

    def call(payload: Any) -> Any:
        status, value = direct(payload)
        if status == READY_OK:
            return value
        if status == READY_FATAL:
            raise WorkerLost(value)
        raise value

    return call


def _shippable(payload: Any) -> Any:
    """The payload as Ray ships it: bytes, not buffer views of the caller's memory; a call
    without out-of-band buffers as its pickle body alone, which Ray sends without pickling it
    again (a list would go through cloudpickle on both sides)."""
    if not isinstance(payload, list):
        return payload
    if len(payload) == 2:
        return bytes(payload[1])
    return [bytes(part) for part in payload]


def _framed(call_id: int, payload: Any) -> Any:
    """A pipelined call as its one argument: :func:`_shippable`'s form with the call id in it.
    In front of the pickle body (a copy: a few hundred bytes for most calls), or in place of
    the header of a call with out-of-band buffers (``call_args`` does not read it)."""
    shipped = _shippable(payload)
    if isinstance(shipped, bytes):
        return b"".join((_CALL_ID.pack(call_id), shipped))
    if isinstance(shipped, list):
        shipped[0] = call_id
        return shipped
    return call_id, shipped  # not an encoded payload (a (method, args, kwargs) tuple): rare


def _first_line(exc: BaseException) -> str:
    # Ray's message runs to a dozen lines; its first one says what happened.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class _Answers:
    """The calls at the actor, answered by one thread as their results come.

    An actor that runs one call at a time (Ray's default) runs them in the order sent, so the
    thread fetches the oldest half of the calls in flight with one ``ray.get``: they are the
    next to be done, the other half keeps the actor busy meanwhile, and a stream of calls costs
    one Ray call per batch rather than a wait and a get per call (each costs as much Python as
    the call itself). An actor that runs several at once (``actor_options={"max_concurrency":
    N}``) may finish them in any order: the thread then waits on all of them (``ray.wait``) and
    fetches whatever is ready. A call whose actor was already found dead is refused instead
    (see ``_forward_calls``)."""

    def __init__(self, in_order: bool) -> None:
        import ray
        from ray.exceptions import RayActorError

        self._get, self._actor_error = ray.get, RayActorError
        self.actor_died = threading.Event()
        self._in_order = in_order
        self._cond = threading.Condition()
        # call id -> (its ObjectRef, its replier), until answered; in the order sent.
        self._pending: dict[int, tuple[Any, Any]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="stateful-pool-ray-answers", daemon=True)
        self._thread.start()

    def add(self, call_id: int, ref: Any, replier: Any) -> None:
        with self._cond:
            self._pending[call_id] = (ref, replier)
            self._cond.notify()

    def unanswered(self, call_id: int) -> bool:
        with self._cond:
            return call_id in self._pending

    def close(self) -> None:
        """Answers what is still at the actor (it is killed next, which ends those calls), then
        lets the thread end."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _answer(self, replier: Any, ref: Any, outcome: list[Any] | None) -> None:
        """Answers one call with its ``outcome``, fetched already, or else fetched here."""
        try:
            status, result = outcome if outcome is not None else self._get(ref)
        except self._actor_error as exc:
            self.actor_died.set()
            replier.fatal(f"ray actor died: {_first_line(exc)}")
            return
        except BaseException as exc:
            replier.fatal(f"ray call failed: {type(exc).__name__}: {exc}")
            return
        if status == READY_OK:
            replier.ok(result)
        elif status == _SKIPPED:
            # Cancelled by the supervisor, which has already answered the call.
            replier.fatal("call cancelled")
        else:
            replier.raised(load_exception(result))

    def _run(self) -> None:
        import ray

        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                count = max(1, len(self._pending) // 2) if self._in_order else len(self._pending)
                batch = list(itertools.islice(self._pending.items(), count))
            refs = [ref for _, (ref, _) in batch]
            if not self._in_order:
                ray.wait(refs, num_returns=1)
                ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
                batch = [item for item in batch if item[1][0] in ready]
                refs = [ref for _, (ref, _) in batch]
            try:
                outcomes = self._get(refs)
            except BaseException:
                outcomes = None  # one of them failed: each is fetched alone below
            with self._cond:
                for call_id, _ in batch:
                    self._pending.pop(call_id, None)
            for i, (_, (ref, replier)) in enumerate(batch):
                self._answer(replier, ref, None if outcomes is None else outcomes[i])
            del batch, refs, outcomes


def _confirm(replier: Any, _done: concurrent.futures.Future[Any]) -> None:
    replier.ok(None)


def _forward_calls(channel: Any, actor: Any, in_order: bool) -> None:
    """Submits each call to the actor as it comes, without waiting for the previous answer:
    the actor queues them and runs them in order, and ``_Answers`` answers each when its
    result is ready. The supervisor bounds how many are in flight (``max_concurrency``) and
    asks to cancel one that timed out or was killed while still queued; a running one it
    kills with the actor."""
    answers = _Answers(in_order)
    go_on = True
    try:
        while go_on:
            # All the requests waiting: one wake-up of this thread for the lot.
            requests, go_on = channel.recv_many()
            for kind, call_id, payload, replier in requests:
                if kind == REQUEST_CANCEL:
                    _cancel(actor, answers, call_id, replier)
                elif answers.actor_died.is_set():
                    # Calls already at the actor failed with it; this one never reached it.
                    replier.not_run("ray actor died")
                    return
                else:
                    answers.add(call_id, actor.call.remote(_framed(call_id, payload)), replier)
            del requests
    finally:
        answers.close()


def _cancel(actor: Any, answers: _Answers, call_id: int, replier: Any) -> None:
    """Makes call ``call_id`` a no-op if still queued at the actor; ``replier`` (if any) is
    answered once the actor has the cancel, so the call fails only when it cannot run."""
    if not answers.unanswered(call_id):
        if replier is not None:
            replier.ok(None)  # answered already: nothing to cancel
        return
    done = actor.cancel.options(concurrency_group="control").remote(call_id).future()
    if replier is not None:
        done.add_done_callback(functools.partial(_confirm, replier))
