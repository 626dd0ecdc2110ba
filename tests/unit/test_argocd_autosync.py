"""Argo CD's automated sync after a rollback: `core.argocd` (what is recorded, what the
AutoSyncPaused condition says, when OnRevert switches it back on) and the runner's look at a
paused Application (`reconcile.argocd.follow_paused_auto_sync`, against a fake Platform).

Aspects: the flags and the pause record; the revert rule (Git moved on, the migration gone or
to be pruned, the Deployment Synced), each unmet part named; Never waits with the command to
run; somebody else switching it on, or the Application gone, ends the watch; a resume that
races another write looks again; the condition is written once per change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from dbmigrate.api import reasons
from dbmigrate.api.models import (
    ArgoCDRollbackStatus,
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
    RollbackStatus,
)
from dbmigrate.core import argocd
from dbmigrate.core.actions import is_active
from dbmigrate.reconcile.argocd import follow_paused_auto_sync
from dbmigrate.reconcile.platform import Conflict, Platform

PAUSED = "a" * 40
REVERTED = "b" * 40


def paused(**kw: Any) -> ArgoCDRollbackStatus:
    base: dict[str, Any] = {
        "application": "shop",
        "namespace": "argocd",
        "auto_sync_paused": True,
        "automated": {"prune": True, "selfHeal": True},
        "paused_revision": PAUSED,
    }
    base.update(kw)
    return ArgoCDRollbackStatus(**base)


def resource(kind: str, name: str, status: str = "Synced", **kw: Any) -> dict[str, Any]:
    group = {"DatabaseMigration": "dbmigrate.io", "Deployment": "apps"}[kind]
    return {"group": group, "kind": kind, "namespace": "shop", "name": name, "status": status, **kw}


def application(
    revision: str = REVERTED, resources: list[dict[str, Any]] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "shop", "namespace": "argocd", "resourceVersion": "7"},
        "spec": {"syncPolicy": spec},
        "status": {
            "sync": {"status": "OutOfSync", "revision": revision},
            "resources": resources
            if resources is not None
            else [
                resource("Deployment", "app"),
                resource("DatabaseMigration", "v3", "OutOfSync", requiresPruning=True),
            ],
        },
    }


REVERTED_APP = application()


@pytest.mark.parametrize(
    ("app", "mode", "action", "reason", "words"),
    [
        pytest.param(
            REVERTED_APP,
            "OnRevert",
            "Resume",
            reasons.ARGO_CD_AUTO_SYNC_RESUMED,
            "Git revision bbbbbbb no longer holds this migration and declares deployment 'app'",
            id="reverted-resumes",
        ),
        pytest.param(
            application(resources=[resource("Deployment", "app")]),
            "OnRevert",
            "Resume",
            reasons.ARGO_CD_AUTO_SYNC_RESUMED,
            "no longer holds",
            id="migration-already-pruned-resumes",
        ),
        pytest.param(
            application(PAUSED),
            "OnRevert",
            "Wait",
            reasons.ARGO_CD_AUTO_SYNC_PAUSED,
            "now: Argo CD still compares with revision aaaaaaa",
            id="git-not-moved-waits",
        ),
        pytest.param(
            application(
                resources=[
                    resource("Deployment", "app", "OutOfSync"),
                    resource("DatabaseMigration", "v3"),
                ]
            ),
            "OnRevert",
            "Wait",
            reasons.ARGO_CD_AUTO_SYNC_PAUSED,
            "now: revision bbbbbbb still holds this migration; deployment 'app' in revision "
            "bbbbbbb is OutOfSync with what runs",
            id="fix-forward-under-the-same-name-waits",
        ),
        pytest.param(
            application(resources=[resource("DatabaseMigration", "v3", requiresPruning=True)]),
            "OnRevert",
            "Wait",
            reasons.ARGO_CD_AUTO_SYNC_PAUSED,
            "deployment 'app' in revision bbbbbbb is not in Git",
            id="deployment-dropped-from-git-waits",
        ),
        pytest.param(
            REVERTED_APP,
            "Never",
            "Wait",
            reasons.ARGO_CD_AUTO_SYNC_PAUSED,
            "then: argocd app set argocd/shop --sync-policy automated --auto-prune --self-heal",
            id="never-waits-for-a-person",
        ),
        pytest.param(
            application(PAUSED, automated={"prune": True}),
            "Never",
            "Resolved",
            reasons.ARGO_CD_AUTO_SYNC_CHANGED,
            "switched back on by somebody else",
            id="switched-on-by-a-person",
        ),
        pytest.param(
            None,
            "OnRevert",
            "Resolved",
            reasons.ARGO_CD_APPLICATION_GONE,
            "argocd/shop no longer exists",
            id="application-deleted",
        ),
    ],
)
def test_judge_paused(
    app: dict[str, Any] | None, mode: str, action: str, reason: str, words: str
) -> None:
    verdict = argocd.judge_paused(
        paused(), app, mode=mode, namespace="shop", migration="v3", deployment="app"
    )
    assert (verdict.action, verdict.reason) == (action, reason)
    assert words in verdict.message
    assert verdict.revision == (REVERTED if action == "Resume" else None)


def test_the_pause_record_says_whose_pause_it_is() -> None:
    record = argocd.pause_record("shop/v3", {"prune": True, "selfHeal": False}, PAUSED)
    app = application(PAUSED)
    app["metadata"]["annotations"] = {argocd.PAUSE_ANNOTATION: record}
    assert argocd.paused_by(app, "shop/v3") == ({"prune": True, "selfHeal": False}, PAUSED)
    assert argocd.paused_by(app, "shop/other") is None
    switched_on = copy.deepcopy(app)
    switched_on["spec"]["syncPolicy"]["automated"] = {}
    assert argocd.paused_by(switched_on, "shop/v3") is None
    app["metadata"]["annotations"][argocd.PAUSE_ANNOTATION] = "{not json"
    assert argocd.paused_by(app, "shop/v3") is None


@pytest.mark.parametrize(
    ("policy", "flags"),
    [
        pytest.param({}, None, id="manual"),
        pytest.param({"automated": {}}, {}, id="automated-no-flags"),
        pytest.param(
            {"automated": {"prune": True, "selfHeal": False, "enabled": True}},
            {"prune": True, "selfHeal": False, "enabled": True},
            id="automated-flags",
        ),
    ],
)
def test_automated_flags(policy: dict[str, Any], flags: dict[str, bool] | None) -> None:
    assert argocd.automated_flags({"spec": {"syncPolicy": policy}}) == flags


@pytest.mark.parametrize(
    ("app", "pending"),
    [
        pytest.param(
            {"operation": {"sync": {}}, "status": {"operationState": {"phase": "Running"}}},
            True,
            id="running",
        ),
        pytest.param(
            {"operation": {"sync": {}}, "status": {"operationState": {"phase": "Failed"}}},
            True,
            id="failed-retry-pending",
        ),
        pytest.param({"status": {"operationState": {"phase": "Failed"}}}, False, id="failed-done"),
        pytest.param(
            {"operation": {"sync": {}}, "status": {"operationState": {"phase": "Terminating"}}},
            False,
            id="terminating",
        ),
        pytest.param({"operation": {"sync": {}}, "status": {}}, False, id="requested-not-started"),
    ],
)
def test_operation_pending(app: dict[str, Any], pending: bool) -> None:
    assert argocd.operation_pending(app) is pending


def rolled_back(argo: ArgoCDRollbackStatus | None, phase: str = "RolledBack") -> Any:
    return DatabaseMigrationStatus(
        phase=phase,  # type: ignore[arg-type]
        rollback=RollbackStatus(started_at="t", rollout_undone=True, argo_cd=argo),
    )


@pytest.mark.parametrize(
    ("status", "active"),
    [
        pytest.param(rolled_back(paused()), True, id="paused"),
        pytest.param(rolled_back(paused(), "Failed"), True, id="paused-rollback-failed"),
        pytest.param(rolled_back(paused(resumed_at="t")), False, id="resumed"),
        pytest.param(rolled_back(paused(auto_sync_paused=False)), False, id="not-paused"),
        pytest.param(rolled_back(None), False, id="no-argo"),
    ],
)
def test_a_paused_application_keeps_the_runner(status: Any, active: bool) -> None:
    assert argocd.paused_pending(status) is active
    if status.phase == "RolledBack":
        assert is_active(status, rollback_requested=False) is active


@dataclass
class FakePlatform:
    """The Platform calls follow_paused_auto_sync makes."""

    app: dict[str, Any] | None
    namespace: str = "shop"
    name: str = "v3"
    conflict: bool = False
    resumed: list[dict[str, bool]] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    async def read_argo_application(self, namespace: str, name: str) -> dict[str, Any] | None:
        assert (namespace, name) == ("argocd", "shop")
        return self.app

    async def resume_argo_auto_sync(self, app: dict[str, Any], automated: dict[str, bool]) -> None:
        if self.conflict:
            raise Conflict("the object has been modified")
        self.resumed.append(automated)

    async def write_status(self, patch: dict[str, Any]) -> None:
        self.writes.append(patch)

    async def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def migration(mode: str) -> DatabaseMigrationSpec:
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20261201120000_v3",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "target": {"deployment": "app"},
            "rollback": {"argoCD": {"resumeAutoSync": mode}},
            "steps": [{"name": "rename", "sql": {"up": "SELECT 1", "down": "SELECT 1"}}],
        }
    )


async def look(
    fake: FakePlatform, spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus
) -> float | None:
    return await follow_paused_auto_sync(cast(Platform, fake), spec, status, 1)


def condition(patch: dict[str, Any]) -> tuple[str, str]:
    [cond] = [c for c in patch["conditions"] if c["type"] == reasons.AUTO_SYNC_PAUSED]
    return cond["status"], cond["reason"]


async def test_on_revert_waits_then_puts_automated_sync_back_as_it_was() -> None:
    status = rolled_back(paused())
    fake = FakePlatform(application(PAUSED))
    spec = migration("OnRevert")
    assert await look(fake, spec, status) == argocd.POLL_SECONDS
    assert await look(fake, spec, status) == argocd.POLL_SECONDS
    assert [condition(w) for w in fake.writes] == [("True", reasons.ARGO_CD_AUTO_SYNC_PAUSED)]
    fake.app = application()  # the revert: Git moved on without the migration
    assert await look(fake, spec, status) is None
    assert fake.resumed == [{"prune": True, "selfHeal": True}]
    assert condition(fake.writes[-1]) == ("False", reasons.ARGO_CD_AUTO_SYNC_RESUMED)
    argo = fake.writes[-1]["rollback"]["argoCD"]
    assert argo["resumedRevision"] == REVERTED
    assert argo["resumedAt"]
    assert [r for _, r, _ in fake.events] == [reasons.ARGO_CD_AUTO_SYNC_RESUMED]
    assert not argocd.paused_pending(status)


async def test_a_resume_that_races_another_write_looks_again() -> None:
    status = rolled_back(paused())
    fake = FakePlatform(application(), conflict=True)
    assert await look(fake, migration("OnRevert"), status) == 1.0
    assert fake.events == []
    assert argocd.paused_pending(status)


async def test_never_ends_when_somebody_switches_it_on() -> None:
    status = rolled_back(paused())
    fake = FakePlatform(application(PAUSED, automated={}))
    assert await look(fake, migration("Never"), status) is None
    assert fake.resumed == []
    assert condition(fake.writes[-1]) == ("False", reasons.ARGO_CD_AUTO_SYNC_CHANGED)
