"""The operator's image, built from the Dockerfile and run by a real Docker engine.

- what the image is: non-root user, entrypoint, ports, OCI labels, nothing of the build left in it,
  none of the development tooling (dbmigrate_dev) in it;
- it works on a read-only root filesystem with every capability dropped and no network
  (`--version`, `lint`, `plan`: pglast's compiled parser included);
- a backfill Job's pod, as the operator builds it (hardened security context, DSN through
  `secretKeyRef`), runs in the image and backfills the table;
- the operator itself, installed by the chart, runs in the image with the chart's ServiceAccount
  and takes a migration with a backfill Job to Succeeded: everything from the image;
- what the demo's kind mode relies on: a container on a Docker bridge network (as kind's nodes
  are) reaches PostgreSQL and Prometheus on the host at the network's gateway.

The pods of `localhost/dbmigrate:container` are run by the local pod executor through the engine
(`docker run`, see dbmigrate_dev.kubelet), so their status shows `docker://` container ids.
"""

from __future__ import annotations

import base64
import json
import re
import tomllib
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from packaging.utils import canonicalize_name

from dbmigrate_dev.cluster_client import Cluster, wait_for
from dbmigrate_dev.postgres import free_port
from dbmigrate_dev.stack import KindStack, kind_network
from tests.e2e.helpers import CHART, run_helm
from tests.fixtures.image import Image
from tests.fixtures.operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# What a restricted pod gets: read-only root, a tmpfs /tmp, no capabilities, no privilege
# escalation, a non-root user, no network.
LOCKED_DOWN = (
    "--read-only",
    "--tmpfs",
    "/tmp:rw,nosuid,nodev,mode=1777",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--user",
    "65532:65532",
)


def test_image_config(operator_image: Image) -> None:
    config = operator_image.inspect()["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["dbmigrate"]
    assert config["Cmd"] == ["run", "--all-namespaces"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp"}
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "dbmigrate"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
    assert labels["org.opencontainers.image.created"].endswith("Z")


def test_image_holds_nothing_of_the_build(operator_image: Image) -> None:
    """No source tree, wheel house, build secret or pip cache in the final image."""
    proc = operator_image.run(
        "-c",
        # (/wheels may remain as the empty mount point of the build stage's bind mount)
        "find /src /wheels /run/secrets /root/.cache -type f 2>/dev/null | sed 's/^/found /'; "
        "pip list --format=freeze 2>/dev/null | grep -c . ; true",
        options=("--entrypoint", "sh", *LOCKED_DOWN),
    )
    assert proc.returncode == 0, proc.stderr
    assert "found" not in proc.stdout, proc.stdout
    # The runtime dependencies are installed (and only the installed wheels are).
    assert int(proc.stdout.split()[-1]) > 10


def test_image_holds_exactly_the_locked_packages(operator_image: Image) -> None:
    """What the image installed is requirements.lock, version for version (hack/lock.sh): a
    rebuild of the same commit gets the same packages."""
    proc = operator_image.run(
        "-m", "pip", "list", "--format=json", options=("--entrypoint", "python", *LOCKED_DOWN)
    )
    assert proc.returncode == 0, proc.stderr
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(proc.stdout)}
    locked = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line):
            locked[canonicalize_name(m.group(1))] = m.group(2)
    assert {n: installed.get(n) for n in locked} == locked
    # Besides the lock: the base image's installer and the project itself, nothing else.
    extra = set(installed) - set(locked) - {"pip", "setuptools", "wheel", "dbmigrate"}
    assert extra == set(), extra


