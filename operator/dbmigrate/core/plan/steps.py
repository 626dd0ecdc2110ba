"""The Steps section of the Markdown plan: per step, its statements with lock, rewrite and
notes, its transactions, how it is undone, and for a backfill its batches and estimate."""

from __future__ import annotations

from collections.abc import Iterable

from pglast import ast
from pglast.enums import AlterTableType

from dbmigrate.core.batching import format_count
from dbmigrate.core.lint.findings import (
    AnalysedStatement,
    SqlAnalysis,
)
from dbmigrate.core.plan.build import MigrationPlan, StepPlan, backfill_columns
from dbmigrate.core.plan.formatting import cell, code, format_seconds, table_size
from dbmigrate.core.sqlast import relation_name, table_key
from dbmigrate.core.statements import compact_sql


def render_steps(plan: MigrationPlan) -> list[str]:
    lines = ["## Steps", ""]
    for step in plan.steps:
        lines.append(f"### {step.number}. {step.name} — {step.type_label}")
        lines.append("")
        s = step.step
        if s.sql is not None:
            lines.extend(_render_sql_step(plan, step))
        elif s.backfill is not None:
            lines.extend(_render_backfill_step(plan, step))
        elif s.await_rollout is not None:
            target = plan.spec.target_deployment or "(no target.deployment)"
            image = f" has image `{s.await_rollout.image}` and" if s.await_rollout.image else ""
            lines.append(
                f"- Waits until Deployment `{target}`{image} is fully rolled out; fails after "
                f"{s.await_rollout.timeout}."
            )
            lines.append("- Locks: none. Steps after this one are the contract phase.")
        elif s.job is not None:
            command = " ".join([*(s.job.command or []), *(s.job.args or [])])
            lines.append(
                f"- Runs `{s.job.image}`" + (f" with `{command}`" if command else "") + "."
            )
            lines.append("- Locks and rewrites: unknown (decided by the tool).")
            lines.append("- Reversible: no (dbmigrate cannot run the tool's down migration).")
        if s.verify:
            lines.append(f"- Verify: `{compact_sql(s.verify, 120)}`")
        if s.point_of_no_return:
            lines.append(
                "- **Point of no return**: once it succeeds, automatic rollback is refused."
            )
        lines.append("")
    return lines


def _render_sql_step(plan: MigrationPlan, step: StepPlan) -> list[str]:
    s = step.step
    assert s.sql is not None
    lines: list[str] = []
    analysis = step.analysis
    if analysis.up_source == "missing":
        lines.append("- Up SQL: from a ConfigMap that was not provided; not analysed.")
    elif analysis.up is not None and analysis.up.syntax_error is not None:
        lines.append(f"- Up SQL does not parse: {analysis.up.syntax_error}")
    elif step.up:
        lines.extend(_statement_table(step.up))
        lines.append("")
    lines.append(f"- Transaction: {s.sql.transaction}" + _transactions_note(analysis.up))
    if not step.reversible:
        lines.append("- Reversible: **no** (no down SQL)")
    elif analysis.down_source == "missing":
        lines.append("- Reversible: yes (down SQL from a ConfigMap that was not provided)")
    elif step.down:
        undo = "; ".join(
            f"{code(d.statement.text, 100)} — {d.effect.describe_lock()}" for d in step.down
        )
        lines.append(f"- Reversible: yes — {undo}")
    return lines


def _transactions_note(analysis: SqlAnalysis | None) -> str:
    if analysis is None or not analysis.statements:
        return ""
    alone = [a for a in analysis.statements if a.statement.needs_own_transaction]
    if not alone:
        return ""
    return f" ({len(alone)} statement(s) run on their own, outside a transaction)"


def _statement_table(statements: Iterable[AnalysedStatement]) -> list[str]:
    lines = [
        "| # | Statement | Lock | Rewrite | Notes |",
        "|---|---|---|---|---|",
    ]
    for a in statements:
        effect = a.effect
        notes = list(effect.notes)
        if a.on_new_tables:
            notes.insert(0, "table created in this migration")
        lines.append(
            f"| {a.statement.index + 1} | {cell(code(a.statement.text))} | "
            f"{cell(_statement_line(a))} | {effect.rewrite} | {cell('; '.join(notes))} |"
        )
    return lines


def _statement_line(statement: AnalysedStatement) -> str:
    effect = statement.effect
    lock = effect.describe_lock()
    where = ", ".join(lock.where for lock in effect.locks)
    text = f"{lock} on {where}" if where else lock
    if statement.on_new_tables:
        text += " — table created in this migration"
    return text


def _render_backfill_step(plan: MigrationPlan, step: StepPlan) -> list[str]:
    b = step.step.backfill
    assert b is not None
    lines = [
        f"- Table: {table_size(plan, b.table)}",
        f"- Set: `{b.set}`" + (f"; where: `{b.where}`" if b.where else ""),
        f"- Batches: {format_count(b.batch_size)} rows at first, adapting towards "
        f"{b.target_batch_duration} per batch (at most {format_count(b.max_batch_size)}); "
        f"pause {b.pause}; parallelism {b.parallelism}",
        "- Locks: ROW EXCLUSIVE on the table and row locks of one batch at a time; each batch "
        "commits on its own; resumable from its checkpoint",
    ]
    if step.backfill_rows is not None:
        rows = format_count(step.backfill_rows)
        scope = "up to " if b.where else ""
        if step.backfill_seconds is not None and plan.backfill_rate:
            lines.append(
                f"- Estimate: {scope}{rows} rows ≈ {format_seconds(step.backfill_seconds)} at "
                f"{format_count(int(plan.backfill_rate))} rows/s ({plan.backfill_rate_source})"
            )
        else:
            lines.append(f"- Estimate: {scope}{rows} rows")
    lines.append(f"- Reversible: yes — {backfill_undo(plan, step)}")
    return lines


def backfill_undo(plan: MigrationPlan, step: StepPlan) -> str:
    """How a rollback gets rid of what a backfill wrote: the down SQL of an earlier step that
    drops the columns it fills, if there is one."""
    b = step.step.backfill
    assert b is not None
    columns = set(backfill_columns(step.step))
    for earlier in plan.steps[: step.number - 1]:
        for d in earlier.down:
            node = d.statement.node
            if not isinstance(node, ast.AlterTableStmt):
                continue
            if table_key(relation_name(node.relation)) != table_key(b.table):
                continue
            dropped = {
                str(cmd.name)
                for cmd in node.cmds or ()
                if cmd.subtype == AlterTableType.AT_DropColumn
            }
            if columns and columns <= dropped:
                return (
                    f"nothing to run; the values go with column(s) {', '.join(sorted(columns))} "
                    f"dropped by `{earlier.name}`'s down SQL"
                )
    return "nothing to run; the rows it changed keep their new values (backfills are not reverted)"
