"""The pre-deployment checklist (`spec.checklist`) against a real API server.

Aspects: a migration whose checklist requires approval waits (Waiting, ChecklistIncomplete)
with nothing applied and without the database's migration lock — another migration of the
same database runs meanwhile — until `kubectl annotate … dbmigrate.io/approved-by=…`; who set
the annotation is taken from managedFields and shown in status, `kubectl describe` and the
Started event. Monitoring that cannot measure (Prometheus unreachable) holds the start too.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from dbmigrate_dev.cluster_client import Cluster
from dbmigrate_dev.postgres import free_port
from tests.e2e.helpers import condition, history, migration, status, wait_phase
from tests.fixtures.operator import OperatorProcess

STEPS = [
    {
        "name": "expand",
        "sql": {
            "up": "ALTER TABLE users ADD COLUMN email_verified boolean",
            "down": "ALTER TABLE users DROP COLUMN email_verified",
        },
    }
]


@pytest.fixture
def users_db(pg_dsn: str, db_secret: Callable[[str, str], None]) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigserial PRIMARY KEY, email text)")
        conn.execute("CREATE TABLE audit (id bigserial PRIMARY KEY)")
    db_secret("db", pg_dsn)
    return pg_dsn


def _item(st: dict[str, object], name: str) -> dict[str, object]:
    items = (st.get("checklist") or {}).get("items") or []  # type: ignore[union-attr]
    return next(i for i in items if i["name"] == name)


def test_held_until_approved_without_holding_the_lock(
    cluster: Cluster, namespace: str, users_db: str, operator: OperatorProcess
) -> None:
    cluster.apply(
        migration(
            namespace,
            STEPS,
            checklist={"require": ["Approval", "RollbackPlan", "Lint"]},
            safety={"lint": "Warn", "lockTimeout": "200ms"},
        )
    )
    st = wait_phase(cluster, namespace, "Waiting")
    ready = condition(st, "Ready")
    assert ready["reason"] == "ChecklistIncomplete"
    assert "Approval (annotate dbmigrate.io/approved-by=<who approves>)" in ready["message"]
    assert condition(st, "Stalled")["status"] == "False"  # waiting for a person, not stuck
    assert st["checklist"]["missing"] == ["Approval"]
    assert _item(st, "RollbackPlan")["satisfied"] is True
    assert _item(st, "Lint")["satisfied"] is True
    assert "startedAt" not in st
    assert history(users_db) == []

    # The waiting migration does not hold the database's migration lock: another one runs.
    other = migration(
        namespace,
        [{"name": "audit", "sql": {"up": "ALTER TABLE audit ADD COLUMN at timestamptz"}}],
        name="other",
        migration_id="20240116120000_audit_at",
    )
    cluster.apply(other)
    wait_phase(cluster, namespace, "Succeeded", name="other")
    assert status(cluster, namespace)["phase"] == "Waiting"

    cluster.kubectl("annotate", "dbm", "m", "-n", namespace, "dbmigrate.io/approved-by=alice")
    st = wait_phase(cluster, namespace, "Succeeded")
    checklist = st["checklist"]
    assert checklist["complete"] is True
    assert checklist["approvedBy"] == "alice"
    assert checklist["approvalSetBy"] == "kubectl-annotate"
    assert checklist["approvedAt"]
    assert "[x] Approval (required): approved by alice (set with kubectl-annotate" in (
        "\n".join(checklist["checkboxes"])
    )
    with psycopg.connect(users_db) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
        ).fetchall()
    assert ("email_verified",) in columns

    describe = cluster.kubectl("describe", "dbm", "m", "-n", namespace).stdout
    assert "[x] RollbackPlan (required)" in describe
    assert "ChecklistIncomplete" in describe  # the event posted while it waited
    assert "checklist complete (Approval, RollbackPlan, Lint; approved by alice" in describe


def test_unmeasurable_monitoring_holds_the_start(
    cluster: Cluster, namespace: str, users_db: str, operator: OperatorProcess
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    cluster.apply(
        migration(
            namespace,
            STEPS,
            checklist={"require": ["Monitoring"]},
            analysis={
                "prometheus": {"address": closed},
                "interval": "1s",
                "metrics": [{"name": "errors", "query": "sum(rate(x[1m]))", "max": 1}],
            },
        )
    )
    st = wait_phase(cluster, namespace, "Waiting")
    ready = condition(st, "Ready")
    assert ready["reason"] == "ChecklistIncomplete"
    assert "Monitoring (no baseline for 1 metric(s): errors: cannot connect" in ready["message"]
    assert history(users_db) == []
