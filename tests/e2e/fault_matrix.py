"""What the fault matrix's test modules share: the step shapes a fault is injected into, the
faults themselves, the verdict read from the database and the cluster, and the report
(docs/reliability.md).

A shape is a small migration whose interesting step stays under way for a few seconds (a
`pg_sleep`, a deliberately slow index expression, a throttled backfill, a Job that sleeps, a
slow down SQL), so a fault can be injected while it runs. `Shape.under_way` waits for that
moment. The verdict never trusts status alone: history rows are counted in the database, the
schema is checked, the advisory lock and the Jobs are looked at.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from dbmigrate.db.backfill.throttle import APPLICATION_NAME_PREFIX as WORKER_APPLICATION
from dbmigrate.failpoints import POINTS
from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import ROOT, roll_out_when_release_waits, status, step_state

RELIABILITY = ROOT / "docs" / "reliability.md"
LOCAL_CLUSTER = ROOT / "hack" / "local-cluster.sh"
OPERATOR_APPLICATION = "dbmigrate"

Check = Callable[[psycopg.Connection], None]


# --- checks on the database ---------------------------------------------------------------------


def has(conn: psycopg.Connection, sql: str, expected: object) -> None:
    row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
    assert row is not None, sql
    assert row[0] == expected, (sql, row, expected)


def index_exists(name: str, valid: bool = True) -> Check:
    return lambda conn: has(
        conn,
        f"SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        f"WHERE c.relname = '{name}' AND i.indisvalid",
        1 if valid else 0,
    )


def no_index(name: str) -> Check:
    return lambda conn: has(
        conn,
        "SELECT string_agg(i.indisvalid::text, ',') FROM pg_index i "
        f"JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = '{name}'",
        None,
    )


def column_exists(name: str, exists: bool = True) -> Check:
    return lambda conn: has(
        conn,
        "SELECT count(*) FROM information_schema.columns "
        f"WHERE table_name = 'users' AND column_name = '{name}'",
        1 if exists else 0,
    )


def table_exists(name: str, exists: bool = True) -> Check:
    return lambda conn: has(
        conn, f"SELECT count(*) FROM pg_tables WHERE tablename = '{name}'", 1 if exists else 0
    )


def all_of(*checks: Check) -> Check:
    def check(conn: psycopg.Connection) -> None:
        for c in checks:
            c(conn)

    return check


def every_row_backfilled(conn: psycopg.Connection) -> None:
    column_exists("flag")(conn)
    has(conn, "SELECT count(*) FROM users WHERE flag IS NOT TRUE", 0)


def nothing(conn: psycopg.Connection) -> None:
    """No assertion on the schema (a backfill stopped half-way is resumable, not wrong)."""


# --- the world a cell runs in -------------------------------------------------------------------


@dataclass
class World:
    cluster: Cluster
    namespace: str
    dsn: str
    operator: Any  # tests.fixtures.operator.OperatorProcess
    postgres: Any  # dbmigrate_dev.postgres.PostgresServer

    def sessions(self, application: str, query_like: str | None = None) -> int:
        """Sessions of that application (LIKE); with `query_like`, those running such a query."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s "
                "AND (%s::text IS NULL OR state = 'active' AND query LIKE %s)",
                (application, query_like, query_like),
            ).fetchone()
        return int(row[0]) if row else 0

    def terminate(self, application: str) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE %s",
                (application,),
            ).fetchall()
        return len(rows)

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.cluster.get("jobs", "-n", self.namespace).get("items", []))

    def pods(self) -> list[dict[str, Any]]:
        return list(self.cluster.get("pods", "-n", self.namespace).get("items", []))

    def running_pod(self) -> dict[str, Any] | None:
        return next(
            (p for p in self.pods() if (p.get("status") or {}).get("phase") == "Running"), None
        )


# --- the shapes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A migration whose `key` step stays under way long enough to be hit by a fault."""

    id: str
    label: str  # the step type, as the report says it
    steps: list[dict[str, Any]]
    key: str  # the step the fault hits
    done: Check  # the schema with every step applied (or, for `final == RolledBack`, reverted)
    undone: Check  # the schema without the key step's work (a migration deleted mid-step)
    under_way: Callable[[World], None]  # returns once the key step is running
    final: str = "Succeeded"
    spec: dict[str, Any] = field(default_factory=dict)
    pods: bool = False  # its Jobs run on the local pod executor
    rollout: bool = False  # the target Deployment rolls out to app:v2 during the migration
    setup: str = ""  # SQL run on the app's database first
    rows: int | None = None  # rows the backfill step must report done
    key_direction: str = "up"  # "down": the fault hits the key step's revert


