"""`dbmigrate lint FILE…` through `dbmigrate.cli.main`, with files in a temporary directory.

Aspects covered: exit status (0 clean, 1 error findings, 2 usage errors: missing file, wrong
suffix, bad YAML, invalid DatabaseMigration naming the field); .sql files and the up/down
naming (a .down.sql is linted as rollback SQL and knows what its .up.sql created); YAML with
several documents (other kinds ignored; ConfigMaps resolve upFrom); file line numbers of
findings in SQL and in YAML block scalars; the three output formats (text without colour when
not a terminal, json, GitHub annotations with escaping); suppressed findings kept but not
counted.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from dbmigrate.cli import main


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main(["lint", "--format", "json", *argv])
    return code, json.loads(capsys.readouterr().out)


MIGRATION = """
apiVersion: dbmigrate.io/v1alpha1
kind: DatabaseMigration
metadata:
  name: demo
  namespace: shop
spec:
  migrationId: "20240115120000_demo"
  database:
    dsnSecretRef: {name: db, key: dsn}
  steps:
    - name: expand
      sql:
        up: |
          ALTER TABLE users ADD COLUMN IF NOT EXISTS a text;
          CREATE INDEX users_a ON users (a);
        down: DROP INDEX CONCURRENTLY IF EXISTS users_a;
