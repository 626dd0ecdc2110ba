"""`core.jobs`: the Jobs a migration runs.

Aspects: the DSN reaches a backfill worker only through secretKeyRef; the worker's arguments
mirror the step; parallel backfills are Indexed Jobs; permanent worker errors fail the Job at
once while killed pods and a database unavailable for a while (exit 75) are retried, the
worker's exit codes and the podFailurePolicy agreeing; pods are hardened and owned by the
DatabaseMigration; tool jobs pass their image, command and env through; Job names fit
Kubernetes' limits, are stable and collision-free (full names and the uid hashed); label
values fit for any object name, the full names are annotations.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from dbmigrate.api.models import DatabaseMigrationSpec
from dbmigrate.api.worker import (
    BACKFILL_EXIT_FAILED,
    BACKFILL_EXIT_RETRYABLE,
    BACKFILL_EXIT_STOPPED,
    BACKFILL_EXIT_USAGE,
)
from dbmigrate.commands.backfill import EXIT_FAILED, EXIT_RETRYABLE, EXIT_STOPPED, EXIT_USAGE
from dbmigrate.core.jobs import (
    build_backfill_job,
    build_tool_job,
    job_name,
    job_selector,
    label_value,
)

BODY = {"metadata": {"name": "add-email-verified", "namespace": "shop", "uid": "u-1"}}


def spec(
    backfill: dict[str, Any] | None = None,
    job: dict[str, Any] | None = None,
    **extra: Any,
) -> DatabaseMigrationSpec:
    step: dict[str, Any] = {"name": "fill"}
    if backfill is not None:
        step["backfill"] = backfill
    if job is not None:
        step["job"] = job
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20240115120000_add_email_verified_column",
            "database": {"dsnSecretRef": {"name": "shop-db", "key": "dsn"}},
            "steps": [step],
            **extra,
        }
    )


def workers_of(s: DatabaseMigrationSpec) -> int:
    """The step's `parallelism` as the operator resolves a number: itself."""
    bf = s.steps[0].backfill
    assert bf is not None
    assert isinstance(bf.parallelism, int)
    return bf.parallelism


def args_of(job: dict[str, Any]) -> list[str]:
    return job["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("backfill", "expected"),
    [
        pytest.param(
            {"table": "users", "set": "a = 1"},
            ["--table", "users", "--set", "a = 1"],
            id="table-and-set",
        ),
        pytest.param(
            {"table": "users", "set": "a = 1", "where": "a IS NULL"},
            ["--where", "a IS NULL"],
            id="where",
        ),
        pytest.param(
            {"table": "users", "set": "a = 1", "batchSize": 50, "pause": "10ms"},
            ["--batch-size", "50", "--pause", "10ms"],
            id="tuning",
        ),
        pytest.param(
            {"table": "users", "set": "a = 1", "parallelism": 4},
            ["--worker", "$(JOB_COMPLETION_INDEX)/4"],
            id="parallel-worker-index",
        ),
    ],
)
def test_backfill_worker_arguments(backfill: dict[str, Any], expected: list[str]) -> None:
    s = spec(backfill=backfill)
    args = args_of(build_backfill_job(BODY, s, s.steps[0], "img:1", workers_of(s)))
    pairs = set(itertools.pairwise(args))
    for flag, value in zip(expected[::2], expected[1::2], strict=True):
        assert (flag, value) in pairs
    assert args[0] == "backfill"
    assert "--checkpoint" in args


@pytest.mark.parametrize(
    ("safety", "expected"),
    [
        pytest.param({}, ["--lock-timeout", "1s", "--max-blocked-duration", "2s"], id="defaults"),
        pytest.param(
            {"lockTimeout": "200ms", "maxBlockedDuration": "500ms"},
            ["--lock-timeout", "200ms", "--max-blocked-duration", "500ms"],
            id="given",
        ),
    ],
)
def test_backfill_worker_gets_the_safety_limits(
    safety: dict[str, str], expected: list[str]
) -> None:
    s = spec(backfill={"table": "users", "set": "a = 1"}, safety=safety)
    args = args_of(build_backfill_job(BODY, s, s.steps[0], "img:1", workers_of(s)))
    pairs = set(itertools.pairwise(args))
    for flag, value in zip(expected[::2], expected[1::2], strict=True):
        assert (flag, value) in pairs
    assert args[0] == "backfill"
    assert "--checkpoint" in args


def test_backfill_job_shape() -> None:
    s = spec(backfill={"table": "users", "set": "a = 1", "parallelism": 3})
    job = build_backfill_job(BODY, s, s.steps[0], "img:1", workers_of(s))
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "img:1"
    assert container["env"][0] == {
        "name": "DBMIGRATE_DSN",
        "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "dsn"}},
    }
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "backfill", "operator": "In", "values": [1, 2]},
    }
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("DatabaseMigration", "u-1", True)
    assert job["metadata"]["labels"]["dbmigrate.io/step"] == "fill"


