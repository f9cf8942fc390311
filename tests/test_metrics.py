"""``pool.metrics()``: Prometheus text exposition of a real pool's statistics, parsed back
with ``prometheus_client``'s own parser."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from conftest import wait_until
from stateful_pool import SPool, SWorker, WorkerCrashedError

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families


class Timed(SWorker):
    def execute(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    def crash(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def hold(self, gate: str) -> int:
        """Runs until the test creates ``gate``: busy for as long as the test needs."""
        while not os.path.exists(gate):
            time.sleep(0.005)
        return os.getpid()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pool"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_outcomes_queue_workers_and_run_times(tmp_path: Any) -> None:
    gate = str(tmp_path / "gate")
    with SPool(Timed) as pool:
        pool.spawn()
        pool.spawn()
        for f in [pool.submit_execute(0.02) for _ in range(6)]:
            f.result(timeout=30)
        pool.execute(0)  # a blocking call, through the direct lane
        with pytest.raises(WorkerCrashedError):
            pool.call("crash")
        # Held until the metrics are read, however slow the machine: two run, one waits.
        blocker = [pool.submit_call("hold", gate) for _ in range(3)]
        wait_until(lambda: pool.stats()["queued"] == 1, what="a task to queue")
        got: dict[Any, float] = samples(pool.metrics())
        assert got[("stateful_pool_tasks_total", (("outcome", "done"),))] == 7
        assert got[("stateful_pool_tasks_total", (("outcome", "failed"),))] == 1
        assert got[("stateful_pool_queue_depth", ())] == 1
        assert got[("stateful_pool_busy_workers", ())] == 2
        assert got[("stateful_pool_live_workers", ())] == 2
        assert got[("stateful_pool_restarts_total", ())] == 1
        assert got[("stateful_pool_task_run_seconds_count", ())] == 7
        # The six 20 ms tasks are past the 10 ms bucket, and all within 1 s.
        assert got[("stateful_pool_task_run_seconds_bucket", (("le", "0.01"),))] <= 1
        assert got[("stateful_pool_task_run_seconds_bucket", (("le", "1.0"),))] == 7
        assert 0.12 <= got[("stateful_pool_task_run_seconds_sum", ())] < 7
        open(gate, "w").close()
        for f in blocker:
            f.result(timeout=30)


def test_metrics_collector_serves_through_a_registry() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    with SPool(Timed) as pool:
        pool.spawn()
        pool.execute(0)
        registry = CollectorRegistry()
        registry.register(pool.metrics_collector())
        text = generate_latest(registry).decode()
        assert samples(text)[("stateful_pool_tasks_total", (("outcome", "done"),))] == 1
        assert 'pool="Timed"' in text
