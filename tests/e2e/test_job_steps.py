"""`job` steps: any migration tool as a Kubernetes Job under the same gates.

Here the tool is a real `alembic upgrade head` (alembic from PyPI) that the local pod executor
runs against the fixture PostgreSQL, with the database URL from a Secret via secretKeyRef. A
failing tool fails the step with the pod's last termination message in status.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbmigrate_dev.cluster_client import Cluster
from dbmigrate_dev.kubelet import HOST_EXEC_IMAGE
from tests.e2e.helpers import ALEMBIC_PROJECT, history, migration, wait_phase
from tests.fixtures.operator import OperatorProcess


def alembic_step(project: Path, env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    alembic = shutil.which("alembic", path=str(Path(sys.executable).parent))
    assert alembic is not None, "alembic is a test dependency"
    return {
        "name": "alembic",
        "job": {
            "image": HOST_EXEC_IMAGE,
            "command": [alembic, "-c", str(project / "alembic.ini"), "upgrade", "head"],
            "env": [
                {
                    "name": "DATABASE_URL",
                    "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}},
                },
                *(env or []),
            ],
            "backoffLimit": 0,
        },
        "verify": "SELECT version_num = '0002' FROM alembic_version",
    }


@pytest.fixture
def db(pg_dsn: str, db_secret: Callable[[str, str], None], local_executor: Cluster) -> str:
    db_secret("db", pg_dsn)
    return pg_dsn


def test_alembic_upgrade_head_as_a_job_step(
    cluster: Cluster, namespace: str, db: str, operator: OperatorProcess
) -> None:
    cluster.apply(migration(namespace, [alembic_step(ALEMBIC_PROJECT)]))
    st = wait_phase(cluster, namespace, "Succeeded", timeout=120)
    step = st["steps"][0]
    assert step["job"]
    assert step["state"] == "Succeeded"
    job = cluster.get("job", step["job"], "-n", namespace)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "DatabaseMigration"
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert all("value" not in e for e in env if e["name"] == "DATABASE_URL")  # secretKeyRef only
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0002",)
        cols = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders' "
            "ORDER BY ordinal_position"
        ).fetchall()
    assert [c[0] for c in cols] == ["id", "total_cents", "status"]
    assert history(db) == [("alembic", "up")]


def test_failing_tool_fails_the_step_with_its_message(
    cluster: Cluster, namespace: str, db: str, operator: OperatorProcess
) -> None:
    step = alembic_step(ALEMBIC_PROJECT, env=[{"name": "BREAK_MIGRATION", "value": "1"}])
    cluster.apply(migration(namespace, [step], rollback={"policy": "Manual"}))
    st = wait_phase(cluster, namespace, "Failed", timeout=120)
    failed = st["steps"][0]
    assert failed["reason"] == "JobFailed"
    assert "revision 0002 refuses to run" in failed["message"]
    with psycopg.connect(db) as conn:  # alembic runs all revisions in one transaction
        assert conn.execute("SELECT to_regclass('orders')").fetchone() == (None,)
    assert history(db) == []
