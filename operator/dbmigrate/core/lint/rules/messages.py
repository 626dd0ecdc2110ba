"""What the rule families share: naming the statement, the recipes their messages offer (NOT
VALID, the CHECK … IS NOT NULL recipe, a constraint's default name), and the ways of finding
the ALTER TABLE sub-commands and added constraints that concern an existing table.

A message names the statement, the lock it takes and for how long, and the safe alternative,
derived from the user's own statement where possible.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from pglast.enums import AlterTableType

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.sqlast import alter_commands, column_constraints, deparse_with, quote_name
from dbmigrate.core.statements import Statement, compact_sql


@functools.lru_cache(maxsize=256)
def _compact(text: str) -> str:
    return compact_sql(text, 200)


def said(statement: Statement) -> str:
    """The statement as a message quotes it: on one line, cut at 200 characters."""
    return f"`{_compact(statement.text)}`"


def with_not_valid(node: Any, contype: Any) -> str:
    """The ALTER TABLE again, with its added constraints of `contype` marked NOT VALID."""
    return deparse_with(
        node,
        [
            (cmd.def_, "skip_validation", True)
            for cmd in node.cmds
            if getattr(cmd.def_, "contype", None) == contype
        ],
    )


def constraint_name(table: str, *parts: str) -> str:
    """A constraint name as PostgreSQL builds one, `<table>_<parts>`, cut to its 63-character
    identifier limit."""
    name = "_".join((table.rsplit(".", 1)[-1], *parts))
    return name[:63]


def existing_alter_commands(
    node: Any, ctx: LintContext, *subtypes: AlterTableType
) -> Iterator[tuple[str, Any]]:
    """(table, command) for ALTER TABLE sub-commands of the given kinds on tables that existed
    before this migration (a table created in it is exempt: nobody else uses it yet)."""
    for table, cmd in alter_commands(node, *subtypes):
        if not ctx.is_new_table(table):
            yield table, cmd


def added_constraints(node: Any, ctx: LintContext) -> Iterator[tuple[str, Any, Any]]:
    """(table, constraint, column or None) for constraints added to an existing table, either
    by ADD CONSTRAINT or inline in ADD COLUMN."""
    for table, cmd in existing_alter_commands(
        node, ctx, AlterTableType.AT_AddConstraint, AlterTableType.AT_AddColumn
    ):
        if cmd.subtype == AlterTableType.AT_AddConstraint:
            yield table, cmd.def_, None
        else:
            for constraint in column_constraints(cmd.def_):
                yield table, constraint, cmd.def_


def not_null_recipe(table: str, column: str) -> str:
    """The online way to SET NOT NULL: a CHECK added NOT VALID, validated separately."""
    check = constraint_name(table, column, "not_null")
    t, c, k = quote_name(table), quote_name(column), quote_name(check)
    return (
        f"ALTER TABLE {t} ADD CONSTRAINT {k} CHECK ({c} IS NOT NULL) NOT VALID; then, in a "
        f"separate transaction, ALTER TABLE {t} VALIDATE CONSTRAINT {k}; (SHARE UPDATE "
        f"EXCLUSIVE: reads and writes continue during the scan); then ALTER TABLE {t} ALTER "
        f"COLUMN {c} SET NOT NULL; (PostgreSQL 12+ uses the valid CHECK and skips the scan) and "
        f"ALTER TABLE {t} DROP CONSTRAINT {k};"
    )


def rewrite_note(table: str) -> str:
    """What a table rewrite costs, as the column rules word it."""
    return (
        f"PostgreSQL rewrites {table} under ACCESS EXCLUSIVE, blocking reads and writes for the "
        "whole rewrite"
    )


def partitioned_index_recipe(node: Any, table: str) -> str:
    """How to index a partitioned table without blocking its writes."""
    name = node.idxname or f"{table.rsplit('.', 1)[-1]}_idx"
    return (
        f"Safe alternative: CREATE INDEX {quote_name(name)} ON ONLY {quote_name(table)} (…) "
        "(an invalid index on the parent alone, instant); then CREATE INDEX CONCURRENTLY on "
        f"each partition; then ALTER INDEX {quote_name(name)} ATTACH PARTITION for each of "
        "them (the parent's index becomes valid when all are attached)."
    )
