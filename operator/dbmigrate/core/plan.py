"""The migration plan: the seed's "Migration Plan" and "Rollback Strategy", derived from a spec.

Nothing here is a template filled with prose: each line comes from the steps themselves — the
kind of each statement, the lock it takes (`core.locks`, adjusted by what earlier steps did, via
the lint engine's analysis), whether it rewrites or scans the table, which steps have down SQL,
where the point of no return is — plus, when the caller gives them, per-table estimates (rows,
bytes) and a backfill rate, from which the backfill time is estimated. Pure: the caller reads
the estimates (`db.catalog`) and passes them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pglast import ast
from pglast.enums import AlterTableType

from dbmigrate.api.durations import format_duration, parse_duration
from dbmigrate.api.models import DatabaseMigrationSpec, Step
from dbmigrate.core.batching import format_count
from dbmigrate.core.lint.context import DEFAULT_SERVER_VERSION
from dbmigrate.core.lint.engine import (
    AnalysedStatement,
    Finding,
    Resolved,
    SqlAnalysis,
    StepAnalysis,
    analyse_migration,
)
from dbmigrate.core.locks import LockMode, relation_name, table_key
from dbmigrate.core.statements import SqlSyntaxError, compact_sql, parse_statements

_CATEGORY_LABEL = {
    "DDL": "DDL",
    "index": "index",
    "constraint": "constraint",
    "DML": "DML",
    "maintenance": "maintenance",
}
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


@dataclass(frozen=True)
class TableEstimate:
    """What the database's statistics say about a table (None: unknown)."""

    rows: int | None = None
    size_bytes: int | None = None


@dataclass(frozen=True)
class StepPlan:
    number: int
    analysis: StepAnalysis
    type_label: str
    tables: tuple[str, ...]
    reversible: bool
    backfill_rows: int | None
    backfill_seconds: float | None

    @property
    def step(self) -> Step:
        return self.analysis.step

    @property
    def name(self) -> str:
        return self.analysis.step.name

    @property
    def up(self) -> tuple[AnalysedStatement, ...]:
        return self.analysis.up.statements if self.analysis.up is not None else ()

    @property
    def down(self) -> tuple[AnalysedStatement, ...]:
        return self.analysis.down.statements if self.analysis.down is not None else ()


@dataclass(frozen=True)
class MigrationPlan:
    spec: DatabaseMigrationSpec
    steps: tuple[StepPlan, ...]
    findings: tuple[Finding, ...]
    estimates: Mapping[str, TableEstimate]
    backfill_rate: float | None
    backfill_rate_source: str
    server_version: int
    server_version_source: str
    name: str | None
    namespace: str | None

    @property
    def point_of_no_return(self) -> StepPlan | None:
        return next((s for s in self.steps if s.step.point_of_no_return), None)

    @property
    def first_irreversible(self) -> StepPlan | None:
        return next((s for s in self.steps if not s.reversible), None)


# ---------------------------------------------------------------------------------------------
# building


def backfill_columns(step: Step) -> tuple[str, ...]:
    """The columns a backfill step assigns (from its `set` list, parsed)."""
    if step.backfill is None:
        return ()
    try:
        parsed = parse_statements(f"UPDATE {step.backfill.table} SET {step.backfill.set}")
    except SqlSyntaxError:
        return ()
    node = parsed[0].node if len(parsed) == 1 else None
    if not isinstance(node, ast.UpdateStmt):
        return ()
    return tuple(str(target.name) for target in node.targetList or () if target.name)


def _step_tables(analysis: StepAnalysis) -> tuple[str, ...]:
    step = analysis.step
    names: list[str] = []
    if step.backfill is not None:
        names.append(step.backfill.table)
    if analysis.up is not None:
        for statement in analysis.up.statements:
            names.extend(
                lock.relation for lock in statement.effect.locks if not lock.of_index_table
            )
    return tuple(dict.fromkeys(table_key(n) for n in names))


