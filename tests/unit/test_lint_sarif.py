"""`dbmigrate lint --format sarif`: a SARIF 2.1.0 log as GitHub code scanning reads it (one run,
the tool and its rules, a result per finding with a rule id, level, message and a location with
a relative URI and a start line; suppressed findings carry an in-source suppression), and
`--dsn`/`--pg-version` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbmigrate.cli import main
from dbmigrate.core.lint import RULES

SQL = (
    "CREATE INDEX users_email ON users (email);\n"
    "-- dbmigrate:ignore require-concurrent-index-creation tiny table\n"
    "CREATE INDEX users_at ON users (created_at);\n"
    "ALTER TABLE users ADD COLUMN n integer;\n"
)


def _sarif(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "1.up.sql").write_text(SQL)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        code = main(["lint", "--format", "sarif", *extra, "migrations/1.up.sql"])
    assert code == 1
    return json.loads(capsys.readouterr().out)


def test_sarif_log_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _sarif(tmp_path, capsys)
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "dbmigrate"
    assert [r["id"] for r in driver["rules"]] == list(RULES)
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
    results = run["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [
        ("require-concurrent-index-creation", "error"),
        ("require-concurrent-index-creation", "error"),
        ("prefer-bigint-over-int", "warning"),
    ]
    for r in results:
        assert driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
        assert r["message"]["text"]
        (location,) = r["locations"]
        physical = location["physicalLocation"]
        assert physical["artifactLocation"]["uri"] == "migrations/1.up.sql"
        assert physical["region"]["startLine"] >= 1
    assert [r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in results] == [
        1,
        3,
        4,
    ]
    assert "suppressions" not in results[0]
    assert results[1]["suppressions"] == [{"kind": "inSource", "justification": "tiny table"}]


def test_pg_version_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "1.up.sql"
    path.write_text("ALTER TABLE events DETACH PARTITION events_2025_01 CONCURRENTLY;\n")
    assert main(["lint", "--format", "json", "--pg-version", "13", str(path)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [f["rule"] for f in out["findings"]] == ["unsupported-on-server-version"]
    assert main(["lint", "--format", "json", "--server-version", "14", str(path)]) == 0


def test_malformed_dsn_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "1.up.sql"
    path.write_text("SELECT 1;\n")
    assert main(["lint", "--dsn", "postgresql://u:s3cr%zzt@h/db", str(path)]) == 2
    err = capsys.readouterr().err
    assert "malformed" in err
    assert "s3cr" not in err


def test_info_findings_are_github_notices_and_sarif_notes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GitHub's workflow commands know error, warning and notice; SARIF error, warning, note."""
    from dbmigrate.commands.lint_output import Located, print_findings
    from dbmigrate.core.lint import Finding

    finding = Finding(
        rule="blocking-lock",
        severity="info",
        message="small: over in moments",
        step=None,
        line=3,
        direction="up",
    )
    print_findings([Located("m/1.up.sql", 3, finding)], "github", 1)
    first = capsys.readouterr().out.splitlines()[0]
    assert (
        first
        == "::notice file=m/1.up.sql,line=3,title=dbmigrate blocking-lock::small: over in moments"
    )
    print_findings([Located("m/1.up.sql", 3, finding)], "sarif", 1)
    (result,) = json.loads(capsys.readouterr().out)["runs"][0]["results"]
    assert result["level"] == "note"
