"""conftest for concurry 0.13.2's test suite run against ``stateful_pool.concurry``
(copied over the suite's own conftest by ``scripts/concurry-suite``): the ``concurry`` import
alias, the ``worker_mode``/``pool_mode`` fixtures, and the exclusions of ``exclusions.py``."""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import pytest

sys.path.insert(0, os.environ["CONCURRY_SUITE_HARNESS"])
import alias
from exclusions import excluded

alias.install()

_WORKER_MODES = ["sync", "thread", "process", "asyncio"] + (["ray"] if alias.RAY else [])
_POOL_MODES = ["thread", "process"] + (["ray"] if alias.RAY else [])
WORKER_MODES = list(_WORKER_MODES)  # imported by some of concurry's tests
POOL_MODES = list(_POOL_MODES)


def pytest_configure(config: Any) -> None:
    for marker in ("slow", "performance"):  # marks concurry's tests use
        config.addinivalue_line("markers", f"{marker}: a mark of concurry's suite")


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--execution-modes", action="store", default=None)


def _requested(config: Any) -> list[str] | None:
    raw = config.getoption("execution_modes")
    return None if raw is None else [t.strip() for t in raw.split(",") if t.strip()]


def _already_parametrized(metafunc: Any, name: str) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else ""
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc: Any) -> None:
    requested = _requested(metafunc.config)
    if "worker_mode" in metafunc.fixturenames and not _already_parametrized(metafunc, "worker_mode"):
        modes = [m for m in _WORKER_MODES if requested is None or m in requested]
        metafunc.parametrize("worker_mode", modes)
    if "pool_mode" in metafunc.fixturenames and not _already_parametrized(metafunc, "pool_mode"):
        modes = [m for m in _POOL_MODES if requested is None or m in requested]
        if not modes:
            pytest.skip("no pool-capable mode requested")
        metafunc.parametrize("pool_mode", modes)


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    if os.environ.get("CONCURRY_SUITE_ALL") == "1":  # list every test, exclusions included
        return
    keep, drop = [], []
    for item in items:
        rel = item.nodeid.split("tests/", 1)[-1]
        (drop if excluded(rel) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def worker_mode(request: Any) -> Any:
    return request.param


@pytest.fixture
def pool_mode(request: Any) -> Any:
    return request.param


@pytest.fixture
def requires_ray_mode(request: Any) -> None:
    if not alias.RAY:
        pytest.skip("Ray mode not requested (scripts/concurry-suite --ray)")
    import ray

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, num_cpus=2)


@pytest.fixture(scope="session")
def initialize_ray() -> None:
    """concurry's session fixture some tests name; Ray starts in ``_ray_session`` with --ray."""


@pytest.fixture(scope="session", autouse=True)
def _ray_session() -> Any:
    if alias.RAY:
        import ray

        ray.init(ignore_reinit_error=True, num_cpus=2)
    yield
    if alias.RAY:
        import ray

        ray.shutdown()


@pytest.fixture(autouse=True)
def _collect_garbage() -> Any:
    yield
    gc.collect()
