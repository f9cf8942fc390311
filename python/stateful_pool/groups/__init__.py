"""Task trees: :class:`ProcTask` objects in nested :class:`Sequential` and :class:`Concurrent`
groups, run in rounds by a :class:`TaskTree` on :class:`~stateful_pool.SPool` worker processes,
sharing one namespace.

- ``tree``: the pieces of a tree (tasks and groups);
- ``namespace``: the shared namespace and its lock, held in the caller's process and served to
  the tasks over their workers' own channels;
- ``report``: what a run reports;
- ``runner``: :class:`TaskTree`, which runs the rounds from the pool's task completions.
"""

from .namespace import Namespace, SharedNamespace
from .report import RunReport, TaskResult, TaskTreeError
from .runner import TaskTree
from .tree import Concurrent, ProcTask, Sequential

__all__ = [
    "Concurrent",
    "Namespace",
    "ProcTask",
    "RunReport",
    "Sequential",
    "SharedNamespace",
    "TaskResult",
    "TaskTree",
    "TaskTreeError",
]
