"""The runner's loop (reconcile.runner.MigrationRunner.run): how passes follow each other.

A pass returns how long to sleep; kopf's update handler sets `wakeup` to cut the sleep short
(a spec change, the rollback annotation). A wake-up that arrives *during* a pass must not be
lost: the next pass follows at once instead of after the pass's delay (60 s for a Failed
migration waiting for a person) — the race an e2e test of the Manual rollback policy hit.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from dbmigrate.reconcile.runner import MigrationRunner, retry_delay
from dbmigrate.settings import Settings


def runner_with_passes(passes: list[Any]) -> tuple[MigrationRunner, list[float]]:
    """A runner whose passes are `passes` (callables taking the runner, returning the delay or
    None to finish); returns it and the start times of the passes."""
    platform: Any = SimpleNamespace(namespace="ns", name="m")
    runner = MigrationRunner(platform, Settings())
    started: list[float] = []
    queue = list(passes)

    async def one_pass() -> float | None:
        started.append(time.monotonic())
        return queue.pop(0)(runner)

    runner.reconcile_once = one_pass  # type: ignore[method-assign]
    return runner, started


def wake_during_the_pass(r: MigrationRunner) -> float:
    r.wakeup.set()  # what kopf's on.update handler does while the pass awaits the API
    return 60.0


def wait_a_minute(_: MigrationRunner) -> float:
    return 60.0


def done(_: MigrationRunner) -> None:
    return None


@pytest.mark.parametrize(
    ("passes", "prompt"),
    [
        pytest.param([wake_during_the_pass, done], True, id="wakeup-during-pass-is-kept"),
        pytest.param([wait_a_minute, done], False, id="no-wakeup-sleeps-the-delay"),
    ],
)
async def test_wakeup_during_a_pass(passes: list[Any], prompt: bool) -> None:
    runner, started = runner_with_passes(passes)
    stopped = asyncio.Event()
    task = asyncio.create_task(runner.run(stopped))
    await asyncio.wait({task}, timeout=1.0)
    if prompt:
        assert task.done(), "the wake-up during the first pass was lost"
        assert len(started) == 2
        assert started[1] - started[0] < 0.5
    else:
        assert not task.done(), "the runner did not sleep the pass's delay"
        assert len(started) == 1
        stopped.set()
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        pytest.param(1, 2.0, id="first"),
        pytest.param(3, 8.0, id="doubles"),
        pytest.param(4, 16.0, id="cap"),
        # after a 20 s outage (passes at 0, 2, 6, 14, 30 s) the next is at most 16 s away
        pytest.param(9, 16.0, id="stays-at-the-cap"),
    ],
)
def test_retry_delay_after_failed_passes(failures: int, delay: float) -> None:
    assert retry_delay(failures) == delay
