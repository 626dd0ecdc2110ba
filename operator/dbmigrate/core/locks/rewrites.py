"""Whether adding a column rewrites the table: the volatility of its DEFAULT expression
(judged from the function names alone, since nothing is looked up in the database) and the
column kinds that always fill every existing row (serial, identity, stored generated).
"""

from __future__ import annotations

from typing import Any, Literal

from pglast import ast
from pglast.enums import ConstrType

from dbmigrate.core.locks.modes import Rewrite
from dbmigrate.core.sqlast import (
    SERIAL_TYPES,
    column_constraints,
    column_default,
    deparse,
    dotted_name,
    is_null_constant,
    type_name,
    walk,
)

Volatility = Literal["non-volatile", "volatile", "unknown"]

# Built-in functions whose pg_proc.provolatile is 'v': a DEFAULT calling one of them is
# evaluated per row, so ADD COLUMN has to rewrite the table.
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "setseed",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "gen_random_bytes",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "setval",
        "currval",
        "lastval",
        "txid_current",
        "pg_current_xact_id",
        "pg_sleep",
    }
)

# Built-in stable or immutable functions commonly seen in defaults; PostgreSQL 11+ evaluates
# them once, stores the value in the catalog and does not rewrite.
NON_VOLATILE_FUNCTIONS = frozenset(
    {
        "now",
        "statement_timestamp",
        "transaction_timestamp",
        "current_setting",
        "to_timestamp",
        "to_date",
        "to_char",
        "to_json",
        "to_jsonb",
        "make_date",
        "make_time",
        "make_timestamp",
        "make_timestamptz",
        "make_interval",
        "date_trunc",
        "date_part",
        "timezone",
        "lower",
        "upper",
        "length",
        "char_length",
        "md5",
        "concat",
        "concat_ws",
        "format",
        "replace",
        "substr",
        "substring",
        "btrim",
        "ltrim",
        "rtrim",
        "left",
        "right",
        "abs",
        "round",
        "floor",
        "ceil",
        "jsonb_build_object",
        "jsonb_build_array",
        "json_build_object",
        "json_build_array",
        "array_fill",
        "int4range",
        "int8range",
        "tstzrange",
        "daterange",
    }
)


def default_volatility(expr: Any) -> tuple[Volatility, str | None]:
    """Whether a DEFAULT expression is volatile, and the function that decides it.

    Constants, casts, operators and SQL value functions (CURRENT_TIMESTAMP, CURRENT_USER) are
    not volatile; a call to a built-in volatile function makes the whole expression volatile;
    a call to a function we do not know (user-defined, an extension) is "unknown".
    """
    unknown: str | None = None
    for node in walk(expr):
        if isinstance(node, ast.FuncCall):
            name = dotted_name(node.funcname or ())
            short = name.removeprefix("pg_catalog.")
            if short in VOLATILE_FUNCTIONS:
                return "volatile", short
            if short not in NON_VOLATILE_FUNCTIONS and unknown is None:
                unknown = name
        elif isinstance(node, ast.SubLink):
            return "unknown", "a sub-query"
    if unknown is not None:
        return "unknown", unknown
    return "non-volatile", None


def add_column_rewrite(coldef: Any, server_version: int) -> tuple[Rewrite, str | None]:
    """Whether `ADD COLUMN coldef` rewrites the table, and why."""
    kind = type_name(coldef.typeName)
    if kind in SERIAL_TYPES:
        return "yes", f"{kind} column: its nextval() default is volatile"
    for constraint in column_constraints(coldef):
        if constraint.contype == ConstrType.CONSTR_IDENTITY:
            return "yes", "identity column: every existing row gets a sequence value"
        if constraint.contype == ConstrType.CONSTR_GENERATED:
            return "yes", "stored generated column: computed for every existing row"
    default = column_default(coldef)
    if default is None or is_null_constant(default):
        return "no", None
    if server_version < 11:
        return "yes", f"PostgreSQL {server_version} rewrites the table for any non-NULL DEFAULT"
    volatility, function = default_volatility(default)
    if volatility == "volatile":
        return "yes", f"DEFAULT {deparse(default)} is volatile ({function}() runs per row)"
    if volatility == "unknown":
        return "maybe", f"DEFAULT {deparse(default)} calls {function}, whose volatility is unknown"
    return "no", None
