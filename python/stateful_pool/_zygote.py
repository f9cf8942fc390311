"""The zygote: a template process that forks a pool's workers, so a new worker costs a ``fork``
instead of an interpreter's start and imports.

Started afresh by the Rust supervisor (``python -c "from stateful_pool._zygote import main;
main()" [module ...]``) with its control socket on descriptor 3; the protocol is described in
``src/process/zygote.rs``. It imports what every worker needs and the modules it was asked to
preload, refuses to go on if that started a thread (a forked child would inherit a process with
threads it does not have: locks held forever, CUDA unusable), then forks a worker per request.
Each child sets its death signal (the zygote dies with the supervisor, the worker with the
zygote), takes its descriptors on 3, 4 and 5, its environment and working directory, and runs
:func:`stateful_pool._worker.main` as a freshly started worker would.
"""

from __future__ import annotations

import fcntl
import gc
import importlib
import os
import select
import signal
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from typing import Any

CONTROL_FD = 3
WORKER_FDS = (3, 4, 5)
PR_SET_PDEATHSIG = 1
START_METHODS = ("zygote", "spawn")


def zygote_command(mode: str, start_method: str, preload: Sequence[str]) -> tuple[str, list[str]] | None:
    """The zygote's program and arguments for ``SPool(start_method=, preload=)``; ``None`` when
    workers start afresh."""
    if start_method not in START_METHODS:
        raise ValueError(f"start_method must be one of {START_METHODS}, got {start_method!r}")
    if isinstance(preload, str) or not all(isinstance(name, str) and name for name in preload):
        raise TypeError(f"preload must be a list of module names, got {preload!r}")
    if preload and (mode != "process" or start_method != "zygote"):
        raise ValueError("preload needs mode='process' and start_method='zygote'")
    if mode != "process" or start_method != "zygote":
        return None
    return sys.executable, ["-c", "from stateful_pool._zygote import main; main()", *preload]


def _preload(modules: Sequence[str]) -> str | None:
    """Imports ``modules``; why the zygote must refuse to fork, or ``None``."""
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # whatever it is, the parent reports it
            return f"preloading {name!r} raised {type(exc).__name__}: {exc}"
        tasks = len(os.listdir("/proc/self/task"))
        if threading.active_count() != 1 or tasks != 1:
            started = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
            return (
                f"preloading {name!r} started threads ({tasks} in the process; Python threads: {started}), "
                "and a process with threads cannot be forked safely (a thread pool or CUDA initialised at "
                "import?): import it in the worker's spawn() instead, or use start_method='spawn'"
            )
    return None


def _reserve_worker_fds(control: int) -> socket.socket:
    """Moves the control socket off 3 and holds 3, 4 and 5 with ``/dev/null`` so nothing the
    zygote imports gets them: a worker's descriptors replace them without closing anyone's."""
    sock = socket.socket(fileno=fcntl.fcntl(control, fcntl.F_DUPFD_CLOEXEC, 10))
    opened = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    null = fcntl.fcntl(opened, fcntl.F_DUPFD_CLOEXEC, 10)  # not one of the numbers it fills
    os.close(opened)
    for fd in WORKER_FDS:
        os.dup2(null, fd, inheritable=False)
    os.close(null)
    return sock


def _reap(control: socket.socket) -> None:
    """Reaps every exited worker and reports its raw wait status."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.send(b"S" + struct.pack("<Ii", pid, status))


def _serve(control: socket.socket, wakeup: int) -> tuple[list[int], bytes, list[bytes]] | None:
    """Forks a worker per request until the supervisor is gone (then ``None``). In a forked
    child, returns its descriptors, working directory and environment."""
    while True:
        readable, _, _ = select.select([control.fileno(), wakeup], [], [])
        if wakeup in readable:
            while True:
                try:
                    if not os.read(wakeup, 512):
                        break
                except BlockingIOError:
                    break
            _reap(control)
        if control.fileno() not in readable:
            continue
        message, fds, flags, _addr = socket.recv_fds(control, 1 << 20, 4)
        cut = flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)
        if cut or message[:1] != b"F" or len(message) < 10 or len(fds) not in (2, 3):
            for fd in fds:
                os.close(fd)
            return None  # closed, or nonsense: only the supervisor talks to us
        seq = message[1:9]
        cwd, *env = message[9:].split(b"\0")[:-1]
        sys.stdout.flush()  # what is buffered would be printed twice otherwise
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            control.send(b"X" + seq + str(exc).encode())
            continue
        if pid == 0:
            return fds, cwd, env
        for fd in fds:
            os.close(fd)  # the worker's alone now: its pipes report EOF when it dies
        # Opened before we can reap the child, so it names that very process.
        pidfd = os.pidfd_open(pid)
        try:
            socket.send_fds(control, [b"P" + seq + struct.pack("<I", pid)], [pidfd])
        finally:
            os.close(pidfd)


def _become_worker(prctl: Any, zygote: int, fds: list[int], cwd: bytes, env: list[bytes]) -> None:
    """In the forked child, before any user code: tie its life to the zygote's, take the
    worker's descriptors, environment and working directory, as a fresh start would have."""
    if prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != zygote:
        os._exit(70)  # the zygote (and so the supervisor) is already gone
    os.setpgid(0, 0)  # its own process group, like a freshly started worker
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]
    for fd in fds:
        os.close(fd)
    for target, fd in zip(WORKER_FDS[: len(high)], high, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    if len(fds) == 2:
        os.close(WORKER_FDS[2])  # no shared memory: the placeholder goes
    # The supervisor's whole environment as it is now, then the worker's own variables.
    # Only what changed is set: each assignment is a putenv, and most often nothing did.
    environ = os.environb
    wanted = {key: value for key, _, value in (entry.partition(b"=") for entry in env)}
    for key in [key for key in environ if key not in wanted]:
        del environ[key]
    for key, value in wanted.items():
        if environ.get(key) != value:
            environ[key] = value
    if cwd:
        os.chdir(cwd)
    sys.argv = ["-c"]


def main() -> None:
    zygote = os.getpid()
    control = _reserve_worker_fds(CONTROL_FD)
    import ctypes

    import cloudpickle  # noqa: F401 - imported once here, for every worker

    from . import _worker

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up once, not in every worker
    refused = _preload(sys.argv[1:])
    if refused is not None:
        control.send(b"E" + refused.encode(errors="replace")[:60000])
        raise SystemExit(1)
    # Objects alive now live as long as the workers: the collector never touches them, so
    # their pages stay shared with the zygote instead of being copied on first write.
    gc.freeze()
    wakeup, wake = os.pipe()
    os.set_blocking(wakeup, False)
    os.set_blocking(wake, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake)
    control.send(b"R")
    try:
        job = _serve(control, wakeup)
    except OSError:
        job = None  # the supervisor is gone
    if job is None:
        return
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in (wakeup, wake):
        os.close(fd)
    control.close()
    _become_worker(prctl, zygote, *job)
    _worker.main()
