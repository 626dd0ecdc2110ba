"""The schema documentation of `dbmigrate docs`, as Markdown (seed Step 6.3).

Pure. The catalog's facts about each table (`TableFacts`, read by `db.table_facts`) and what
the migrations did to it (`core.schema_history.TableHistory`) become the seed's format:

    ## users
    ### email_verified
    - Type: boolean
    - Default: false
    - Nullable: no
    - Description: Indicates if user's email has been verified
    - Added: 2024-01-15 (Migration 20240115120000_add_email_verified_column, step expand)
    - Changed: 2024-01-16 (Migration 20240116090000_..., step contract, SET NOT NULL)
    - Indexes: idx_users_email_verified (btree, partial)

A column no counted migration added says "Added: before dbmigrate's history" (it was there
before the first migration that touched its table, or was added outside dbmigrate).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dbmigrate.core.schema_history import (
    ColumnEvent,
    Origin,
    SchemaHistory,
    Selection,
    TableHistory,
)

BEFORE_HISTORY = "before dbmigrate's history"


@dataclass(frozen=True)
class IndexFacts:
    name: str
    method: str
    unique: bool = False
    primary: bool = False
    partial: bool = False
    valid: bool = True

    def describe(self) -> str:
        notes = [self.method]
        if self.primary:
            notes.append("primary key")
        elif self.unique:
            notes.append("unique")
        if self.partial:
            notes.append("partial")
        if not self.valid:
            notes.append("INVALID")
        return f"{self.name} ({', '.join(notes)})"


@dataclass(frozen=True)
class ColumnFacts:
    """A column as the catalog has it now."""

    name: str
    type: str
    nullable: bool
    default: str | None = None
    comment: str | None = None
    identity: str | None = None  # "always" or "by default"
    generated: str | None = None  # the expression of a generated column
    indexes: tuple[IndexFacts, ...] = ()
    constraints: tuple[str, ...] = ()  # `name CHECK (...)`, `name FOREIGN KEY (...) ...`


@dataclass(frozen=True)
class TableFacts:
    """A table as the catalog has it now: `name` is schema-qualified (`public.users`)."""

    name: str
    columns: tuple[ColumnFacts, ...]
    comment: str | None = None

    @property
    def title(self) -> str:
        """The name to show: without `public.`."""
        return self.name.removeprefix("public.")


def render_schema_docs(
    tables: Sequence[tuple[TableFacts, TableHistory | None]],
    *,
    selection: Selection | None = None,
    history: SchemaHistory | None = None,
) -> str:
    """The document: a heading, each table in the order given, and notes on what was not
    counted (reverted steps, SQL that did not parse)."""
    lines = [
        "# Schema",
        "",
        "The tables dbmigrate's migrations changed, as the database's catalog has them now; "
        "per column, the Succeeded migrations (`dbmigrate.runs`) that added or changed it.",
    ]
    if not tables:
        lines += ["", "No table that a Succeeded migration changed exists."]
    for facts, table_history in tables:
        lines += ["", *render_table(facts, table_history)]
    notes = []
    if selection is not None and selection.reverted:
        notes.append(
            "Not counted, reverted since (their latest history row is `down`): "
            + ", ".join(selection.reverted)
            + "."
        )
    if history is not None and history.unreadable:
        notes.extend(f"Not read: {what}." for what in history.unreadable)
    if notes:
        lines += ["", "---", "", *notes]
    return "\n".join(lines) + "\n"


def render_table(facts: TableFacts, history: TableHistory | None) -> list[str]:
    lines = [f"## {facts.title}", ""]
    if facts.comment:
        lines.append(f"- Description: {_one_line(facts.comment)}")
    events = history.events if history is not None else []
    created = history.created if history is not None else None
    if created is None:
        lines.append(f"- Created: {BEFORE_HISTORY}")
    for event in events:
        label = "Created" if event.kind == "created" else "Renamed"
        lines.append(f"- {label}: {_origin(event.origin, event.what)}")
    for column in facts.columns:
        column_events = history.columns.get(column.name) if history is not None else None
        lines += ["", *render_column(column, column_events or [], _with_table(history))]
    return lines


def _with_table(history: TableHistory | None) -> Origin | None:
    """The creating step, when a column without events came with the table."""
    if history is None or history.all_columns_known:
        return None
    return history.created


def render_column(
    column: ColumnFacts, events: Iterable[ColumnEvent], with_table: Origin | None = None
) -> list[str]:
    lines = [f"### {column.name}", f"- Type: {column.type}"]
    if column.identity:
        lines.append(f"- Default: generated {column.identity} as identity")
    elif column.generated:
        lines.append(f"- Generated: always as ({column.generated}) stored")
    else:
        lines.append(f"- Default: {column.default if column.default is not None else 'none'}")
    lines.append(f"- Nullable: {'yes' if column.nullable else 'no'}")
    if column.comment:
        lines.append(f"- Description: {_one_line(column.comment)}")
    events = list(events)
    if not events or events[0].kind != "added":
        if with_table is not None:
            lines.append(f"- Added: {_origin(with_table, 'with the table')}")
        else:
            lines.append(f"- Added: {BEFORE_HISTORY}")
    for event in events:
        label = {"added": "Added", "changed": "Changed", "renamed": "Renamed"}[event.kind]
        lines.append(f"- {label}: {_origin(event.origin, event.what)}")
    if column.indexes:
        lines.append("- Indexes: " + ", ".join(i.describe() for i in column.indexes))
    if column.constraints:
        lines.append("- Constraints: " + "; ".join(column.constraints))
    return lines


def _origin(origin: Origin, what: str = "") -> str:
    detail = f", {what}" if what else ""
    return f"{origin.date} (Migration {origin.migration_id}, step {origin.step}{detail})"


def _one_line(text: str) -> str:
    """A comment on one line: a Markdown list item ends at a blank line."""
    return " ".join(text.split())