def test_image_has_no_development_tooling(operator_image: Image) -> None:
    """The test and demo tooling (operator/dbmigrate_dev, once dbmigrate.testing) is not shipped:
    neither importable nor present anywhere on the image's filesystem."""
    script = (
        "import importlib.util, json, os, dbmigrate\n"
        "found = []\n"
        "for d, dirs, files in os.walk('/'):\n"
        "    if d == '/':\n"
        "        dirs[:] = [n for n in dirs if n not in ('proc', 'sys', 'dev')]\n"
        "    found += [os.path.join(d, n) for n in dirs + files if n.startswith('dbmigrate_dev')\n"
        "              or (n == 'testing' and os.path.basename(d) == 'dbmigrate')]\n"
        "print(json.dumps({'product': importlib.util.find_spec('dbmigrate') is not None,\n"
        "                  'dev': importlib.util.find_spec('dbmigrate_dev') is not None,\n"
        "                  'testing': importlib.util.find_spec('dbmigrate.testing') is not None,\n"
        "                  'found': found}))\n"
    )
    proc = operator_image.run("-c", script, options=("--entrypoint", "python3", *LOCKED_DOWN))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "product": True,
        "dev": False,
        "testing": False,
        "found": [],
    }


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        pytest.param(("--version",), 0, f"dbmigrate {VERSION}", id="version"),
        pytest.param(
            ("lint", "/examples/add-email-verified.yaml"),
            0,
            "no findings",
            id="lint-the-seed-example",
        ),
        pytest.param(
            ("lint", "/sql/bad.sql"),
            1,
            "adding-required-field",
            id="lint-finds-a-hazard",
        ),
        pytest.param(
            ("plan", "-f", "/examples/add-email-verified.yaml"),
            0,
            "email_verified",
            id="plan",
        ),
        pytest.param(("backfill", "--help"), 0, "--checkpoint", id="backfill-worker"),
    ],
)
def test_image_runs_locked_down(
    operator_image: Image, tmp_path: Path, args: tuple[str, ...], code: int, expected: str
) -> None:
    (tmp_path / "bad.sql").write_text("ALTER TABLE users ADD COLUMN x int NOT NULL;\n")
    tmp_path.chmod(0o755)
    (tmp_path / "bad.sql").chmod(0o644)
    proc = operator_image.run(
        *args,
        options=(
            *LOCKED_DOWN,
            "--volume",
            f"{ROOT / 'examples'}:/examples:ro",
            "--volume",
            f"{tmp_path}:/sql:ro",
        ),
    )
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert expected in proc.stdout + proc.stderr


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http on loopback
            return bool(response.status == 200)
    except OSError:
        return False


def _container_ids(cluster: Cluster, namespace: str, selector: str) -> list[str]:
    pods = cluster.get("pods", "-n", namespace, "-l", selector)["items"]
    return [
        s.get("containerID", "")
        for p in pods
        for s in (p.get("status") or {}).get("containerStatuses") or []
    ]


def _secret(cluster: Cluster, namespace: str, dsn: str) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": namespace},
            "data": {"dsn": base64.b64encode(dsn.encode()).decode()},
        }
    )


