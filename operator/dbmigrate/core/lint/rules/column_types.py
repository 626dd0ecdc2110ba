"""Rules about column types in tables being created or altered: integer ids that run out,
timestamp without time zone, varchar(n) and char(n). They are design rules about the schema
being built, so a rollback's down SQL is not judged by them ("skip")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import said
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.sqlast import (
    alter_commands,
    deparse,
    quote_name,
    relation_name,
    type_modifiers,
    type_name,
)
from dbmigrate.core.statements import Statement

_SMALL_INTEGERS = {
    "int2": "smallint",
    "int4": "integer",
    "serial": "serial",
    "serial4": "serial",
    "smallserial": "smallserial",
    "serial2": "smallserial",
}


def _columns(s: Statement, *kinds: str) -> Iterator[tuple[str, str, Any]]:
    """(`<statement>: column <c> of <table> is`, column, TypeName) for each column the statement
    creates or retypes whose type is one of `kinds` (as `type_name` spells it)."""
    node = s.node
    found: list[tuple[str, str, Any]] = []
    if isinstance(node, ast.CreateStmt):
        table = relation_name(node.relation)
        found = [
            (table, str(element.colname), element.typeName)
            for element in node.tableElts or ()
            if isinstance(element, ast.ColumnDef)
        ]
    else:
        for table, cmd in alter_commands(
            node, AlterTableType.AT_AddColumn, AlterTableType.AT_AlterColumnType
        ):
            retyped = cmd.subtype == AlterTableType.AT_AlterColumnType
            found.append((table, str(cmd.name if retyped else cmd.def_.colname), cmd.def_.typeName))
    for table, column, typename in found:
        if type_name(typename) in kinds:
            yield f"{said(s)}: column {column} of {table} is", column, typename


@register(
    "prefer-bigint-over-int",
    "warning",
    "integer/smallint/serial columns can run out of values",
    rollback="skip",
    covers_locks=False,
)
def prefer_bigint_over_int(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for column_is, _, typename in _columns(s, *_SMALL_INTEGERS):
        yield Hit(
            f"{column_is} {_SMALL_INTEGERS[type_name(typename)]}; ids and counters outgrow it, "
            "and changing the type later rewrites the table under ACCESS EXCLUSIVE. Use bigint "
            "(bigserial / bigint GENERATED … AS IDENTITY): 4 more bytes per row."
        )


@register(
    "prefer-timestamptz",
    "warning",
    "timestamp without time zone",
    rollback="skip",
    covers_locks=False,
)
def prefer_timestamptz(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    for column_is, _, _ in _columns(s, "timestamp"):
        yield Hit(
            f"{column_is} timestamp without time zone; its values change meaning with the "
            "session's TimeZone. Use timestamptz."
        )


@register(
    "prefer-text-field",
    "warning",
    "varchar(n): changing the limit later takes ACCESS EXCLUSIVE",
    rollback="skip",
    covers_locks=False,
)
def prefer_text_field(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    for column_is, column, typename in _columns(s, "varchar"):
        mods = type_modifiers(typename)
        if not mods:
            continue
        yield Hit(
            f"{column_is} varchar({mods[0]}); changing the limit later takes ACCESS EXCLUSIVE "
            "(and shrinking it scans the table). Use text with CHECK "
            f"(char_length({quote_name(column)}) <= {mods[0]}) added NOT VALID: that limit can "
            "be changed without blocking."
        )


@register(
    "ban-char-field", "warning", "char(n) pads with spaces", rollback="skip", covers_locks=False
)
def ban_char_field(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    for column_is, _, typename in _columns(s, "bpchar"):
        yield Hit(
            f"{column_is} {deparse(typename)}, which pads values with spaces and is no faster than "
            "text. Use text (with a CHECK on char_length if the length matters)."
        )
