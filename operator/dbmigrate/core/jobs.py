"""Pure builders of the Kubernetes Jobs a migration runs: backfill workers and tool jobs.

The DSN reaches a backfill worker only through `secretKeyRef` (env `DBMIGRATE_DSN`), never as an
argument. Pods are hardened (non-root, read-only root filesystem, no privilege escalation, all
capabilities dropped) and owned by the DatabaseMigration so they are garbage-collected with it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from dbmigrate.api.models import GROUP, KIND, VERSION, DatabaseMigrationSpec, Step

LABEL_MIGRATION = f"{GROUP}/migration"
LABEL_STEP = f"{GROUP}/step"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
BACKFILL_BACKOFF_LIMIT = 6  # a killed worker pod is retried; it resumes from its checkpoint

# The exit codes of `dbmigrate backfill` (commands/backfill.py uses these), and what the Job's
# podFailurePolicy does with each:
BACKFILL_EXIT_FAILED = 1  # an error that cannot heal (no primary key, bad SQL): FailJob
BACKFILL_EXIT_USAGE = 2  # bad arguments: FailJob
# The database stayed unavailable (connection lost or refused, 57P01, 53300, ...) or a lock
# stayed taken past the worker's own retries with back-off (EX_TEMPFAIL of sysexits.h): the
# pod is retried (Count, up to backoffLimitPerIndex) and resumes from its checkpoint.
BACKFILL_EXIT_RETRYABLE = 75
BACKFILL_EXIT_STOPPED = 143  # SIGTERM (128 + 15): finished its batch and stopped; retried


def backfill_checkpoint_name(migration_id: str, step: str) -> str:
    return f"{migration_id}/{step}"


def job_name(migration_name: str, step: str) -> str:
    """`<migration>-<step>`, shortened with a hash suffix to fit the 63-character label limit."""
    name = f"{migration_name}-{step}"
    if len(name) <= 52:  # room for the Job controller's pod-name suffix
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:43].rstrip('-')}-{digest}"


def _owner_reference(body: dict[str, Any]) -> dict[str, Any]:
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


def _job_skeleton(
    body: dict[str, Any], step: Step, container: dict[str, Any], backoff_limit: int
) -> dict[str, Any]:
    name = job_name(body["metadata"]["name"], step.name)
    labels = {
        LABEL_MIGRATION: body["metadata"]["name"],
        LABEL_STEP: step.name,
        LABEL_MANAGED_BY: "dbmigrate",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": body["metadata"]["namespace"],
            "labels": labels,
            "ownerReferences": [_owner_reference(body)],
        },
        "spec": {
            "backoffLimit": backoff_limit,
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                    },
                    "containers": [container],
                },
            },
        },
    }


def build_backfill_job(
    body: dict[str, Any], spec: DatabaseMigrationSpec, step: Step, image: str
) -> dict[str, Any]:
    """The Job running `dbmigrate backfill` for a backfill step (Indexed when parallel)."""
    bf = step.backfill
    if bf is None:
        raise ValueError(f"step {step.name!r} is not a backfill step")
    workers = bf.parallelism
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
    job = _job_skeleton(body, step, container, BACKFILL_BACKOFF_LIMIT)
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


def build_tool_job(body: dict[str, Any], step: Step) -> dict[str, Any]:
    """The Job of a `job` step: any image and command (alembic, prisma, flyway, ...)."""
    tool = step.job
    if tool is None:
        raise ValueError(f"step {step.name!r} is not a job step")
    container: dict[str, Any] = {
        "name": "migrate",
        "image": tool.image,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }
    if tool.command:
        container["command"] = list(tool.command)
    if tool.args:
        container["args"] = list(tool.args)
    if tool.env:
        container["env"] = [e.to_k8s() for e in tool.env]
    job = _job_skeleton(body, step, container, tool.backoff_limit)
    # Tools run as whatever user their image expects; the pod-level non-root default is ours.
    del job["spec"]["template"]["spec"]["securityContext"]
    return job
