"""The fault matrix: the operator SIGKILLed (a `crash` failpoint) at every point of a step and of
the rollback path, on the real API server with a real PostgreSQL; a fresh operator finishes.

Each cell starts the operator with one failpoint set to `crash` (dbmigrate.failpoints), applies
a migration whose shape reaches that point, waits for the process to die there (exit 137, the
failpoint named in its log), starts a fresh operator without failpoints and waits for the final
phase. The verdict is read from the database and the cluster, not from status alone: every
history row exists once per step and direction, the schema is fully migrated or fully reverted,
no session holds an advisory lock, no Job of the migration is left running, and the phase and
reason say what happened. One cell: `pytest tests/e2e/test_fault_matrix.py -k <cell id>`.

With DBMIGRATE_WRITE_RELIABILITY=1 the module writes docs/reliability.md from its results
(cells, outcomes, recovery times).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbmigrate.failpoints import ENV, POINTS
from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import (
    ROOT,
    condition,
    deploy_app,
    image,
    migration,
    roll_out_when_release_waits,
    status,
    wait_phase,
)
from tests.fixtures.operator import OperatorProcess

RELIABILITY = ROOT / "docs" / "reliability.md"


@dataclass(frozen=True)
class Cell:
    point: str
    step_type: str
    steps: list[dict[str, Any]]
    phase: str  # the final phase
    # what the database must show afterwards (the schema fully migrated or fully reverted)
    check: Callable[[psycopg.Connection], None]
    spec: dict[str, Any] = field(default_factory=dict)
    needs_pods: bool = False  # backfill Jobs run on the local pod executor
    rollout: bool = False  # the target Deployment rolls out to app:v2 during the migration


def has(conn: psycopg.Connection, sql: str, expected: object) -> None:
    row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
    assert row is not None, sql
    assert row[0] == expected, (sql, row, expected)


def index_exists(name: str, valid: bool = True) -> Callable[[psycopg.Connection], None]:
    return lambda conn: has(
        conn,
        f"SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        f"WHERE c.relname = '{name}' AND i.indisvalid",
        1 if valid else 0,
    )


def column_exists(name: str, exists: bool = True) -> Callable[[psycopg.Connection], None]:
    return lambda conn: has(
        conn,
        "SELECT count(*) FROM information_schema.columns "
        f"WHERE table_name = 'users' AND column_name = '{name}'",
        1 if exists else 0,
    )


def all_of(*checks: Callable[[psycopg.Connection], None]) -> Callable[[psycopg.Connection], None]:
    def check(conn: psycopg.Connection) -> None:
        for c in checks:
            c(conn)

    return check


ADD_FLAG = {
    "name": "expand",
    "sql": {
        "up": "ALTER TABLE users ADD COLUMN flag boolean",
        "down": "ALTER TABLE users DROP COLUMN IF EXISTS flag",
    },
}
BROKEN = {"name": "broken", "sql": {"up": "SELECT 1/0", "down": "SELECT 1"}}
TABLES = [
    {
        "name": f"t{i}",
        "sql": {"up": f"CREATE TABLE t{i} (id int)", "down": f"DROP TABLE IF EXISTS t{i}"},
    }
    for i in (1, 2)
]


def tables_gone(conn: psycopg.Connection) -> None:
    has(conn, "SELECT count(*) FROM pg_tables WHERE tablename IN ('t1', 't2')", 0)


CELLS = [
    pytest.param(
        Cell(
            "executor.statement-committed",
            "sql CONCURRENTLY",
            [
                {
                    "name": "index",
                    "sql": {
                        "up": "CREATE INDEX CONCURRENTLY users_email ON users (email)",
                        "down": "DROP INDEX CONCURRENTLY IF EXISTS users_email",
                    },
                }
            ],
            "Succeeded",
            index_exists("users_email"),
        ),
        id="statement-committed-concurrently",
    ),
    pytest.param(
        Cell(
            "executor.group-committed",
            "sql, two groups",
            [
                {
                    "name": "expand-index",
                    "sql": {
                        "up": "ALTER TABLE users ADD COLUMN flag boolean;\n"
                        "CREATE INDEX CONCURRENTLY users_flag ON users (flag)",
                        "down": "DROP INDEX CONCURRENTLY IF EXISTS users_flag;\n"
                        "ALTER TABLE users DROP COLUMN IF EXISTS flag",
                    },
                }
            ],
            "Succeeded",
            all_of(column_exists("flag"), index_exists("users_flag")),
        ),
        id="group-committed",
    ),
    pytest.param(
        Cell("runner.history-written", "sql", [ADD_FLAG], "Succeeded", column_exists("flag")),
        id="history-written-sql",
    ),
    pytest.param(
        Cell(
            "runner.job-created",
            "backfill",
            [
                ADD_FLAG,
                {
                    "name": "backfill",
                    "backfill": {"table": "users", "set": "flag = true", "where": "flag IS NULL"},
                },
            ],
            "Succeeded",
            lambda conn: has(conn, "SELECT count(*) FROM users WHERE flag IS NOT TRUE", 0),
            needs_pods=True,
        ),
        id="job-created-backfill",
    ),
    pytest.param(
        Cell(
            "runner.history-written",
            "awaitRollout",
            [{"name": "release", "awaitRollout": {"image": "app:v2"}}],
            "Succeeded",
            lambda conn: has(conn, "SELECT count(*) FROM dbmigrate.history", 1),
            spec={"target": {"deployment": "app"}},
            rollout=True,
        ),
        id="history-written-await-rollout",
    ),
    pytest.param(
        Cell(
            "rollback.rollout-undone",
            "rollback, awaitRollout",
            [ADD_FLAG, {"name": "release", "awaitRollout": {"image": "app:v2"}}, BROKEN],
            "RolledBack",
            column_exists("flag", exists=False),
            spec={"target": {"deployment": "app"}},
            rollout=True,
        ),
        id="rollout-undone",
    ),
    pytest.param(
        Cell(
            "rollback.step-reverted", "rollback, sql", [*TABLES, BROKEN], "RolledBack", tables_gone
        ),
        id="step-reverted",
    ),
    pytest.param(
        Cell(
            "rollback.before-final-status",
            "rollback, sql",
            [*TABLES, BROKEN],
            "RolledBack",
            tables_gone,
        ),
        id="before-final-status",
    ),
]

RESULTS: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def reliability_report() -> Iterator[None]:
    yield
    if os.environ.get("DBMIGRATE_WRITE_RELIABILITY") == "1" and RESULTS:
        write_reliability(RESULTS, RELIABILITY)


def verify_recovered(
    cluster: Cluster, namespace: str, dsn: str, steps: list[dict[str, Any]], phase: str
) -> None:
    """The verdict from the database and the cluster: every history row once, every step applied
    (Succeeded) or every applied one reverted, no advisory lock left, no Job running."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT step, direction, count(*) FROM dbmigrate.history GROUP BY step, direction"
        ).fetchall()
        assert rows, "no history written"
        assert all(n == 1 for _, _, n in rows), rows  # nothing applied or reverted twice
        directions = {(step, d) for step, d, _ in rows}
        applied = {s["name"] for s in steps if (s["name"], "up") in directions}
        if phase == "Succeeded":
            assert applied == {s["name"] for s in steps}
        else:  # every applied step reverted
            assert all((name, "down") in directions for name in applied), directions
        wait_for(
            lambda: (
                conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
                == (0,)
            ),
            30,
            "the migration lock to be released",
        )
    jobs = cluster.get("jobs", "-n", namespace).get("items", [])
    assert not [j for j in jobs if (j.get("status") or {}).get("active")], "a Job still runs"


