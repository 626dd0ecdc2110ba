"""`core.schema_changes`: a step's SQL as changes to tables and columns.

Aspects covered: tables created (with all their columns listed, or not: LIKE, PARTITION OF,
CREATE TABLE AS), renamed, moved to another schema and dropped; columns added, changed (type,
default set and dropped, NOT NULL set and dropped, identity), renamed and dropped; indexes
created (key, expression, INCLUDE and predicate columns; unique; unnamed; schema-qualified),
renamed and dropped; constraints added (check, foreign key without its target's columns,
unique with INCLUDE, primary key), validated, renamed and dropped; several statements and
several sub-commands in order; statements that change no table give nothing; SQL that does not
parse is an error.
"""

from __future__ import annotations

import pytest

from dbmigrate.core.schema_changes import SchemaChange, parse_changes
from dbmigrate.core.statements import SqlSyntaxError

C = SchemaChange


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            "ALTER TABLE users ADD COLUMN email_verified boolean DEFAULT false;",
            [
                C(
                    "add-column",
                    "users",
                    ("email_verified",),
                    what="email_verified boolean DEFAULT FALSE",
                )
            ],
            id="add-column",
        ),
        pytest.param(
            "ALTER TABLE public.users ADD COLUMN IF NOT EXISTS n int NOT NULL",
            [C("add-column", "users", ("n",), what="n integer NOT NULL")],
            id="add-column-public-qualified",
        ),
        pytest.param(
            "ALTER TABLE billing.invoices ALTER COLUMN total TYPE numeric(12,2) USING total::int",
            [C("alter-column", "billing.invoices", ("total",), what="TYPE numeric(12, 2)")],
            id="alter-type-in-schema",
        ),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN a SET DEFAULT now(), ALTER COLUMN b DROP DEFAULT",
            [
                C("alter-column", "users", ("a",), what="SET DEFAULT now()"),
                C("alter-column", "users", ("b",), what="DROP DEFAULT"),
            ],
            id="set-and-drop-default",
        ),
        pytest.param(
            "ALTER TABLE users ALTER email_verified SET NOT NULL; "
            "ALTER TABLE users ALTER nickname DROP NOT NULL;",
            [
                C("alter-column", "users", ("email_verified",), what="SET NOT NULL"),
                C("alter-column", "users", ("nickname",), what="DROP NOT NULL"),
            ],
            id="set-and-drop-not-null",
        ),
        pytest.param(
            "ALTER TABLE users ALTER COLUMN id DROP IDENTITY",
            [C("alter-column", "users", ("id",), what="DROP IDENTITY")],
            id="drop-identity",
        ),
        pytest.param(
            "ALTER TABLE users RENAME COLUMN name TO full_name",
            [C("rename-column", "users", ("name",), new_name="full_name")],
            id="rename-column",
        ),
        pytest.param(
            "ALTER TABLE users DROP COLUMN IF EXISTS legacy",
            [C("drop-column", "users", ("legacy",))],
            id="drop-column",
        ),
        pytest.param(
            "CREATE TABLE audit.events (id bigint PRIMARY KEY, at timestamptz NOT NULL, "
            "UNIQUE (at))",
            [C("create-table", "audit.events", ("id", "at"))],
            id="create-table",
        ),
        pytest.param(
            "CREATE TABLE archive (LIKE users, archived_at timestamptz)",
            [C("create-table", "archive", ("archived_at",), all_columns=False)],
            id="create-table-like",
        ),
        pytest.param(
            "CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM (1) TO (2)",
            [C("create-table", "m_2024", (), all_columns=False)],
            id="create-partition",
        ),
        pytest.param(
            "CREATE TABLE totals (user_id, n) AS SELECT user_id, count(*) FROM orders GROUP BY 1",
            [C("create-table", "totals", ("user_id", "n"), what="AS query", all_columns=False)],
            id="create-table-as",
        ),
        pytest.param(
            "ALTER TABLE users RENAME TO accounts",
            [C("rename-table", "users", new_name="accounts")],
            id="rename-table",
        ),
        pytest.param(
            "ALTER TABLE billing.inv RENAME TO invoices",
            [C("rename-table", "billing.inv", new_name="billing.invoices")],
            id="rename-table-keeps-schema",
        ),
        pytest.param(
            "ALTER TABLE users SET SCHEMA app",
            [C("rename-table", "users", new_name="app.users")],
            id="set-schema",
        ),
        pytest.param(
            "DROP TABLE IF EXISTS migration_staging, public.tmp",
            [C("drop-table", "migration_staging"), C("drop-table", "tmp")],
            id="drop-tables",
        ),
        pytest.param(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_users_email_verified "
            "ON users (email_verified) WHERE email_verified;",
            [
                C(
                    "add-index",
                    "users",
                    ("email_verified",),
                    name="idx_users_email_verified",
                    what="CREATE INDEX idx_users_email_verified USING btree",
                )
            ],
            id="create-index-partial",
        ),
        pytest.param(
            "CREATE UNIQUE INDEX users_email ON users USING hash (lower(email)) INCLUDE (id) "
            "WHERE deleted_at IS NULL",
            [
                C(
                    "add-index",
                    "users",
                    ("email", "id", "deleted_at"),
                    name="users_email",
                    what="CREATE UNIQUE INDEX users_email USING hash",
                )
            ],
            id="create-index-expression-include-predicate",
        ),
        pytest.param(
            "CREATE INDEX ON billing.invoices (customer_id)",
            [
                C(
                    "add-index",
                    "billing.invoices",
                    ("customer_id",),
                    what="CREATE INDEX USING btree",
                )
            ],
            id="create-index-unnamed",
        ),
        pytest.param(
            "CREATE INDEX inv_due ON billing.invoices (due)",
            [
                C(
                    "add-index",
                    "billing.invoices",
                    ("due",),
                    name="billing.inv_due",
                    what="CREATE INDEX inv_due USING btree",
                )
            ],
            id="create-index-in-schema",
        ),
        pytest.param(
            "ALTER INDEX billing.inv_due RENAME TO invoices_due; DROP INDEX CONCURRENTLY x",
            [
                C("rename-index", "", name="billing.inv_due", new_name="billing.invoices_due"),
                C("drop-index", "", name="x"),
            ],
            id="rename-and-drop-index",
        ),
        pytest.param(
            "ALTER TABLE users ADD CONSTRAINT users_email_verified_not_null "
            "CHECK (email_verified IS NOT NULL) NOT VALID",
            [
                C(
                    "add-constraint",
                    "users",
                    ("email_verified",),
                    name="users_email_verified_not_null",
                    what="CHECK (email_verified IS NOT NULL) NOT VALID",
                )
            ],
            id="add-check-not-valid",
        ),
        pytest.param(
            "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) "
            "REFERENCES users (id)",
            [
                C(
                    "add-constraint",
                    "orders",
                    ("user_id",),
                    name="orders_user_fk",
                    what="FOREIGN KEY (user_id) REFERENCES users (id)",
                )
            ],
            id="add-foreign-key",
        ),
        pytest.param(
            'ALTER TABLE users ADD CONSTRAINT "Email Key" UNIQUE (email) INCLUDE (id), '
            "ADD PRIMARY KEY (id)",
            [
                C(
                    "add-constraint",
                    "users",
                    ("email", "id"),
                    name="Email Key",
                    what="UNIQUE (email) INCLUDE (id)",
                ),
                C("add-constraint", "users", ("id",), what="PRIMARY KEY (id)"),
            ],
            id="add-unique-and-unnamed-primary-key",
        ),
        pytest.param(
            "ALTER TABLE users VALIDATE CONSTRAINT c1; ALTER TABLE users DROP CONSTRAINT c1; "
            "ALTER TABLE users RENAME CONSTRAINT c2 TO c3",
            [
                C("validate-constraint", "users", name="c1"),
                C("drop-constraint", "users", name="c1"),
                C("rename-constraint", "users", name="c2", new_name="c3"),
            ],
            id="validate-drop-rename-constraint",
        ),
        pytest.param(
            "UPDATE users SET a = 1; CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'; "
            "DO $$ BEGIN ALTER TABLE users ADD COLUMN x int; END $$; "
            "ALTER TABLE users SET (fillfactor = 90); ANALYZE users; "
            "ALTER VIEW v RENAME COLUMN a TO b",
            [],
            id="no-shape-change",
        ),
    ],
)
def test_parse_changes(sql: str, expected: list[SchemaChange]) -> None:
    assert parse_changes(sql) == expected


def test_sql_that_does_not_parse() -> None:
    with pytest.raises(SqlSyntaxError):
        parse_changes("ALTER TABLE users ADD COLUMN")
