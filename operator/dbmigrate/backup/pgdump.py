"""The PostgreSQL client tools as the backup worker runs them: `pg_dump -Fc` and
`pg_restore --list`, with the connection in libpq's environment variables.

The DSN never reaches a command line: `db.libpq` turns it into PGHOST, PGPORT, PGUSER,
PGPASSWORD, ... for the child process alone, and refuses one it cannot express that way.

`pg_dump` of an older major version than the server refuses to dump it ("aborting because of
server version mismatch"); the worker compares the versions first and says which is which.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from dbmigrate.db.libpq import UnexpressibleDsn, tool_env
from dbmigrate.db.libpq import libpq_env as db_libpq_env

APPLICATION_NAME = "dbmigrate backup"
CHUNK = 1 << 20


class ToolError(RuntimeError):
    """A client tool is missing, refused to run, or failed; the message says which and why."""


class VersionMismatch(ToolError):
    """The server is newer than this image's pg_dump: a dump would be refused or incomplete."""


def libpq_env(dsn: str) -> dict[str, str]:
    """The libpq variables that connect as `dsn` does, named `dbmigrate backup`."""
    try:
        return db_libpq_env(dsn, APPLICATION_NAME)
    except UnexpressibleDsn as exc:
        raise ToolError(str(exc)) from None


def child_env(dsn: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a client tool: ours without any PG* variable or secret of our own,
    plus the DSN's libpq variables."""
    try:
        return tool_env(dsn, base, APPLICATION_NAME)
    except UnexpressibleDsn as exc:
        raise ToolError(str(exc)) from None


def find_tool(name: str, env: dict[str, str]) -> str:
    found = shutil.which(name, path=env.get("PATH"))
    if found is None:
        raise ToolError(
            f"{name} not found on PATH: the image needs the PostgreSQL client tools "
            "(Debian: postgresql-client)"
        )
    return found


_VERSION = re.compile(r"\(PostgreSQL\)\s+([0-9]+)(?:\.([0-9]+))?")


@dataclass(frozen=True)
class ClientVersion:
    text: str  # `15.14`
    major: int


def client_version(pg_dump: str, env: dict[str, str]) -> ClientVersion:
    """What `pg_dump --version` says it is (`pg_dump (PostgreSQL) 15.14 (Debian ...)`)."""
    done = subprocess.run(
        [pg_dump, "--version"], capture_output=True, text=True, env=env, check=False, timeout=30
    )
    m = _VERSION.search(done.stdout)
    if done.returncode != 0 or m is None:
        raise ToolError(f"{pg_dump} --version said {done.stdout.strip() or done.stderr.strip()!r}")
    text = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
    return ClientVersion(text=text, major=int(m.group(1)))


def check_versions(server_version_num: int, client: ClientVersion) -> None:
    """A server of a newer major version than pg_dump is refused with a clear error."""
    server_major = server_version_num // 10000
    if server_major > client.major:
        raise VersionMismatch(
            f"server {server_major} is newer than pg_dump {client.major} in this image: "
            f"pg_dump cannot dump it. Use an image whose PostgreSQL client is at least "
            f"{server_major}, or take the backup with scope and tools of your own"
        )


def quoted_pattern(schema: str, table: str) -> str:
    """A `pg_dump -t` pattern matching exactly this table (double quotes: no wildcards)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))


def start_dump(
    pg_dump: str, env: dict[str, str], patterns: Iterable[str], stderr: IO[bytes]
) -> subprocess.Popen[bytes]:
    """`pg_dump -Fc` to its stdout (read it to the end, then wait)."""
    argv = [pg_dump, "--format=custom", "--no-password"]
    for pattern in patterns:
        argv += ["--table", pattern]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env=env)


@dataclass(frozen=True)
class Listing:
    """`pg_restore --list` of an archive: its TOC entries, as pg_restore printed them."""

    entries: int
    text: str

    def has_data_of(self, schema: str, table: str) -> bool:
        """Whether the archive holds the table's rows (`TABLE DATA schema table owner`)."""
        return f" TABLE DATA {schema} {table} " in self.text


def _drain(stream: IO[bytes], into: list[bytes]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.append(stream.read()), daemon=True)
    thread.start()
    return thread


def list_archive(pg_restore: str, env: dict[str, str], chunks: Iterator[bytes]) -> Listing:
    """Feed the archive to `pg_restore --list` on its stdin while the caller's iterator reads
    it (the caller hashes every chunk; pg_restore may stop reading once the TOC is parsed, and
    the rest is still read). Raises ToolError when pg_restore cannot parse it."""
    proc = subprocess.Popen(
        [pg_restore, "--list"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [_drain(proc.stdout, out), _drain(proc.stderr, err)]
    feeding = True
    for chunk in chunks:
        if feeding:
            try:
                proc.stdin.write(chunk)
            except BrokenPipeError:
                feeding = False  # it has what it needs (or failed: its exit status says)
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    code = proc.wait()
    for t in readers:
        t.join()
    text = b"".join(out).decode("utf-8", "replace")
    if code != 0:
        message = b"".join(err).decode("utf-8", "replace").strip()
        raise ToolError(f"pg_restore --list cannot read the stored dump: {message[-500:]}")
    # Comment lines start with `;`; every other line is one TOC entry (`3350; 0 16385 TABLE
    # DATA public users postgres`).
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(";")]
    return Listing(entries=len(lines), text="\n".join(f"{line} " for line in lines))
