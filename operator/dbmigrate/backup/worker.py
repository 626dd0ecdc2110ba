"""One backup, start to record: the work of `dbmigrate backup` (the backup Job's worker).

1. A backup already recorded for this migration, step and run: done (a retried pod, a re-run).
2. The server's version against pg_dump's: a newer server is refused before anything is dumped.
3. Tables scope: the tables given that exist now (each by its exact name); none: refused.
4. `pg_dump -Fc` streams into the storage while its bytes are counted and hashed (sha256).
5. Verification reads the stored bytes back: the same size and sha256, and `pg_restore --list`
   parses them and lists the data of every dumped table. Anything else deletes what was stored.
6. The verified backup is recorded in `dbmigrate.backups` (`db.backups`); only then is it a
   backup, for the operator and for a person.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import psycopg

from dbmigrate import failpoints
from dbmigrate.backup.pgdump import (
    ToolError,
    check_versions,
    child_env,
    client_version,
    find_tool,
    list_archive,
    quoted_pattern,
    start_dump,
)
from dbmigrate.backup.storage import Storage, StorageError
from dbmigrate.db.backups import RecordedBackup, find_backup, record_backup
from dbmigrate.db.errors import redact_dsn

APPLICATION_NAME = "dbmigrate backup"


class BackupFailed(RuntimeError):
    """The backup was not taken, or not verified (nothing is recorded); `retryable` when
    running it again may help (the database or the storage was unreachable)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class BackupOptions:
    migration_id: str
    step: str
    run_uid: str
    scope: str  # Tables | Database
    tables: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackupResult:
    backup: RecordedBackup
    already_recorded: bool = False
    missing_tables: tuple[str, ...] = ()


class _Hashing:
    """A reader over pg_dump's stdout that counts and hashes what passes through."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1, /) -> bytes:
        chunk = self.stream.read(n)
        self.sha.update(chunk)
        self.size += len(chunk)
        return chunk


def object_name(opts: BackupOptions, now: datetime) -> str:
    return f"{opts.migration_id}-{opts.step}-{now.strftime('%Y%m%dT%H%M%SZ')}.dump"


def run_backup(
    dsn: str, opts: BackupOptions, storage: Storage, *, env: dict[str, str] | None = None
) -> BackupResult:
    """Take, store, verify and record the backup; raises BackupFailed (nothing recorded)."""
    try:
        conn = psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME)
    except psycopg.OperationalError as exc:
        auth = getattr(exc, "sqlstate", None) in ("28P01", "28000")
        raise BackupFailed(
            redact_dsn(f"cannot connect to the database: {exc}", dsn), retryable=not auth
        ) from exc
    with conn:
        done = find_backup(conn, opts.migration_id, opts.step, opts.run_uid)
        if done is not None:
            return BackupResult(done, already_recorded=True)
        try:
            return _take(conn, dsn, opts, storage, env)
        except (ToolError, StorageError) as exc:
            raise BackupFailed(
                redact_dsn(str(exc), dsn), retryable=getattr(exc, "retryable", False)
            ) from exc


def _take(
    conn: psycopg.Connection[Any],
    dsn: str,
    opts: BackupOptions,
    storage: Storage,
    base_env: dict[str, str] | None,
) -> BackupResult:
    started = time.monotonic()
    env = child_env(dsn, base_env)
    pg_dump, pg_restore = find_tool("pg_dump", env), find_tool("pg_restore", env)
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version')"
    ).fetchone()
    assert row is not None
    server_num, server_text = int(row[0]), str(row[1]).split()[0]
    client = client_version(pg_dump, env)
    check_versions(server_num, client)

    patterns: list[str] = []
    dumped: list[tuple[str, str]] = []
    missing: list[str] = []
    if opts.scope == "Tables":
        for table in dict.fromkeys(opts.tables):
            found = conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
                (table,),
            ).fetchone()
            if found is None:
                missing.append(table)
                continue
            dumped.append((found[0], found[1]))
            patterns.append(quoted_pattern(found[0], found[1]))
        if not dumped:
            listed = ", ".join(opts.tables) or "none"
            raise BackupFailed(
                f"nothing to back up: none of the tables the migration touches exists (given: "
                f"{listed}); use backup.scope: Database to dump the whole database"
            )

    name = object_name(opts, datetime.now(UTC))
    with tempfile.TemporaryFile() as errors:
        proc = start_dump(pg_dump, env, patterns, errors)
        assert proc.stdout is not None
        hashing = _Hashing(proc.stdout)
        try:
            storage.put(name, hashing)
        except BaseException:
            proc.kill()
            proc.wait()
            storage.delete(name)
            raise
        code = proc.wait()
        if code != 0:
            errors.seek(0)
            said = errors.read().decode("utf-8", "replace").strip()[-800:]
            storage.delete(name)
            raise BackupFailed(redact_dsn(f"pg_dump failed (exit {code}): {said}", dsn))
    if hashing.size == 0:
        storage.delete(name)
        raise BackupFailed("pg_dump wrote nothing")
    sent = hashing.sha.hexdigest()

    # Verify what the storage has, not what was sent to it.
    check = hashlib.sha256()
    stored_size = 0

    def read_back() -> Iterator[bytes]:
        nonlocal stored_size
        for chunk in storage.read(name):
            check.update(chunk)
            stored_size += len(chunk)
            yield chunk

    try:
        listing = list_archive(pg_restore, env, read_back())
    except ToolError as exc:
        storage.delete(name)
        raise BackupFailed(f"{storage.location(name)} is not a readable dump: {exc}") from exc
    problems = []
    if stored_size != hashing.size:
        problems.append(f"{stored_size} bytes stored, {hashing.size} dumped")
    if check.hexdigest() != sent:
        problems.append(f"sha256 {check.hexdigest()} stored, {sent} dumped")
    absent = [f"{s}.{t}" for s, t in dumped if not listing.has_data_of(s, t)]
    if absent:
        problems.append("no data of " + ", ".join(absent) + " in its table of contents")
    if problems:
        storage.delete(name)
        raise BackupFailed(f"{storage.location(name)} failed verification: " + "; ".join(problems))

    backup = RecordedBackup(
        migration_id=opts.migration_id,
        step=opts.step,
        run_uid=opts.run_uid,
        location=storage.location(name),
        size_bytes=stored_size,
        sha256=sent,
        seconds=round(time.monotonic() - started, 3),
        scope=opts.scope,
        tables=tuple(f"{s}.{t}" for s, t in dumped),
        server_version=server_text,
        client_version=client.text,
        toc_entries=listing.entries,
    )
    record_backup(conn, backup)
    failpoints.hit("backup.recorded")
    recorded = find_backup(conn, opts.migration_id, opts.step, opts.run_uid)
    assert recorded is not None
    return BackupResult(recorded, missing_tables=tuple(missing))
