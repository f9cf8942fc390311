"""The base class of stateful workers."""

from __future__ import annotations

from typing import Any

__all__ = ["SWorker"]


class SWorker:
    """Subclass this and define ``spawn`` (expensive setup, once per worker process) and
    ``execute`` (the work, many times). Every other public method can be called too, with
    :meth:`SPool.call` / :meth:`SPool.submit_call` / :meth:`SPool.broadcast`.

    An instance lives in its own worker process; attributes set in ``spawn`` persist across
    calls. The class is sent to the workers with cloudpickle, so classes defined in a script's
    ``__main__`` or in a notebook work.
    """

    def spawn(self, *args: Any, **kwargs: Any) -> Any:
        """Sets the worker up; its return value is returned by :meth:`SPool.spawn`."""
        return None

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Runs one task."""
        raise NotImplementedError(f"{type(self).__name__} does not define execute()")
