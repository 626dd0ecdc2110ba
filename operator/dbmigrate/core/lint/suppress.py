"""Per-statement suppression comments: `-- dbmigrate:ignore <rule-id>[,<rule-id>…] <reason>`.

A suppression comment belongs to the statement that follows it on the very next line(s) — a
block of comment lines with no blank line between it and the statement — or to the statement
it sits in or ends the line of (`ALTER TABLE … ; -- dbmigrate:ignore …`). `/* … */` comments
work the same way. Comments are found with PostgreSQL's own scanner (pglast), so text inside
string literals and dollar-quoted bodies is never mistaken for a comment.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection
from dataclasses import dataclass

from pglast import parser
from pglast.parser import ParseError

from dbmigrate.core.statements import Statement

MARKER = "dbmigrate:ignore"


@dataclass(frozen=True)
class Suppression:
    rules: frozenset[str]
    reason: str
    line: int


@dataclass(frozen=True)
class SuppressionProblem:
    """A suppression comment that cannot work as written."""

    line: int
    statement: int | None
    message: str


@dataclass(frozen=True)
class _Comment:
    start: int
    end: int  # inclusive, character offset
    first_line: int
    last_line: int
    body: str


@dataclass(frozen=True)
class _Span:
    index: int
    start: int
    end: int  # inclusive: the terminating semicolon if there is one
    first_line: int
    last_line: int


class _Lines:
    def __init__(self, text: str) -> None:
        self.starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    def of(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)


def find_suppressions(
    sql: str, statements: list[Statement], known_rules: Collection[str]
) -> tuple[dict[int, list[Suppression]], list[SuppressionProblem]]:
    """Suppressions per statement index, and the suppression comments that are wrong."""
    try:
        tokens = parser.scan(sql)
    except ParseError:
        return {}, []
    lines = _Lines(sql)
    comments: list[_Comment] = []
    semicolons: list[int] = []
    for token in tokens:
        if token.name in ("SQL_COMMENT", "C_COMMENT"):
            raw = sql[token.start : token.end + 1]
            body = raw[2:-2] if token.name == "C_COMMENT" else raw[2:]
            comments.append(
                _Comment(token.start, token.end, lines.of(token.start), lines.of(token.end), body)
            )
        elif token.name == "ASCII_59":
            semicolons.append(token.start)
    if not any(MARKER in c.body for c in comments):
        return {}, []
    spans = _statement_spans(sql, statements, semicolons, comments, lines)
    owner = _attach(comments, spans)

    found: dict[int, list[Suppression]] = {}
    problems: list[SuppressionProblem] = []
    for comment, index in zip(comments, owner, strict=True):
        text = comment.body.strip()
        if not text.startswith(MARKER):
            continue
        rest = text[len(MARKER) :].strip()
        ids_part, _, reason = rest.partition(" ")
        rules = frozenset(r.strip() for r in ids_part.split(",") if r.strip())
        reason = " ".join(reason.split())
        line = comment.first_line
        if index is None:
            problems.append(
                SuppressionProblem(
                    line,
                    None,
                    f"`{text}` is not attached to a statement: put it on the line just before "
                    "the statement (no blank line between) or at the end of its line",
                )
            )
            continue
        if not rules:
            problems.append(
                SuppressionProblem(line, index, f"`{text}` names no rule: {MARKER} RULE REASON")
            )
            continue
        unknown = sorted(rules - set(known_rules))
        if unknown:
            problems.append(
                SuppressionProblem(
                    line, index, f"`{text}` names unknown rule(s) {', '.join(unknown)}"
                )
            )
        if not reason:
            problems.append(
                SuppressionProblem(
                    line,
                    index,
                    f"`{text}` gives no reason: say why the finding does not apply "
                    f"({MARKER} {ids_part} REASON)",
                )
            )
        found.setdefault(index, []).append(Suppression(rules, reason, line))
    return found, problems


def _statement_spans(
    sql: str,
    statements: list[Statement],
    semicolons: list[int],
    comments: list[_Comment],
    lines: _Lines,
) -> list[_Span]:
    def in_comment(offset: int) -> bool:
        return any(c.start <= offset <= c.end for c in comments)

    spans: list[_Span] = []
    cursor = 0
    for statement in statements:
        # The statement's text is an exact slice of the SQL that starts on its line (outside
        # any comment: a commented-out copy of the statement may precede it).
        line_start = lines.starts[min(statement.line, len(lines.starts)) - 1]
        start = sql.find(statement.text, max(cursor, line_start))
        while start >= 0 and in_comment(start):
            start = sql.find(statement.text, start + 1)
        if start < 0:
            start = max(cursor, line_start)
        end = start + max(len(statement.text) - 1, 0)
        after = bisect.bisect_left(semicolons, end + 1)
        if after < len(semicolons) and sql[end + 1 : semicolons[after]].strip() == "":
            end = semicolons[after]
        spans.append(_Span(statement.index, start, end, lines.of(start), lines.of(end)))
        cursor = end + 1
    return spans


def _attach(comments: list[_Comment], spans: list[_Span]) -> list[int | None]:
    """The statement index each comment belongs to (None: none)."""
    owner: list[int | None] = [None] * len(comments)
    # Inside a statement, or trailing on the line where a statement ends.
    for i, comment in enumerate(comments):
        for span in spans:
            if span.start <= comment.start <= span.end or (
                comment.start > span.end and comment.first_line == span.last_line
            ):
                owner[i] = span.index
                break
    # Leading: a block of comment lines right above a statement, no blank line in between.
    starts = [c.start for c in comments]
    for span in spans:
        expected = span.first_line
        i = bisect.bisect_left(starts, span.start) - 1
        while i >= 0:
            comment = comments[i]
            if owner[i] is not None or comment.last_line < expected - 1:
                break
            owner[i] = span.index
            expected = comment.first_line
            i -= 1
    return owner
