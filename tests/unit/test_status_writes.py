"""Status writes that change nothing are not sent (core.status.merge_patch_changes, used by
reconcile.platform.KubernetesPlatform.write_status).

Aspects: which merge patches change a status (values, nulls, nested objects, lists); a waiting
migration's pass, which computes the status it read, sends no PATCH, while a pass that changes
it still sends one based on the version it read (the `kube` module is our own seam, faked).
"""

from __future__ import annotations

from typing import Any

import pytest

from dbmigrate.core.status import merge_patch_changes
from dbmigrate.reconcile import platform as platform_module
from dbmigrate.reconcile.platform import KubernetesPlatform

SEEN: dict[str, Any] = {
    "phase": "Waiting",
    "progress": "1/3",
    "steps": [{"name": "a", "state": "Succeeded"}, {"name": "b", "state": "Waiting"}],
    "conditions": [{"type": "Ready", "status": "False", "reason": "WaitingForRollout"}],
    "rollback": {"reason": "x", "argoCD": {"application": "app"}},
}


@pytest.mark.parametrize(
    ("patch", "changes"),
    [
        ({}, False),
        ({"phase": "Waiting", "progress": "1/3"}, False),
        ({"phase": "Waiting", "plan": None, "lint": None}, False),  # cleared fields absent
        (dict(SEEN), False),
        ({"phase": "Progressing"}, True),
        ({"plan": "a plan"}, True),  # a field that was not there
        ({"progress": None}, True),  # clearing a field that is there
        ({"steps": [{"name": "a", "state": "Succeeded"}]}, True),  # lists are replaced
        ({"rollback": {"reason": "x"}}, False),  # objects are merged
        ({"rollback": {"argoCD": {"application": "other"}}}, True),
        ({"rollback": {"argoCD": None}}, True),
    ],
)
def test_which_patches_change_the_status(patch: dict[str, Any], changes: bool) -> None:
    assert merge_patch_changes(SEEN, patch) is changes


class FakeKube:
    """The `kube` functions KubernetesPlatform reads and writes migrations through."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] = {
            "metadata": {"name": "m", "namespace": "ns", "resourceVersion": "7"},
            "status": dict(SEEN),
        }
        self.patches: list[tuple[dict[str, Any], str | None]] = []

    async def read_migration(self, namespace: str, name: str) -> dict[str, Any]:
        return self.obj

    async def patch_migration_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        self.patches.append((patch, resource_version))
        status = {**self.obj["status"], **patch}
        self.obj = {
            "metadata": {**self.obj["metadata"], "resourceVersion": "8"},
            "status": {k: v for k, v in status.items() if v is not None},
        }
        return self.obj


async def test_a_pass_that_changes_nothing_sends_no_patch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    monkeypatch.setattr(platform_module.kube, "read_migration", fake.read_migration)
    monkeypatch.setattr(platform_module.kube, "patch_migration_status", fake.patch_migration_status)
    platform = KubernetesPlatform("ns", "m", ())
    await platform.read_resource()
    await platform.write_status({**SEEN, "plan": None})
    assert fake.patches == []
    await platform.write_status({**SEEN, "progress": "2/3"})
    assert fake.patches == [({**SEEN, "progress": "2/3"}, "7")]
    # The next write is based on what was written, and again only sent when it changes it.
    await platform.write_status({**SEEN, "progress": "2/3"})
    await platform.write_status({"phase": "Progressing"})
    assert [rv for _, rv in fake.patches] == ["7", "8"]
