"""What a task tree's run reports: one :class:`TaskResult` per task run, one :class:`RunReport`
per round, and :class:`TaskTreeError` when tasks failed."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Self

__all__ = ["RunReport", "TaskResult", "TaskTreeError"]


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """One run of one task. Times are ``time.time()`` seconds (the worker's, or the caller's
    when the task failed)."""

    #: the task's label
    name: str
    #: when it started
    started: float
    #: when it finished
    finished: float
    #: what ``task()`` returned (``None`` on error)
    value: Any = None
    #: the exception it raised (its worker traceback is ``__cause__``), or ``None``
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """Whether the task returned without raising."""
        return self.error is None


@dataclasses.dataclass(frozen=True)
class RunReport:
    """One round: one run of the whole tree, or in unbound mode, of one root branch."""

    #: 0 for the first round, 1 for the second...; counted per branch in unbound mode
    round: int
    #: in unbound mode, the index of the root ``Concurrent`` item that ran; else ``None``
    branch: int | None
    #: when the round started and finished (``time.time()``)
    started: float
    finished: float
    #: every task that ran, in the order they finished (tasks skipped or killed are absent)
    results: tuple[TaskResult, ...]
    #: ``False`` when ``kill()`` interrupted the round
    complete: bool = True

    @property
    def errors(self) -> list[Exception]:
        """The exceptions raised by this round's tasks."""
        return [r.error for r in self.results if r.error is not None]

    @property
    def ok(self) -> bool:
        """Whether the round completed with no task error."""
        return self.complete and not self.errors


class TaskTreeError(ExceptionGroup[Exception]):
    """Raised by :meth:`TaskTree.start` when tasks failed (with ``on_error="raise"``): every
    task error, in order, plus ``reports`` (every round that ran). Use ``except*`` to pick
    error types."""

    reports: list[RunReport]

    def __new__(cls, message: str, exceptions: Sequence[Exception], reports: Sequence[RunReport] = ()) -> Self:
        self = super().__new__(cls, message, exceptions)
        self.reports = list(reports)
        return self

    def __init__(self, message: str, exceptions: Sequence[Exception], reports: Sequence[RunReport] = ()):
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> TaskTreeError:  # type: ignore[override]
        # ``except*`` and split() build sub-groups through derive(): keep the reports on them.
        return TaskTreeError(self.message, excs, self.reports)
