"""The plan as Markdown: the seed's "Migration Plan" (type, impact analysis, strategy, steps,
lint) and "Rollback Strategy". Nothing here is a template filled with prose: each line comes
from the plan built from the steps themselves (`build`); the Steps section is `steps`, the
Rollback Strategy `rollback`.
"""

from __future__ import annotations

from collections.abc import Iterable

from dbmigrate.api.durations import format_duration, parse_duration
from dbmigrate.api.models import DatabaseMigrationStatus
from dbmigrate.core.batching import format_count
from dbmigrate.core.checklist import ChecklistFacts, evaluate_checklist
from dbmigrate.core.lint import count_blocking
from dbmigrate.core.locks import LockMode
from dbmigrate.core.plan.build import MigrationPlan, blocking_statements, created_in_migration
from dbmigrate.core.plan.formatting import format_seconds, step_summary, table_size
from dbmigrate.core.plan.rollback import render_rollback
from dbmigrate.core.plan.steps import render_steps

_TYPE_TITLES = {
    "DDL": "Schema change (DDL)",
    "index": "Index",
    "constraint": "Constraint",
    "DML": "Data migration (DML)",
    "backfill": "Data migration (batched backfill)",
    "rollout gate": "Rollout gate",
    "tool job": "Tool job",
    "maintenance": "Maintenance",
}


def render_plan(plan: MigrationPlan) -> str:
    """The plan as Markdown: Migration Plan, Steps, Lint, Rollback Strategy."""
    lines: list[str] = []
    spec = plan.spec
    lines.append(f"# Migration Plan: {spec.migration_id}")
    lines.append("")
    if plan.name:
        qualified = f"{plan.namespace}/{plan.name}" if plan.namespace else plan.name
        lines.append(f"- DatabaseMigration: `{qualified}`")
    if spec.target_deployment:
        lines.append(
            f"- Target: Deployment `{spec.target_deployment}` (must be fully rolled out before "
            "every step)"
        )
    lines.append(
        f"- Server: PostgreSQL {plan.server_version} ({plan.server_version_source}); lock "
        f"timeout {spec.safety.lock_timeout} with up to {spec.safety.lock_retries} retries per "
        "statement"
    )
    lines.append("")
    lines.extend(_render_type(plan))
    lines.extend(_render_impact(plan))
    lines.extend(_render_strategy(plan))
    lines.extend(render_steps(plan))
    lines.extend(_render_lint(plan))
    lines.extend(render_rollback(plan))
    lines.extend(_render_post_deploy(plan))
    lines.extend(_render_checklist(plan))
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _render_type(plan: MigrationPlan) -> list[str]:
    kinds: list[str] = []
    for step in plan.steps:
        kinds.extend(part.strip() for part in step.type_label.split("+"))
    titles = [_TYPE_TITLES.get(k, k) for k in dict.fromkeys(kinds)]
    return ["## Type", "", " + ".join(titles), ""]


def _render_impact(plan: MigrationPlan) -> list[str]:
    lines = ["## Impact Analysis", ""]
    tables: dict[str, None] = {}
    for step in plan.steps:
        for table in step.tables:
            tables.setdefault(table)
    existing = [t for t in tables if not created_in_migration(plan, t)]
    created = [t for t in tables if created_in_migration(plan, t)]
    if existing:
        lines.append("- Tables: " + "; ".join(table_size(plan, t) for t in existing))
    if created:
        lines.append("- Tables created by this migration: " + ", ".join(created))
    if existing and not any(plan.estimates.get(t) for t in existing):
        lines.append("- Row estimates: none (run `dbmigrate plan --dsn …` to read them)")
    lines.append("- Estimated time: " + _estimated_time(plan))

    blocking = blocking_statements(plan)
    rewrites = [
        (step, s)
        for step in plan.steps
        for s in step.up
        if s.effect.rewrite != "no" and not s.on_new_tables
    ]
    if rewrites:
        lines.append(
            "- Table rewrites: "
            + "; ".join(
                f"{step.name}: {', '.join(s.effect.relations)}"
                + (" (maybe)" if s.effect.rewrite == "maybe" else "")
                for step, s in rewrites
            )
        )
    else:
        lines.append("- Table rewrites: none")
    strongest = [
        (step, s)
        for step in plan.steps
        for s in step.up
        if s.effect.strongest is LockMode.ACCESS_EXCLUSIVE and not s.on_new_tables
    ]
    if strongest:
        steps = ", ".join(dict.fromkeys(step.name for step, _ in strongest))
        lines.append(f"- ACCESS EXCLUSIVE locks (reads and writes wait): in {steps}")
    if blocking:
        lines.append(
            "- Downtime: "
            + "; ".join(
                f"{s.effect.strongest.label if s.effect.strongest else ''} blocks "
                f"{s.effect.strongest.blocks if s.effect.strongest else ''} on "
                f"{', '.join(table_size(plan, t) for t in s.effect.relations)} for the whole "
                f"{'rewrite' if s.effect.rewrite != 'no' else 'scan'} (step {step.name})"
                for step, s in blocking
            )
        )
    else:
        lines.append("- Downtime: zero expected (every lock that blocks reads or writes is brief)")
    errors = sum(1 for f in plan.findings if f.blocking)
    warnings = sum(1 for f in plan.findings if f.severity == "warning" and not f.suppressed)
    suppressed = sum(1 for f in plan.findings if f.suppressed)
    lines.append(
        f"- Lint: {errors} error(s), {warnings} warning(s)"
        + (f", {suppressed} suppressed" if suppressed else "")
    )
    lines.append("")
    return lines


