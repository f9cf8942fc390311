"""A process worker's ``print`` and ``logging`` output, prefixed with its pid (like Ray's).

A process worker writes to the descriptors it inherited from the pool's process (through the
zygote, or directly with ``start_method="spawn"``), so its output lands on the same terminal
or log. With ``SPool(worker_output="prefix")`` (the default) the worker's ``sys.stdout`` and
``sys.stderr`` become line-buffered writers that put ``(pid=<pid>) `` at the start of every
line, so lines from many workers can be told apart. A partial line (``print(..., end="")``)
gets its prefix once, when it starts, and is written out at the next newline, flush or the
worker's exit. ``"plain"`` leaves the streams untouched.

``logging`` needs no handler of its own: its records go to ``sys.stderr`` (as Python's
defaults do when the worker configured nothing, or through the handlers it set up), so they
come prefixed too. Handlers that already held the original streams (set up
by a module the zygote preloaded) are pointed at the prefixed ones.

Only what goes through Python's ``sys.stdout``/``sys.stderr`` is prefixed: a C extension
writing to descriptors 1 and 2 directly is not. Thread, asyncio, sync and ray modes have no
worker process of their own to prefix (ray prints its own ``(pid=...)``).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

# How the pool tells a process worker what to do with its output: "prefix" or "plain".
OUTPUT_ENV = "STATEFUL_POOL_WORKER_OUTPUT"
OUTPUT_CHOICES = ("prefix", "plain")


def check_output_choice(choice: str) -> str:
    """``choice`` if it is a valid ``worker_output``, else a clear :class:`ValueError`."""
    if choice not in OUTPUT_CHOICES:
        raise ValueError(f"worker_output must be one of {', '.join(map(repr, OUTPUT_CHOICES))}, got {choice!r}")
    return choice


class _PrefixedFd(io.RawIOBase):
    """Bytes to a descriptor, with ``prefix`` at the start of every line. The text layer above
    hands it whole lines (or a partial line, at a flush); whether the next byte starts a line
    is remembered across writes, so a line written in pieces gets one prefix."""

    def __init__(self, fd: int, prefix: bytes) -> None:
        super().__init__()
        self._fd = fd
        self._prefix = prefix
        self._at_line_start = True
        self._lock = threading.Lock()  # two threads' writes never share a prefix or a line

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: ReadableBuffer) -> int:
        view = bytes(data)
        out = bytearray()
        with self._lock:
            for line in view.splitlines(keepends=True):
                if self._at_line_start:
                    out += self._prefix
                out += line
                self._at_line_start = line.endswith(b"\n")
            _write_all(self._fd, out)
        return len(view)


def _write_all(fd: int, data: bytearray) -> None:
    written = 0
    while written < len(data):  # a pipe takes a large write in parts
        written += os.write(fd, memoryview(data)[written:])


def _prefixed(stream: TextIO | None, prefix: bytes) -> TextIO | None:
    """A line-buffered text stream over ``stream``'s descriptor, in its encoding, that
    prefixes every line; ``stream`` itself when it has no descriptor (closed, or replaced)."""
    try:
        fd = stream.fileno() if stream is not None else -1
    except (OSError, ValueError):
        fd = -1
    if stream is None or fd < 0:
        return stream
    stream.flush()  # what it holds goes out first, as it was
    raw = _PrefixedFd(fd, prefix)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=stream.encoding, errors=stream.errors, line_buffering=True)


def install() -> None:
    """In a process worker, before any task runs: prefix its output unless the pool said
    ``worker_output="plain"``."""
    if os.environ.get(OUTPUT_ENV, "prefix") != "prefix":
        return
    prefix = f"(pid={os.getpid()}) ".encode()
    replaced: dict[int, TextIO | None] = {}
    for name in ("stdout", "stderr"):
        old = getattr(sys, name)
        new = _prefixed(old, prefix)
        if new is not old:
            replaced[id(old)] = new
            setattr(sys, name, new)
    for handler in logging.getLogger().handlers:  # set up before this ran: a preloaded module
        if isinstance(handler, logging.StreamHandler) and id(handler.stream) in replaced:
            handler.setStream(replaced[id(handler.stream)])


# The package's parent folder: a worker must import this very package, even when it is not
# installed (a source tree).
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker_env(worker_output: str) -> list[tuple[str, str]]:
    """The environment a pool's worker processes get on top of this process's: the path to
    this package, and how their output is written (``worker_output``, checked here)."""
    path = os.environ.get("PYTHONPATH")
    return [
        ("PYTHONPATH", _PACKAGE_ROOT + (os.pathsep + path if path else "")),
        (OUTPUT_ENV, check_output_choice(worker_output)),
    ]
