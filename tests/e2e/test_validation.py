"""Invalid DatabaseMigrations are rejected at `kubectl apply` by the CRD schema and its CEL rules,
with a message that names the field; immutable fields cannot be changed once created.

Each case is one mistake applied to an otherwise valid resource (server-side dry run: the real
API server's validation, nothing stored).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from dbmigrate_dev.cluster_client import Cluster

VALID: dict[str, Any] = {
    "apiVersion": "dbmigrate.io/v1alpha1",
    "kind": "DatabaseMigration",
    "metadata": {"name": "m"},
    "spec": {
        "migrationId": "20240115120000_add_email_verified_column",
        "database": {"dsnSecretRef": {"name": "shop-db", "key": "dsn"}},
        "target": {"deployment": "shop-api"},
        "steps": [
            {
                "name": "expand",
                "sql": {
                    "up": "ALTER TABLE users ADD COLUMN v boolean",
                    "down": "ALTER TABLE users DROP COLUMN v",
                },
            },
            {"name": "backfill", "backfill": {"table": "users", "set": "v = true"}},
            {"name": "release", "awaitRollout": {"image": "shop-api:v2"}},
        ],
        "analysis": {
            "prometheus": {"address": "http://prometheus:9090"},
            "metrics": [{"name": "error-rate", "query": "sum(x)", "max": 0.05}],
        },
    },
}

Mutation = Callable[[dict[str, Any]], None]


def steps(m: dict[str, Any]) -> list[dict[str, Any]]:
    return m["spec"]["steps"]  # type: ignore[no-any-return]


def set_path(path: str, value: Any) -> Mutation:
    def mutate(m: dict[str, Any]) -> None:
        node: Any = m
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        last = keys[-1]
        if value is DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


DELETE = object()

CASES = [
    pytest.param(
        set_path("spec.migrationId", "add_email"), "spec.migrationId", id="id-no-timestamp"
    ),
    pytest.param(
        set_path("spec.migrationId", "20240115120000_Add-Email"),
        "spec.migrationId",
        id="id-uppercase",
    ),
    pytest.param(set_path("spec.migrationId", DELETE), "spec.migrationId", id="id-missing"),
    pytest.param(set_path("spec.database", DELETE), "spec.database", id="database-missing"),
    pytest.param(
        set_path("spec.database.dsnSecretRef.key", DELETE),
        "spec.database.dsnSecretRef.key",
        id="secret-key-missing",
    ),
    pytest.param(
        set_path("spec.database.dsnSecretRef.name", "Shop_DB"),
        "spec.database.dsnSecretRef.name",
        id="secret-name-invalid",
    ),
    pytest.param(set_path("spec.steps", []), "spec.steps", id="no-steps"),
    pytest.param(
        set_path("spec.steps.0.sql.up", "SELECT 1;" + " " * 65536),
        "spec.steps[0].sql.up",
        id="inline-sql-over-64kib",
    ),
    pytest.param(
        set_path("spec.steps", [{"name": f"s{i}", "sql": {"up": "SELECT 1"}} for i in range(51)]),
        "spec.steps",
        id="too-many-steps",
    ),
    pytest.param(
        set_path("spec.steps.0.name", "Expand Step"),
        "spec.steps[0].name",
        id="step-name-not-dns-label",
    ),
    pytest.param(
        set_path("spec.steps.1.name", "expand"),
        "step names must be unique",
        id="duplicate-step-names",
    ),
    pytest.param(
        set_path("spec.steps.0.backfill", {"table": "users", "set": "v = true"}),
        "exactly one of sql, backfill, awaitRollout, job",
        id="two-step-kinds",
    ),
    pytest.param(
        set_path("spec.steps.0", {"name": "empty"}),
        "exactly one of sql, backfill, awaitRollout, job",
        id="no-step-kind",
    ),
    pytest.param(
        set_path("spec.steps.0.sql", {"down": "SELECT 1"}),
        "exactly one of sql.up and sql.upFrom",
        id="sql-without-up",
    ),
    pytest.param(
        set_path("spec.steps.0.sql.upFrom", {"configMapKeyRef": {"name": "c", "key": "k"}}),
        "exactly one of sql.up and sql.upFrom",
        id="sql-up-and-upfrom",
    ),
    pytest.param(
        set_path("spec.steps.0.sql.transaction", "Sometimes"),
        "spec.steps[0].sql.transaction",
        id="bad-transaction-mode",
    ),
    pytest.param(set_path("spec.steps.0.sql.up", ""), "spec.steps[0].sql.up", id="empty-sql"),
    pytest.param(
        set_path("spec.steps.1.backfill.table", "users; DROP TABLE x"),
        "spec.steps[1].backfill.table",
        id="backfill-table-not-identifier",
    ),
    pytest.param(
        set_path("spec.steps.1.backfill.batchSize", 0),
        "spec.steps[1].backfill.batchSize",
        id="batch-size-zero",
    ),
    pytest.param(
        set_path("spec.steps.1.backfill.parallelism", 17),
        "spec.steps[1].backfill.parallelism",
        id="parallelism-too-high",
    ),
    pytest.param(
        set_path("spec.steps.1.backfill.parallelism", 0),
        "spec.steps[1].backfill.parallelism",
        id="parallelism-zero",
    ),
    pytest.param(
        set_path("spec.steps.1.backfill.parallelism", "many"),
        "backfill.parallelism must be 1 to 16, or auto",
        id="parallelism-not-auto",
    ),
    pytest.param(
        set_path("spec.steps.1.backfill.parallelism", "4"),
        "backfill.parallelism must be 1 to 16, or auto",
        id="parallelism-number-as-string",
    ),
    pytest.param(
        set_path("spec.steps.1.backfill.pause", "soon"),
        "spec.steps[1].backfill.pause",
        id="pause-not-a-duration",
    ),
    pytest.param(
        set_path("spec.steps.1.backfill.maxBatchSize", 10),
        "maxBatchSize must be at least",
        id="max-below-start-batch",
    ),
    pytest.param(
        set_path("spec.steps.1.backfill.set", DELETE),
        "spec.steps[1].backfill.set",
        id="backfill-without-set",
    ),
    pytest.param(
        set_path("spec.target", DELETE),
        "awaitRollout steps need target.deployment",
        id="await-without-target",
    ),
    pytest.param(
        set_path("spec.steps.2.awaitRollout.timeout", "30 minutes"),
        "spec.steps[2].awaitRollout.timeout",
        id="await-timeout-not-duration",
    ),
    pytest.param(
        set_path("spec.steps.1.verify", "SELECT true"),
        "verify is only allowed",
        id="verify-on-backfill",
    ),
    pytest.param(
        set_path("spec.analysis.metrics.0.max", DELETE),
        "at least one of max, min, maxRatioToBaseline",
        id="metric-without-threshold",
    ),
    pytest.param(
        set_path("spec.analysis.metrics.0.maxRatioToBaseline", 0),
        "spec.analysis.metrics[0].maxRatioToBaseline",
        id="ratio-zero",
    ),
    pytest.param(
        set_path("spec.analysis.prometheus", DELETE),
        "analysis.prometheus is required when a metric has a query",
        id="analysis-without-prometheus",
    ),
    pytest.param(
        set_path("spec.analysis.prometheus.address", "prometheus:9090"),
        "spec.analysis.prometheus.address",
        id="prometheus-not-url",
    ),
    pytest.param(
        set_path("spec.analysis.failureLimit", 0),
        "spec.analysis.failureLimit",
        id="failure-limit-zero",
    ),
    pytest.param(
        set_path("spec.analysis.onInconclusive", "Panic"),
        "spec.analysis.onInconclusive",
        id="bad-on-inconclusive",
    ),
    pytest.param(
        set_path("spec.analysis.metrics.1", {"name": "error-rate", "query": "q", "max": 1}),
        "analysis metric names must be unique",
        id="duplicate-metric-names",
    ),
    pytest.param(
        set_path("spec.rollback", {"policy": "Sometimes"}),
        "spec.rollback.policy",
        id="bad-rollback-policy",
    ),
    pytest.param(
        set_path("spec.safety", {"lint": "Strict"}), "spec.safety.lint", id="bad-lint-mode"
    ),
    pytest.param(
        set_path("spec.safety", {"lockTimeout": "1 second"}),
        "spec.safety.lockTimeout",
        id="lock-timeout-not-duration",
    ),
    pytest.param(
        set_path("spec.safety", {"lockTimeout": "0s"}),
        "safety.lockTimeout must be between 10ms and 10m",
        id="lock-timeout-off",
    ),
    pytest.param(
        set_path("spec.safety", {"lockTimeout": "11m"}),
        "safety.lockTimeout must be between 10ms and 10m",
        id="lock-timeout-too-long",
    ),
    pytest.param(
        set_path("spec.safety", {"statementTimeout": "48h"}),
        "safety.statementTimeout must be 0s (none) or between 100ms and 24h",
        id="statement-timeout-too-long",
    ),
    pytest.param(
        set_path("spec.safety", {"statementTimeout": "1ms"}),
        "safety.statementTimeout must be 0s (none) or between 100ms and 24h",
        id="statement-timeout-too-short",
    ),
    pytest.param(
        set_path("spec.safety", {"maxBlockedDuration": "50ms"}),
        "safety.maxBlockedDuration must be between 100ms and 10m",
        id="max-blocked-too-short",
    ),
    pytest.param(
        set_path("spec.safety", {"maxBlockedDuration": "11m"}),
        "safety.maxBlockedDuration must be between 100ms and 10m",
        id="max-blocked-too-long",
    ),
    pytest.param(
        set_path("spec.analysis.metrics.0.sql", "SELECT 1"),
        "each analysis metric needs exactly one of query (PromQL) and sql",
        id="metric-query-and-sql",
    ),
    pytest.param(
        set_path("spec.analysis.metrics.0.query", DELETE),
        "each analysis metric needs exactly one of query (PromQL) and sql",
        id="metric-neither-query-nor-sql",
    ),
    pytest.param(
        set_path("spec.safety", {"lockRetries": -1}),
        "spec.safety.lockRetries",
        id="negative-lock-retries",
    ),
    pytest.param(set_path("spec.suspend", "yes"), "spec.suspend", id="suspend-not-bool"),
    pytest.param(
        set_path("spec.checklist", {"require": ["Approval", "Approval"]}),
        "checklist.require names each item once",
        id="checklist-item-twice",
    ),
    pytest.param(
        set_path("spec.checklist", {"require": ["Smoke"]}),
        "spec.checklist.require[0]",
        id="checklist-unknown-item",
    ),
    pytest.param(
        lambda m: (
            m["spec"].pop("analysis"),
            m["spec"].update(checklist={"require": ["Monitoring"]}),
        ),
        "checklist item Monitoring needs spec.analysis",
        id="checklist-monitoring-without-analysis",
    ),
    pytest.param(
        set_path("spec.rehearsal", {"sampleRows": 2_000_000}),
        "spec.rehearsal.sampleRows",
        id="rehearsal-too-many-sample-rows",
    ),
    pytest.param(
        set_path("spec.rehearsal", {"sampleRows": -1}),
        "spec.rehearsal.sampleRows",
        id="rehearsal-negative-sample-rows",
    ),
    pytest.param(
        set_path("spec.rehearsal", {"timeout": "30s"}),
        "rehearsal.timeout must be between 1m and 24h",
        id="rehearsal-timeout-too-short",
    ),
    pytest.param(
        set_path("spec.rehearsal", {"dsnSecretRef": {"name": "staging"}}),
        "spec.rehearsal.dsnSecretRef.key",
        id="rehearsal-secret-without-key",
    ),
]


def dry_run(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> tuple[int, str]:
    proc = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(manifest),
        check=False,
    )
    return proc.returncode, proc.stderr + proc.stdout


def test_the_valid_base_is_accepted(cluster: Cluster, namespace: str) -> None:
    code, out = dry_run(cluster, namespace, VALID)
    assert code == 0, out


def test_sql_metrics_need_no_prometheus(cluster: Cluster, namespace: str) -> None:
    manifest = copy.deepcopy(VALID)
    manifest["spec"]["analysis"] = {
        "metrics": [{"name": "nulls", "sql": "SELECT count(*) FROM users", "max": 0}]
    }
    manifest["spec"]["safety"] = {"maxBlockedDuration": "500ms"}
    code, out = dry_run(cluster, namespace, manifest)
    assert code == 0, out


def test_a_rehearsal_is_accepted(cluster: Cluster, namespace: str) -> None:
    manifest = copy.deepcopy(VALID)
    set_path("spec.rehearsal", {"sampleRows": 0, "timeout": "24h"})(manifest)
    code, out = dry_run(cluster, namespace, manifest)
    assert code == 0, out


@pytest.mark.parametrize("parallelism", [1, 16, "auto"], ids=str)
def test_parallelism_is_a_count_or_auto(cluster: Cluster, namespace: str, parallelism: Any) -> None:
    manifest = copy.deepcopy(VALID)
    set_path("spec.steps.1.backfill.parallelism", parallelism)(manifest)
    code, out = dry_run(cluster, namespace, manifest)
    assert code == 0, out


@pytest.mark.parametrize(("mutate", "names"), CASES)
def test_invalid_resource_is_rejected_naming_the_field(
    cluster: Cluster, namespace: str, mutate: Mutation, names: str
) -> None:
    manifest = copy.deepcopy(VALID)
    if "analysis" in manifest["spec"] and len(manifest["spec"]["analysis"]["metrics"]) == 1:
        manifest["spec"]["analysis"]["metrics"].append(
            {"name": "latency", "query": "q2", "maxRatioToBaseline": 2}
        )
    mutate(manifest)
    code, out = dry_run(cluster, namespace, manifest)
    assert code != 0, "accepted, should have been rejected"
    assert names in out, out


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        pytest.param(
            "spec.migrationId",
            "20250101000000_other",
            "migrationId is immutable",
            id="migration-id",
        ),
        pytest.param(
            "spec.database.dsnSecretRef.name", "other-db", "database is immutable", id="database"
        ),
        pytest.param(
            "spec.steps.0.sql.up",
            "ALTER TABLE users ADD COLUMN w int",
            "steps are immutable",
            id="steps",
        ),
    ],
)
def test_immutable_fields(
    cluster: Cluster, namespace: str, path: str, value: str, message: str
) -> None:
    cluster.apply(VALID, namespace=namespace)
    changed = copy.deepcopy(VALID)
    set_path(path, value)(changed)
    code, out = dry_run(cluster, namespace, changed)
    assert code != 0
    assert message in out


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param("spec.suspend", True, id="suspend"),
        pytest.param("spec.rollback", {"policy": "Manual"}, id="rollback"),
        pytest.param("spec.analysis.metrics.0.max", 0.1, id="analysis-threshold"),
    ],
)
def test_mutable_fields(cluster: Cluster, namespace: str, path: str, value: Any) -> None:
    cluster.apply(VALID, namespace=namespace)
    changed = copy.deepcopy(VALID)
    set_path(path, value)(changed)
    code, out = dry_run(cluster, namespace, changed)
    assert code == 0, out
