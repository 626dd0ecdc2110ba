"""Argo CD's automated sync around a rollback: which Application may be paused, what to record
when it is switched off, what the `AutoSyncPaused` condition says meanwhile, and when it may be
switched back on.

Pure functions over the Application as a plain dict (the API's JSON). The rule for switching it
back on (`rollback.argoCD.resumeAutoSync: OnRevert`) is the rule for not re-applying what the
rollback undid: Argo CD would sync whatever its Git revision declares, so automated sync comes
back only once that revision has moved on from the one that was rolled back, no longer holds the
rolled-back migration, and declares the target Deployment as the rollback left it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from dbmigrate.api import reasons
from dbmigrate.api.models import ArgoCDRollbackStatus, DatabaseMigrationStatus
from dbmigrate.core.rollout import dig

MIGRATION_GROUP, MIGRATION_KIND = "dbmigrate.io", "DatabaseMigration"
# On the Application while its automated sync is off because of a rollback: which migration
# switched it off, the flags to put back and the revision it was at (JSON).
PAUSE_ANNOTATION = "dbmigrate.io/auto-sync-paused"
# How often a paused Application is looked at: Argo CD compares an Application with Git every
# `timeout.reconciliation` (180 s by default), so a revert is seen within that and this.
POLL_SECONDS = 10.0


def automated_flags(app: dict[str, Any]) -> dict[str, bool] | None:
    """spec.syncPolicy.automated's flags (prune, selfHeal...); None when automated sync is off."""
    automated = dig(app, "spec", "syncPolicy", "automated")
    if automated is None:
        return None
    if not isinstance(automated, dict):
        return {}
    return {k: bool(v) for k, v in automated.items() if isinstance(v, bool)}


def synced_revision(app: dict[str, Any]) -> str | None:
    """The Git revision the Application was last compared with (all of them, multi-source)."""
    sync = dig(app, "status", "sync") or {}
    if sync.get("revision"):
        return str(sync["revision"])
    revisions = sync.get("revisions") or []
    return ",".join(str(r) for r in revisions) or None


def argo_application_refusal(app: dict[str, Any], namespace: str, deployment: str) -> str | None:
    """Why the Argo CD Application must not be paused for this migration, or None.

    The Application is found by a label (or annotation) that anyone who can edit the
    Deployment, and Helm, can set: on its own it would let a tenant of one namespace switch off
    auto-sync of another team's app. So the Application must deploy into the migration's own
    namespace and list the target Deployment among the resources it manages.
    """
    name = dig(app, "metadata", "name", default="?")
    destination = dig(app, "spec", "destination", "namespace")
    if destination != namespace:
        return (
            f"Argo CD application {name!r} deploys to namespace {destination or '(none)'!r}, "
            f"not {namespace!r}: not paused"
        )
    for resource in dig(app, "status", "resources", default=[]) or []:
        if (
            resource.get("group") == "apps"
            and resource.get("kind") == "Deployment"
            and resource.get("namespace", destination) == namespace
            and resource.get("name") == deployment
        ):
            return None
    return (
        f"Argo CD application {name!r} does not manage deployment {namespace}/{deployment}: "
        "not paused"
    )


def pause_record(migration: str, automated: dict[str, bool], revision: str | None) -> str:
    """The PAUSE_ANNOTATION value: `migration` is "namespace/name"."""
    return json.dumps(
        {"migration": migration, "automated": automated, "revision": revision}, sort_keys=True
    )


def paused_by(app: dict[str, Any], migration: str) -> tuple[dict[str, bool], str | None] | None:
    """(flags, revision) when `migration` paused this Application's automated sync and it is
    still off; None otherwise (a record of somebody else's, or none, or unreadable)."""
    raw = (dig(app, "metadata", "annotations") or {}).get(PAUSE_ANNOTATION)
    if not raw or automated_flags(app) is not None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("migration") != migration:
        return None
    flags = record.get("automated") or {}
    revision = record.get("revision")
    return (
        {str(k): bool(v) for k, v in flags.items() if isinstance(v, bool)},
        str(revision) if revision else None,
    )


def operation_unfinished(app: dict[str, Any]) -> bool:
    """A sync operation is under way, waits for a retry, or is being terminated."""
    return app.get("operation") is not None and bool(dig(app, "status", "operationState", "phase"))


def operation_pending(app: dict[str, Any]) -> bool:
    """A sync operation is under way, or failed with retries left (Argo CD keeps `operation`
    set until it gives up): either would apply its revision again."""
    phase = dig(app, "status", "operationState", "phase")
    return app.get("operation") is not None and phase not in (None, "Terminating")


