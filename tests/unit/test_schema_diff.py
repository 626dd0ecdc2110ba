"""The schema comparison of the rehearsal, `core.schema_diff.diff_schemas`: one case per kind
of difference.

Aspects: equal schemas give no line; objects there after down but not before, and gone after
down; attributes changed (type, nullability, default, validity, definitions cut to a line);
the objects of a table that is extra or missing as a whole are not listed one by one; lines are
ordered containers first; a long diff is capped with a count of the rest.
"""

from __future__ import annotations

import pytest

from dbmigrate.core.schema_diff import CatalogObject, SchemaSnapshot, capped, diff_schemas

USERS = ("table", "public.users")


def table(name: str = "public.users") -> CatalogObject:
    return CatalogObject("table", name, {"kind": "ordinary", "persistence": "logged"})


def column(name: str, type_: str = "integer", null: str = "nullable", default: str | None = None):  # type: ignore[no-untyped-def]
    return CatalogObject(
        "column",
        f"public.users.{name}",
        {"type": type_, "nullability": null, "default": default},
        parent=USERS,
    )


def index(name: str, definition: str = "CREATE INDEX i ON users (email)", valid: str = "valid"):  # type: ignore[no-untyped-def]
    return CatalogObject(
        "index", f"public.{name}", {"definition": definition, "validity": valid}, parent=USERS
    )


def snap(*objects: CatalogObject) -> SchemaSnapshot:
    return SchemaSnapshot.of(objects)


LONG = "SELECT " + "a, " * 100 + "b"
BASE = (table(), column("id", "bigint", "NOT NULL"), column("email", "text"))

CASES = [
    pytest.param(snap(*BASE), snap(*BASE), [], id="equal"),
    pytest.param(
        snap(*BASE),
        snap(*BASE, index("users_email_idx")),
        ["index public.users_email_idx exists after down but not before"],
        id="index-left-behind",
    ),
    pytest.param(
        snap(*BASE, index("users_email_idx")),
        snap(*BASE),
        ["index public.users_email_idx is gone after down (it existed before)"],
        id="index-dropped-by-down",
    ),
    pytest.param(
        snap(*BASE),
        snap(*BASE, column("flag", "boolean")),
        ["column public.users.flag exists after down but not before"],
        id="column-left-behind",
    ),
    pytest.param(
        snap(*BASE, column("x")),
        snap(*BASE, column("x", "bigint")),
        ["column public.users.x: type integer → bigint"],
        id="column-type",
    ),
    pytest.param(
        snap(*BASE, column("x")),
        snap(*BASE, column("x", null="NOT NULL")),
        ["column public.users.x: nullability nullable → NOT NULL"],
        id="column-nullability",
    ),
    pytest.param(
        snap(*BASE, column("x")),
        snap(*BASE, column("x", default="0")),
        ["column public.users.x: default none → 0"],
        id="column-default-added",
    ),
    pytest.param(
        snap(*BASE, index("i")),
        snap(*BASE, index("i", valid="INVALID")),
        ["index public.i: validity valid → INVALID"],
        id="index-invalid",
    ),
    pytest.param(
        snap(
            *BASE,
            CatalogObject(
                "constraint",
                "public.users.c",
                {"definition": "CHECK (id > 0)", "validity": "valid"},
                parent=USERS,
            ),
        ),
        snap(
            *BASE,
            CatalogObject(
                "constraint",
                "public.users.c",
                {"definition": "CHECK (id > 0) NOT VALID", "validity": "NOT VALID"},
                parent=USERS,
            ),
        ),
        [
            "constraint public.users.c: definition CHECK (id > 0) → CHECK (id > 0) NOT VALID",
            "constraint public.users.c: validity valid → NOT VALID",
        ],
        id="constraint-not-valid",
    ),
    pytest.param(
        snap(*BASE),
        snap(
            *BASE,
            table("public.audit"),
            CatalogObject("column", "public.audit.id", {"type": "int"}, ("table", "public.audit")),
            CatalogObject("index", "public.audit_pkey", {}, ("table", "public.audit")),
        ),
        ["table public.audit exists after down but not before"],
        id="extra-table-not-column-by-column",
    ),
    pytest.param(
        snap(*BASE),
        snap(),
        ["table public.users is gone after down (it existed before)"],
        id="missing-table-not-column-by-column",
    ),
    pytest.param(
        snap(*BASE),
        snap(
            *BASE,
            index("a_idx"),
            CatalogObject("schema", "audit"),
            CatalogObject("trigger", "public.users.t", {"definition": "…"}, parent=USERS),
            CatalogObject("sequence", "public.s", {"type": "bigint"}),
            CatalogObject("view", "public.v", {"definition": "SELECT 1"}),
        ),
        [
            "schema audit exists after down but not before",
            "index public.a_idx exists after down but not before",
            "sequence public.s exists after down but not before",
            "trigger public.users.t exists after down but not before",
            "view public.v exists after down but not before",
        ],
        id="containers-first",
    ),
    pytest.param(
        snap(CatalogObject("view", "public.v", {"definition": LONG})),
        snap(CatalogObject("view", "public.v", {"definition": "SELECT 1"})),
        [f"view public.v: definition {LONG[:119]}… → SELECT 1"],
        id="long-definition-cut",
    ),
]


@pytest.mark.parametrize(("before", "after", "expected"), CASES)
def test_diff(before: SchemaSnapshot, after: SchemaSnapshot, expected: list[str]) -> None:
    assert diff_schemas(before, after) == expected


def test_diff_says_when() -> None:
    lines = diff_schemas(snap(*BASE), snap(*BASE, index("i")), when="after the rollback")
    assert lines == ["index public.i exists after the rollback but not before"]


@pytest.mark.parametrize(
    ("count", "limit", "expected_last"),
    [
        pytest.param(3, 5, "l2", id="under"),
        pytest.param(5, 5, "l4", id="at"),
        pytest.param(9, 5, "… and 5 more differences", id="over"),
    ],
)
def test_capped(count: int, limit: int, expected_last: str) -> None:
    lines = capped([f"l{i}" for i in range(count)], limit)
    assert len(lines) == min(count, limit)
    assert lines[-1] == expected_last
