"""The SQL inside PL/pgSQL: a DO block's body and a function's or procedure's, found with
PostgreSQL's own PL/pgSQL parser (pglast.parse_plpgsql), so that the linter can judge each
statement a body runs like a top-level one (the seed's backfill is a DO loop; a
`DO $$ BEGIN ALTER TABLE … TYPE … END $$` hides a rewrite from a linter that stops at DO).

`plpgsql_body` says whether a statement has such a body; `embedded_sql` lists the statements
in it, each with its line in the body, whether it sits in a loop, and whether it is dynamic
(`EXECUTE` of a string built at run time, which no linter can read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast
from pglast.parser import ParseError

from dbmigrate.core.sqlast import walk


class PlpgsqlError(ValueError):
    """A body PostgreSQL's PL/pgSQL parser rejects."""


@dataclass(frozen=True)
class Body:
    kind: str  # "DO block", "function f", "procedure p"
    source: str  # the body's text
    function: bool  # a function or procedure: the body runs when called, not now
    name: str = ""  # the function's or procedure's name, lower-case, without its schema


@dataclass(frozen=True)
class EmbeddedSql:
    text: str  # the statement (for a dynamic EXECUTE: the expression building it)
    line: int  # 1-based, counted from the line on which the body begins
    in_loop: bool
    dynamic: bool
    loop_commits: bool = False  # the loop it sits in COMMITs (each iteration its own transaction)


_LOOPS = frozenset(
    {
        "PLpgSQL_stmt_loop",
        "PLpgSQL_stmt_while",
        "PLpgSQL_stmt_fori",
        "PLpgSQL_stmt_fors",
        "PLpgSQL_stmt_forc",
        "PLpgSQL_stmt_foreach_a",
        "PLpgSQL_stmt_dynfors",
    }
)
# Where each kind of statement keeps its SQL (a PLpgSQL_expr).
_SQL_OF = {
    "PLpgSQL_stmt_execsql": "sqlstmt",
    "PLpgSQL_stmt_perform": "expr",
    "PLpgSQL_stmt_fors": "query",
    "PLpgSQL_stmt_return_query": "query",
}
_DYNAMIC_OF = {
    "PLpgSQL_stmt_dynexecute": "query",
    "PLpgSQL_stmt_dynfors": "query",
    "PLpgSQL_stmt_return_query": "dynquery",
}


def _option(options: Any, name: str) -> Any:
    for opt in options or ():
        if isinstance(opt, ast.DefElem) and opt.defname == name:
            return opt.arg
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, ast.String):
        return str(value.sval)
    if isinstance(value, list | tuple) and value and isinstance(value[0], ast.String):
        return str(value[0].sval)
    return None


def plpgsql_body(node: Any) -> Body | None:
    """The PL/pgSQL body of a DO, CREATE FUNCTION or CREATE PROCEDURE statement, else None."""
    if isinstance(node, ast.DoStmt):
        language = _text(_option(node.args, "language")) or "plpgsql"
        source = _text(_option(node.args, "as"))
        if language.lower() == "plpgsql" and source is not None:
            return Body("DO block", source, function=False)
        return None
    if isinstance(node, ast.CreateFunctionStmt):
        language = (_text(_option(node.options, "language")) or "").lower()
        source = _text(_option(node.options, "as"))
        if language != "plpgsql" or source is None:
            return None
        name = ".".join(str(getattr(part, "sval", part)) for part in node.funcname or ())
        kind = "procedure" if node.is_procedure else "function"
        return Body(f"{kind} {name}", source, function=True, name=_key(name))
    return None


def embedded_sql(body: Body, statement_text: str) -> list[EmbeddedSql]:
    """The SQL statements the body runs, in order. Raises `PlpgsqlError` when PostgreSQL's
    PL/pgSQL parser rejects the body."""
    if body.function:
        text = statement_text  # the parser needs the signature: parameters, trigger or not
    else:
        tag = "$dbmigrate_do$"
        text = f"CREATE FUNCTION dbmigrate_do() RETURNS void LANGUAGE plpgsql AS {tag}"
        text += body.source + tag
    try:
        tree = pglast.parse_plpgsql(text)
    except ParseError as exc:
        raise PlpgsqlError(str(exc.args[0] if exc.args else exc)) from None
    found: list[EmbeddedSql] = []
    _walk(tree, found, in_loop=False, commits=False)
    return found


def _query(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("PLpgSQL_expr"), dict):
        query = value["PLpgSQL_expr"].get("query")
        return str(query) if query else None
    return None


def _walk(value: Any, found: list[EmbeddedSql], *, in_loop: bool, commits: bool) -> None:
    if isinstance(value, list):
        for item in value:
            _walk(item, found, in_loop=in_loop, commits=commits)
        return
    if not isinstance(value, dict):
        return
    for key, inner in value.items():
        if key.startswith("PLpgSQL_stmt_") and isinstance(inner, dict):
            line = int(inner.get("lineno") or 1)
            if key in _DYNAMIC_OF and (query := _query(inner.get(_DYNAMIC_OF[key]))):
                found.append(EmbeddedSql(query, line, in_loop, True, commits))
            elif key in _SQL_OF and (query := _query(inner.get(_SQL_OF[key]))):
                found.append(EmbeddedSql(query, line, in_loop, False, commits))
            if key in _LOOPS:
                _walk(inner, found, in_loop=True, commits=_commits(inner))
            else:
                _walk(inner, found, in_loop=in_loop, commits=commits)
        else:
            _walk(inner, found, in_loop=in_loop, commits=commits)


def _commits(value: Any) -> bool:
    """A COMMIT anywhere in this part of the tree."""
    if isinstance(value, list):
        return any(_commits(item) for item in value)
    if isinstance(value, dict):
        return "PLpgSQL_stmt_commit" in value or any(_commits(v) for v in value.values())
    return False


def constant_sql(expression: str) -> str | None:
    """The SQL an `EXECUTE expression` runs when the expression is a string constant (or
    constants joined with ||); None when it is built from anything else."""
    try:
        parsed = pglast.parse_sql(f"SELECT {expression}")
    except ParseError:
        return None
    statements: list[Any] = list(parsed)
    if len(statements) != 1:
        return None
    targets: list[Any] = list(getattr(statements[0].stmt, "targetList", None) or ())
    if len(targets) != 1:
        return None
    return _fold(targets[0].val)


def _fold(node: Any) -> str | None:
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        return str(node.val.sval)
    if isinstance(node, ast.A_Expr) and [getattr(n, "sval", None) for n in node.name or ()] == [
        "||"
    ]:
        left, right = _fold(node.lexpr), _fold(node.rexpr)
        return left + right if left is not None and right is not None else None
    return None


def _key(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower()


def calls_in(node: Any) -> list[str]:
    """The functions a statement calls (`SELECT f()`, `CALL p()`, in any expression), as
    `Body.name` spells them."""
    names: list[str] = []
    for sub in walk(node):
        if isinstance(sub, ast.FuncCall):
            parts = [str(getattr(p, "sval", p)) for p in sub.funcname or ()]
            if parts:
                names.append(_key(".".join(parts)))
    return list(dict.fromkeys(names))
