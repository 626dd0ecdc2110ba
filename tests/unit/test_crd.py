"""The CRD under crds/ is exactly what the pydantic models render, and says what API.md says.

Aspects: the checked-in YAML is in sync with the models; names, short names, printer columns,
status subresource; defaults from API.md; the CEL rules exist; examples validate against the
models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from dbmigrate.api.crd import build_crd, render_crd_yaml
from dbmigrate.api.models import Analysis, DatabaseMigration, Safety

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "dbmigrate.io_databasemigrations.yaml"


def test_checked_in_crd_matches_the_models() -> None:
    assert CRD_FILE.read_text() == render_crd_yaml(), (
        "crds/ is out of date: run `make crds` and commit the result"
    )


def _schema() -> dict[str, Any]:
    version = build_crd()["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_names_columns_and_subresources() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "databasemigrations.dbmigrate.io"
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["dbm", "dbmig"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    cols = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert cols == {
        "Phase": ".status.phase",
        "Step": ".status.currentStep",
        "Progress": ".status.progress",
        "Age": ".metadata.creationTimestamp",
    }


@pytest.mark.parametrize(
    ("path", "default"),
    [
        pytest.param(("safety", "lockTimeout"), "1s", id="lock-timeout"),
        pytest.param(("safety", "lockRetries"), 30, id="lock-retries"),
        pytest.param(("safety", "lint"), "Enforce", id="lint"),
        pytest.param(("safety", "maxBlockedDuration"), "2s", id="max-blocked-duration"),
        pytest.param(("rollback", "policy"), "Automatic", id="policy"),
        pytest.param(("rollback", "argoCD", "pauseAutoSync"), True, id="argocd"),
        pytest.param(("analysis", "interval"), "30s", id="interval"),
        pytest.param(("analysis", "failureLimit"), 2, id="failure-limit"),
        pytest.param(("analysis", "inconclusiveLimit"), 3, id="inconclusive-limit"),
        pytest.param(("analysis", "onInconclusive"), "Pause", id="on-inconclusive"),
        pytest.param(("analysis", "baselineWindow"), "10m", id="baseline-window"),
        pytest.param(("analysis", "settle"), "5m", id="settle"),
        pytest.param(("suspend",), False, id="suspend"),
    ],
)
def test_defaults_from_the_api_contract(path: tuple[str, ...], default: object) -> None:
    node = _schema()
    for key in path:
        node = node["properties"][key]
    assert node["default"] == default


@pytest.mark.parametrize(
    ("field", "default"),
    [
        pytest.param("batchSize", 1000, id="batch"),
        pytest.param("maxBatchSize", 100000, id="max-batch"),
        pytest.param("targetBatchDuration", "500ms", id="target"),
        pytest.param("pause", "0s", id="pause"),
        pytest.param("parallelism", 1, id="parallelism"),
    ],
)
def test_backfill_defaults(field: str, default: object) -> None:
    backfill = _schema()["properties"]["steps"]["items"]["properties"]["backfill"]
    assert backfill["properties"][field]["default"] == default


def test_immutable_fields_have_transition_rules() -> None:
    props = _schema()["properties"]
    for field in ("migrationId", "database", "steps"):
        rules = [r["rule"] for r in props[field]["x-kubernetes-validations"]]
        assert "self == oldSelf" in rules, field
    for field in ("suspend", "rollback", "analysis"):
        assert "x-kubernetes-validations" not in props[field] or all(
            "oldSelf" not in r["rule"] for r in props[field]["x-kubernetes-validations"]
        )


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_examples_are_valid_migrations(example: Path) -> None:
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    migrations = [d for d in docs if d.get("kind") == "DatabaseMigration"]
    assert migrations, f"{example.name} has no DatabaseMigration"
    for doc in migrations:
        DatabaseMigration.model_validate(doc)


@pytest.mark.parametrize(
    ("safety", "ok"),
    [
        pytest.param({"lockTimeout": "10ms"}, True, id="lock-timeout-lowest"),
        pytest.param({"lockTimeout": "10m"}, True, id="lock-timeout-highest"),
        pytest.param({"lockTimeout": "0s"}, False, id="lock-timeout-off"),
        pytest.param({"lockTimeout": "1h"}, False, id="lock-timeout-an-hour"),
        pytest.param({"statementTimeout": "0s"}, True, id="statement-timeout-none"),
        pytest.param({"statementTimeout": "24h"}, True, id="statement-timeout-a-day"),
        pytest.param({"statementTimeout": "25h"}, False, id="statement-timeout-over-a-day"),
        pytest.param({"statementTimeout": "50ms"}, False, id="statement-timeout-too-short"),
        pytest.param({"maxBlockedDuration": "100ms"}, True, id="max-blocked-lowest"),
        pytest.param({"maxBlockedDuration": "10m"}, True, id="max-blocked-highest"),
        pytest.param({"maxBlockedDuration": "50ms"}, False, id="max-blocked-too-short"),
        pytest.param({"maxBlockedDuration": "1h"}, False, id="max-blocked-too-long"),
    ],
)
def test_safety_timeouts_are_bounded_without_the_api_server_too(
    safety: dict[str, str], ok: bool
) -> None:
    """`dbmigrate apply` validates with the models alone: the same bounds as the CRD's CEL."""
    if ok:
        Safety.model_validate(safety)
    else:
        with pytest.raises(ValidationError, match="must be between"):
            Safety.model_validate(safety)


@pytest.mark.parametrize(
    ("analysis", "error"),
    [
        pytest.param(
            {"metrics": [{"name": "nulls", "sql": "SELECT 0", "max": 0}]}, None, id="sql-only"
        ),
        pytest.param(
            {
                "prometheus": {"address": "http://p:9090"},
                "metrics": [
                    {"name": "nulls", "sql": "SELECT 0", "max": 0},
                    {"name": "errors", "query": "sum(x)", "max": 1},
                ],
            },
            None,
            id="both-kinds",
        ),
        pytest.param(
            {"metrics": [{"name": "errors", "query": "sum(x)", "max": 1}]},
            "analysis.prometheus is required",
            id="query-without-prometheus",
        ),
        pytest.param(
            {"metrics": [{"name": "m", "query": "sum(x)", "sql": "SELECT 1", "max": 1}]},
            "exactly one of query",
            id="query-and-sql",
        ),
        pytest.param({"metrics": [{"name": "m", "max": 1}]}, "exactly one of query", id="neither"),
    ],
)
def test_metric_sources_without_the_api_server_too(
    analysis: dict[str, object], error: str | None
) -> None:
    """The models hold the same rules as the CRD's CEL: one source a metric, Prometheus when a
    metric has a PromQL query."""
    if error is None:
        Analysis.model_validate(analysis)
    else:
        with pytest.raises(ValidationError, match=error):
            Analysis.model_validate(analysis)
