"""What the lint learns from the database (`TableEstimate`, read with --dsn / by the operator)
or from earlier statements of the migration.

- Partitioned tables (PARTITION BY earlier, or relkind 'p'): CONCURRENTLY cannot build their
  indexes (a failure, with the ON ONLY + ATTACH recipe), a non-concurrent build is told the
  same recipe, and a NOT VALID foreign key fails before PostgreSQL 18.
- A column's current type: a type change that only widens it (varchar(100) to varchar(200),
  numeric(12,2) to numeric(14,2), varchar to text) is information, one that narrows it an
  error naming the current type; a new COLLATE stays an error (its indexes are rebuilt)."""

from __future__ import annotations

import pytest

from dbmigrate.core.lint import LintContext, check_sql
from dbmigrate.core.lint.context import TableEstimate

CREATE = (
    "CREATE TABLE ev (id bigint, r bigint, at date) PARTITION BY RANGE (at);\n"
    "CREATE TABLE ref (id bigint PRIMARY KEY);\n"
)
BIG_PARTITIONED = {"ev": TableEstimate(rows=5_000_000, size_bytes=2 << 30, partitioned=True)}


def _rules(sql: str, context: LintContext | None = None) -> list[tuple[str, str]]:
    # (the CONCURRENTLY statement splits the SQL in transactions: re-run warnings, not ours)
    findings = check_sql(sql, context=context)
    return [(f.rule, f.severity) for f in findings if f.rule != "prefer-robust-stmts"]


@pytest.mark.parametrize(
    ("sql", "version", "expected"),
    [
        pytest.param(
            CREATE + "CREATE INDEX CONCURRENTLY ev_id ON ev (id);",
            15,
            [("unsupported-on-server-version", "error")],
            id="concurrent-index-on-partitioned-created-here",
        ),
        pytest.param(
            CREATE
            + "ALTER TABLE ev ADD CONSTRAINT f FOREIGN KEY (r) REFERENCES ref (id) NOT VALID;",
            15,
            [("unsupported-on-server-version", "error")],
            id="not-valid-fk-before-18",
        ),
        pytest.param(
            CREATE
            + "ALTER TABLE ev ADD CONSTRAINT f FOREIGN KEY (r) REFERENCES ref (id) NOT VALID;",
            18,
            [],
            id="not-valid-fk-from-18",
        ),
        pytest.param(
            CREATE + "ALTER TABLE ev ADD CONSTRAINT c CHECK (id > 0) NOT VALID;",
            15,
            [],
            id="not-valid-check-is-fine",
        ),
    ],
)
def test_partitioned_table_created_in_the_migration(
    sql: str, version: int, expected: list[tuple[str, str]]
) -> None:
    assert _rules(sql, LintContext(server_version=version)) == expected


def test_partitioned_table_known_from_the_database() -> None:
    context = LintContext(table_sizes=dict(BIG_PARTITIONED))
    findings = check_sql("CREATE INDEX ev_at ON ev (at);", context=context)
    assert [(f.rule, f.severity) for f in findings] == [
        ("require-concurrent-index-creation", "error")
    ]
    message = findings[0].message
    assert "CONCURRENTLY is not possible on a partitioned table" in message
    assert "CREATE INDEX ev_at ON ONLY ev (…)" in message
    assert "ATTACH PARTITION" in message


def test_a_plain_table_keeps_the_concurrently_advice() -> None:
    context = LintContext(table_sizes={"ev": TableEstimate(rows=5_000_000, size_bytes=2 << 30)})
    (finding,) = check_sql("CREATE INDEX ev_at ON ev (at);", context=context)
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS ev_at ON ev" in finding.message


BIG = {"rows": 5_000_000, "size_bytes": 2 << 30}
USERS = TableEstimate(
    **BIG,
    columns=(("name", "character varying(100)"), ("status", "text"), ("score", "integer")),
)
ORDERS = TableEstimate(**BIG, columns=(("amount", "numeric(12,2)"),))


@pytest.mark.parametrize(
    ("sql", "severity", "says"),
    [
        pytest.param(
            "ALTER TABLE users ALTER COLUMN name TYPE varchar(200);",
            "info",
            "is character varying(100) in the database, which is binary-coercible",
            id="widen-varchar",
        ),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN name TYPE text;", "info", "binary-coercible", id="text"
        ),
        pytest.param(
            "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(14,2);",
            "info",
            "numeric(12,2) in the database",
            id="widen-numeric",
        ),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN name TYPE varchar(50);",
            "error",
            "checks or rewrites every row",
            id="narrow-varchar",
        ),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN status TYPE varchar(20);",
            "error",
            "is text in the database",
            id="text-to-varchar-n",
        ),
        pytest.param(
            "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(14,3);",
            "error",
            "checks or rewrites",
            id="numeric-new-scale",
        ),
        pytest.param(
            'ALTER TABLE users ALTER COLUMN name TYPE varchar(200) COLLATE "C";',
            "error",
            "COLLATE rebuilds",
            id="collate",
        ),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN score TYPE bigint;",
            "error",
            "rewrites users",
            id="int-to-bigint",
        ),
    ],
)
def test_a_type_change_judged_by_the_current_type(sql: str, severity: str, says: str) -> None:
    context = LintContext(table_sizes={"users": USERS, "orders": ORDERS})
    findings = [f for f in check_sql(sql, context=context) if f.rule == "changing-column-type"]
    assert [f.severity for f in findings] == [severity]
    assert says in findings[0].message