def _estimated_time(plan: MigrationPlan) -> str:
    parts: list[str] = []
    backfills = [s for s in plan.steps if s.step.backfill is not None]
    known = [s for s in backfills if s.backfill_seconds is not None]
    if known and plan.backfill_rate:
        total = sum(s.backfill_seconds or 0.0 for s in known)
        parts.append(
            f"≈ {format_seconds(total)} of backfill at {format_count(int(plan.backfill_rate))} "
            f"rows/s ({plan.backfill_rate_source})"
        )
    if len(known) < len(backfills):
        parts.append(
            "backfill time unknown for "
            + ", ".join(s.name for s in backfills if s.backfill_seconds is None)
            + " (no row estimate)"
        )
    scans = [
        (step, s)
        for step in plan.steps
        for s in step.up
        if s.effect.long_running and not s.on_new_tables
    ]
    if scans:
        parts.append(
            "whole-table reads or rewrites in "
            + ", ".join(dict.fromkeys(step.name for step, _ in scans))
            + " take time proportional to the table's size"
        )
    brief = [
        step.name
        for step in plan.steps
        if step.step.sql is not None
        and step.up
        and not any(s.effect.long_running and not s.on_new_tables for s in step.up)
    ]
    if brief:
        parts.append(f"{', '.join(brief)}: metadata-only (milliseconds plus lock waits)")
    gates = [s for s in plan.steps if s.step.await_rollout is not None]
    if gates:
        limit = sum(
            parse_duration(s.step.await_rollout.timeout)
            for s in gates
            if s.step.await_rollout is not None
        )
        parts.append(f"rollout gates wait up to {format_duration(limit)}")
    return "; ".join(parts) if parts else "not estimated"


def _render_strategy(plan: MigrationPlan) -> list[str]:
    has_gate = any(s.step.await_rollout is not None for s in plan.steps)
    blocking = blocking_statements(plan)
    if blocking:
        kind = "Migration with blocking phases"
    elif has_gate or len(plan.steps) > 1:
        kind = "Multi-phase online migration"
    else:
        kind = "Online migration"
    phases: list[str] = []
    for step in plan.steps:
        if step.step.await_rollout is not None:
            phases.append("roll out")
        elif step.step.backfill is not None:
            phases.append("backfill")
        elif step.analysis.contract_phase:
            phases.append("contract")
        else:
            phases.append("expand")
    flow = " → ".join(_collapse(phases))
    lines = ["## Strategy", "", f"{kind} ({flow}):", ""]
    for step in plan.steps:
        marks = []
        if step.step.point_of_no_return:
            marks.append("point of no return")
        if not step.reversible:
            marks.append("irreversible")
        mark = f" — {', '.join(marks)}" if marks else ""
        lines.append(
            f"{step.number}. `{step.name}` ({step.type_label}): {step_summary(step)}{mark}"
        )
    lines.append("")
    return lines


def _collapse(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return out


def _render_lint(plan: MigrationPlan) -> list[str]:
    lines = ["## Lint", ""]
    if not plan.findings:
        lines.append("No findings.")
        lines.append("")
        return lines
    for f in plan.findings:
        where = ", ".join(x for x in (f.step or "", f.location()) if x)
        state = " (suppressed: " + (f.reason or "no reason") + ")" if f.suppressed else ""
        lines.append(f"- **{f.severity}** `{f.rule}` ({where}){state}: {f.message}")
    lines.append("")
    return lines


def _render_post_deploy(plan: MigrationPlan) -> list[str]:
    """The seed's Phase 6 as spec.postDeploy asks for it (nothing without it)."""
    post = plan.spec.post_deploy
    if post is None:
        return []
    then = (
        "roll the migration back (before its point of no return)"
        if post.on_regression == "Rollback"
        else "report it (event, metric, status)"
    )
    lines = [
        "## After the Last Step",
        "",
        f"- Watch for {post.watch}, sampling every {post.interval}: a statement on a migrated "
        f"table whose mean time is {post.max_query_regression:g}x its mean before the first "
        f"step (after {post.min_calls} calls) is a regression: {then}.",
        "- An index the migration created and the application never scanned during the watch "
        "is reported as unused.",
    ]
    for step in post.cleanup or []:
        first = " ".join(step.sql.split())
        lines.append(f"- Then cleanup `{step.name}`: `{first[:100]}`")
    lines.append("")
    return lines


def _render_checklist(plan: MigrationPlan) -> list[str]:
    """The seed's pre-deployment checklist, as far as the manifest and lint can tell (the
    operator adds the rehearsal, the backup and the Prometheus baselines in status.checklist)."""
    facts = ChecklistFacts(
        lint_errors=count_blocking(list(plan.findings)),
        lint_findings=len(plan.findings),
        approval=plan.approval,
    )
    checklist = evaluate_checklist(plan.spec, DatabaseMigrationStatus(), facts)
    lines = ["## Pre-deployment Checklist", ""]
    lines.extend(f"- {line}" for line in checklist.checkboxes or ())
    if checklist.missing:
        lines.append("")
        lines.append(
            "The first step waits until the required items hold: "
            + ", ".join(checklist.missing)
            + "."
        )
    lines.append("")
    return lines
