"""The GitOps round trip through a real Argo CD, driven only by Git commits and kubectl (the
`argocd` fixture: application controller and repo server built from source, our health.lua).

Aspects:
- v2 in sync waves, as docs/gitops.md recommends: the expand migration (wave -1) is done before
  the Deployment (wave 0) is applied, the contract migration (wave 1) starts after it rolled
  out; everything ends Synced and Healthy.
- v3 ships a breaking migration after its Deployment (and a ConfigMap after it); v3 fails its
  SLO. The operator switches
  the Application's automated sync (with self-heal) off and ends its running sync, undoes the
  rollout to v2's revision (the one before the migration's version, which already ran when it
  started) and reverts the database. Argo CD does not re-apply v3: the app stays OutOfSync,
  the migration Degraded with our message, and `AutoSyncPaused` names the Application.
- The team reverts the commit. With `resumeAutoSync: OnRevert` the operator switches automated
  sync back on as it was (prune, self-heal); Argo CD prunes the rolled-back migration and ends
  Synced and Healthy with v2 and the v2 schema.
- Prune never reverts a database: a finished migration deleted from Git leaves its schema and
  history; a running one is stopped (its statement cancelled, its transaction rolled back, its
  lock released), and what it committed stays.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
import yaml

from dbmigrate_dev.cluster_client import Cluster, wait_for
from dbmigrate_dev.gitrepo import GitRepo
from tests.e2e.helpers import app_deployment, condition, history, image, migration, status
from tests.fixtures.argocd import ArgoCD, resource
from tests.fixtures.operator import OperatorProcess
from tests.fixtures.prometheus import ScrapedApp, StartTestApp

WAVE = "argocd.argoproj.io/sync-wave"
AUTOMATED = {"prune": True, "selfHeal": True}


def in_wave(dbm: dict[str, Any], wave: str) -> str:
    dbm["metadata"]["annotations"] = {WAVE: wave}
    return yaml.safe_dump(dbm)


def v2(namespace: str) -> dict[str, str | None]:
    expand = migration(
        namespace,
        [
            {
                "name": "expand",
                "sql": {
                    "up": "ALTER TABLE users ADD COLUMN email_verified boolean",
                    "down": "ALTER TABLE users DROP COLUMN IF EXISTS email_verified",
                },
            }
        ],
        name="v2-expand",
        migration_id="20261201100000_v2_expand",
    )
    contract = migration(
        namespace,
        [
            {"name": "release", "awaitRollout": {"image": "app:v2", "timeout": "2m"}},
            {
                "name": "contract",
                "sql": {
                    "up": "UPDATE users SET email_verified = false WHERE email_verified IS NULL;"
                    " ALTER TABLE users ALTER COLUMN email_verified SET NOT NULL",
                    "down": "ALTER TABLE users ALTER COLUMN email_verified DROP NOT NULL",
                },
            },
        ],
        name="v2-contract",
        migration_id="20261201100100_v2_contract",
        target={"deployment": "app"},
    )
    return {
        "shop/deployment.yaml": yaml.safe_dump(
            app_deployment(namespace, "app:v2", annotations={WAVE: "0"})
        ),
        "shop/v2-expand.yaml": in_wave(expand, "-1"),
        "shop/v2-contract.yaml": in_wave(contract, "1"),
    }


def v3(namespace: str, prometheus_url: str, app: ScrapedApp) -> dict[str, str | None]:
    breaking = migration(
        namespace,
        [
            {"name": "release", "awaitRollout": {"image": "app:v3", "timeout": "2m"}},
            {
                "name": "rename",
                "sql": {
                    "up": "ALTER TABLE users RENAME COLUMN email TO email_address",
                    "down": "ALTER TABLE users RENAME COLUMN email_address TO email",
                },
            },
        ],
        name="v3-rename",
        migration_id="20261201110000_v3_rename",
        target={"deployment": "app"},
        rollback={"argoCD": {"resumeAutoSync": "OnRevert"}},
        analysis={
            "prometheus": {"address": prometheus_url},
            "interval": "2s",
            "failureLimit": 2,
            "settle": "10m",
            "metrics": [{"name": "error-rate", "query": app.error_ratio_query("5s"), "max": 0.05}],
        },
    )
    # A later wave keeps Argo CD's sync operation waiting for the migration to be Healthy (the
    # last wave's health is not waited for): the operator ends it when it pauses automated sync.
    flags = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "v3-flags", "namespace": namespace, "annotations": {WAVE: "2"}},
        "data": {"new_checkout": "on"},
    }
    return {
        "shop/deployment.yaml": yaml.safe_dump(
            app_deployment(namespace, "app:v3", annotations={WAVE: "0"})
        ),
        "shop/v3-rename.yaml": in_wave(breaking, "1"),
        "shop/v3-flags.yaml": yaml.safe_dump(flags),
    }


@contextmanager
def bad_while_v3_runs(cluster: Cluster, namespace: str, app: ScrapedApp) -> Iterator[None]:
    """The test app answers with errors exactly while the Deployment runs app:v3 (v3's bug)."""
    done = threading.Event()

    def follow() -> None:
        bad = None
        while not done.wait(0.3):
            got = cluster.kubectl(
                "get", "deploy", "app", "-n", namespace, "-o",
                "jsonpath={.spec.template.spec.containers[0].image}", check=False,
            )  # fmt: skip
            now = got.returncode == 0 and got.stdout.strip() == "app:v3"
            if now != bad:
                app.set_slo(error_ratio=0.5 if now else 0.0)
                bad = now

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def nullable_columns(dsn: str) -> dict[str, bool]:
    """users' columns -> whether NULLs are allowed."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT column_name, is_nullable = 'YES' FROM information_schema.columns "
            "WHERE table_name = 'users' ORDER BY column_name"
        ).fetchall()
    return {name: nullable for name, nullable in rows}


def transcript(cluster: Cluster, argocd: ArgoCD, namespace: str, title: str) -> None:
    """What a person looking with kubectl sees now (printed: docs/gitops.md quotes it)."""
    app = argocd.get_application(namespace)
    st = app.get("status", {})
    operation = st.get("operationState", {})
    lines = [f"--- {title}"]
    lines.append(
        f"application: sync {st.get('sync', {}).get('status')} at "
        f"{(st.get('sync', {}).get('revision') or '?')[:7]}, health "
        f"{st.get('health', {}).get('status')}, automated "
        f"{(app['spec'].get('syncPolicy') or {}).get('automated')}, operation "
        f"{operation.get('phase')}: {operation.get('message')}"
    )
    for res in st.get("resources", []):
        health = res.get("health") or {}
        lines.append(
            f"  {res['kind']}/{res['name']}: {res.get('status')} "
            f"{health.get('status', '')} {health.get('message', '')}".rstrip()
        )
    lines.append(cluster.kubectl("get", "dbm", "-n", namespace).stdout.rstrip())
    print("\n".join(lines))


def live_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The migration's status; empty while Argo CD has not created it yet."""
    got = cluster.kubectl("get", "dbm", name, "-n", namespace, "-o", "json", check=False)
    return (yaml.safe_load(got.stdout).get("status") or {}) if got.returncode == 0 else {}


def events(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str]]:
    items = cluster.get("events", "-n", namespace)["items"]
    mine = [e for e in items if e["involvedObject"].get("name") == name]
    mine.sort(
        key=lambda e: (
            e.get("firstTimestamp") or e.get("eventTime") or "",
            e["metadata"]["creationTimestamp"],
        )
    )
    return [(e["reason"], e["message"]) for e in mine]