def crash_at(operator: OperatorProcess, point: str) -> None:
    """Restart the operator with `point` set to crash."""
    operator.stop()
    operator.env[ENV] = f"{point}=crash"
    operator.start()


@pytest.mark.parametrize("cell", CELLS)
def test_a_crash_at_every_point_is_recovered(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    request: pytest.FixtureRequest,
    cell: Cell,
) -> None:
    if cell.needs_pods:
        request.getfixturevalue("local_executor")
    if cell.rollout:
        deploy_app(cluster, namespace)
    crash_at(operator, cell.point)
    cluster.apply(migration(namespace, cell.steps, **cell.spec))
    if cell.rollout:
        roll_out_when_release_waits(cluster, namespace)
    assert operator.proc is not None
    code = operator.proc.wait(120)
    crashed = time.monotonic()
    assert code == 137, f"the operator exited with {code}, not at the failpoint"
    assert f"failpoint {cell.point}: crash" in operator.log()

    operator.env.pop(ENV)
    operator.start()
    st = wait_phase(cluster, namespace, cell.phase, timeout=120)
    recovery = time.monotonic() - crashed

    verify_recovered(cluster, namespace, app_db, cell.steps, cell.phase)
    with psycopg.connect(app_db) as conn:
        cell.check(conn)
    ready = condition(st, "Ready")
    assert ready["reason"] == ("Succeeded" if cell.phase == "Succeeded" else "RolledBack")
    if cell.rollout:  # undone by a rollback, kept by a migration that finished
        assert image(cluster, namespace) == ("app:v1" if cell.phase == "RolledBack" else "app:v2")
    RESULTS.append(
        {
            "point": cell.point,
            "step_type": cell.step_type,
            "outcome": f"{cell.phase} ({ready['reason']})",
            "recovery": recovery,
        }
    )