def tables_touched(
    spec: DatabaseMigrationSpec,
    resolved: Resolved | None = None,
    server_version: int = DEFAULT_SERVER_VERSION,
) -> list[str]:
    """Existing tables the migration's steps lock or backfill (tables it creates are left out),
    in order of first mention: what a plan wants row estimates for."""
    analysis = analyse_migration(spec, resolved, server_version)
    created: set[str] = set()
    out: dict[str, None] = {}
    for step in analysis.steps:
        for table in _step_tables(step):
            if table not in created:
                out[table] = None
        if step.up is not None:
            for statement in step.up.statements:
                node = statement.statement.node
                if isinstance(node, ast.CreateStmt):
                    created.add(table_key(relation_name(node.relation)))
    return list(out)


def _type_label(analysis: StepAnalysis) -> str:
    kind = analysis.step.kind
    if kind == "backfill":
        return "backfill"
    if kind == "awaitRollout":
        return "rollout gate"
    if kind == "job":
        return "tool job"
    categories = [
        _CATEGORY_LABEL[s.effect.category]
        for s in (analysis.up.statements if analysis.up is not None else ())
        if s.effect.category in _CATEGORY_LABEL
    ]
    return " + ".join(dict.fromkeys(categories)) or "SQL"


def build_plan(
    spec: DatabaseMigrationSpec,
    *,
    resolved: Resolved | None = None,
    estimates: Mapping[str, TableEstimate] | None = None,
    backfill_rate: float | None = None,
    backfill_rate_source: str = "given",
    server_version: int = DEFAULT_SERVER_VERSION,
    server_version_source: str = "assumed",
    name: str | None = None,
    namespace: str | None = None,
) -> MigrationPlan:
    """Analyse the spec and attach estimates: everything `render_plan` prints."""
    estimates = {table_key(k): v for k, v in (estimates or {}).items()}
    analysis = analyse_migration(spec, resolved, server_version)
    steps: list[StepPlan] = []
    for step_analysis in analysis.steps:
        rows: int | None = None
        seconds: float | None = None
        step = step_analysis.step
        if step.backfill is not None:
            estimate = estimates.get(table_key(step.backfill.table))
            rows = estimate.rows if estimate is not None else None
            if rows is not None and backfill_rate:
                seconds = rows / backfill_rate
        steps.append(
            StepPlan(
                number=step_analysis.index + 1,
                analysis=step_analysis,
                type_label=_type_label(step_analysis),
                tables=_step_tables(step_analysis),
                reversible=step_analysis.step.reversible,
                backfill_rows=rows,
                backfill_seconds=seconds,
            )
        )
    return MigrationPlan(
        spec=spec,
        steps=tuple(steps),
        findings=tuple(analysis.findings),
        estimates=estimates,
        backfill_rate=backfill_rate,
        backfill_rate_source=backfill_rate_source,
        server_version=server_version,
        server_version_source=server_version_source,
        name=name,
        namespace=namespace,
    )


# ---------------------------------------------------------------------------------------------
# formatting helpers


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # unreachable: the loop returns at TiB


