"""The scratch database of a rehearsal and the PostgreSQL client tools that fill it.

- `create_scratch` / `drop_scratch`: `CREATE DATABASE` on the rehearsal's server (the role needs
  CREATEDB), always after `DROP DATABASE IF EXISTS … WITH (FORCE)` of a leftover (a rehearsal
  that died), and dropped again when the rehearsal ends, whatever its end.
- `libpq_environment`: the connection parameters of a DSN as libpq environment variables
  (PGHOST, PGPASSWORD, …) for `pg_dump` and `psql`: a password never goes on a command line,
  where any user of the machine could read it.
- `run_tool`: runs one of them, its output redacted; `check_pg_dump`: a pg_dump older than the
  server is refused up front with both versions named (it would refuse to dump anyway).

Anything that keeps the rehearsal from running at all raises `RehearsalUnavailable`: that is
not a verdict on the migration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

from dbmigrate.core.rehearsal import SCRATCH_PREFIX
from dbmigrate.db.errors import describe_error, redact_dsn
from dbmigrate.db.libpq import UnexpressibleDsn, tool_env

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")


class RehearsalUnavailable(Exception):
    """The rehearsal could not run (no CREATEDB, no pg_dump, the server out of reach): retried
    later, and not a verdict on the migration. The message never holds a DSN."""


def scratch_dsn(server_dsn: str, database: str) -> str:
    """The DSN of the scratch database: the server's DSN with another database name."""
    return make_conninfo(server_dsn, dbname=database)


def libpq_environment(dsn: str) -> dict[str, str]:
    """The process environment for a client tool connecting with `dsn` (`db.libpq`)."""
    try:
        return tool_env(dsn, application_name="dbmigrate-rehearsal")
    except UnexpressibleDsn as exc:
        raise RehearsalUnavailable(str(exc)) from None


def _checked_name(database: str) -> pgsql.Identifier:
    # Only a scratch database is ever created or dropped here.
    if not database.startswith(SCRATCH_PREFIX):
        raise ValueError(f"{database!r} is not a rehearsal's scratch database")
    return pgsql.Identifier(database)


async def _admin(server_dsn: str, what: str) -> psycopg.AsyncConnection:
    try:
        return await psycopg.AsyncConnection.connect(
            server_dsn, autocommit=True, application_name="dbmigrate-rehearsal"
        )
    except psycopg.Error as exc:
        raise RehearsalUnavailable(
            redact_dsn(f"cannot reach the {what} server: {describe_error(exc)}", server_dsn)
        ) from None


async def drop_scratch(server_dsn: str, database: str, *, what: str = "rehearsal") -> None:
    """Drop the scratch database if it exists, ending its sessions (WITH FORCE)."""
    name = _checked_name(database)
    conn = await _admin(server_dsn, what)
    try:
        await conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
    except psycopg.Error as exc:
        raise RehearsalUnavailable(
            redact_dsn(
                f"cannot drop the scratch database {database}: {describe_error(exc)}", server_dsn
            )
        ) from None
    finally:
        await conn.close()


async def create_scratch(
    server_dsn: str, database: str, *, like: tuple[str, str, str] | None, what: str = "rehearsal"
) -> None:
    """A fresh scratch database (a leftover of the same name dropped first), with the real
    database's encoding and locale (`like`: encoding, collate, ctype) when they are known."""
    await drop_scratch(server_dsn, database, what=what)
    name = _checked_name(database)
    statement = pgsql.SQL("CREATE DATABASE {} TEMPLATE template0").format(name)
    if like is not None:
        encoding, collate, ctype = like
        statement += pgsql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            pgsql.Literal(encoding), pgsql.Literal(collate), pgsql.Literal(ctype)
        )
    conn = await _admin(server_dsn, what)
    try:
        await conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        raise RehearsalUnavailable(
            f"the {what} server's role may not create the scratch database {database}: it "
            "needs the CREATEDB privilege (ALTER ROLE … CREATEDB), or name a server where it "
            "has it with rehearsal.dsnSecretRef"
        ) from None
    except psycopg.Error as exc:
        raise RehearsalUnavailable(
            redact_dsn(
                f"cannot create the scratch database {database}: {describe_error(exc)}",
                server_dsn,
            )
        ) from None
    finally:
        await conn.close()


def find_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RehearsalUnavailable(
            f"{name} not found on PATH: the rehearsal copies the schema with the PostgreSQL "
            "client tools (the operator's image has them; elsewhere install postgresql-client)"
        )
    return found


async def run_tool(
    argv: list[str], dsn: str, *, stdin: bytes | None = None, redact: tuple[str, ...] = ()
) -> bytes:
    """Run a client tool connected through the environment; its stdout, or
    RehearsalUnavailable with the end of its stderr (redacted) when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=libpq_environment(dsn),
    )
    try:
        out, err = await proc.communicate(stdin)
    except BaseException:  # cancelled (the rehearsal's timeout): the tool must not run on
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        text = err.decode(errors="replace").strip()
        for secret_dsn in (dsn, *redact):
            text = redact_dsn(text, secret_dsn)
        last = "; ".join(text.splitlines()[-3:]) or f"exit code {proc.returncode}"
        raise RehearsalUnavailable(f"{os.path.basename(argv[0])} failed: {last}")
    return out


async def check_pg_dump(pg_dump: str, server_version: int) -> int:
    """pg_dump's major version, once it is known to be able to dump the server's."""
    proc = await asyncio.create_subprocess_exec(
        pg_dump, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    match = _VERSION.search(out.decode(errors="replace"))
    if match is None:
        raise RehearsalUnavailable(f"cannot tell the version of {pg_dump}: {out[:80]!r}")
    client = int(match.group(1))
    if client < server_version:
        raise RehearsalUnavailable(
            f"pg_dump {client} cannot copy the schema of a PostgreSQL {server_version} server "
            f"(pg_dump must be as new as the server): install the PostgreSQL {server_version} "
            "client tools"
        )
    return client
