"""The Argo CD health check for DatabaseMigration (`hack/argocd/health.lua`), run in a real Lua
runtime (lupa) the way Argo CD runs it: the live object in the global `obj`, a table with
`status` and `message` returned.

Aspects covered:
- every phase, with the kstatus conditions the operator writes for it;
- Ready True/False, Stalled, `spec.suspend`, no status at all, an empty status;
- a stale status (observedGeneration < generation) is Progressing whatever it says;
- messages come from the Ready condition (or its reason), prefixed with phase, step, progress;
- Lua 5.1 (the dialect of Argo CD's gopher-lua) and 5.4 agree, with only the libraries Argo CD
  opens by default (no os, io);
- the script embedded in `hack/argocd/argocd-cm-patch.yaml` is this very script, under the key
  Argo CD reads.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "argocd" / "health.lua"
PATCH = ROOT / "hack" / "argocd" / "argocd-cm-patch.yaml"
KEY = "resource.customizations.health.dbmigrate.io_DatabaseMigration"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
RUNTIMES = ["lua51", "lua54"]


def _lua_value(runtime: Any, value: Any) -> Any:
    """Python JSON → Lua, as Argo CD hands the object over: objects and arrays become tables
    (arrays 1-based), nulls are absent."""
    if isinstance(value, dict):
        return runtime.table_from(
            {k: _lua_value(runtime, v) for k, v in value.items() if v is not None}
        )
    if isinstance(value, list):
        return runtime.table_from([_lua_value(runtime, v) for v in value])
    return value


def run_health(obj: dict[str, Any], script: str | None = None, dialect: str = "lua51") -> dict:
    lupa = importlib.import_module(f"lupa.{dialect}")
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua_globals = runtime.globals()
    for name in ("os", "io", "debug", "dofile", "loadfile", "require", "package"):
        lua_globals[name] = None  # Argo CD's sandbox opens base, table, string, math only
    lua_globals.obj = _lua_value(runtime, obj)
    result = runtime.execute(script if script is not None else SCRIPT.read_text())
    assert result is not None, "the script must return a table"
    return dict(result.items())


def migration(
    phase: str | None = None,
    *,
    ready: tuple[str, str, str] | None = None,
    stalled: tuple[str, str, str] | None = None,
    generation: int = 1,
    observed: int | None = 1,
    suspend: bool | None = None,
    step: str | None = None,
    progress: str | None = None,
    status: bool = True,
) -> dict[str, Any]:
    """A DatabaseMigration as the API server returns it; `ready`/`stalled` are
    (status, reason, message)."""
    obj: dict[str, Any] = {
        "apiVersion": "dbmigrate.io/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": {"name": "add-email-verified", "namespace": "shop", "generation": generation},
        "spec": {"migrationId": "20240115120000_add_email_verified_column", "suspend": suspend},
    }
    if not status:
        return obj
    conditions = []
    for type_, cond in (("Ready", ready), ("Stalled", stalled)):
        if cond is not None:
            conditions.append(
                {
                    "type": type_,
                    "status": cond[0],
                    "reason": cond[1],
                    "message": cond[2],
                    "lastTransitionTime": "2024-01-15T12:00:00Z",
                    "observedGeneration": observed,
                }
            )
    obj["status"] = {
        "observedGeneration": observed,
        "phase": phase,
        "currentStep": step,
        "progress": progress,
        "conditions": conditions or None,
    }
    return obj


CASES = [
    pytest.param(
        migration(status=False),
        "Progressing",
        "Waiting for the dbmigrate operator to pick up the migration",
        id="no-status",
    ),
    pytest.param(
        {**migration(status=False), "status": {}},
        "Progressing",
        "Waiting for the dbmigrate operator to pick up the migration",
        id="empty-status",
    ),
    pytest.param(
        migration("Pending", ready=("False", "Pending", "Waiting to start")),
        "Progressing",
        "Pending: Waiting to start",
        id="pending",
    ),
    pytest.param(
        migration(
            "Progressing",
            ready=("False", "StepRunning", "backfill: 1200000/5000000 rows (24%)"),
            step="backfill",
            progress="3/5",
        ),
        "Progressing",
        "Progressing, step backfill (3/5): backfill: 1200000/5000000 rows (24%)",
        id="progressing-step-running",
    ),
    pytest.param(
        migration(
            "Waiting",
            ready=("False", "AnotherMigrationRunning", "add-index holds the database lock"),
            step="expand",
            progress="0/5",
        ),
        "Progressing",
        "Waiting, step expand (0/5): add-index holds the database lock",
        id="waiting-for-database",
    ),
    pytest.param(
        migration(
            "Waiting",
            ready=("False", "WaitingForRollout", "shop-api: 1 of 3 updated replicas available"),
            step="release-v2",
        ),
        "Progressing",
        "Waiting, step release-v2: shop-api: 1 of 3 updated replicas available",
        id="waiting-for-rollout",
    ),
    pytest.param(
        migration("RollingBack", ready=("False", "RollingBack", "error-rate 0.31 > max 0.05")),
        "Progressing",
        "RollingBack: error-rate 0.31 > max 0.05",
        id="rolling-back",
    ),
    pytest.param(
        migration("Suspended", ready=("False", "Suspended", "suspended after step index")),
        "Suspended",
        "Suspended: suspended after step index",
        id="phase-suspended",
    ),
    pytest.param(
        migration(
            "Progressing",
            ready=("False", "StepRunning", "backfill running"),
            suspend=True,
            generation=2,
            observed=2,
        ),
        "Suspended",
        "Progressing: backfill running",
        id="spec-suspend-while-running",
    ),
    pytest.param(
        migration("Succeeded", ready=("True", "Succeeded", "5 steps applied in 4m10s")),
        "Healthy",
        "Succeeded: 5 steps applied in 4m10s",
        id="succeeded",
    ),
    pytest.param(
        migration("Succeeded", ready=("True", "Succeeded", ""), suspend=True),
        "Healthy",
        "Succeeded: Succeeded",
        id="succeeded-suspend-is-moot-message-from-reason",
    ),
    pytest.param(
        migration(
            "Failed",
            ready=("False", "SqlError", 'column "email" does not exist'),
            stalled=("True", "SqlError", 'column "email" does not exist'),
            step="contract",
            progress="4/5",
        ),
        "Degraded",
        'Failed, step contract (4/5): column "email" does not exist',
        id="failed-sql-error",
    ),
    pytest.param(
        migration(
            "Failed",
            ready=("False", "AwaitingManualRollback", "annotate dbmigrate.io/rollback=requested"),
        ),
        "Degraded",
        "Failed: annotate dbmigrate.io/rollback=requested",
        id="failed-awaiting-manual-rollback",
    ),
    pytest.param(
        migration("Failed", ready=None),
        "Degraded",
        "Failed: Migration Failed",
        id="failed-without-conditions",
    ),
    pytest.param(
        migration(
            "RolledBack",
            ready=("False", "RolledBack", "error-rate 0.31 > max 0.05 (2 consecutive)"),
        ),
        "Degraded",
        "RolledBack: error-rate 0.31 > max 0.05 (2 consecutive)",
        id="rolled-back",
    ),
    pytest.param(
        migration(
            "Pending",
            ready=("False", "SecretNotFound", "Secret shop-db not found"),
            stalled=("True", "SecretNotFound", "Secret shop-db not found"),
        ),
        "Degraded",
        "Pending: Secret shop-db not found",
        id="stalled-secret-missing",
    ),
    pytest.param(
        migration(
            "Progressing",
            ready=("False", "StepRunning", "running"),
            stalled=("False", "StepRunning", ""),
        ),
        "Progressing",
        "Progressing: running",
        id="stalled-false-is-ignored",
    ),
    pytest.param(
        migration("Succeeded", ready=("True", "Succeeded", "done"), generation=2, observed=1),
        "Progressing",
        "Waiting for the dbmigrate operator to observe generation 2 (last observed 1)",
        id="stale-succeeded",
    ),
    pytest.param(
        migration("Failed", ready=("False", "SqlError", "boom"), generation=3, observed=2),
        "Progressing",
        "Waiting for the dbmigrate operator to observe generation 3 (last observed 2)",
        id="stale-failed",
    ),
    pytest.param(
        migration("Pending", generation=2, observed=None),
        "Progressing",
        "Waiting for the dbmigrate operator to observe generation 2",
        id="status-without-observed-generation",
    ),
]


@pytest.mark.parametrize("dialect", RUNTIMES)
@pytest.mark.parametrize(("obj", "status", "message"), CASES)
def test_health(obj: dict[str, Any], status: str, message: str, dialect: str) -> None:
    hs = run_health(obj, dialect=dialect)
    assert hs == {"status": status, "message": message}


@pytest.mark.parametrize(
    "phase",
    [
        "Pending",
        "Progressing",
        "Waiting",
        "Suspended",
        "Succeeded",
        "Failed",
        "RollingBack",
        "RolledBack",
    ],
)
def test_every_phase_has_a_valid_argo_status(phase: str) -> None:
    """The API's phases (API.md), each with the Ready condition the operator would write."""
    ready = ("True", "Succeeded", "ok") if phase == "Succeeded" else ("False", "StepRunning", "x")
    hs = run_health(migration(phase, ready=ready))
    assert hs["status"] in ARGO_STATUSES
    assert isinstance(hs["message"], str)
    assert hs["message"]


def test_ready_condition_observed_generation_is_a_fallback() -> None:
    """A status written before status.observedGeneration existed still counts as current when
    the Ready condition carries the generation."""
    obj = migration("Succeeded", ready=("True", "Succeeded", "done"), generation=4, observed=4)
    del obj["status"]["observedGeneration"]
    assert run_health(obj)["status"] == "Healthy"


def test_argocd_cm_patch_embeds_this_script() -> None:
    patch = yaml.safe_load(PATCH.read_text())
    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"][KEY] == SCRIPT.read_text()


def test_argocd_cm_patch_script_runs() -> None:
    script = yaml.safe_load(PATCH.read_text())["data"][KEY]
    obj = migration("Succeeded", ready=("True", "Succeeded", "done"))
    assert run_health(obj, script=script) == {"status": "Healthy", "message": "Succeeded: done"}
