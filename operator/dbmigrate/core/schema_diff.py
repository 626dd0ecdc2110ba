"""A database's schema as plain data, and what differs between two of them, in words.

Pure. `db.snapshot` reads the catalog into a `SchemaSnapshot` (tables, columns with their types,
defaults and nullability, constraints, indexes with their validity, sequences, triggers, views,
functions, types, schemas, extensions); `diff_schemas` says what changed from one to the other
as lines a person reads ("index public.users_email_idx exists after down but not before",
"column public.users.x: type integer → bigint"). The rehearsal compares the schema before the
migration with the schema after its down: they must be equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# The order in which differences are told: containers before what they contain.
KINDS = (
    "schema",
    "extension",
    "type",
    "table",
    "column",
    "constraint",
    "index",
    "sequence",
    "trigger",
    "view",
    "function",
)
NONE = "none"
# An attribute's value is cut to this length in a diff line (a view's or function's definition
# can be pages long; the line only has to say that it changed).
MAX_VALUE = 120


@dataclass(frozen=True)
class CatalogObject:
    """One object of the schema: its kind, its qualified name, what is compared of it, and
    the object it belongs to (`("table", "public.users")` for a column), whose own presence
    or absence says enough."""

    kind: str
    name: str
    attrs: Mapping[str, str | None] = field(default_factory=dict)
    parent: tuple[str, str] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)


@dataclass(frozen=True)
class SchemaSnapshot:
    """The schema's objects by (kind, name)."""

    objects: Mapping[tuple[str, str], CatalogObject]

    @classmethod
    def of(cls, objects: Iterable[CatalogObject]) -> SchemaSnapshot:
        return cls({o.key: o for o in objects})

    def __len__(self) -> int:
        return len(self.objects)


def _show(value: str | None) -> str:
    if value is None:
        return NONE
    one_line = " ".join(value.split())
    return one_line if len(one_line) <= MAX_VALUE else one_line[: MAX_VALUE - 1] + "…"


def _order(key: tuple[str, str]) -> tuple[int, str]:
    kind, name = key
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), name)


def diff_schemas(
    before: SchemaSnapshot, after: SchemaSnapshot, *, when: str = "after down"
) -> list[str]:
    """What differs, one line each, containers first; empty when the schemas are equal.

    Objects of a table that is missing or extra as a whole are not listed one by one."""
    missing = before.objects.keys() - after.objects.keys()
    extra = after.objects.keys() - before.objects.keys()
    lines: list[tuple[tuple[int, str], str]] = []
    for key in missing:
        obj = before.objects[key]
        if obj.parent is None or obj.parent not in missing:
            lines.append((_order(key), f"{obj.kind} {obj.name} is gone {when} (it existed before)"))
    for key in extra:
        obj = after.objects[key]
        if obj.parent is None or obj.parent not in extra:
            lines.append((_order(key), f"{obj.kind} {obj.name} exists {when} but not before"))
    for key in before.objects.keys() & after.objects.keys():
        old, new = before.objects[key].attrs, after.objects[key].attrs
        for attr in sorted(old.keys() | new.keys()):
            if old.get(attr) != new.get(attr):
                lines.append(
                    (
                        _order(key),
                        f"{key[0]} {key[1]}: {attr} {_show(old.get(attr))} → "
                        f"{_show(new.get(attr))}",
                    )
                )
    return [line for _, line in sorted(lines)]


def capped(lines: list[str], limit: int) -> list[str]:
    """At most `limit` lines; the last says how many more there were."""
    if len(lines) <= limit:
        return lines
    return [*lines[: limit - 1], f"… and {len(lines) - limit + 1} more differences"]