def test_rollback_round_trip_through_git(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    argocd: ArgoCD,
    argocd_repo: GitRepo,
    prometheus: Any,
    start_test_app: StartTestApp,
) -> None:
    test_app = start_test_app(error_ratio=0.0)
    timings: dict[str, float] = {}

    # 1. v2 in waves: expand before the app, contract after it.
    first = argocd_repo.commit(v2(namespace), "shop v2: email_verified")
    t0 = time.monotonic()
    cluster.apply(
        argocd.application(namespace, argocd_repo, "shop", namespace, {"automated": AUTOMATED})
    )
    app = argocd.wait_synced(namespace, first, 240, "Argo CD to sync v2")
    timings["v2 synced and Healthy"] = time.monotonic() - t0
    transcript(cluster, argocd, namespace, "v2 synced")
    expand, contract = (
        status(cluster, namespace, "v2-expand"),
        status(cluster, namespace, "v2-contract"),
    )
    assert (expand["phase"], contract["phase"]) == ("Succeeded", "Succeeded")
    dep = cluster.get("deploy", "app", "-n", namespace)
    created = {
        name: at(cluster.get("dbm", name, "-n", namespace)["metadata"]["creationTimestamp"])
        for name in ("v2-expand", "v2-contract")
    }
    # wave -1 done before wave 0 was applied; wave 1 applied after wave 0 (rolled out)
    assert at(expand["finishedAt"]) <= at(dep["metadata"]["creationTimestamp"])
    assert created["v2-contract"] >= at(dep["metadata"]["creationTimestamp"])
    assert at(contract["startedAt"]) >= created["v2-contract"]
    for name in ("v2-expand", "v2-contract"):
        assert resource(app, "DatabaseMigration", name)["health"]["status"] == "Healthy"
    assert nullable_columns(app_db) == {"email": True, "email_verified": False, "id": False}

    # 2. v3: a breaking migration after its Deployment; v3 fails its SLO.
    with bad_while_v3_runs(cluster, namespace, test_app):
        second = argocd_repo.commit(v3(namespace, prometheus.url, test_app), "shop v3: rename")
        t1 = time.monotonic()
        st = wait_for(
            lambda: (
                (s := live_status(cluster, namespace, "v3-rename")).get("phase")
                in ("RolledBack", "Failed")
                and s
            ),
            240,
            "v3 to roll back",
            interval=0.5,
        )
        timings["v3 committed -> RolledBack"] = time.monotonic() - t1
        assert st["phase"] == "RolledBack", st
        rb = st["rollback"]
        assert rb["trigger"] == "SloBreached"
        assert rb["undoneToRevision"] == "1"  # v2's, not the v3 revision running at the start
        argo = rb["argoCD"]
        assert argo["autoSyncPaused"] is True
        assert argo["automated"] == AUTOMATED
        assert argo["pausedRevision"] == second
        assert argo["operationTerminated"] is True  # the v3 sync (waiting on wave 1) ended
        paused = condition(st, "AutoSyncPaused")
        assert (paused["status"], paused["reason"]) == ("True", "ArgoCDAutoSyncPaused")
        assert f"application argocd/{namespace}" in paused["message"]
        assert "revert the release's commit" in paused["message"]
        assert image(cluster, namespace) == "app:v2"
        cluster.kubectl("rollout", "status", "deploy/app", "-n", namespace, "--timeout=60s")
        assert nullable_columns(app_db) == {"email": True, "email_verified": False, "id": False}
        assert history(app_db)[-2:] == [("rename", "down"), ("release", "down")]
        started = [m for r, m in events(cluster, namespace, "v3-rename") if r == "Started"]
        assert "a rollback undoes it to revision 1 (app:v2)" in started[0], started

        # Argo CD shows it and does not re-apply v3 (its self-heal is off with automated sync).
        def degraded() -> dict[str, Any] | None:
            a = argocd.get_application(namespace)
            health = resource(a, "DatabaseMigration", "v3-rename").get("health", {})
            return (
                a
                if a["status"]["sync"]["status"] == "OutOfSync"
                and resource(a, "Deployment", "app").get("status") == "OutOfSync"
                and health.get("status") == "Degraded"
                else None
            )

        app = wait_for(degraded, 60, "Argo CD to show v3 OutOfSync and Degraded", interval=0.5)
        transcript(cluster, argocd, namespace, "v3 rolled back")
        print(f"AutoSyncPaused: {paused['message']}")
        message = resource(app, "DatabaseMigration", "v3-rename")["health"]["message"]
        assert message.startswith("RolledBack"), message
        assert "error-rate" in message, message
        assert "automated" not in (app["spec"].get("syncPolicy") or {})
        assert "dbmigrate.io/auto-sync-paused" in app["metadata"]["annotations"]
        operation = app["status"]["operationState"]
        assert (operation["phase"], operation["syncResult"]["revision"]) == ("Failed", second)
        assert "terminated" in operation["message"].lower(), operation["message"]
        # the wave after the migration was never applied
        assert resource(app, "ConfigMap", "v3-flags")["status"] == "OutOfSync"
        assert cluster.kubectl("get", "cm", "v3-flags", "-n", namespace, check=False).returncode
        # Two of Argo CD's reconciliations (10 s each here) and more: v2 stays.
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            assert image(cluster, namespace) == "app:v2"
            assert "automated" not in (
                argocd.get_application(namespace)["spec"].get("syncPolicy") or {}
            )
            time.sleep(1)

        # 3. The team reverts the commit; the operator switches automated sync back on.
        third = argocd_repo.revert(second)
        t2 = time.monotonic()
        app = argocd.wait_synced(namespace, third, 180, "Argo CD to sync the revert")
        timings["revert committed -> Synced and Healthy"] = time.monotonic() - t2
    assert app["spec"]["syncPolicy"]["automated"] == AUTOMATED
    assert "dbmigrate.io/auto-sync-paused" not in (app["metadata"].get("annotations") or {})
    wait_for(
        lambda: (
            cluster.kubectl("get", "dbm", "v3-rename", "-n", namespace, check=False).returncode != 0
        ),
        60,
        "the rolled-back migration to be pruned",
    )
    resumed = [
        m for r, m in events(cluster, namespace, "v3-rename") if r == "ArgoCDAutoSyncResumed"
    ]
    assert resumed
    assert f"Git revision {third[:7]} no longer holds this migration" in resumed[0]
    assert image(cluster, namespace) == "app:v2"
    assert nullable_columns(app_db) == {"email": True, "email_verified": False, "id": False}
    for name in ("v2-expand", "v2-contract"):
        assert resource(app, "DatabaseMigration", name)["health"]["status"] == "Healthy"
    transcript(cluster, argocd, namespace, "revert synced")
    for reason, text in events(cluster, namespace, "v3-rename"):
        print(f"event {reason}: {text}")
    print("Argo CD round trip: " + ", ".join(f"{k} in {v:.1f} s" for k, v in timings.items()))


