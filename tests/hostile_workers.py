"""Workers that attack their own channel: they write garbage into the shared-memory segment the
supervisor maps (fd 5 in the worker), as a buggy extension or a hostile user could.

The layout (``src/shm/segment.rs`` and ``ring.rs``, pinned by the Rust test
``segment_layout_is_what_hostile_workers_expect``): a 4096-byte header page holding magic (u64
at 0), the ring capacity (u64 at 8), the closed flag (u32 at 16), then two 192-byte ``RingCtl``
blocks, requests at 64 and replies at 256, each with ``head`` at +0 and ``tail`` at +64 (own
cache lines); then the request data area (``capacity`` bytes) and the reply data area.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import time
from typing import Any

from stateful_pool import SWorker
from stateful_pool._serialize import encode

MAGIC = 0x7374_6174_6566_756C
HEADER = 4096
REQUESTS, REPLIES = 64, 256
HEAD, TAIL = 0, 64
SHM_FD, DOORBELL_FD = 5, 4
OK_FRAME = 11
_FRAME = struct.Struct("<BQQ")  # kind, task id, payload length


def _task_id() -> int:
    """The id of the call being run, from the worker loop's frame (``_worker.main``)."""
    frame = sys._getframe(1)
    while frame is not None and "task_id" not in frame.f_locals:
        frame = frame.f_back  # type: ignore[assignment]
    assert frame is not None, "not called from the worker loop"
    return int(frame.f_locals["task_id"])


class Hostile(SWorker):
    """Echoes like a normal worker until asked to break its channel."""

    def spawn(self) -> int:
        self.segment = mmap.mmap(SHM_FD, 0)
        magic, self.capacity = struct.unpack_from("<QQ", self.segment, 0)
        assert magic == MAGIC and len(self.segment) == HEADER + 2 * self.capacity, "unexpected segment layout"
        return os.getpid()

    def execute(self, x: Any = None) -> Any:
        return x

    def pid(self) -> int:
        return os.getpid()

    def size(self, data: bytes) -> tuple[int, int]:
        return os.getpid(), len(data)

    # -- raw ring access ------------------------------------------------------------------

    def _index(self, ring: int, which: int) -> int:
        return int(struct.unpack_from("<Q", self.segment, ring + which)[0])

    def _set_index(self, ring: int, which: int, value: int) -> None:
        struct.pack_into("<Q", self.segment, ring + which, value % (1 << 64))

    def _put_reply_bytes(self, data: bytes) -> None:
        """Writes ``data`` at the reply ring's head (with wrap-around) and publishes it."""
        head = self._index(REPLIES, HEAD)
        assert len(data) <= self.capacity - (head - self._index(REPLIES, TAIL))
        base = HEADER + self.capacity
        at = head % self.capacity
        first = min(len(data), self.capacity - at)
        self.segment[base + at : base + at + first] = data[:first]
        self.segment[base : base + len(data) - first] = data[first:]
        self._set_index(REPLIES, HEAD, head + len(data))

    def _ring_doorbell(self) -> None:
        try:
            os.write(DOORBELL_FD, b"\x01")
        except BlockingIOError:
            pass  # a full pipe already holds a wake-up

    def _hang(self) -> None:
        """Never answers: the supervisor has to deal with what was written."""
        time.sleep(3600)

    # -- attacks --------------------------------------------------------------------------

    def forge_reply_length(self, length: int) -> None:
        """A reply header announcing ``length`` bytes that never come."""
        self._put_reply_bytes(_FRAME.pack(OK_FRAME, _task_id(), length))
        self._ring_doorbell()
        self._hang()

    def push_reply_head(self, ahead: int) -> None:
        """A plausible reply header (32 MiB, more than the ring), then the head pushed ``ahead``
        bytes further: a reader trusting it copies far past the ring."""
        self._put_reply_bytes(_FRAME.pack(OK_FRAME, _task_id(), 32 << 20))
        self._set_index(REPLIES, HEAD, self._index(REPLIES, HEAD) + ahead)
        self._ring_doorbell()
        self._hang()

    def answer_then_push_request_tail(self, past: int) -> str:
        """Answers this call properly, then moves the request ring's tail ``past`` bytes beyond
        its head (the next request's writer sees negative used space) and stops reading."""
        reply = b"".join(bytes(part) for part in encode("answered"))
        self._put_reply_bytes(_FRAME.pack(OK_FRAME, _task_id(), len(reply)) + reply)
        self._set_index(REQUESTS, TAIL, self._index(REQUESTS, HEAD) + past)
        self._ring_doorbell()
        self._hang()
        return "unreachable"

    def partial_reply(self) -> None:
        """A reply header for 1 MiB, 100 bytes of it, then silence: the reader waits for the
        rest."""
        self._put_reply_bytes(_FRAME.pack(OK_FRAME, _task_id(), 1 << 20) + bytes(100))
        self._ring_doorbell()
        self._hang()

    def big_result(self, n: int) -> bytes:
        return bytes(n)
