"""The chart's RBAC is enough to run a migration: the operator, authenticated with nothing but
the chart's ServiceAccount token (namespaced and cluster-wide installs, kopf peering on), takes
a migration with an SQL step and a backfill Job to Succeeded, and leaves its report ConfigMap."""

from __future__ import annotations

import base64

import psycopg

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import Installed, report_config_map
from tests.fixtures.operator import OperatorProcess


def test_operator_runs_a_migration_with_the_charts_rbac(
    cluster: Cluster,
    installed: Installed,
    pg_dsn: str,
    local_executor: Cluster,
) -> None:
    ns = installed.namespace
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, v int)")
        conn.execute("INSERT INTO t SELECT g, NULL FROM generate_series(1, 5000) g")
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": ns},
            "data": {"dsn": base64.b64encode(pg_dsn.encode()).decode()},
        }
    )
    release = installed.serviceaccount.removesuffix("-dbmigrate-operator")
    operator = OperatorProcess(
        ns,
        installed.operator.kubeconfig,
        args=("--peering",),
        env={"DBMIGRATE_PEERING": release},
        # as the chart runs it: watching its namespaces, or all of them
        all_namespaces=installed.mode == "cluster-wide",
    )
    operator.start()
    try:
        cluster.apply(
            {
                "apiVersion": "dbmigrate.io/v1alpha1",
                "kind": "DatabaseMigration",
                "metadata": {"name": "rbac", "namespace": ns},
                "spec": {
                    "migrationId": "20240401000000_rbac_proof",
                    "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
                    "safety": {"lint": "Off"},
                    "steps": [
                        {"name": "add", "sql": {"up": "ALTER TABLE t ADD COLUMN w int"}},
                        {"name": "fill", "backfill": {"table": "t", "set": "w = id * 2"}},
                    ],
                },
            }
        )
        try:
            st = wait_for(
                lambda: (
                    (s := cluster.get("dbm", "rbac", "-n", ns).get("status") or {}).get("phase")
                    in ("Succeeded", "Failed")
                    and s
                ),
                180,
                "the migration to finish",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{operator.log()[-4000:]}") from None
        assert st["phase"] == "Succeeded", st
        events = cluster.kubectl("get", "events", "-n", ns).stdout
        assert "StepSucceeded" in events
        assert "ReportFailed" not in events
        # the report ConfigMap, created with the chart's grants (create, update on configmaps)
        report = report_config_map(cluster, ns, "rbac")
        assert report is not None
        assert report["data"]["report.md"].startswith("# Migration Log")
        with psycopg.connect(pg_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM t WHERE w = id * 2").fetchone() == (5000,)
        assert "Forbidden" not in operator.log()
        assert "403" not in operator.log()
    finally:
        operator.stop()
        operator._log.unlink(missing_ok=True)
