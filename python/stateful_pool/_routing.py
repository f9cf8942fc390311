"""The routing options of one call (``SPool.options``): its priority, its sticky key and what it
does when that key's worker is busy. The core orders and places calls by them (``src/sched``)."""

from __future__ import annotations

from typing import Any

__all__ = ["Routing", "view_routing"]

Routing = tuple[int, Any, str]
"""``(priority, key, sticky)`` as ``_core.Engine.call`` and ``submit`` take them."""


def view_routing(current: Routing, priority: int | None, key: Any, sticky: str | None) -> Routing:
    """The routing of a view: the options given, checked now (not at the first call), and those
    not given kept from ``current``."""
    old_priority, old_key, old_sticky = current
    if priority is not None and (type(priority) is not int or not -(2**31) <= priority < 2**31):
        raise ValueError(f"priority must be an int in the 32-bit range, got {priority!r}")
    if sticky is not None and sticky not in ("wait", "spill"):
        raise ValueError(f'sticky must be "wait" or "spill", got {sticky!r}')
    if key is not None:
        hash(key)  # unhashable: TypeError now, not at the call
    return (
        old_priority if priority is None else priority,
        old_key if key is None else key,
        old_sticky if sticky is None else sticky,
    )
