"""The base class of stateful workers."""

from __future__ import annotations

from typing import Any

__all__ = ["SWorker", "check_method_name"]


def check_method_name(name: object) -> str:
    """``name`` if a caller may call a method by it: an exact ``str`` (a subclass could lie
    about its own value, overriding ``startswith`` or ``__eq__``) not starting with ``_``.
    Raises :class:`TypeError` or :class:`AttributeError` otherwise. Checked by the caller and
    again where the call runs, whatever the mode."""
    if type(name) is not str:
        raise TypeError(f"a method name must be a str, got {type(name).__name__}")
    if name.startswith("_"):
        raise AttributeError(f"{name!r} is private: only public methods can be called")
    return name


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
