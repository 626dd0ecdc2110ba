"""The statements inside a DO block's or a function's PL/pgSQL body (`core.plpgsql`), judged
like top-level ones, and what only a body can get wrong: a batched loop that never commits.
"""

from __future__ import annotations

from dataclasses import replace

from pglast import ast

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.findings import Finding
from dbmigrate.core.lint.judging import effect_in_context, note_locks, run_rules
from dbmigrate.core.lint.rules import Severity
from dbmigrate.core.lint.rules.messages import said
from dbmigrate.core.lint.suppress import Suppression
from dbmigrate.core.locks import statement_effect
from dbmigrate.core.plpgsql import Body, PlpgsqlError, calls_in, constant_sql, embedded_sql
from dbmigrate.core.statements import SqlSyntaxError, Statement, parse_statements


def analyse_body(
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

    def note(line: int, message: str) -> Finding:
        return _finding("blocking-lock", "warning", message, s, line, step, context, suppressions)

    try:
        embedded = embedded_sql(body, s.text)
    except PlpgsqlError as exc:
        return [
            note(s.line, f"{where}: PL/pgSQL rejects the body ({exc}); its SQL is not checked.")
        ]
    out: list[Finding] = []
    for e in embedded:
        line = first_line + e.line - 1
        text = e.text
        if e.dynamic:
            constant = constant_sql(e.text)
            if constant is None:
                out.append(
                    note(
                        line,
                        f"{where}: `EXECUTE {e.text}` runs SQL built at run time, which no "
                        "linter can read: its locks are not known. Write the statement out, or "
                        "check what it can run by hand.",
                    )
                )
                continue
            text = constant  # EXECUTE of a string constant: the SQL is right there
        try:
            inner_statements = parse_statements(text)
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
            effect = effect_in_context(
                statement_effect(inner.node, context.server_version), inner, context
            )
            loop = " It sits in a loop: it runs once per iteration." if e.in_loop else ""
            for f in run_rules(inner, effect, context, step, suppressions):
                out.append(replace(f, message=f"{where}: {f.message}{loop}{when}"))
            if not body.function:  # a function's body does not run now: nothing held, made
                note_locks(effect, context)
                context.record(inner.node, line)
    if body.function and body.name:
        # Defining it runs nothing: what its body would do is a warning here, and counts in
        # full where the migration calls it (`called_functions`).
        context.function_findings[body.name] = (s.line, tuple(out))
        out = [replace(f, severity="warning") if f.severity == "error" else f for f in out]
    return out


def called_functions(
    s: Statement, context: LintContext, suppressions: list[Suppression]
) -> list[Finding]:
    """A statement that calls a function defined earlier in the migration runs its body: the
    body's findings, at their full severity, at the call."""
    out: list[Finding] = []
    for name in calls_in(s.node):
        defined = context.function_findings.get(name)
        if defined is None:
            continue
        line, findings = defined
        for f in findings:
            matched = next((x for x in suppressions if f.rule in x.rules), None)
            out.append(
                replace(
                    f,
                    message=f"{said(s)} calls {name} (defined at line {line}): {f.message}",
                    statement=s.index,
                    line=s.line,
                    suppressed=matched is not None or f.suppressed,
                    reason=matched.reason if matched is not None else f.reason,
                )
            )
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
    return _finding(
        "prefer-backfill-step",
        "error",
        f"{where}: {said(inner)} runs in a loop that never COMMITs: every batch is part "
        "of the DO block's one transaction, so the row locks of every batch are held until it "
        "ends, in one WAL burst, with no progress or resume — the batching buys nothing. Safe "
        "alternative: a backfill step (resumable batches, each committed), or COMMIT inside "
        "the loop (PostgreSQL 11+, with the DO block outside a transaction: sql.transaction: "
        "Never).",
        s,
        inner.line,
        step,
        context,
        suppressions,
    )


def _finding(
    rule: str,
    severity: Severity,
    message: str,
    s: Statement,
    line: int,
    step: str | None,
    context: LintContext,
    suppressions: list[Suppression],
) -> Finding:
    """A finding the body analysis makes itself, suppressed as the statement's comments say."""
    matched = next((x for x in suppressions if rule in x.rules), None)
    return Finding(
        rule=rule,
        severity=severity,
        message=message,
        step=step,
        statement=s.index,
        line=line,
        direction=context.direction,
        suppressed=matched is not None,
        reason=matched.reason if matched is not None else None,
    )
