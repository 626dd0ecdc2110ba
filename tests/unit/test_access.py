"""Which Secrets a migration may use: the label mode's parsing and decision, and the Secrets
a migration's tool Jobs name."""

from __future__ import annotations

from typing import Any

import pytest

from dbmigrate.api.models import DatabaseMigrationSpec
from dbmigrate.core.access import job_secret_names, parse_secret_label, secret_refusal
from dbmigrate.settings import Settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", None, id="off"),
        pytest.param("  ", None, id="blank-off"),
        pytest.param("dbmigrate.io/dsn=true", ("dbmigrate.io/dsn", "true"), id="key-value"),
        pytest.param("team", ("team", "true"), id="bare-key-means-true"),
        pytest.param(" a/b = c ", ("a/b", "c"), id="spaces"),
    ],
)
def test_parse_secret_label(text: str, expected: tuple[str, str] | None) -> None:
    assert parse_secret_label(text) == expected


@pytest.mark.parametrize("text", ["=x", "key=", " = "], ids=["no-key", "no-value", "nothing"])
def test_parse_secret_label_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_secret_label(text)


def test_settings_read_the_label() -> None:
    assert Settings.from_env({}).secret_label is None
    env = {"DBMIGRATE_SECRET_LABEL": "dbmigrate.io/dsn=true"}
    assert Settings.from_env(env).secret_label == ("dbmigrate.io/dsn", "true")


REQUIRED = ("dbmigrate.io/dsn", "true")


@pytest.mark.parametrize(
    ("labels", "required", "allowed"),
    [
        pytest.param(None, None, True, id="mode-off-no-labels"),
        pytest.param({"x": "y"}, None, True, id="mode-off"),
        pytest.param({"dbmigrate.io/dsn": "true"}, REQUIRED, True, id="labelled"),
        pytest.param({"dbmigrate.io/dsn": "true", "a": "b"}, REQUIRED, True, id="more-labels"),
        pytest.param(None, REQUIRED, False, id="no-labels"),
        pytest.param({}, REQUIRED, False, id="empty-labels"),
        pytest.param({"dbmigrate.io/dsn": "false"}, REQUIRED, False, id="wrong-value"),
        pytest.param({"dbmigrate.io/DSN": "true"}, REQUIRED, False, id="other-key"),
    ],
)
def test_secret_refusal(
    labels: dict[str, str] | None, required: tuple[str, str] | None, allowed: bool
) -> None:
    refusal = secret_refusal("team-a", "db", labels, required)
    assert (refusal is None) is allowed
    if refusal:
        assert "'db'" in refusal
        assert "'team-a'" in refusal
        assert "dbmigrate.io/dsn=true" in refusal, "says which label would make it usable"


def _spec(steps: list[dict[str, Any]]) -> DatabaseMigrationSpec:
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20240101000000_x",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "steps": steps,
        }
    )


def _tool(name: str, env: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "job": {"image": "alpine:3", "env": env}}


def _from_secret(var: str, secret: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param([{"name": "a", "sql": {"up": "SELECT 1"}}], (), id="no-jobs"),
        pytest.param([_tool("t", [{"name": "A", "value": "1"}])], (), id="plain-env"),
        pytest.param([_tool("t", [_from_secret("A", "db")])], (), id="only-the-dsn-secret"),
        pytest.param(
            [
                _tool("t", [_from_secret("A", "api"), _from_secret("B", "token")]),
                _tool("u", [_from_secret("C", "api")]),
            ],
            ("api", "token"),
            id="each-once-in-order",
        ),
        pytest.param(
            [
                _tool(
                    "t",
                    [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
                )
            ],
            (),
            id="config-map-is-not-a-secret",
        ),
    ],
)
def test_job_secret_names(steps: list[dict[str, Any]], expected: tuple[str, ...]) -> None:
    assert job_secret_names(_spec(steps)) == expected
