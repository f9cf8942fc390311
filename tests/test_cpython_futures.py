"""CPython's own ``concurrent.futures`` tests, run against the pool.

``TaskWorker.options(...).init()`` is documented as a real :class:`concurrent.futures.Executor`
and pool futures as real :class:`concurrent.futures.Future`: so the standard library's test
classes (``Lib/test/test_concurrent_futures.py`` of CPython 3.11) run here with the pool as
their executor, in process, thread and asyncio modes, and the ``wait``/``as_completed``/
``Future`` tests run against :meth:`SPool.submit_execute` futures too.

Where is the suite? The interpreter's own ``test`` package when it has it; else the directory
named by ``$STATEFUL_POOL_CPYTHON_TESTS`` (holding ``test_concurrent_futures.py``); else
``~/.cache/stateful_pool/cpython-tests/usr/lib/python3.11/test``, which CI fills with::

    apt-get download libpython3.11-testsuite && dpkg -x libpython3.11-testsuite_*.deb \\
        ~/.cache/stateful_pool/cpython-tests

The module is loaded from that file (``test.support`` comes from the interpreter; nothing of the
standard library is shadowed); without it, the whole module is skipped with that recipe.

Skipped, each with its reason: tests of the stdlib's internals (``_processes``, ``_threads``,
``mp_context``, start methods, ``max_tasks_per_child`` on a ``multiprocessing`` context). Tests
that run a script with ``from concurrent.futures import <executor>`` are rewritten below with the
same script and assertions over this pool.

Deliberate deviations (named in ``DEVIATIONS``; each is rewritten in ``TestProcessDeadlock``
to assert what the pool does instead):

* ``test_error_at_task_unpickle``: an argument the worker cannot unpickle fails its task with
  the real ``UnpicklingError``; the stdlib raises ``BrokenProcessPool`` (its pool is broken, ours
  is not: the worker keeps serving).
* ``test_exit_at_task_unpickle``: likewise, an argument whose unpickling raises ``SystemExit``
  fails its task with that ``SystemExit`` and the worker keeps serving.

None in asyncio mode: a ``TaskWorker``'s plain functions run in threads of the worker's event
loop (``run_in_executor``), so blocking calls overlap there as in a thread pool.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import pickle
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import child_pids
from stateful_pool import SPool, SWorker
from stateful_pool._futures import PoolFuture
from stateful_pool.concurry import TaskWorker

_CACHE = Path.home() / ".cache" / "stateful_pool" / "cpython-tests" / "usr" / "lib" / "python3.11" / "test"
_RECIPE = (
    "CPython's test_concurrent_futures.py is not available: run `apt-get download libpython3.11-testsuite && "
    f"dpkg -x libpython3.11-testsuite_*.deb {_CACHE.parents[3]}` or set $STATEFUL_POOL_CPYTHON_TESTS"
)


def _find_suite() -> Path | None:
    import test

    candidates = [Path(test.__file__).parent]
    if os.environ.get("STATEFUL_POOL_CPYTHON_TESTS"):
        candidates.insert(0, Path(os.environ["STATEFUL_POOL_CPYTHON_TESTS"]))
    candidates.append(_CACHE)
    for directory in candidates:
        if (directory / "test_concurrent_futures.py").is_file():
            return directory / "test_concurrent_futures.py"
    return None


def _load_suite() -> Any:
    """Imports the suite as the top-level module ``test_concurrent_futures``, from a copy in a
    directory of its own that is also put on the workers' ``PYTHONPATH``: its functions and
    classes then travel by reference, as with a ``ProcessPoolExecutor``, and nothing else of the
    suite's directory can shadow a module."""
    path = _find_suite()
    if path is None:
        pytest.skip(_RECIPE, allow_module_level=True)
    name = "test_concurrent_futures"
    if name in sys.modules:
        return sys.modules[name]
    home = Path(tempfile.mkdtemp(prefix="cpython-futures-"))
    atexit.register(shutil.rmtree, home, True)
    shutil.copyfile(path, home / f"{name}.py")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(home), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(home))
    return importlib.import_module(name)


cf = _load_suite()

# Tests where the pool deliberately differs (see the module docstring).
DEVIATIONS = {
    "test_error_at_task_unpickle": "an argument the worker cannot unpickle raises UnpicklingError; not broken",
    "test_exit_at_task_unpickle": "an argument whose unpickling raises SystemExit raises it; not broken",
}

