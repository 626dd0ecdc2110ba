"""Failpoints (dbmigrate.failpoints): parsing the switch, and what each action does.

`crash` (os._exit) is exercised for real by tests/e2e/test_fault_matrix.py.
"""

from __future__ import annotations

import time

import pytest

from dbmigrate import failpoints


@pytest.mark.parametrize(
    ("spec", "active"),
    [
        pytest.param("", {}, id="unset"),
        pytest.param(
            "runner.job-created=crash, rollback.step-reverted=sleep:0.5",
            {"runner.job-created": "crash", "rollback.step-reverted": "sleep:0.5"},
            id="two-points",
        ),
    ],
)
def test_parse(spec: str, active: dict[str, str]) -> None:
    assert failpoints._parse(spec) == active


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("runner.job-creatd=crash", id="misspelt-point"),
        pytest.param("runner.job-created=explode", id="unknown-action"),
    ],
)
def test_a_wrong_switch_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=failpoints.ENV):
        failpoints._parse(spec)


def test_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        failpoints,
        "_ACTIVE",
        {"runner.job-created": "raise", "rollback.step-reverted": "sleep:0.2"},
    )
    with pytest.raises(failpoints.FailpointError, match=r"runner\.job-created"):
        failpoints.hit("runner.job-created")
    started = time.monotonic()
    failpoints.hit("rollback.step-reverted")
    assert time.monotonic() - started >= 0.2
    failpoints.hit("runner.history-written")  # not switched on: nothing happens


def test_every_point_is_placed_in_the_code() -> None:
    from pathlib import Path

    source = "".join(
        p.read_text()
        for p in Path(failpoints.__file__).parent.rglob("*.py")
        if p.name != "failpoints.py"
    )
    assert [name for name in failpoints.POINTS if f'hit("{name}")' not in source] == []
