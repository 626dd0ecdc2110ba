"""After a rollback that switched an Argo CD Application's automated sync off: keep looking at
the Application until automated sync is on again.

With `rollback.argoCD.resumeAutoSync: OnRevert` the operator switches it back on, as it was,
once the Application's Git revision no longer holds what was rolled back (`core.argocd`
decides); with `Never` a person does, and the `AutoSyncPaused` condition says how. Either way
the condition turns False when automated sync is on again (or the Application is gone), and
the runner stops. Neither the database nor the migration's phase is touched here.
"""

from __future__ import annotations

import logging

from dbmigrate.api import reasons
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus
from dbmigrate.core.argocd import POLL_SECONDS, judge_paused
from dbmigrate.core.conditions import set_condition
from dbmigrate.core.status import status_patch
from dbmigrate.reconcile.passes import now_iso
from dbmigrate.reconcile.platform import Conflict, Forbidden, Platform

log = logging.getLogger(__name__)
# After a refused read: RBAC changes seldom.
FORBIDDEN_RETRY = 60.0


async def follow_paused_auto_sync(
    platform: Platform,
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    generation: int,
) -> float | None:
    """One look at the paused Application; seconds until the next, None when it is over."""
    # core.argocd.paused_pending said all of these are there
    rb = status.rollback
    assert rb is not None
    argo = rb.argo_cd
    assert argo is not None
    assert argo.namespace is not None
    assert argo.application is not None
    try:
        app = await platform.read_argo_application(argo.namespace, argo.application)
    except Forbidden:
        message = (
            f"automated sync of Argo CD application {argo.namespace}/{argo.application} is off "
            "since the rollback, and the operator may no longer read the Application to see "
            "whether it may be switched back on"
        )
        await _show(platform, status, True, reasons.ARGO_CD_AUTO_SYNC_PAUSED, message, generation)
        return FORBIDDEN_RETRY
    verdict = judge_paused(
        argo,
        app,
        mode=spec.rollback.argo_cd.resume_auto_sync,
        namespace=platform.namespace,
        migration=platform.name,
        deployment=spec.target_deployment if rb.rollout_undone else None,
    )
    if verdict.action == "Wait":
        await _show(platform, status, True, verdict.reason, verdict.message, generation)
        return POLL_SECONDS
    if verdict.action == "Resume":
        assert app is not None
        try:
            await platform.resume_argo_auto_sync(app, argo.automated or {})
        except Conflict:
            return 1.0  # the Application changed since it was read: look again
        argo.resumed_revision = verdict.revision
    argo.resumed_at = now_iso()
    await _show(platform, status, False, verdict.reason, verdict.message, generation)
    await platform.event("Normal", verdict.reason, verdict.message)
    log.info("%s/%s: %s", platform.namespace, platform.name, verdict.message)
    return None


async def _show(
    platform: Platform,
    status: DatabaseMigrationStatus,
    paused: bool,
    reason: str,
    message: str,
    generation: int,
) -> None:
    """The AutoSyncPaused condition, written only when it says something new (and with it
    status.rollback.argoCD)."""
    current = status.condition(reasons.AUTO_SYNC_PAUSED)
    text = "True" if paused else "False"
    if (
        current is not None
        and (current.status, current.reason, current.message) == (text, reason, message)
        and paused
    ):
        return
    set_condition(
        status,
        reasons.AUTO_SYNC_PAUSED,
        paused,
        reason=reason,
        message=message,
        generation=generation,
        now=now_iso(),
    )
    await platform.write_status(status_patch(status))