SLEEP = 4  # seconds a shape's key step stays under way
SLEEPING = f"SELECT pg_sleep({SLEEP})"


def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    wait_for(check, timeout, what, interval=0.05)


def _sql_under_way(world: World) -> None:
    _until(lambda: world.sessions(OPERATOR_APPLICATION, "%pg_sleep%") == 1, "the step to run")


def _index_under_way(world: World) -> None:
    _until(
        lambda: world.sessions(OPERATOR_APPLICATION, "%CONCURRENTLY%") == 1,
        "CREATE INDEX CONCURRENTLY to run",
    )


def _backfill_under_way(world: World) -> None:
    def half_way() -> bool:
        with psycopg.connect(world.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE to_jsonb(u) ->> 'flag' = 'true') FROM users u"
            ).fetchone()
        return bool(row and 20 <= row[0] < 80) and world.sessions(f"{WORKER_APPLICATION}%") > 0

    _until(half_way, "the backfill to be half-way")


def _job_under_way(world: World) -> None:
    _until(lambda: world.running_pod() is not None, "the Job's pod to run")


def _release_waits(world: World) -> None:
    _until(lambda: step_state(world.cluster, world.namespace, "release") == "Waiting", "release")


ADD_FLAG = {
    "name": "expand",
    "sql": {
        "up": "ALTER TABLE users ADD COLUMN flag boolean",
        "down": "ALTER TABLE users DROP COLUMN IF EXISTS flag",
    },
}
BROKEN = {"name": "broken", "sql": {"up": "SELECT 1/0", "down": "SELECT 1"}}
# An index expression that takes 40 ms a row: CREATE INDEX CONCURRENTLY on 100 rows runs ~4 s.
SLOW_EXPRESSION = """
CREATE FUNCTION slow_id(bigint) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS
$$ BEGIN PERFORM pg_sleep(0.04); RETURN $1; END $$
"""
TOOL = (
    "import os, time, psycopg; time.sleep({sleep}); "
    "psycopg.connect(os.environ['DATABASE_URL'], autocommit=True)"
    ".execute('CREATE TABLE IF NOT EXISTS tool_made (id int)')"
)


def _shapes() -> list[Shape]:
    from dbmigrate_dev.kubelet import HOST_EXEC_IMAGE

    return [
        Shape(
            "sql",
            "sql",
            [
                {
                    "name": "expand",
                    "sql": {
                        "up": f"ALTER TABLE users ADD COLUMN flag boolean; {SLEEPING}",
                        "down": "ALTER TABLE users DROP COLUMN IF EXISTS flag",
                    },
                }
            ],
            "expand",
            column_exists("flag"),
            column_exists("flag", exists=False),
            _sql_under_way,
        ),
        Shape(
            "concurrently",
            "sql CONCURRENTLY",
            [
                {
                    "name": "index",
                    "sql": {
                        "up": "CREATE INDEX CONCURRENTLY users_slow ON users (slow_id(id))",
                        "down": "DROP INDEX CONCURRENTLY IF EXISTS users_slow",
                    },
                }
            ],
            "index",
            index_exists("users_slow"),
            no_index("users_slow"),
            _index_under_way,
            setup=SLOW_EXPRESSION,
        ),
        Shape(
            "backfill",
            "backfill",
            [
                ADD_FLAG,
                {
                    "name": "backfill",
                    "backfill": {
                        "table": "users",
                        "set": "flag = true",
                        "where": "flag IS NULL",
                        "batchSize": 5,
                        "maxBatchSize": 5,
                        "pause": "300ms",
                    },
                },
            ],
            "backfill",
            every_row_backfilled,
            nothing,
            _backfill_under_way,
            pods=True,
            rows=100,
        ),
        Shape(
            "await-rollout",
            "awaitRollout",
            [ADD_FLAG, {"name": "release", "awaitRollout": {"image": "app:v2"}}],
            "release",
            column_exists("flag"),
            nothing,
            _release_waits,
            spec={"target": {"deployment": "app"}},
            rollout=True,
        ),
        Shape(
            "job",
            "job",
            [
                {
                    "name": "tool",
                    "job": {
                        "image": HOST_EXEC_IMAGE,
                        "command": [sys.executable, "-c", TOOL.format(sleep=SLEEP)],
                        "env": [
                            {
                                "name": "DATABASE_URL",
                                "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}},
                            }
                        ],
                        "backoffLimit": 2,
                    },
                    "verify": "SELECT count(*) = 1 FROM pg_tables WHERE tablename = 'tool_made'",
                }
            ],
            "tool",
            table_exists("tool_made"),
            nothing,  # a tool's work is its own: half of it may be done
            _job_under_way,
            pods=True,
        ),
        Shape(
            "rollback",
            "rollback",
            [
                ADD_FLAG,
                {
                    "name": "table",
                    "sql": {
                        "up": "CREATE TABLE t1 (id int)",
                        "down": f"{SLEEPING}; DROP TABLE IF EXISTS t1",
                    },
                },
                BROKEN,
            ],
            "table",
            all_of(column_exists("flag", exists=False), table_exists("t1", exists=False)),
            all_of(column_exists("flag"), table_exists("t1")),  # deleted: the rollback stops
            _sql_under_way,
            final="RolledBack",
            key_direction="down",
        ),
    ]


