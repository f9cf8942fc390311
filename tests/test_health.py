"""Health checks: with ``health_interval``, every idle worker's ``health()`` runs that often; a
check that returns anything but ``True``, raises, or hangs past ``health_timeout`` has its
worker replaced (counted in ``health_failures``); healthy workers are left alone."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from stateful_pool import SPool, SWorker


class Checked(SWorker):
    """Sick, or hung, when the flag file names this incarnation."""

    def spawn(self, flag: str) -> str:
        self.flag = Path(flag)
        self.token = uuid.uuid4().hex
        self.checks = 0
        return self.token

    def health(self) -> bool:
        self.checks += 1
        verdict = self.flag.read_text() if self.flag.exists() else ""
        if verdict == f"hang {self.token}":
            for _ in range(600):  # short sleeps: a thread worker is interrupted between them
                time.sleep(0.1)
        if verdict == f"raise {self.token}":
            raise RuntimeError("the connection is gone")
        return verdict != f"sick {self.token}"

    def execute(self, x: int) -> int:
        return x

    def whoami(self) -> tuple[str, int]:
        return self.token, self.checks


def worker(pool: SPool[Any]) -> Any:
    (w,) = pool.stats()["workers"]
    return w


def replaced(pool: SPool[Any], token: str) -> bool:
    return bool(worker(pool)["state"] == "idle" and pool.call("whoami")[0] != token)


@pytest.mark.parametrize("mode", ["process", "thread"])
@pytest.mark.parametrize("how", ["sick", "raise"])
def test_a_worker_whose_health_fails_is_replaced(tmp_path: Path, mode: str, how: str) -> None:
    flag = tmp_path / "flag"
    with SPool(Checked, mode=mode, health_interval=0.05) as pool:
        token = pool.spawn(str(flag))
        wait_until(lambda: pool.call("whoami")[1] >= 2, what="checks to run")
        assert worker(pool)["health_failures"] == 0
        flag.write_text(f"{how} {token}")
        wait_until(lambda: replaced(pool, token), what="the sick worker to be replaced")
        w = worker(pool)
        assert w["health_failures"] == 1 and w["restarts"] == 1
        assert "health check" in (w["last_error"] or ""), w["last_error"]
        # The replacement is healthy (the flag names the old one) and stays.
        new_token = pool.call("whoami")[0]
        wait_until(lambda: pool.call("whoami")[1] >= 3, what="the replacement's checks")
        assert pool.call("whoami")[0] == new_token and worker(pool)["health_failures"] == 1
        assert pool.execute(7) == 7


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_a_hung_health_check_is_replaced_after_its_timeout(tmp_path: Path, mode: str) -> None:
    flag = tmp_path / "flag"
    with SPool(Checked, mode=mode, health_interval=0.05, health_timeout=0.5) as pool:
        token = pool.spawn(str(flag))
        flag.write_text(f"hang {token}")
        started = time.monotonic()
        wait_until(lambda: worker(pool)["health_failures"] == 1, timeout=20, what="the hung check to time out")
        assert time.monotonic() - started >= 0.5
        wait_until(lambda: replaced(pool, token), timeout=20, what="the hung worker to be replaced")
        assert worker(pool)["restarts"] == 1
        assert pool.execute(3) == 3


def test_healthy_workers_are_never_replaced_and_checks_are_not_tasks(tmp_path: Path) -> None:
    with SPool(Checked, health_interval=0.02) as pool:
        tokens = {pool.spawn(str(tmp_path / "never")) for _ in range(2)}
        calls = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert pool.execute(calls) == calls
            calls += 1
        checks = [c for _, c in pool.broadcast("whoami")]
        assert all(c >= 5 for c in checks), checks
        stats = pool.stats()["workers"]
        assert all(w["restarts"] == 0 and w["health_failures"] == 0 for w in stats), stats
        assert {t for t, _ in pool.broadcast("whoami")} == tokens
        # Health checks and the two broadcasts are counted as what they are, not as tasks.
        assert sum(w["tasks_done"] for w in stats) == calls + 2


def test_health_options_are_checked() -> None:
    class NoHealth(SWorker):
        pass

    with pytest.raises(ValueError, match="needs a health"):
        SPool(NoHealth, health_interval=1)
    with pytest.raises(ValueError, match="health_interval"):
        SPool(Checked, health_interval=-1)
    with pytest.raises(ValueError, match="sync workers"):
        SPool(Checked, mode="sync", health_interval=1)
