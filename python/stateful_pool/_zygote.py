"""The zygote: a template process that forks a pool's workers, so a new worker costs a ``fork``
instead of an interpreter's start and imports.

Started afresh by the Rust supervisor (``python -c "import gc; gc.disable(); from
stateful_pool._zygote import main; main()" [module ...]``) with its control socket on
descriptor 3; the protocol is described in ``src/process/zygote.rs``. It imports what every
worker needs and the modules it was asked to preload, refuses to go on if that started a thread
(a forked child would inherit a process with threads it does not have: locks held forever, CUDA
unusable), then forks a worker per request (handing the request to a child forked ahead of time
when it has one, see :class:`_Zygote`). Each child sets its death signal (the zygote dies with
the supervisor, the worker with the zygote), takes its descriptors on 3, 4 and 5, its
environment and working directory, and runs :func:`stateful_pool._worker.main` as a freshly
started worker would.
"""

from __future__ import annotations

import atexit
import contextlib
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
# "forkserver": the zygote is shared by this process's pools and kept until it exits.
START_METHODS = ("zygote", "forkserver", "spawn")
# How long the zygote waits with no request before it forks its next spare.
SPARE_AFTER_IDLE_S = 0.005


def zygote_command(mode: str, start_method: str, preload: Sequence[str]) -> tuple[str, list[str]] | None:
    """The zygote's program and arguments for ``SPool(start_method=, preload=)``; ``None`` when
    workers start afresh."""
    if start_method not in START_METHODS:
        raise ValueError(f"start_method must be one of {START_METHODS}, got {start_method!r}")
    if isinstance(preload, str) or not all(isinstance(name, str) and name for name in preload):
        raise TypeError(f"preload must be a list of module names, got {preload!r}")
    forks = start_method != "spawn"
    if preload and (mode != "process" or not forks):
        raise ValueError("preload needs mode='process' and start_method='zygote' (or 'forkserver')")
    if mode != "process" or not forks:
        return None
    # The collector is off while the zygote imports (4 ms of its 60 ms start here): what it
    # imports lives as long as it does, and is frozen before the first fork.
    return sys.executable, ["-c", "import gc; gc.disable(); from stateful_pool._zygote import main; main()", *preload]


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


def _reserve_worker_fds(control: int) -> tuple[socket.socket, int]:
    """Moves the control socket off 3 and holds 3, 4 and 5 with ``/dev/null`` so nothing the
    zygote imports gets them: a worker's descriptors replace them without closing anyone's.
    Returns the control socket and a ``/dev/null`` descriptor to put back on 3."""
    sock = socket.socket(fileno=fcntl.fcntl(control, fcntl.F_DUPFD_CLOEXEC, 10))
    opened = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    null = fcntl.fcntl(opened, fcntl.F_DUPFD_CLOEXEC, 10)  # not one of the numbers it fills
    os.close(opened)
    for fd in WORKER_FDS:
        os.dup2(null, fd, inheritable=False)
    return sock, null


Job = tuple[list[int], bytes, list[bytes]]


def _job(body: bytes, fds: list[int]) -> Job:
    """A worker's descriptors, working directory and environment, from a request's body."""
    cwd, *env = body.split(b"\0")[:-1]
    return fds, cwd, env


