"""The operator against a real API server with real controllers, driven by `kubectl apply`.

Aspects: a 3-step migration ends Succeeded with the printer columns, one history row per step
and events; SIGKILL mid-migration and a restart finish it without applying a step twice; a
step waits while the target Deployment is mid-rollout; runtime problems (missing Secret,
unreachable database, SQL error, checksum mismatch) end in the right condition reason and
change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest

from dbmigrate.core.lint.context import SMALL_TABLE_ROWS
from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import condition, history, migration, status, wait_phase
from tests.fixtures.operator import OperatorProcess


@pytest.fixture
def seed_db(pg_dsn: str, db_secret: Callable[[str, str], None]) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE users (id bigserial PRIMARY KEY, email text, "
            "email_confirmed_at timestamptz)"
        )
        conn.execute(
            "INSERT INTO users (email, email_confirmed_at) SELECT 'u' || g, "
            "CASE WHEN g % 2 = 0 THEN now() END FROM generate_series(1, 500) g"
        )
    db_secret("db", pg_dsn)
    return pg_dsn


SEED_STEPS = [
    {
        "name": "expand",
        "sql": {
            "up": "ALTER TABLE users ADD COLUMN email_verified boolean;",
            "down": "ALTER TABLE users DROP COLUMN IF EXISTS email_verified;",
        },
    },
    {
        "name": "index",
        "sql": {
            "up": "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_users_email_verified "
            "ON users (email_verified) WHERE email_verified;",
            "down": "DROP INDEX CONCURRENTLY IF EXISTS idx_users_email_verified;",
        },
    },
    {
        "name": "fill",
        "sql": {
            "up": "UPDATE users SET email_verified = (email_confirmed_at IS NOT NULL) "
            "WHERE email_verified IS NULL;"
        },
        "verify": "SELECT count(*) = 0 FROM users WHERE email_verified IS NULL",
    },
]


def test_three_step_migration_succeeds(
    cluster: Cluster, namespace: str, seed_db: str, operator: OperatorProcess
) -> None:
    cluster.apply(migration(namespace, SEED_STEPS))
    st = wait_phase(cluster, namespace, "Succeeded")
    assert st["progress"] == "3/3"
    assert [s["state"] for s in st["steps"]] == ["Succeeded"] * 3
    assert condition(st, "Ready")["status"] == "True"
    assert condition(st, "Ready")["reason"] == "Succeeded"
    assert "currentStep" not in st

    table = cluster.kubectl("get", "dbm", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "STEP", "PROGRESS", "AGE"]
    assert row.split()[:2] == ["m", "Succeeded"]
    assert "3/3" in row

    assert history(seed_db) == [("expand", "up"), ("index", "up"), ("fill", "up")]
    with psycopg.connect(seed_db) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE email_verified").fetchone() == (250,)
    describe = cluster.kubectl("describe", "dbm", "m", "-n", namespace).stdout
    for words in ("StepStarted", "StepSucceeded", "all 3 steps applied"):
        assert words in describe


def test_kill_mid_migration_resumes_without_applying_twice(
    cluster: Cluster, namespace: str, seed_db: str, operator: OperatorProcess
) -> None:
    with psycopg.connect(seed_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE applied (step text)")
    steps = [
        {
            "name": f"s{i}",
            "sql": {"up": f"INSERT INTO applied VALUES ('s{i}'); SELECT pg_sleep(1.5);"},
        }
        for i in range(1, 5)
    ]
    cluster.apply(migration(namespace, steps))
    # Kill it twice: once while a step's transaction is open, once between steps.
    for target in ("s2", "s3"):
        wait_for(
            lambda t=target: any(
                s["name"] == t and s["state"] == "Running"
                for s in status(cluster, namespace).get("steps", [])
            ),
            60,
            f"step {target} running",
            interval=0.05,
        )
        time.sleep(0.3)
        operator.kill()
        operator.start()
    st = wait_phase(cluster, namespace, "Succeeded", timeout=90)
    assert st["progress"] == "4/4"
    with psycopg.connect(seed_db) as conn:
        rows = conn.execute("SELECT step, count(*) FROM applied GROUP BY step ORDER BY 1")
        assert rows.fetchall() == [("s1", 1), ("s2", 1), ("s3", 1), ("s4", 1)]
    assert history(seed_db) == [(f"s{i}", "up") for i in range(1, 5)]


def test_step_waits_for_the_target_rollout(
    cluster: Cluster, namespace: str, seed_db: str, operator: OperatorProcess
) -> None:
    cluster.kubectl(
        "create", "deployment", "app", "--image=app:v1", "--replicas=2", "-n", namespace
    )
    cluster.kubectl("rollout", "status", "deploy/app", "-n", namespace, "--timeout=60s")
    # A paused rollout with a new template stays mid-rollout until resumed.
    cluster.kubectl("rollout", "pause", "deploy/app", "-n", namespace)
    cluster.kubectl("set", "image", "deploy/app", "app=app:v2", "-n", namespace)
    cluster.apply(migration(namespace, SEED_STEPS[:1], target={"deployment": "app"}))
    st = wait_phase(cluster, namespace, "Waiting")
    ready = condition(st, "Ready")
    assert ready["reason"] == "WaitingForRollout"
    assert "expand" in ready["message"]
    time.sleep(2)
    assert status(cluster, namespace)["phase"] == "Waiting"
    assert history(seed_db) == []
    cluster.kubectl("rollout", "resume", "deploy/app", "-n", namespace)
    st = wait_phase(cluster, namespace, "Succeeded")
    assert history(seed_db) == [("expand", "up")]


def test_missing_secret_is_reported_and_recovers(
    cluster: Cluster,
    namespace: str,
    pg_dsn: str,
    operator: OperatorProcess,
    db_secret: Callable[[str, str], None],
) -> None:
    cluster.apply(migration(namespace, [{"name": "a", "sql": {"up": "CREATE TABLE t (id int)"}}]))
    st = wait_for(
        lambda: (s := status(cluster, namespace)).get("conditions") and s, 30, "conditions"
    )
    stalled = condition(st, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "SecretNotFound")
    assert "'db'" in stalled["message"]
    db_secret("db", pg_dsn)
    wait_phase(cluster, namespace, "Succeeded", timeout=60)


def test_unreachable_database(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    db_secret: Callable[[str, str], None],
) -> None:
    secret_dsn = "postgresql://app:s3cret-pw@127.0.0.1:9/app?connect_timeout=2"
    db_secret("db", secret_dsn)
    cluster.apply(migration(namespace, [{"name": "a", "sql": {"up": "CREATE TABLE t (id int)"}}]))
    st = wait_for(
        lambda: (s := status(cluster, namespace)).get("conditions") and s, 30, "conditions"
    )
    ready = condition(st, "Ready")
    assert ready["reason"] == "DatabaseUnreachable"
    assert condition(st, "Reconciling")["status"] == "True"  # retried, not given up
    everything = cluster.kubectl("get", "dbm", "m", "-n", namespace, "-o", "yaml").stdout
    everything += cluster.kubectl("get", "events", "-n", namespace, "-o", "yaml").stdout
    everything += operator.log()
    assert "s3cret-pw" not in everything


def test_sql_error_fails_and_changes_nothing(
    cluster: Cluster, namespace: str, seed_db: str, operator: OperatorProcess
) -> None:
    steps = [
        {
            "name": "bad",
            "sql": {
                "up": "ALTER TABLE users ADD COLUMN x int; ALTER TABLE users ADD COLUMN x int;",
                "down": "ALTER TABLE users DROP COLUMN IF EXISTS x;",
            },
        }
    ]
    cluster.apply(migration(namespace, steps, rollback={"policy": "Manual"}))
    st = wait_phase(cluster, namespace, "Failed")
    step = st["steps"][0]
    assert step["state"] == "Failed"
    assert step["reason"] == "SqlError"
    assert "42701" in step["message"]
    assert condition(st, "Stalled")["status"] == "True"
    assert "dbmigrate.io/rollback" in condition(st, "Ready")["message"]
    with psycopg.connect(seed_db) as conn:
        cols = conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'users' AND column_name = 'x'"
        ).fetchone()
    assert cols == (0,)
    assert history(seed_db) == []


def test_checksum_mismatch_is_refused(
    cluster: Cluster, namespace: str, seed_db: str, operator: OperatorProcess
) -> None:
    first = migration(
        namespace, [{"name": "a", "sql": {"up": "CREATE TABLE t1 (id int)"}}], name="first"
    )
    cluster.apply(first)
    wait_phase(cluster, namespace, "Succeeded", name="first")
    # The same migration id with edited SQL: applied history disagrees with the resource.
    edited = migration(
        namespace, [{"name": "a", "sql": {"up": "CREATE TABLE t2 (id int)"}}], name="edited"
    )
    cluster.apply(edited)
    st = wait_for(
        lambda: (s := status(cluster, namespace, "edited")).get("conditions") and s,
        30,
        "conditions",
    )
    assert condition(st, "Stalled")["reason"] == "ChecksumMismatch"
    with psycopg.connect(seed_db) as conn:
        assert conn.execute("SELECT to_regclass('t2')").fetchone() == (None,)


def test_sql_from_a_config_map(
    cluster: Cluster, namespace: str, seed_db: str, operator: OperatorProcess
) -> None:
    steps = [
        {
            "name": "expand",
            "sql": {
                "upFrom": {"configMapKeyRef": {"name": "sql", "key": "up.sql"}},
                "downFrom": {"configMapKeyRef": {"name": "sql", "key": "down.sql"}},
            },
        }
    ]
    cluster.apply(migration(namespace, steps))
    st = wait_for(
        lambda: (s := status(cluster, namespace)).get("conditions") and s, 30, "conditions"
    )
    assert condition(st, "Stalled")["reason"] == "ConfigMapNotFound"
    assert history(seed_db) == []
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "sql", "namespace": namespace},
            "data": {
                "up.sql": "ALTER TABLE users ADD COLUMN from_cm int;",
                "down.sql": "ALTER TABLE users DROP COLUMN from_cm;",
            },
        }
    )
    wait_phase(cluster, namespace, "Succeeded")
    assert history(seed_db) == [("expand", "up")]


def test_lint_enforce_blocks_before_any_sql_and_warn_goes_on(
    cluster: Cluster, namespace: str, seed_db: str, operator: OperatorProcess
) -> None:
    steps = [
        {"name": "first", "sql": {"up": "ALTER TABLE users ADD COLUMN note text"}},
        {"name": "index", "sql": {"up": "CREATE INDEX users_email ON users (email)"}},
    ]
    # The index blocks because users is big: the lint weighs a lock by the table's statistics,
    # and 500 rows, once autovacuum has analyzed them, are small enough to be let through.
    with psycopg.connect(seed_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (email) SELECT 'big' || g FROM generate_series(1, %s) g",
            (SMALL_TABLE_ROWS * 2,),
        )
        conn.execute("ANALYZE users")
    blocked = migration(namespace, steps)
    blocked["spec"]["safety"]["lint"] = "Enforce"
    cluster.apply(blocked)
    st = wait_phase(cluster, namespace, "Failed")
    assert condition(st, "Stalled")["reason"] == "LintFailed"
    rules = {(f["step"], f["rule"], f["severity"]) for f in st["lint"]}
    assert ("index", "require-concurrent-index-creation", "error") in rules
    assert st["plan"]
    assert "startedAt" not in st
    assert history(seed_db) == []  # not even the first, harmless step ran
    # The same migration with Warn runs, and the finding stays visible.
    cluster.kubectl(
        "patch",
        "dbm",
        "m",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"safety": {"lint": "Warn"}}}',
    )
    st = wait_phase(cluster, namespace, "Succeeded")
    assert any(f["rule"] == "require-concurrent-index-creation" for f in st["lint"])
    assert history(seed_db) == [("first", "up"), ("index", "up")]
    assert "LintFindings" in cluster.kubectl("get", "events", "-n", namespace).stdout
