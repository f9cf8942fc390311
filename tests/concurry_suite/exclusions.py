"""THE list of concurry 0.13.2 tests the alias suite does not run: tests of concurry's
internals (its own future classes, internal limit-set classes, private helpers, ``_impl``
attributes, per-mode proxy classes), not of its public API. Keys are node-id prefixes relative
to the suite's ``tests/`` folder, values the reason."""

from __future__ import annotations

EXCLUDED: dict[str, str] = {}
