"""The SQL inside PL/pgSQL bodies, linted like top-level statements (core.plpgsql + the engine).

Aspects covered:
- a DO block's statements: a rewrite or a non-concurrent index inside is found, at its own line,
  the message saying where it is; the seed-style batched loop: fine when it COMMITs,
  an error when it never does (every batch one transaction);
- a function's or procedure's body: its statements are judged too, said to run when called
  (warnings where it is defined, errors where the migration calls it), and hold nothing in
  the migration's transaction;
- what cannot be read: dynamic EXECUTE (a warning), a body PL/pgSQL rejects (a warning), other
  languages (skipped);
- suppression on the DO statement covers the findings inside it; a table created inside a DO
  block is new for the statements after it.
"""

from __future__ import annotations

import pytest

from dbmigrate.core.lint import check_sql
from dbmigrate.core.plpgsql import embedded_sql, plpgsql_body
from dbmigrate.core.statements import parse_statements

LOOP_WITHOUT_COMMIT = """DO $$
DECLARE n bigint;
BEGIN
  LOOP
    UPDATE users SET v = true WHERE id IN (SELECT id FROM users WHERE v IS NULL LIMIT 1000);
    GET DIAGNOSTICS n = ROW_COUNT;
    EXIT WHEN n = 0;
  END LOOP;
END $$;"""
LOOP_WITH_COMMIT = LOOP_WITHOUT_COMMIT.replace("EXIT WHEN n = 0;", "EXIT WHEN n = 0;\n    COMMIT;")


def _found(sql: str) -> list[tuple[str, str, int]]:
    return [(f.rule, f.severity, f.line) for f in check_sql(sql)]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            "SELECT 1;\nDO $$\nBEGIN\n  ALTER TABLE users ALTER COLUMN id TYPE bigint;\nEND $$;",
            [("changing-column-type", "error", 4)],
            id="rewrite-in-do",
        ),
        pytest.param(
            "DO $$ BEGIN CREATE INDEX i ON orders (x); END $$;",
            [("require-concurrent-index-creation", "error", 1)],
            id="index-in-do",
        ),
        pytest.param(
            "DO $$ BEGIN ALTER TABLE users SET TABLESPACE slow; END $$;",
            [("blocking-lock", "error", 1)],
            id="catch-all-in-do",
        ),
        pytest.param(LOOP_WITH_COMMIT, [], id="batched-loop-that-commits"),
        pytest.param(
            LOOP_WITHOUT_COMMIT, [("prefer-backfill-step", "error", 5)], id="loop-never-commits"
        ),
        pytest.param(
            "DO $$ BEGIN EXECUTE format('ALTER TABLE %I SET LOGGED', 't'); END $$;",
            [("blocking-lock", "warning", 1)],
            id="dynamic-execute",
        ),
        pytest.param(
            "DO $$ BEGIN FOR r IN 1..3 LOOP NULL; END LOOP; PERFOM 1; END $$;",
            [("blocking-lock", "warning", 1)],
            id="body-plpgsql-rejects",
        ),
        pytest.param(
            "DO LANGUAGE plpython3u $$ plpy.execute('ALTER TABLE t SET LOGGED') $$;",
            [],
            id="other-language-skipped",
        ),
        pytest.param(
            "DO $$ BEGIN CREATE TABLE scratch (id bigint); CREATE INDEX s ON scratch (id); END $$;",
            [],
            id="table-created-inside-is-new",
        ),
    ],
)
def test_do_blocks(sql: str, expected: list[tuple[str, str, int]]) -> None:
    assert _found(sql) == expected


def test_message_says_where_the_statement_is() -> None:
    (finding,) = check_sql("SELECT 1;\nDO $$ BEGIN CREATE INDEX i ON orders (x); END $$;")
    assert finding.message.startswith("In the DO block at line 2: `CREATE INDEX i ON orders")


GROW = (
    "CREATE FUNCTION grow() RETURNS void LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  ALTER TABLE users ALTER COLUMN id TYPE bigint;\n"
    "END $$;\n"
    "ALTER TABLE orders ADD COLUMN IF NOT EXISTS note text;"
)


def test_function_body_is_a_warning_and_holds_nothing_now() -> None:
    """Defining the function runs nothing: its body's rewrite is a warning where it is
    defined, and the later ALTER is not in a transaction holding users."""
    findings = check_sql(GROW)
    assert [(f.rule, f.severity, f.line) for f in findings] == [
        ("changing-column-type", "warning", 3)
    ]
    assert findings[0].message.startswith("In the function grow at line 1:")
    assert "each time the function is called" in findings[0].message


def test_calling_the_function_counts_its_body_in_full() -> None:
    findings = check_sql(GROW + "\nSELECT public.grow();")
    called = [f for f in findings if f.line == 6]
    assert [(f.rule, f.severity) for f in called] == [("changing-column-type", "error")]
    assert called[0].message.startswith("`SELECT public.grow()` calls grow (defined at line 1)")


def test_procedure_body_is_judged() -> None:
    sql = "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN VACUUM FULL users; END $$;\nCALL p();"
    assert [(f.rule, f.severity, f.line) for f in check_sql(sql)] == [
        ("vacuum-full", "warning", 1),
        ("vacuum-full", "error", 2),
    ]


def test_suppression_on_the_do_statement_covers_its_body() -> None:
    sql = (
        "-- dbmigrate:ignore require-concurrent-index-creation orders is tiny\n"
        "DO $$ BEGIN CREATE INDEX i ON orders (x); END $$;"
    )
    (finding,) = check_sql(sql)
    assert finding.suppressed
    assert finding.reason == "orders is tiny"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            "DO $$ BEGIN UPDATE t SET a = 1 WHERE id = 1; END $$",
            [("UPDATE t SET a = 1 WHERE id = 1", 1, False, False)],
            id="one",
        ),
        pytest.param(
            "DO $$\nDECLARE r record;\nBEGIN\n  FOR r IN SELECT id FROM t LOOP\n"
            "    DELETE FROM u WHERE id = r.id;\n  END LOOP;\nEND $$",
            [
                ("SELECT id FROM t", 4, False, False),
                ("DELETE FROM u WHERE id = r.id", 5, True, False),
            ],
            id="for-loop",
        ),
        pytest.param(
            "DO $$ BEGIN PERFORM pg_sleep(1); RETURN; END $$",
            [("SELECT pg_sleep(1)", 1, False, False)],
            id="perform",
        ),
        pytest.param(
            "DO $$ BEGIN EXECUTE 'TRUNCATE ' || 't'; END $$",
            [("'TRUNCATE ' || 't'", 1, False, True)],
            id="dynamic",
        ),
    ],
)
def test_embedded_sql(sql: str, expected: list[tuple[str, int, bool, bool]]) -> None:
    (statement,) = parse_statements(sql)
    body = plpgsql_body(statement.node)
    assert body is not None
    found = [(e.text, e.line, e.in_loop, e.dynamic) for e in embedded_sql(body, statement.text)]
    assert found == expected
