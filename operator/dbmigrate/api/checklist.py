"""The pre-deployment checklist (the seed's Step 4.1): `spec.checklist` says which items must
hold before the first step runs, `status.checklist` shows every item as a computed fact.

Items are facts the operator can establish itself, not boxes a person ticks: lint found no
error, the rehearsal passed, a backup is configured (and later: taken and verified), every step
before the point of no return can be undone, the analysis can measure (Prometheus answers, a
baseline exists), and a person approved (the `dbmigrate.io/approved-by` annotation).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from dbmigrate.api.schema import APPROVAL_ANNOTATION, Model, cel_rules

ChecklistItemName = Literal["Lint", "Rehearsal", "Backup", "RollbackPlan", "Monitoring", "Approval"]
# The order the items are shown in: the seed's checklist order.
CHECKLIST_ITEMS: tuple[ChecklistItemName, ...] = (
    "Lint",
    "Rehearsal",
    "Backup",
    "RollbackPlan",
    "Monitoring",
    "Approval",
)


class Checklist(Model):
    """Which checklist items must hold before the first step runs."""

    require: Annotated[
        list[ChecklistItemName],
        Field(
            default_factory=list,
            max_length=len(CHECKLIST_ITEMS),
            description=(
                "Until each of these holds the migration waits (phase Waiting, reason "
                "ChecklistIncomplete) without taking the database's migration lock. Lint: no "
                "error finding. Rehearsal: spec.rehearsal passed. Backup: spec.backup is set "
                "(it is then taken and verified before the step it guards). RollbackPlan: every "
                "step before the point of no return can be undone. Monitoring: spec.analysis is "
                "set, Prometheus answers and every metric has a baseline. Approval: the "
                f"{APPROVAL_ANNOTATION} annotation names who approved."
            ),
            json_schema_extra=cel_rules(
                {
                    "rule": "self.all(x, self.filter(y, y == x).size() == 1)",
                    "message": "checklist.require names each item once",
                }
            ),
        ),
    ]


class ChecklistItemStatus(Model):
    model_config = ConfigDict(extra="ignore")

    name: ChecklistItemName
    satisfied: bool
    required: bool = False
    detail: str | None = None


class ChecklistStatus(Model):
    """The checklist as computed facts, and what the start waits for."""

    model_config = ConfigDict(extra="ignore")

    complete: bool = True  # every required item holds
    missing: list[str] | None = None  # required items that do not hold yet
    items: list[ChecklistItemStatus] | None = None
    # The seed's checkboxes, one line per item (`kubectl describe` shows them as they are).
    checkboxes: list[str] | None = None
    approved_by: str | None = None  # the annotation's value
    # Who set the annotation, as the API server recorded it (managedFields: manager, time).
    approval_set_by: str | None = None
    approved_at: str | None = None

    def item(self, name: str) -> ChecklistItemStatus | None:
        for i in self.items or []:
            if i.name == name:
                return i
        return None
