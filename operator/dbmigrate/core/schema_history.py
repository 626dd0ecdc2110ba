"""Which migration added or changed each column: the runs of `dbmigrate.runs`, folded.

Pure. `select_steps` picks what counts: the SQL steps of each migration's latest Succeeded run,
oldest migration first, without the steps whose latest `dbmigrate.history` row is `down`
(reverted since: their changes are gone). `build_history` replays the steps' changes
(`core.schema_changes`) in that order into one `TableHistory` per table, following renames of
tables and columns, and forgetting what a later step dropped: a dropped column's history ends
with it (added again, it starts over), a dropped table's too, and an index or constraint that
was dropped no longer counts as a change of its columns.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from dbmigrate.core.schema_changes import SchemaChange, parse_changes
from dbmigrate.core.statements import SqlSyntaxError

# A step in these states did not apply its SQL in that run.
_NOT_APPLIED = frozenset({"Pending", "Skipped", "Failed", "RolledBack"})


class RunLike(Protocol):
    """What is read of a `dbmigrate.runs` row (`db.runs.RunRecord`)."""

    @property
    def migration_id(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def finished_at(self) -> datetime: ...
    @property
    def steps(self) -> Sequence[Mapping[str, Any]]: ...


@dataclass(frozen=True)
class Origin:
    """Where a change comes from: a migration's step, and the day (UTC) it finished."""

    migration_id: str
    step: str
    date: str


@dataclass(frozen=True)
class RecordedStep:
    origin: Origin
    sql: str


@dataclass(frozen=True)
class Selection:
    """The steps that count, oldest first, and the migrations with reverted steps."""

    steps: tuple[RecordedStep, ...]
    reverted: tuple[str, ...]


def select_steps(runs: Iterable[RunLike], reverted: Collection[tuple[str, str]]) -> Selection:
    """The SQL steps of each migration's latest Succeeded run, runs oldest first; `reverted`
    holds (migration id, step) pairs whose latest history row is `down`."""
    latest: dict[str, RunLike] = {}
    for run in runs:
        if run.outcome != "Succeeded":
            continue
        known = latest.get(run.migration_id)
        if known is None or run.finished_at >= known.finished_at:
            latest[run.migration_id] = run
    steps: list[RecordedStep] = []
    undone: set[str] = set()
    for run in sorted(latest.values(), key=lambda r: r.finished_at):
        for step in run.steps:
            name, sql = str(step.get("name") or ""), step.get("sql")
            if not isinstance(sql, str) or not sql.strip():
                continue
            if step.get("state") in _NOT_APPLIED:
                continue
            if (run.migration_id, name) in reverted:
                undone.add(run.migration_id)
                continue
            day = _day(step.get("finishedAt")) or _day(run.finished_at)
            steps.append(RecordedStep(Origin(run.migration_id, name, day or "?"), sql))
    return Selection(tuple(steps), tuple(sorted(undone)))


def _day(value: object) -> str | None:
    """`2024-01-15` (UTC) of a timestamp or an ISO 8601 string; None when it is neither."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.date().isoformat()


EventKind = Literal["added", "changed", "renamed"]


@dataclass(frozen=True)
class ColumnEvent:
    """One thing a migration did to a column. `index`/`constraint`: the object the change
    was about, so that dropping it later forgets the change."""

    kind: EventKind
    origin: Origin
    what: str = ""
    index: str | None = None
    constraint: str | None = None


@dataclass(frozen=True)
class TableEvent:
    kind: Literal["created", "renamed"]
    origin: Origin
    what: str = ""


@dataclass
class TableHistory:
    """What the counted migrations did to one table, under its current name.

    `all_columns_known`: when the table was created by a migration, whether the statement
    listed all its columns (not with CREATE TABLE AS, LIKE, PARTITION OF): if not, a column
    without events came with the table.
    """

    events: list[TableEvent] = field(default_factory=list)
    columns: dict[str, list[ColumnEvent]] = field(default_factory=dict)
    constraints: dict[str, tuple[str, ...]] = field(default_factory=dict)
    all_columns_known: bool = True

    @property
    def created(self) -> Origin | None:
        return next((e.origin for e in self.events if e.kind == "created"), None)


@dataclass
class SchemaHistory:
    """Every table's history by key (`sqlast.table_key`), the tables of the indexes migrations
    created, and the steps whose SQL could not be read."""

    tables: dict[str, TableHistory] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


def build_history(steps: Iterable[RecordedStep]) -> SchemaHistory:
    """Replay the steps' changes, in order."""
    history = SchemaHistory()
    for step in steps:
        try:
            changes = parse_changes(step.sql)
        except SqlSyntaxError as exc:
            history.unreadable.append(
                f"migration {step.origin.migration_id} step {step.origin.step}: {exc}"
            )
            continue
        for change in changes:
            apply_change(history, change, step.origin)
    return history


