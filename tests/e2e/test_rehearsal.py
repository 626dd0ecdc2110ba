"""`spec.rehearsal` through the operator, on the local cluster with a real PostgreSQL.

Aspects: a migration whose down leaves an index behind fails its rehearsal before the start
(status.rehearsal Failed with the index in schemaDiff, Ready/Stalled reason RehearsalFailed, a
Warning event), and the real database is untouched: no history, no column, no index, no scratch
database left; a migration whose rehearsal passes goes on to Succeeded (status.rehearsal Passed
with its phases, RehearsalPassed event, the steps applied once on the real database); an
operator that dies mid-rehearsal (a failpoint, its scratch database filled) leaves no verdict,
and the next one rehearses again, dropping the leftover first, and goes on.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from dbmigrate_dev.cluster_client import Cluster
from tests.e2e.helpers import columns, condition, history, migration, wait_phase
from tests.e2e.helpers import status as status_of
from tests.fixtures.operator import OperatorProcess

UP = "ALTER TABLE users ADD COLUMN flag boolean;\nCREATE INDEX users_email_idx ON users (email);"


@pytest.fixture
def seed_db(pg_dsn: str, db_secret: Callable[[str, str], None]) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigserial PRIMARY KEY, email text)")
        conn.execute("INSERT INTO users (email) SELECT 'u' || g FROM generate_series(1, 500) g")
    db_secret("db", pg_dsn)
    return pg_dsn


def scratch_databases(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'dbmigrate\\_rehearsal\\_%'"
        ).fetchall()
    return [r[0] for r in rows]


def indexes(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'users'")
        return {r[0] for r in rows.fetchall()}


def test_rehearsal_catches_a_down_that_forgets_an_index(
    cluster: Cluster, namespace: str, seed_db: str, operator: OperatorProcess
) -> None:
    steps = [{"name": "expand", "sql": {"up": UP, "down": "ALTER TABLE users DROP COLUMN flag;"}}]
    cluster.apply(migration(namespace, steps, rehearsal={"sampleRows": 100}))
    st = wait_phase(cluster, namespace, "Failed", timeout=90)
    rehearsal = st["rehearsal"]
    assert rehearsal["result"] == "Failed"
    assert rehearsal["schemaDiff"] == [
        "index public.users_email_idx exists after down but not before"
    ]
    assert rehearsal["rowsCopied"] == 100
    assert [(s["phase"], s["step"]) for s in rehearsal["steps"]] == [
        ("up", "expand"),
        ("down", "expand"),
    ]
    assert rehearsal["database"].startswith("dbmigrate_rehearsal_")
    for type_ in ("Ready", "Stalled"):
        assert condition(st, type_)["reason"] == "RehearsalFailed"
    assert condition(st, "Stalled")["status"] == "True"
    assert "startedAt" not in st
    # The real database: as it was.
    assert history(seed_db) == []
    assert "flag" not in columns(seed_db)
    assert "users_email_idx" not in indexes(seed_db)
    assert scratch_databases(seed_db) == []
    describe = cluster.kubectl("describe", "dbm", "m", "-n", namespace).stdout
    assert "RehearsalFailed" in describe
    assert "Rehearsing" in describe


def test_rehearsal_passes_and_the_migration_goes_on(
    cluster: Cluster, namespace: str, seed_db: str, operator: OperatorProcess
) -> None:
    steps = [
        {
            "name": "expand",
            "sql": {
                "up": UP,
                "down": "DROP INDEX users_email_idx;\nALTER TABLE users DROP COLUMN flag;",
            },
        },
        {
            "name": "fill",
            "backfill": {"table": "users", "set": "flag = true", "where": "flag IS NULL"},
        },
    ]
    cluster.apply(migration(namespace, steps, rehearsal={"sampleRows": 50}))
    st = wait_phase(cluster, namespace, "Succeeded", timeout=120)
    rehearsal = st["rehearsal"]
    assert rehearsal["result"] == "Passed", rehearsal
    assert [(s["phase"], s["step"]) for s in rehearsal["steps"]] == [
        ("up", "expand"),
        ("up", "fill"),
        ("down", "fill"),
        ("down", "expand"),
        ("reapply", "expand"),
        ("reapply", "fill"),
    ]
    assert rehearsal["rowsCopied"] == 50
    assert condition(st, "Ready")["reason"] == "Succeeded"
    assert history(seed_db) == [("expand", "up"), ("fill", "up")]
    with psycopg.connect(seed_db) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE flag").fetchone() == (500,)
    assert scratch_databases(seed_db) == []
    describe = cluster.kubectl("describe", "dbm", "m", "-n", namespace).stdout
    assert "RehearsalPassed" in describe


def test_operator_dying_mid_rehearsal_rehearses_again_and_drops_the_leftover(
    cluster: Cluster, namespace: str, seed_db: str, operator: OperatorProcess
) -> None:
    operator.stop()
    operator.env = {"DBMIGRATE_FAILPOINTS": "rehearsal.scratch-filled=crash"}
    operator.start()
    steps = [
        {
            "name": "expand",
            "sql": {
                "up": UP,
                "down": "DROP INDEX users_email_idx;\nALTER TABLE users DROP COLUMN flag;",
            },
        }
    ]
    cluster.apply(migration(namespace, steps, rehearsal={"sampleRows": 20}))
    assert operator.proc is not None
    operator.proc.wait(60)  # the failpoint: exit 137 with the scratch database filled
    assert operator.proc.returncode == 137
    (leftover,) = scratch_databases(seed_db)
    assert "rehearsal" not in status_of(cluster, namespace)
    operator.env = {}
    operator.start()
    st = wait_phase(cluster, namespace, "Succeeded", timeout=120)
    assert st["rehearsal"]["result"] == "Passed"
    assert st["rehearsal"]["database"] == leftover
    assert scratch_databases(seed_db) == []
    assert history(seed_db) == [("expand", "up")]
