"""Rollback on a real API server: `kubectl rollout undo` semantics and down migrations.

Aspects: a rollback requested with the annotation undoes the target Deployment to the revision
recorded at start (a new revision made by the real controller), then runs the down SQL of the
applied steps newest first and records `down` rows; past the point of no return the database is
left alone but the rollout is still undone; a migration that finished rolls back on request
(the rollout undone only while the target runs its version), or refuses past its point of no
return and stays Succeeded; an Argo CD Application with automated sync tracking
the Deployment gets automated sync switched off before the undo; the Manual policy waits in
Failed for the annotation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import (
    columns,
    condition,
    deploy_app,
    history,
    image,
    migration,
    roll_out_when_release_waits,
    status,
    step_state,
    wait_phase,
)
from tests.fixtures.operator import OperatorProcess

DATA = Path(__file__).parent / "data"


def revision(cluster: Cluster, namespace: str) -> int:
    dep = cluster.get("deploy", "app", "-n", namespace)
    return int(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"])


def steps(*, pnr: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "name": "expand",
            "sql": {
                "up": "ALTER TABLE users ADD COLUMN email_verified boolean",
                "down": "ALTER TABLE users DROP COLUMN IF EXISTS email_verified",
            },
        },
        {
            "name": "index",
            "sql": {
                "up": "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_ev ON users (email_verified)",
                "down": "DROP INDEX CONCURRENTLY IF EXISTS users_ev",
            },
            "pointOfNoReturn": pnr,
        },
        {"name": "release", "awaitRollout": {"image": "app:v2", "timeout": "5m"}},
        {"name": "hold", "awaitRollout": {"image": "app:v3", "timeout": "5m"}},
    ]
    return out


def roll_to_v2_and_wait_for_release(cluster: Cluster, namespace: str) -> None:
    roll_out_when_release_waits(cluster, namespace)
    wait_for(
        lambda: step_state(cluster, namespace, "release") == "Succeeded",
        60,
        "the release step to succeed",
    )


def stand_in_application(
    cluster: Cluster,
    namespace: str,
    deploys_to: str,
    automated: dict[str, bool],
    revision: str | None = None,
) -> None:
    """An Application `shop` as Argo CD would show it (its CRD only, no controller): deploying
    to `deploys_to`, managing deployment `app` there, with automated sync."""
    cluster.kubectl("apply", "--server-side", "-f", str(DATA / "argocd-application-crd.yaml"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/applications.argoproj.io", "--timeout=60s"
    )
    status: dict[str, Any] = {
        "resources": [
            {"group": "apps", "kind": "Deployment", "namespace": deploys_to, "name": "app"}
        ]
    }
    if revision is not None:
        status["sync"] = {"status": "Synced", "revision": revision}
    cluster.apply(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": "shop", "namespace": namespace},
            "spec": {
                "project": "default",
                "source": {"repoURL": "https://git.example/shop.git", "path": "deploy"},
                "destination": {"namespace": deploys_to},
                "syncPolicy": {"automated": automated},
            },
            "status": status,
        }
    )


def request_rollback(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "annotate", "dbm", "m", "dbmigrate.io/rollback=requested", "-n", namespace, "--overwrite"
    )


def test_rollback_undoes_rollout_and_reverts_steps(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    deploy_app(cluster, namespace)
    cluster.apply(migration(namespace, steps(), target={"deployment": "app"}))
    roll_to_v2_and_wait_for_release(cluster, namespace)
    rev_v2 = revision(cluster, namespace)
    assert "email_verified" in columns(app_db)

    request_rollback(cluster, namespace)
    st = wait_phase(cluster, namespace, "RolledBack", timeout=90)
    assert image(cluster, namespace) == "app:v1"
    assert revision(cluster, namespace) > rev_v2  # the controller made a new revision
    cluster.kubectl("rollout", "status", "deploy/app", "-n", namespace, "--timeout=60s")
    assert "email_verified" not in columns(app_db)
    assert history(app_db) == [
        ("expand", "up"),
        ("index", "up"),
        ("release", "up"),
        ("release", "down"),
        ("index", "down"),
        ("expand", "down"),
    ]
    rb = st["rollback"]
    assert rb["trigger"] == "RollbackRequested"
    assert rb["undoneToRevision"] == st["targetRevision"] == "1"
    assert rb["stepsReverted"] == ["release", "index", "expand"]
    assert rb["database"] == "RolledBack"
    assert condition(st, "Ready")["reason"] == "RolledBack"
    events = cluster.kubectl("get", "events", "-n", namespace).stdout
    for reason in ("RollbackStarted", "RolloutUndone", "StepReverted"):
        assert reason in events


def test_point_of_no_return_keeps_the_database(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    deploy_app(cluster, namespace)
    cluster.apply(migration(namespace, steps(pnr=True), target={"deployment": "app"}))
    roll_to_v2_and_wait_for_release(cluster, namespace)
    request_rollback(cluster, namespace)
    st = wait_phase(cluster, namespace, "Failed", timeout=90)
    assert image(cluster, namespace) == "app:v1"  # the rollout is still undone
    assert "email_verified" in columns(app_db)  # the database is not touched
    assert ("expand", "down") not in history(app_db)
    ready = condition(st, "Ready")
    assert ready["reason"] == "PastPointOfNoReturn"
    assert "'index'" in ready["message"]
    assert st["rollback"]["database"] == "Refused"


@pytest.mark.parametrize(
    ("destination", "paused"),
    [
        pytest.param("own", True, id="the-application-deploying-the-target"),
        # Another team's Application that the target's tracking label happens to name: a tenant
        # who can label a Deployment must not switch off someone else's auto-sync.
        pytest.param("team-b", False, id="another-teams-application"),
    ],
)
def test_argo_cd_auto_sync_is_switched_off_before_the_undo(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    destination: str,
    paused: bool,
) -> None:
    deploys_to = namespace if destination == "own" else destination
    stand_in_application(cluster, namespace, deploys_to, {"prune": True, "selfHeal": True})
    deploy_app(cluster, namespace, labels={"app.kubernetes.io/instance": "shop"})
    cluster.apply(migration(namespace, steps(), target={"deployment": "app"}))
    roll_to_v2_and_wait_for_release(cluster, namespace)
    request_rollback(cluster, namespace)
    st = wait_phase(cluster, namespace, "RolledBack", timeout=90)
    app = cluster.get("application", "shop", "-n", namespace)
    assert ("automated" not in app["spec"]["syncPolicy"]) is paused
    argo = st["rollback"]["argoCD"]
    assert argo["application"] == "shop"
    assert argo["autoSyncPaused"] is paused
    events = cluster.kubectl("get", "events", "-n", namespace).stdout
    assert ("ArgoCDAutoSyncPaused" if paused else "ArgoCDNotPaused") in events
    if not paused:
        assert "deploys to namespace 'team-b'" in argo["message"]
    assert image(cluster, namespace) == "app:v1"  # the rollout is undone either way


def test_a_crash_after_pausing_argo_cd_resumes_with_the_pause_recorded_on_the_application(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    """The operator dies after switching automated sync off, before its status says so: the
    next one finds the pause (its flags and revision) on the Application and goes on."""
    automated = {"prune": True, "selfHeal": False}
    stand_in_application(cluster, namespace, namespace, automated, revision="c0ffee" * 6 + "c0fe")
    deploy_app(cluster, namespace, labels={"app.kubernetes.io/instance": "shop"})
    operator.stop()
    operator.env["DBMIGRATE_FAILPOINTS"] = "rollback.argocd-paused=crash"
    operator.start()
    cluster.apply(migration(namespace, steps(), target={"deployment": "app"}))
    roll_to_v2_and_wait_for_release(cluster, namespace)
    request_rollback(cluster, namespace)
    assert operator.proc is not None
    assert operator.proc.wait(120) == 137
    assert "failpoint rollback.argocd-paused: crash" in operator.log()
    app = cluster.get("application", "shop", "-n", namespace)
    assert "automated" not in (app["spec"].get("syncPolicy") or {})
    assert "argoCD" not in (status(cluster, namespace).get("rollback") or {})

    operator.env.pop("DBMIGRATE_FAILPOINTS")
    operator.start()
    st = wait_phase(cluster, namespace, "RolledBack", timeout=90)
    argo = st["rollback"]["argoCD"]
    assert argo["autoSyncPaused"] is True
    assert argo["automated"] == automated  # what the Application had, not "already off"
    assert argo["pausedRevision"] == "c0ffee" * 6 + "c0fe"
    assert condition(st, "AutoSyncPaused")["status"] == "True"
    assert "argocd app set " in condition(st, "AutoSyncPaused")["message"]
    assert image(cluster, namespace) == "app:v1"


@pytest.mark.parametrize(
    ("moved_on", "image_after"),
    [
        pytest.param(False, "app:v1", id="target-runs-its-version"),
        pytest.param(True, "app:v3", id="target-moved-on"),
    ],
)
def test_a_finished_migration_rolls_back_on_request(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    moved_on: bool,
    image_after: str,
) -> None:
    """The seed's Phase 5: the watch after the deployment finds a problem, `migrate:down`.
    The rollout is undone only while the target still runs the migration's version."""
    deploy_app(cluster, namespace)
    cluster.apply(migration(namespace, steps()[:3], target={"deployment": "app"}))
    roll_to_v2_and_wait_for_release(cluster, namespace)
    wait_phase(cluster, namespace, "Succeeded", timeout=60)
    if moved_on:  # a later release, not this migration's to undo
        cluster.kubectl("set", "image", "deploy/app", "app=app:v3", "-n", namespace)
        cluster.kubectl("rollout", "status", "deploy/app", "-n", namespace, "--timeout=60s")
    request_rollback(cluster, namespace)
    st = wait_phase(cluster, namespace, "RolledBack", timeout=90)
    assert "email_verified" not in columns(app_db)
    assert history(app_db)[-3:] == [("release", "down"), ("index", "down"), ("expand", "down")]
    assert image(cluster, namespace) == image_after
    assert bool(st["rollback"].get("rolloutKept")) is moved_on
    assert st["rollback"].get("rolloutUndone", False) is not moved_on


