"""README.md's generated parts are current, it names the two commands CI relies on, and it
explains every condition reason."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dbmigrate.api import reasons

ROOT = Path(__file__).resolve().parents[2]


def _updater():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "hack/update-readme.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_current() -> None:
    text = (ROOT / "README.md").read_text()
    assert _updater().updated(text) == text, "README.md is out of date: run `make docs`"


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text
    assert "make test" in text
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_condition_reason_is_in_the_status_table() -> None:
    """Alerts and scripts match on reasons: each one the operator writes is explained."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("### Status and conditions") : text.index("## Command line")]
    assert [r for r in reasons.ALL_REASONS if f"`{r}`" not in table] == []
