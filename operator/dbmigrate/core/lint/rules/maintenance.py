"""Rules about maintenance commands that rewrite a table under ACCESS EXCLUSIVE: VACUUM FULL
and CLUSTER."""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import said
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.sqlast import has_option
from dbmigrate.core.statements import Statement


@register("vacuum-full", "error", "VACUUM FULL rewrites the table under ACCESS EXCLUSIVE")
def vacuum_full(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if not isinstance(node, ast.VacuumStmt) or not has_option(node.options, "full"):
        return
    tables = ", ".join(effect.relations) or "every table of the database"
    yield Hit(
        f"{said(s)} rewrites {tables} under ACCESS EXCLUSIVE, blocking reads and writes for the "
        "whole rewrite. Safe alternative: plain VACUUM (SHARE UPDATE EXCLUSIVE) reclaims space "
        "for reuse; to shrink files online use an extension such as pg_repack, outside the "
        "migration."
    )


@register("cluster", "error", "CLUSTER rewrites the table under ACCESS EXCLUSIVE")
def cluster(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    if not isinstance(s.node, ast.ClusterStmt):
        return
    tables = ", ".join(effect.relations) or "every previously clustered table"
    yield Hit(
        f"{said(s)} rewrites {tables} in index order under ACCESS EXCLUSIVE, blocking reads "
        "and writes for the whole rewrite. Safe alternative: leave physical ordering out of "
        "migrations (pg_repack --order-by does it online)."
    )
