"""What the e2e test modules share: building DatabaseMigrations and reading their status and
history, the rollback tests' app Deployment, the chart and helm, the alembic project.

Fixtures live in tests/fixtures/ (pytest plugins); test modules import from here, never from
each other.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row

from dbmigrate_dev.cluster_client import Cluster, wait_for
from dbmigrate_dev.stack import kind_chart_values

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
CHART = ROOT / "charts" / "dbmigrate-operator"
PEERING_CRDS = ROOT / "crds" / "kopf-peering.yaml"


# --- DatabaseMigrations: manifests, status, the history table --------------------------------


MIGRATION_ID = "20240115120000_add_email_verified_column"


def migration(
    namespace: str, steps: list[dict[str, Any]], *, name: str = "m", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "dbmigrate.io/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "migrationId": spec.pop("migration_id", MIGRATION_ID),
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "safety": {"lint": "Off", "lockTimeout": "200ms"},
            "steps": steps,
            **spec,
        },
    }


def status(cluster: Cluster, namespace: str, name: str = "m") -> dict[str, Any]:
    return cluster.get("dbm", name, "-n", namespace).get("status") or {}


def wait_phase(
    cluster: Cluster, namespace: str, phase: str, timeout: float = 60, name: str = "m"
) -> dict[str, Any]:
    return wait_for(
        lambda: (s := status(cluster, namespace, name)).get("phase") == phase and s,
        timeout,
        f"DatabaseMigration {name} to be {phase}",
    )


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in st.get("conditions", []) if c["type"] == type_)


def history(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('dbmigrate.history')").fetchone() == (None,):
            return []
        return conn.execute("SELECT step, direction FROM dbmigrate.history ORDER BY id").fetchall()


# --- the migration's record: its report ConfigMap, dbmigrate.runs, `dbmigrate report` -----------


def report_config_map(cluster: Cluster, namespace: str, name: str = "m") -> dict[str, Any] | None:
    got = cluster.kubectl(
        "get", "configmap", f"{name}-report", "-n", namespace, "-o", "json", check=False
    )
    return json.loads(got.stdout) if got.returncode == 0 else None


def runs(dsn: str) -> list[dict[str, Any]]:
    """The rows of `dbmigrate.runs`, oldest first."""
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT migration_id, name, uid, outcome, started_at, finished_at, steps, report "
            "FROM dbmigrate.runs ORDER BY id"
        )
        return cur.fetchall()


def dbmigrate_report(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`dbmigrate report …` as a user runs it, with the cluster's kubeconfig."""
    return subprocess.run(
        [sys.executable, "-m", "dbmigrate", "report", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        timeout=60,
        check=False,
    )


def plugin_env(cluster: Cluster, kubeconfig: Path | None = None) -> dict[str, str]:
    """The environment `kubectl dbmigrate` runs in: the cluster's (or the given) kubeconfig,
    and this Python's bin directory (where `kubectl-dbmigrate` is installed) on the PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "KUBECONFIG": str(kubeconfig or cluster.kubeconfig), "PATH": path}


def kubectl_plugin(
    cluster: Cluster, *args: str, kubeconfig: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`kubectl dbmigrate …`: kubectl itself finds `kubectl-dbmigrate` (installed with the
    package, next to this Python) on the PATH. With `kubeconfig`: as that user."""
    return subprocess.run(
        [cluster.kubectl_bin, "dbmigrate", *args],
        capture_output=True,
        text=True,
        env=plugin_env(cluster, kubeconfig),
        timeout=timeout,
        check=False,
    )


# --- the rollback tests' app: its Deployment and its users table -------------------------------


def app_deployment(
    namespace: str,
    image: str = "app:v1",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The test app's Deployment `app` (2 replicas, one container)."""
    metadata: dict[str, Any] = {"name": "app", "namespace": namespace, "labels": labels or {}}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def deploy_app(cluster: Cluster, namespace: str, labels: dict[str, str] | None = None) -> None:
    cluster.apply(app_deployment(namespace, labels=labels))
    cluster.kubectl("rollout", "status", "deploy/app", "-n", namespace, "--timeout=60s")


def step_state(cluster: Cluster, namespace: str, step: str) -> str | None:
    for st in status(cluster, namespace).get("steps", []):
        if st["name"] == step:
            return str(st["state"])
    return None


def roll_out_when_release_waits(cluster: Cluster, namespace: str) -> None:
    """Once the `release` awaitRollout step waits, roll the app's Deployment out to app:v2."""
    wait_for(
        lambda: step_state(cluster, namespace, "release") == "Waiting",
        60,
        "the release step to wait for v2",
    )
    cluster.kubectl("set", "image", "deploy/app", "app=app:v2", "-n", namespace)


def image(cluster: Cluster, namespace: str) -> str:
    dep = cluster.get("deploy", "app", "-n", namespace)
    return dep["spec"]["template"]["spec"]["containers"][0]["image"]  # type: ignore[no-any-return]


def columns(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
        ).fetchall()
    return {r[0] for r in rows}


# --- job steps: the alembic project -------------------------------------------------------------

ALEMBIC_PROJECT = DATA / "alembic"


# --- the chart: helm, and a kubeconfig of its ServiceAccount -------------------------------------


def run_helm(
    helm: str, *args: str, values: dict[str, Any] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [helm, *args, *(["-f", "-"] if values is not None else [])],
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def serviceaccount_kubeconfig(
    cluster: Cluster, namespace: str, serviceaccount: str, path: Path, duration: str = "1h"
) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount with a fresh token and nothing else
    (the API server and its CA are taken from the cluster's own kubeconfig)."""
    token = cluster.kubectl(
        "create", "token", serviceaccount, "-n", namespace, f"--duration={duration}"
    ).stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    server = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    cluster_entry = dict(server["cluster"])
    if "certificate-authority" in cluster_entry:
        ca = Path(cluster_entry.pop("certificate-authority"))
        cluster_entry["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster_entry}],
        "users": [{"name": serviceaccount, "user": {"token": token}}],
        "contexts": [
            {
                "name": serviceaccount,
                "context": {"cluster": "cluster", "user": serviceaccount, "namespace": namespace},
            }
        ],
        "current-context": serviceaccount,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class Installed:
    mode: str
    namespace: str  # the release's namespace, watched by the operator
    other: str  # a namespace the operator does not watch (in namespaced mode)
    serviceaccount: str
    operator: Cluster  # kubectl with the ServiceAccount's token only

    def can_i(self, verb: str, resource: str, where: str) -> bool:
        scope = {
            "ns": ["-n", self.namespace],
            "other": ["-n", self.other],
            "cluster": [],
        }[where]
        resource, _, sub = resource.partition("/")
        extra = [f"--subresource={sub}"] if sub else []
        proc = self.operator.kubectl("auth", "can-i", verb, resource, *scope, *extra, check=False)
        answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        assert answer in ("yes", "no"), proc.stdout + proc.stderr
        return answer == "yes"


INSTALL_MODES = ["namespaced", "cluster-wide"]
ARGOCD_APPLICATION_CRD = DATA / "argocd-application-crd.yaml"


# --- the chart rendered: values variations, helm template --------------------------------------

CHART_RELEASE = "dbm"
NS = "$NS"  # replaced by the test's namespace in CHART_VARIATIONS

CHART_VARIATIONS = [
    pytest.param({}, id="default"),
    pytest.param({"watchNamespaces": [NS]}, id="namespaced"),
    pytest.param({"argocd": {"enabled": True, "namespaces": [NS]}}, id="argocd"),
    pytest.param(
        {
            "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
            "grafanaDashboard": {"enabled": True},
        },
        id="monitoring",
    ),
    pytest.param({"replicaCount": 2}, id="replicas-2"),
    pytest.param({"replicaCount": 2, "watchNamespaces": [NS]}, id="replicas-2-namespaced"),
    pytest.param(
        {
            "image": {"digest": "sha256:" + "ab" * 32},
            "operator": {"verbose": True, "pollInterval": 2.5},
            "serviceAccount": {"name": "custom-sa"},
            "rbac": {"readCRDs": False},
        },
        id="digest-verbose-custom-sa",
    ),
    # what the demo installs on kind (hack/demo.py, dbmigrate_dev.stack.KindStack)
    pytest.param(kind_chart_values(NS), id="kind-demo"),
]


def substitute_namespace(value: Any, namespace: str) -> Any:
    if isinstance(value, dict):
        return {k: substitute_namespace(v, namespace) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_namespace(v, namespace) for v in value]
    return namespace if value == NS else value


def render_chart(
    helm: str,
    values: dict[str, Any],
    namespace: str = "dbmigrate-system",
    release: str = CHART_RELEASE,
) -> list[dict[str, Any]]:
    proc = run_helm(helm, "template", release, str(CHART), "--namespace", namespace, values=values)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"] if "value" in e}
