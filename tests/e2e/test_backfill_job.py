"""Backfill steps as Kubernetes Jobs, run for real by the local pod executor.

Aspects: a migration with a backfill step on 200 000 rows ends Succeeded with progress in
status while it runs; the Job is owned by the DatabaseMigration, hardened, and gets the DSN only
through secretKeyRef; deleting the Job's pod mid-run kills the worker, the Job controller starts
another pod and it resumes from the checkpoint: the result equals one UPDATE of all rows;
`parallelism: auto` on 1.2 M rows runs an Indexed Job of 2 workers (said in the step's event
and status), each with about half the rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import history, migration, status, wait_phase
from tests.fixtures.operator import OperatorProcess

ROWS = 200_000


@pytest.fixture
def big_table(pg_dsn: str, db_secret: Callable[[str, str], None], local_executor: Cluster) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE users (id bigserial PRIMARY KEY, email text, "
            "email_confirmed_at timestamptz, email_verified boolean)"
        )
        conn.execute(
            "INSERT INTO users (email, email_confirmed_at) SELECT 'u' || g, "
            "CASE WHEN g %% 3 = 0 THEN now() END FROM generate_series(1, %s) g",
            (ROWS,),
        )
        conn.execute("VACUUM ANALYZE users")
    db_secret("db", pg_dsn)
    return pg_dsn


def backfill_steps(**overrides: Any) -> list[dict[str, Any]]:
    backfill = {
        "table": "users",
        "set": "email_verified = (email_confirmed_at IS NOT NULL)",
        "where": "email_verified IS NULL",
        "batchSize": 500,
        "maxBatchSize": 2000,
        "targetBatchDuration": "50ms",
        "pause": "20ms",  # slow enough to watch and to kill mid-run
        **overrides,
    }
    return [{"name": "backfill", "backfill": backfill}]


def expected_counts(dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE email_verified), "
            "count(*) FILTER (WHERE NOT email_verified), "
            "count(*) FILTER (WHERE email_verified IS DISTINCT FROM "
            "(email_confirmed_at IS NOT NULL)) FROM users"
        ).fetchone()
    assert row is not None
    return row  # type: ignore[return-value]


def running_backfill(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    for st in status(cluster, namespace).get("steps", []):
        bf = st.get("backfill") or {}
        if st["name"] == "backfill" and st["state"] == "Running" and bf.get("rowsDone", 0) > 0:
            return st
    return None


def test_backfill_job_with_progress(
    cluster: Cluster, namespace: str, big_table: str, operator: OperatorProcess
) -> None:
    cluster.apply(migration(namespace, backfill_steps()))
    st = wait_for(lambda: running_backfill(cluster, namespace), 120, "backfill progress")
    progress = st["backfill"]
    assert 0 < progress["rowsDone"] < ROWS
    assert progress["rowsEstimated"] >= progress["rowsDone"]
    assert 0 <= progress["percent"] < 100
    job = cluster.get("job", st["job"], "-n", namespace)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "DatabaseMigration"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {
        "name": "DBMIGRATE_DSN",
        "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}},
    } in container["env"]
    assert "dbmigrate-local-only" not in str(container["args"])
    final = wait_phase(cluster, namespace, "Succeeded", timeout=300)
    assert final["steps"][0]["backfill"]["rowsDone"] == ROWS
    assert expected_counts(big_table) == (ROWS // 3, ROWS - ROWS // 3, 0)
    assert history(big_table) == [("backfill", "up")]
    # the planner's statistics brought up to date right after the backfill (seed Step 6.2)
    assert final["steps"][0]["message"].endswith("users analyzed")


def test_deleting_the_worker_pod_resumes_from_the_checkpoint(
    cluster: Cluster, namespace: str, big_table: str, operator: OperatorProcess
) -> None:
    # Slower than the other tests: the pod's deletion takes a few seconds, and a worker at full
    # speed was sometimes done with all rows before it was gone.
    steps = backfill_steps(maxBatchSize=1000, pause="60ms")
    cluster.apply(migration(namespace, steps))
    st = wait_for(lambda: running_backfill(cluster, namespace), 120, "backfill progress")
    job_name = st["job"]
    pods = cluster.get("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job_name}")
    (pod,) = [p for p in pods["items"] if p["status"].get("phase") == "Running"]
    cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=true")
    done_at_kill = running_backfill(cluster, namespace)
    assert done_at_kill is not None
    assert done_at_kill["backfill"]["rowsDone"] < ROWS
    final = wait_phase(cluster, namespace, "Succeeded", timeout=300)
    pods = cluster.get("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job_name}")
    names = {p["metadata"]["name"] for p in pods["items"]}
    assert names
    assert pod["metadata"]["name"] not in names  # the Job controller replaced the deleted pod
    assert final["steps"][0]["backfill"]["rowsDone"] == ROWS
    assert expected_counts(big_table) == (ROWS // 3, ROWS - ROWS // 3, 0)
    with psycopg.connect(big_table) as conn:
        (resumed,) = conn.execute(
            "SELECT bool_or(rows_done > 0) FROM dbmigrate.backfill_checkpoints"
        ).fetchone() or (None,)
    assert resumed


def test_a_permanent_worker_error_fails_the_step_at_once(
    cluster: Cluster, namespace: str, big_table: str, operator: OperatorProcess
) -> None:
    with psycopg.connect(big_table, autocommit=True) as conn:
        conn.execute("CREATE TABLE nokey (v int)")
        conn.execute("INSERT INTO nokey SELECT generate_series(1, 10)")
    steps = [{"name": "backfill", "backfill": {"table": "nokey", "set": "v = v + 1"}}]
    cluster.apply(migration(namespace, steps, rollback={"policy": "Manual"}))
    st = wait_phase(cluster, namespace, "Failed", timeout=90)  # not 6 retries with backoff
    step = st["steps"][0]
    assert step["reason"] == "JobFailed"
    assert "no primary key" in step["message"]
    job = cluster.get("job", step["job"], "-n", namespace)
    assert job["status"].get("failed", 0) == 1
    with psycopg.connect(big_table) as conn:
        assert conn.execute("SELECT sum(v) FROM nokey").fetchone() == (55,)


AUTO_ROWS = 1_200_000  # over a million rows to do: `parallelism: auto` stands for 2 workers


@pytest.fixture
def bigger_table(
    pg_dsn: str, db_secret: Callable[[str, str], None], local_executor: Cluster
) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email_verified boolean)")
        conn.execute("INSERT INTO users SELECT g, NULL FROM generate_series(1, %s) g", (AUTO_ROWS,))
        conn.execute("VACUUM ANALYZE users")
    db_secret("db", pg_dsn)
    return pg_dsn


def test_parallelism_auto_runs_the_workers_the_table_needs(
    cluster: Cluster, namespace: str, bigger_table: str, operator: OperatorProcess
) -> None:
    step = {
        "name": "backfill",
        "backfill": {
            "table": "users",
            "set": "email_verified = true",
            "where": "email_verified IS NULL",
            "parallelism": "auto",
        },
    }
    cluster.apply(migration(namespace, [step]))
    final = wait_phase(cluster, namespace, "Succeeded", timeout=300)
    (st,) = final["steps"]
    assert (st["backfill"]["rowsDone"], st["backfill"]["workers"]) == (AUTO_ROWS, 2)
    job = cluster.get("job", st["job"], "-n", namespace)
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (2, 2)
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert re.search(
        r"started: job [-a-z0-9]+, 2 workers for ~1,[12][0-9]{2},[0-9]{3} rows", events
    )
    with psycopg.connect(bigger_table) as conn:
        left = conn.execute("SELECT count(*) FROM users WHERE email_verified IS NULL").fetchone()
        per_worker = conn.execute(
            "SELECT rows_done FROM dbmigrate.backfill_checkpoints ORDER BY worker"
        ).fetchall()
    assert left == (0,)
    # Slices of about equal rows: neither worker did more than 55 %.
    assert max(r[0] for r in per_worker) <= AUTO_ROWS * 0.55
