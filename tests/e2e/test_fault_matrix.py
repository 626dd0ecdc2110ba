"""The fault matrix, part one: the operator SIGKILLed (a `crash` failpoint) at every point of a
step and of the rollback path, and a backfill worker killed between two batches, on the real API
server with a real PostgreSQL; a fresh operator (a fresh pod) finishes.

Each cell starts the operator with one failpoint set to `crash` (dbmigrate.failpoints), applies
a migration whose shape reaches that point, waits for the process to die there (exit 137, the
failpoint named in its log), starts a fresh operator without failpoints and waits for the final
phase. The verdict is read from the database and the cluster, not from status alone (see
tests/e2e/fault_matrix.py). One cell: `pytest tests/e2e/test_fault_matrix.py -k <cell id>`.
With DBMIGRATE_WRITE_RELIABILITY=1 the session writes docs/reliability.md from the results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from dbmigrate.failpoints import ENV
from dbmigrate_dev.cluster_client import Cluster, wait_for
from dbmigrate_dev.kubelet import FAILPOINTS_ANNOTATION
from tests.e2e.fault_matrix import (
    ADD_FLAG,
    BROKEN,
    RESULTS,
    SHAPES,
    Result,
    World,
    all_of,
    backfill_rows,
    column_exists,
    every_row_backfilled,
    has,
    index_exists,
    table_exists,
    verify_recovered,
)
from tests.e2e.helpers import (
    condition,
    deploy_app,
    image,
    migration,
    roll_out_when_release_waits,
    status,
    wait_phase,
)
from tests.fixtures.operator import OperatorProcess


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


TABLES = [
    {
        "name": f"t{i}",
        "sql": {"up": f"CREATE TABLE t{i} (id int)", "down": f"DROP TABLE IF EXISTS t{i}"},
    }
    for i in (1, 2)
]


def tables_gone(conn: psycopg.Connection) -> None:
    table_exists("t1", exists=False)(conn)
    table_exists("t2", exists=False)(conn)


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
            every_row_backfilled,
            needs_pods=True,
        ),
        id="job-created-backfill",
    ),
    *(
        pytest.param(
            Cell(
                point, "job", SHAPES["job"].steps, "Succeeded", SHAPES["job"].done, needs_pods=True
            ),
            id=f"{point.removeprefix('runner.')}-job",
        )
        for point in ("runner.job-created", "runner.history-written")
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
        Result(
            "crash", cell.point, "", cell.step_type, f"{cell.phase} ({ready['reason']})", recovery
        )
    )


def test_a_backfill_worker_killed_between_two_batches(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    local_executor: Cluster,
) -> None:
    """The worker's first pod exits at `backfill.batch-committed` (137, as after SIGKILL): the
    Job's next pod resumes from the checkpoint; every row is updated, and counted, once."""
    cluster.kubectl(
        "annotate",
        "namespace",
        namespace,
        f"{FAILPOINTS_ANNOTATION}=backfill.batch-committed=crash",
    )
    shape = SHAPES["backfill"]
    cluster.apply(migration(namespace, shape.steps))
    world = World(cluster, namespace, app_db, operator, None)

    def crashed() -> dict[str, Any] | None:
        for pod in world.pods():
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (cs.get("state") or {}).get("terminated") or {}
                if terminated.get("exitCode") == 137:
                    return terminated
        return None

    terminated = wait_for(crashed, 120, "the worker's first pod to crash at the failpoint")
    hit = time.monotonic()
    assert "failpoint backfill.batch-committed: crash" in terminated.get("message", "")
    st = wait_phase(cluster, namespace, "Succeeded", timeout=120)
    recovery = time.monotonic() - hit
    verify_recovered(cluster, namespace, app_db, shape.steps, "Succeeded")
    with psycopg.connect(app_db) as conn:
        every_row_backfilled(conn)
        # the batches before the crash were not done again: one checkpoint, every row counted once
        has(conn, "SELECT sum(rows_done) FROM dbmigrate.backfill_checkpoints", 100)
    assert backfill_rows(world, "backfill") == 100
    assert len(world.pods()) == 2  # the crashed pod and the one that finished
    assert condition(st, "Ready")["reason"] == "Succeeded"
    RESULTS.append(
        Result(
            "crash",
            "backfill.batch-committed",
            "",
            "backfill (the worker's pod)",
            "Succeeded (Succeeded)",
            recovery,
        )
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
        Result(
            "other",
            "a second migration",
            "another DatabaseMigration of the same database applied meanwhile (time: until both "
            "Succeeded)",
            "sql, same database",
            "both Succeeded, in turn",
            time.monotonic() - started,
            recovers=False,
        )
    )


BACKED_UP = [
    ADD_FLAG,
    {
        "name": "contract",
        "pointOfNoReturn": True,
        "sql": {"up": "CREATE TABLE t1 (id int)", "down": "DROP TABLE IF EXISTS t1"},
    },
]


