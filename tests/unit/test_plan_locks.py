"""The lock table: for each kind of statement, the strongest lock, on which relations, whether
it rewrites the table and whether it reads every row while holding the lock.

Aspects covered: ALTER TABLE sub-commands (brief ACCESS EXCLUSIVE, SHARE UPDATE EXCLUSIVE,
SHARE ROW EXCLUSIVE for foreign keys on both tables), rewrites (volatile defaults, serial,
identity, type changes, VACUUM FULL, CLUSTER), scans (index builds, validation, SET NOT NULL),
index statements with and without CONCURRENTLY, DML, LOCK TABLE, statements without table
locks; the server version (PG 10 defaults); what the modes block; the category of a statement.
"""

from __future__ import annotations

import pytest
from pglast import parse_sql

from dbmigrate.core.locks import (
    LockMode,
    default_volatility,
    rewrites_table,
    statement_effect,
    strongest_lock,
)

AE = LockMode.ACCESS_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE
SRE = LockMode.SHARE_ROW_EXCLUSIVE


def node(sql: str) -> object:
    return parse_sql(sql)[0].stmt


@pytest.mark.parametrize(
    ("sql", "locks", "rewrite", "scan", "category"),
    [
        pytest.param(
            "ALTER TABLE users ADD COLUMN a boolean DEFAULT false",
            {"users": AE},
            "no",
            False,
            "DDL",
            id="add-column-constant-default",
        ),
        pytest.param(
            "ALTER TABLE users ADD COLUMN a uuid DEFAULT gen_random_uuid()",
            {"users": AE},
            "yes",
            False,
            "DDL",
            id="add-column-volatile-default",
        ),
        pytest.param(
            "ALTER TABLE users ADD COLUMN a text DEFAULT my_func()",
            {"users": AE},
            "maybe",
            False,
            "DDL",
            id="add-column-unknown-function",
        ),
        pytest.param(
            "ALTER TABLE users ADD COLUMN a serial", {"users": AE}, "yes", False, "DDL", id="serial"
        ),
        pytest.param(
            "ALTER TABLE users ADD COLUMN a bigint GENERATED ALWAYS AS IDENTITY",
            {"users": AE},
            "yes",
            False,
            "DDL",
            id="identity",
        ),
        pytest.param(
            "ALTER TABLE users ADD COLUMN a bigint GENERATED ALWAYS AS (b * 2) STORED",
            {"users": AE},
            "yes",
            False,
            "DDL",
            id="stored-generated",
        ),
        pytest.param(
            "ALTER TABLE users DROP COLUMN a", {"users": AE}, "no", False, "DDL", id="drop-column"
        ),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN a TYPE bigint",
            {"users": AE},
            "yes",
            False,
            "DDL",
            id="type-change",
        ),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN a TYPE text",
            {"users": AE},
            "maybe",
            False,
            "DDL",
            id="type-change-maybe-coercible",
        ),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN a SET NOT NULL",
            {"users": AE},
            "no",
            True,
            "constraint",
            id="set-not-null",
        ),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN a SET DEFAULT 0",
            {"users": AE},
            "no",
            False,
            "DDL",
            id="set-default",
        ),
        pytest.param(
            "ALTER TABLE users ADD CONSTRAINT c CHECK (a > 0)",
            {"users": AE},
            "no",
            True,
            "constraint",
            id="check",
        ),
        pytest.param(
            "ALTER TABLE users ADD CONSTRAINT c CHECK (a > 0) NOT VALID",
            {"users": AE},
            "no",
            False,
            "constraint",
            id="check-not-valid",
        ),
        pytest.param(
            "ALTER TABLE users VALIDATE CONSTRAINT c",
            {"users": SUE},
            "no",
            True,
            "constraint",
            id="validate",
        ),
        pytest.param(
            "ALTER TABLE orders ADD CONSTRAINT f FOREIGN KEY (user_id) REFERENCES users (id)",
            {"orders": SRE, "users": SRE},
            "no",
            True,
            "constraint",
            id="foreign-key",
        ),
        pytest.param(
            "ALTER TABLE orders ADD CONSTRAINT f FOREIGN KEY (user_id) REFERENCES users (id) "
            "NOT VALID",
            {"orders": SRE, "users": SRE},
            "no",
            False,
            "constraint",
            id="foreign-key-not-valid",
        ),
        pytest.param(
            "ALTER TABLE users ADD CONSTRAINT u UNIQUE USING INDEX u_idx",
            {"users": AE},
            "no",
            False,
            "constraint",
            id="unique-using-index",
        ),
        pytest.param(
            "ALTER TABLE users ADD PRIMARY KEY (id)",
            {"users": AE},
            "no",
            True,
            "constraint",
            id="primary-key-builds-index",
        ),
        pytest.param(
            "ALTER TABLE users SET (fillfactor = 70)",
            {"users": SUE},
            "no",
            False,
            "DDL",
            id="storage-parameter",
        ),
        pytest.param(
            "ALTER TABLE users DISABLE TRIGGER t", {"users": SRE}, "no", False, "DDL", id="trigger"
        ),
        pytest.param(
            "ALTER TABLE users SET LOGGED", {"users": AE}, "yes", False, "DDL", id="set-logged"
        ),
        pytest.param(
            "CREATE INDEX i ON users (a)",
            {"users": LockMode.SHARE},
            "no",
            True,
            "index",
            id="create-index",
        ),
        pytest.param(
            "CREATE INDEX CONCURRENTLY i ON users (a)",
            {"users": SUE},
            "no",
            True,
            "index",
            id="create-index-concurrently",
        ),
        pytest.param(
            "DROP INDEX CONCURRENTLY i", {"i": SUE}, "no", False, "index", id="drop-index-conc"
        ),
        pytest.param("DROP INDEX i", {"i": AE}, "no", False, "index", id="drop-index"),
        pytest.param(
            "REINDEX INDEX CONCURRENTLY i", {"i": SUE}, "no", True, "index", id="reindex-conc"
        ),
        pytest.param(
            "UPDATE users u SET a = b.a FROM b WHERE u.id = b.id",
            {"users": LockMode.ROW_EXCLUSIVE, "b": LockMode.ACCESS_SHARE},
            "no",
            False,
            "DML",
            id="update-from",
        ),
        pytest.param(
            "DELETE FROM users",
            {"users": LockMode.ROW_EXCLUSIVE},
            "no",
            True,
            "DML",
            id="delete-all",
        ),
        pytest.param(
            "SELECT * FROM users FOR UPDATE",
            {"users": LockMode.ROW_SHARE},
            "no",
            False,
            "DML",
            id="select-for-update",
        ),
        pytest.param(
            "CREATE TABLE t (id bigint, u bigint REFERENCES users (id))",
            {"users": SRE},
            "no",
            False,
            "DDL",
            id="create-table-with-reference",
        ),
        pytest.param("DROP TABLE a, b", {"a": AE, "b": AE}, "no", False, "DDL", id="drop-tables"),
        pytest.param(
            "ALTER TABLE users RENAME COLUMN a TO b",
            {"users": AE},
            "no",
            False,
            "DDL",
            id="rename-column",
        ),
        pytest.param(
            "ALTER INDEX i RENAME TO j", {"i": SUE}, "no", False, "index", id="rename-index"
        ),
        pytest.param("TRUNCATE users", {"users": AE}, "no", False, "DDL", id="truncate"),
        pytest.param(
            "VACUUM FULL users", {"users": AE}, "yes", True, "maintenance", id="vacuum-full"
        ),
        pytest.param("VACUUM users", {"users": SUE}, "no", True, "maintenance", id="vacuum"),
        pytest.param("ANALYZE users", {"users": SUE}, "no", False, "maintenance", id="analyze"),
        pytest.param("CLUSTER users", {"users": AE}, "yes", False, "maintenance", id="cluster"),
        pytest.param(
            "LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE",
            {"users": SRE},
            "no",
            False,
            "DDL",
            id="lock-table",
        ),
        pytest.param(
            "CREATE TRIGGER t BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION f()",
            {"users": SRE},
            "no",
            False,
            "DDL",
            id="create-trigger",
        ),
        pytest.param(
            "CREATE POLICY p ON users USING (true)", {"users": AE}, "no", False, "DDL", id="policy"
        ),
        pytest.param(
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            {},
            "no",
            False,
            "DDL",
            id="create-function",
        ),
        pytest.param("DO $$ BEGIN END $$", {}, "no", False, "DML", id="do-block"),
        pytest.param("BEGIN", {}, "no", False, "transaction control", id="begin"),
    ],
)
def test_statement_effect(
    sql: str, locks: dict[str, LockMode], rewrite: str, scan: bool, category: str
) -> None:
    effect = statement_effect(node(sql))
    assert {lock.relation: lock.mode for lock in effect.locks} == locks
    assert (effect.rewrite, effect.scan, effect.category) == (rewrite, scan, category)
    assert strongest_lock(node(sql)) == (max(locks.values()) if locks else None)
    assert rewrites_table(node(sql)) == rewrite


