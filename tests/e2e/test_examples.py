"""Every migration in examples/ applied on the local cluster, as a user would, to Succeeded, in
a namespace that enforces the restricted Pod Security Standard (the API server's PodSecurity
admission refuses any pod of a backfill or tool Job that does not meet it).

Only what cannot be the same here is adapted: the namespace; the Prometheus address and the
app's job label (the test app stands in for shop-api); `settle` shortened; the alembic image
mapped to the alembic on this machine; the backup's S3 endpoint and bucket (a SeaweedFS server).
The test plays the CD system: when a migration waits for a new shop-api image, it rolls that
image out; and the approver: when the checklist waits only for the approval, it approves. Each
example's result is checked in PostgreSQL, and its rehearsal, backup and checklist in status.
"""

from __future__ import annotations

import base64
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from dbmigrate_dev.cluster_client import Cluster, wait_for
from dbmigrate_dev.kubelet import HOST_EXEC_IMAGE
from tests.e2e.helpers import ALEMBIC_PROJECT
from tests.fixtures.operator import OperatorProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SCHEMAS = {
    "add-email-verified.yaml": [
        "CREATE TABLE users (id bigserial PRIMARY KEY, email text, email_confirmed_at timestamptz)",
        "INSERT INTO users (email, email_confirmed_at) SELECT 'u' || g, "
        "CASE WHEN g % 2 = 0 THEN now() END FROM generate_series(1, 20000) g",
    ],
    "rename-column.yaml": [
        "CREATE TABLE users (id bigserial PRIMARY KEY, username text)",
        "INSERT INTO users (username) SELECT 'user' || g FROM generate_series(1, 20000) g",
    ],
    "index-concurrently.yaml": [
        "CREATE TABLE users (id bigserial PRIMARY KEY, email text)",
        "INSERT INTO users (email) SELECT 'u' || g FROM generate_series(1, 20000) g",
    ],
    "change-column-type.yaml": [
        "CREATE TABLE orders (id bigserial PRIMARY KEY, total_cents integer NOT NULL)",
        "INSERT INTO orders (total_cents) SELECT g * 3 FROM generate_series(1, 20000) g",
    ],
    "alembic-job.yaml": [],
}

RESULTS = {
    "add-email-verified.yaml": (
        "SELECT count(*) FILTER (WHERE email_verified) = 10000 AND count(*) FILTER (WHERE "
        "email_verified IS NULL) = 0 AND (SELECT is_nullable = 'NO' FROM "
        "information_schema.columns WHERE table_name = 'users' AND column_name = "
        "'email_verified') FROM users"
    ),
    "rename-column.yaml": (
        "SELECT bool_and(handle = 'user' || id) AND NOT EXISTS (SELECT FROM "
        "information_schema.columns WHERE table_name = 'users' AND column_name = 'username') "
        "FROM users"
    ),
    "index-concurrently.yaml": (
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_users_email'::regclass"
    ),
    "change-column-type.yaml": (
        "SELECT bool_and(total_cents_big = id * 3) AND NOT EXISTS (SELECT FROM "
        "information_schema.columns WHERE table_name = 'orders' AND column_name = "
        "'total_cents') FROM orders"
    ),
    "alembic-job.yaml": "SELECT version_num = '0002' FROM alembic_version",
}


def adapt(
    doc: dict[str, Any], namespace: str, prometheus: Any, app: Any, s3: Any = None
) -> dict[str, Any]:
    doc["metadata"]["namespace"] = namespace
    backup = doc["spec"].get("backup") or {}
    if "s3" in backup:
        backup["s3"]["endpoint"] = s3.endpoint
        backup["s3"]["bucket"] = s3.bucket
        backup["s3"].pop("region", None)
    analysis = doc["spec"].get("analysis")
    if analysis:
        analysis["prometheus"]["address"] = prometheus.url
        analysis.update(interval="2s", settle="5s", baselineWindow="30s")
        for metric in analysis["metrics"]:
            metric["query"] = (
                metric["query"]
                .replace('job="shop-api"', f'job="{app.job}"')
                .replace("[1m]", "[10s]")
            )
    for step in doc["spec"]["steps"]:
        if "job" in step:
            alembic = shutil.which("alembic", path=str(Path(sys.executable).parent))
            assert alembic is not None
            step["job"]["image"] = HOST_EXEC_IMAGE
            step["job"]["command"] = [
                alembic,
                "-c",
                str(ALEMBIC_PROJECT / "alembic.ini"),
                "upgrade",
                "head",
            ]
    return doc


