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

from dataclasses import replace

from pglast import ast
from pglast.enums import AlterTableType

from dbmigrate.api.models import DatabaseMigrationSpec, LintFinding, Step
from dbmigrate.core.lint.context import Direction, LintContext
from dbmigrate.core.lint.findings import (
    AnalysedStatement,
    Finding,
    MigrationAnalysis,
    Resolved,
    SqlAnalysis,
    SqlSource,
    StepAnalysis,
)
from dbmigrate.core.lint.rules import RULES, Severity
from dbmigrate.core.lint.rules.messages import said
from dbmigrate.core.lint.suppress import Suppression, find_suppressions
from dbmigrate.core.locks import (
    DEFAULT_SERVER_VERSION,
    RelationLock,
    StatementEffect,
    statement_effect,
)
from dbmigrate.core.plpgsql import Body, PlpgsqlError, embedded_sql, plpgsql_body
from dbmigrate.core.sqlast import relation_name, transaction_block_change
from dbmigrate.core.statements import (
    SqlSyntaxError,
    Statement,
    group_for_execution,
    group_is_transactional,
    parse_statements,
)

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
        effect = _in_context(statement_effect(s.node, context.server_version), s, context)
        found = _run_rules(s, effect, context, step, suppressions.get(s.index, []))
        if (body := plpgsql_body(s.node)) is not None:
            found += _analyse_body(s, body, context, step, suppressions.get(s.index, []))
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
        _note_locks(effect, context)
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


def _analyse_body(
    s: Statement,
    body: Body,
    context: LintContext,
    step: str | None,
    suppressions: list[Suppression],
) -> list[Finding]:
    """The statements of a DO block's or a function's PL/pgSQL body, judged like top-level
    ones in the statement's transaction (a DO block runs in it; a function's body when it is
    called)."""
    start = s.text.find(body.source)
    first_line = s.line + (s.text[:start].count("\n") if start >= 0 else 0)
    where = f"In the {body.kind} at line {s.line}"
    when = " (This runs each time the function is called.)" if body.function else ""

    def note(line: int, message: str, severity: Severity = "warning") -> Finding:
        matched = next((x for x in suppressions if "blocking-lock" in x.rules), None)
        return Finding(
            rule="blocking-lock",
            severity=severity,
            message=message,
            step=step,
            statement=s.index,
            line=line,
            direction=context.direction,
            suppressed=matched is not None,
            reason=matched.reason if matched is not None else None,
        )

    try:
        embedded = embedded_sql(body, s.text)
    except PlpgsqlError as exc:
        return [
            note(s.line, f"{where}: PL/pgSQL rejects the body ({exc}); its SQL is not checked.")
        ]
    out: list[Finding] = []
    for e in embedded:
        line = first_line + e.line - 1
        if e.dynamic:
            out.append(
                note(
                    line,
                    f"{where}: `EXECUTE {e.text}` runs SQL built at run time, which no linter "
                    "can read: its locks are not known. Write the statement out, or check what "
                    "it can run by hand.",
                )
            )
            continue
        try:
            inner_statements = parse_statements(e.text)
        except SqlSyntaxError:
            continue  # PL/pgSQL accepted it: a construct of its own (e.g. a cursor's query)
        for inner in inner_statements:
            inner = Statement(index=s.index, text=inner.text, node=inner.node, line=line)
            if (
                e.in_loop
                and not e.loop_commits
                and not body.function
                and isinstance(inner.node, ast.UpdateStmt | ast.DeleteStmt)
            ):
                out.append(_uncommitted_batches(s, inner, where, step, context, suppressions))
            effect = _in_context(
                statement_effect(inner.node, context.server_version), inner, context
            )
            loop = " It sits in a loop: it runs once per iteration." if e.in_loop else ""
            for f in _run_rules(inner, effect, context, step, suppressions):
                out.append(replace(f, message=f"{where}: {f.message}{loop}{when}"))
            if not body.function:  # a function's body does not run now: nothing held, made
                _note_locks(effect, context)
                context.record(inner.node, line)
    return out


