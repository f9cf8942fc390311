"""Workers for the hostile soak test: each task may misbehave on purpose."""

from __future__ import annotations

import mmap
import os
import signal
import struct

from stateful_pool.concurry import Worker

# The segment's layout (src/shm/segment.rs, src/shm/ring.rs): a header page with magic,
# capacity and the closed word, then one 192-byte control block per ring (head, then tail on
# the next cache line); requests first, then replies.
_REPLIES_CTL = 64 + 192
_HEAD = 0


def _corrupt_reply_head() -> None:
    """Pushes the reply ring's head 1 TiB ahead, as a buggy or hostile worker could."""
    shm = mmap.mmap(5, 4096)
    at = _REPLIES_CTL + _HEAD
    (head,) = struct.unpack_from("<Q", shm, at)
    struct.pack_into("<Q", shm, at, head + (1 << 40))
    shm.close()


class Hostile(Worker):
    """``work(i, action)``: ``"ok"`` returns ``i``; ``"die_holding"`` SIGKILLs itself while holding
    a ``conn`` permit; ``"corrupt"`` scribbles on its reply ring before answering; ``"exit0"``
    exits with code 0 mid-task."""

    def work(self, i: int, action: str = "ok", ran: str | None = None) -> int:
        if ran is not None:
            # A marker per misbehaving task: a second run of one would find it (at most once).
            os.close(os.open(os.path.join(ran, str(i)), os.O_CREAT | os.O_EXCL))
        if action == "die_holding":
            with self.limits.acquire(requested={"conn": 1}):
                os.kill(os.getpid(), signal.SIGKILL)
        elif action == "corrupt":
            _corrupt_reply_head()
        elif action == "exit0":
            os._exit(0)
        elif action == "hold":
            with self.limits.acquire(requested={"conn": 1}):
                return i
        return i
