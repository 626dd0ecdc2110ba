"""`core.statements`: splitting, transaction grouping and the history checksum.

Aspects: statements that cannot run in a transaction; Auto/Always/Never grouping; checksums
ignore whitespace and comments but not content, also for non-ASCII SQL; syntax errors carry the
line.
"""

from __future__ import annotations

import pytest

from dbmigrate.core.statements import (
    SqlSyntaxError,
    checksum,
    group_for_execution,
    parse_statements,
)


@pytest.mark.parametrize(
    ("sql", "alone"),
    [
        pytest.param("CREATE INDEX CONCURRENTLY i ON t (c)", True, id="create-index-concurrently"),
        pytest.param("CREATE INDEX i ON t (c)", False, id="create-index"),
        pytest.param("DROP INDEX CONCURRENTLY i", True, id="drop-index-concurrently"),
        pytest.param("REINDEX INDEX CONCURRENTLY i", True, id="reindex-concurrently"),
        pytest.param("VACUUM t", True, id="vacuum"),
        pytest.param("ANALYZE t", False, id="analyze"),
        pytest.param("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", True, id="detach"),
        pytest.param("ALTER TABLE t ADD COLUMN c int", False, id="ddl"),
        pytest.param("ALTER TYPE mood ADD VALUE 'meh'", False, id="enum-value-pg12+"),
    ],
)
def test_statements_that_must_run_alone(sql: str, alone: bool) -> None:
    (stmt,) = parse_statements(sql)
    assert stmt.needs_own_transaction is alone


SQL = (
    "ALTER TABLE t ADD a int; ALTER TABLE t ADD b int; CREATE INDEX CONCURRENTLY i ON t (a); "
    "ALTER TABLE t ADD c int"
)


@pytest.mark.parametrize(
    ("mode", "groups"),
    [
        pytest.param("Auto", [[0, 1], [2], [3]], id="auto"),
        pytest.param("Always", [[0, 1, 2, 3]], id="always"),
        pytest.param("Never", [[0], [1], [2], [3]], id="never"),
    ],
)
def test_grouping(mode: str, groups: list[list[int]]) -> None:
    stmts = parse_statements(SQL)
    assert [[s.index for s in g] for g in group_for_execution(stmts, mode)] == groups  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param("SELECT 1", "select   1 -- why\n", False, id="case-is-content"),
        pytest.param("SELECT 1", "SELECT   1 -- why\n", True, id="whitespace-and-comment"),
        pytest.param("SELECT 1 /* x */", "SELECT 1", True, id="block-comment"),
        pytest.param("SELECT 'é' -- ñ", "SELECT  'é'", True, id="non-ascii"),
        pytest.param("SELECT 'é'", "SELECT 'e'", False, id="non-ascii-content"),
        pytest.param("SELECT 1", "SELECT 2", False, id="constant"),
    ],
)
def test_checksum(a: str, b: str, same: bool) -> None:
    assert (checksum(a) == checksum(b)) is same


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(SqlSyntaxError) as info:
        parse_statements("SELECT 1;\n\nSELEC 2")
    assert info.value.line == 3
    assert "SELEC" in str(info.value)


def test_statement_text_and_line_with_non_ascii() -> None:
    stmts = parse_statements("-- ünïcode\nSELECT 'ä';\n  SELECT 2")
    assert [(s.text, s.line) for s in stmts] == [("SELECT 'ä'", 2), ("SELECT 2", 3)]
