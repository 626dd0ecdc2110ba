"""The short form of the plan for `status.plan`: a few lines the operator writes into the
DatabaseMigration's status (`reconcile.runner`)."""

from __future__ import annotations

from dbmigrate.api.models import DatabaseMigrationSpec
from dbmigrate.core.lint.findings import (
    Resolved,
)
from dbmigrate.core.locks import DEFAULT_SERVER_VERSION
from dbmigrate.core.plan.build import build_plan


def render_plan_summary(
    spec: DatabaseMigrationSpec,
    resolved: Resolved | None = None,
    server_version: int = DEFAULT_SERVER_VERSION,
) -> str:
    """A few lines for `status.plan`: each step's type and strongest lock, rewrites,
    reversibility and the point of no return."""
    plan = build_plan(spec, resolved=resolved, server_version=server_version)
    parts = []
    for step in plan.steps:
        detail = step.type_label
        if step.up:
            strongest = max(step.up, key=lambda a: a.effect.strongest or 0)
            if strongest.effect.strongest is not None:
                tables = ", ".join(strongest.effect.relations)
                detail += f"; {strongest.effect.describe_lock()} on {tables}"
        elif step.step.backfill is not None:
            detail += f" of {step.step.backfill.table}"
        if step.step.point_of_no_return:
            detail += "; point of no return"
        parts.append(f"{step.name} ({detail})")
    rewrites = sorted(
        {
            t
            for step in plan.steps
            for a in step.up
            if a.effect.rewrite != "no" and not a.on_new_tables
            for t in a.effect.relations
        }
    )
    reversible = [s.name for s in plan.steps if s.step.sql is not None and s.reversible]
    irreversible = [s.name for s in plan.steps if not s.reversible]
    ponr = plan.point_of_no_return
    lines = [
        f"{len(plan.steps)} step(s): " + ", ".join(parts) + ".",
        "Table rewrites: " + (", ".join(rewrites) if rewrites else "none") + ".",
        "Down SQL: "
        + (", ".join(reversible) if reversible else "none")
        + ("; irreversible: " + ", ".join(irreversible) if irreversible else "")
        + ".",
        (
            f"Automatic rollback possible until {ponr.name} succeeds."
            if ponr is not None
            else "No point of no return."
        ),
    ]
    return "\n".join(lines)