SHAPES = {s.id: s for s in _shapes()}


# --- the faults ---------------------------------------------------------------------------------


def stop_component(name: str) -> None:
    subprocess.run([str(LOCAL_CLUSTER), "stop", name], check=True, capture_output=True, timeout=60)


def start_components() -> None:
    subprocess.run([str(LOCAL_CLUSTER), "up"], check=True, capture_output=True, timeout=300)


@dataclass(frozen=True)
class Fault:
    id: str
    label: str
    inject: Callable[[World], None]
    shapes: tuple[str, ...]  # the shapes it applies to
    deletes: bool = False  # the DatabaseMigration is gone afterwards
    local_only: bool = False  # needs the local control plane (its processes)


def _sigkill(world: World) -> None:
    world.operator.kill()
    world.operator.start()


def _terminate_operator(world: World) -> None:
    assert world.terminate(OPERATOR_APPLICATION) >= 1, "no operator session to terminate"


def _terminate_worker(world: World) -> None:
    assert world.terminate(f"{WORKER_APPLICATION}%") >= 1, "no worker session to terminate"


def _restart_postgres(world: World) -> None:
    world.postgres.stop()  # fast shutdown (SIGINT): every session is cut, open work rolled back
    world.postgres.start()


def _stop_apiserver(world: World) -> None:
    stop_component("kube-apiserver")
    time.sleep(20)
    start_components()


def controllers_recovered(cluster: Cluster) -> None:
    """After an API server outage, wait until the controllers work again (a new namespace gets
    its default ServiceAccount): the controller manager's watches back off after the restarted
    server's first seconds, and the next test must not pay for this cell's outage."""
    name = cluster.create_namespace("after-outage", timeout=240)
    cluster.delete_namespace(name)


def _delete_job(world: World) -> None:
    (job,) = world.jobs()
    world.cluster.kubectl("delete", "job", job["metadata"]["name"], "-n", world.namespace)


def _delete_pod(world: World) -> None:
    pod = world.running_pod()
    assert pod is not None
    world.cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", world.namespace)


def _delete_migration(world: World) -> None:
    world.cluster.kubectl("delete", "dbm", "m", "-n", world.namespace, "--wait=false")


