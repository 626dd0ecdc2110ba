"""`dbmigrate rehearse -f migration.yaml --dsn DSN`: rehearse a migration on a scratch copy.

What the operator does before a migration with `spec.rehearsal`, from a laptop or CI: a scratch
database is created on the same server (the role needs CREATEDB; `--server-dsn` names another
server), the schema and up to `--sample-rows` rows of each table the migration touches are
copied into it, and the migration runs there: up (backfills in-process, awaitRollout and job
steps skipped), every verify, down of every step before the point of no return in reverse, the
schema compared with the one before (a readable diff when down is not the inverse of up), and
up again. The scratch database is dropped afterwards (`--keep` leaves it). The real database is
only read.

Exit codes (for CI pipelines): 0 the rehearsal passed; 1 the migration failed its rehearsal;
2 usage errors (file, DSN); 3 the rehearsal could not run (no CREATEDB, pg_dump missing or
older than the server, the server out of reach): no verdict on the migration; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dbmigrate.api.durations import parse_duration
from dbmigrate.api.rehearsal import MAX_SAMPLE_ROWS, RehearsalStatus, RehearsalStep
from dbmigrate.core.lint.documents import (
    ConfigMapDocument,
    ManifestError,
    MigrationDocument,
    parse_manifests,
    resolve_sql,
)
from dbmigrate.core.rehearsal import scratch_database_name
from dbmigrate.core.steps import ResolvedSql
from dbmigrate.db.errors import MalformedDsn, check_dsn
from dbmigrate.db.rehearsal import RehearsalRequest, RehearsalUnavailable, rehearse

PASSED, FAILED, USAGE, UNAVAILABLE, INTERRUPTED = 0, 1, 2, 3, 130


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rehearse",
        help="run a DatabaseMigration on a scratch copy of the database: up, down, up again",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-f",
        "--filename",
        required=True,
        type=Path,
        help="YAML with one DatabaseMigration (and any ConfigMaps its SQL comes from)",
    )
    p.add_argument("--dsn", help="libpq DSN; default: the DBMIGRATE_DSN environment variable")
    p.add_argument(
        "--server-dsn",
        metavar="DSN",
        help="rehearse on another server (its role needs CREATEDB); default: the --dsn one's",
    )
    p.add_argument("--name", help="which DatabaseMigration, when the file has several")
    p.add_argument(
        "--sample-rows",
        type=int,
        metavar="N",
        help="rows copied per table (0: schema only); default: spec.rehearsal.sampleRows or 1000",
    )
    p.add_argument(
        "--timeout",
        metavar="DURATION",
        help="give up after this long (e.g. 15m); default: spec.rehearsal.timeout or 15m",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave the scratch database behind to look at (it is dropped by the next rehearsal)",
    )
    p.set_defaults(handler=_handle)


def _usage(console: Console, message: str) -> int:
    console.print(f"[red]error:[/] {escape(message)}")
    return USAGE


def _handle(args: argparse.Namespace) -> int:
    console = Console(stderr=True, highlight=False)
    dsn = args.dsn or os.environ.get("DBMIGRATE_DSN")
    if not dsn:
        return _usage(console, "no database: pass --dsn or set DBMIGRATE_DSN")
    try:
        check_dsn(dsn, "--dsn" if args.dsn else "DBMIGRATE_DSN")
        if args.server_dsn:
            check_dsn(args.server_dsn, "--server-dsn")
    except MalformedDsn as exc:
        return _usage(console, str(exc))
    try:
        migrations, config_maps = parse_manifests(args.filename.read_text())
    except OSError as exc:
        return _usage(console, f"{args.filename}: {exc.strerror}")
    except ManifestError as exc:
        return _usage(console, f"{args.filename}: {exc}")
    if args.name:
        migrations = [m for m in migrations if m.name == args.name]
    if len(migrations) != 1:
        if not migrations:
            return _usage(console, f"{args.filename} has no DatabaseMigration")
        return _usage(
            console, f"{args.filename} has {len(migrations)} migrations; pass --name to choose one"
        )
    document = migrations[0]
    spec = document.resource.spec
    try:
        sql = _resolve(document, config_maps)
    except KeyError as exc:
        return _usage(console, f"{exc.args[0]} is not in {args.filename}")
    config = spec.rehearsal
    sample_rows = (
        args.sample_rows
        if args.sample_rows is not None
        else (config.sample_rows if config is not None else 1000)
    )
    if not 0 <= sample_rows <= MAX_SAMPLE_ROWS:
        return _usage(console, f"--sample-rows must be 0 to {MAX_SAMPLE_ROWS}")
    try:
        timeout = parse_duration(args.timeout or (config.timeout if config else "15m"))
    except ValueError as exc:
        return _usage(console, str(exc))
    request = RehearsalRequest(
        spec=spec,
        sql=sql,
        real_dsn=dsn,
        database=scratch_database_name(
            document.namespace or "local", document.name or "migration", spec.migration_id
        ),
        server_dsn=args.server_dsn,
        sample_rows=sample_rows,
        timeout=timeout,
        keep=args.keep,
    )
    report = Reporter(console)
    console.print(
        f"[bold]dbmigrate rehearse[/] {spec.migration_id} ({len(spec.steps)} steps, up to "
        f"{sample_rows} sample rows per table)"
    )
    try:
        verdict = asyncio.run(rehearse(request, on_stage=report.stage, on_step=report.step))
    except RehearsalUnavailable as exc:
        console.print(f"[yellow]could not rehearse:[/] {escape(str(exc))}")
        return UNAVAILABLE
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return INTERRUPTED
    report.summary(verdict, kept=args.keep)
    return PASSED if verdict.result == "Passed" else FAILED


def _resolve(
    document: MigrationDocument, config_maps: list[ConfigMapDocument]
) -> dict[str, ResolvedSql]:
    """Every sql step's statements, inline or from the file's ConfigMaps (`resolve_sql`, as
    `dbmigrate plan` and `lint` read them); a reference the file does not hold is a KeyError."""
    found, _ = resolve_sql(document, config_maps)
    out: dict[str, ResolvedSql] = {}
    for step in document.resource.spec.steps:
        if step.sql is None:
            continue
        up, down = found.get(step.name, (None, None))
        for source, text in ((step.sql.up_from, up), (step.sql.down_from, down)):
            if source is not None and text is None:
                ref = source.config_map_key_ref
                raise KeyError(f"configmap {ref.name!r} with key {ref.key!r}")
        out[step.name] = ResolvedSql(up or step.sql.up or "", down or step.sql.down)
    return out


class Reporter:
    """Progress on the terminal as the rehearsal goes, then a summary."""

    COLOURS = {"Succeeded": "green", "Failed": "red"}

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()

    def _stamp(self) -> str:
        return f"[dim]{time.monotonic() - self.started:7.1f}s[/]"

    def stage(self, text: str) -> None:
        self.console.print(f"{self._stamp()} [cyan]{'Rehearsing':<12}[/] {escape(text)}")

    def step(self, entry: RehearsalStep) -> None:
        colour = self.COLOURS.get(entry.result, "white")
        detail = f": {escape(entry.message)}" if entry.message else ""
        self.console.print(
            f"{self._stamp()} [{colour}]{entry.phase:<12}[/] {entry.step} "
            f"{entry.result.lower()} in {entry.seconds:.3f}s{detail}"
        )

    def summary(self, verdict: RehearsalStatus, *, kept: bool) -> None:
        table = Table(title=f"rehearsal {verdict.result} in {verdict.seconds or 0:.1f}s")
        for column in ("phase", "step", "seconds", "result", "detail"):
            table.add_column(column)
        for entry in verdict.steps or []:
            colour = self.COLOURS.get(entry.result, "white")
            table.add_row(
                entry.phase,
                entry.step,
                f"{entry.seconds:.3f}",
                f"[{colour}]{entry.result}[/]",
                escape(entry.message or ""),
            )
        self.console.print(table)
        copied = ", ".join(f"{t.table} {t.rows}" for t in verdict.tables or []) or "none"
        self.console.print(f"rows copied: {verdict.rows_copied} ({copied})")
        for skip in verdict.skipped or []:
            self.console.print(f"[yellow]not rehearsed:[/] {skip.step}: {escape(skip.why)}")
        if verdict.up_only:
            self.console.print(
                "[yellow]past the point of no return, checked up only:[/] "
                + ", ".join(verdict.up_only)
            )
        if verdict.schema_diff:
            self.console.print("[red]the schema after down differs from the schema before:[/]")
            for line in verdict.schema_diff:
                self.console.print(f"  - {escape(line)}")
        if kept:
            self.console.print(f"scratch database kept: {verdict.database}")
        colour = "green" if verdict.result == "Passed" else "red"
        self.console.print(f"[{colour}]{verdict.result}:[/] {escape(verdict.message or '')}")
