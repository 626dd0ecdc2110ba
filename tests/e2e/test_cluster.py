"""The foundation's end-to-end acceptance: real controllers behind a real API server.

Aspects, each test in its own namespace:
- deployment-scale: a Deployment scales up and `kubectl rollout status` completes;
- deployment-revision: an image change makes a new ReplicaSet revision, which completes;
- rollout-undo: `kubectl rollout undo` brings back the previous template as a new revision;
- executor-deployment: a Deployment of an executor image runs as local processes and is Ready;
- node-ready-again: a node marked Unknown is made Ready again with its address, and
  `kubectl logs` reaches a pod through it;
- job-runs: a Job's pod really runs `psql` with env from a Secret, a ConfigMap and the pod's
  name, and the row it writes is in the database;
- job-retries: a Job whose command exits 1 is retried (backoffLimit 1 → 2 pods) and fails, the
  exit code and the output's tail in each pod's container status;
- pod-delete-kills: deleting a running executor pod kills its process — by SIGTERM, or by
  SIGKILL once the pod's grace period is over when SIGTERM is ignored;
- operator-image: a pod of the operator's image with only args runs the `dbmigrate` command;
- service-account: a pod's process acts as the pod's ServiceAccount, not as the executor.

The executor tests need the local pod executor (pods running on this host), so only the local
control plane runs them; the first three run on any cluster (`hack/kind-e2e.sh`).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbmigrate_dev.cluster_client import Cluster, Manifest, wait_for
from dbmigrate_dev.kubelet import DBMIGRATE_IMAGE, HOST_EXEC_IMAGE

# Locally kwok plays these pods (no registry needed; only the executor's images run for real);
# on kind or a real cluster they are real, tiny, pullable images.
APP_V1 = "registry.k8s.io/pause:3.9"
APP_V2 = "registry.k8s.io/pause:3.10"
REVISION = "deployment.kubernetes.io/revision"


def deployment(name: str, image: str, replicas: int, **container: Any) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, **container}]},
            },
        },
    }


def job(name: str, script: str | None, backoff_limit: int = 0, **container: Any) -> Manifest:
    if script is not None:
        container = {"image": HOST_EXEC_IMAGE, "command": ["sh", "-c", script], **container}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", **container}],
                }
            },
        },
    }


def rollout(cluster: Cluster, namespace: str, name: str) -> None:
    cluster.kubectl(
        "rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=90s", timeout=100
    )


def replica_sets_by_revision(cluster: Cluster, namespace: str, app: str) -> dict[int, Manifest]:
    items = cluster.get("replicasets", "-n", namespace, "-l", f"app={app}")["items"]
    return {int(rs["metadata"]["annotations"][REVISION]): rs for rs in items}


def image_of(obj: Manifest) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def job_pods(cluster: Cluster, namespace: str, name: str) -> list[Manifest]:
    items: list[Manifest] = cluster.get("pods", "-n", namespace, "-l", f"job-name={name}")["items"]
    return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])


def finished_as(
    cluster: Cluster, namespace: str, name: str, expected: str, timeout: float = 120
) -> None:
    """Waits until the Job is Complete or Failed; if it is not `expected`, says why."""

    def outcome() -> str | None:
        conditions = cluster.get(f"job/{name}", "-n", namespace)["status"].get("conditions", [])
        return next(
            (
                c["type"]
                for c in conditions
                if c["type"] in ("Complete", "Failed") and c["status"] == "True"
            ),
            None,
        )

    got = wait_for(outcome, timeout, f"job/{name} to finish", interval=0.5)
    if got != expected:
        messages = [
            s["state"].get("terminated", {}).get("message")
            for p in job_pods(cluster, namespace, name)
            for s in p["status"].get("containerStatuses", [])
        ]
        pytest.fail(f"job/{name} is {got}, not {expected}; its pods said: {messages}")


def terminated_state(cluster: Cluster, namespace: str, job_name: str) -> Manifest:
    """The container state of a Job's only pod once the Job completed."""
    finished_as(cluster, namespace, job_name, "Complete")
    (pod,) = job_pods(cluster, namespace, job_name)
    state: Manifest = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return state


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


# --- Deployments (kwok) ------------------------------------------------------------------------