def write_reliability(results: list[dict[str, Any]], path: Path) -> None:
    recoveries = [r["recovery"] for r in results if r.get("recovers", True)]
    median = statistics.median(recoveries)
    lines = [
        "# Reliability: the fault matrix",
        "",
        "Generated by `tests/e2e/test_fault_matrix.py` "
        "(`DBMIGRATE_WRITE_RELIABILITY=1 .venv/bin/pytest tests/e2e/test_fault_matrix.py`; "
        "one cell: `-k <id>`). Each cell SIGKILLs the operator (a `crash` failpoint, "
        "`os._exit(137)`) at one point, starts a fresh operator and checks the database and "
        "the cluster: one history row per step and direction, the schema fully migrated or "
        "fully reverted, no advisory lock held, no Job running, phase and reason.",
        "",
        "Time: from the crash (or the cut connection) to the final phase, including a fresh "
        "operator's start (about 2-3 s of kopf and the Kubernetes client) on 2 cores.",
        "",
        "| fault | where | step type | outcome | time |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| `{r['point']}` | {POINTS.get(r['point']) or r['where']} | {r['step_type']} | "
            f"{r['outcome']} | "
            f"{r['recovery']:.1f} s |"
        )
    lines += [
        "",
        f"{len(results)} cells, all recovered; median recovery {median:.1f} s "
        f"(over the {len(recoveries)} cells that crash or cut the operator off).",
        "",
        "## Other faults, tested outside the matrix",
        "",
        "| fault | test | outcome |",
        "|---|---|---|",
        "| a status write refused with 500 between two steps | "
        "`tests/integration/test_runner_faults.py` | the migration lock stays held; the pass "
        "is retried; Succeeded |",
        "| a status written by someone else (409) | `tests/e2e/test_status_writes.py` | not "
        "overwritten; the pass starts over |",
        "| a ConfigMap holding step SQL edited mid-run | "
        "`tests/integration/test_runner_faults.py` | ChecksumMismatch before the edited step |",
        "| the worker's connection terminated, 53300, the database away past the reconnects | "
        "`tests/integration/test_backfill_faults.py` | reconnected, every row once; exit 75 "
        "(retried by the Job) |",
        "| a table dropped and re-created, a step reverted and applied again | "
        "`tests/integration/test_backfill_faults.py` | the checkpoint starts over |",
        "| a Job's pod deleted | `tests/e2e/test_backfill_job.py` | resumed from the checkpoint |",
        "| Job names colliding, a re-created migration, a 70-character name, a rollback during "
        "a backfill | `tests/e2e/test_job_identity.py` | own Jobs only; the Job stopped before "
        "the downs |",
        "| a crash right after CREATE INDEX CONCURRENTLY committed | "
        "`tests/integration/test_sql_executor.py` and the matrix | found done |",
        "",
        "## Not yet in the matrix",
        "",
        "Each of these against each step type (sql, CONCURRENTLY, backfill, awaitRollout, job) "
        "and the rollback path: PostgreSQL restarted; kube-apiserver stopped for 20 s; a Job "
        "deleted by someone else (decided on, unit-tested only); Prometheus stopped during "
        "analysis; the DatabaseMigration deleted mid-step; the operator's connection terminated "
        "during other step types than sql; SIGKILL cells for job steps and in the backfill "
        "worker (`backfill.batch-committed`, which needs the failpoint switch in the Job's pod)."
        "",
    ]
    path.write_text("\n".join(lines))


