"""The guide's "Model Inheritance with Pools" examples: pydantic BaseModel workers and
`@validate_call` methods, in thread and process mode (the Ray variants are in test_ray.py)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError, validate_call
from stateful_pool import Worker


class TypedWorker(Worker, BaseModel):
    name: str
    multiplier: int = Field(default=2, ge=1)

    def process(self, x: int) -> int:
        return x * self.multiplier


class PydanticValidatedWorker(Worker):
    @validate_call
    def __init__(self, base: int):
        self.base = base
        self.call_count = 0

    @validate_call
    def compute(self, x: int, y: int = 0) -> int:
        self.call_count += 1
        return (x + y) * self.base


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_basemodel_worker_pool(mode: str) -> None:
    pool = TypedWorker.options(mode=mode, max_workers=2).init(name="processor", multiplier=3)
    try:
        assert [f.result(timeout=30) for f in [pool.process(i) for i in range(10)]] == [3 * i for i in range(10)]
    finally:
        pool.stop()


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_validate_call_worker_pool_coerces_arguments(mode: str) -> None:
    pool = PydanticValidatedWorker.options(mode=mode, max_workers=2).init(base=3)
    try:
        futures = [pool.compute("10", y=str(i)) for i in range(5)]
        assert [f.result(timeout=30) for f in futures] == [30, 33, 36, 39, 42]
        with pytest.raises(ValidationError):
            pool.compute("not a number").result(timeout=30)
    finally:
        pool.stop()


def test_invalid_model_configuration_fails_at_init() -> None:
    with pytest.raises(ValidationError):
        pool = TypedWorker.options(mode="thread", max_workers=1).init(name="x", multiplier=0)
        pool.stop()