def test_deployment_scales_up_and_rolls_out(cluster: Cluster, namespace: str) -> None:
    cluster.apply(deployment("web", APP_V1, replicas=1), namespace=namespace)
    rollout(cluster, namespace, "web")

    cluster.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=3")
    rollout(cluster, namespace, "web")

    status = cluster.get("deployment/web", "-n", namespace)["status"]
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (3, 3, 3)
    pods = cluster.get("pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 3
    assert all(p["spec"].get("nodeName") for p in pods), "the scheduler bound every pod"
    assert {p["status"]["phase"] for p in pods} == {"Running"}


def test_image_change_makes_a_new_revision(cluster: Cluster, namespace: str) -> None:
    cluster.apply(deployment("web", APP_V1, replicas=2), namespace=namespace)
    rollout(cluster, namespace, "web")

    cluster.kubectl("set", "image", "deployment/web", f"app={APP_V2}", "-n", namespace)
    rollout(cluster, namespace, "web")

    by_rev = replica_sets_by_revision(cluster, namespace, "web")
    assert sorted(by_rev) == [1, 2]
    assert (image_of(by_rev[1]), image_of(by_rev[2])) == (APP_V1, APP_V2)
    assert by_rev[1]["spec"]["replicas"] == 0
    assert by_rev[2]["status"]["readyReplicas"] == 2
    pods = cluster.get("pods", "-n", namespace, "-l", "app=web")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert {p["spec"]["containers"][0]["image"] for p in live} == {APP_V2}


def test_rollout_undo_restores_the_previous_template(cluster: Cluster, namespace: str) -> None:
    cluster.apply(deployment("web", APP_V1, replicas=2), namespace=namespace)
    rollout(cluster, namespace, "web")
    cluster.kubectl("set", "image", "deployment/web", f"app={APP_V2}", "-n", namespace)
    rollout(cluster, namespace, "web")

    cluster.kubectl("rollout", "undo", "deployment/web", "-n", namespace)
    rollout(cluster, namespace, "web")

    dep = cluster.get("deployment/web", "-n", namespace)
    assert image_of(dep) == APP_V1
    assert dep["metadata"]["annotations"][REVISION] == "3"
    by_rev = replica_sets_by_revision(cluster, namespace, "web")
    # The old ReplicaSet is reused under the new revision number.
    assert sorted(by_rev) == [2, 3]
    assert image_of(by_rev[3]) == APP_V1
    assert by_rev[3]["status"]["readyReplicas"] == 2
    assert by_rev[2]["spec"]["replicas"] == 0


# --- pods that really run (the local pod executor) ----------------------------------------------


def test_executor_deployment_runs_and_is_ready(local_executor: Cluster, namespace: str) -> None:
    cluster = local_executor
    cluster.apply(
        deployment("worker", HOST_EXEC_IMAGE, replicas=2, command=["sleep", "300"]),
        namespace=namespace,
    )
    rollout(cluster, namespace, "worker")

    pods = cluster.get("pods", "-n", namespace, "-l", "app=worker")["items"]
    assert len(pods) == 2
    for pod in pods:
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] is True
        pid = int(status["containerID"].removeprefix("local://"))
        assert pid_alive(pid)
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"300"]