def test_tool_job_passes_the_step_through() -> None:
    s = spec(
        job={
            "image": "alembic:1",
            "command": ["alembic"],
            "args": ["upgrade", "head"],
            "env": [{"name": "URL", "valueFrom": {"secretKeyRef": {"name": "d", "key": "u"}}}],
            "backoffLimit": 0,
        }
    )
    job = build_tool_job(BODY, s, s.steps[0])
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert (container["image"], container["command"], container["args"]) == (
        "alembic:1",
        ["alembic"],
        ["upgrade", "head"],
    )
    assert container["env"] == [
        {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "d", "key": "u"}}}
    ]
    assert job["spec"]["backoffLimit"] == 0


@pytest.mark.parametrize(
    ("migration", "step"),
    [
        pytest.param("m", "s", id="short"),
        pytest.param("a" * 40, "backfill-users", id="long"),
        pytest.param("x" * 253, "s" * 63, id="longest-names"),
        pytest.param("v1.shop.example", "fill", id="dots-are-no-dns-label"),
    ],
)
def test_job_names_fit(migration: str, step: str) -> None:
    name = job_name(migration, step, "u-1")
    assert len(name) <= 52  # room for the Job controller's `-<index>-<random>` in pod names
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name  # a DNS label
    assert name.startswith(f"{migration}-{step}"[:20].replace(".", "-"))  # readable
    assert job_name(migration, step, "u-1") == name  # stable: a restarted operator finds its Job


@pytest.mark.parametrize(
    ("one", "other"),
    [
        pytest.param(("a-b", "c", "u-1"), ("a", "b-c", "u-2"), id="joined-names-collided"),
        pytest.param(("m", "fill", "u-1"), ("m", "fill", "u-2"), id="recreated-migration"),
        pytest.param(
            ("a" * 60 + "1", "s", "u-1"), ("a" * 60 + "2", "s", "u-1"), id="same-cut-prefix"
        ),
    ],
)
def test_job_names_do_not_collide(one: tuple[str, str, str], other: tuple[str, str, str]) -> None:
    assert job_name(*one) != job_name(*other)


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        pytest.param("add-email", True, id="short-kept"),
        pytest.param("a" * 63, True, id="63-kept"),
        pytest.param("a" * 64, False, id="64-cut"),
        pytest.param("backfill-" + "x" * 61, False, id="70-cut"),
        pytest.param("a" * 51 + "." + "b" * 200, False, id="cut-at-a-dot"),
    ],
)
def test_label_values_fit(value: str, kept: bool) -> None:
    label = label_value(value)
    assert len(label) <= 63
    assert re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", label), label
    assert (label == value) is kept
    assert label_value(value + "z") != label  # the hash covers the whole value


def test_long_names_are_labels_cut_and_annotations_whole() -> None:
    name = "backfill-" + "x" * 61
    body = {"metadata": {"name": name, "namespace": "shop", "uid": "u-1"}}
    s = spec(backfill={"table": "users", "set": "a = 1"})
    job = build_backfill_job(body, s, s.steps[0], "img:1", workers_of(s))
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        assert meta["labels"]["dbmigrate.io/migration"] == label_value(name)
        assert all(len(v) <= 63 for v in meta["labels"].values())
        assert meta["annotations"] == {"dbmigrate.io/migration": name, "dbmigrate.io/step": "fill"}
    assert job_selector(name) == f"dbmigrate.io/migration={label_value(name)}"
    assert job["metadata"]["name"] == job_name(name, "fill", "u-1")


def policy_action(policy: dict[str, Any], exit_code: int) -> str:
    """What Kubernetes does with a backfill pod that failed with `exit_code`: the first rule
    that matches wins; none matching counts the failure against the backoff limit."""
    for rule in policy["rules"]:
        on = rule.get("onExitCodes")
        if on is None or on.get("containerName", "backfill") != "backfill":
            continue
        matched = exit_code in on["values"]
        if matched == (on["operator"] == "In"):
            return str(rule["action"])
    return "Count"


@pytest.mark.parametrize(
    ("code", "action"),
    [
        pytest.param(EXIT_FAILED, "FailJob", id="1-cannot-heal-fails-at-once"),
        pytest.param(EXIT_USAGE, "FailJob", id="2-bad-arguments-fail-at-once"),
        pytest.param(EXIT_RETRYABLE, "Count", id="75-database-unavailable-is-retried"),
        pytest.param(EXIT_STOPPED, "Count", id="143-sigterm-is-retried"),
        pytest.param(137, "Count", id="137-sigkill-is-retried"),
    ],
)
def test_pod_failure_policy_by_exit_code(code: int, action: str) -> None:
    """The worker's exit codes (commands/backfill.py) and the Job's policy (core/jobs.py) agree."""
    s = spec(backfill={"table": "users", "set": "a = 1"})
    policy = build_backfill_job(BODY, s, s.steps[0], "img:1", workers_of(s))["spec"][
        "podFailurePolicy"
    ]
    assert policy_action(policy, code) == action
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in policy[
        "rules"
    ]