ALL = ("sql", "concurrently", "backfill", "await-rollout", "job", "rollback")
WITH_JOBS = ("backfill", "job")
FAULTS = {
    f.id: f
    for f in [
        Fault("operator-sigkill", "the operator SIGKILLed, a fresh one started", _sigkill, ALL),
        Fault(
            "operator-connection-terminated",
            "the operator's session terminated (pg_terminate_backend)",
            _terminate_operator,
            ("sql", "concurrently", "rollback"),
        ),
        Fault(
            "worker-connection-terminated",
            "the backfill worker's session terminated",
            _terminate_worker,
            ("backfill",),
        ),
        Fault(
            "postgres-restarted",
            "PostgreSQL restarted (fast shutdown, then start)",
            _restart_postgres,
            ALL,
        ),
        Fault(
            "apiserver-stopped",
            "kube-apiserver stopped for 20 s, then started",
            _stop_apiserver,
            ALL,
            local_only=True,
        ),
        Fault("job-deleted", "the step's Job deleted by someone else", _delete_job, WITH_JOBS),
        Fault("pod-deleted", "the Job's pod deleted", _delete_pod, WITH_JOBS),
        Fault(
            "migration-deleted",
            "the DatabaseMigration deleted mid-step",
            _delete_migration,
            ALL,
            deletes=True,
        ),
    ]
}


# --- the verdict --------------------------------------------------------------------------------