def test_a_finished_migration_past_its_point_of_no_return_refuses(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    cluster.apply(migration(namespace, steps(pnr=True)[:2]))
    wait_phase(cluster, namespace, "Succeeded", timeout=60)
    request_rollback(cluster, namespace)
    st = wait_for(
        lambda: (s := status(cluster, namespace)).get("rollback") and s,
        60,
        "the rollback request to be answered",
    )
    assert st["phase"] == "Succeeded"
    assert st["rollback"]["database"] == "Refused"
    assert condition(st, "Ready")["reason"] == "PastPointOfNoReturn"
    assert "email_verified" in columns(app_db)
    assert [d for _, d in history(app_db)] == ["up", "up"]


def test_manual_policy_waits_for_the_annotation(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    failing = [
        steps()[0],
        {"name": "broken", "sql": {"up": "ALTER TABLE nope ADD COLUMN x int", "down": "SELECT 1"}},
    ]
    cluster.apply(migration(namespace, failing, rollback={"policy": "Manual"}))
    wait_phase(cluster, namespace, "Failed")
    assert "email_verified" in columns(app_db)  # nothing reverted without a person
    request_rollback(cluster, namespace)
    st = wait_phase(cluster, namespace, "RolledBack", timeout=60)
    assert "email_verified" not in columns(app_db)
    assert st["rollback"]["stepsReverted"] == ["expand"]


def test_rollback_is_crash_safe(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    """Kill the operator twice while it reverts slow steps: each down runs exactly once."""
    with psycopg.connect(app_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE reverted (step text)")
    failing: list[dict[str, Any]] = [
        {
            "name": f"s{i}",
            "sql": {
                "up": f"CREATE TABLE u{i} (id int)",
                "down": f"DROP TABLE u{i}; INSERT INTO reverted VALUES ('s{i}'); "
                "SELECT pg_sleep(1.5);",
            },
        }
        for i in range(1, 4)
    ]
    failing.append({"name": "broken", "sql": {"up": "SELECT 1/0", "down": "SELECT 1"}})
    cluster.apply(migration(namespace, failing))
    for target in ("s3", "s2"):
        wait_for(
            lambda t=target: (
                any(
                    s["name"] == t and s["state"] in ("Succeeded", "RolledBack")
                    for s in status(cluster, namespace).get("steps", [])
                )
                and status(cluster, namespace).get("phase") == "RollingBack"
            ),
            60,
            f"the rollback to be reverting around {target}",
            interval=0.05,
        )
        time.sleep(0.5)  # inside the slow down SQL of the step being reverted
        operator.kill()
        operator.start()
    st = wait_phase(cluster, namespace, "RolledBack", timeout=90)
    assert st["rollback"]["stepsReverted"] == ["s3", "s2", "s1"]
    with psycopg.connect(app_db) as conn:
        counts = conn.execute(
            "SELECT step, count(*) FROM reverted GROUP BY step ORDER BY step"
        ).fetchall()
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('u1', 'u2', 'u3')"
        ).fetchone()
    assert counts == [("s1", 1), ("s2", 1), ("s3", 1)]
    assert tables == (0,)
