"""The lock table covers every statement kind, and says for how long each holds its lock.

Aspects covered:
- every statement node type pglast knows has an entry: a handler, "no table lock", "unknown"
  (a warning from the linter) or "never a statement of its own" — a new pglast release that
  adds a statement fails here until it is placed;
- how long the strongest lock is held (`StatementEffect.holds`) for each kind of case;
- the catch-all rule (`blocking-lock`) reports what no specific rule names, once.
"""

from __future__ import annotations

import inspect

import pytest
from pglast import ast

from dbmigrate.core.lint import check_sql
from dbmigrate.core.locks import statement_effect
from dbmigrate.core.locks.effect import _HANDLERS, NO_TABLE_LOCK, NOT_TOP_LEVEL, UNKNOWN_LOCKS
from dbmigrate.core.statements import parse_statements

STATEMENT_TYPES = sorted(
    (cls for name, cls in inspect.getmembers(ast, inspect.isclass) if name.endswith("Stmt")),
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("kind", STATEMENT_TYPES, ids=lambda cls: cls.__name__)
def test_every_statement_kind_has_exactly_one_entry(kind: type) -> None:
    places = [
        name
        for name, table in (
            ("handler", _HANDLERS),
            ("no table lock", NO_TABLE_LOCK),
            ("unknown", UNKNOWN_LOCKS),
            ("not top level", NOT_TOP_LEVEL),
        )
        if kind in table
    ]
    assert len(places) == 1, f"{kind.__name__}: {places or 'no entry in the lock table'}"


def _effect(sql: str):  # type: ignore[no-untyped-def]
    (statement,) = parse_statements(sql)
    return statement_effect(statement.node)


@pytest.mark.parametrize(
    ("sql", "holds", "strongest"),
    [
        pytest.param("ALTER TABLE t ADD COLUMN c text", "instant", "ACCESS EXCLUSIVE", id="add"),
        pytest.param("ALTER TABLE t DROP COLUMN c", "instant", "ACCESS EXCLUSIVE", id="drop"),
        pytest.param("ALTER TABLE t REPLICA IDENTITY FULL", "instant", "ACCESS EXCLUSIVE", id="ri"),
        pytest.param("ALTER TABLE t SET TABLESPACE x", "rewrite", "ACCESS EXCLUSIVE", id="space"),
        pytest.param("ALTER TABLE t SET UNLOGGED", "rewrite", "ACCESS EXCLUSIVE", id="unlogged"),
        pytest.param("ALTER TABLE t ALTER c TYPE int8", "rewrite", "ACCESS EXCLUSIVE", id="type"),
        pytest.param("ALTER TABLE t ALTER c SET NOT NULL", "scan", "ACCESS EXCLUSIVE", id="nn"),
        pytest.param("CREATE INDEX i ON t (c)", "index build", "SHARE", id="index"),
        pytest.param(
            "ALTER TABLE t ADD PRIMARY KEY (id)", "index build", "ACCESS EXCLUSIVE", id="pk"
        ),
        pytest.param("REINDEX TABLE t", "index build", "SHARE", id="reindex"),
        pytest.param("LOCK TABLE t", "transaction", "ACCESS EXCLUSIVE", id="lock"),
        pytest.param("CREATE RULE r AS ON INSERT TO t DO NOTHING", "instant", "ACCESS EXCLUSIVE"),
        pytest.param("ALTER TABLE t SET SCHEMA s", "instant", "ACCESS EXCLUSIVE", id="schema"),
        pytest.param(
            "CREATE STATISTICS s ON a, b FROM t", "instant", "SHARE UPDATE EXCLUSIVE", id="stats"
        ),
        pytest.param("EXPLAIN ANALYZE DELETE FROM t", "scan", "ROW EXCLUSIVE", id="explain"),
        pytest.param("EXPLAIN DELETE FROM t", "instant", "ACCESS SHARE", id="explain-plan"),
        pytest.param(
            "ALTER TABLE p ATTACH PARTITION p1 FOR VALUES IN (1)",
            "scan",
            "ACCESS EXCLUSIVE",
            id="attach",
        ),
        pytest.param("ALTER DOMAIN d ADD CHECK (VALUE > 0)", "unknown", None, id="domain"),
        pytest.param("CALL p()", "unknown", None, id="call"),
        pytest.param("GRANT SELECT ON t TO r", "instant", None, id="grant"),
    ],
)
def test_how_long_the_lock_is_held(sql: str, holds: str, strongest: str | None) -> None:
    effect = _effect(sql)
    assert effect.holds == holds
    assert (effect.strongest.label if effect.strongest else None) == strongest


@pytest.mark.parametrize(
    ("sql", "severity"),
    [
        pytest.param("ALTER TABLE t SET LOGGED;", "error", id="rewrite-no-rule-names"),
        pytest.param("REFRESH MATERIALIZED VIEW mv;", "error", id="refresh"),
        pytest.param("ALTER TABLE p ATTACH PARTITION p1 DEFAULT;", "error", id="attach-scan"),
        pytest.param("DROP OWNED BY app;", "warning", id="unknown"),
        pytest.param("ALTER TABLE ALL IN TABLESPACE a SET TABLESPACE b;", "warning", id="all"),
    ],
)
def test_catch_all_reports_what_no_rule_names(sql: str, severity: str) -> None:
    (finding,) = [f for f in check_sql(sql) if f.rule == "blocking-lock"]
    assert finding.severity == severity


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("ALTER TABLE users ALTER COLUMN id TYPE bigint;", id="changing-column-type"),
        pytest.param("VACUUM FULL users;", id="vacuum-full"),
        pytest.param("CREATE INDEX i ON users (email);", id="non-concurrent-index"),
        pytest.param(
            "ALTER TABLE users ADD CONSTRAINT c CHECK (age > 0);", id="constraint-not-valid"
        ),
    ],
)
def test_catch_all_stays_quiet_where_a_rule_speaks(sql: str) -> None:
    rules = [f.rule for f in check_sql(sql)]
    assert rules, "a specific rule should have spoken"
    assert "blocking-lock" not in rules


def test_a_suppressed_specific_finding_still_covers_the_statement() -> None:
    sql = (
        "CREATE INDEX i ON users (email);"
        " -- dbmigrate:ignore require-concurrent-index-creation small table\n"
    )
    rules = [(f.rule, f.suppressed) for f in check_sql(sql)]
    assert rules == [("require-concurrent-index-creation", True)]
