"""The pre-deployment checklist as computed facts: `evaluate_checklist(spec, status, facts)`.

Pure. Each item of the seed's Step 4.1 that the operator can establish itself is judged here
from the spec, the status (rehearsal, backup) and what the pass observed (lint, Prometheus, the
approval annotation); `decide` holds the first step while a required item does not hold.
Who approved comes from the object's managedFields (`approval_of`): the annotation's value is
what a person typed, the manager and time are what the API server recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dbmigrate.api.checklist import (
    CHECKLIST_ITEMS,
    ChecklistItemName,
    ChecklistItemStatus,
    ChecklistStatus,
)
from dbmigrate.api.models import (
    APPROVAL_ANNOTATION,
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
    Step,
)

# Items whose absence only a change of the spec (or its SQL) can cure: waiting on them is a
# stall, not progress. The others wait for a person (Approval) or a service (Monitoring).
_NEEDS_A_NEW_SPEC: frozenset[str] = frozenset({"Lint", "RollbackPlan"})


@dataclass(frozen=True)
class Approval:
    """The approval annotation: its value and who set it (managedFields)."""

    by: str
    manager: str | None = None
    at: str | None = None


@dataclass(frozen=True)
class MonitoringFacts:
    """Whether the analysis can measure: every metric's baseline, or why not."""

    baselines: Mapping[str, float]
    problems: Mapping[str, str]  # metric -> why it has no baseline

    @property
    def ready(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class ChecklistFacts:
    lint_errors: int = 0
    lint_findings: int = 0
    approval: Approval | None = None
    monitoring: MonitoringFacts | None = None  # None: not measured (no analysis, or not yet)


@dataclass(frozen=True)
class _Judged:
    satisfied: bool
    detail: str


def evaluate_checklist(
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    facts: ChecklistFacts,
) -> ChecklistStatus:
    """Every item, whether it holds and why; `complete` when every required one does."""
    required = set(spec.checklist.require if spec.checklist else ())
    judges = {
        "Lint": lambda: _lint(spec, facts),
        "Rehearsal": lambda: _rehearsal(spec, status),
        "Backup": lambda: _backup(spec, status),
        "RollbackPlan": lambda: _rollback_plan(spec.steps),
        "Monitoring": lambda: _monitoring(spec, facts, status),
        "Approval": lambda: _approval(facts.approval),
    }
    items: list[ChecklistItemStatus] = []
    for name in CHECKLIST_ITEMS:
        judged = judges[name]()
        items.append(
            ChecklistItemStatus(
                name=name,
                satisfied=judged.satisfied,
                required=name in required,
                detail=judged.detail,
            )
        )
    missing = [i.name for i in items if i.required and not i.satisfied]
    approval = facts.approval
    return ChecklistStatus(
        complete=not missing,
        missing=missing or None,
        items=items,
        checkboxes=[checkbox(i) for i in items],
        approved_by=approval.by if approval else None,
        approval_set_by=approval.manager if approval else None,
        approved_at=approval.at if approval else None,
    )


def checkbox(item: ChecklistItemStatus) -> str:
    """The seed's checkbox line: `[x] Lint: no error finding`."""
    mark = "x" if item.satisfied else " "
    required = " (required)" if item.required else ""
    return f"[{mark}] {item.name}{required}: {item.detail or ''}".rstrip(": ")


def missing_needs_a_new_spec(checklist: ChecklistStatus) -> bool:
    """Whether a missing item can only be cured by changing the spec (then the wait stalls)."""
    return any(name in _NEEDS_A_NEW_SPEC for name in checklist.missing or ())


def waiting_message(checklist: ChecklistStatus) -> str:
    """Why the first step waits: each missing item and what makes it hold."""
    parts = []
    for name in checklist.missing or ():
        item = checklist.item(name)
        detail = item.detail if item is not None and item.detail else "does not hold"
        if name == "Approval":
            detail = f"annotate {APPROVAL_ANNOTATION}=<who approves>"
        parts.append(f"{name} ({detail})")
    return "checklist incomplete, waiting for: " + "; ".join(parts)


# --- the items ----------------------------------------------------------------------------------


def _lint(spec: DatabaseMigrationSpec, facts: ChecklistFacts) -> _Judged:
    if spec.safety.lint == "Off":
        return _Judged(False, "not run (safety.lint: Off)")
    if facts.lint_errors:
        return _Judged(False, f"{facts.lint_errors} error finding(s) (see status.lint)")
    others = facts.lint_findings - facts.lint_errors
    note = f" ({others} warning(s) or note(s))" if others else ""
    return _Judged(True, f"passed: no error finding{note}")


def _rehearsal(spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus) -> _Judged:
    if spec.rehearsal is None:
        return _Judged(False, "not configured (spec.rehearsal)")
    done = status.rehearsal
    if done is None:
        return _Judged(False, "runs on a scratch copy before the first step")
    if done.result != "Passed":
        return _Judged(False, f"failed: {done.message or 'see status.rehearsal'}")
    # The measured durations, per phase (up, verify, down, up again).
    per_phase: dict[str, float] = {}
    for step in done.steps or []:
        per_phase[step.phase] = per_phase.get(step.phase, 0.0) + step.seconds
    phases = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in per_phase.items())
    detail = f"passed in {done.seconds or 0.0:.1f}s ({phases}; {done.rows_copied} rows copied)"
    if done.up_only:
        detail += f"; up only past the point of no return: {', '.join(done.up_only)}"
    return _Judged(True, detail)


