"""`dbmigrate backup`: the worker that backup Jobs run (`spec.backup`), usable by hand too.

Owns the command line, the exit status and the one line it prints; the work is
`dbmigrate.backup.worker.run_backup`. The DSN comes only from `DBMIGRATE_DSN`, the S3
credentials only from `DBMIGRATE_S3_ACCESS_KEY_ID` / `DBMIGRATE_S3_SECRET_ACCESS_KEY`: none of
them is ever an argument (nor an argument of pg_dump, which gets the connection in libpq's PG*
variables).

Exit status (the backup Job's podFailurePolicy in `core.jobs` acts on these):
  0    the backup is stored, verified and recorded (or was already)
  1    it cannot be taken as things are: a server newer than pg_dump, no table to dump, a
       wrong password, bucket or key, a dump that fails verification: the Job fails at once
  2    bad arguments
  75   the database or the storage was unreachable: the Job tries once more
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dbmigrate.api.worker import (
    BACKUP_EXIT_FAILED,
    BACKUP_EXIT_RETRYABLE,
    BACKUP_EXIT_USAGE,
    BACKUP_S3_ACCESS_KEY_ENV,
    BACKUP_S3_SECRET_KEY_ENV,
)

DSN_ENV = "DBMIGRATE_DSN"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backup",
        help="take a verified pg_dump -Fc and record it (the worker of backup Jobs)",
        description=(
            "Dump the given tables (or the whole database) with pg_dump -Fc into a directory or "
            "an S3 bucket, read the stored dump back (size, sha256, pg_restore --list) and "
            "record it in dbmigrate.backups. The database is read from the environment variable "
            f"{DSN_ENV}, S3 credentials from {BACKUP_S3_ACCESS_KEY_ENV} and "
            f"{BACKUP_S3_SECRET_KEY_ENV}; never from the command line."
        ),
        epilog="exit status: 0 recorded; 1 cannot be taken (see the message); 2 bad arguments; "
        "75 database or storage unreachable: run again",
    )
    p.add_argument("--migration-id", required=True, help="the migration's id (its record key)")
    p.add_argument("--step", required=True, help="the step the backup guards")
    p.add_argument(
        "--run", default="manual", help="the DatabaseMigration's uid (the record's third key)"
    )
    p.add_argument("--scope", choices=("Tables", "Database"), default="Tables")
    p.add_argument(
        "--table", action="append", default=[], metavar="[SCHEMA.]TABLE", help="(Tables scope)"
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--output-dir", type=Path, metavar="DIR", help="write the dump here")
    where.add_argument("--s3-endpoint", metavar="URL", help="http(s)://host[:port]")
    p.add_argument(
        "--location", metavar="TEXT", help="how to name --output-dir in the record (pvc:claim)"
    )
    p.add_argument("--s3-bucket", metavar="BUCKET")
    p.add_argument("--s3-prefix", metavar="PREFIX")
    p.add_argument("--s3-region", metavar="REGION")
    p.add_argument("--s3-insecure-skip-tls-verify", action="store_true")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        return _fail(f"set {DSN_ENV} to the database's DSN (it is never read from arguments)")
    if args.scope == "Tables" and not args.table:
        return _fail("Tables scope needs at least one --table", BACKUP_EXIT_USAGE)
    from dbmigrate.backup.storage import DirectoryStorage, S3Storage, Storage, StorageError
    from dbmigrate.backup.worker import BackupFailed, BackupOptions, run_backup
    from dbmigrate.db.errors import MalformedDsn, check_dsn

    try:
        check_dsn(dsn, DSN_ENV)
    except MalformedDsn as exc:
        return _fail(str(exc), BACKUP_EXIT_USAGE)
    storage: Storage
    if args.output_dir is not None:
        storage = DirectoryStorage(args.output_dir, args.location)
    else:
        access = os.environ.get(BACKUP_S3_ACCESS_KEY_ENV)
        secret = os.environ.get(BACKUP_S3_SECRET_KEY_ENV)
        if not args.s3_bucket or not access or not secret:
            return _fail(
                f"S3 needs --s3-bucket, {BACKUP_S3_ACCESS_KEY_ENV} and {BACKUP_S3_SECRET_KEY_ENV}",
                BACKUP_EXIT_USAGE,
            )
        try:
            storage = S3Storage(
                args.s3_endpoint,
                args.s3_bucket,
                args.s3_prefix,
                access,
                secret,
                region=args.s3_region,
                insecure_skip_tls_verify=args.s3_insecure_skip_tls_verify,
            )
        except StorageError as exc:
            return _fail(str(exc), BACKUP_EXIT_USAGE)
    opts = BackupOptions(
        migration_id=args.migration_id,
        step=args.step,
        run_uid=args.run,
        scope=args.scope,
        tables=tuple(args.table),
    )
    try:
        result = run_backup(dsn, opts, storage)
    except BackupFailed as exc:
        return _fail(str(exc), BACKUP_EXIT_RETRYABLE if exc.retryable else BACKUP_EXIT_FAILED)
    b = result.backup
    summary = {
        "location": b.location,
        "sizeBytes": b.size_bytes,
        "sha256": b.sha256,
        "seconds": b.seconds,
        "tables": list(b.tables),
        "serverVersion": b.server_version,
        "clientVersion": b.client_version,
        "tocEntries": b.toc_entries,
        "alreadyRecorded": result.already_recorded,
    }
    if result.missing_tables:
        summary["missingTables"] = list(result.missing_tables)
    print(json.dumps(summary))
    return 0


def _fail(message: str, code: int = BACKUP_EXIT_FAILED) -> int:
    print(f"dbmigrate backup: error: {message}", file=sys.stderr)
    return code
