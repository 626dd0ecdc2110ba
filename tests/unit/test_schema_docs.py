"""`core.schema_history` and `core.schema_docs`: the runs folded into each column's history, and
the Markdown `dbmigrate docs` prints.

Aspects covered: which steps count (Succeeded runs only, each migration's latest run, steps
that applied, reverted steps left out and named, the day a step finished in UTC); the fold
follows renames of columns and tables, starts over after a drop, forgets indexes and
constraints dropped later (also after a rename) and ties VALIDATE to the constraint's columns;
SQL that does not parse is noted, not fatal; the rendering in the seed's format, columns from
before the history, columns that came with a table created without a column list, identity and
generated columns, comments on one line, and the notes on what was not counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from dbmigrate.core.schema_docs import ColumnFacts, IndexFacts, TableFacts, render_schema_docs
from dbmigrate.core.schema_history import (
    ColumnEvent,
    Origin,
    RecordedStep,
    build_history,
    select_steps,
)


@dataclass(frozen=True)
class Run:
    migration_id: str
    outcome: str
    finished_at: datetime
    steps: Sequence[Mapping[str, Any]] = field(default_factory=list)


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


def step(name: str, sql: str | None, state: str = "Succeeded", **more: Any) -> dict[str, Any]:
    return {"name": name, "kind": "sql" if sql else "backfill", "state": state, "sql": sql, **more}


def origins(selection_steps: Sequence[RecordedStep]) -> list[tuple[str, str, str]]:
    return [(s.origin.migration_id, s.origin.step, s.origin.date) for s in selection_steps]


@pytest.mark.parametrize(
    ("runs", "reverted", "expected", "expected_reverted"),
    [
        pytest.param(
            [Run("m1", "Succeeded", at(15), [step("expand", "SELECT 1")])],
            set(),
            [("m1", "expand", "2024-01-15")],
            (),
            id="succeeded",
        ),
        pytest.param(
            [
                Run("m1", "RolledBack", at(15), [step("expand", "SELECT 1")]),
                Run("m2", "Failed", at(16), [step("expand", "SELECT 1")]),
            ],
            set(),
            [],
            (),
            id="rolled-back-and-failed-do-not-count",
        ),
        pytest.param(
            [
                Run("m2", "Succeeded", at(17), [step("b", "SELECT 1")]),
                Run("m1", "Succeeded", at(15), [step("old", "SELECT 1")]),
                Run("m1", "Succeeded", at(16), [step("new", "SELECT 1")]),
            ],
            set(),
            [("m1", "new", "2024-01-16"), ("m2", "b", "2024-01-17")],
            (),
            id="latest-run-per-migration-oldest-first",
        ),
        pytest.param(
            [
                Run(
                    "m1",
                    "Succeeded",
                    at(15),
                    [
                        step("backfill", None),
                        step("release", None, state="Skipped"),
                        step("skipped", "SELECT 1", state="Skipped"),
                        step("blank", "  "),
                        step("ddl", "SELECT 1"),
                    ],
                )
            ],
            set(),
            [("m1", "ddl", "2024-01-15")],
            (),
            id="only-sql-steps-that-applied",
        ),
        pytest.param(
            [
                Run("m1", "Succeeded", at(15), [step("a", "SELECT 1"), step("b", "SELECT 1")]),
                Run("m2", "Succeeded", at(16), [step("a", "SELECT 1")]),
            ],
            {("m1", "b"), ("m2", "a")},
            [("m1", "a", "2024-01-15")],
            ("m1", "m2"),
            id="reverted-steps-left-out",
        ),
        pytest.param(
            [
                Run(
                    "m1",
                    "Succeeded",
                    at(20),
                    [
                        step("a", "SELECT 1", finishedAt="2024-01-15T23:30:00-02:00"),
                        step("b", "SELECT 1", finishedAt="not a time"),
                    ],
                ),
                Run(
                    "m2", "Succeeded", datetime(2024, 1, 21, 1, tzinfo=timezone(timedelta(hours=3)))
                ),
            ],
            set(),
            [("m1", "a", "2024-01-16"), ("m1", "b", "2024-01-20")],
            (),
            id="day-of-the-step-in-utc",
        ),
    ],
)
def test_select_steps(
    runs: list[Run],
    reverted: set[tuple[str, str]],
    expected: list[tuple[str, str, str]],
    expected_reverted: tuple[str, ...],
) -> None:
    selection = select_steps(runs, reverted)
    assert origins(selection.steps) == expected
    assert selection.reverted == expected_reverted


def recorded(*steps: tuple[str, str, str]) -> list[RecordedStep]:
    """(migration, step, sql), a day apart from 2024-01-10 on."""
    return [
        RecordedStep(Origin(m, s, f"2024-01-{10 + i}"), sql) for i, (m, s, sql) in enumerate(steps)
    ]


def events(sql_steps: list[RecordedStep], table: str) -> dict[str, list[tuple[str, str, str]]]:
    history = build_history(sql_steps).tables[table]
    return {
        column: [(e.kind, e.origin.migration_id, e.what) for e in column_events]
        for column, column_events in history.columns.items()
    }


@pytest.mark.parametrize(
    ("steps", "table", "expected"),
    [
        pytest.param(
            recorded(
                ("m1", "expand", "ALTER TABLE users ADD COLUMN name text"),
                ("m2", "rename", "ALTER TABLE users RENAME COLUMN name TO full_name"),
                ("m3", "nn", "ALTER TABLE users ALTER full_name SET NOT NULL"),
            ),
            "users",
            {
                "full_name": [
                    ("added", "m1", ""),
                    ("renamed", "m2", "from name"),
                    ("changed", "m3", "SET NOT NULL"),
                ]
            },
            id="column-rename-followed",
        ),
        pytest.param(
            recorded(
                ("m1", "create", "CREATE TABLE app.t (id int, v text)"),
                ("m2", "rename", "ALTER TABLE app.t RENAME TO things"),
                ("m3", "type", "ALTER TABLE app.things ALTER v TYPE varchar(10)"),
            ),
            "app.things",
            {
                "id": [("added", "m1", "with the table")],
                "v": [("added", "m1", "with the table"), ("changed", "m3", "TYPE varchar(10)")],
            },
            id="table-rename-followed",
        ),
        pytest.param(
            recorded(
                ("m1", "a", "ALTER TABLE t ADD COLUMN c int DEFAULT 1"),
                ("m2", "b", "ALTER TABLE t ALTER c DROP DEFAULT"),
                ("m3", "c", "ALTER TABLE t DROP COLUMN c"),
                ("m4", "d", "ALTER TABLE t ADD COLUMN c bigint"),
            ),
            "t",
            {"c": [("added", "m4", "")]},
            id="dropped-and-added-again-starts-over",
        ),
        pytest.param(
            recorded(
                (
                    "m1",
                    "check",
                    "ALTER TABLE users ADD CONSTRAINT nn CHECK (v IS NOT NULL) NOT VALID",
                ),
                (
                    "m1",
                    "contract",
                    "ALTER TABLE users VALIDATE CONSTRAINT nn; "
                    "ALTER TABLE users ALTER COLUMN v SET NOT NULL; "
                    "ALTER TABLE users DROP CONSTRAINT nn;",
                ),
                (
                    "m2",
                    "fk",
                    "ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (o) REFERENCES o (id)",
                ),
                ("m2", "fk-valid", "ALTER TABLE users VALIDATE CONSTRAINT fk"),
            ),
            "users",
            {
                "v": [("changed", "m1", "SET NOT NULL")],
                "o": [
                    ("changed", "m2", "ADD CONSTRAINT fk FOREIGN KEY (o) REFERENCES o (id)"),
                    ("changed", "m2", "VALIDATE CONSTRAINT fk"),
                ],
            },
            id="seed-not-null-recipe-and-validate",
        ),
        pytest.param(
            recorded(
                ("m1", "i", "CREATE INDEX i1 ON users (a); CREATE INDEX i2 ON users (a)"),
                ("m2", "r", "ALTER INDEX i2 RENAME TO i3; ALTER TABLE users RENAME TO u"),
                ("m3", "d", "DROP INDEX i1; DROP INDEX CONCURRENTLY i3"),
            ),
            "u",
            {"a": []},
            id="dropped-indexes-forgotten-after-renames",
        ),
        pytest.param(
            recorded(
                ("m1", "c", "ALTER TABLE t ADD CONSTRAINT k UNIQUE (a)"),
                ("m2", "r", "ALTER TABLE t RENAME CONSTRAINT k TO k2; ALTER TABLE t RENAME a TO b"),
                ("m3", "v", "ALTER TABLE t VALIDATE CONSTRAINT k2"),
            ),
            "t",
            {
                "b": [
                    ("changed", "m1", "ADD CONSTRAINT k UNIQUE (a)"),
                    ("renamed", "m2", "from a"),
                    ("changed", "m3", "VALIDATE CONSTRAINT k2"),
                ]
            },
            id="renamed-constraint-on-renamed-column",
        ),
    ],
)
def test_build_history(
    steps: list[RecordedStep], table: str, expected: dict[str, list[tuple[str, str, str]]]
) -> None:
    assert events(steps, table) == expected


def test_dropped_table_is_forgotten_and_unparsable_sql_noted() -> None:
    history = build_history(
        recorded(
            ("m1", "stage", "CREATE TABLE staging (id int); CREATE INDEX s ON staging (id)"),
            ("m2", "broken", "ALTER TABLE users ADD COLUMN"),
            ("m3", "cleanup", "DROP TABLE staging"),
        )
    )
    assert history.tables == {}
    assert history.indexes == {}
    assert len(history.unreadable) == 1
    assert history.unreadable[0].startswith("migration m2 step broken: syntax error")


SEED_COLUMN = ColumnFacts(
    name="email_verified",
    type="boolean",
    nullable=False,
    default="false",
    comment="Indicates if user's email\nhas been verified",
    indexes=(IndexFacts("idx_users_email_verified", "btree", partial=True),),
)


def test_seed_format() -> None:
    history = build_history(
        [
            RecordedStep(
                Origin("20240115120000_add_email_verified_column", "expand", "2024-01-15"),
                "ALTER TABLE users ADD COLUMN email_verified boolean",
            ),
            RecordedStep(
                Origin("20240116090000_email_verified_not_null", "contract", "2024-01-16"),
                "ALTER TABLE users ALTER COLUMN email_verified SET NOT NULL",
            ),
        ]
    )
    users = TableFacts(
        "public.users",
        (
            ColumnFacts(
                "id",
                "bigint",
                nullable=False,
                identity="by default",
                indexes=(IndexFacts("users_pkey", "btree", unique=True, primary=True),),
            ),
            SEED_COLUMN,
        ),
        comment="Shop accounts",
    )
    assert render_schema_docs([(users, history.tables["users"])]) == (
        "# Schema\n"
        "\n"
        "The tables dbmigrate's migrations changed, as the database's catalog has them now; per "
        "column, the Succeeded migrations (`dbmigrate.runs`) that added or changed it.\n"
        "\n"
        "## users\n"
        "\n"
        "- Description: Shop accounts\n"
        "- Created: before dbmigrate's history\n"
        "\n"
        "### id\n"
        "- Type: bigint\n"
        "- Default: generated by default as identity\n"
        "- Nullable: no\n"
        "- Added: before dbmigrate's history\n"
        "- Indexes: users_pkey (btree, primary key)\n"
        "\n"
        "### email_verified\n"
        "- Type: boolean\n"
        "- Default: false\n"
        "- Nullable: no\n"
        "- Description: Indicates if user's email has been verified\n"
        "- Added: 2024-01-15 (Migration 20240115120000_add_email_verified_column, step expand)\n"
        "- Changed: 2024-01-16 (Migration 20240116090000_email_verified_not_null, step contract, "
        "SET NOT NULL)\n"
        "- Indexes: idx_users_email_verified (btree, partial)\n"
    )


def test_table_created_without_a_column_list() -> None:
    history = build_history(
        recorded(
            ("m1", "ctas", "CREATE TABLE billing.totals AS SELECT 1 AS n"),
            ("m2", "rename", "ALTER TABLE billing.totals RENAME TO sums"),
        )
    )
    sums = TableFacts(
        "billing.sums",
        (
            ColumnFacts("n", "integer", nullable=True, generated=None),
            ColumnFacts("twice", "integer", nullable=True, generated="(n * 2)"),
        ),
    )
    text = render_schema_docs([(sums, history.tables["billing.sums"])])
    assert "## billing.sums\n\n- Created: 2024-01-10 (Migration m1, step ctas)\n" in text
    assert "- Renamed: 2024-01-11 (Migration m2, step rename, from billing.totals)\n" in text
    assert (
        "### n\n- Type: integer\n- Default: none\n- Nullable: yes\n"
        "- Added: 2024-01-10 (Migration m1, step ctas, with the table)\n"
    ) in text
    assert "### twice\n- Type: integer\n- Generated: always as ((n * 2)) stored\n" in text


def test_notes_on_what_was_not_counted() -> None:
    selection = select_steps(
        [
            Run("m1", "Succeeded", at(15), [step("bad", "ALTER TABLE")]),
            Run("m2", "Succeeded", at(16), [step("x", "ALTER TABLE t ADD c int")]),
        ],
        {("m2", "x")},
    )
    history = build_history(selection.steps)
    text = render_schema_docs([], selection=selection, history=history)
    assert "No table that a Succeeded migration changed exists." in text
    assert "Not counted, reverted since (their latest history row is `down`): m2." in text
    assert "Not read: migration m1 step bad: syntax error" in text


def test_column_without_events_but_the_table_created_with_its_columns() -> None:
    history = build_history(recorded(("m1", "create", "CREATE TABLE t (a int)")))
    t = TableFacts("public.t", (ColumnFacts("a", "integer", True), ColumnFacts("b", "text", True)))
    text = render_schema_docs([(t, history.tables["t"])])
    # `b` was not in CREATE TABLE's list: added later, outside dbmigrate's history.
    assert "### b\n- Type: text\n- Default: none\n- Nullable: yes\n- Added: before" in text
    assert history.tables["t"].columns["a"] == [
        ColumnEvent("added", Origin("m1", "create", "2024-01-10"), "with the table")
    ]
