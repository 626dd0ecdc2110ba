"""The blocking guard's backfill episodes as the runner observes them (reconcile.observe).

Aspects: a backfill's checkpoint counting more cancelled batches than the step's status did
becomes one ApplicationBlocked message for the pass (what the last episode was, how many are
new, how many in all), the step's blockingEpisodes and the operator's counter move by the new
ones only; a pass that sees no new episode says nothing. The session is faked at its protocol
(`observe.DatabaseSession.read_progress`), our own seam.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from dbmigrate.api.models import (
    BackfillProgress,
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
    StepStatus,
)
from dbmigrate.reconcile import observe

LAST = "2 application queries waited 2.0s on the batch of 1000 after key [500]; cancelled, "


def spec() -> DatabaseMigrationSpec:
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20261201120000_guard",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "steps": [{"name": "fill", "backfill": {"table": "users", "set": "v = true"}}],
        }
    )


class Session:
    """What the runner's session answers for the step's checkpoint."""

    def __init__(self, episodes: int) -> None:
        self.episodes = episodes

    def read_progress(self, checkpoint: str, table: str, where: str | None) -> BackfillProgress:
        return BackfillProgress(
            rows_done=10, blocking_episodes=self.episodes, last_blocked=LAST + "retried at 500"
        )


def counted() -> float:
    value = REGISTRY.get_sample_value(
        "dbmigrate_blocked_application_episodes_total", {"kind": "backfill"}
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("before", "now", "message"),
    [
        pytest.param(
            0,
            1,
            f"step 'fill': {LAST}retried at 500 (1 batch(es) cancelled since the last look, "
            "1 in all)",
            id="first-episode",
        ),
        pytest.param(
            1,
            3,
            f"step 'fill': {LAST}retried at 500 (2 batch(es) cancelled since the last look, "
            "3 in all)",
            id="two-more",
        ),
        pytest.param(3, 3, None, id="nothing-new"),
    ],
)
async def test_new_episodes_become_one_event_and_count(
    before: int, now: int, message: str | None
) -> None:
    status = DatabaseMigrationStatus(
        phase="Progressing",
        steps=[StepStatus(name="fill", state="Running", blocking_episodes=before)],
    )
    start = counted()
    session: Any = Session(now)
    seen, blocked = await observe.record_backfill_progress(session, spec(), status, "dsn")
    step = seen.step("fill")
    assert step is not None
    assert step.blocking_episodes == now
    assert step.backfill is not None
    assert step.backfill.last_blocked == LAST + "retried at 500"
    assert blocked == (() if message is None else (message,))
    assert counted() - start == now - before
