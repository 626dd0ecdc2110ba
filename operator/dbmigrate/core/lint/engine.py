"""Running the lint rules over SQL and over a whole DatabaseMigration.

`analyse_sql` parses one piece of SQL, works out the transaction each statement runs in (as
the executor will group them), runs every rule on every statement with the migration's
context, applies suppression comments and the rollback policy, and records what each
statement created into the context. `analyse_migration` does that for each step in order
(up SQL, then the step's down SQL on a copy of the context) and also checks the parts of
backfill and verify that are SQL. `lint_sql` / `lint_migration` return the findings as the
status entries (`api.models.LintFinding`); the `check_*` forms keep line numbers and the
direction for the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pglast import ast

from dbmigrate.core.lint.bodies import analyse_body, called_functions
from dbmigrate.core.lint.context import Direction, LintContext, TableEstimate, sizes_by_key
from dbmigrate.core.lint.findings import (
    AnalysedStatement,
    Finding,
    MigrationAnalysis,
    Resolved,
    SqlAnalysis,
    SqlSource,
    StepAnalysis,
)
from dbmigrate.core.lint.judging import effect_in_context, note_locks, run_rules
from dbmigrate.core.lint.rules import RULES
from dbmigrate.core.lint.suppress import find_suppressions
from dbmigrate.core.locks import (
    DEFAULT_SERVER_VERSION,
    statement_effect,
)
from dbmigrate.core.plpgsql import plpgsql_body
from dbmigrate.core.sqlast import transaction_block_change
from dbmigrate.core.statements import (
    SqlSyntaxError,
    group_for_execution,
    group_is_transactional,
    parse_statements,
)

if TYPE_CHECKING:  # the API models (pydantic) only for typing: `dbmigrate lint` of SQL files
    # starts without them (its start-up time is a goal: BENCHMARKS.md)
    from dbmigrate.api.models import DatabaseMigrationSpec, LintFinding, Step

# ---------------------------------------------------------------------------------------------
# one piece of SQL


def analyse_sql(sql: str, context: LintContext, *, step: str | None = None) -> SqlAnalysis:
    """Lint `sql` in `context` (which is updated with what the SQL creates)."""
    step = step if step is not None else context.step
    direction = context.direction
    try:
        statements = parse_statements(sql)
    except SqlSyntaxError as exc:
        finding = Finding(
            rule="syntax-error",
            severity="error",
            message=f"{exc.args[0] if exc.args else exc}"
            + (f" (at character {exc.position + 1})" if exc.position is not None else ""),
            step=step,
            line=exc.line,
            direction=direction,
            position=exc.position,
        )
        return SqlAnalysis((), (finding,), exc)

    suppressions, problems = find_suppressions(sql, statements, RULES.keys())
    findings: list[Finding] = [
        Finding(
            rule="invalid-suppression",
            severity="warning",
            message=p.message,
            step=step,
            statement=p.statement,
            line=p.line,
            direction=direction,
        )
        for p in problems
    ]

    groups = group_for_execution(statements, context.transaction_mode)
    group_of: dict[int, tuple[int, bool]] = {}
    for number, group in enumerate(groups):
        transactional = group_is_transactional(group, context.transaction_mode)
        for s in group:
            group_of[s.index] = (number, transactional)

    context.sql_serial += 1
    serial = context.sql_serial
    context.in_transaction_block = False
    context.transaction_block_line = None
    block_number = 0
    analysed: list[AnalysedStatement] = []
    for s in statements:
        number, transactional = group_of[s.index]
        change = transaction_block_change(s.node)
        if context.in_transaction_block:
            context.transaction = (serial, "block", block_number)
        elif transactional and change is None:
            context.transaction = (serial, "group", number)
        else:
            context.transaction = None
        context.rerun_on_retry = number < len(groups) - 1
        if context.transaction is None or context.transaction != context.transaction_locks_key:
            context.transaction_locks = {}
            context.transaction_locks_key = context.transaction
        effect = effect_in_context(statement_effect(s.node, context.server_version), s, context)
        found = run_rules(s, effect, context, step, suppressions.get(s.index, []))
        if (body := plpgsql_body(s.node)) is not None:
            found += analyse_body(s, body, context, step, suppressions.get(s.index, []))
        elif context.function_findings:
            found += called_functions(s, context, suppressions.get(s.index, []))
        findings.extend(found)
        relations = [lock.relation for lock in effect.locks if not lock.of_index_table]
        analysed.append(
            AnalysedStatement(
                s,
                effect,
                tuple(found),
                bool(relations) and all(context.is_new_table(r) for r in relations),
            )
        )
        note_locks(effect, context)
        context.record(s.node, s.line)
        if change == "open":
            context.in_transaction_block = True
            context.transaction_block_line = s.line
            block_number += 1
        elif change == "close":
            context.in_transaction_block = False
            context.transaction_block_line = None
    context.transaction = None
    context.transaction_locks = {}
    return SqlAnalysis(tuple(analysed), tuple(findings))


def check_sql(
    sql: str, *, step: str | None = None, context: LintContext | None = None
) -> list[Finding]:
    """Findings for one piece of SQL (with lines and direction)."""
    ctx = context if context is not None else LintContext()
    return list(analyse_sql(sql, ctx, step=step).findings)


def lint_sql(
    sql: str, *, step: str | None = None, context: LintContext | None = None
) -> list[LintFinding]:
    """Findings for one piece of SQL as status entries. `context` carries what earlier SQL of
    the migration created and is updated with what this SQL creates; without one, the SQL is
    judged on its own (server version `DEFAULT_SERVER_VERSION`, up direction, transaction
    Auto)."""
    return [f.to_status() for f in check_sql(sql, step=step, context=context)]


# ---------------------------------------------------------------------------------------------
# a whole migration


def analyse_migration(
    spec: DatabaseMigrationSpec,
    resolved: Resolved | None = None,
    server_version: int = DEFAULT_SERVER_VERSION,
    table_sizes: Mapping[str, TableEstimate] | None = None,
) -> MigrationAnalysis:
    """Every step in order, each judged with what the earlier steps created (and, given the
    database's table sizes, with how big the tables are)."""
    resolved = resolved or {}
    context = LintContext(server_version=server_version, table_sizes=sizes_by_key(table_sizes))
    steps: list[StepAnalysis] = []
    contract_phase = False
    for index, step in enumerate(spec.steps):
        context.step = step.name
        context.contract_phase = contract_phase
        findings: list[Finding] = []
        up = down = None
        up_source: SqlSource = "none"
        down_source: SqlSource = "none"
        if step.sql is not None:
            context.transaction_mode = step.sql.transaction
            given_up, given_down = resolved.get(step.name, (None, None))
            up_sql, up_source = _sql_of(step.sql.up, step.sql.up_from, given_up)
            down_sql, down_source = _sql_of(step.sql.down, step.sql.down_from, given_down)
            if up_sql is not None:
                up = analyse_sql(up_sql, context, step=step.name)
                findings.extend(up.findings)
            elif up_source == "missing":
                findings.append(_not_available(step, "up"))
            if down_sql is not None:
                down = analyse_sql(down_sql, context.for_rollback(), step=step.name)
                findings.extend(down.findings)
            elif down_source == "missing":
                findings.append(_not_available(step, "down"))
        if step.backfill is not None:
            findings.extend(_check_backfill(step))
        if step.verify is not None:
            findings.extend(_check_verify(step))
        steps.append(
            StepAnalysis(
                index,
                step,
                contract_phase,
                up,
                down,
                up_source,
                down_source,
                tuple(findings),
            )
        )
        if step.await_rollout is not None:
            contract_phase = True
    cleanup: list[Finding] = []
    for extra in spec.post_deploy.cleanup or [] if spec.post_deploy else []:
        # After the watch, the application runs the new version: a contract step.
        context.step = extra.name
        context.contract_phase = True
        context.transaction_mode = "Auto"
        cleanup.extend(analyse_sql(extra.sql, context, step=extra.name).findings)
    return MigrationAnalysis(tuple(steps), server_version, tuple(cleanup))


def _sql_of(inline: str | None, source: object, given: str | None) -> tuple[str | None, SqlSource]:
    if inline is not None:
        return inline, "inline"
    if source is None:
        return None, "none"
    if given is not None:
        return given, "configmap"
    return None, "missing"


def _not_available(step: Step, direction: Direction) -> Finding:
    assert step.sql is not None
    source = step.sql.up_from if direction == "up" else step.sql.down_from
    ref = source.config_map_key_ref if source is not None else None
    where = f"ConfigMap {ref.name}, key {ref.key}" if ref is not None else "a ConfigMap"
    return Finding(
        rule="sql-not-available",
        severity="warning",
        message=f"the {direction} SQL comes from {where}, which was not provided: not linted",
        step=step.name,
        direction=direction,
    )


def _check_backfill(step: Step) -> list[Finding]:
    """The backfill's `set` and `where` must parse as one UPDATE of its table."""
    assert step.backfill is not None
    b = step.backfill
    # Assembled only to have PostgreSQL's grammar check the fragments; never executed.
    probe = f"UPDATE {b.table} SET {b.set}" + (f" WHERE {b.where}" if b.where else "")
    problem: str | None = None
    try:
        parsed = parse_statements(probe)
    except SqlSyntaxError as exc:
        problem = f"backfill.set/where do not parse: {exc.args[0] if exc.args else exc}"
    else:
        if len(parsed) != 1 or not isinstance(parsed[0].node, ast.UpdateStmt):
            problem = (
                "backfill.set must be an assignment list and backfill.where a predicate "
                f"(together they parse as {len(parsed)} statements)"
            )
    if problem is None:
        return []
    return [Finding(rule="syntax-error", severity="error", message=problem, step=step.name)]


def _check_verify(step: Step) -> list[Finding]:
    assert step.verify is not None
    try:
        parsed = parse_statements(step.verify)
    except SqlSyntaxError as exc:
        message = f"verify does not parse: {exc.args[0] if exc.args else exc}"
    else:
        if len(parsed) == 1 and isinstance(parsed[0].node, ast.SelectStmt):
            return []
        message = f"verify must be one query returning a boolean, not {len(parsed)} statements"
        if len(parsed) == 1:
            message = "verify must be a query (SELECT …) returning one boolean"
    return [Finding(rule="syntax-error", severity="error", message=message, step=step.name)]


def check_migration(
    spec: DatabaseMigrationSpec,
    resolved: Resolved | None = None,
    server_version: int = DEFAULT_SERVER_VERSION,
    table_sizes: Mapping[str, TableEstimate] | None = None,
) -> list[Finding]:
    return analyse_migration(spec, resolved, server_version, table_sizes).findings


def lint_migration(
    spec: DatabaseMigrationSpec,
    resolved: Resolved | None = None,
    server_version: int = DEFAULT_SERVER_VERSION,
    table_sizes: Mapping[str, TableEstimate] | None = None,
) -> list[LintFinding]:
    """The status.lint entries for a migration. `resolved` maps step name to (up, down) SQL
    for steps whose SQL comes from ConfigMaps; inline SQL is read from the spec."""
    return [f.to_status() for f in check_migration(spec, resolved, server_version, table_sizes)]


def count_blocking(findings: list[Finding] | list[LintFinding]) -> int:
    """Unsuppressed error findings: what `safety.lint: Enforce` and `dbmigrate lint` stop on."""
    return sum(1 for f in findings if f.severity == "error" and not f.suppressed)
