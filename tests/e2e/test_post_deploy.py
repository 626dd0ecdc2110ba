"""After the last step (spec.postDeploy, the seed's Phase 6) with the operator on a real API
server and a real PostgreSQL with pg_stat_statements.

Aspects: a migration whose new index the application never uses stays Succeeded while a
Watching condition samples, ends its watch with an UnusedIndex finding (status, event, metric),
then runs its cleanup step under the lock with a history row; a migration that drops the index
the application's lookup uses makes it several times slower: the watch reports a
QueryRegression and, with onRegression: Rollback, rolls the migration back (the index is back).
"""

from __future__ import annotations

import threading
import time

import psycopg

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import (
    condition,
    history,
    migration,
    report_config_map,
    runs,
    status,
    wait_phase,
)
from tests.fixtures.operator import OperatorProcess


def prepare(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(
            "INSERT INTO users (email) SELECT 'x' || g || '@example.com' "
            "FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("CREATE INDEX users_email ON users (email)")
        conn.execute("CREATE TABLE migration_staging (id int)")
        conn.execute("ANALYZE users")


def look_up(dsn: str, stop: threading.Event, calls: list[int]) -> None:
    """The application: lookups by email, as fast as they come."""
    with psycopg.connect(dsn, autocommit=True, application_name="app") as conn:
        i = 0
        while not stop.is_set():
            i += 1
            conn.execute("SELECT id FROM users WHERE email = %s", (f"x{i % 5000}@example.com",))
            calls[0] += 1
            time.sleep(0.005)


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "UNION SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_unused_index_is_found_and_the_cleanup_runs_after_the_watch(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    prepare(app_db, 2_000)
    cluster.apply(
        migration(
            namespace,
            [
                {
                    "name": "add-note",
                    "sql": {
                        "up": "ALTER TABLE users ADD COLUMN note text; "
                        "CREATE INDEX users_note ON users (note)",
                        "down": "ALTER TABLE users DROP COLUMN IF EXISTS note",
                    },
                }
            ],
            postDeploy={
                "watch": "10s",
                "interval": "2s",
                "cleanup": [{"name": "drop-staging", "sql": "DROP TABLE migration_staging"}],
            },
        )
    )
    st = wait_phase(cluster, namespace, "Succeeded", timeout=60)
    watching = wait_for(
        lambda: (s := status(cluster, namespace)).get("postDeploy", {}).get("lastSampledAt") and s,
        30,
        "the first sample",
    )
    assert condition(watching, "Watching")["status"] == "True"
    assert watching["postDeploy"]["state"] == "Watching"
    assert watching["postDeploy"]["statementsAvailable"] is True
    assert condition(watching, "Ready")["status"] == "True"  # Succeeded throughout
    assert "migration_staging" in tables(app_db)  # the cleanup waits for the watch's end

    st = wait_for(
        lambda: (
            (s := status(cluster, namespace)).get("postDeploy", {}).get("state") == "Finished" and s
        ),
        60,
        "the watch and the cleanup to end",
    )
    pd = st["postDeploy"]
    assert st["phase"] == "Succeeded"
    assert [(f["kind"], f["index"]) for f in pd["findings"]] == [("UnusedIndex", "users_note")]
    assert [ix["name"] for ix in pd["indexes"]] == ["users_note"]
    assert [(c["name"], c["state"]) for c in pd["cleanup"]] == [("drop-staging", "Succeeded")]
    assert condition(st, "Watching")["status"] == "False"
    assert "migration_staging" not in tables(app_db)
    assert history(app_db) == [("add-note", "up"), ("drop-staging", "up")]
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "index users_note on users, created by the migration, was never scanned" in events
    assert "WatchFinished" in events
    page = operator.metrics()
    assert 'dbmigrate_post_deploy_findings_total{kind="UnusedIndex"}' in page
    # The record written when the migration succeeded, rewritten with the watch's findings.
    cm = report_config_map(cluster, namespace)
    assert cm is not None
    report = cm["data"]["report.md"]
    assert "### Post-deployment watch" in report
    assert "  - UnusedIndex at " in report
    assert "- `drop-staging`: Succeeded" in report
    (row,) = runs(app_db)
    assert (row["outcome"], row["report"]) == ("Succeeded", report)


def test_a_query_regression_rolls_the_migration_back(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    prepare(app_db, 40_000)
    stop, calls = threading.Event(), [0]
    app = threading.Thread(target=look_up, args=(app_db, stop, calls), daemon=True)
    app.start()
    try:
        wait_for(lambda: calls[0] >= 200, 30, "the application's baseline lookups")
        cluster.apply(
            migration(
                namespace,
                [
                    {
                        "name": "drop-email-index",
                        "sql": {
                            "up": "DROP INDEX users_email",
                            "down": "CREATE INDEX users_email ON users (email)",
                        },
                    }
                ],
                postDeploy={
                    "watch": "5m",
                    "interval": "2s",
                    "minCalls": 20,
                    "onRegression": "Rollback",
                },
            )
        )
        st = wait_for(
            lambda: (
                (s := status(cluster, namespace)).get("phase") in ("RolledBack", "Failed") and s
            ),
            120,
            f"the rollback (status: {status(cluster, namespace)})",
        )
    finally:
        stop.set()
        app.join(10)
    rb = st["rollback"]
    assert rb["trigger"] == "QueryRegression"
    assert "postDeploy.onRegression is Rollback" in rb["reason"]
    assert "SELECT id FROM users WHERE email = $1" in rb["reason"]
    pd = st["postDeploy"]
    assert pd["state"] == "RolledBack"
    (finding,) = pd["findings"]
    assert finding["kind"] == "QueryRegression"
    slow = next(s for s in pd["statements"] if s["queryid"] == finding["queryid"])
    assert slow["ratio"] >= 3, slow  # a sequential scan of 40 000 rows against an index probe
    assert history(app_db) == [("drop-email-index", "up"), ("drop-email-index", "down")]
    assert "users_email" in tables(app_db)
    page = operator.metrics()
    assert 'dbmigrate_rollbacks_total{reason="QueryRegression"} 1.0' in page
    assert 'dbmigrate_post_deploy_findings_total{kind="QueryRegression"} 1.0' in page
    # The post-mortem names what breached (the watch's finding, with its time) and the step.
    cm = report_config_map(cluster, namespace)
    assert cm is not None
    report = cm["data"]["report.md"]
    assert report.startswith("## Rollback Post-Mortem")
    assert f"  - query regression at {finding['at']} (post-deployment watch): query " in report
    assert "- Step running at the time: `drop-email-index`" in report
    assert "- Reverted: `drop-email-index`" in report
    assert [r["outcome"] for r in runs(app_db)] == ["Succeeded", "RolledBack"]


def test_without_pg_stat_statements_the_condition_says_so_and_nothing_else_changes(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    with psycopg.connect(app_db, autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
        ).fetchone() == (0,)
    cluster.apply(
        migration(
            namespace,
            [
                {
                    "name": "add-note",
                    "sql": {
                        "up": "ALTER TABLE users ADD COLUMN note text",
                        "down": "ALTER TABLE users DROP COLUMN IF EXISTS note",
                    },
                }
            ],
            postDeploy={"watch": "10s", "interval": "2s", "onRegression": "Rollback"},
        )
    )
    sampled = wait_for(
        lambda: (s := status(cluster, namespace)).get("postDeploy", {}).get("lastSampledAt") and s,
        60,
        "the first sample",
    )
    watching = condition(sampled, "Watching")
    assert (watching["status"], watching["reason"]) == ("True", "StatementsUnavailable")
    assert "CREATE EXTENSION pg_stat_statements" in watching["message"]
    assert sampled["postDeploy"]["statementsAvailable"] is False
    st = wait_for(
        lambda: (
            (s := status(cluster, namespace)).get("postDeploy", {}).get("state") == "Finished" and s
        ),
        60,
        "the watch to end",
    )
    assert st["phase"] == "Succeeded"
    assert "findings" not in st["postDeploy"]
    assert history(app_db) == [("add-note", "up")]
