"""The protocol's codes are defined once, in Rust (``src/python/protocol.rs``): ``_core``
exports them, ``_protocol`` re-exports them, and no Python module defines its own."""

from __future__ import annotations

import pathlib
import re

from stateful_pool import SPool, _core, _protocol
from stateful_pool._protocol import decode_init, encode_init
from stateful_pool._serialize import by_value
from workers import Echo

PACKAGE = pathlib.Path(_protocol.__file__).parent
CODE_NAME = re.compile(r"^(STATUS|FRAME|REQUEST|READY)_[A-Z_]+$")


def test_protocol_codes_come_from_core() -> None:
    codes = [name for name in _protocol.__all__ if CODE_NAME.match(name)]
    assert len(codes) == 18  # REQUEST_COALESCED: a coalesced call of a batched method
    for name in codes:
        assert getattr(_protocol, name) == getattr(_core, name), name
    statuses = [getattr(_core, n) for n in codes if n.startswith("STATUS_")]
    frames = [getattr(_core, n) for n in codes if n.startswith("FRAME_")]
    assert len(set(statuses)) == len(statuses) and len(set(frames)) == len(frames), "codes are distinct"


def test_no_python_module_defines_a_code_of_its_own() -> None:
    # An assignment of a number to a code's name, e.g. `STATUS_OK = 0` or `_OK, _RAISED = 0, 1`.
    own = re.compile(r"^\s*((\w*_)?(OK|RAISED|ERROR|OBJECT|FATAL|CALL|CANCEL|INIT|STOP|READY)\b[\w, ]*)=\s*\d", re.M)
    offenders = [
        f"{path.relative_to(PACKAGE)}: {match.group(0).strip()}"
        for path in PACKAGE.rglob("*.py")
        for match in own.finditer(path.read_text())
    ]
    assert offenders == []


def test_init_payload_round_trips_in_both_forms() -> None:
    # In this process the class travels as it is; to another, by value with the caller's path.
    assert decode_init(encode_init(Echo, (1,), {"tag": "t"})) == (Echo, (1,), {"tag": "t"})
    worker_cls, args, kwargs = decode_init(encode_init(by_value(Echo), (2,), {"tag": "u"}))
    assert worker_cls.__qualname__ == "Echo" and (args, kwargs) == ((2,), {"tag": "u"})
    with SPool(Echo, mode="sync") as pool:
        assert pool.spawn(tag="s")["tag"] == "s", "every mode reads the same payload"