def history_rows(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    if conn.execute("SELECT to_regclass('dbmigrate.history')").fetchone() == (None,):
        return {}
    rows = conn.execute(
        "SELECT step, direction, count(*) FROM dbmigrate.history GROUP BY step, direction"
    ).fetchall()
    return {(step, direction): n for step, direction, n in rows}


def no_lock_left(conn: psycopg.Connection) -> None:
    wait_for(
        lambda: (
            conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
            == (0,)
        ),
        30,
        "the migration lock to be released",
    )


def verify_recovered(
    cluster: Cluster, namespace: str, dsn: str, steps: list[dict[str, Any]], phase: str
) -> None:
    """The verdict from the database and the cluster: every history row once, every step applied
    (Succeeded) or every applied one reverted, no advisory lock left, no Job running."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = history_rows(conn)
        assert rows, "no history written"
        assert all(n == 1 for n in rows.values()), rows  # nothing applied or reverted twice
        applied = {s["name"] for s in steps if (s["name"], "up") in rows}
        if phase == "Succeeded":
            assert applied == {s["name"] for s in steps}
        else:  # every applied step reverted
            assert all((name, "down") in rows for name in applied), rows
        no_lock_left(conn)
    jobs = cluster.get("jobs", "-n", namespace).get("items", [])
    assert not [j for j in jobs if (j.get("status") or {}).get("active")], "a Job still runs"


def verify_abandoned(world: World, shape: Shape) -> str:
    """A deleted migration: gone (its finalizer removed), its Jobs gone, the lock released, no
    step applied twice, and the schema agrees with the history (the key step's work is there iff
    its history row is). Returns the outcome."""
    wait_for(
        lambda: (
            world.cluster.kubectl(
                "get", "dbm", "m", "-n", world.namespace, "--ignore-not-found", "-o", "name"
            ).stdout.strip()
            == ""
        ),
        60,
        "the DatabaseMigration to be gone",
    )
    wait_for(lambda: not world.jobs(), 60, "the migration's Jobs to be garbage-collected")
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        rows = history_rows(conn)
        assert all(n == 1 for n in rows.values()), rows
        finished = (shape.key, shape.key_direction) in rows
        (shape.done if finished else shape.undone)(conn)
        no_lock_left(conn)
    return "deleted; key step " + ("applied" if finished else "stopped, not recorded")


def backfill_rows(world: World, step: str) -> int | None:
    for st in status(world.cluster, world.namespace).get("steps", []):
        if st["name"] == step:
            return (st.get("backfill") or {}).get("rowsDone")  # type: ignore[no-any-return]
    return None


def roll_out(world: World) -> None:
    roll_out_when_release_waits(world.cluster, world.namespace)


# --- the report ---------------------------------------------------------------------------------


@dataclass
class Result:
    table: str  # "crash" (a failpoint) | "matrix" (fault x shape) | "other"
    fault: str
    where: str
    step_type: str
    outcome: str
    recovery: float
    recovers: bool = True  # counted in the median recovery (the operator was cut off or crashed)


RESULTS: list[Result] = []


def write_reliability(results: list[Result], path: Path = RELIABILITY) -> None:
    crash = [r for r in results if r.table == "crash"]
    matrix = [r for r in results if r.table == "matrix"]
    other = [r for r in results if r.table == "other"]
    recoveries = [r.recovery for r in results if r.recovers]
    lines = [
        "# Reliability: the fault matrix",
        "",
        "Generated by the e2e fault matrix (`DBMIGRATE_WRITE_RELIABILITY=1 .venv/bin/pytest "
        "tests/e2e/test_fault_matrix.py tests/e2e/test_fault_outages.py`; one cell: `-k <id>`; "
        "the cells outside `make test`'s selection with `DBMIGRATE_EXHAUSTIVE=1`). Every cell "
        "checks the database and the cluster, not status alone: one history row per step and "
        "direction, the schema fully migrated or fully reverted, no advisory lock held, no Job "
        "running, the phase and reason.",
        "",
        "Time: from the fault to the final phase, including a fresh operator's start where the "
        "operator was killed (about 2-3 s of kopf and the Kubernetes client), on 2 cores.",
        "",
    ]
    if crash:
        lines += [
            "## The operator killed at each failpoint",
            "",
            "The operator exits at a failpoint (`os._exit(137)`, as after SIGKILL); a fresh "
            "operator finishes.",
            "",
            "| failpoint | where | step type | outcome | time |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| `{r.fault}` | {POINTS.get(r.fault, r.where)} | {r.step_type} | {r.outcome} | "
            f"{r.recovery:.1f} s |"
            for r in crash
        ]
        lines.append("")
    if matrix:
        shapes = [s for s in SHAPES.values() if any(r.step_type == s.label for r in matrix)]
        lines += [
            "## Faults while a step runs",
            "",
            "Each fault hits the step while it is under way (a statement running, a backfill "
            "half-way, a Job's pod running, a rollout awaited, a down statement running). "
            "Empty: the fault does not apply to that step type, or the cell did not run. A "
            "deleted migration is abandoned, not reverted: the verdict is that it is gone with "
            "its Jobs, the lock is released, and the step's work is there exactly when its "
            "history row is (a cancelled CREATE INDEX CONCURRENTLY leaves no INVALID index).",
            "",
            "| fault | " + " | ".join(s.label for s in shapes) + " |",
            "|---|" + "---|" * len(shapes),
        ]
        for fault in FAULTS.values():
            cells = {r.step_type: r for r in matrix if r.fault == fault.id}
            if not cells:
                continue
            row = [
                f"{cells[s.label].outcome}, {cells[s.label].recovery:.1f} s"
                if s.label in cells
                else ""
                for s in shapes
            ]
            lines.append(f"| {fault.label} | " + " | ".join(row) + " |")
        lines.append("")
    if other:
        lines += [
            "## Other cells",
            "",
            "| fault | step type | outcome | time |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r.where} | {r.step_type} | {r.outcome} | {r.recovery:.1f} s |" for r in other
        ]
        lines.append("")
    if recoveries:
        lines += [
            f"{len(results)} cells, all passed; median recovery "
            f"{statistics.median(recoveries):.1f} s (over the {len(recoveries)} cells whose "
            "fault cut the operator or the database off).",
            "",
        ]
    lines += [
        "## Faults tested outside the matrix",
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
        "| Job names colliding, a re-created migration, a 70-character name, a rollback during "
        "a backfill | `tests/e2e/test_job_identity.py` | own Jobs only; the Job stopped before "
        "the downs |",
        "| the operator killed at `rehearsal.scratch-filled` (scratch database created and "
        "filled, no verdict) | `tests/e2e/test_rehearsal.py` | no verdict recorded; the fresh "
        "operator drops the leftover, rehearses again, Succeeded with each step once |",
        "| a backup Job failing (wrong S3 credentials), then its Secret fixed and the Job "
        "deleted | `tests/e2e/test_backup.py` | BackupFailed before the guarded step (its history "
        "row absent, nothing stored); taken again, Succeeded with one backup |",
        "| application queries blocked by a step's statement or a backfill batch past "
        "`maxBlockedDuration` | `tests/integration/test_guard.py`, `tests/e2e/test_guards.py` | "
        "the statement cancelled and retried (a batch at half size); BlockingApplication when "
        "retries run out |",
        "| a migration's record that cannot be written (dbmigrate.runs refused) | "
        "`tests/unit/test_effects.py` | a ReportFailed event; the outcome's status saved all the "
        "same |",
        "",
    ]
    path.write_text("\n".join(lines))
