"""`dbmigrate plan -f examples/<name>.yaml` output, kept under tests/golden/plan/<name>.md.

Every example holding a DatabaseMigration is planned (no database: no estimates, server 15
assumed) and compared with its golden file. After an intended change, rewrite them with
`UPDATE_GOLDEN=1 pytest tests/unit/test_plan_golden.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dbmigrate.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GOLDEN = ROOT / "tests" / "golden" / "plan"


def _migration_examples() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.yaml") if "kind: DatabaseMigration" in p.read_text())


def test_the_three_examples_exist() -> None:
    names = {p.stem for p in _migration_examples()}
    assert {"add-email-verified", "rename-column", "index-concurrently"} <= names


@pytest.mark.parametrize("example", _migration_examples(), ids=lambda p: p.stem)
def test_plan_matches_golden(
    example: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBMIGRATE_DSN", raising=False)
    monkeypatch.chdir(ROOT)
    assert main(["plan", "-f", str(example.relative_to(ROOT))]) == 0
    output = capsys.readouterr().out
    golden = GOLDEN / f"{example.stem}.md"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(output, encoding="utf-8")
    assert golden.exists(), f"{golden} missing: run with UPDATE_GOLDEN=1 and review it"
    assert output == golden.read_text(encoding="utf-8")
