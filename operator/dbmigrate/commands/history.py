"""`dbmigrate history NAME [-n NS] [-o json]` (also `kubectl dbmigrate history`): the rows of
the database's own log (`dbmigrate.history`) for the migration — step, direction, when it was
applied, how long it took.

The DSN comes from the migration's Secret (`spec.database.dsnSecretRef`), read with YOUR
kubeconfig: who may not read that Secret is told so, and gets nothing. The DSN is never
printed; a connection error is shown with the DSN and its password taken out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from dbmigrate.commands.cluster_cli import (
    DONE,
    REFUSED,
    add_namespace,
    add_output,
    fail,
    namespace_of,
    run,
)
from dbmigrate.core.display import render_history


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "history",
        help="the database's dbmigrate.history rows of a migration (reads its DSN Secret)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="the DatabaseMigration")
    add_namespace(p)
    add_output(p)
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    namespace = namespace_of(args)
    return run(
        "history",
        lambda: _history(namespace, args.name, args.output),
        f"get DatabaseMigration {args.name!r} in namespace {namespace!r}",
    )


def _history(namespace: str, name: str, output: str) -> int:
    from dbmigrate.db.errors import MalformedDsn, check_dsn
    from dbmigrate.kube import cluster
    from dbmigrate.kube.plugin import get_migration

    obj = get_migration(namespace, name)
    spec = obj.get("spec") or {}
    ref = (spec.get("database") or {}).get("dsnSecretRef") or {}
    secret, key = ref.get("name"), ref.get("key")
    if not secret or not key:
        return fail("history", f"{namespace}/{name} names no DSN Secret")
    try:
        _, data = asyncio.run(cluster.read_secret(namespace, secret))
        dsn = cluster.secret_value(secret, data, key)
    except cluster.Forbidden:
        return fail(
            "history",
            f"you may not read Secret {secret!r} in namespace {namespace!r} (the migration's "
            "DSN): ask for `get` on that Secret, or read dbmigrate.history with your own access",
        )
    except cluster.NotFound as exc:
        return fail("history", str(exc))
    try:
        check_dsn(dsn, f"Secret {secret} key {key}")
    except MalformedDsn as exc:
        return fail("history", str(exc))
    rows = asyncio.run(_read(dsn, str(spec.get("migrationId") or "")))
    if rows is None:
        return REFUSED
    if output == "json":
        sys.stdout.write(json.dumps({"items": rows}, indent=2) + "\n")
    elif not rows:
        print(f"no history rows of {spec.get('migrationId')} in the database", file=sys.stderr)
    else:
        sys.stdout.write("\n".join(render_history(rows)) + "\n")
    return DONE


async def _read(dsn: str, migration_id: str) -> list[dict[str, Any]] | None:
    import psycopg  # the driver only when it is used

    from dbmigrate.db.errors import first_line, redact_dsn
    from dbmigrate.db.history import read_history

    try:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, connect_timeout=10, application_name="dbmigrate-history"
        ) as conn:
            cur = await conn.execute("SELECT to_regclass('dbmigrate.history') IS NOT NULL")
            exists = await cur.fetchone()
            rows = await read_history(conn, migration_id) if exists and exists[0] else []
    except psycopg.Error as exc:
        message = redact_dsn(first_line(exc), dsn)
        fail("history", f"the database could not be read: {message}")
        return None
    return [
        {
            "step": r.step,
            "kind": r.step_kind,
            "direction": r.direction,
            "appliedAt": r.applied_at.isoformat(),
            "durationMs": r.duration_ms,
        }
        for r in rows
    ]
