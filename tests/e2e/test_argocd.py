"""A real Argo CD syncs a DatabaseMigration from Git (the `argocd` fixture: the application
controller and repo server built from source, Redis, a Git daemon; our health.lua in argocd-cm).

Aspects: an Application with automated sync applies a Git directory holding a DatabaseMigration
(sync wave -1) and a ConfigMap (wave 0) into the test's namespace; the operator runs the
migration against the test's database; Argo CD shows the migration's health from our health
check, Progressing and then Healthy (with the Ready condition's message), holds the ConfigMap's
wave back until the migration is Healthy, and ends Synced and Healthy at the commit. A second
commit that changes the ConfigMap is synced too, and the migration is not run again.
"""

from __future__ import annotations

import re
import time
from typing import Any

import yaml

from dbmigrate_dev.cluster_client import Cluster, wait_for
from dbmigrate_dev.gitrepo import GitRepo
from tests.e2e.helpers import condition, history, migration, status
from tests.fixtures.argocd import ArgoCD, resource, synced_at
from tests.fixtures.operator import OperatorProcess

# What our health.lua says while a migration is not done (see hack/argocd/health.lua).
PROGRESSING_MESSAGE = re.compile(
    r"^(Waiting for the dbmigrate operator|Pending|Progressing|Waiting)\b"
)


def config_map(namespace: str, greeting: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "shop-config", "namespace": namespace},
        "data": {"greeting": greeting},
    }


def git_migration(namespace: str) -> dict[str, Any]:
    dbm = migration(
        namespace,
        [
            {
                "name": "notes",
                # Long enough for Argo CD to be seen showing it Progressing.
                "sql": {
                    "up": "CREATE TABLE notes (id bigint PRIMARY KEY); SELECT pg_sleep(6)",
                    "down": "DROP TABLE IF EXISTS notes",
                },
            }
        ],
    )
    dbm["metadata"]["annotations"] = {"argocd.argoproj.io/sync-wave": "-1"}
    return dbm


def tree(namespace: str, greeting: str) -> dict[str, str | None]:
    return {
        "shop/migration.yaml": yaml.safe_dump(git_migration(namespace)),
        "shop/config.yaml": yaml.safe_dump(config_map(namespace, greeting)),
    }


def greeting(cluster: Cluster, namespace: str) -> str | None:
    got = cluster.kubectl(
        "get", "configmap", "shop-config", "-n", namespace, "-o", "json", check=False
    )
    if got.returncode != 0:
        return None
    return str(yaml.safe_load(got.stdout)["data"]["greeting"])


def test_argo_cd_syncs_a_migration_from_git(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    argocd: ArgoCD,
    argocd_repo: GitRepo,
) -> None:
    first = argocd_repo.commit(tree(namespace, "hello"), "shop v1: notes table")
    t0 = time.monotonic()
    cluster.apply(argocd.application(namespace, argocd_repo, "shop", namespace))

    # Every (health, message) Argo CD shows for the migration, and whether the ConfigMap (wave 0)
    # was there while the migration (wave -1) was not Healthy yet.
    seen: list[tuple[str, str]] = []
    early_config: list[str] = []

    def first_sync() -> dict[str, Any] | None:
        app = argocd.get_application(namespace)
        health = resource(app, "DatabaseMigration").get("health")
        if health and (not seen or seen[-1] != (health["status"], health.get("message", ""))):
            seen.append((health["status"], health.get("message", "")))
        if seen and seen[-1][0] != "Healthy" and greeting(cluster, namespace) is not None:
            early_config.append(seen[-1][0])
        return app if synced_at(app, first) else None

    app = wait_for(first_sync, 180, "Argo CD to sync the first commit", interval=0.5)
    synced_after = time.monotonic() - t0

    st = status(cluster, namespace)
    assert st["phase"] == "Succeeded"
    assert history(app_db) == [("notes", "up")]
    # Argo CD's own "Missing" (in Git, not yet in the cluster) may come first; then ours.
    states = [s for s, _ in seen]
    while states and states[0] == "Missing":
        states.pop(0)
    assert "Progressing" in states, seen
    assert states[-1] == "Healthy", seen
    assert states.index("Progressing") < states.index("Healthy"), seen
    assert set(states) <= {"Progressing", "Healthy"}, seen
    for state, message in seen:
        if state == "Progressing":
            assert PROGRESSING_MESSAGE.match(message), seen
    healthy_message = resource(app, "DatabaseMigration")["health"]["message"]
    assert healthy_message.startswith("Succeeded"), healthy_message
    assert healthy_message.endswith(condition(st, "Ready")["message"]), healthy_message
    assert early_config == [], (
        f"the ConfigMap (wave 0) came before the migration was Healthy: {seen}"
    )
    assert greeting(cluster, namespace) == "hello"
    for kind in ("DatabaseMigration", "ConfigMap"):
        res = resource(app, kind)
        assert res["status"] == "Synced", res
        assert res["namespace"] == namespace, res
    # Argo CD's tracking annotation: these objects are the Application's.
    live = cluster.get("dbm", "m", "-n", namespace)
    assert live["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"].startswith(
        f"{namespace}:dbmigrate.io/DatabaseMigration:{namespace}/m"
    )

    second = argocd_repo.commit(
        {"shop/config.yaml": yaml.safe_dump(config_map(namespace, "hi"))}, "shop v1.1"
    )
    t1 = time.monotonic()
    app = argocd.wait_synced(namespace, second, 120, "Argo CD to sync the second commit")
    resynced_after = time.monotonic() - t1
    assert greeting(cluster, namespace) == "hi"
    assert resource(app, "DatabaseMigration")["health"]["status"] == "Healthy"
    assert history(app_db) == [("notes", "up")]  # the migration did not run again
    print(
        f"Argo CD: first commit synced and Healthy in {synced_after:.1f} s "
        f"(migration health seen: {seen}); second commit synced in {resynced_after:.1f} s"
    )
