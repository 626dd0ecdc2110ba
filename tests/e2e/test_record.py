"""The migration's record on a real cluster: what the operator leaves when a migration ends.

Aspects: after success, the `<name>-report` ConfigMap holds the migration log entry (labelled,
owned by the DatabaseMigration and garbage-collected with it) and `dbmigrate.runs` has the row
with the steps' timings and up SQL, written by this run; `dbmigrate report NAME` prints the
report with the user's kubeconfig, and says "no report yet" while a migration is under way or
does not exist. (The post-mortem after an SLO breach: tests/e2e/test_slo_rollback.py.)
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import (
    dbmigrate_report,
    kubectl_plugin,
    migration,
    report_config_map,
    runs,
    wait_phase,
)
from tests.fixtures.operator import OperatorProcess

STEPS = [
    {
        "name": "expand",
        "sql": {
            "up": "ALTER TABLE users ADD COLUMN email_verified boolean",
            "down": "ALTER TABLE users DROP COLUMN IF EXISTS email_verified",
        },
    },
    {"name": "fill", "backfill": {"table": "users", "set": "email_verified = false"}},
]


@pytest.fixture
def users_db(pg_dsn: str, db_secret: Callable[[str, str], None]) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigserial PRIMARY KEY, email text)")
        conn.execute("INSERT INTO users (email) SELECT 'u' || g FROM generate_series(1, 300) g")
    db_secret("db", pg_dsn)
    return pg_dsn


def test_a_succeeded_migration_leaves_its_log_entry(
    cluster: Cluster, namespace: str, users_db: str, operator: OperatorProcess
) -> None:
    cluster.apply(migration(namespace, STEPS))
    st = wait_phase(cluster, namespace, "Succeeded", timeout=120)
    dbm = cluster.get("dbm", "m", "-n", namespace)

    cm = report_config_map(cluster, namespace)
    assert cm is not None, "no report ConfigMap"
    meta = cm["metadata"]
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "dbmigrate",
        "dbmigrate.io/migration": "m",
    }
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "DatabaseMigration",
        "m",
        dbm["metadata"]["uid"],
    )
    report = cm["data"]["report.md"]
    assert report.startswith("# Migration Log\n")
    assert f"- Migration: `20240115120000_add_email_verified_column` ({namespace}/m)" in report
    assert f"- Finished: {st['finishedAt']}" in report
    assert "- Rows backfilled: 300 (`fill` 300)" in report
    assert "- Rollback: Available (down SQL of step `expand`, in that order)" in report
    assert "| 2 | `fill` | backfill | Succeeded |" in report

    (row,) = runs(users_db)
    assert (row["name"], row["uid"], row["outcome"]) == (
        f"{namespace}/m",
        dbm["metadata"]["uid"],
        "Succeeded",
    )
    assert row["report"] == report
    assert [(s["name"], s["kind"], s["rows"]) for s in row["steps"]] == [
        ("expand", "sql", None),
        ("fill", "backfill", 300),
    ]
    assert row["steps"][0]["sql"] == STEPS[0]["sql"]["up"]
    assert row["steps"][0]["startedAt"] == st["steps"][0]["startedAt"]

    printed = dbmigrate_report(cluster, "m", "-n", namespace)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == report
    # The same through kubectl: the plugin installed with the package, found on the PATH.
    plugin = kubectl_plugin(cluster, "report", "m", "-n", namespace)
    assert plugin.returncode == 0, plugin.stderr
    assert plugin.stdout == report

    # Deleted with its migration (owner reference, the garbage collector).
    cluster.kubectl("delete", "dbm", "m", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: report_config_map(cluster, namespace) is None,
        60,
        "the report ConfigMap to be garbage-collected",
    )


def test_report_before_the_end_says_why_there_is_none(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    # No Secret: the migration cannot start, and has no report.
    cluster.apply(migration(namespace, STEPS, name="waiting"))
    wait_for(
        lambda: (cluster.get("dbm", "waiting", "-n", namespace).get("status") or {}).get(
            "conditions"
        ),
        60,
        "the operator to look at the migration",
    )
    printed = dbmigrate_report(cluster, "waiting", "-n", namespace)
    assert printed.returncode == 1
    assert "no report yet: the migration is Pending" in printed.stderr
    missing = dbmigrate_report(cluster, "nope", "-n", namespace)
    assert missing.returncode == 1
    assert f"no DatabaseMigration 'nope' in namespace {namespace!r}" in missing.stderr
