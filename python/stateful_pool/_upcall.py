"""The worker's side of upcalls: a running task asks the pool's parent process something (the
task tree's namespace, say) on the worker's own channel, and waits for the answer.

The request goes out as an ``UPCALL`` frame on the reply stream; the supervisor hands it to the
handler the pool was built with and writes the answer back as the next frame on the request
stream (see ``src/process/upcall.rs``). A pool serving upcalls sends its workers one call at a
time, so that answer is the next frame this worker reads.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._core import CoreEndpoint

# The worker's channel, set by ``_worker.main`` (None outside a pool's worker process).
_channel: CoreEndpoint | None = None
# One upcall at a time per process: a task's threads share the channel.
_turn = threading.Lock()


def bind(channel: CoreEndpoint) -> None:
    """Makes ``channel`` (the worker's frames channel) the one upcalls use."""
    global _channel
    _channel = channel


def protocol() -> dict[str, int]:
    """The wire constants (frame kinds, namespace ops and statuses), as the core defines them."""
    from ._core import CoreNamespace

    return dict(CoreNamespace.protocol())


def call(request: bytes) -> bytes:
    """Sends one upcall and returns the answer's bytes. Works in a pool's worker process, while
    a task runs; blocks until the parent answers.

    Raises:
        RuntimeError: outside a pool's worker process.
        ConnectionError: the supervisor is gone, or answered with something else.
    """
    channel = _channel
    if channel is None:
        raise RuntimeError("upcalls work only in a pool's worker process, while a task runs")
    kinds = _kinds()
    with _turn:
        channel.send(kinds[0], 0, [request])
        frame = channel.recv()
    if frame is None:
        raise ConnectionError("the pool's supervisor is gone")
    kind, _, payload = frame
    if kind != kinds[1]:
        raise ConnectionError(f"expected the answer to an upcall, got a frame of kind {kind}")
    return memoryview(payload).tobytes()  # type: ignore[arg-type]  # a buffer (see _core.Payload)


def _kinds() -> tuple[int, int]:
    """``(FRAME_UPCALL, FRAME_UPCALL_REPLY)``, the core's frame kinds."""
    from ._protocol import FRAME_UPCALL, FRAME_UPCALL_REPLY

    return FRAME_UPCALL, FRAME_UPCALL_REPLY