def test_prune_never_reverts_a_database(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    argocd: ArgoCD,
    argocd_repo: GitRepo,
) -> None:
    done = migration(
        namespace,
        [
            {
                "name": "notes",
                "sql": {"up": "CREATE TABLE notes (id bigint)", "down": "DROP TABLE notes"},
            }
        ],
        name="done",
        migration_id="20261201120000_notes",
    )
    slow = migration(
        namespace,
        [
            {
                "name": "first",
                "sql": {"up": "CREATE TABLE t1 (id bigint)", "down": "DROP TABLE t1"},
            },
            {
                "name": "second",
                "sql": {
                    "up": "CREATE TABLE t2 (id bigint); SELECT pg_sleep(300)",
                    "down": "DROP TABLE t2",
                    "transaction": "Always",
                },
            },
        ],
        name="slow",
        migration_id="20261201120100_slow",
    )
    # Something stays in the directory: Argo CD's automated sync refuses to prune everything.
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "shop-config", "namespace": namespace},
        "data": {"greeting": "hello"},
    }
    first = argocd_repo.commit(
        {"shop/done.yaml": yaml.safe_dump(done), "shop/config.yaml": yaml.safe_dump(config)},
        "done",
    )
    cluster.apply(
        argocd.application(namespace, argocd_repo, "shop", namespace, {"automated": AUTOMATED})
    )
    argocd.wait_synced(namespace, first, 120, "Argo CD to sync the first migration")
    assert status(cluster, namespace, "done")["phase"] == "Succeeded"
    argocd_repo.commit({"shop/slow.yaml": yaml.safe_dump(slow)}, "slow")
    wait_for(
        lambda: any(
            s["name"] == "second" and s["state"] == "Running"
            for s in live_status(cluster, namespace, "slow").get("steps", [])
        ),
        120,
        "the slow migration's second step to run",
        interval=0.5,
    )
    removed = argocd_repo.commit({"shop/done.yaml": None, "shop/slow.yaml": None}, "prune both")
    t0 = time.monotonic()
    argocd.wait_synced(namespace, removed, 120, "Argo CD to prune both migrations")
    wait_for(lambda: not cluster.get("dbm", "-n", namespace)["items"], 60, "both migrations gone")
    pruned_after = time.monotonic() - t0
    with psycopg.connect(app_db) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        sleeping = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(300)%' "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
        locks = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    assert {"notes", "t1"} <= tables  # what was committed stays
    assert "t2" not in tables  # the running step's transaction was rolled back
    assert sleeping == (0,)  # its statement was cancelled, not left running
    assert locks == (0,)  # the migration lock went with it
    assert history(app_db) == [("notes", "up"), ("first", "up")]  # no down: nothing reverted
    print(f"Argo CD prune: both migrations gone {pruned_after:.1f} s after the commit")