def paused_pending(status: DatabaseMigrationStatus) -> bool:
    """The rollback switched an Application's automated sync off and nobody has switched it
    back on yet: the operator keeps looking at it."""
    rb = status.rollback
    argo = rb.argo_cd if rb is not None else None
    return (
        argo is not None
        and argo.auto_sync_paused
        and argo.resumed_at is None
        and argo.application is not None
        and argo.namespace is not None
        and (status.phase or "Pending") in ("RolledBack", "Failed")
    )


def _short(revision: str | None) -> str:
    return (revision or "?")[:7]


def app_ref(argo: ArgoCDRollbackStatus) -> str:
    return f"{argo.namespace}/{argo.application}"


def resume_command(argo: ArgoCDRollbackStatus) -> str:
    """The `argocd` command that puts automated sync back as it was."""
    flags = argo.automated or {}
    extra = "".join(
        f" {flag}"
        for key, flag in (
            ("prune", "--auto-prune"),
            ("selfHeal", "--self-heal"),
            ("allowEmpty", "--allow-empty"),
        )
        if flags.get(key)
    )
    return f"argocd app set {app_ref(argo)} --sync-policy automated{extra}"


def paused_message(argo: ArgoCDRollbackStatus, mode: str, deployment: str | None) -> str:
    """What the AutoSyncPaused condition says while automated sync is off."""
    head = (
        f"automated sync of Argo CD application {app_ref(argo)} is off since the rollback "
        f"(Git revision {_short(argo.paused_revision)}), so that it does not re-apply the "
        "rolled-back release"
    )
    if mode == "OnRevert":
        target = f" and declares deployment {deployment!r} as it runs now" if deployment else ""
        return (
            f"{head}; it is switched back on as it was once Git moves on to a revision that "
            f"no longer holds this migration{target} (revert the release's commit)"
        )
    return f"{head}; fix or revert the release in Git, then: {resume_command(argo)}"


@dataclass(frozen=True)
class AutoSyncVerdict:
    """What to do about a paused Application this time."""

    action: Literal["Resume", "Wait", "Resolved"]
    reason: str
    message: str
    revision: str | None = None


def _resource(app: dict[str, Any], group: str, kind: str, namespace: str, name: str) -> Any:
    for res in dig(app, "status", "resources") or []:
        if (
            (res.get("group") or "") == group
            and res.get("kind") == kind
            and res.get("namespace") == namespace
            and res.get("name") == name
        ):
            return res
    return None


def judge_paused(
    argo: ArgoCDRollbackStatus,
    app: dict[str, Any] | None,
    *,
    mode: str,
    namespace: str,
    migration: str,
    deployment: str | None,
) -> AutoSyncVerdict:
    """Whether the paused Application's automated sync goes back on now (OnRevert), stays off
    (and why), or is no longer the operator's business (somebody switched it on, it is gone)."""
    ref = app_ref(argo)
    if app is None:
        return AutoSyncVerdict(
            "Resolved",
            reasons.ARGO_CD_APPLICATION_GONE,
            f"Argo CD application {ref} no longer exists",
        )
    if automated_flags(app) is not None:
        return AutoSyncVerdict(
            "Resolved",
            reasons.ARGO_CD_AUTO_SYNC_CHANGED,
            f"automated sync of Argo CD application {ref} was switched back on by somebody else",
        )
    paused = paused_message(argo, mode, deployment)
    if mode != "OnRevert":
        return AutoSyncVerdict("Wait", reasons.ARGO_CD_AUTO_SYNC_PAUSED, paused)
    revision = synced_revision(app)
    waiting: list[str] = []
    if revision is None or revision == argo.paused_revision:
        waiting.append(f"Argo CD still compares with revision {_short(revision)}")
    else:
        mine = _resource(app, MIGRATION_GROUP, MIGRATION_KIND, namespace, migration)
        if mine is not None and not mine.get("requiresPruning"):
            waiting.append(f"revision {_short(revision)} still holds this migration")
        if deployment is not None:
            dep = _resource(app, "apps", "Deployment", namespace, deployment)
            state = "not in Git" if dep is None else dep.get("status") or "Unknown"
            if dep is not None and dep.get("requiresPruning"):
                state = "not in Git"
            if state != "Synced":
                waiting.append(
                    f"deployment {deployment!r} in revision {_short(revision)} is {state} "
                    "with what runs"
                )
    if waiting:
        return AutoSyncVerdict(
            "Wait", reasons.ARGO_CD_AUTO_SYNC_PAUSED, f"{paused}; now: {'; '.join(waiting)}"
        )
    return AutoSyncVerdict(
        "Resume",
        reasons.ARGO_CD_AUTO_SYNC_RESUMED,
        f"switched automated sync of Argo CD application {ref} back on: Git revision "
        f"{_short(revision)} no longer holds this migration"
        + (f" and declares deployment {deployment!r} as it runs" if deployment else ""),
        revision=revision,
    )
