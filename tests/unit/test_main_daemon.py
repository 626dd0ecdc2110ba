"""The kopf daemon of a migration (main.run_migration): what it leaves in the object's memo.

Aspects: while the runner runs, the memo holds it (the update handler wakes it through the
memo); once it is done, the memo no longer does — kopf keeps an object's memo as long as the
object exists, so a kept runner cost memory for every finished migration of a fleet
(hack/bench/fleet.py). The runner is our own seam, faked; kopf is not involved.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from dbmigrate import main


class QuickRunner:
    """A runner that finishes at once, after checking that the memo holds it meanwhile."""

    instances: list[QuickRunner] = []
    memo: kopf.Memo | None = None

    def __init__(self, platform: Any, settings: Any) -> None:
        self.wakeup = asyncio.Event()
        self.held_while_running = False
        QuickRunner.instances.append(self)

    async def run(self, stopped: Any, deleted: Any) -> None:
        assert QuickRunner.memo is not None
        self.held_while_running = QuickRunner.memo.get("runner") is self


class Stopped:
    """kopf's DaemonStopped as the daemon uses it: already stopped (the migration finished)."""

    reason = None

    async def wait(self) -> None:
        return None


async def test_a_finished_runner_is_not_kept_in_the_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(main, "MigrationRunner", QuickRunner)
    memo = kopf.Memo()
    QuickRunner.memo = memo
    await main.run_migration(namespace="ns", name="m", stopped=Stopped(), memo=memo)
    (runner,) = QuickRunner.instances
    assert runner.held_while_running
    assert "runner" not in memo
    main.wake_runner(memo=memo)  # a later update finds nothing to wake, and does not fail


def test_a_newer_runner_is_not_forgotten_for_an_older_one() -> None:
    memo = kopf.Memo()
    old, new = object(), object()
    memo["runner"] = new
    main.forget_runner(memo, old)  # type: ignore[arg-type]
    assert memo["runner"] is new
