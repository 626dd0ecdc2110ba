"""`dbmigrate docs --dsn DSN [--table T …] [-o FILE]`: the schema documentation (seed Step 6.3).

Renders as Markdown the current schema of the tables migrations changed — per column its type,
default, nullability, comment, indexes and constraints from the catalog, and the migrations that
added or changed it, from the database's own log: the up SQL of the steps in `dbmigrate.runs`
(Succeeded runs only), parsed, without the steps `dbmigrate.history` says were reverted since.
Every table a counted migration changed and that still exists is documented (under its current
name, after renames), or the `--table` ones. The database is only read; the DSN is never
printed.

Exit codes: 0 written; 1 the database could not be read, or a `--table` does not exist; 2 usage
errors (no DSN, a malformed one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

from dbmigrate.core.schema_docs import TableFacts, render_schema_docs
from dbmigrate.core.schema_history import TableHistory, build_history, select_steps
from dbmigrate.core.sqlast import table_key
from dbmigrate.db.errors import MalformedDsn, check_dsn, first_line, redact_dsn
from dbmigrate.db.history import read_reverted_steps
from dbmigrate.db.runs import read_runs
from dbmigrate.db.table_facts import read_table_facts, regclass_text

DSN_ENV = "DBMIGRATE_DSN"
WRITTEN, UNREADABLE, USAGE = 0, 1, 2


class MissingTables(LookupError):
    """`--table` names that are no table of the database."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "docs",
        help="document the tables migrations changed, per column with the migration that "
        "added or changed it (Markdown)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dsn", help=f"libpq DSN; default: the {DSN_ENV} environment variable")
    p.add_argument(
        "--table",
        action="append",
        metavar="TABLE",
        help="document this table (as SQL names it: users, billing.invoices); repeatable; "
        "default: every table a Succeeded migration changed",
    )
    p.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    dsn = args.dsn or os.environ.get(DSN_ENV)
    if not dsn:
        print(f"dbmigrate docs: no database: pass --dsn or set {DSN_ENV}", file=sys.stderr)
        return USAGE
    try:
        check_dsn(dsn, "--dsn" if args.dsn else DSN_ENV)
    except MalformedDsn as exc:
        print(f"dbmigrate docs: {exc}", file=sys.stderr)
        return USAGE
    try:
        text, count = asyncio.run(document(dsn, args.table or ()))
    except psycopg.Error as exc:
        message = redact_dsn(first_line(exc), dsn)
        print(f"dbmigrate docs: cannot read the database: {message}", file=sys.stderr)
        return UNREADABLE
    except MissingTables as exc:
        print(f"dbmigrate docs: no such table: {exc}", file=sys.stderr)
        return UNREADABLE
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"dbmigrate docs: {count} table(s) written to {args.output}", file=sys.stderr)
    return WRITTEN


async def document(dsn: str, tables: Sequence[str] = ()) -> tuple[str, int]:
    """The Markdown and how many tables it documents, read in one read-only transaction (one
    snapshot of runs, history and catalog; psycopg ignores read_only in autocommit)."""
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        await conn.set_read_only(True)
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        selection = select_steps(await read_runs(conn), await read_reverted_steps(conn))
        history = build_history(selection.steps)
        # Each table the history knows, found under the name the migrations' SQL gave it.
        known = await read_table_facts(conn, [(k, regclass_text(k)) for k in history.tables])
        if tables:
            asked = await read_table_facts(conn, [(t, t) for t in tables])
            missing = [t for t in tables if t not in asked]
            if missing:
                raise MissingTables(", ".join(missing))
            chosen = [asked[t] for t in dict.fromkeys(tables)]
        else:
            chosen = list(known.values())
    by_name = _history_by_table(known, history.tables)
    entries: list[tuple[TableFacts, TableHistory | None]] = []
    for facts in sorted({f.name: f for f in chosen}.values(), key=lambda f: f.title):
        entries.append((facts, by_name.get(facts.name)))
    return render_schema_docs(entries, selection=selection, history=history), len(entries)


def _history_by_table(
    known: dict[str, TableFacts], histories: dict[str, TableHistory]
) -> dict[str, TableHistory]:
    """History by the table's qualified name. Two keys may resolve to one table (`users` and
    `app.users` with search_path app): the one that names it as the catalog does wins."""
    out: dict[str, TableHistory] = {}
    for key, facts in known.items():
        if facts.name not in out or key == table_key(facts.name):
            out[facts.name] = histories[key]
    return out
