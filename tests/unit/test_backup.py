"""`spec.backup`: the gate before the guarded step, the backup Job, and the worker's pure parts.

Aspects: which step a backup guards (`when`, a migration without a point of no return); the
decisions before that step (create the Job, wait for it, a failed Job or one that recorded
nothing stops the migration, a recorded backup lets the step start, a Job of our name owned by
another, no cluster: skipped); the retry after a failed backup (the failed Job deleted) and the
rollback instead; the Job (arguments, secrets only through secretKeyRef, the claim mounted,
the deadline, a name of its own, the restricted Pod Security Standard); the restore command;
the API (exactly one destination); libpq's variables instead of a DSN on pg_dump's command
line; the version check.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from dbmigrate.api import reasons
from dbmigrate.api.backup import BackupStatus
from dbmigrate.api.crd import build_crd
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus, StepStatus
from dbmigrate.backup.pgdump import (
    ClientVersion,
    ToolError,
    VersionMismatch,
    check_versions,
    child_env,
    libpq_env,
    quoted_pattern,
)
from dbmigrate.core import decide as d
from dbmigrate.core.access import job_secret_names
from dbmigrate.core.backup import guarded_step, restore_command
from dbmigrate.core.conditions import set_conditions
from dbmigrate.core.jobs import build_backup_job, job_name

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
EARLIER = "2026-11-28T11:59:00Z"
STEPS: list[dict[str, Any]] = [
    {"name": "expand", "sql": {"up": "ALTER TABLE users ADD c int", "down": "SELECT 1"}},
    {"name": "fill", "backfill": {"table": "users", "set": "c = 1"}},
    {"name": "contract", "sql": {"up": "ALTER TABLE users DROP b"}, "pointOfNoReturn": True},
]
PVC = {"persistentVolumeClaim": {"claimName": "backups", "subPath": "shop/db"}}
S3 = {
    "s3": {
        "endpoint": "https://s3.example.com",
        "bucket": "db-backups",
        "prefix": "shop",
        "region": "eu-west-1",
        "credentialsSecretRef": {"name": "s3-creds"},
    }
}
BODY = {"metadata": {"name": "add-c", "namespace": "shop", "uid": "u-1"}}
RECORD = d.BackupRecord(
    step="contract",
    location="s3://db-backups/shop/x.dump",
    size_bytes=1234,
    sha256="ab" * 32,
    seconds=2.5,
    scope="Tables",
    tables=("public.users",),
    server_version="15.4",
    client_version="15.14",
    finished_at=EARLIER,
)


def spec(backup: dict[str, Any] | None = None, steps: list[dict[str, Any]] = STEPS) -> Any:
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20240115120000_add_c",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "steps": steps,
            **({"backup": backup} if backup is not None else {}),
        }
    )


def status(phase: str = "Progressing", backup: str | None = None, **steps: str) -> Any:
    st = DatabaseMigrationStatus(phase=phase, started_at=EARLIER)  # type: ignore[arg-type]
    st.steps = [StepStatus(name=s["name"], state=steps.get(s["name"], "Pending")) for s in STEPS]  # type: ignore[arg-type]
    if backup is not None:
        st.backup = BackupStatus(state=backup, before_step="contract", sha256=RECORD.sha256)  # type: ignore[arg-type]
    if phase == "Failed":
        set_conditions(
            st, reason=reasons.BACKUP_FAILED, message="backup failed", generation=1, now=EARLIER
        )
    return st


def obs(**kw: Any) -> d.Observation:
    checksums = {s["name"]: f"sum-{s['name']}" for s in STEPS}
    return replace(d.Observation(now=NOW, checksums=checksums), **kw)


APPLIED = {n: d.AppliedStep("up", f"sum-{n}") for n in ("expand", "fill")}
JOB = "add-c-backup-contract-0123456789"


@pytest.mark.parametrize(
    ("backup", "steps", "guarded"),
    [
        pytest.param({**PVC}, STEPS, "contract", id="before-point-of-no-return"),
        pytest.param({**PVC, "when": "BeforeFirstStep"}, STEPS, "expand", id="before-first-step"),
        pytest.param({**PVC}, STEPS[:2], "expand", id="no-point-of-no-return-first-step"),
        pytest.param(None, STEPS, None, id="no-backup"),
    ],
)
def test_guarded_step(backup: dict[str, Any] | None, steps: list[Any], guarded: str | None) -> None:
    assert guarded_step(spec(backup, steps)) == guarded


DECISIONS = [
    pytest.param(
        spec(PVC), status(), obs(), d.RunStep("expand"), id="steps-before-the-guard-need-none"
    ),
    pytest.param(
        spec(PVC),
        status(expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED),
        d.RunBackup("contract"),
        id="guard-creates-the-job",
    ),
    pytest.param(
        spec(PVC),
        status(backup="Running", expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, backup_job=d.JobState(JOB, active=1)),
        "Wait:BackingUp",
        id="job-running-waits",
    ),
    pytest.param(
        spec(PVC),
        status(backup="Running", expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, backup_job=d.JobState(JOB, failed=True, message="server 16 ...")),
        "FailBackup",
        id="job-failed-stops",
    ),
    pytest.param(
        spec(PVC),
        status(backup="Running", expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, backup_job=d.JobState(JOB, succeeded=True)),
        "FailBackup",
        id="job-completed-without-record-stops",
    ),
    pytest.param(
        spec(PVC),
        status(backup="Running", expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, backup_job=d.JobState(JOB, succeeded=True), backup=RECORD),
        d.RecordBackup("contract", RECORD),
        id="record-found-is-shown",
    ),
    pytest.param(
        spec(PVC),
        status(backup="Succeeded", expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, backup=RECORD),
        d.RunStep("contract"),
        id="recorded-backup-lets-the-step-start",
    ),
    pytest.param(
        spec(PVC),
        status(backup="Succeeded", expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, backup=RECORD, backup_job=d.JobState(JOB, active=1)),
        "Wait:BackingUp",
        id="recorded-but-a-retried-pod-still-runs-waits",
    ),
    pytest.param(
        spec(PVC),
        status(expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, backup=RECORD),
        d.RecordBackup("contract", RECORD),
        id="restarted-operator-finds-the-record-no-second-job",
    ),
    pytest.param(
        spec(PVC),
        status(expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, backup_job=d.JobState(JOB, foreign_owner="a Job of nobody")),
        "Wait:JobNameConflict",
        id="foreign-job-waits",
    ),
    pytest.param(
        spec(PVC),
        status(expand="Succeeded", fill="Succeeded", contract="Running"),
        obs(applied=APPLIED),
        d.RunStep("contract"),
        id="a-started-guarded-step-is-past-its-backup",
    ),
    pytest.param(
        spec(PVC),
        status(expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, rollout_gates=False),
        "RecordBackup",
        id="no-cluster-skips-and-says-so",
    ),
    pytest.param(
        spec(PVC),
        status(backup="Skipped", expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, rollout_gates=False),
        d.RunStep("contract"),
        id="skipped-goes-on",
    ),
    pytest.param(
        spec(PVC),
        status("Failed", backup="Failed", expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, backup_job=d.JobState(JOB, failed=True), lock_held=False),
        "Wait:BackupFailed",
        id="failed-stays-failed-while-the-job-is-there",
    ),
    pytest.param(
        spec(PVC),
        status("Failed", backup="Failed", expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED),
        d.RunBackup("contract"),
        id="failed-job-deleted-takes-it-again",
    ),
    pytest.param(
        spec(PVC),
        status("Failed", backup="Failed", expand="Succeeded", fill="Succeeded"),
        obs(applied=APPLIED, rollback_requested=True),
        "StartRollback:RollbackRequested",
        id="failed-backup-rollback-by-annotation",
    ),
]


def describe(action: d.Action) -> str:
    reason = getattr(action, "reason", None)
    return f"{type(action).__name__}:{reason}" if reason else type(action).__name__


@pytest.mark.parametrize(("the_spec", "the_status", "observation", "expected"), DECISIONS)
def test_decide_before_the_guarded_step(
    the_spec: DatabaseMigrationSpec,
    the_status: DatabaseMigrationStatus,
    observation: d.Observation,
    expected: d.Action | str,
) -> None:
    action = d.decide(the_spec, the_status, observation)
    if isinstance(expected, str):
        assert describe(action) == expected, action
    else:
        assert action == expected


def test_failure_messages_say_what_happened_and_what_to_do() -> None:
    st = status(backup="Running", expand="Succeeded", fill="Succeeded")
    nothing = d.decide(
        spec(PVC), st, obs(applied=APPLIED, backup_job=d.JobState(JOB, succeeded=True))
    )
    assert isinstance(nothing, d.FailBackup)
    assert "completed but recorded no verified backup" in nothing.message
    assert f"delete job {JOB}" in nothing.message
    failed = d.decide(
        spec(PVC), st, obs(applied=APPLIED, backup_job=d.JobState(JOB, failed=True, message="boom"))
    )
    assert isinstance(failed, d.FailBackup)
    assert "boom" in failed.message
    assert "'contract' not started" in failed.message


def test_backup_job_to_a_claim() -> None:
    s = spec({**PVC, "scope": "Tables", "timeout": "20m"})
    job = build_backup_job(BODY, s, "contract", "dbmigrate:1", ["users", "public.orders"])
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["dbmigrate"]
    assert c["args"] == [
        "backup",
        "--migration-id",
        "20240115120000_add_c",
        "--step",
        "contract",
        "--run",
        "u-1",
        "--scope",
        "Tables",
        "--table",
        "users",
        "--table",
        "public.orders",
        "--output-dir",
        "/backup/shop/db",
        "--location",
        "pvc:backups/shop/db",
    ]
    assert {"name": "backup", "persistentVolumeClaim": {"claimName": "backups"}} in pod["volumes"]
    assert {"name": "backup", "mountPath": "/backup"} in c["volumeMounts"]
    assert c["env"][0] == {
        "name": "DBMIGRATE_DSN",
        "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}},
    }
    assert job["spec"]["activeDeadlineSeconds"] == 1200
    assert job["spec"]["backoffLimit"] == 1
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    # A name of its own, not the guarded step's Job's; labels valid, the step named in full.
    assert job["metadata"]["name"] == job_name("add-c", "backup/contract", "u-1")
    assert job["metadata"]["name"] != job_name("add-c", "contract", "u-1")
    assert job["metadata"]["labels"]["dbmigrate.io/step"] == "contract"
    assert job["metadata"]["annotations"]["dbmigrate.io/step"] == "backup/contract"
    assert restricted_violations(job) == []


def test_backup_job_to_s3_gets_credentials_only_by_reference() -> None:
    s = spec({**S3, "scope": "Database"})
    job = build_backup_job(BODY, s, "contract", "dbmigrate:1", ["users"])
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert "--table" not in c["args"]  # the whole database
    assert c["args"][-8:] == [
        "--s3-endpoint",
        "https://s3.example.com",
        "--s3-bucket",
        "db-backups",
        "--s3-prefix",
        "shop",
        "--s3-region",
        "eu-west-1",
    ]
    creds = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert creds["DBMIGRATE_S3_ACCESS_KEY_ID"] == {"name": "s3-creds", "key": "accessKeyId"}
    assert creds["DBMIGRATE_S3_SECRET_ACCESS_KEY"] == {
        "name": "s3-creds",
        "key": "secretAccessKey",
    }
    assert all("value" not in e or e["name"] == "PYTHONUNBUFFERED" for e in c["env"])
    assert restricted_violations(job) == []
    assert job_secret_names(s) == ("s3-creds",)  # checked against the Secret label policy


def restricted_violations(job: dict[str, Any]) -> list[str]:
    """What the restricted Pod Security Standard refuses in what we build (persistentVolumeClaim
    is one of its allowed volume types)."""
    pod = job["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext") or {}
    out = []
    for c in pod["containers"]:
        sc = c.get("securityContext") or {}
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            out.append("runAsNonRoot")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append("allowPrivilegeEscalation")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            out.append("capabilities")
        if (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type") is None:
            out.append("seccompProfile")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append("readOnlyRootFilesystem")  # ours: the worker writes only /tmp and /backup
    for v in pod.get("volumes") or []:
        if set(v) - {"name", "emptyDir", "persistentVolumeClaim"}:
            out.append(f"volume {v['name']}")
    return out


@pytest.mark.parametrize(
    ("backup", "location", "expected"),
    [
        pytest.param(
            S3,
            "s3://db-backups/shop/x.dump",
            "aws s3 cp --endpoint-url https://s3.example.com --region eu-west-1 "
            "s3://db-backups/shop/x.dump - | pg_restore --clean --if-exists --no-owner "
            '--single-transaction --exit-on-error --dbname "$PGDATABASE"',
            id="s3",
        ),
        pytest.param(
            PVC,
            "pvc:backups/shop/db/x.dump",
            "pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error "
            '--dbname "$PGDATABASE" "$CLAIM_ROOT"/shop/db/x.dump',
            id="claim",
        ),
    ],
)
def test_restore_command(backup: dict[str, Any], location: str, expected: str) -> None:
    s = spec(backup)
    assert restore_command(s.backup, location) == expected


@pytest.mark.parametrize(
    "backup",
    [
        pytest.param({}, id="no-destination"),
        pytest.param({**PVC, **S3}, id="both-destinations"),
        pytest.param({"persistentVolumeClaim": {"claimName": "b", "subPath": "../x"}}, id="dotdot"),
        pytest.param({**S3, "when": "Later"}, id="bad-when"),
    ],
)
def test_invalid_backups_are_refused(backup: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        spec(backup)


def test_the_crd_refuses_two_destinations() -> None:
    text = json.dumps(build_crd())
    assert "has(self.persistentVolumeClaim) != has(self.s3)" in text


DSN = "postgresql://app:s3cr%40t@db.internal:6432/shop?sslmode=require&connect_timeout=5"


def test_the_dsn_becomes_libpq_variables() -> None:
    env = libpq_env(DSN)
    assert env == {
        "PGHOST": "db.internal",
        "PGPORT": "6432",
        "PGUSER": "app",
        "PGPASSWORD": "s3cr@t",
        "PGDATABASE": "shop",
        "PGSSLMODE": "require",
        "PGCONNECT_TIMEOUT": "5",
        "PGAPPNAME": "dbmigrate backup",
    }
    child = child_env(
        DSN, {"PATH": "/bin", "PGHOST": "elsewhere", "DBMIGRATE_DSN": DSN, "AWS_SECRET": "x"}
    )
    assert child["PGHOST"] == "db.internal"
    assert child["PATH"] == "/bin"
    assert "DBMIGRATE_DSN" not in child
    assert "AWS_SECRET" not in child


def test_a_dsn_parameter_without_a_variable_is_refused_unshown() -> None:
    with pytest.raises(ToolError) as err:
        libpq_env("host=h dbname=d password=hunter2 sslkeylogfile=/tmp/k")
    assert "sslkeylogfile" in str(err.value)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    ("server", "client", "refused"),
    [
        pytest.param(160002, 15, True, id="newer-server"),
        pytest.param(150004, 15, False, id="same-major"),
        pytest.param(140011, 15, False, id="older-server"),
    ],
)
def test_version_check(server: int, client: int, refused: bool) -> None:
    version = ClientVersion(f"{client}.1", client)
    if refused:
        with pytest.raises(VersionMismatch, match="server 16 is newer than pg_dump 15"):
            check_versions(server, version)
    else:
        check_versions(server, version)


def test_table_patterns_match_exactly() -> None:
    assert quoted_pattern("public", "users") == '"public"."users"'
    assert quoted_pattern("s", 'we"ird*') == '"s"."we""ird*"'
