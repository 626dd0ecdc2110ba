"""The dependency audit's verdict on pip-audit's report (dbmigrate_dev.audit.judge): a
vulnerability or a partial audit fails, an audit that could not run is said loudly and fails
only where it is required."""

from __future__ import annotations

from typing import Any

import pytest

from dbmigrate_dev.audit import judge


def _ok(name: str) -> dict[str, Any]:
    return {"name": name, "version": "1.0", "vulns": []}


def _skip(name: str) -> dict[str, Any]:
    return {"name": name, "skip_reason": f"Dependency not found on PyPI: {name} (1.0)"}


VULN = {
    "name": "jinja2",
    "version": "2.4.1",
    "vulns": [{"id": "PYSEC-2014-8", "fix_versions": ["2.7.2"]}],
}


@pytest.mark.parametrize(
    ("report", "error", "required", "code", "says"),
    [
        pytest.param({"dependencies": [_ok("a"), _ok("b")]}, "", False, 0, "2 locked", id="clean"),
        pytest.param({"dependencies": [_ok("a"), VULN]}, "", False, 1, "PYSEC-2014-8", id="vuln"),
        pytest.param(
            {"dependencies": [_ok("a"), _skip("b")]}, "", False, 1, "b: not audited", id="partial"
        ),
        pytest.param(
            {"dependencies": [_skip("a"), _skip("b")]},
            "No known vulnerabilities found",
            False,
            0,
            "AUDIT NOT DONE: no locked package could be audited: 2 skipped",
            id="mirror-without-metadata",
        ),
        pytest.param({"dependencies": [_skip("a")]}, "", True, 2, "AUDIT NOT DONE", id="required"),
        pytest.param(
            None,
            "Traceback ...\nConnectionError: Failed to resolve 'api.osv.dev'",
            False,
            0,
            "Failed to resolve 'api.osv.dev'",
            id="service-unreachable",
        ),
        pytest.param(None, "", True, 2, "no report", id="no-report-required"),
    ],
)
def test_verdict(
    report: dict[str, Any] | None, error: str, required: bool, code: int, says: str
) -> None:
    verdict = judge(report, error, required=required)
    assert verdict.code == code
    assert any(says in line for line in verdict.lines), verdict.lines


def test_a_vulnerability_names_its_fix() -> None:
    (line, _) = judge({"dependencies": [VULN]}, "", required=False).lines
    assert line == "jinja2 2.4.1: PYSEC-2014-8 (fixed in: 2.7.2)"