def test_any_default_rewrites_before_postgresql_11() -> None:
    sql = "ALTER TABLE users ADD COLUMN a boolean DEFAULT false"
    assert rewrites_table(node(sql), server_version=10) == "yes"
    assert rewrites_table(node(sql), server_version=11) == "no"


@pytest.mark.parametrize(
    ("sql", "described"),
    [
        pytest.param("ALTER TABLE users ADD COLUMN a int", "ACCESS EXCLUSIVE (brief)", id="brief"),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN a TYPE bigint",
            "ACCESS EXCLUSIVE (whole table rewrite)",
            id="rewrite",
        ),
        pytest.param("CREATE INDEX i ON users (a)", "SHARE (whole table scan)", id="scan"),
        pytest.param("UPDATE users SET a = 1 WHERE id = 1", "ROW EXCLUSIVE", id="row-lock"),
        pytest.param("CREATE SEQUENCE s", "none", id="none"),
    ],
)
def test_describe_lock(sql: str, described: str) -> None:
    assert statement_effect(node(sql)).describe_lock() == described


@pytest.mark.parametrize(
    ("mode", "reads", "writes"),
    [
        pytest.param(LockMode.ACCESS_EXCLUSIVE, True, True, id="access-exclusive"),
        pytest.param(LockMode.EXCLUSIVE, False, True, id="exclusive"),
        pytest.param(LockMode.SHARE_ROW_EXCLUSIVE, False, True, id="share-row-exclusive"),
        pytest.param(LockMode.SHARE, False, True, id="share"),
        pytest.param(LockMode.SHARE_UPDATE_EXCLUSIVE, False, False, id="share-update-exclusive"),
        pytest.param(LockMode.ROW_EXCLUSIVE, False, False, id="row-exclusive"),
    ],
)
def test_what_a_lock_blocks(mode: LockMode, reads: bool, writes: bool) -> None:
    assert (mode.blocks_reads, mode.blocks_writes) == (reads, writes)
    assert mode.label == mode.name.replace("_", " ")


@pytest.mark.parametrize(
    ("expr", "verdict"),
    [
        pytest.param("now()", ("non-volatile", None), id="now"),
        pytest.param("CURRENT_TIMESTAMP", ("non-volatile", None), id="current-timestamp"),
        pytest.param("'x'::text", ("non-volatile", None), id="constant"),
        pytest.param("lower('A') || 'b'", ("non-volatile", None), id="stable-function"),
        pytest.param("random()", ("volatile", "random"), id="random"),
        pytest.param("pg_catalog.gen_random_uuid()", ("volatile", "gen_random_uuid"), id="schema"),
        pytest.param("clock_timestamp()", ("volatile", "clock_timestamp"), id="clock"),
        pytest.param("nextval('s')", ("volatile", "nextval"), id="nextval"),
        pytest.param("app.make_code()", ("unknown", "app.make_code"), id="user-function"),
    ],
)
def test_default_volatility(expr: str, verdict: tuple[str, str | None]) -> None:
    assert default_volatility(node(f"SELECT {expr}").targetList[0].val) == verdict
