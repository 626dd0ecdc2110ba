"""The migration plan as data: each step's type, the tables it touches, whether it can be
undone, and backfill estimates, on top of the lint engine's context-aware analysis of every
statement (`core.lint`, which adjusts `core.locks`' effects by what earlier steps did).

Pure: the caller reads the per-table estimates (`db.catalog`) and passes them in. The plan is
rendered by `render` (Markdown) and `summary` (status.plan).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pglast import ast

from dbmigrate.api.models import DatabaseMigrationSpec, Step
from dbmigrate.core.checklist import Approval
from dbmigrate.core.lint.context import TableEstimate
from dbmigrate.core.lint.engine import (
    analyse_migration,
)
from dbmigrate.core.lint.findings import (
    AnalysedStatement,
    Finding,
    Resolved,
    StepAnalysis,
)
from dbmigrate.core.locks import DEFAULT_SERVER_VERSION
from dbmigrate.core.sqlast import relation_name, table_key
from dbmigrate.core.statements import SqlSyntaxError, parse_statements

_CATEGORY_LABEL = {
    "DDL": "DDL",
    "index": "index",
    "constraint": "constraint",
    "DML": "DML",
    "maintenance": "maintenance",
}


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
    approval: Approval | None = None  # the manifest's approval annotation, if it has one

    @property
    def point_of_no_return(self) -> StepPlan | None:
        return next((s for s in self.steps if s.step.point_of_no_return), None)

    @property
    def first_irreversible(self) -> StepPlan | None:
        return next((s for s in self.steps if not s.reversible), None)


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
            created.update(_created_tables(step.up.statements))
    return list(out)


def watched_relations(
    spec: DatabaseMigrationSpec, resolved: Resolved
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the existing tables the steps touch, the indexes they name by themselves): a
    `DROP INDEX` names no table, and the snapshot finds the index's table in the catalog."""
    tables = tuple(tables_touched(spec, resolved))
    indexes: dict[str, None] = {}
    for step in analyse_migration(spec, resolved).steps:
        for statement in step.up.statements if step.up is not None else ():
            for lock in statement.effect.locks:
                if lock.of_index_table:
                    indexes[lock.relation] = None
    return tables, tuple(indexes)


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
    approval: Approval | None = None,
) -> MigrationPlan:
    """Analyse the spec and attach estimates: everything `render_plan` prints."""
    estimates = {table_key(k): v for k, v in (estimates or {}).items()}
    analysis = analyse_migration(spec, resolved, server_version, estimates)
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
        approval=approval,
    )


def blocking_statements(plan: MigrationPlan) -> list[tuple[StepPlan, AnalysedStatement]]:
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


def created_in_migration(plan: MigrationPlan, table: str) -> bool:
    """Whether a CREATE TABLE in the migration's up SQL creates `table`."""
    return any(table_key(table) in _created_tables(step.up) for step in plan.steps)


def _created_tables(statements: Iterable[AnalysedStatement]) -> set[str]:
    """The tables the statements CREATE TABLE (by `table_key`)."""
    return {
        table_key(relation_name(a.statement.node.relation))
        for a in statements
        if isinstance(a.statement.node, ast.CreateStmt)
    }
