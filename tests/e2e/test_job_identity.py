"""Which Jobs are a migration's own, on a real API server with the local pod executor.

Aspects: two migrations whose Job names collided under the old `<migration>-<step>` scheme
(`a-b` + `c`, `a` + `b-c`) each run a Job of their own and backfill their own table; a migration
re-created under the same name (new uid) does not adopt the old one's finished Job; a
migration whose name is longer than a label value (70 characters) runs its backfill Job; a
rollback while a slow backfill runs deletes the Job (foreground) and waits for its pods before
the down SQL runs: no backfill session is connected when the down runs, no Job or pod is left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import condition, history, migration, status, wait_phase
from tests.fixtures.operator import OperatorProcess

ROWS = 3000


def make_table(dsn: str, table: str, rows: int = ROWS) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, v int)")
        conn.execute(f"INSERT INTO {table} (v) SELECT NULL FROM generate_series(1, %s)", (rows,))


def filled(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE v = 1").fetchone()
    assert row is not None
    return int(row[0])


def fill(step: str, table: str, **overrides: Any) -> dict[str, Any]:
    backfill = {"table": table, "set": "v = 1", "where": "v IS NULL", "batchSize": 500}
    return {"name": step, "backfill": {**backfill, **overrides}}


@pytest.fixture
def db(pg_dsn: str, db_secret: Callable[[str, str], None], local_executor: Cluster) -> str:
    db_secret("db", pg_dsn)
    return pg_dsn


def uid_of(cluster: Cluster, namespace: str, name: str) -> str:
    return str(cluster.get("dbm", name, "-n", namespace)["metadata"]["uid"])


def job_of(cluster: Cluster, namespace: str, st: dict[str, Any]) -> dict[str, Any]:
    (step,) = st["steps"]
    return cluster.get("job", step["job"], "-n", namespace)  # type: ignore[no-any-return]


def test_migrations_whose_old_job_names_collide_each_run_their_own_job(
    cluster: Cluster, namespace: str, db: str, operator: OperatorProcess
) -> None:
    make_table(db, "one")
    make_table(db, "two")
    first = migration(namespace, [fill("c", "one")], name="a-b", migration_id="20240101000000_one")
    cluster.apply(first)
    st_first = wait_phase(cluster, namespace, "Succeeded", timeout=120, name="a-b")
    assert filled(db, "one") == ROWS

    second = migration(namespace, [fill("b-c", "two")], name="a", migration_id="20240102000000_two")
    cluster.apply(second)
    st_second = wait_phase(cluster, namespace, "Succeeded", timeout=120, name="a")
    assert filled(db, "two") == ROWS  # its own Job did the work: not the first one's
    job_first, job_second = (
        job_of(cluster, namespace, st_first),
        job_of(cluster, namespace, st_second),
    )
    assert job_first["metadata"]["name"] != job_second["metadata"]["name"]
    assert job_first["metadata"]["ownerReferences"][0]["uid"] == uid_of(cluster, namespace, "a-b")
    assert job_second["metadata"]["ownerReferences"][0]["uid"] == uid_of(cluster, namespace, "a")


def test_a_recreated_migration_does_not_adopt_the_old_ones_job(
    cluster: Cluster, namespace: str, db: str, operator: OperatorProcess
) -> None:
    make_table(db, "one")
    make_table(db, "two")
    cluster.apply(migration(namespace, [fill("fill", "one")], migration_id="20240101000000_one"))
    old = wait_phase(cluster, namespace, "Succeeded", timeout=120)
    old_job = old["steps"][0]["job"]
    # Orphaned, the old Job stays behind (as it does until the garbage collector gets to it).
    cluster.kubectl("delete", "dbm", "m", "-n", namespace, "--cascade=orphan", "--wait=true")
    assert cluster.get("job", old_job, "-n", namespace)["status"].get("succeeded") == 1

    cluster.apply(migration(namespace, [fill("fill", "two")], migration_id="20240102000000_two"))
    new = wait_phase(cluster, namespace, "Succeeded", timeout=120)
    assert filled(db, "two") == ROWS
    new_job = job_of(cluster, namespace, new)
    assert new_job["metadata"]["name"] != old_job
    assert new_job["metadata"]["ownerReferences"][0]["uid"] == uid_of(cluster, namespace, "m")


def test_a_name_longer_than_a_label_value_runs_its_backfill_job(
    cluster: Cluster, namespace: str, db: str, operator: OperatorProcess
) -> None:
    make_table(db, "one")
    name = "backfill-" + "x" * 61
    assert len(name) == 70
    cluster.apply(migration(namespace, [fill("fill", "one")], name=name))
    st = wait_phase(cluster, namespace, "Succeeded", timeout=120, name=name)
    assert filled(db, "one") == ROWS
    job = job_of(cluster, namespace, st)
    assert len(job["metadata"]["name"]) <= 63
    labels = job["metadata"]["labels"]
    assert all(len(value) <= 63 for value in labels.values())
    assert job["metadata"]["annotations"]["dbmigrate.io/migration"] == name
    assert history(db) == [("fill", "up")]


SLOW_STEPS: list[dict[str, Any]] = [
    {
        "name": "expand",
        "sql": {
            "up": "ALTER TABLE one ADD COLUMN w int",
            # What the down sees: backfill sessions still connected to this database.
            "down": (
                "INSERT INTO down_saw SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() "
                "AND application_name LIKE 'dbmigrate-backfill%'; "
                "ALTER TABLE one DROP COLUMN w"
            ),
        },
    },
    {
        "name": "fill",
        "backfill": {
            "table": "one",
            "set": "w = 1",
            "where": "w IS NULL",
            "batchSize": 20,
            "maxBatchSize": 20,
            "pause": "300ms",
        },
    },
]


def test_a_rollback_stops_the_running_backfill_job_before_reverting(
    cluster: Cluster, namespace: str, db: str, operator: OperatorProcess
) -> None:
    make_table(db, "one")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE down_saw (backfill_sessions int)")
    cluster.apply(migration(namespace, SLOW_STEPS))

    def backfilling() -> dict[str, Any] | None:
        for st in status(cluster, namespace).get("steps", []):
            if st["name"] == "fill" and (st.get("backfill") or {}).get("rowsDone", 0) > 0:
                return st
        return None

    job_name = wait_for(backfilling, 120, "the slow backfill to be under way")["job"]
    cluster.kubectl(
        "annotate", "dbm", "m", "dbmigrate.io/rollback=requested", "-n", namespace, "--overwrite"
    )
    st = wait_phase(cluster, namespace, "RolledBack", timeout=120)
    assert condition(st, "Ready")["reason"] == "RolledBack"
    assert history(db)[-1] == ("expand", "down")
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT backfill_sessions FROM down_saw").fetchall() == [(0,)]
    jobs = cluster.get("jobs", "-n", namespace)["items"]
    assert [j["metadata"]["name"] for j in jobs] == []  # job_name deleted, nothing else
    pods = cluster.get("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job_name}")
    assert pods["items"] == []
    events = cluster.kubectl("get", "events", "-n", namespace).stdout
    assert "StoppingJobs" in events
