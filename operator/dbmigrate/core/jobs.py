"""Pure builders of the Kubernetes Jobs a migration runs: backfill workers, tool jobs and the
backup before the guarded step.

The DSN reaches a backfill worker only through `secretKeyRef` (env `DBMIGRATE_DSN`), never as an
argument. Pods are hardened (non-root, read-only root filesystem, no privilege escalation, all
capabilities dropped) and owned by the DatabaseMigration so they are garbage-collected with it.
Jobs are named by `job_name` (a hash of the full names and the uid) and found by name or by the
`dbmigrate.io/migration` label, but they are the migration's only if their ownerReference
carries its uid. Label values are cut to 63 characters (with a hash) for long names; the full
names are in annotations of the same keys.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

from dbmigrate.api.backup import S3_ACCESS_KEY_ID_KEY, S3_SECRET_ACCESS_KEY_KEY
from dbmigrate.api.durations import parse_duration
from dbmigrate.api.models import GROUP, KIND, VERSION, DatabaseMigrationSpec, PodTemplate, Step
from dbmigrate.api.worker import (
    BACKFILL_EXIT_FAILED,
    BACKFILL_EXIT_RETRYABLE,
    BACKFILL_EXIT_USAGE,
    BACKUP_EXIT_FAILED,
    BACKUP_EXIT_USAGE,
    BACKUP_MOUNT_PATH,
    BACKUP_S3_ACCESS_KEY_ENV,
    BACKUP_S3_SECRET_KEY_ENV,
    MAX_PARALLELISM,
)
from dbmigrate.core.backup import backup_job_step

LABEL_MIGRATION = f"{GROUP}/migration"
LABEL_STEP = f"{GROUP}/step"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
# The full names, whatever their length (label values are cut to fit; annotations are not).
ANNOTATION_MIGRATION = f"{GROUP}/migration"
ANNOTATION_STEP = f"{GROUP}/step"
BACKFILL_BACKOFF_LIMIT = 6  # a killed worker pod is retried; it resumes from its checkpoint

LABEL_VALUE_MAX = 63
# A Job's name is the value of its pods' `batch.kubernetes.io/job-name` label (at most 63), and
# the Job controller appends `-<index>-<5 random>` to it for pod names and hostnames.
JOB_NAME_MAX = 52
_HASH_LEN = 10  # hex digits: 40 bits


def backfill_checkpoint_name(migration_id: str, step: str) -> str:
    return f"{migration_id}/{step}"


def _digest(*parts: str) -> str:
    # NUL cannot occur in a name or a uid: ("a-b", "c") and ("a", "b-c") hash apart.
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:_HASH_LEN]


def job_name(migration_name: str, step: str, uid: str) -> str:
    """`<readable prefix>-<hash>`: at most 52 characters, a DNS label, collision-free.

    The hash covers the full migration name, the step name and the DatabaseMigration's uid, so
    migrations whose names join to the same text (`a-b` + `c`, `a` + `b-c`) get different Jobs,
    and a migration deleted and created again under the same name (a new uid) does not meet the
    old one's Job. The name is deterministic: a restarted operator finds its own Job again (and
    `status.steps[].job` records it). The prefix is `<migration>-<step>`, shortened and cleaned
    to a DNS label, only for people reading `kubectl get jobs`. A Job that has our name is still
    ours only if its ownerReference carries our uid (see `reconcile.platform`).
    """
    digest = _digest(migration_name, step, uid)
    readable = re.sub(r"[^a-z0-9-]+", "-", f"{migration_name}-{step}".lower())
    readable = readable[: JOB_NAME_MAX - _HASH_LEN - 1].strip("-")
    return f"{readable}-{digest}" if readable else f"job-{digest}"


def label_value(value: str) -> str:
    """`value` as a valid label value: itself when it fits in 63 characters, else a prefix and
    a hash of the whole value (any valid object name gives a valid, distinct value)."""
    if len(value) <= LABEL_VALUE_MAX:
        return value
    prefix = value[: LABEL_VALUE_MAX - _HASH_LEN - 1].rstrip("-_.")
    return f"{prefix}-{_digest(value)}"


def job_selector(migration_name: str) -> str:
    """The label selector of a migration's Jobs (of this name: check the owner's uid too)."""
    return f"{LABEL_MIGRATION}={label_value(migration_name)}"


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _hardened_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# The pod-level security context: the operator's own image runs as its non-root user; a tool
# runs as the (non-root) user its image names. podTemplate.runAsUser replaces either user.
OWN_IMAGE_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
}
TOOL_POD_SECURITY = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def _job_skeleton(
    body: dict[str, Any],
    step: str,
    container: dict[str, Any],
    backoff_limit: int,
    pod_security: dict[str, Any],
    template: PodTemplate | None,
    *,
    job_step: str | None = None,
) -> dict[str, Any]:
    """`job_step`: what the Job is named after and annotated with, when it is not the step
    itself (the backup Job guarding `step`)."""
    meta = body["metadata"]
    name = job_name(meta["name"], job_step or step, meta["uid"])
    labels = {
        LABEL_MIGRATION: label_value(meta["name"]),
        LABEL_STEP: label_value(step),
        LABEL_MANAGED_BY: "dbmigrate",
    }
    annotations = {ANNOTATION_MIGRATION: meta["name"], ANNOTATION_STEP: job_step or step}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": body["metadata"]["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(body)],
        },
        "spec": {
            "backoffLimit": backoff_limit,
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": copy.deepcopy(pod_security),
                    "containers": [container],
                },
            },
        },
    }
    if template is not None:
        _apply_pod_template(job, template)
    return job


def _apply_pod_template(job: dict[str, Any], template: PodTemplate) -> None:
    """The user's narrow part of the pod: scheduling, identity, resources, extra metadata.

    The operator's labels and annotations win over the user's (they identify the Job), and the
    security context stays restricted whatever is asked.
    """
    meta = job["spec"]["template"]["metadata"]
    meta["labels"] = {**(template.labels or {}), **meta["labels"]}
    meta["annotations"] = {**(template.annotations or {}), **meta["annotations"]}
    pod = job["spec"]["template"]["spec"]
    if template.service_account_name:
        pod["serviceAccountName"] = template.service_account_name
    pod["automountServiceAccountToken"] = template.automount_service_account_token
    if template.node_selector:
        pod["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        pod["tolerations"] = [dict(t) for t in template.tolerations]
    if template.affinity:
        pod["affinity"] = dict(template.affinity)
    if template.priority_class_name:
        pod["priorityClassName"] = template.priority_class_name
    if template.run_as_user is not None:
        pod["securityContext"]["runAsUser"] = template.run_as_user
    if template.resources:
        pod["containers"][0]["resources"] = dict(template.resources)


def build_backfill_job(
    body: dict[str, Any], spec: DatabaseMigrationSpec, step: Step, image: str, workers: int
) -> dict[str, Any]:
    """The Job running `dbmigrate backfill` for a backfill step with `workers` pods (an
    Indexed Job): `parallelism` as resolved for this step (`auto` stands for a number)."""
    bf = step.backfill
    if bf is None:
        raise ValueError(f"step {step.name!r} is not a backfill step")
    if not 1 <= workers <= MAX_PARALLELISM:
        raise ValueError(f"a backfill runs with 1 to {MAX_PARALLELISM} workers, not {workers}")
    args = [
        "backfill",
        "--table",
        bf.table,
        "--set",
        bf.set,
        *(["--where", bf.where] if bf.where else []),
        "--batch-size",
        str(bf.batch_size),
        "--max-batch-size",
        str(bf.max_batch_size),
        "--target-batch-duration",
        bf.target_batch_duration,
        "--pause",
        bf.pause,
        "--lock-timeout",
        spec.safety.lock_timeout,
        "--max-blocked-duration",
        spec.safety.max_blocked_duration,
        "--checkpoint",
        backfill_checkpoint_name(spec.migration_id, step.name),
        # Kubernetes expands $(JOB_COMPLETION_INDEX), which the Job controller sets per pod.
        "--worker",
        f"$(JOB_COMPLETION_INDEX)/{workers}",
    ]
    ref = spec.database.dsn_secret_ref
    container = {
        "name": "backfill",
        "image": image,
        "command": ["dbmigrate"],
        "args": args,
        "env": [
            {
                "name": "DBMIGRATE_DSN",
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            },
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": _hardened_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    job = _job_skeleton(
        body,
        step.name,
        container,
        BACKFILL_BACKOFF_LIMIT,
        OWN_IMAGE_POD_SECURITY,
        spec.pod_template,
    )
    job["spec"]["completionMode"] = "Indexed"
    job["spec"]["completions"] = workers
    job["spec"]["parallelism"] = workers
    # Each index gets its own retries, so one worker's failures do not exhaust the others'.
    job["spec"]["backoffLimitPerIndex"] = BACKFILL_BACKOFF_LIMIT
    del job["spec"]["backoffLimit"]
    job["spec"]["podFailurePolicy"] = backfill_pod_failure_policy()
    job["spec"]["template"]["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    return job


def backfill_pod_failure_policy() -> dict[str, Any]:
    """What a failed worker pod means; Kubernetes applies the first rule that matches.

    Exit 1 (an error that cannot heal: no primary key, invalid SQL) and 2 (bad arguments) fail
    the Job at once with the worker's message: retrying cannot help. Exit 75 (the database was
    unavailable past the worker's own reconnects) is counted against backoffLimitPerIndex and
    retried, as are pods killed by a signal (137, 143); a pod evicted or preempted
    (DisruptionTarget) is retried without counting. Every retried pod resumes from its
    checkpoint.
    """
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": "backfill",
                    "operator": "In",
                    "values": [BACKFILL_EXIT_FAILED, BACKFILL_EXIT_USAGE],
                },
            },
            {
                "action": "Count",
                "onExitCodes": {
                    "containerName": "backfill",
                    "operator": "In",
                    "values": [BACKFILL_EXIT_RETRYABLE],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def build_tool_job(body: dict[str, Any], spec: DatabaseMigrationSpec, step: Step) -> dict[str, Any]:
    """The Job of a `job` step: any image and command (alembic, prisma, flyway, ...)."""
    tool = step.job
    if tool is None:
        raise ValueError(f"step {step.name!r} is not a job step")
    container: dict[str, Any] = {
        "name": "migrate",
        "image": tool.image,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # The restricted Pod Security Standard; not readOnlyRootFilesystem: tools write files.
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }
    if tool.command:
        container["command"] = list(tool.command)
    if tool.args:
        container["args"] = list(tool.args)
    if tool.env:
        container["env"] = [e.to_k8s() for e in tool.env]
    job = _job_skeleton(
        body, step.name, container, tool.backoff_limit, TOOL_POD_SECURITY, spec.pod_template
    )
    job["spec"]["activeDeadlineSeconds"] = max(1, round(parse_duration(tool.timeout)))
    return job


BACKUP_BACKOFF_LIMIT = 1  # one more pod after a retryable failure (storage or database away)


def build_backup_job(
    body: dict[str, Any],
    spec: DatabaseMigrationSpec,
    step: str,
    image: str,
    tables: list[str],
) -> dict[str, Any]:
    """The Job running `dbmigrate backup` before `step` (the step `spec.backup` guards).

    `tables`: what a Tables-scope backup dumps (the existing tables the migration touches, as
    `core.plan.tables_touched` finds them). The DSN and the S3 credentials reach the worker only
    through secretKeyRef; a PersistentVolumeClaim is mounted at BACKUP_MOUNT_PATH.
    """
    backup = spec.backup
    if backup is None:
        raise ValueError("the migration has no spec.backup")
    meta = body["metadata"]
    args = [
        "backup",
        "--migration-id",
        spec.migration_id,
        "--step",
        step,
        "--run",
        meta["uid"],
        "--scope",
        backup.scope,
    ]
    if backup.scope == "Tables":
        for table in tables:
            args += ["--table", table]
    ref = spec.database.dsn_secret_ref
    env: list[dict[str, Any]] = [
        {
            "name": "DBMIGRATE_DSN",
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
        },
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if backup.persistent_volume_claim is not None:
        claim = backup.persistent_volume_claim
        out = BACKUP_MOUNT_PATH + (f"/{claim.sub_path}" if claim.sub_path else "")
        args += [
            "--output-dir",
            out,
            "--location",
            f"pvc:{claim.claim_name}" + out[len(BACKUP_MOUNT_PATH) :],
        ]
        volumes.append({"name": "backup", "persistentVolumeClaim": {"claimName": claim.claim_name}})
        mounts.append({"name": "backup", "mountPath": BACKUP_MOUNT_PATH})
    elif backup.s3 is not None:
        s3 = backup.s3
        args += ["--s3-endpoint", s3.endpoint, "--s3-bucket", s3.bucket]
        if s3.prefix:
            args += ["--s3-prefix", s3.prefix]
        if s3.region:
            args += ["--s3-region", s3.region]
        if s3.insecure_skip_tls_verify:
            args.append("--s3-insecure-skip-tls-verify")
        secret = s3.credentials_secret_ref.name
        for name, key in (
            (BACKUP_S3_ACCESS_KEY_ENV, S3_ACCESS_KEY_ID_KEY),
            (BACKUP_S3_SECRET_KEY_ENV, S3_SECRET_ACCESS_KEY_KEY),
        ):
            env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    container = {
        "name": "backup",
        "image": image,
        "command": ["dbmigrate"],
        "args": args,
        "env": env,
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": _hardened_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    job = _job_skeleton(
        body,
        step,
        container,
        BACKUP_BACKOFF_LIMIT,
        OWN_IMAGE_POD_SECURITY,
        spec.pod_template,
        job_step=backup_job_step(step),
    )
    job["spec"]["activeDeadlineSeconds"] = max(1, round(parse_duration(backup.timeout)))
    job["spec"]["podFailurePolicy"] = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": "backup",
                    "operator": "In",
                    "values": [BACKUP_EXIT_FAILED, BACKUP_EXIT_USAGE],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }
    job["spec"]["template"]["spec"]["volumes"] = volumes
    return job