def apply_change(history: SchemaHistory, change: SchemaChange, origin: Origin) -> None:
    """One change into the history (the table's entry is made on first mention)."""
    kind = change.kind
    if kind == "create-table":
        table = TableHistory(all_columns_known=change.all_columns)
        table.events.append(TableEvent("created", origin))
        for column in change.columns:
            table.columns[column] = [ColumnEvent("added", origin, "with the table")]
        history.tables[change.table] = table
        _forget_indexes_of(history, change.table)
    elif kind == "drop-table":
        history.tables.pop(change.table, None)
        _forget_indexes_of(history, change.table)
    elif kind == "rename-table" and change.new_name:
        table = history.tables.pop(change.table, TableHistory())
        table.events.append(TableEvent("renamed", origin, f"from {change.table}"))
        history.tables[change.new_name] = table
        for index, owner in history.indexes.items():
            if owner == change.table:
                history.indexes[index] = change.new_name
    elif kind in ("rename-index", "drop-index"):
        _index_change(history, change)
    else:
        _column_change(history.tables.setdefault(change.table, TableHistory()), change, origin)
        if kind == "add-index" and change.name:
            history.indexes[change.name] = change.table


def _column_change(table: TableHistory, change: SchemaChange, origin: Origin) -> None:
    kind = change.kind
    if kind == "add-column":
        table.columns[change.columns[0]] = [ColumnEvent("added", origin)]
    elif kind == "drop-column":
        table.columns.pop(change.columns[0], None)
    elif kind == "alter-column":
        _event(table, change.columns[0], ColumnEvent("changed", origin, change.what))
    elif kind == "rename-column" and change.new_name:
        old = change.columns[0]
        events = table.columns.pop(old, [])
        events.append(ColumnEvent("renamed", origin, f"from {old}"))
        table.columns[change.new_name] = events
        for name, columns in table.constraints.items():
            table.constraints[name] = tuple(change.new_name if c == old else c for c in columns)
    elif kind == "add-index":
        for column in change.columns:
            event = ColumnEvent("changed", origin, change.what, index=change.name)
            _event(table, column, event)
    elif kind == "add-constraint":
        if change.name:
            table.constraints[change.name] = change.columns
        for column in change.columns:
            what = f"ADD CONSTRAINT {change.name} {change.what}" if change.name else change.what
            _event(table, column, ColumnEvent("changed", origin, what, constraint=change.name))
    elif kind == "validate-constraint" and change.name:
        for column in table.constraints.get(change.name, ()):
            what = f"VALIDATE CONSTRAINT {change.name}"
            _event(table, column, ColumnEvent("changed", origin, what, constraint=change.name))
    elif kind == "rename-constraint" and change.name and change.new_name:
        table.constraints[change.new_name] = table.constraints.pop(change.name, ())
        _rename_in_events(table, change.name, change.new_name, "constraint")
    elif kind == "drop-constraint" and change.name:
        table.constraints.pop(change.name, None)
        _forget(table, lambda e: e.constraint == change.name)


def _index_change(history: SchemaHistory, change: SchemaChange) -> None:
    name = change.name or ""
    owner = history.indexes.pop(name, None)
    table = history.tables.get(owner) if owner is not None else None
    if change.kind == "rename-index" and change.new_name:
        if owner is not None:
            history.indexes[change.new_name] = owner
        if table is not None:
            _rename_in_events(table, name, change.new_name, "index")
    elif table is not None:  # drop-index
        _forget(table, lambda e: e.index == name)


def _forget_indexes_of(history: SchemaHistory, table: str) -> None:
    for index in [i for i, owner in history.indexes.items() if owner == table]:
        del history.indexes[index]


def _event(table: TableHistory, column: str, event: ColumnEvent) -> None:
    table.columns.setdefault(column, []).append(event)


def _forget(table: TableHistory, gone: Any) -> None:
    for column, events in table.columns.items():
        table.columns[column] = [e for e in events if not gone(e)]


def _rename_in_events(
    table: TableHistory, old: str, new: str, what: Literal["index", "constraint"]
) -> None:
    """Keep the renamed object's events linked to it, so that dropping it by its new name
    forgets them."""
    for column, events in table.columns.items():
        table.columns[column] = [
            ColumnEvent(e.kind, e.origin, e.what, new, e.constraint)
            if what == "index" and e.index == old
            else ColumnEvent(e.kind, e.origin, e.what, e.index, new)
            if what == "constraint" and e.constraint == old
            else e
            for e in events
        ]