def _backup(spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus) -> _Judged:
    """Configured is what the start needs: the guarded step cannot run without a verified
    backup. Once taken, the item says where, how big, and its checksum."""
    if spec.backup is None:
        return _Judged(False, "not configured (spec.backup)")
    done = status.backup
    if done is not None and done.state == "Succeeded":
        size = f"{(done.size_bytes or 0) / 1e6:.1f} MB"
        digest = (done.sha256 or "")[:12]
        return _Judged(
            True,
            f"taken and verified before step {done.before_step!r}: {done.location}, {size}, "
            f"sha256 {digest}",
        )
    if done is not None and done.state == "Failed":
        return _Judged(True, f"configured; the last attempt failed: {done.message or ''}")
    storage = "a PersistentVolumeClaim" if spec.backup.persistent_volume_claim else "S3"
    return _Judged(
        True,
        f"configured ({spec.backup.when}, to {storage}); taken and verified before the "
        "step it guards",
    )


def _rollback_plan(steps: Sequence[Step]) -> _Judged:
    """Every step before the point of no return can be undone (all of them without one)."""
    before: list[Step] = []
    point = None
    for step in steps:
        if step.point_of_no_return:
            point = step
            break
        before.append(step)
    cannot = [s.name for s in before if not s.reversible]
    if cannot:
        names = ", ".join(repr(n) for n in cannot)
        return _Judged(
            False,
            f"cannot be undone: {names} (a sql step needs down SQL; a job step's own down "
            "migration is not something dbmigrate runs)",
        )
    if point is None:
        return _Judged(True, f"every step can be undone ({len(before)})")
    if not before:
        return _Judged(True, f"the first step {point.name!r} is the point of no return")
    return _Judged(
        True,
        f"the {len(before)} step(s) before the point of no return {point.name!r} can be undone",
    )


def _monitoring(
    spec: DatabaseMigrationSpec, facts: ChecklistFacts, status: DatabaseMigrationStatus
) -> _Judged:
    analysis = spec.analysis
    if analysis is None:
        return _Judged(False, "not configured (spec.analysis)")
    seen = facts.monitoring
    if seen is None:
        # After the start nothing is measured for the checklist: what held then stands.
        previous = status.checklist.item("Monitoring") if status.checklist else None
        if previous is not None and previous.detail:
            return _Judged(previous.satisfied, previous.detail)
        return _Judged(
            False,
            f"{len(analysis.metrics)} metric(s); Prometheus and the baselines are checked "
            "before the start",
        )
    if not seen.ready:
        why = "; ".join(f"{name}: {problem}" for name, problem in sorted(seen.problems.items()))
        return _Judged(False, f"no baseline for {len(seen.problems)} metric(s): {why}")
    values = ", ".join(f"{n} {v:.4g}" for n, v in sorted(seen.baselines.items()))
    return _Judged(True, f"{len(analysis.metrics)} metric(s) measurable; baselines: {values}")


def _approval(approval: Approval | None) -> _Judged:
    if approval is None:
        return _Judged(False, f"not approved (annotation {APPROVAL_ANNOTATION})")
    who = f"approved by {approval.by}"
    if approval.manager:
        who += f" (set with {approval.manager}"
        who += f" at {approval.at})" if approval.at else ")"
    return _Judged(True, who)


# --- approval ---------------------------------------------------------------------------------


def approval_of(metadata: Mapping[str, Any]) -> Approval | None:
    """The approval annotation and its setter: the managedFields entry that owns the annotation
    (the newest, if several managers claim it)."""
    value = str((metadata.get("annotations") or {}).get(APPROVAL_ANNOTATION) or "").strip()
    if not value:
        return None
    key = f"f:{APPROVAL_ANNOTATION}"
    owners = []
    for entry in metadata.get("managedFields") or []:
        fields = entry.get("fieldsV1") or {}
        annotations = (fields.get("f:metadata") or {}).get("f:annotations") or {}
        if key in annotations:
            owners.append(entry)
    if not owners:
        return Approval(by=value)
    newest = max(owners, key=lambda e: str(e.get("time") or ""))
    manager = str(newest.get("manager") or "") or None
    return Approval(by=value, manager=manager, at=newest.get("time"))


def required_items(spec: DatabaseMigrationSpec) -> tuple[ChecklistItemName, ...]:
    return tuple(spec.checklist.require) if spec.checklist else ()
