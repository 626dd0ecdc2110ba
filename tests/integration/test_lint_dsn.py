"""`dbmigrate lint --dsn`: with a real PostgreSQL the linter reads the server's version and the
sizes of the tables the SQL touches. A rewrite of a small lookup table is information, the same
statement on a big table stays an error, both messages quote the sizes, and the DSN is never
printed (also when the database cannot be reached)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from dbmigrate.cli import main
from dbmigrate_dev.postgres import PASSWORD

SQL = "ALTER TABLE lookup SET LOGGED;\nALTER TABLE big SET LOGGED;\n"


@pytest.fixture
def tables(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE UNLOGGED TABLE lookup (id bigint PRIMARY KEY, name text)")
        conn.execute("INSERT INTO lookup SELECT g, 'x' FROM generate_series(1, 200) g")
        conn.execute("CREATE UNLOGGED TABLE big (id bigint PRIMARY KEY, name text)")
        conn.execute("INSERT INTO big SELECT g, repeat('x', 50) FROM generate_series(1, 50000) g")
        conn.execute("ANALYZE lookup")
        conn.execute("ANALYZE big")
    return pg_dsn


def _lint(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, dict]:
    code = main(["lint", "--format", "json", *extra, str(path)])
    return code, json.loads(capsys.readouterr().out)


def test_table_sizes_weigh_the_findings(
    tables: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "1.up.sql"
    path.write_text(SQL)
    code, out = _lint(capsys, path, "--dsn", tables)
    assert code == 1
    by_line = {f["line"]: f for f in out["findings"] if f["rule"] == "blocking-lock"}
    assert by_line[1]["severity"] == "info"
    assert "lookup: 200 rows" in by_line[1]["message"]
    assert by_line[2]["severity"] == "error"
    assert "big: 50,000 rows" in by_line[2]["message"]
    assert PASSWORD not in json.dumps(out)


def test_without_a_dsn_both_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "1.up.sql"
    path.write_text(SQL)
    code, out = _lint(capsys, path)
    assert code == 1
    blocking = [f for f in out["findings"] if f["rule"] == "blocking-lock"]
    assert [f["severity"] for f in blocking] == ["error", "error"]


def test_the_server_version_is_read(
    tables: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(tables) as conn:
        major = conn.info.server_version // 10000
    path = tmp_path / "1.up.sql"
    path.write_text("ALTER TABLE big ALTER COLUMN name SET EXPRESSION AS (id::text);\n")
    code, out = _lint(capsys, path, "--dsn", tables)
    messages = [
        f["message"] for f in out["findings"] if f["rule"] == "unsupported-on-server-version"
    ]
    if major < 17:
        assert code == 1
        assert any(f"run on {major}" in m for m in messages), out
    else:
        assert messages == []


def test_an_unreachable_database_says_so_without_the_dsn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "1.up.sql"
    path.write_text(SQL)
    dsn = "postgresql://bob:Zq7Xk9vQj@127.0.0.1:1/app?connect_timeout=2"
    assert main(["lint", "--dsn", dsn, str(path)]) == 1
    captured = capsys.readouterr()
    assert "cannot read the database" in captured.err
    assert "Zq7Xk9vQj" not in captured.err + captured.out


@pytest.mark.parametrize(
    ("new_type", "severity"),
    [
        pytest.param("varchar(200)", "info", id="widen"),
        pytest.param("varchar(50)", "error", id="narrow"),
    ],
)
def test_the_current_column_type_is_read(
    pg_dsn: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    new_type: str,
    severity: str,
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id bigint PRIMARY KEY, name varchar(100))")
        conn.execute("INSERT INTO people SELECT g, 'p' || g FROM generate_series(1, 50000) g")
        conn.execute("ANALYZE people")
    path = tmp_path / "1.up.sql"
    path.write_text(f"ALTER TABLE people ALTER COLUMN name TYPE {new_type};\n")
    _, out = _lint(capsys, path, "--dsn", pg_dsn)
    (finding,) = [f for f in out["findings"] if f["rule"] == "changing-column-type"]
    assert finding["severity"] == severity
    assert "character varying(100) in the database" in finding["message"]