class _Zygote:
    """The zygote's loop. It keeps one *spare*: a child forked ahead of time that waits, on a
    socket on its descriptor 3 (a worker has a pipe there), for a request's descriptors and
    environment, so a request costs a hand-over instead of a fork. The next spare is forked once
    no request came for a few milliseconds (so the fork does not slow the start just made), or
    when a worker exits (its restart is likely next)."""

    def __init__(self, control: socket.socket, null: int, prctl: Any):
        self.control = control
        self.null = null
        self.prctl = prctl
        self.pid = os.getpid()
        self.wakeup, self.wake = os.pipe()
        os.set_blocking(self.wakeup, False)
        os.set_blocking(self.wake, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake)
        # The spare: its pid, a pidfd on it and our end of its socket.
        self.spare: tuple[int, int, socket.socket] | None = None

    def _fork(self) -> int:
        sys.stdout.flush()  # what is buffered would be printed twice otherwise
        sys.stderr.flush()
        return os.fork()

    def _in_child(self) -> None:
        """A new child drops the zygote's own descriptors and handlers and dies with it."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (self.wakeup, self.wake, self.null):
            os.close(fd)
        self.control.close()
        if self.spare is not None:
            os.close(self.spare[1])
            self.spare[2].close()
        if self.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != self.pid:
            os._exit(70)  # the zygote (and so the supervisor) is already gone

    def make_spare(self) -> Job | None:
        """Forks the next spare (in the zygote: ``None``); in the spare, waits for its job."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        os.dup2(theirs.fileno(), WORKER_FDS[0], inheritable=False)  # a spare from its first instant
        theirs.close()
        try:
            pid = self._fork()
        except OSError:
            pid = -1  # no spare: requests fork directly
        if pid == 0:
            ours.close()
            self._in_child()
            mine = socket.socket(fileno=WORKER_FDS[0])
            try:
                body, fds, flags, _addr = socket.recv_fds(mine, 1 << 20, 4)
            except OSError:
                os._exit(0)
            mine.close()
            if not body or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) not in (2, 3):
                os._exit(0)  # the zygote is going, or sent nonsense: never a worker
            return _job(body, fds)
        os.dup2(self.null, WORKER_FDS[0], inheritable=False)
        if pid > 0:
            self.spare = (pid, os.pidfd_open(pid), ours)
        else:
            ours.close()
        return None

    def _reap(self) -> bool:
        """Reaps every exited child and reports its raw wait status; whether a worker (not the
        spare) was among them."""
        worker = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return worker
            if pid == 0:
                return worker
            if self.spare is not None and self.spare[0] == pid:
                os.close(self.spare[1])  # the spare died while waiting: the next one comes when idle
                self.spare[2].close()
                self.spare = None
            else:
                worker = True
            self.control.send(b"S" + struct.pack("<Ii", pid, status))

    def _hand_over(self, body: bytes, fds: list[int]) -> tuple[int, int] | None:
        """Gives the request to the spare: its pid and pidfd, or ``None`` if there is none."""
        if self.spare is None:
            return None
        pid, pidfd, sock = self.spare
        self.spare = None
        try:
            socket.send_fds(sock, [body], fds)
        except OSError:
            os.close(pidfd)  # it died meanwhile
            return None
        finally:
            sock.close()
        return pid, pidfd

    def serve(self) -> Job | None:
        """Answers fork requests until the supervisor is gone (then ``None``). In a new worker,
        returns its descriptors, working directory and environment."""
        self.control.send(b"R")
        while True:
            idle = None if self.spare is not None else SPARE_AFTER_IDLE_S
            readable, _, _ = select.select([self.control.fileno(), self.wakeup], [], [], idle)
            reaped = False
            if self.wakeup in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wakeup, 512):
                        pass
                reaped = self._reap()
            if self.spare is None and (not readable or reaped):
                # Idle for a moment, or a worker just exited (its restart is likely next): fork
                # the next spare now, off the path of a start.
                job = self.make_spare()
                if job is not None:
                    return job
            if self.control.fileno() not in readable:
                continue
            message, fds, flags, _addr = socket.recv_fds(self.control, 1 << 20, 4)
            cut = flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)
            if cut or message[:1] != b"F" or len(message) < 10 or len(fds) not in (2, 3):
                for fd in fds:
                    os.close(fd)
                return None  # closed, or nonsense: only the supervisor talks to us
            seq, body = message[1:9], message[9:]
            handed = self._hand_over(body, fds)
            if handed is None:
                try:
                    pid = self._fork()
                except OSError as exc:
                    for fd in fds:
                        os.close(fd)
                    self.control.send(b"X" + seq + str(exc).encode())
                    continue
                if pid == 0:
                    self._in_child()
                    return _job(body, fds)
                # Opened before we can reap the child, so it names that very process.
                handed = pid, os.pidfd_open(pid)
            for fd in fds:
                os.close(fd)  # the worker's alone now: its pipes report EOF when it dies
            pid, pidfd = handed
            try:
                socket.send_fds(self.control, [b"P" + seq + struct.pack("<I", pid)], [pidfd])
            finally:
                os.close(pidfd)


def _become_worker(fds: list[int], cwd: bytes, env: list[bytes]) -> None:
    """In the forked child (its death signal already set), before any user code: take the
    worker's descriptors, environment and working directory, as a fresh start would have."""
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
    control, null = _reserve_worker_fds(CONTROL_FD)
    import ctypes

    import cloudpickle  # noqa: F401 - imported once here, for every worker

    # Everything _worker.main imports, once here: a worker importing _output (and so logging)
    # itself took 8 ms of every start on a loaded machine.
    from . import _output, _upcall, _worker  # noqa: F401

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up once, not in every worker
    refused = _preload(sys.argv[1:])
    if refused is not None:
        control.send(b"E" + refused.encode(errors="replace")[:60000])
        raise SystemExit(1)
    # Objects alive now live as long as the workers: the collector never touches them, so
    # their pages stay shared with the zygote instead of being copied on first write. The
    # collector, off during the imports (see zygote_command), runs in the workers as usual.
    gc.freeze()
    gc.enable()
    try:
        job = _Zygote(control, null, prctl).serve()
    except OSError:
        job = None  # the supervisor is gone
    if job is None:
        return
    _become_worker(*job)
    _worker.main()
    # A forked worker that was told to stop skips the interpreter's teardown (as
    # multiprocessing's forked children do): it would touch every object inherited from the
    # zygote, copying their pages, and cost each retiring worker milliseconds of CPU beside
    # the workers starting meanwhile (an on-demand pool retires one per call). Exit handlers
    # (logging's flush included) still run.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
