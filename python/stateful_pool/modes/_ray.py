"""``mode="ray"``: each worker is a Ray actor hosting one worker instance.

The Rust supervisor still owns the queue, timeouts, restarts and stats: every worker is a host
thread in the caller that forwards its calls to its actor and waits for the answer (Ray
releases the GIL while it waits). A restart creates a new actor with the worker's own spawn
arguments; a timeout or ``future.kill()`` kills the actor. An actor that dies fails its call
with ``WorkerCrashedError``, as a crashed worker process does.

Ray is optional: ``pip install 'stateful-pool[ray]'``.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

from .._protocol import READY_FATAL, READY_OK, READY_RAISED, decode_init
from ._host import WorkerLost, serve_calls

__all__ = ["RayWorkerHost", "launcher"]


class RayWorkerHost:
    """The actor class (wrapped with ``ray.remote`` on first use): holds one worker instance.

    Exceptions come back in the process-mode payload format so the caller sees the same type,
    message and ``RemoteTraceback`` cause in every mode."""

    def setup(self, init: bytes) -> tuple[int, Any, int]:
        """Prepends the caller's ``sys.path`` (a local cluster shares the file system; on a real
        cluster ship code with ``actor_options={"runtime_env": ...}``), loads the worker class
        and runs its ``spawn``."""
        from .._serialize import dump_exception

        try:
            worker_cls, args, kwargs = decode_init(init)
            self.instance = worker_cls()
            return READY_OK, self.instance.spawn(*args, **kwargs), os.getpid()
        except Exception as exc:
            return READY_RAISED, dump_exception(exc), os.getpid()

    def call(self, payload: bytes) -> tuple[int, Any]:
        """Runs one call; a raised exception comes back as a payload, not as a Ray error."""
        from .._serialize import dump_exception
        from ._host import call_args

        try:
            method, args, kwargs = call_args(payload)
            return READY_OK, getattr(self.instance, method)(*args, **kwargs)
        except Exception as exc:
            return READY_RAISED, dump_exception(exc)


@functools.cache
def _actor_class() -> Any:
    import ray

    return ray.remote(RayWorkerHost)


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

    from .._serialize import load_exception

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
        channel.ready(READY_OK, value, functools.partial(ray.kill, actor, no_restart=True), pid)
        del value

        def run(payload: Any) -> Any:
            if isinstance(payload, list):
                # Buffer views of the caller's memory: Ray ships bytes.
                payload = [bytes(part) for part in payload]
            try:
                status, result = ray.get(actor.call.remote(payload))
            except RayActorError as exc:
                # Ray's message runs to a dozen lines; its first one says what happened.
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise WorkerLost(f"ray actor died: {first}") from None
            if status != READY_OK:
                raise load_exception(result)
            return result

        serve_calls(channel, run)
    finally:
        if actor is not None:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        channel.exited()
