"""What a command loads is what it uses: `dbmigrate lint` of SQL files starts without the
operator's dependencies (kopf, the Kubernetes client, pydantic, rich, YAML, psycopg), the
backfill worker (`dbmigrate backfill`, one per Job pod) with the driver alone, and
`--version` without any subcommand. Asserted on the import graph of a fresh process, not on
time (BENCHMARKS.md has the times)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("kopf", "kubernetes", "pydantic", "rich", "yaml", "psycopg", "httpx", "prometheus_client")

PROBE = """
import contextlib, io, json, sys
from dbmigrate.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def _loaded(*argv: str, env: dict[str, str] | None = None) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return set(json.loads(proc.stdout.splitlines()[-1]))


@pytest.mark.parametrize("output", ["json", "text", "github", "sarif"])
def test_lint_of_sql_loads_none_of_the_operator(tmp_path: Path, output: str) -> None:
    sql = tmp_path / "1.up.sql"
    sql.write_text("CREATE INDEX i ON users (email);\n")
    loaded = _loaded("lint", "--format", output, str(sql))
    assert "pglast" in loaded, "the probe ran the linter"
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_lint_of_a_manifest_loads_what_it_needs(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    loaded = _loaded("lint", str(manifest))
    assert {"yaml", "pydantic"} <= loaded
    assert loaded.isdisjoint({"kopf", "kubernetes", "psycopg", "rich"})


def test_version_loads_no_subcommand() -> None:
    loaded = _loaded("--version")
    assert loaded.isdisjoint({*HEAVY, "pglast"})


def test_lint_with_a_dsn_adds_only_the_driver(tmp_path: Path) -> None:
    sql = tmp_path / "1.up.sql"
    sql.write_text("ALTER TABLE users SET LOGGED;\n")
    dsn = "postgresql://u@127.0.0.1:1/db?connect_timeout=1"  # refused at once: no server needed
    loaded = _loaded("lint", "--dsn", dsn, str(sql))
    assert "psycopg" in loaded
    assert loaded.isdisjoint(set(HEAVY) - {"psycopg"}), sorted(loaded & set(HEAVY))


def test_the_backfill_worker_loads_the_driver_and_nothing_of_the_operator() -> None:
    # Refused at once (no server needed), and given up after one reconnect: the probe runs the
    # worker's whole start, its connection attempts and its failure report.
    dsn = "postgresql://u@127.0.0.1:1/db?connect_timeout=1"
    loaded = _loaded(
        "backfill",
        "--table",
        "t",
        "--set",
        "a = 1",
        "--max-reconnects",
        "1",
        env={"DBMIGRATE_DSN": dsn},
    )
    assert "psycopg" in loaded, "the probe ran the worker"
    assert loaded.isdisjoint({*HEAVY, "pglast"} - {"psycopg"}), sorted(loaded & set(HEAVY))


def test_the_backup_worker_loads_the_driver_and_nothing_of_the_operator(tmp_path: Path) -> None:
    # Refused at once (no server needed): the probe runs the worker's start and its failure.
    dsn = "postgresql://u@127.0.0.1:1/db?connect_timeout=1"
    args = ("backup", "--migration-id", "m", "--step", "s", "--table", "t")
    loaded = _loaded(*args, "--output-dir", str(tmp_path), env={"DBMIGRATE_DSN": dsn})
    assert "psycopg" in loaded, "the probe ran the worker"
    assert loaded.isdisjoint({*HEAVY, "pglast", "minio"} - {"psycopg"}), sorted(loaded & set(HEAVY))
