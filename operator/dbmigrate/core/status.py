"""The status the operator writes: the merge patch, the step list and the progress count.

Pure helpers the effects (`reconcile.effects`) use to shape `DatabaseMigrationStatus` before
it is sent to the API server.
"""

from __future__ import annotations

from typing import Any

from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus, StepStatus


def status_patch(status: DatabaseMigrationStatus) -> dict[str, Any]:
    """A merge patch for the whole status: cleared top-level fields are sent as null."""
    body = status.to_k8s()
    for name, field in DatabaseMigrationStatus.model_fields.items():
        body.setdefault(field.alias or name, None)
    return body


def with_step_list(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus
) -> DatabaseMigrationStatus:
    """A copy of `status` with one entry per step of the spec, in the spec's order."""
    status = status.model_copy(deep=True)
    existing = {s.name: s for s in status.steps or []}
    status.steps = [existing.get(s.name) or StepStatus(name=s.name) for s in spec.steps]
    return status


def count_progress(status: DatabaseMigrationStatus) -> str:
    """`done/total` steps, as `kubectl get` shows it."""
    done = sum(1 for s in status.steps or [] if s.state == "Succeeded")
    return f"{done}/{len(status.steps or [])}"


def merge_patch_changes(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Whether the JSON merge patch (RFC 7386) `patch` would change `current`.

    A waiting migration computes the same status pass after pass: such a patch is not sent
    (at fleet scale it was one of every four API requests of a waiting migration).
    """
    for key, value in patch.items():
        if value is None:
            if key in current:
                return True
        elif isinstance(value, dict) and isinstance(current.get(key), dict):
            if merge_patch_changes(current[key], value):
                return True
        elif key not in current or current[key] != value:
            return True
    return False