def format_seconds(seconds: float) -> str:
    """`45 s`, `1 min 40 s`, `2 h 5 min` (rounded up to the second)."""
    total = max(int(-(-seconds // 1)), 1)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(sql: str, limit: int = 120) -> str:
    return f"`{compact_sql(sql, limit)}`"


def _table_size(plan: MigrationPlan, table: str) -> str:
    estimate = plan.estimates.get(table_key(table))
    if estimate is None or (estimate.rows is None and estimate.size_bytes is None):
        return f"{table}"
    parts = []
    if estimate.rows is not None:
        parts.append(f"{format_count(estimate.rows)} rows")
    if estimate.size_bytes is not None:
        parts.append(format_bytes(estimate.size_bytes))
    return f"{table} ({', '.join(parts)})"


def _statement_line(statement: AnalysedStatement) -> str:
    effect = statement.effect
    lock = effect.describe_lock()
    where = ", ".join(lock.where for lock in effect.locks)
    text = f"{lock} on {where}" if where else lock
    if statement.on_new_tables:
        text += " — table created in this migration"
    return text


def _blocking_statements(plan: MigrationPlan) -> list[tuple[StepPlan, AnalysedStatement]]:
    """Up statements that block reads or writes on an existing table for longer than a moment."""
    out = []
    for step in plan.steps:
        for statement in step.up:
            mode = statement.effect.strongest
            if mode is None or not mode.blocks_writes or statement.on_new_tables:
                continue
            if statement.effect.long_running:
                out.append((step, statement))
    return out


def _step_summary(step: StepPlan) -> str:
    s = step.step
    if s.backfill is not None:
        b = s.backfill
        where = f" where `{b.where}`" if b.where else ""
        return f"batched backfill of {b.table}: `{b.set}`{where}"
    if s.await_rollout is not None:
        image = f" runs `{s.await_rollout.image}` and" if s.await_rollout.image else ""
        return (
            f"wait until the target Deployment{image} is fully rolled out "
            f"(timeout {s.await_rollout.timeout})"
        )
    if s.job is not None:
        return f"run `{s.job.image}` as a Job"
    if not step.up:
        return "SQL not available to the planner" if step.analysis.up_source == "missing" else ""
    first = _code(step.up[0].statement.text, 90)
    more = f" (+{len(step.up) - 1} more)" if len(step.up) > 1 else ""
    return f"{first}{more}"


# ---------------------------------------------------------------------------------------------
# rendering


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
    lines.extend(_render_steps(plan))
    lines.extend(_render_lint(plan))
    lines.extend(_render_rollback(plan))
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
    existing = [t for t in tables if not _created_in_migration(plan, t)]
    created = [t for t in tables if _created_in_migration(plan, t)]
    if existing:
        lines.append("- Tables: " + "; ".join(_table_size(plan, t) for t in existing))
    if created:
        lines.append("- Tables created by this migration: " + ", ".join(created))
    if existing and not any(plan.estimates.get(t) for t in existing):
        lines.append("- Row estimates: none (run `dbmigrate plan --dsn …` to read them)")
    lines.append("- Estimated time: " + _estimated_time(plan))

    blocking = _blocking_statements(plan)
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
                f"{', '.join(_table_size(plan, t) for t in s.effect.relations)} for the whole "
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


def _created_in_migration(plan: MigrationPlan, table: str) -> bool:
    for step in plan.steps:
        for statement in step.up:
            node = statement.statement.node
            if isinstance(node, ast.CreateStmt) and table_key(
                relation_name(node.relation)
            ) == table_key(table):
                return True
    return False


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
    blocking = _blocking_statements(plan)
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
            f"{step.number}. `{step.name}` ({step.type_label}): {_step_summary(step)}{mark}"
        )
    lines.append("")
    return lines


def _collapse(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if not out or out[-1] != item:
            out.append(item)
    return out


def _render_steps(plan: MigrationPlan) -> list[str]:
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
            f"{_code(d.statement.text, 100)} — {d.effect.describe_lock()}" for d in step.down
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
            f"| {a.statement.index + 1} | {_cell(_code(a.statement.text))} | "
            f"{_cell(_statement_line(a))} | {effect.rewrite} | {_cell('; '.join(notes))} |"
        )
    return lines


def _render_backfill_step(plan: MigrationPlan, step: StepPlan) -> list[str]:
    b = step.step.backfill
    assert b is not None
    lines = [
        f"- Table: {_table_size(plan, b.table)}",
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
    lines.append(f"- Reversible: yes — {_backfill_undo(plan, step)}")
    return lines


def _backfill_undo(plan: MigrationPlan, step: StepPlan) -> str:
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


def _render_rollback(plan: MigrationPlan) -> list[str]:
    spec = plan.spec
    lines = ["## Rollback Strategy", ""]
    ponr = plan.point_of_no_return
    irreversible = plan.first_irreversible
    limit = min(
        (s.number for s in (ponr, irreversible) if s is not None), default=len(plan.steps) + 1
    )
    undo = spec.undo_rollout_enabled
    policy = spec.rollback.policy
    triggers = _triggers(spec)

    lines.append(f"Policy: {policy}" + (f"; triggers: {triggers}" if triggers else "") + ".")
    lines.append("")
    lines.append("### Safe Rollback Window")
    lines.append("")
    window = [s for s in plan.steps if s.number < limit]
    if window:
        names = ", ".join(f"`{s.name}`" for s in window)
        cost = _rollback_cost(window)
        numbers = (
            f"Step {window[0].number}"
            if len(window) == 1
            else f"Steps {window[0].number} to {window[-1].number}"
        )
        lines.append(
            f"- {numbers} ({names}): full rollback — "
            + ("undo the rollout, then " if undo else "")
            + f"the down SQL of the completed steps in reverse order; {cost}"
        )
    if ponr is not None:
        lines.append(
            f"- Step {ponr.number} (`{ponr.name}`): rolled back if it fails; once it succeeds, "
            "automatic database rollback is refused"
        )
    if irreversible is not None and (ponr is None or irreversible.number < ponr.number):
        lines.append(
            f"- Step {irreversible.number} (`{irreversible.name}`) has no down SQL: a rollback "
            "after it cannot restore the pre-migration schema (data loss possible)"
        )
    if ponr is not None and ponr.number < len(plan.steps):
        rest = ", ".join(f"`{s.name}`" for s in plan.steps[ponr.number :])
        lines.append(f"- After `{ponr.name}` ({rest}): manual recovery only")
    lines.append("")

    lines.append("### Rollback Steps")
    lines.append("")
    n = 0
    if undo and spec.target_deployment:
        n += 1
        lines.append(
            f"{n}. Undo the rollout of Deployment `{spec.target_deployment}` to the revision "
            "recorded when the migration started"
            + (
                " (if an Argo CD Application auto-syncs it, automated sync is paused first)"
                if spec.rollback.argo_cd.pause_auto_sync
                else ""
            )
        )
    for step in reversed(window):
        n += 1
        lines.append(f"{n}. `{step.name}`: {_undo_text(plan, step)}")
    if n == 0:
        lines.append("Nothing to undo automatically.")
    lines.append("")

    lines.append("### Point of No Return")
    lines.append("")
    if ponr is not None:
        lines.append(
            f"After step {ponr.number} `{ponr.name}` succeeds "
            f"({_step_summary(ponr)}): automatic rollback is refused from then on."
        )
        lines.append(f"Decision point: before step {ponr.number} `{ponr.name}`.")
        if ponr.reversible and ponr.down:
            undo_sql = "; ".join(_code(d.statement.text, 100) for d in ponr.down)
            lines.append(f"Manual undo of `{ponr.name}`: {undo_sql}.")
    elif irreversible is not None:
        lines.append(
            f"None declared, but step {irreversible.number} `{irreversible.name}` cannot be "
            "undone: it is the effective point of no return."
        )
    else:
        lines.append("None: every step can be rolled back.")
    lines.append("")
    return lines


def _triggers(spec: DatabaseMigrationSpec) -> str:
    if spec.analysis is None:
        return ""
    parts = []
    for metric in spec.analysis.metrics:
        checks = []
        if metric.max is not None:
            checks.append(f"> {metric.max:g}")
        if metric.min is not None:
            checks.append(f"< {metric.min:g}")
        if metric.max_ratio_to_baseline is not None:
            checks.append(f"> {metric.max_ratio_to_baseline:g} x baseline")
        parts.append(f"{metric.name} {' or '.join(checks)}")
    return (
        ", ".join(parts)
        + f" ({spec.analysis.failure_limit} consecutive failed measurements, every "
        f"{spec.analysis.interval})"
    )


def _rollback_cost(window: list[StepPlan]) -> str:
    slow = [s.name for s in window for d in s.down if d.effect.long_running and not d.on_new_tables]
    if slow:
        return (
            "the down SQL of " + ", ".join(dict.fromkeys(slow)) + " reads or rewrites whole tables"
        )
    return "instant (every down statement is metadata-only)"


def _undo_text(plan: MigrationPlan, step: StepPlan) -> str:
    s = step.step
    if s.sql is not None:
        if not step.reversible:
            return "no down SQL: cannot be undone"
        if not step.down:
            return "down SQL from a ConfigMap (not provided)"
        return "; ".join(
            f"{_code(d.statement.text, 100)} ({d.effect.describe_lock()})" for d in step.down
        )
    if s.backfill is not None:
        return _backfill_undo(plan, step)
    if s.await_rollout is not None:
        return (
            "nothing to run (the rollout is undone above)"
            if plan.spec.undo_rollout_enabled
            else "nothing to run (rollback.undoRollout is off: the new version keeps running)"
        )
    return "cannot be undone by dbmigrate"


# ---------------------------------------------------------------------------------------------
# the short form for status.plan


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