def test_worker_exit_codes_are_the_jobs() -> None:
    assert (EXIT_FAILED, EXIT_USAGE, EXIT_RETRYABLE, EXIT_STOPPED) == (
        BACKFILL_EXIT_FAILED,
        BACKFILL_EXIT_USAGE,
        BACKFILL_EXIT_RETRYABLE,
        BACKFILL_EXIT_STOPPED,
    )
    assert EXIT_RETRYABLE == 75  # EX_TEMPFAIL; not 1, 2 or a signal's 128 + n


def restricted_violations(job: dict[str, Any]) -> list[str]:
    """What the restricted Pod Security Standard would refuse in the Job's pod (the checks of
    `pod-security.kubernetes.io/enforce: restricted` that apply to what we build)."""
    pod = job["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext") or {}
    out = []
    for c in pod["containers"]:
        sc = c.get("securityContext") or {}
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            out.append(f"{c['name']}: runAsNonRoot")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            out.append(f"{c['name']}: capabilities.drop ALL")
        if (sc.get("capabilities") or {}).get("add"):
            out.append(f"{c['name']}: capabilities.add")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{c['name']}: seccompProfile")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"{c['name']}: runAsUser 0")
    for v in pod.get("volumes") or []:
        if set(v) - {"name", "emptyDir", "configMap", "secret", "projected"}:
            out.append(f"volume {v['name']}")
    return out


TEMPLATE = {
    "serviceAccountName": "migrator",
    "runAsUser": 1000,
    "resources": {"requests": {"cpu": 1, "memory": "1Gi"}},
    "nodeSelector": {"pool": "batch"},
    "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {}},
    "priorityClassName": "low",
    "labels": {"team": "shop", "dbmigrate.io/step": "not-yours"},
    "annotations": {"cost-center": "42"},
}
TOOL = {"image": "flyway:10", "args": ["migrate"], "timeout": "20m"}
BACKFILL = {"table": "users", "set": "a = 1"}


@pytest.mark.parametrize(
    ("step", "template"),
    [
        pytest.param({"job": TOOL}, None, id="tool"),
        pytest.param({"job": TOOL}, TEMPLATE, id="tool-with-template"),
        pytest.param({"backfill": BACKFILL}, None, id="backfill"),
        pytest.param({"backfill": BACKFILL}, TEMPLATE, id="backfill-with-template"),
    ],
)
def test_every_job_meets_the_restricted_pod_security_standard(
    step: dict[str, Any], template: dict[str, Any] | None
) -> None:
    s = spec(**step, **({"podTemplate": template} if template else {}))
    if "job" in step:
        job = build_tool_job(BODY, s, s.steps[0])
    else:
        job = build_backfill_job(BODY, s, s.steps[0], "dbmigrate:1", workers_of(s))
    assert restricted_violations(job) == []
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False  # no token unless asked
    if template is None:
        return
    assert pod["serviceAccountName"] == "migrator"
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["containers"][0]["resources"] == TEMPLATE["resources"]
    assert (pod["nodeSelector"], pod["priorityClassName"]) == ({"pool": "batch"}, "low")
    assert pod["tolerations"] == TEMPLATE["tolerations"]
    assert pod["affinity"] == {"nodeAffinity": {}}
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "shop"
    assert labels["dbmigrate.io/step"] == s.steps[0].name  # ours win
    assert job["spec"]["template"]["metadata"]["annotations"]["cost-center"] == "42"


def test_a_tool_job_has_a_deadline() -> None:
    s = spec(job=TOOL)
    assert build_tool_job(BODY, s, s.steps[0])["spec"]["activeDeadlineSeconds"] == 1200
    s = spec(job={"image": "flyway:10"})
    assert build_tool_job(BODY, s, s.steps[0])["spec"]["activeDeadlineSeconds"] == 3600


@pytest.mark.parametrize("workers", [0, 17], ids=["none", "over-the-api-bound"])
def test_a_backfill_job_has_1_to_16_workers(workers: int) -> None:
    s = spec(backfill={"table": "users", "set": "a = 1", "parallelism": "auto"})
    with pytest.raises(ValueError, match="1 to 16 workers"):
        build_backfill_job(BODY, s, s.steps[0], "img:1", workers)
