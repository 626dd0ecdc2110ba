"""`dbmigrate plan -f migration.yaml [--dsn DSN]`: the migration plan and rollback strategy.

Prints Markdown (see `core.plan`). With a DSN (`--dsn` or the environment variable
`DBMIGRATE_DSN`) it reads the row and size estimates of the tables the steps touch and the
server's version from the database; the DSN itself is never printed. Exit status: 0 plan
printed, 1 the database could not be read, 2 usage error (missing file, bad YAML, invalid or
no DatabaseMigration).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dbmigrate.core.batching import format_count
from dbmigrate.core.checklist import approval_of
from dbmigrate.core.lint import DEFAULT_SERVER_VERSION
from dbmigrate.core.lint.documents import ManifestError, parse_manifests, resolve_sql
from dbmigrate.core.plan import TableEstimate, build_plan, render_plan, tables_touched
from dbmigrate.db import catalog
from dbmigrate.db.errors import MalformedDsn, check_dsn

DSN_ENV = "DBMIGRATE_DSN"
# Rows per second assumed for backfill estimates when none is given: deliberately below what
# keyset batches reach on an idle 2-core server (BENCHMARKS.md), since production tables have
# more indexes and live traffic.
ASSUMED_BACKFILL_RATE = 50_000.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan",
        help="print the migration plan and rollback strategy (Markdown)",
        description=(
            "Print the Migration Plan and Rollback Strategy of a DatabaseMigration: step types, "
            "locks, table rewrites, reversibility, point of no return; with a DSN also row "
            "estimates and the estimated backfill time."
        ),
    )
    p.add_argument("-f", "--file", required=True, type=Path, help="DatabaseMigration YAML")
    p.add_argument(
        "--dsn",
        default=None,
        help=f"database to read estimates from (default: ${DSN_ENV}); never printed",
    )
    p.add_argument(
        "--backfill-rate",
        type=float,
        default=None,
        metavar="ROWS_PER_S",
        help="backfill rate for time estimates "
        f"(default: {format_count(ASSUMED_BACKFILL_RATE)}, assumed)",
    )
    p.add_argument(
        "--server-version",
        type=int,
        default=None,
        metavar="MAJOR",
        help=f"PostgreSQL major version (default: read with --dsn, else {DEFAULT_SERVER_VERSION})",
    )
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        print(f"dbmigrate plan: {path}: no such file", file=sys.stderr)
        return 2
    try:
        migrations, configmaps = parse_manifests(path.read_text(encoding="utf-8"))
    except (ManifestError, OSError, UnicodeDecodeError) as exc:
        print(f"dbmigrate plan: {path}: {exc}", file=sys.stderr)
        return 2
    if not migrations:
        print(f"dbmigrate plan: {path}: no DatabaseMigration document", file=sys.stderr)
        return 2
    if args.backfill_rate is not None and args.backfill_rate <= 0:
        print("dbmigrate plan: --backfill-rate must be positive", file=sys.stderr)
        return 2

    dsn = args.dsn or os.environ.get(DSN_ENV) or None
    if dsn:
        try:
            check_dsn(dsn, "--dsn" if args.dsn else DSN_ENV)
        except MalformedDsn as exc:
            print(f"dbmigrate plan: {exc}", file=sys.stderr)
            return 2
    rate = args.backfill_rate or ASSUMED_BACKFILL_RATE
    rate_source = "given" if args.backfill_rate else "assumed; pass --backfill-rate"
    outputs: list[str] = []
    for doc in migrations:
        spec = doc.resource.spec
        resolved, _ = resolve_sql(doc, configmaps)
        version = args.server_version or DEFAULT_SERVER_VERSION
        version_source = "given" if args.server_version else "assumed"
        estimates: dict[str, TableEstimate] = {}
        if dsn:
            try:
                server_version, estimates = catalog.read_tables(
                    dsn, tables_touched(spec, resolved, version)
                )
            except catalog.DatabaseError as exc:
                message = catalog.redact(str(exc), dsn)
                print(f"dbmigrate plan: cannot read the database: {message}", file=sys.stderr)
                return 1
            if not args.server_version:
                version, version_source = server_version, "read from the database"
        plan = build_plan(
            spec,
            resolved=resolved,
            estimates=estimates,
            backfill_rate=rate,
            backfill_rate_source=rate_source,
            server_version=version,
            server_version_source=version_source,
            name=doc.name,
            namespace=doc.namespace,
            approval=approval_of(doc.resource.metadata),
        )
        outputs.append(render_plan(plan))
    sys.stdout.write("\n".join(outputs))
    return 0