@pytest.mark.parametrize(
    ("who", "point"),
    [
        pytest.param("operator", "backup.job-created", id="backup-job-created"),
        pytest.param("worker", "backup.recorded", id="backup-recorded"),
    ],
)
def test_a_crash_while_backing_up_is_recovered(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    local_executor: Cluster,
    seaweed_s3: Any,
    s3_bucket: str,
    who: str,
    point: str,
) -> None:
    """The operator dies right after creating the backup Job, or the backup worker right after
    its verified backup's row committed: the fresh operator adopts the Job (no second one), the
    Job's next pod finds the row (no second dump); one backup recorded, each step applied once,
    the point-of-no-return step only after the backup."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3", "namespace": namespace},
            "stringData": {
                "accessKeyId": seaweed_s3.access_key,
                "secretAccessKey": seaweed_s3.secret_key,
            },
        }
    )
    backup = {
        "s3": {
            "endpoint": seaweed_s3.endpoint,
            "bucket": s3_bucket,
            "credentialsSecretRef": {"name": "s3"},
        }
    }
    world = World(cluster, namespace, app_db, operator, None)
    if who == "operator":
        crash_at(operator, point)
    else:
        cluster.kubectl(
            "annotate", "namespace", namespace, f"{FAILPOINTS_ANNOTATION}={point}=crash"
        )
    cluster.apply(migration(namespace, BACKED_UP, backup=backup))
    if who == "operator":
        assert operator.proc is not None
        assert operator.proc.wait(120) == 137, "the operator did not exit at the failpoint"
        assert f"failpoint {point}: crash" in operator.log()
        crashed = time.monotonic()
        operator.env.pop(ENV)
        operator.start()
    else:

        def worker_crashed() -> bool:
            return any(
                ((cs.get("state") or {}).get("terminated") or {}).get("exitCode") == 137
                for pod in world.pods()
                for cs in (pod.get("status") or {}).get("containerStatuses") or []
            )

        wait_for(worker_crashed, 120, "the backup worker's first pod to crash at the failpoint")
        crashed = time.monotonic()
    st = wait_phase(cluster, namespace, "Succeeded", timeout=120)
    recovery = time.monotonic() - crashed

    verify_recovered(cluster, namespace, app_db, BACKED_UP, "Succeeded")
    assert st["backup"]["state"] == "Succeeded"
    assert st["backup"]["beforeStep"] == "contract"
    with psycopg.connect(app_db) as conn:
        has(conn, "SELECT count(*) FROM dbmigrate.backups", 1)
        # the guarded step ran after the backup was recorded, never before
        has(
            conn,
            "SELECT (SELECT min(applied_at) FROM dbmigrate.history WHERE step = 'contract') > "
            "(SELECT max(taken_at) FROM dbmigrate.backups)",
            True,
        )
    assert len(seaweed_s3.list_keys(s3_bucket)) == 1
    jobs = [j for j in world.jobs() if "backup" in j["metadata"]["name"]]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    RESULTS.append(
        Result(
            "crash",
            point,
            "",
            f"backup ({'the operator' if who == 'operator' else 'the worker pod'})",
            "Succeeded (Succeeded)",
            recovery,
        )
    )


WATCHED = [
    {
        "name": "add-note",
        "sql": {
            "up": "ALTER TABLE users ADD COLUMN note text",
            "down": "ALTER TABLE users DROP COLUMN IF EXISTS note",
        },
    }
]


@pytest.mark.parametrize(
    "point",
    [
        pytest.param("watch.snapshot-taken", id="watch-snapshot-taken"),
        pytest.param("watch.cleanup-applied", id="watch-cleanup-applied"),
    ],
)
def test_a_crash_around_the_post_deployment_watch_is_recovered(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess, point: str
) -> None:
    """The operator dies right after the watch's snapshot (before startedAt), or right after a
    cleanup step's SQL and history row committed: the fresh operator takes the snapshot again
    (one row, replaced), finds the cleanup step in history instead of running it again, and
    the watch ends Finished; every step and the cleanup applied once."""
    with psycopg.connect(app_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE migration_staging (id int)")
    crash_at(operator, point)
    post = {
        "watch": "10s",
        "interval": "2s",
        "cleanup": [{"name": "drop-staging", "sql": "DROP TABLE migration_staging"}],
    }
    cluster.apply(migration(namespace, WATCHED, postDeploy=post))
    assert operator.proc is not None
    assert operator.proc.wait(120) == 137, "the operator did not exit at the failpoint"
    assert f"failpoint {point}: crash" in operator.log()
    crashed = time.monotonic()
    operator.env.pop(ENV)
    operator.start()

    def finished() -> dict[str, Any] | None:
        st = status(cluster, namespace)
        return st if (st.get("postDeploy") or {}).get("state") == "Finished" else None

    st = wait_for(finished, 120, "the watch and its cleanup to finish")
    recovery = time.monotonic() - crashed
    assert st["phase"] == "Succeeded"
    verify_recovered(cluster, namespace, app_db, WATCHED, "Succeeded")
    with psycopg.connect(app_db) as conn:
        has(conn, "SELECT count(*) FROM dbmigrate.watch_baselines", 1)
        has(conn, "SELECT count(*) FROM dbmigrate.history WHERE step = 'drop-staging'", 1)
        table_exists("migration_staging", exists=False)(conn)
    (cleanup,) = st["postDeploy"]["cleanup"]
    assert cleanup["state"] == "Succeeded"
    if point == "watch.cleanup-applied":
        assert cleanup["message"] == "found in history"
    RESULTS.append(
        Result("crash", point, "", "post-deployment watch", "Succeeded (Finished)", recovery)
    )
