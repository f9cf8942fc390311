"""Progress bars (tqdm) for loops, pool maps and lists of futures; they work inside worker
processes too (a worker's bar is drawn on the stderr it shares with the parent)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """A tqdm bar: ``for item in ProgressBar(items, desc="Processing"): ...``, or a manual one
    (``ProgressBar(total=n)`` with :meth:`update`). ``style`` (``"auto"``, ``"std"``,
    ``"notebook"``, ``"ray"``) is accepted for compatibility; tqdm picks the rendering."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str | None = None,
        unit: str = "it",
        style: str = "auto",
        disable: bool = False,
        color: str | None = None,
        **tqdm_kwargs: Any,
    ):
        from tqdm.auto import tqdm

        if color is not None:
            tqdm_kwargs.setdefault("colour", color.lower())

        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.style = style
        self._iterable = iterable
        self._bar = tqdm(total=total, desc=desc, unit=unit, disable=disable, **tqdm_kwargs)

    def __iter__(self) -> Iterator[Any]:
        if self._iterable is None:
            raise TypeError("this ProgressBar has no iterable")
        try:
            for item in self._iterable:
                yield item
                self._bar.update(1)
        finally:
            self.close()

    @property
    def n(self) -> int:
        """Steps done."""
        return int(self._bar.n)

    @property
    def total(self) -> int | None:
        """Steps expected, if known."""
        total = self._bar.total
        return None if total is None else int(total)

    def update(self, n: int = 1) -> None:
        """Advances the bar by ``n`` steps."""
        self._bar.update(n)

    def set_total(self, total: int | None) -> None:
        """Changes the number of steps expected."""
        self._bar.total = total
        self._bar.refresh()

    def success(self, desc: str | None = None) -> None:
        """Finishes the bar as a success (filled, green)."""
        self._finish(desc, "green", fill=True)

    def failure(self, desc: str | None = None) -> None:
        """Finishes the bar as a failure (red)."""
        self._finish(desc, "red", fill=False)

    def stop(self, desc: str | None = None) -> None:
        """Finishes the bar where it stands (grey); later updates are ignored."""
        self._finish(desc, "#808080", fill=False)

    def _finish(self, desc: str | None, colour: str, *, fill: bool) -> None:
        bar = self._bar
        if getattr(bar, "disable", False) or bar.n is None:
            bar.close()
            return
        if fill and bar.total is not None and bar.n < bar.total:
            bar.update(bar.total - bar.n)
        if desc is not None:
            bar.set_description(desc)
        bar.colour = colour
        bar.close()

    def set_description(self, desc: str) -> None:
        """Changes the label."""
        self._bar.set_description(desc)

    def close(self) -> None:
        """Finishes the bar (idempotent)."""
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