def _migration(namespace: str, rows: int) -> dict[str, Any]:
    return {
        "apiVersion": "dbmigrate.io/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": {"name": "from-image", "namespace": namespace},
        "spec": {
            "migrationId": "20240501000000_from_image",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "steps": [
                {
                    "name": "add",
                    "sql": {
                        "up": "ALTER TABLE t ADD COLUMN w bigint",
                        "down": "ALTER TABLE t DROP COLUMN w",
                    },
                },
                {
                    "name": "fill",
                    "backfill": {"table": "t", "set": "w = id * 2", "batchSize": rows // 8},
                },
            ],
        },
    }


def _finished(cluster: Cluster, namespace: str, log: Any) -> dict[str, Any]:
    try:
        return wait_for(
            lambda: (
                (s := cluster.get("dbm", "from-image", "-n", namespace).get("status") or {}).get(
                    "phase"
                )
                in ("Succeeded", "Failed", "RolledBack")
                and s
            ),
            240,
            "the migration to finish",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log()}") from None


def _table(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, v int)")
        conn.execute("INSERT INTO t SELECT g, g FROM generate_series(1, %s) g", (rows,))


def _filled(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM t WHERE w = id * 2").fetchone()
    return int(row[0]) if row else 0


def test_backfill_job_runs_in_the_image(
    operator_image: Image, cluster: Cluster, namespace: str, pg_dsn: str, local_executor: Cluster
) -> None:
    rows = 20_000
    _table(pg_dsn, rows)
    _secret(cluster, namespace, pg_dsn)
    operator = OperatorProcess(
        namespace, cluster.kubeconfig, env={"DBMIGRATE_IMAGE": operator_image.tag}
    )
    operator.start()
    try:
        cluster.apply(_migration(namespace, rows))
        status = _finished(cluster, namespace, operator.log)
        assert status["phase"] == "Succeeded", status
    finally:
        operator.stop()
        operator._log.unlink(missing_ok=True)
    assert _filled(pg_dsn) == rows
    ids = _container_ids(cluster, namespace, "job-name")
    assert ids, "the backfill Job's pod is gone"
    assert all(i.startswith("docker://") for i in ids), ids


def test_operator_runs_from_the_image_installed_by_the_chart(
    operator_image: Image,
    cluster: Cluster,
    namespace: str,
    helm: str,
    pg_dsn: str,
    local_executor: Cluster,
) -> None:
    """The chart's Deployment, its pod run from the image with the chart's ServiceAccount token
    (namespaced RBAC), takes a migration with a backfill Job (same image) to Succeeded."""
    rows = 20_000
    _table(pg_dsn, rows)
    _secret(cluster, namespace, pg_dsn)
    metrics_port, liveness_port = free_port(), free_port()
    release = f"dbm-{namespace[-6:]}"
    values = {
        "image": {"repository": "localhost/dbmigrate", "tag": operator_image.tag.split(":")[-1]},
        "watchNamespaces": [namespace],
        "operator": {
            "pollInterval": 1,
            "metricsPort": metrics_port,
            "livenessPort": liveness_port,
        },
    }
    kubeconfig = ("--kubeconfig", str(cluster.kubeconfig))
    proc = run_helm(
        helm, "install", release, str(CHART), "--namespace", namespace, *kubeconfig, values=values
    )
    assert proc.returncode == 0, proc.stderr
    deploy = f"deploy/{release}-dbmigrate-operator"

    def operator_log() -> str:
        return cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout

    try:
        cluster.kubectl("rollout", "status", deploy, "-n", namespace, "--timeout=180s")
        # The container serves its probes and metrics on the host network.
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{liveness_port}/healthz"), 60, "/healthz")
        cluster.apply(_migration(namespace, rows))
        status = _finished(cluster, namespace, operator_log)
        assert status["phase"] == "Succeeded", status
        assert _filled(pg_dsn) == rows
        operator_ids = _container_ids(
            cluster, namespace, "app.kubernetes.io/name=dbmigrate-operator"
        )
        job_ids = _container_ids(cluster, namespace, "job-name")
        assert operator_ids
        assert job_ids
        assert all(i.startswith("docker://") for i in operator_ids + job_ids)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert re.search(r'^dbmigrate_steps_applied_total\{kind="sql"\} [1-9]', metrics, re.M), (
            metrics[:3000]
        )
    finally:
        run_helm(helm, "uninstall", release, "--namespace", namespace, *kubeconfig, "--wait")


def test_a_container_on_a_docker_network_reaches_the_hosts_services(
    operator_image: Image, tmp_path: Path
) -> None:
    """What the demo's kind mode relies on, short of kind itself (its node image needs a
    registry): kind's nodes are containers on a Docker bridge network, and their pods reach
    PostgreSQL and Prometheus on the host at that network's gateway. Here a container of the
    image on such a network applies a migration (password login through the rule for the
    network's subnet) and queries Prometheus, both started as KindStack starts them."""
    network = f"dbmigrate-{uuid.uuid4().hex[:8]}"
    created = operator_image.docker("network", "create", network)
    assert created.returncode == 0, created.stderr
    inspect = operator_image.docker("network", "inspect", network)
    gateway, subnet = kind_network(json.loads(inspect.stdout))
    stack = KindStack(tmp_path, ROOT, host_address=gateway, subnet=subnet, say=lambda _: None)
    try:
        stack.start_postgres()
        stack.start_prometheus_and_app()
        assert stack.prometheus is not None
        stack.prometheus.wait_target_up("shop-api")
        assert gateway in stack.cluster_dsn
        _table(stack.dsn, 1000)
        manifest = tmp_path / "migration.yaml"
        manifest.write_text(yaml.safe_dump(_migration("default", 1000)))
        manifest.chmod(0o644)
        tmp_path.chmod(0o755)
        on_the_network = ("run", "--rm", "--network", network, *LOCKED_DOWN)
        run = operator_image.docker(
            *on_the_network,
            "--volume",
            f"{manifest}:/migration.yaml:ro",
            # the value through the client's environment, as the executor passes a Secret's
            "--env",
            "DBMIGRATE_DSN",
            operator_image.tag,
            "apply",
            "-f",
            "/migration.yaml",
            env={"DBMIGRATE_DSN": stack.cluster_dsn},
            timeout=300,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert _filled(stack.dsn) == 1000
        query = operator_image.docker(
            *on_the_network,
            "--entrypoint",
            "python3",
            operator_image.tag,
            "-c",
            "import json, urllib.request; "
            f"r = urllib.request.urlopen('{stack.prometheus.url}/api/v1/query?query=up', "
            "timeout=10); print(json.load(r)['data']['result'][0]['metric']['job'])",
        )
        assert query.returncode == 0, query.stderr
        assert query.stdout.strip() == "shop-api"
    finally:
        stack.down()
        operator_image.docker("network", "rm", network)
