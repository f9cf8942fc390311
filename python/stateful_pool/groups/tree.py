"""The pieces of a task tree: :class:`ProcTask` leaves in nested :class:`Sequential` and
:class:`Concurrent` groups."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["Concurrent", "Item", "ProcTask", "Sequential"]


class ProcTask:
    """One task of a tree: subclass it and define :meth:`task`.

    The instance is pickled (with cloudpickle, so classes from ``__main__`` work) and sent to a
    worker process each time it runs: changes to its attributes are not kept between runs. Keep
    shared or lasting state in the namespace.

    Args:
        name: the label of this task in reports (default: the class name).
    """

    def __init__(self, name: str | None = None):
        self.name = name

    @property
    def label(self) -> str:
        """The name used in reports."""
        return getattr(self, "name", None) or type(self).__name__

    def task(self, ns: Any) -> Any:
        """Does the work, in a worker process. ``ns`` is the tree's shared namespace; the return
        value (if it pickles) is kept in the run's :class:`TaskResult`."""
        raise NotImplementedError(f"{type(self).__name__} does not define task()")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label!r}>"


class _Group:
    """Common part of :class:`Sequential` and :class:`Concurrent`."""

    def __init__(self, items: Iterable[Item]):
        self.items: tuple[Item, ...] = tuple(items)
        for item in self.items:
            if not isinstance(item, (ProcTask, _Group)):
                raise TypeError(f"a group holds ProcTask, Sequential or Concurrent items, got {item!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.items)!r})"


class Sequential(_Group):
    """Runs its items one after another. If one fails, the rest of this group is skipped for
    that round (later items usually depend on earlier ones)."""


class Concurrent(_Group):
    """Runs its items at the same time, each on its own worker, and is done when all are done.
    A failing item does not stop its siblings: they run to the end and are reported."""


Item = ProcTask | Sequential | Concurrent


def width(item: Item) -> int:
    """How many tasks of ``item`` can run at once: the workers it needs."""
    if isinstance(item, ProcTask):
        return 1
    widths = [width(child) for child in item.items]
    if isinstance(item, Concurrent):
        return sum(widths)
    return max(widths, default=0)


def leaves(item: Item) -> Iterable[ProcTask]:
    if isinstance(item, ProcTask):
        yield item
    else:
        for child in item.items:
            yield from leaves(child)
