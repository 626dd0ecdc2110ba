"""What `kubectl dbmigrate get`, `list` and `history` draw (core.display).

Aspects: the tree of steps with state symbols, kinds and durations; a backfill's bar with its
rows, rate and ETA; the analysis measurements against their thresholds; the rollout revision
and what a rollback undid; the checklist; the post-deployment watch with its findings; every
line within 80 columns with long names and messages cut by `…`; colours only on a terminal;
the `-o json` facts; the list and history tables; which Job `logs` reads.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from dbmigrate.commands.logs import job_of
from dbmigrate.core.display import (
    Screen,
    bar,
    fit,
    human_duration,
    list_rows,
    render_get,
    render_history,
    render_list,
    summarize,
)

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LONG = "a-step-whose-name-is-much-longer-than-any-column-could-hold-forty-nine"


def migration(status: dict[str, Any], *, steps: list[dict[str, Any]] | None = None) -> dict:
    return {
        "metadata": {
            "name": "add-email-verified",
            "namespace": "shop",
            "creationTimestamp": "2026-12-02T11:58:00Z",
        },
        "spec": {
            "migrationId": "20240115120000_add_email_verified_column",
            "steps": steps
            or [
                {"name": "expand", "sql": {"up": "ALTER TABLE users ADD c int"}},
                {"name": "fill", "backfill": {"table": "users", "set": "c = 0"}},
                {"name": "release", "awaitRollout": {"image": "app:v2"}},
                {"name": "contract", "sql": {"up": "ALTER TABLE users DROP d"}},
            ],
        },
        "status": status,
    }


RUNNING = {
    "phase": "Progressing",
    "progress": "1/4",
    "currentStep": "fill",
    "startedAt": "2026-12-02T11:59:00Z",
    "targetRevision": "7",
    "steps": [
        {
            "name": "expand",
            "state": "Succeeded",
            "startedAt": "2026-12-02T11:59:00Z",
            "finishedAt": "2026-12-02T11:59:00.400000Z",
        },
        {
            "name": "fill",
            "state": "Running",
            "startedAt": "2026-12-02T11:59:30Z",
            "job": "add-email-verified-fill-1a2b",
            "backfill": {
                "rowsDone": 45000,
                "rowsEstimated": 100000,
                "percent": 45,
                "rowsPerSecond": 1500,
                "eta": "37s",
            },
        },
    ],
    "analysis": {
        "last": [
            {
                "metric": "error-rate",
                "value": 0.0042,
                "threshold": "max 0.01",
                "result": "Successful",
            },
            {
                "metric": "p99-latency",
                "value": 0.91,
                "threshold": "max 0.5",
                "result": "Failed",
                "message": "0.91 > max 0.5",
            },
        ]
    },
    "checklist": {
        "complete": True,
        "items": [
            {"name": "Lint", "satisfied": True, "required": True, "detail": "no error"},
            {"name": "Approval", "satisfied": True, "required": True, "detail": "by alice"},
        ],
        "approvedBy": "alice",
    },
    "conditions": [{"type": "Ready", "status": "False", "reason": "StepRunning"}],
}

ROLLED_BACK = {
    "phase": "RolledBack",
    "progress": "2/4",
    "startedAt": "2026-12-02T11:59:00Z",
    "finishedAt": "2026-12-02T11:59:40Z",
    "targetRevision": "8",
    "steps": [
        {"name": "expand", "state": "RolledBack", "startedAt": "2026-12-02T11:59:00Z"},
        {"name": "fill", "state": "RolledBack", "startedAt": "2026-12-02T11:59:10Z"},
        # left waiting when the rollback started: its time ends with the migration's
        {"name": "release", "state": "Waiting", "startedAt": "2026-12-02T11:59:30Z"},
    ],
    "rollback": {
        "reason": "SLOBreach",
        "trigger": "analysis",
        "undoneToRevision": "7",
        "rolloutUndone": True,
        "step": "release",
        "stepsReverted": ["fill", "expand"],
        "argoCD": {"application": "shop", "namespace": "argocd", "autoSyncPaused": True},
    },
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "RolledBack",
            "message": "p99-latency 0.91 > max 0.5 for 3 consecutive measurements; " * 4,
        }
    ],
}

WATCHING = {
    "phase": "Succeeded",
    "progress": "4/4",
    "startedAt": "2026-12-02T11:50:00Z",
    "finishedAt": "2026-12-02T11:55:00Z",
    "postDeploy": {
        "state": "Watching",
        "endsAt": "2026-12-02T13:00:00Z",
        "findings": [
            {
                "kind": "QueryRegression",
                "message": "SELECT * FROM users WHERE email = $1: mean 4.2 ms, 3.5x its "
                "mean before the migration (1.2 ms) over 250 calls",
                "at": "2026-12-02T11:59:00Z",
            },
            {
                "kind": "UnusedIndex",
                "message": "users_email_verified_idx was not scanned",
                "at": "2026-12-02T11:59:00Z",
            },
        ],
    },
}


def plain(obj: dict[str, Any], tty: bool = False) -> list[str]:
    return [ANSI.sub("", line) for line in render_get(obj, NOW, Screen(tty=tty))]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(
            RUNNING,
            [
                "Status:      ◌ Progressing",
                "Rollout:     revision 7 at the start",
                "├── ✔ expand    sql          Succeeded  400ms",
                "├── ◌ fill      backfill     Running    30s",
                "│   └── [#######---------]  45%  45,000/100,000 rows  1,500 rows/s  ETA 37s",
                "├── • release   awaitRollout Pending",
                "└── • contract  sql          Pending",
                "  ✔ error-rate  0.0042 (limit max 0.01)",
                "  ✖ p99-latency  0.91 (limit max 0.5)",
                "      0.91 > max 0.5",
                "Checklist:   complete",
                "  Ready=False StepRunning",
            ],
            id="a-running-backfill",
        ),
        pytest.param(
            ROLLED_BACK,
            [
                "Status:      ↺ RolledBack",
                "Rollout:     revision 8 at the start, rolled back to revision 7",
                "Rollback:    SLOBreach (during step release)",
                "Argo CD:     automated sync of argocd/shop off since the rollback",
                "├── ↺ expand    sql          RolledBack",
                "├── ↺ fill      backfill     RolledBack",
                "├── ॥ release   awaitRollout Waiting    10s",
            ],
            id="a-rolled-back-migration",
        ),
        pytest.param(
            WATCHING,
            [
                "Status:      ✔ Succeeded",
                "Post-deploy: Watching, 1h00m left",
                "  ✖ UnusedIndex: users_email_verified_idx was not scanned",
            ],
            id="a-watch-with-findings",
        ),
    ],
)
def test_get_shows(status: dict[str, Any], expected: list[str]) -> None:
    lines = plain(migration(status))
    for want in expected:
        assert any(line.rstrip() == want.rstrip() for line in lines), (want, lines)


def test_the_tree_aligns_the_step_names() -> None:
    lines = plain(migration(RUNNING))
    tree = [line for line in lines if line.startswith(("├── ", "└── "))]
    # every step's kind starts in the same column
    assert (
        len(
            {
                line.index(kind)
                for line, kind in zip(tree, ["sql", "backfill", "await", "sql"], strict=True)
            }
        )
        == 1
    )


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "plain"])
@pytest.mark.parametrize(
    "status", [RUNNING, ROLLED_BACK, WATCHING], ids=["running", "rolled-back", "watching"]
)
def test_every_line_fits_80_columns(status: dict[str, Any], tty: bool) -> None:
    steps = [
        {"name": LONG, "sql": {"up": "SELECT 1"}},
        {"name": "fill", "backfill": {"table": "t", "set": "c = 0"}},
    ]
    obj = migration({**status, "currentStep": LONG}, steps=steps)
    obj["metadata"]["name"] = LONG + "-" + LONG
    raw = render_get(obj, NOW, Screen(tty=tty))
    assert all(len(ANSI.sub("", line)) <= 80 for line in raw), [x for x in raw if len(x) > 80]
    assert any("…" in line for line in raw), "long names are cut"
    assert any(ANSI.search(line) for line in raw) is tty, "colours only on a terminal"


def test_a_long_condition_message_is_cut_with_an_ellipsis() -> None:
    (line,) = [x for x in plain(migration(ROLLED_BACK)) if "Ready=False" in x]
    assert len(line) == 80
    assert line.endswith("…")


@pytest.mark.parametrize(
    ("percent", "tty", "expected"),
    [
        pytest.param(0, False, "[----------------]   0%", id="none"),
        pytest.param(45, False, "[#######---------]  45%", id="plain"),
        pytest.param(100, True, "[████████████████] 100%", id="terminal-done"),
        pytest.param(None, False, "[----------------]   ?%", id="unknown"),
        pytest.param(130, False, "[################] 100%", id="capped"),
    ],
)
def test_bar(percent: int | None, tty: bool, expected: str) -> None:
    assert bar(percent, tty=tty) == expected


@pytest.mark.parametrize(
    ("text", "width", "expected"),
    [
        pytest.param("short", 10, "short", id="fits"),
        pytest.param("exactly-10", 10, "exactly-10", id="exact"),
        pytest.param("eleven-char", 10, "eleven-ch…", id="cut"),
        pytest.param("two\nlines", 20, "two lines", id="one-line"),
    ],
)
def test_fit(text: str, width: int, expected: str) -> None:
    assert fit(text, width) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        pytest.param(None, "-", id="unknown"),
        pytest.param(0, "<1s", id="same-second"),
        pytest.param(0.4, "400ms", id="ms"),
        pytest.param(12.7, "12s", id="s"),
        pytest.param(185, "3m05s", id="min"),
        pytest.param(7440, "2h04m", id="h"),
        pytest.param(3 * 86400 + 4 * 3600, "3d4h", id="d"),
    ],
)
def test_human_duration(seconds: float | None, expected: str) -> None:
    assert human_duration(seconds) == expected


def test_json_summary_has_the_facts() -> None:
    s = summarize(migration(RUNNING), NOW)
    assert (s["name"], s["namespace"], s["phase"], s["progress"]) == (
        "add-email-verified",
        "shop",
        "Progressing",
        "1/4",
    )
    assert [(x["name"], x["kind"], x["state"]) for x in s["steps"]] == [
        ("expand", "sql", "Succeeded"),
        ("fill", "backfill", "Running"),
        ("release", "awaitRollout", "Pending"),
        ("contract", "sql", "Pending"),
    ]
    assert s["steps"][1]["backfill"]["rowsPerSecond"] == 1500
    assert s["steps"][1]["durationSeconds"] == 30
    assert s["analysis"]["last"][1]["result"] == "Failed"
    assert s["targetRevision"] == "7"
    rolled = summarize(migration(ROLLED_BACK), NOW)
    assert rolled["undoneToRevision"] == "7"
    assert rolled["rollback"]["stepsReverted"] == ["fill", "expand"]


@pytest.mark.parametrize("all_namespaces", [False, True], ids=["namespace", "all"])
def test_list(all_namespaces: bool) -> None:
    long = migration(RUNNING)
    long["metadata"]["name"] = LONG
    rows = list_rows([migration(RUNNING), migration(ROLLED_BACK), long], NOW)
    lines = render_list(rows, all_namespaces=all_namespaces)
    head = ["NAME", "PHASE", "PROGRESS", "STEP", "AGE"]
    assert lines[0].split() == (["NAMESPACE", *head] if all_namespaces else head)
    first = lines[1].split()
    assert first[-5:] == ["add-email-verified", "Progressing", "1/4", "fill", "2m00s"]
    assert lines[2].split()[-5:] == ["add-email-verified", "RolledBack", "2/4", "-", "2m00s"]
    assert "…" in lines[3]
    assert all(len(line) <= 80 for line in lines)


def test_list_of_many_long_names_keeps_every_column() -> None:
    objs = []
    for i in range(3):
        obj = migration({**RUNNING, "currentStep": LONG})
        obj["metadata"]["name"] = f"{LONG}-{i}"
        obj["metadata"]["namespace"] = f"{LONG}-ns"
        objs.append(obj)
    lines = render_list(list_rows(objs, NOW), all_namespaces=True)
    assert lines[0].split() == ["NAMESPACE", "NAME", "PHASE", "PROGRESS", "STEP", "AGE"]
    assert all(len(line) <= 80 for line in lines)
    assert all(line.split()[-4:-2] == ["Progressing", "1/4"] for line in lines[1:])
    assert all(line.endswith("2m00s") for line in lines[1:])


def test_history_table() -> None:
    rows = [
        {
            "step": "expand",
            "kind": "sql",
            "direction": "up",
            "appliedAt": "2026-12-02T11:59:00.123+00:00",
            "durationMs": 412,
        },
        {
            "step": "expand",
            "kind": "sql",
            "direction": "down",
            "appliedAt": "2026-12-02T12:01:00+00:00",
            "durationMs": 65000,
        },
    ]
    lines = render_history(rows)
    assert lines[0].split() == ["STEP", "KIND", "DIRECTION", "APPLIED", "AT", "DURATION"]
    assert lines[1].split() == ["expand", "sql", "up", "2026-12-02", "11:59:00", "412ms"]
    assert lines[2].split() == ["expand", "sql", "down", "2026-12-02", "12:01:00", "1m05s"]


@pytest.mark.parametrize(
    ("step", "status", "expected"),
    [
        pytest.param("fill", RUNNING, ("add-email-verified-fill-1a2b", "step 'fill'"), id="named"),
        pytest.param(None, RUNNING, ("add-email-verified-fill-1a2b", "step 'fill'"), id="current"),
        pytest.param("expand", RUNNING, (None, "step 'expand'"), id="no-job"),
        pytest.param(
            "backup",
            {"backup": {"state": "Verified", "job": "m-backup-1"}},
            ("m-backup-1", "the backup"),
            id="backup",
        ),
        pytest.param(
            None,
            {**RUNNING, "currentStep": "release"},
            ("add-email-verified-fill-1a2b", "step 'fill'"),
            id="last-with-a-job",
        ),
    ],
)
def test_logs_finds_the_job(
    step: str | None, status: dict[str, Any], expected: tuple[str | None, str]
) -> None:
    assert job_of(migration(status), step) == expected


def test_logs_names_the_steps_when_the_step_is_unknown() -> None:
    with pytest.raises(LookupError, match=r"no step 'nope' in its status \(steps: expand, fill\)"):
        job_of(migration(RUNNING), "nope")
