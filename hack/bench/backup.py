"""Backup benchmark: what `spec.backup` costs on the seed's 1 M-row users table.

Not a test: it prints a Markdown table whose figures go into BENCHMARKS.md ("Backup").

    python hack/bench/backup.py                 # 1 M rows, throwaway PostgreSQL on loopback
    python hack/bench/backup.py --rows 5000000 --repeat 3

Methods, on the same table:
- baseline: `pg_dump -Fc -t users > file`, nothing else;
- `dbmigrate backup` to a directory (what a backup Job does with its PersistentVolumeClaim):
  version check, the same pg_dump streamed into the file (sha256 on the way), fsync, the file
  read back (sha256 again, `pg_restore --list`), the row in dbmigrate.backups;
- `dbmigrate backup` to S3: the same into a SeaweedFS S3 gateway on loopback (multipart upload
  in 16 MiB parts, the object downloaded again for verification);
- and, to show where the difference goes, verification alone: the file read back, hashed and
  listed.
Each method runs `--repeat` times (interleaved); the fastest run is kept. The backup's own
process start (Python, psycopg) is included, as a Job pays it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from _common import create_pristine_users, database, installed_env, machine, markdown_table

from dbmigrate.backup.pgdump import libpq_env
from dbmigrate_dev.seaweedfs import SeaweedS3, find_weed

REPO = Path(__file__).resolve().parents[2]
SCHEMA = "dbmigrate_bench"
TABLE = f"{SCHEMA}.users"


def prepare(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        pristine = create_pristine_users(conn, SCHEMA, rows)
        conn.execute(
            f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, email text, "
            "email_confirmed_at timestamptz, email_verified boolean)"
        )
        conn.execute(
            f"INSERT INTO {TABLE} (id, email, email_confirmed_at) "
            f"SELECT g, email, email_confirmed_at FROM {pristine}"
        )
        conn.execute(f"DROP TABLE {pristine}")
        conn.execute(f"VACUUM (ANALYZE) {TABLE}")
        conn.execute("CHECKPOINT")


def table_mb(dsn: str) -> float:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_total_relation_size(%s)", (TABLE,)).fetchone()
    assert row is not None
    return int(row[0]) / 1e6


def baseline(dsn: str, out: Path) -> tuple[float, int]:
    env = {**os.environ, **libpq_env(dsn)}
    started = time.perf_counter()
    with out.open("wb") as f:
        subprocess.run(["pg_dump", "-Fc", "-t", TABLE], stdout=f, env=env, check=True)
    return time.perf_counter() - started, out.stat().st_size


def worker(dsn: str, env: dict[str, str], *where: str) -> tuple[float, int, float]:
    """(wall seconds, dump bytes, the worker's own seconds)."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dbmigrate",
            "backup",
            "--migration-id",
            "20240101000000_bench",
            "--step",
            "contract",
            "--run",
            uuid.uuid4().hex,
            "--table",
            TABLE,
            *where,
        ],
        env={**env, "DBMIGRATE_DSN": dsn},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"dbmigrate backup failed: {done.stderr}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, int(summary["sizeBytes"]), float(summary["seconds"])


def verify_only(dump: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    sha = hashlib.sha256()
    with dump.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    subprocess.run(["pg_restore", "--list", str(dump)], env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dsn", help="an existing database (default: a throwaway server)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    env = installed_env(REPO)
    work = Path(tempfile.mkdtemp(prefix="dbmigrate-bench-backup-"))
    s3 = SeaweedS3(workdir=work / "s3", weed=find_weed())
    s3.start()
    try:
        s3.create_bucket("bench")
        s3_env = {
            **env,
            "DBMIGRATE_S3_ACCESS_KEY_ID": s3.access_key,
            "DBMIGRATE_S3_SECRET_ACCESS_KEY": s3.secret_key,
        }
        with database(args.dsn) as dsn:
            prepare(dsn, args.rows)
            size_mb = table_mb(dsn)
            runs: dict[str, list[tuple[float, int, float | None]]] = {}
            for i in range(args.repeat):
                out = work / f"baseline-{i}.dump"
                seconds, size = baseline(dsn, out)
                runs.setdefault("pg_dump -Fc > file (baseline)", []).append((seconds, size, None))
                runs.setdefault("verification alone (sha256 + pg_restore --list)", []).append(
                    (verify_only(out, {**os.environ, **libpq_env(dsn)}), size, None)
                )
                out.unlink()
                directory = work / f"dir-{i}"
                runs.setdefault("dbmigrate backup to a directory (PVC)", []).append(
                    worker(dsn, env, "--output-dir", str(directory))
                )
                shutil.rmtree(directory)
                runs.setdefault("dbmigrate backup to S3 (SeaweedFS)", []).append(
                    worker(dsn, s3_env, "--s3-endpoint", s3.endpoint, "--s3-bucket", "bench")
                )
            with psycopg.connect(dsn) as conn:
                version = conn.execute("SHOW server_version").fetchone()
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = min(r[0] for r in runs["pg_dump -Fc > file (baseline)"])
    rows = []
    for method, results in runs.items():
        best = min(results, key=lambda r: r[0])
        worker_s = f"{best[2]:.2f} s" if best[2] is not None else "-"
        rows.append(
            [
                method,
                f"{best[0]:.2f} s",
                worker_s,
                f"{best[1] / 1e6:.1f} MB",
                f"{best[0] / base:.2f}x",
            ]
        )
    print(
        f"{args.rows:,} rows ({size_mb:.0f} MB with its index), PostgreSQL "
        f"{version[0] if version else '?'}, {machine()}, fastest of {args.repeat}\n"
    )
    print(
        markdown_table(
            ["method", "wall", "worker's own", "dump", "vs baseline"],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