def test_the_operators_connection_terminated_mid_step(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    """pg_terminate_backend of the operator's session while a step's statement runs: the step's
    transaction is rolled back with the session (and the lock with it); the operator reconnects,
    takes the lock again and applies the step once."""
    steps = [
        {
            "name": "slow",
            "sql": {
                "up": "ALTER TABLE users ADD COLUMN flag boolean; SELECT pg_sleep(3)",
                "down": "ALTER TABLE users DROP COLUMN IF EXISTS flag",
            },
        },
        {"name": "after", "sql": {"up": "CREATE TABLE after (id int)", "down": "DROP TABLE after"}},
    ]
    cluster.apply(migration(namespace, steps))
    with psycopg.connect(app_db, autocommit=True) as conn:
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbmigrate' "
                    "AND query LIKE %s",
                    ("%pg_sleep%",),
                ).fetchone()
                == (1,)
            ),
            60,
            "the slow step to run",
            interval=0.05,
        )
        killed = time.monotonic()
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'dbmigrate'"
        )
    st = wait_phase(cluster, namespace, "Succeeded", timeout=120)
    recovery = time.monotonic() - killed
    verify_recovered(cluster, namespace, app_db, steps, "Succeeded")
    with psycopg.connect(app_db) as conn:
        column_exists("flag")(conn)
    assert condition(st, "Ready")["reason"] == "Succeeded"
    RESULTS.append(
        {
            "point": "pg_terminate_backend",
            "where": "the operator's session terminated while a step's statement runs",
            "step_type": "sql (mid-statement)",
            "outcome": "Succeeded (Succeeded)",
            "recovery": recovery,
        }
    )


def test_a_second_migration_of_the_same_database_waits(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    """Two DatabaseMigrations on one database: one holds the lock, the other waits
    (AnotherMigrationRunning) and runs after; each step applied once, in that order."""
    first = [{"name": "a", "sql": {"up": "SELECT pg_sleep(3)", "down": "SELECT 1"}}]
    second = [{"name": "b", "sql": {"up": "CREATE TABLE b (id int)", "down": "DROP TABLE b"}}]
    cluster.apply(migration(namespace, first, name="first", migration_id="20261201000001_first"))
    wait_for(
        lambda: status(cluster, namespace, "first").get("currentStep") == "a",
        60,
        "the first migration to run",
    )
    started = time.monotonic()
    cluster.apply(migration(namespace, second, name="second", migration_id="20261201000002_second"))
    waiting = wait_for(
        lambda: (s := status(cluster, namespace, "second")).get("conditions") and s,
        60,
        "the second migration's status",
    )
    assert condition(waiting, "Ready")["reason"] == "AnotherMigrationRunning"
    wait_phase(cluster, namespace, "Succeeded", timeout=90, name="first")
    wait_phase(cluster, namespace, "Succeeded", timeout=90, name="second")
    with psycopg.connect(app_db) as conn:
        rows = conn.execute(
            "SELECT migration_id, step, direction FROM dbmigrate.history ORDER BY id"
        ).fetchall()
    assert rows == [
        ("20261201000001_first", "a", "up"),
        ("20261201000002_second", "b", "up"),
    ]
    RESULTS.append(
        {
            "recovers": False,
            "point": "a second migration",
            "where": "another DatabaseMigration of the same database applied meanwhile "
            "(time: until both Succeeded)",
            "step_type": "sql, same database",
            "outcome": "both Succeeded, in turn",
            "recovery": time.monotonic() - started,
        }
    )
