"""Two teams, one operator: whoever may create DatabaseMigrations in namespace A gains nothing in
namespace B, and — with the operator's label mode on (`DBMIGRATE_SECRET_LABEL`, the chart's
`secrets.requireLabel`) — nothing but the Secrets marked for migrations in A.

Each team has a ServiceAccount allowed to do one thing: create DatabaseMigrations in its own
namespace. Every way a spec could reach across (another namespace's Secret, ConfigMap or
Deployment; a namespace field the API does not have; a Job reading an unmarked Secret) is
refused with a clear reason and touches nothing: no Job, no database session, no change in B.
(An Argo CD Application deploying elsewhere is refused in tests/e2e/test_rollback.py.)
Real API server with RBAC, the operator as a process, real PostgreSQL.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import condition, migration, serviceaccount_kubeconfig, status
from tests.fixtures.operator import OperatorProcess, password_leaks

LABEL = ("dbmigrate.io/dsn", "true")


@dataclass
class Team:
    namespace: str
    kubectl: Cluster  # authenticated as the team's ServiceAccount, nothing else


@dataclass
class Tenants:
    a: Team
    b: Team
    admin: Cluster
    operator: OperatorProcess


def _team(cluster: Cluster, namespace: str, path: Path) -> Team:
    cluster.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "team"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "migrator"},
            "rules": [
                {
                    "apiGroups": ["dbmigrate.io"],
                    "resources": ["databasemigrations"],
                    "verbs": ["create"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "migrator"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "migrator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "team", "namespace": namespace}],
        },
        namespace=namespace,
    )
    return Team(namespace, Cluster(serviceaccount_kubeconfig(cluster, namespace, "team", path)))


def _secret(name: str, dsn: str, *, labelled: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labelled:
        meta["labels"] = {LABEL[0]: LABEL[1]}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "data": {"dsn": base64.b64encode(dsn.encode()).decode(), "token": "czNjcjN0"},
    }


@pytest.fixture
def tenants(cluster: Cluster, namespace: str, pg_dsn: str, tmp_path: Path) -> Iterator[Tenants]:
    other = cluster.create_namespace(f"{namespace[:30]}-b")
    try:
        a = _team(cluster, namespace, tmp_path / "a")
        b = _team(cluster, other, tmp_path / "b")
        # Team A: its database's DSN marked for migrations, and a Secret that is not.
        cluster.apply(
            _secret("db", pg_dsn, labelled=True),
            _secret("app-secrets", pg_dsn, labelled=False),
            namespace=namespace,
        )
        # Team B's own things, named so a spec in A could try to reach them.
        cluster.apply(
            _secret("b-db", pg_dsn, labelled=True),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "b-sql"},
                "data": {"up.sql": "DROP TABLE IF EXISTS victim"},
            },
            namespace=other,
        )
        op = OperatorProcess(
            namespace,
            cluster.kubeconfig,
            args=("-n", other),
            env={"DBMIGRATE_SECRET_LABEL": "=".join(LABEL)},
        )
        op.start()
        try:
            yield Tenants(a, b, cluster, op)
            for ns in (namespace, other):
                leaked = password_leaks(cluster, ns, op)
                assert not leaked, f"the test database's password appears in: {leaked}"
        finally:
            op.stop()
            op._log.unlink(missing_ok=True)
    finally:
        cluster.delete_namespace(other)


def _resource_versions(cluster: Cluster, namespace: str) -> dict[str, str]:
    items = cluster.get("secrets,configmaps,deployments,jobs", "-n", namespace)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


def _ready_reason(cluster: Cluster, namespace: str) -> str | None:
    conditions = status(cluster, namespace).get("conditions") or []
    return next((c.get("reason") for c in conditions if c["type"] == "Ready"), None)


def _create(team: Team, manifest: dict[str, Any]) -> Any:
    return team.kubectl.kubectl("create", "-f", "-", input=yaml.safe_dump(manifest), check=False)


def test_a_team_can_create_migrations_in_its_own_namespace_only(tenants: Tenants) -> None:
    a, b = tenants.a, tenants.b
    m = migration(b.namespace, [{"name": "s", "sql": {"up": "SELECT 1"}}])
    proc = _create(a, m)
    assert proc.returncode != 0
    assert "forbidden" in proc.stderr.lower(), proc.stderr
    assert tenants.admin.kubectl("get", "dbm", "-n", b.namespace, "-o", "name").stdout == ""
    for verb, resource in (("get", "secrets"), ("list", "secrets"), ("create", "pods")):
        can = a.kubectl.kubectl("auth", "can-i", verb, resource, "-n", a.namespace, check=False)
        assert can.stdout.strip() == "no", f"the team may {verb} {resource}: the test is void"


# A namespace field the API does not have: refused at `kubectl create` (strict field
# validation), so no object exists to act on.
ACROSS_BY_FIELD = [
    pytest.param(
        {"database": {"dsnSecretRef": {"name": "b-db", "key": "dsn", "namespace": "B"}}},
        "unknown field",
        id="secret-namespace",
    ),
    pytest.param(
        {"target": {"deployment": "B/app"}},
        "spec.target.deployment: Invalid value",
        id="deployment-path",
    ),
    pytest.param(
        {
            "steps": [
                {
                    "name": "s",
                    "sql": {
                        "upFrom": {
                            "configMapKeyRef": {"name": "b-sql", "key": "up.sql", "namespace": "B"}
                        }
                    },
                }
            ]
        },
        "unknown field",
        id="configmap-namespace",
    ),
    pytest.param(
        {
            "steps": [
                {
                    "name": "t",
                    "job": {
                        "image": "busybox",
                        "env": [
                            {
                                "name": "TOKEN",
                                "valueFrom": {
                                    "secretKeyRef": {"name": "b-db", "key": "dsn", "namespace": "B"}
                                },
                            }
                        ],
                    },
                }
            ]
        },
        "unknown field",
        id="job-secret-namespace",
    ),
]


def _spec_with(tenants: Tenants, patch: dict[str, Any]) -> dict[str, Any]:
    m = migration(tenants.a.namespace, [{"name": "s", "sql": {"up": "SELECT 1"}}])
    m["spec"].update(_replace_b(patch, tenants.b.namespace))
    return m


def _replace_b(value: Any, namespace: str) -> Any:
    if isinstance(value, dict):
        return {k: _replace_b(v, namespace) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_b(v, namespace) for v in value]
    if value == "B":
        return namespace
    if isinstance(value, str) and value.startswith("B/"):
        return f"{namespace}/{value[2:]}"
    return value


@pytest.mark.parametrize(("patch", "complaint"), ACROSS_BY_FIELD)
def test_no_spec_field_names_another_namespace(
    tenants: Tenants, patch: dict[str, Any], complaint: str
) -> None:
    proc = _create(tenants.a, _spec_with(tenants, patch))
    assert proc.returncode != 0, "accepted a reference into another namespace"
    assert complaint in proc.stderr, proc.stderr
    created = tenants.admin.kubectl("get", "dbm", "-n", tenants.a.namespace, "-o", "name")
    assert created.stdout == ""


# A name that exists only in B: looked up in A, where the migration is, and not found there.
ACROSS_BY_NAME = [
    pytest.param(
        {"database": {"dsnSecretRef": {"name": "b-db", "key": "dsn"}}},
        "SecretNotFound",
        id="secret",
    ),
    pytest.param(
        {
            "steps": [
                {
                    "name": "s",
                    "sql": {"upFrom": {"configMapKeyRef": {"name": "b-sql", "key": "up.sql"}}},
                }
            ]
        },
        "ConfigMapNotFound",
        id="configmap",
    ),
    pytest.param({"target": {"deployment": "b-app"}}, "DeploymentNotFound", id="deployment"),
    # Label mode: a Secret of A itself that is not marked for migrations.
    pytest.param(
        {"database": {"dsnSecretRef": {"name": "app-secrets", "key": "dsn"}}},
        "SecretNotPermitted",
        id="unlabelled-dsn-secret",
    ),
    pytest.param(
        {
            "steps": [
                {
                    "name": "t",
                    "job": {
                        "image": "busybox",
                        "command": ["sh", "-c", "echo $TOKEN"],
                        "env": [
                            {
                                "name": "TOKEN",
                                "valueFrom": {
                                    "secretKeyRef": {"name": "app-secrets", "key": "token"}
                                },
                            }
                        ],
                    },
                }
            ]
        },
        "SecretNotPermitted",
        id="unlabelled-job-secret",
    ),
]


@pytest.mark.parametrize(("patch", "reason"), ACROSS_BY_NAME)
def test_what_a_migration_may_not_use_is_refused_and_nothing_is_touched(
    tenants: Tenants, pg_dsn: str, patch: dict[str, Any], reason: str
) -> None:
    admin, a, b = tenants.admin, tenants.a, tenants.b
    if "target" in patch:
        admin.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "b-app"},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "b"}},
                    "template": {
                        "metadata": {"labels": {"app": "b"}},
                        "spec": {"containers": [{"name": "app", "image": "busybox:1"}]},
                    },
                },
            },
            namespace=b.namespace,
        )
    before = _resource_versions(admin, b.namespace)
    proc = _create(a, _spec_with(tenants, patch))
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: _ready_reason(admin, a.namespace) == reason, 60, f"reason {reason}")
    st = status(admin, a.namespace)
    assert st.get("phase", "Pending") == "Pending"
    message = condition(st, "Ready")["message"]
    if reason != "DeploymentNotFound":
        assert repr(a.namespace) in message, "says where it looked"
    events = admin.get("events", "-n", a.namespace)["items"]
    assert any(e.get("reason") == reason for e in events), "no event says why"
    # Nothing happened anywhere: no Job, no change in B, not a statement in the database.
    assert admin.get("jobs", "-n", a.namespace)["items"] == []
    assert _resource_versions(admin, b.namespace) == before
    with psycopg.connect(pg_dsn) as conn:
        schemas = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'dbmigrate'"
        ).fetchone()
    if reason.startswith("Secret"):
        assert schemas == (0,), "the operator connected with a Secret it may not use"


def test_a_secret_labelled_later_is_used(tenants: Tenants, pg_dsn: str) -> None:
    """The refusal is no dead end: marking the Secret for migrations lets the migration run."""
    admin, a = tenants.admin, tenants.a
    m = _spec_with(tenants, {"database": {"dsnSecretRef": {"name": "app-secrets", "key": "dsn"}}})
    m["spec"]["steps"] = [{"name": "s", "sql": {"up": "CREATE TABLE labelled (id int)"}}]
    assert _create(a, m).returncode == 0
    wait_for(lambda: _ready_reason(admin, a.namespace) == "SecretNotPermitted", 60, "refusal")
    admin.kubectl("label", "secret", "app-secrets", "=".join(LABEL), "-n", a.namespace)
    wait_for(
        lambda: status(admin, a.namespace).get("phase") == "Succeeded", 90, "the migration to run"
    )
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('labelled') IS NOT NULL").fetchone() == (True,)
