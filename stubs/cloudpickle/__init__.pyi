# The part of cloudpickle's API this package uses; cloudpickle ships no type information.
from collections.abc import Callable
from typing import Any, ClassVar

from _typeshed import ReadableBuffer

def dumps(obj: object, protocol: int | None = None, buffer_callback: Callable[[Any], object] | None = None) -> bytes: ...
def loads(
    data: ReadableBuffer, /, *, fix_imports: bool = True, encoding: str = "ASCII", errors: str = "strict", buffers: Any = ()
) -> Any: ...

class Pickler:
    dispatch_table: ClassVar[Any]
    def __init__(
        self, file: Any, protocol: int | None = None, buffer_callback: Callable[[Any], object] | None = None
    ) -> None: ...
    def dump(self, obj: object) -> None: ...