_INTERNALS = "tests the stdlib's internals"
SKIPPED = {
    "test_processes_terminate": f"{_INTERNALS} (_processes)",
    "test_threads_terminate": f"{_INTERNALS} (_threads)",
    "test_saturation": f"{_INTERNALS} (_processes)",
    "test_idle_process_reuse_one": f"{_INTERNALS} (_processes)",
    "test_idle_process_reuse_multiple": f"{_INTERNALS} (_processes)",
    "test_max_tasks_per_child": f"{_INTERNALS} (mp_context, _processes)",
    "test_max_tasks_per_child_defaults_to_spawn_context": f"{_INTERNALS} (mp_context)",
    "test_max_tasks_early_shutdown": f"{_INTERNALS} (mp_context start methods)",
    "test_ressources_gced_in_workers": f"{_INTERNALS} (a multiprocessing Manager of the mp_context)",
    "test_killed_child": f"{_INTERNALS} (_processes; and a killed worker is restarted, the pool is not broken)",
    "test_max_workers_too_large": "Windows only",
    "test_shutdown_deadlock_pickle": f"{_INTERNALS} (_executor_manager_thread)",
    "test_context_manager_shutdown": f"{_INTERNALS} (_processes/_threads)",
    "test_del_shutdown": f"{_INTERNALS} (_processes/_threads)",
    "test_shutdown_no_wait": f"{_INTERNALS} (_processes/_threads)",
    "test_hang_global_shutdown_lock": f"{_INTERNALS} (fork start method)",
    "test_default_workers": f"{_INTERNALS} (_max_workers)",
    "test_idle_thread_reuse": f"{_INTERNALS} (_threads)",
    "test_thread_names_assigned": f"{_INTERNALS} (thread names)",
    "test_thread_names_default": f"{_INTERNALS} (thread names)",
    "test_multiple_set_result": "matches the repr of the class Future by name (PoolFuture's repr names itself)",
    "test_multiple_set_exception": "matches the repr of the class Future by name (PoolFuture's repr names itself)",
}


class _StderrHandler(logging.Handler):
    """Writes ``concurrent.futures``' log to the current ``sys.stderr``, where the stdlib's
    tests look for it (under pytest, its logging plugin takes the records instead)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


@pytest.fixture(autouse=True)
def _futures_log_to_stderr() -> Any:
    handler = _StderrHandler()
    logger = logging.getLogger("concurrent.futures")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)


def _executor_factory(mode: str) -> Any:
    def make(max_workers: int | None = None, mp_context: Any = None, **kwargs: Any) -> Any:
        assert mp_context is None, "the pool has no multiprocessing context"
        if mode == "asyncio" and max_workers is not None and max_workers > 0:
            # One event loop runs every call: max_workers calls at once are its concurrency.
            kwargs["max_concurrency"] = max_workers
            max_workers = 1
        return TaskWorker.options(mode=mode, max_workers=max_workers, **kwargs).init()

    make.__name__ = f"TaskPool_{mode}"
    return make


class _NoLeaksMixin(cf.ExecutorMixin):  # type: ignore[misc,name-defined]
    """Skips the tests of the stdlib's internals; nothing may outlive a test."""

    def get_context(self) -> None:
        return None

    def setUp(self) -> None:
        name = self._testMethodName
        if name in SKIPPED:
            self.skipTest(SKIPPED[name])
        self._threads_before = set(threading.enumerate())
        self._children_before = child_pids()
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        deadline = time.monotonic() + 30
        while True:
            threads = [t for t in set(threading.enumerate()) - self._threads_before if t.is_alive()]
            children = child_pids() - self._children_before
            if not threads and not children:
                break
            if time.monotonic() > deadline:
                self.fail(f"left behind: threads {threads}, processes {children}")
            time.sleep(0.05)


class _PoolMixin(_NoLeaksMixin):
    """The executor of every test is the pool."""

    mode = "process"

    # Rewritten from ExecutorShutdownTest: the same scripts over this pool.
    def _script(self, body: str) -> tuple[int, bytes, bytes]:
        from test.support.script_helper import assert_python_ok

        head = f"""if 1:
            import sys, time
            from stateful_pool.concurry import TaskWorker
            def sleep_and_print(t, msg):
                time.sleep(t)
                print(msg)
                sys.stdout.flush()
            def make(n):
                if {self.mode!r} == "asyncio":
                    return TaskWorker.options(mode="asyncio", max_workers=1, max_concurrency=n).init()
                return TaskWorker.options(mode={self.mode!r}, max_workers=n).init()
        """
        code = textwrap.dedent(head) + textwrap.dedent(body)
        return assert_python_ok("-c", code, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "python"))  # type: ignore[no-any-return]

    def test_interpreter_shutdown(self) -> None:
        _, out, err = self._script(
            """
            if __name__ == "__main__":
                t = make(5)
                t.submit(sleep_and_print, 1.0, "apple")
            """
        )
        self.assertFalse(err)
        self.assertEqual(out.strip(), b"apple")

    def test_submit_after_interpreter_shutdown(self) -> None:
        _, out, err = self._script(
            """
            import atexit
            @atexit.register
            def run_last():
                try:
                    t.submit(id, None)
                except RuntimeError:
                    print("runtime-error")
                    raise
            if __name__ == "__main__":
                t = make(5)
                t.submit(id, 42).result()
            """
        )
        # The pool's PoolShutDownError is a RuntimeError (the script caught it as one).
        self.assertIn("PoolShutDownError: cannot schedule new futures", err.decode())
        self.assertEqual(out.strip(), b"runtime-error")

    def test_hang_gh83386(self) -> None:
        _, out, err = self._script(
            """
            if __name__ == "__main__":
                t = make(3)
                t.submit(sleep_and_print, 1.0, "apple")
                t.shutdown(wait=False)
            """
        )
        self.assertFalse(err)
        self.assertEqual(out.strip(), b"apple")

    def test_cancel_futures_wait_false(self) -> None:
        _, out, err = self._script(
            """
            if __name__ == "__main__":
                t = make(5)
                t.submit(sleep_and_print, .1, "apple")
                t.shutdown(wait=False, cancel_futures=True)
            """
        )
        self.assertFalse(err)
        self.assertEqual(out.strip(), b"apple")

    # From ThreadPoolExecutorTest/ProcessPoolExecutorTest: behaviour, not internals. (The two
    # thread-only ones share closures with the caller: see _InProcessMixin.)
    test_map_chunksize = cf.ProcessPoolExecutorTest.test_map_chunksize
    test_traceback = cf.ProcessPoolExecutorTest.test_traceback
    _test_traceback = cf.ProcessPoolExecutorTest._test_traceback