def restricted_deployment(namespace: str, image: str) -> dict[str, Any]:
    """The app the examples target, as a restricted namespace admits it."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop-api", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "shop-api"}},
            "template": {
                "metadata": {"labels": {"app": "shop-api"}},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "shop-api",
                            "image": image,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


@pytest.mark.parametrize("example", sorted(SCHEMAS), ids=lambda name: name.removesuffix(".yaml"))
def test_example_applies(
    example: str,
    cluster: Cluster,
    namespace: str,
    pg_dsn: str,
    operator: OperatorProcess,
    local_executor: Cluster,
    prometheus: Any,
    start_test_app: Callable[..., Any],
    request: pytest.FixtureRequest,
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for statement in SCHEMAS[example]:
            conn.execute(statement)
        conn.execute("ANALYZE")
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-db", "namespace": namespace},
            "data": {"dsn": base64.b64encode(pg_dsn.encode()).decode()},
        }
    )
    (doc,) = [d for d in yaml.safe_load_all((EXAMPLES / example).read_text()) if d]
    if doc["spec"].get("target"):
        cluster.apply(restricted_deployment(namespace, "registry.example.com/shop-api:v1"))
        cluster.kubectl("rollout", "status", "deploy/shop-api", "-n", namespace, "--timeout=60s")
    app = start_test_app(error_ratio=0.0) if doc["spec"].get("analysis") else None
    s3 = None
    if "s3" in (doc["spec"].get("backup") or {}):
        s3 = _s3_for(request, cluster, namespace, doc["spec"]["backup"]["s3"])
    name = doc["metadata"]["name"]
    cluster.apply(adapt(doc, namespace, prometheus, app, s3))
    approve = "Approval" in ((doc["spec"].get("checklist") or {}).get("require") or [])
    images = {
        s["name"]: s["awaitRollout"].get("image")
        for s in doc["spec"]["steps"]
        if "awaitRollout" in s
    }

    def done_or_roll_out() -> dict[str, Any] | None:
        st = cluster.get("dbm", name, "-n", namespace).get("status") or {}
        for step in st.get("steps", []):
            if step["name"] in images and step["state"] == "Waiting":
                cluster.kubectl(
                    "set",
                    "image",
                    "deploy/shop-api",
                    f"shop-api={images[step['name']]}",
                    "-n",
                    namespace,
                )
        checklist = st.get("checklist") or {}
        if approve and checklist.get("missing") == ["Approval"]:
            cluster.kubectl(
                "annotate", "dbm", name, "-n", namespace, "dbmigrate.io/approved-by=e2e-approver"
            )
        return st if st.get("phase") in ("Succeeded", "Failed", "RolledBack") else None

    final = wait_for(done_or_roll_out, 240, f"{example} to finish", interval=0.5)
    assert final["phase"] == "Succeeded", final.get("conditions")
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(RESULTS[example]).fetchone() == (True,)
        steps = [s["name"] for s in doc["spec"]["steps"]]
        rows = conn.execute(
            "SELECT step FROM dbmigrate.history WHERE direction = 'up' ORDER BY id"
        ).fetchall()
    assert [r[0] for r in rows] == steps
    if "rehearsal" in doc["spec"]:
        assert final["rehearsal"]["result"] == "Passed"
    if "backup" in doc["spec"]:
        assert final["backup"]["state"] == "Succeeded"
        assert final["backup"]["location"].startswith(f"s3://{s3.bucket}/")
    if "checklist" in doc["spec"]:
        assert final["checklist"]["complete"] is True
        assert final["checklist"]["approvedBy"] == "e2e-approver"


class _S3Target:
    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint, self.bucket = endpoint, bucket


def _s3_for(
    request: pytest.FixtureRequest, cluster: Cluster, namespace: str, s3: dict[str, Any]
) -> _S3Target:
    """A SeaweedFS bucket and the example's credentials Secret pointing at it."""
    server = request.getfixturevalue("seaweed_s3")
    bucket = request.getfixturevalue("s3_bucket")
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": s3["credentialsSecretRef"]["name"], "namespace": namespace},
            "stringData": {
                "accessKeyId": server.access_key,
                "secretAccessKey": server.secret_key,
            },
        }
    )
    return _S3Target(server.endpoint, bucket)