"""


# ---------------------------------------------------------------------------------------------
# exit status


@pytest.mark.parametrize(
    ("name", "text", "code"),
    [
        pytest.param(
            "1.up.sql", "ALTER TABLE users ADD COLUMN IF NOT EXISTS a text;\n", 0, id="clean"
        ),
        pytest.param(
            "1.up.sql", "ALTER TABLE users ADD COLUMN n integer;\n", 0, id="warnings-only"
        ),
        pytest.param("1.up.sql", "CREATE INDEX i ON users (a);\n", 1, id="error"),
        pytest.param(
            "1.up.sql",
            "-- dbmigrate:ignore require-concurrent-index-creation empty table\n"
            "CREATE INDEX i ON users (a);\n",
            0,
            id="suppressed-error",
        ),
        pytest.param("1.up.sql", "ALTER TABLE users ADD COLUMN;\n", 1, id="syntax-error"),
        pytest.param("m.yaml", MIGRATION, 1, id="yaml-with-error"),
    ],
)
def test_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, code: int
) -> None:
    assert main(["lint", write(tmp_path, name, text)]) == code
    capsys.readouterr()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        pytest.param(None, None, "no such file", id="missing-file"),
        pytest.param("notes.txt", "hello", "not a .sql, .yaml or .yml file", id="wrong-suffix"),
        pytest.param("bad.yaml", "a: [1, 2\n", "invalid YAML (line 2", id="bad-yaml"),
        pytest.param(
            "invalid.yaml",
            MIGRATION.replace('migrationId: "20240115120000_demo"', "migrationId: nope"),
            "DatabaseMigration demo is invalid: spec.migrationId: String should match pattern",
            id="invalid-field",
        ),
        pytest.param(
            "nostep.yaml",
            MIGRATION.replace("      sql:\n", "      sqll:\n"),
            "spec.steps[0] (expand).sqll: Extra inputs are not permitted",
            id="invalid-step-field-names-the-step",
        ),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str | None,
    text: str | None,
    message: str,
) -> None:
    path = write(tmp_path, name, text) if name and text is not None else str(tmp_path / "x.sql")
    assert main(["lint", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_argparse_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["lint", "--format", "xml", "a.sql"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# inputs


def test_down_file_is_rollback_sql_and_sees_its_up_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    up = write(
        tmp_path,
        "20240115120000_audit.up.sql",
        "CREATE TABLE IF NOT EXISTS audit (id bigint);\nCREATE INDEX audit_id ON audit (id);\n",
    )
    down = write(
        tmp_path,
        "20240115120000_audit.down.sql",
        "DROP INDEX audit_id;\nDROP INDEX users_a;\nDROP TABLE IF EXISTS audit;\n",
    )
    # The down file is given first; it is still linted after its up file.
    code, out = run_json(capsys, down, up)
    assert code == 0
    assert [
        (f["file"], f["line"], f["rule"], f["severity"], f["direction"]) for f in out["findings"]
    ] == [
        (down, 2, "require-concurrent-index-deletion", "warning", "down"),
    ]


def test_down_file_alone_is_rollback_sql(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    down = write(tmp_path, "1_x.down.sql", "CREATE INDEX i ON users (a);\n")
    code, out = run_json(capsys, down)
    assert code == 0
    assert [(f["rule"], f["severity"]) for f in out["findings"]] == [
        ("require-concurrent-index-creation", "warning")
    ]


def test_yaml_lines_point_into_the_block_scalar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "m.yaml", MIGRATION)
    code, out = run_json(capsys, path)
    assert code == 1
    [finding] = out["findings"]
    assert (finding["line"], finding["step"], finding["rule"]) == (
        15,
        "expand",
        "require-concurrent-index-creation",
    )
    assert Path(path).read_text().splitlines()[14].strip() == "CREATE INDEX users_a ON users (a);"


def test_multi_document_yaml_with_configmap_and_other_kinds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = """
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: demo-sql, namespace: shop}
    data:
      up.sql: |
        ALTER TABLE users ADD COLUMN IF NOT EXISTS a text;
        ALTER TABLE users ALTER COLUMN a SET NOT NULL;
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: shop-api}
    spec: {this: is not checked}
    ---
    apiVersion: dbmigrate.io/v1alpha1
    kind: DatabaseMigration
    metadata: {name: from-cm, namespace: shop}
    spec:
      migrationId: "20240115120000_from_cm"
      database: {dsnSecretRef: {name: db, key: dsn}}
      steps:
        - name: expand
          sql:
            upFrom: {configMapKeyRef: {name: demo-sql, key: up.sql}}
            downFrom: {configMapKeyRef: {name: demo-sql, key: down.sql}}
    """
    path = write(tmp_path, "all.yaml", text)
    code, out = run_json(capsys, path)
    assert code == 1
    assert [(f["line"], f["rule"], f["direction"]) for f in out["findings"]] == [
        (7, "adding-not-nullable-field", "up"),  # line 2 of the ConfigMap's up.sql
        (21, "sql-not-available", "down"),  # the step's line: down.sql is not in the ConfigMap
    ]


def test_yaml_without_migrations_is_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "cm.yml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    code, out = run_json(capsys, path)
    assert (code, out["findings"]) == (0, [])


def test_server_version_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path, "1.up.sql", "ALTER TABLE users ADD COLUMN IF NOT EXISTS f bool DEFAULT false;\n"
    )
    assert main(["lint", "--server-version", "10", path]) == 1
    assert "adding-field-with-volatile-default" in capsys.readouterr().out
    assert main(["lint", "--server-version", "15", path]) == 0
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------
# output formats


def test_text_output_has_no_colour_when_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "1.up.sql",
        "-- dbmigrate:ignore ban-drop-column never read since v3\n"
        "ALTER TABLE users DROP COLUMN legacy;\n"
        "CREATE INDEX i ON users (a);\n",
    )
    assert main(["lint", path]) == 1
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    lines = out.splitlines()
    assert lines[0] == f"{path}:2: suppressed error ban-drop-column"
    assert lines[2] == "    reason: never read since v3"
    assert lines[3] == f"{path}:3: error require-concurrent-index-creation"
    assert lines[4].startswith("    `CREATE INDEX i ON users (a)` takes SHARE on users")
    assert lines[-1] == "1 file: 1 error(s), 0 warning(s), 1 suppressed"


def test_text_output_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.up.sql", "SELECT 1;\n")
    b = write(tmp_path, "b.up.sql", "SELECT 2;\n")
    assert main(["lint", a, b]) == 0
    assert capsys.readouterr().out == "2 files: no findings\n"


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        "1.up.sql",
        "-- dbmigrate:ignore require-concurrent-index-creation tiny table\n"
        "CREATE INDEX i ON users (a);\n"
        "ALTER TABLE users ADD COLUMN n integer;\n",
    )
    code, out = run_json(capsys, path)
    assert code == 0
    assert (out["errors"], out["warnings"], out["suppressed"]) == (0, 1, 1)
    first = out["findings"][0]
    assert first == {
        "file": path,
        "line": 2,
        "step": None,
        "direction": "up",
        "statement": 0,
        "rule": "require-concurrent-index-creation",
        "severity": "error",
        "message": first["message"],
        "suppressed": True,
        "reason": "tiny table",
    }
    assert first["message"].startswith("`CREATE INDEX i ON users (a)`")


def test_github_annotations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "m.yaml", MIGRATION)
    assert main(["lint", "--format", "github", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        f"::error file={path},line=15,title=dbmigrate require-concurrent-index-creation "
        "(step expand)::`CREATE INDEX users_a ON users (a)` takes SHARE on users"
    )
    assert lines[-1] == "dbmigrate lint: 1 error(s), 0 warning(s), 0 suppressed"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            "ALTER TABLE users ADD COLUMN n integer;\n",
            "::warning file={path},line=1,title=dbmigrate prefer-bigint-over-int::",
            id="warning",
        ),
        pytest.param(
            "-- dbmigrate:ignore require-concurrent-index-creation 100% safe, really\n"
            "CREATE INDEX i ON users (a);\n",
            "(suppressed: 100%25 safe, really)",
            id="suppressed-is-a-notice-with-escaped-percent",
        ),
    ],
)
def test_github_annotation_kinds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str, expected: str
) -> None:
    path = write(tmp_path, "1.up.sql", sql)
    assert main(["lint", "--format", "github", path]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert expected.format(path=path) in first
    if "suppressed" in expected:
        assert first.startswith("::notice ")


def test_github_property_escaping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "a,b:c"
    directory.mkdir()
    path = write(directory, "1.up.sql", "CREATE INDEX i ON users (a);\n")
    assert main(["lint", "--format", "github", path]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert "a%2Cb%3Ac" in first
    assert "a,b:c" not in first.split("::")[1]