class _InProcessMixin(_PoolMixin):
    """ThreadPoolExecutor's tests of map that share a closure's state with the caller: they
    hold where workers share the caller's memory (process mode's equivalents are in
    test_executor_contract.py)."""

    test_map_submits_without_iteration = cf.ThreadPoolExecutorTest.test_map_submits_without_iteration
    test_executor_map_current_future_cancel = cf.ThreadPoolExecutorTest.test_executor_map_current_future_cancel


_MODES = ("process", "thread", "asyncio")
_SUITES: list[tuple[str, tuple[type, ...]]] = [
    ("Shutdown", (cf.ExecutorShutdownTest,)),
    ("Wait", (cf.WaitTests,)),
    ("AsCompleted", (cf.AsCompletedTests,)),
    ("Executor", (cf.ExecutorTest,)),
]

for _mode in _MODES:
    for _label, _bases in _SUITES:
        _name = f"Test{_mode.capitalize()}{_label}"
        globals()[_name] = type(
            _name,
            (_PoolMixin if _mode == "process" else _InProcessMixin, *_bases, cf.BaseTestCase),
            {"mode": _mode, "executor_type": staticmethod(_executor_factory(_mode)), "__module__": __name__},
        )


class TestProcessDeadlock(_PoolMixin, cf.ExecutorDeadlockTest, cf.BaseTestCase):  # type: ignore[misc,name-defined]
    """Crashes and bad pickles in every place (only where workers are processes)."""

    mode = "process"
    executor_type = staticmethod(_executor_factory("process"))

    def test_error_at_task_unpickle(self) -> None:
        # DEVIATION (stdlib: BrokenProcessPool): the task fails with the worker's error.
        self._check_crash(pickle.UnpicklingError, id, cf.ErrorAtUnpickle())

    def test_exit_at_task_unpickle(self) -> None:
        # DEVIATION (stdlib: BrokenProcessPool): the task fails with the worker's SystemExit.
        self._check_crash(SystemExit, id, cf.ExitAtUnpickle())


# -- SPool.submit_execute futures ------------------------------------------------------------


class CallWorker(SWorker):
    """Runs the function it is given: ``execute(fn, *args, **kwargs)``."""

    def execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


class SPoolExecutor:
    """Just enough executor over :meth:`SPool.submit_execute` for the wait/as_completed tests."""

    def __init__(self, max_workers: int = 1, mp_context: Any = None):
        self.pool: SPool[CallWorker] = SPool(CallWorker)
        for future in [self.pool.submit_spawn() for _ in range(max_workers)]:
            future.result()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> PoolFuture[Any]:
        return self.pool.submit_execute(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait)


class _SPoolMixin(_NoLeaksMixin):
    executor_type = SPoolExecutor


class TestSPoolWait(_SPoolMixin, cf.WaitTests, cf.BaseTestCase):  # type: ignore[misc]
    pass


class TestSPoolAsCompleted(_SPoolMixin, cf.AsCompletedTests, cf.BaseTestCase):  # type: ignore[misc]
    pass


class TestPoolFutureBasics(cf.FutureTests):  # type: ignore[misc,name-defined]
    """The stdlib's ``Future`` tests on the pool's future class."""

    def setUp(self) -> None:
        if self._testMethodName in SKIPPED:
            self.skipTest(SKIPPED[self._testMethodName])
        super().setUp()
        patch = contextlib.ExitStack()
        saved = cf.Future
        cf.Future = PoolFuture
        patch.callback(setattr, cf, "Future", saved)
        self.addCleanup(patch.close)
