# The part of cloudpickle's API this package uses; cloudpickle ships no type information.
from collections.abc import Callable
from typing import Any

from _typeshed import ReadableBuffer

def dumps(obj: object, protocol: int | None = None, buffer_callback: Callable[[Any], object] | None = None) -> bytes: ...
def loads(
    data: ReadableBuffer, /, *, fix_imports: bool = True, encoding: str = "ASCII", errors: str = "strict", buffers: Any = ()
) -> Any: ...