def _uncommitted_batches(
    s: Statement,
    inner: Statement,
    where: str,
    step: str | None,
    context: LintContext,
    suppressions: list[Suppression],
) -> Finding:
    """A DO block that updates or deletes in a loop without COMMIT: every batch is part of one
    transaction, so the batching buys nothing (the seed's own DO loop does this)."""
    rule = RULES["prefer-backfill-step"]
    matched = next((x for x in suppressions if rule.id in x.rules), None)
    severity: Severity = "warning"
    return Finding(
        rule=rule.id,
        severity=severity,
        message=f"{where}: {said(inner)} runs in a loop that never COMMITs: every batch is part "
        "of the DO block's one transaction, so the row locks of every batch are held until it "
        "ends, in one WAL burst, with no progress or resume — the batching buys nothing. Safe "
        "alternative: a backfill step (resumable batches, each committed), or COMMIT inside "
        "the loop (PostgreSQL 11+, with the DO block outside a transaction: sql.transaction: "
        "Never).",
        step=step,
        statement=s.index,
        line=inner.line,
        direction=context.direction,
        suppressed=matched is not None,
        reason=matched.reason if matched is not None else None,
    )


def _note_locks(effect: StatementEffect, context: LintContext) -> None:
    """Remember the locks the current transaction now holds (until it commits)."""
    if context.transaction is None:
        return
    for lock in effect.locks:
        if lock.of_index_table:
            continue
        held = context.transaction_locks.get(lock.relation)
        if held is None or lock.mode > held:
            context.transaction_locks[lock.relation] = lock.mode


def _in_context(effect: StatementEffect, s: Statement, context: LintContext) -> StatementEffect:
    """The statement's effect given what the migration did before it: DROP INDEX of an index
    created earlier locks that index's (known) table; SET NOT NULL skips its scan when a
    validated CHECK (col IS NOT NULL) exists (PostgreSQL 12+)."""
    node = s.node
    if any(lock.of_index_table for lock in effect.locks):
        locks = tuple(
            RelationLock(table, lock.mode)
            if lock.of_index_table and (table := context.index_table(lock.relation)) is not None
            else lock
            for lock in effect.locks
        )
        return replace(effect, locks=locks)
    if not isinstance(node, ast.AlterTableStmt) or context.server_version < 12:
        return effect
    cmds = node.cmds or ()
    set_not_null = [c for c in cmds if c.subtype == AlterTableType.AT_SetNotNull]
    if not set_not_null or len(set_not_null) != len(cmds):
        return effect
    table = relation_name(node.relation)
    if all(context.not_null_is_proven(table, str(c.name)) for c in set_not_null):
        return replace(
            effect,
            scan=False,
            notes=("a validated CHECK (… IS NOT NULL) proves it: no scan",),
        )
    return effect


def _run_rules(
    s: Statement,
    effect: StatementEffect,
    context: LintContext,
    step: str | None,
    suppressions: list[Suppression],
) -> list[Finding]:
    out: list[Finding] = []
    rollback = context.direction == "down"
    covered = False
    for rule in RULES.values():
        if rule.check is None or (rollback and rule.rollback == "skip"):
            continue
        if rule.catch_all and covered:
            continue  # a specific rule already judged this statement's locks
        for hit in rule.check(s, effect, context):
            covered = covered or rule.covers_locks
            severity: Severity = hit.severity or rule.severity
            message = hit.message
            if rollback and rule.rollback == "warn":
                if severity == "error":
                    severity = "warning"
                message += (
                    " (In rollback SQL: it runs while undoing a failed migration, often under "
                    "pressure, so it should not block either; reported as a warning.)"
                )
            matched = next((x for x in suppressions if rule.id in x.rules), None)
            out.append(
                Finding(
                    rule=rule.id,
                    severity=severity,
                    message=message,
                    step=step,
                    statement=s.index,
                    line=s.line,
                    direction=context.direction,
                    suppressed=matched is not None,
                    reason=matched.reason if matched is not None else None,
                )
            )
    return out


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
) -> MigrationAnalysis:
    """Every step in order, each judged with what the earlier steps created."""
    resolved = resolved or {}
    context = LintContext(server_version=server_version)
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
    return MigrationAnalysis(tuple(steps), server_version)


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
) -> list[Finding]:
    return analyse_migration(spec, resolved, server_version).findings


def lint_migration(
    spec: DatabaseMigrationSpec,
    resolved: Resolved | None = None,
    server_version: int = DEFAULT_SERVER_VERSION,
) -> list[LintFinding]:
    """The status.lint entries for a migration. `resolved` maps step name to (up, down) SQL
    for steps whose SQL comes from ConfigMaps; inline SQL is read from the spec."""
    return [f.to_status() for f in check_migration(spec, resolved, server_version)]


def count_blocking(findings: list[Finding] | list[LintFinding]) -> int:
    """Unsuppressed error findings: what `safety.lint: Enforce` and `dbmigrate lint` stop on."""
    return sum(1 for f in findings if f.severity == "error" and not f.suppressed)
