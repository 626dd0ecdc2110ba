"""SQL text as the real PostgreSQL parser (libpg_query, via pglast) sees it.

Splits a step's SQL into statements, says which ones cannot run inside a transaction block,
groups statements into the transactions the executor will run, and computes the checksum that
the history table records (sha256 of the token stream, so whitespace and comments do not count).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import pglast
from pglast import ast, parser
from pglast.parser import ParseError

from dbmigrate.core.sqlast import has_option

TransactionMode = Literal["Auto", "Always", "Never"]


@dataclass(frozen=True)
class Statement:
    """One statement of a step: its source text and parsed node."""

    index: int
    text: str
    node: Any  # a pglast.ast.Node
    line: int

    @property
    def needs_own_transaction(self) -> bool:
        return statement_cannot_run_in_transaction(self.node)

    @property
    def is_transaction_control(self) -> bool:
        return isinstance(self.node, ast.TransactionStmt)


class SqlSyntaxError(ValueError):
    """SQL that PostgreSQL's grammar rejects; `position` is a 0-based character offset."""

    def __init__(self, message: str, position: int | None, line: int | None) -> None:
        where = f" (line {line})" if line is not None else ""
        super().__init__(f"{message}{where}")
        self.position = position
        self.line = line


def parse_statements(sql: str) -> list[Statement]:
    """Parse SQL into statements; raises SqlSyntaxError with the parser's position."""
    try:
        raw = pglast.parse_sql(sql)
    except ParseError as exc:
        # pglast reports character offsets (it converts libpg_query's byte offsets).
        position = exc.args[1] if len(exc.args) > 1 else None
        line = sql[:position].count("\n") + 1 if position is not None else None
        raise SqlSyntaxError(str(exc.args[0]), position, line) from exc
    out: list[Statement] = []
    for i, stmt in enumerate(raw):
        start = stmt.stmt_location or 0
        length = stmt.stmt_len or (len(sql) - start)
        chunk = sql[start : start + length]
        text = chunk.strip()
        lead = len(chunk) - len(chunk.lstrip())
        line = sql[: start + lead].count("\n") + 1
        out.append(Statement(index=i, text=text, node=stmt.stmt, line=line))
    return out


def statement_cannot_run_in_transaction(node: Any) -> bool:
    """True for statements PostgreSQL refuses inside a transaction block."""
    if isinstance(node, ast.IndexStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.DropStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.ReindexStmt):
        return has_option(node.params, "concurrently")
    if isinstance(node, ast.VacuumStmt):
        return bool(node.is_vacuumcmd)
    if isinstance(node, ast.AlterTableStmt):
        # ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY
        for cmd in node.cmds or ():
            partcmd = getattr(cmd, "def_", None)
            if isinstance(partcmd, ast.PartitionCmd) and partcmd.concurrent:
                return True
        return False
    return isinstance(
        node,
        ast.CreatedbStmt
        | ast.DropdbStmt
        | ast.CreateTableSpaceStmt
        | ast.DropTableSpaceStmt
        | ast.AlterSystemStmt,
    )


def group_for_execution(
    statements: list[Statement], mode: TransactionMode
) -> list[list[Statement]]:
    """The transactions the executor runs, in order.

    Always: one group. Never: one group per statement (each autocommitted). Auto: consecutive
    statements share a transaction; a statement that cannot run in one stands alone.
    """
    if mode == "Always":
        return [list(statements)] if statements else []
    if mode == "Never":
        return [[s] for s in statements]
    groups: list[list[Statement]] = []
    current: list[Statement] = []
    for s in statements:
        if s.needs_own_transaction:
            if current:
                groups.append(current)
                current = []
            groups.append([s])
        else:
            current.append(s)
    if current:
        groups.append(current)
    return groups


def group_is_transactional(group: list[Statement], mode: TransactionMode) -> bool:
    """Whether a group runs inside BEGIN/COMMIT (a lone non-transactional statement does not)."""
    if mode == "Never":
        return False
    return not (len(group) == 1 and group[0].needs_own_transaction)


def normalise_sql(sql: str) -> str:
    """The token stream of the SQL, single-spaced, without comments."""
    try:
        tokens = parser.scan(sql)
    except ParseError:
        return " ".join(sql.split())
    # pglast reports character offsets (not libpg_query's bytes), so slice the str itself.
    parts = [sql[t.start : t.end + 1] for t in tokens if t.name not in ("SQL_COMMENT", "C_COMMENT")]
    return " ".join(parts)


def checksum(*parts: str | None) -> str:
    """sha256 over the normalised SQL of the given parts (None parts count as empty)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(normalise_sql(part or "").encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def compact_sql(text: str, limit: int | None = None) -> str:
    """The SQL on one line as the user wrote it, for display: comments dropped, runs of
    whitespace and line breaks become one space (inside string and dollar-quoted literals too),
    no space added where there was none.

    Used to name a statement in lint findings, plans and logs; never executed. pglast's scanner
    reports character offsets. `limit` cuts the result to that many characters (ending with an
    ellipsis).
    """
    try:
        tokens = parser.scan(text)
    except ParseError:
        out = " ".join(text.split())
    else:
        pieces: list[str] = []
        previous_end: int | None = None
        for token in tokens:
            if token.name in ("SQL_COMMENT", "C_COMMENT"):
                continue
            if previous_end is not None and token.start > previous_end + 1:
                pieces.append(" ")
            pieces.append(" ".join(text[token.start : token.end + 1].split()))
            previous_end = token.end
        out = "".join(pieces)
    out = out.rstrip(";").rstrip()
    if limit is not None and len(out) > limit:
        out = out[: max(limit - 1, 0)].rstrip() + "…"
    return out
