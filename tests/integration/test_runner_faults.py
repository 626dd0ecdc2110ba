"""The runner under faults of its surroundings, against a real PostgreSQL.

The runner is the operator's (reconcile.runner); its platform is `dbmigrate apply`'s
(reconcile.local) with a fault put in: a status write the API server refuses, a ConfigMap edited
while the migration runs. Aspects: an API error between two steps keeps the database session and
so the migration lock (no other migration slips in between); SQL read from a ConfigMap is pinned
when the migration starts, and a later edit stops it with ChecksumMismatch before the edited step
runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from kubernetes.client.rest import ApiException

from dbmigrate.api import reasons
from dbmigrate.db import history as db_history
from dbmigrate.reconcile.local import LocalPlatform
from dbmigrate.reconcile.runner import MigrationRunner
from dbmigrate.settings import Settings

MIGRATION_ID = "20261201120000_faults"


def migration(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "dbmigrate.io/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": {"name": "faults", "namespace": "local"},
        "spec": {
            "migrationId": MIGRATION_ID,
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "target": {"deployment": "app"},
            "rollback": {"policy": "Manual"},
            "steps": steps,
        },
    }


class RefusingPlatform(LocalPlatform):
    """Refuses one status write, the first that `refuse` picks, as the API server would (500)."""

    def __init__(self, *args: Any, refuse: Callable[[dict[str, Any]], bool], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.refuse = refuse
        self.refused = asyncio.Event()

    async def write_status(self, patch: dict[str, Any]) -> None:
        if not self.refused.is_set() and self.refuse(patch):
            self.refused.set()
            raise ApiException(status=500, reason="Internal Server Error")
        await super().write_status(patch)


def history(conn: psycopg.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT step, direction FROM dbmigrate.history WHERE migration_id = %s ORDER BY id",
        (MIGRATION_ID,),
    ).fetchall()
    return [(str(step), str(direction)) for step, direction in rows]


def condition_reason(platform: LocalPlatform) -> str | None:
    for cond in (platform.resource.get("status") or {}).get("conditions") or []:
        if cond["type"] == reasons.READY:
            return str(cond["reason"])
    return None


class StatusWatch:
    """Wakes whoever waits on a condition of the status at every status write."""

    def __init__(self) -> None:
        self.written = asyncio.Event()

    def __call__(self, _status: dict[str, Any]) -> None:
        self.written.set()

    async def until(self, check: Callable[[], bool], within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            while not check():
                self.written.clear()
                await self.written.wait()


def step_one_succeeded(patch: dict[str, Any]) -> bool:
    return any(
        s["name"] == "one" and s.get("state") == "Succeeded" for s in patch.get("steps") or []
    )


async def test_an_api_error_between_two_steps_keeps_the_migration_lock(
    pg_dsn: str, pg_conn: psycopg.Connection
) -> None:
    steps = [
        {"name": "one", "sql": {"up": "CREATE TABLE one (id int)", "down": "DROP TABLE one"}},
        {"name": "two", "sql": {"up": "CREATE TABLE two (id int)", "down": "DROP TABLE two"}},
    ]
    watch = StatusWatch()
    platform = RefusingPlatform(
        migration(steps), pg_dsn, refuse=step_one_succeeded, on_status=watch
    )
    runner = MigrationRunner(platform, Settings())
    task = asyncio.create_task(runner.run(None))
    try:
        await asyncio.wait_for(platform.refused.wait(), 60)
        await watch.until(lambda: condition_reason(platform) == reasons.TRANSIENT_ERROR)
        # The runner now backs off before its next pass; another migration of this database
        # must not be able to take the lock in between.
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as other:
            slipped_in = await db_history.try_migration_lock(other)
        assert not slipped_in, "another session took the migration lock after the API error"
        await asyncio.wait_for(task, 60)
    finally:
        task.cancel()
    assert platform.resource["status"]["phase"] == "Succeeded"
    assert history(pg_conn) == [("one", "up"), ("two", "up")]


async def test_a_lock_taken_by_another_session_waits(pg_dsn: str) -> None:
    """The check above means something: the migration lock really excludes a second session."""
    steps = [{"name": "one", "sql": {"up": "SELECT 1", "down": "SELECT 1"}}]
    platform = LocalPlatform(migration(steps), pg_dsn)
    runner = MigrationRunner(platform, Settings())
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as holder:
        assert await db_history.try_migration_lock(holder)
        delay = await runner.reconcile_once()
        assert delay is not None
        assert condition_reason(platform) == reasons.ANOTHER_MIGRATION_RUNNING
    await runner.close()


@pytest.mark.parametrize(
    ("edit", "reason", "applied"),
    [
        pytest.param(
            "CREATE TABLE evil (id int)",
            reasons.CHECKSUM_MISMATCH,
            [("one", "up"), ("release", "up")],
            id="edited-mid-run-refused",
        ),
        pytest.param(
            None,
            reasons.SUCCEEDED,
            [("one", "up"), ("release", "up"), ("two", "up")],
            id="unedited-runs",
        ),
    ],
)
async def test_sql_from_a_config_map_is_pinned_when_the_migration_starts(
    pg_dsn: str,
    pg_conn: psycopg.Connection,
    edit: str | None,
    reason: str,
    applied: list[tuple[str, str]],
) -> None:
    steps = [
        {"name": "one", "sql": {"up": "CREATE TABLE one (id int)", "down": "DROP TABLE one"}},
        {"name": "release", "awaitRollout": {"image": "app:v2"}},
        {
            "name": "two",
            "sql": {
                "upFrom": {"configMapKeyRef": {"name": "sql", "key": "two.up.sql"}},
                "down": "DROP TABLE two",
            },
        },
    ]
    config_maps = {"sql": {"two.up.sql": "CREATE TABLE two (id int)"}}

    def while_rolling_out(step: str, image: str | None) -> None:
        if edit is not None:  # someone edits the ConfigMap while the new version rolls out
            config_maps["sql"]["two.up.sql"] = edit

    watch = StatusWatch()
    platform = LocalPlatform(
        migration(steps), pg_dsn, config_maps, on_status=watch, confirm=while_rolling_out
    )
    runner = MigrationRunner(platform, Settings())
    task = asyncio.create_task(runner.run(None))
    try:
        await watch.until(lambda: condition_reason(platform) == reason, 60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        platform.close()
    assert history(pg_conn) == applied
    tables = {
        str(r[0])
        for r in pg_conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    }
    assert "evil" not in tables
    assert ("two" in tables) is (edit is None)
    if edit is not None:
        status = platform.resource["status"]
        assert status["phase"] == "Failed"
        two = next(s for s in status["steps"] if s["name"] == "two")
        assert two["state"] == "Pending"
