"""The options dict `SPool` hands to `_core.Engine`: a key no option reads is an error."""

from __future__ import annotations

import pytest
from stateful_pool import SPool, _core
from workers import Echo


def test_an_unknown_option_key_is_refused_by_name() -> None:
    # A misspelt option (here `queue_size`) must not be silently dropped.
    with pytest.raises(ValueError, match=r"unknown engine option\(s\): \"queue_sise\""):
        _core.Engine({"mode": "sync", "queue_sise": 4})
    with pytest.raises(ValueError, match=r"\"colour\", \"size\""):
        _core.Engine({"mode": "sync", "size": 1, "colour": "red"})


def test_known_keys_pass_the_check_and_every_key_spool_passes_is_known() -> None:
    # Known keys go on to the options' own checks.
    with pytest.raises(ValueError, match="mode must be one of"):
        _core.Engine({"mode": "nope", "queue_size": 4})
    # SPool passes its full dict in every mode; each key must be one the engine reads.
    for mode in ("sync", "thread", "process"):
        with SPool(Echo, mode=mode) as pool:
            assert pool.spawn(tag=mode)["tag"] == mode