def test_job_pod_really_runs_psql(
    local_executor: Cluster, namespace: str, pg_dsn: str, pg_conn: psycopg.Connection
) -> None:
    cluster = local_executor
    pg_conn.execute("CREATE TABLE e2e_marks (pod text PRIMARY KEY, note text NOT NULL)")
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "stringData": {"dsn": pg_dsn},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "notes"},
            "data": {"note": "written by a Job"},
        },
        job(
            "writer",
            # psql interpolates :'var' only in what it reads, hence the here-document.
            'psql "$DSN" -v ON_ERROR_STOP=1 -v pod="$POD" -v note="$NOTE" <<\'SQL\'\n'
            "INSERT INTO e2e_marks VALUES (:'pod', :'note');\n"
            "SQL\n",
            env=[
                {"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}},
                {
                    "name": "NOTE",
                    "valueFrom": {"configMapKeyRef": {"name": "notes", "key": "note"}},
                },
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
        ),
        namespace=namespace,
    )
    finished_as(cluster, namespace, "writer", "Complete")

    (pod,) = job_pods(cluster, namespace, "writer")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert "INSERT 0 1" in terminated["message"]
    rows = pg_conn.execute("SELECT pod, note FROM e2e_marks").fetchall()
    assert rows == [(pod["metadata"]["name"], "written by a Job")]


def node_state(cluster: Cluster) -> tuple[str, list[str]]:
    """The only node's Ready status and its InternalIP addresses."""
    (node,) = cluster.get("nodes")["items"]
    ready = next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")
    ips = [a["address"] for a in node["status"].get("addresses", []) if a["type"] == "InternalIP"]
    return ready, ips


def test_node_made_ready_again_keeps_its_address(local_executor: Cluster, namespace: str) -> None:
    cluster = local_executor
    # After an API server outage the node lifecycle controller marks the node Unknown, and kwok
    # initializes it again; `kubectl logs` needs the address it had.
    (node,) = cluster.get("nodes")["items"]
    cluster.kubectl(
        "patch",
        "node",
        node["metadata"]["name"],
        "--subresource=status",
        "-p",
        '{"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}',
    )
    wait_for(lambda: node_state(cluster)[0] == "True", 60, "the node to be Ready again")
    assert node_state(cluster)[1] == ["127.0.0.1"]
    cluster.apply(job("talker", "echo said-by-the-pod"), namespace=namespace)
    finished_as(cluster, namespace, "talker", "Complete")
    (pod,) = job_pods(cluster, namespace, "talker")
    logs = cluster.kubectl("logs", pod["metadata"]["name"], "-n", namespace).stdout
    assert logs.strip() == "said-by-the-pod"


def test_failing_job_is_retried_then_fails(local_executor: Cluster, namespace: str) -> None:
    cluster = local_executor
    cluster.apply(
        job("broken", 'echo "attempt by $HOSTNAME"; echo "boom" >&2; exit 1', backoff_limit=1),
        namespace=namespace,
    )
    # The Job controller waits ~10 s before the retry.
    finished_as(cluster, namespace, "broken", "Failed")

    status = cluster.get("job/broken", "-n", namespace)["status"]
    assert status["failed"] == 2
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    pods = job_pods(cluster, namespace, "broken")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")
        assert terminated["message"] == f"attempt by {pod['metadata']['name']}\nboom"


@pytest.mark.parametrize(
    ("script", "grace"),
    [
        pytest.param("exec sleep 300", 30, id="sigterm"),
        # SIGTERM ignored (and inherited by sleep): only SIGKILL, after the grace period, ends it.
        pytest.param("trap '' TERM; sleep 300", 2, id="sigkill-after-grace"),
    ],
)
def test_deleting_a_running_pod_kills_its_process(
    local_executor: Cluster, namespace: str, tmp_path: Path, script: str, grace: int
) -> None:
    cluster = local_executor
    pidfile = tmp_path / "pid"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sleeper"},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": grace,
                "containers": [
                    {
                        "name": "main",
                        "image": HOST_EXEC_IMAGE,
                        # `$$$$`: Kubernetes turns `$$` into `$`, so the shell sees `$$`.
                        "command": [
                            "sh",
                            "-c",
                            f"echo $$$$ > {shlex.quote(str(pidfile))}; {script}",
                        ],
                    }
                ],
            },
        },
        namespace=namespace,
    )
    pid = wait_for(
        lambda: int(pidfile.read_text()) if pidfile.exists() and pidfile.read_text() else None,
        60,
        "the pod's process to start",
    )
    wait_for(
        lambda: cluster.get("pod/sleeper", "-n", namespace)["status"]["phase"] == "Running",
        30,
        "the pod to be Running",
    )
    assert pid_alive(pid)
    assert os.getsid(pid) != os.getsid(0), "the process runs in a session of its own"

    cluster.kubectl("delete", "pod/sleeper", "-n", namespace, "--timeout=60s", timeout=70)

    # kubectl returned once the pod was gone, which the executor allows only after the kill.
    assert not pid_alive(pid)
    gone = cluster.kubectl("get", "pod/sleeper", "-n", namespace, check=False)
    assert "NotFound" in gone.stderr


def test_operator_image_runs_the_dbmigrate_command(local_executor: Cluster, namespace: str) -> None:
    cluster = local_executor
    cluster.apply(
        job("version", None, image=DBMIGRATE_IMAGE, args=["--version"]), namespace=namespace
    )

    terminated = terminated_state(cluster, namespace, "version")
    assert terminated["exitCode"] == 0
    assert terminated["message"].startswith("dbmigrate ")


def test_pod_acts_as_its_service_account(local_executor: Cluster, namespace: str) -> None:
    cluster = local_executor
    whoami = (
        "from kubernetes import client, config; "
        "api = client.AuthenticationV1Api(config.new_client_from_config()); "
        "print(api.create_self_subject_review(client.V1SelfSubjectReview()).status.user_info.username)"
    )
    cluster.apply(
        job("whoami", None, image=HOST_EXEC_IMAGE, command=["python", "-c", whoami]),
        namespace=namespace,
    )

    terminated = terminated_state(cluster, namespace, "whoami")
    assert terminated["exitCode"] == 0, terminated.get("message")
    assert terminated["message"] == f"system:serviceaccount:{namespace}:default"
