"""Deployment rollout semantics, as `kubectl rollout status` and `kubectl rollout undo` define them.

Pure functions over the Deployment and ReplicaSet objects as plain dicts (the API's JSON), so
they are testable with tables of cases and shared by the operator and the CLI.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
# Annotations the deployment controller owns; `kubectl rollout undo` keeps them as they are.
CONTROLLER_ANNOTATIONS = frozenset(
    {
        REVISION_ANNOTATION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "kubectl.kubernetes.io/last-applied-configuration",
    }
)


@dataclass(frozen=True)
class RolloutState:
    """What the rollout rule says about a Deployment right now."""

    complete: bool
    failed: bool
    message: str
    revision: str | None
    images: tuple[str, ...]
    paused: bool


def dig(obj: dict[str, Any] | None, *path: str, default: Any = None) -> Any:
    """The value at `path` in nested dicts (the API's JSON), or `default`."""
    cur: Any = obj
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return default
        cur = cur[key]
    return cur


def deployment_revision(deployment: dict[str, Any]) -> str | None:
    value = dig(deployment, "metadata", "annotations", REVISION_ANNOTATION)
    return str(value) if value is not None else None


def container_images(template: dict[str, Any]) -> tuple[str, ...]:
    containers = dig(template, "spec", "containers", default=[]) or []
    return tuple(str(c.get("image", "")) for c in containers)


def rollout_state(deployment: dict[str, Any]) -> RolloutState:
    """The `kubectl rollout status` rule (k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go).

    Complete when the controller has observed the latest generation, all replicas are updated,
    no old replicas remain and all updated replicas are available. A `Progressing` condition
    with reason `ProgressDeadlineExceeded` is a failure.
    """
    name = dig(deployment, "metadata", "name", default="?")
    generation = int(dig(deployment, "metadata", "generation", default=0) or 0)
    status = dig(deployment, "status", default={}) or {}
    observed = int(status.get("observedGeneration", 0) or 0)
    desired = dig(deployment, "spec", "replicas")
    desired = 1 if desired is None else int(desired)
    updated = int(status.get("updatedReplicas", 0) or 0)
    replicas = int(status.get("replicas", 0) or 0)
    available = int(status.get("availableReplicas", 0) or 0)
    revision = deployment_revision(deployment)
    images = container_images(dig(deployment, "spec", "template", default={}) or {})
    paused = bool(dig(deployment, "spec", "paused", default=False))

    def state(complete: bool, failed: bool, message: str) -> RolloutState:
        return RolloutState(complete, failed, message, revision, images, paused)

    if generation > observed:
        return state(False, False, f"waiting for deployment {name!r} spec update to be observed")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return state(False, True, f"deployment {name!r} exceeded its progress deadline")
    if updated < desired:
        return state(
            False,
            False,
            f"waiting for deployment {name!r} rollout to finish: "
            f"{updated} out of {desired} new replicas have been updated",
        )
    if replicas > updated:
        return state(
            False,
            False,
            f"waiting for deployment {name!r} rollout to finish: "
            f"{replicas - updated} old replicas are pending termination",
        )
    if available < updated:
        return state(
            False,
            False,
            f"waiting for deployment {name!r} rollout to finish: "
            f"{available} of {updated} updated replicas are available",
        )
    return state(True, False, f"deployment {name!r} successfully rolled out")


def image_matches(images: tuple[str, ...], wanted: str | None) -> bool:
    return wanted is None or wanted in images


def _template_without_hash(template: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(template)
    labels = dig(out, "metadata", "labels")
    if isinstance(labels, dict):
        labels.pop("pod-template-hash", None)
    return out


@dataclass(frozen=True)
class Revision:
    """One revision of a Deployment (a ReplicaSet of it) and the images its pods run."""

    revision: str
    images: tuple[str, ...]


def revision_history(
    deployment: dict[str, Any], replica_sets: list[dict[str, Any]]
) -> tuple[Revision, ...]:
    """The Deployment's revisions, newest first, from the ReplicaSets it owns (a ReplicaSet
    used again stands for its newest revision)."""
    uid = dig(deployment, "metadata", "uid")
    found: list[tuple[int, Revision]] = []
    for rs in replica_sets:
        owners = dig(rs, "metadata", "ownerReferences", default=[]) or []
        if uid is not None and not any(o.get("uid") == uid for o in owners):
            continue
        value = str(dig(rs, "metadata", "annotations", REVISION_ANNOTATION, default="") or "")
        if not value.isdigit():
            continue
        images = container_images(dig(rs, "spec", "template", default={}) or {})
        found.append((int(value), Revision(value, images)))
    return tuple(rev for _, rev in sorted(found, key=lambda pair: pair[0], reverse=True))


def revision_before_version(history: tuple[Revision, ...], version: str) -> Revision | None:
    """The newest revision that does not run `version`: what undoing that version's rollout
    goes back to (None: every revision runs it)."""
    for rev in history:
        if version not in rev.images:
            return rev
    return None


@dataclass(frozen=True)
class UndoPlan:
    """What `kubectl rollout undo --to-revision` would do."""

    patch: list[dict[str, Any]] | None  # JSON patch; None when nothing is to be done
    message: str
    error: bool = False


def _revisions_of(replica_set: dict[str, Any]) -> set[str]:
    """The revisions a ReplicaSet stands for: its own, and those it had before it was used
    again. Undoing to revision 1 makes revision 1's ReplicaSet the newest revision (3, say)
    and records "1" in its revision history: a second undo (after a crash) must find it."""
    annotations = dig(replica_set, "metadata", "annotations", default={}) or {}
    history = str(annotations.get(REVISION_HISTORY_ANNOTATION, ""))
    revisions = {r.strip() for r in history.split(",") if r.strip()}
    revisions.add(str(annotations.get(REVISION_ANNOTATION, "")))
    return revisions


def plan_rollout_undo(
    deployment: dict[str, Any], replica_sets: list[dict[str, Any]], to_revision: str
) -> UndoPlan:
    """Build the JSON patch `kubectl rollout undo --to-revision=N` sends.

    Refuses a paused Deployment, finds the ReplicaSet carrying the revision, and skips when the
    template is already equal (ignoring `pod-template-hash`): undoing twice must be a no-op,
    which is what makes the rollback crash-safe.
    """
    name = dig(deployment, "metadata", "name", default="?")
    if dig(deployment, "spec", "paused", default=False):
        return UndoPlan(None, f"deployment {name!r} is paused; resume it to undo", error=True)
    uid = dig(deployment, "metadata", "uid")
    source = None
    for rs in replica_sets:
        owners = dig(rs, "metadata", "ownerReferences", default=[]) or []
        if uid is not None and not any(o.get("uid") == uid for o in owners):
            continue
        if str(to_revision) in _revisions_of(rs):
            source = rs
            break
    if source is None:
        return UndoPlan(
            None, f"revision {to_revision} of deployment {name!r} not found", error=True
        )
    wanted = _template_without_hash(dig(source, "spec", "template", default={}) or {})
    current = _template_without_hash(dig(deployment, "spec", "template", default={}) or {})
    if wanted == current:
        return UndoPlan(
            None, f"deployment {name!r} already has the template of revision {to_revision}"
        )
    annotations = dict(dig(deployment, "metadata", "annotations", default={}) or {})
    source_annotations = dig(source, "metadata", "annotations", default={}) or {}
    kept = {k: v for k, v in annotations.items() if k in CONTROLLER_ANNOTATIONS}
    for key, value in source_annotations.items():
        if key not in CONTROLLER_ANNOTATIONS:
            kept[key] = value
    patch = [
        {"op": "replace", "path": "/spec/template", "value": wanted},
        {"op": "replace", "path": "/metadata/annotations", "value": kept},
    ]
    return UndoPlan(patch, f"rolled deployment {name!r} back to revision {to_revision}")
