"""`dbmigrate report NAME [-n NAMESPACE]` and `dbmigrate report --migration-id ID --dsn DSN`:
print a migration's record (Markdown).

With a NAME, the report ConfigMap the operator wrote when the migration ended
(`<NAME>-report`), read with your kubeconfig; before the end it says which phase the migration
is in. With `--migration-id`, the rows of the database's own log (`dbmigrate.runs`), written by
the operator and by `dbmigrate apply`: the newest, or all of them with `--all`.

Exit codes: 0 printed; 1 no report (yet); 2 usage errors (arguments, DSN).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from dbmigrate.core.record.configmap import CONFIG_MAP_KEY, report_config_map_name
from dbmigrate.db.errors import MalformedDsn, check_dsn, first_line, redact_dsn

DSN_ENV = "DBMIGRATE_DSN"
PRINTED, NO_REPORT, USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="print a migration's record: the migration log entry or the post-mortem draft",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", help="the DatabaseMigration (reads its report ConfigMap)")
    p.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
    p.add_argument(
        "--migration-id",
        metavar="ID",
        help="read the database's dbmigrate.runs instead (with --dsn or $DBMIGRATE_DSN)",
    )
    p.add_argument("--dsn", help=f"libpq DSN; default: ${DSN_ENV}; never printed")
    p.add_argument(
        "--all", action="store_true", help="with --migration-id: every run, oldest first"
    )
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    if (args.name is None) == (args.migration_id is None):
        return _usage("give a migration NAME, or --migration-id ID (with --dsn)")
    if args.name is not None:
        if args.dsn or args.all:
            return _usage("--dsn and --all go with --migration-id, not with NAME")
        return asyncio.run(_from_cluster(args.name, args.namespace))
    if args.namespace:
        return _usage("-n goes with a migration NAME, not with --migration-id")
    dsn = args.dsn or os.environ.get(DSN_ENV)
    if not dsn:
        return _usage(f"no database: pass --dsn or set {DSN_ENV}")
    try:
        check_dsn(dsn, "--dsn" if args.dsn else DSN_ENV)
    except MalformedDsn as exc:
        return _usage(str(exc))
    return asyncio.run(_from_database(dsn, args.migration_id, every=args.all))


def _usage(message: str) -> int:
    print(f"dbmigrate report: {message}", file=sys.stderr)
    return USAGE


async def _from_cluster(name: str, namespace: str | None) -> int:
    from dbmigrate.kube import cluster as kube  # the Kubernetes client only when it is used

    namespace = namespace or kube.current_namespace()
    config_map = report_config_map_name(name)
    try:
        text = await kube.read_config_map_value(namespace, config_map, CONFIG_MAP_KEY)
    except kube.NotFound:
        pass
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return PRINTED
    try:
        body = await kube.read_migration(namespace, name)
    except kube.NotFound:
        print(
            f"dbmigrate report: no DatabaseMigration {name!r} in namespace {namespace!r}",
            file=sys.stderr,
        )
        return NO_REPORT
    phase = (body.get("status") or {}).get("phase") or "Pending"
    print(
        f"dbmigrate report: no report yet: the migration is {phase} "
        f"(configmap {namespace}/{config_map} is written when it ends)",
        file=sys.stderr,
    )
    return NO_REPORT


async def _from_database(dsn: str, migration_id: str, *, every: bool) -> int:
    import psycopg  # the driver only when it is used

    from dbmigrate.db.runs import read_runs

    try:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, connect_timeout=10, application_name="dbmigrate-report"
        ) as conn:
            runs = await read_runs(conn, migration_id)
    except psycopg.Error as exc:
        print(
            f"dbmigrate report: the database could not be read: {redact_dsn(first_line(exc), dsn)}",
            file=sys.stderr,
        )
        return NO_REPORT
    if not runs:
        print(f"dbmigrate report: no run of {migration_id} in dbmigrate.runs", file=sys.stderr)
        return NO_REPORT
    chosen = runs if every else [runs[-1]]
    for i, run in enumerate(chosen):
        if i:
            sys.stdout.write("\n---\n\n")
        sys.stdout.write(run.report if run.report.endswith("\n") else run.report + "\n")
    return PRINTED
