"""The in-process "Jobs" of `dbmigrate apply` (reconcile.local) against a real PostgreSQL.

Aspects: a running backfill is an active Job of the migration; `stop_job` stops its workers
after their current batch (the rollback's StopJobs), it shows as deleting until they are gone,
and then no Job is active and no worker session is left in the database.
"""

from __future__ import annotations

import asyncio
import time

import psycopg

from dbmigrate.api.models import DatabaseMigrationSpec
from dbmigrate.core.jobs import build_backfill_job
from dbmigrate.reconcile.local import LocalPlatform

RESOURCE = {
    "apiVersion": "dbmigrate.io/v1alpha1",
    "kind": "DatabaseMigration",
    "metadata": {"name": "m", "namespace": "local", "uid": "local"},
    "spec": {
        "migrationId": "20240101000000_slow",
        "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
        "steps": [
            {
                "name": "fill",
                "backfill": {
                    "table": "t",
                    "set": "v = 1",
                    "where": "v IS NULL",
                    "batchSize": 10,
                    "maxBatchSize": 10,
                    "pause": "100ms",
                },
            }
        ],
    },
}


async def test_stop_job_stops_the_in_process_backfill(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v int)")
        conn.execute("INSERT INTO t (v) SELECT NULL FROM generate_series(1, 5000)")
    platform = LocalPlatform(RESOURCE, pg_dsn)
    try:
        spec = DatabaseMigrationSpec.model_validate(RESOURCE["spec"])
        job = build_backfill_job(RESOURCE, spec, spec.steps[0], "unused", 1)
        await platform.start_job(job)
        (active,) = await platform.active_jobs("local")
        assert (active.name, active.deleting) == (job["metadata"]["name"], False)

        await platform.stop_job(active)
        deadline = time.monotonic() + 30
        while await platform.active_jobs("local"):
            assert time.monotonic() < deadline, "the backfill workers did not stop"
            await asyncio.sleep(0.05)
        with psycopg.connect(pg_dsn) as conn:
            (left,) = conn.execute("SELECT count(*) FROM t WHERE v IS NULL").fetchone() or (0,)
        assert left > 0  # stopped mid-way, not run to the end
        state = await platform.job_state(job["metadata"]["name"], "local")
        assert state is not None
        assert not state.succeeded  # a stopped backfill is no success
    finally:
        platform.close()
