"""What a migration may read in its namespace: the Secrets it names, and whether the operator
is allowed to hand them to it.

By default the operator reads (and lets its Jobs mount) any Secret the migration names in its
own namespace. A platform team can narrow that to Secrets carrying one label
(`DBMIGRATE_SECRET_LABEL`, the chart's `secrets.requireLabel`): then whoever may create a
DatabaseMigration can use only the Secrets the team marked for migrations, not every Secret of
the namespace. RBAC cannot say this (a `get` cannot be limited by label), so the operator
enforces it: every Secret a migration names is checked before it is read or put into a Job.
"""

from __future__ import annotations

from dbmigrate.api.models import DatabaseMigrationSpec


def parse_secret_label(text: str) -> tuple[str, str] | None:
    """`key=value` (or empty: no restriction). A bare `key` means the value `"true"`."""
    text = text.strip()
    if not text:
        return None
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not key or (sep and not value):
        raise ValueError(f"a Secret label must be 'key=value', got {text!r}")
    return key, (value if sep else "true")


def secret_refusal(
    namespace: str, name: str, labels: dict[str, str] | None, required: tuple[str, str] | None
) -> str | None:
    """Why the operator will not use this Secret, or None when it may."""
    if required is None:
        return None
    key, value = required
    if (labels or {}).get(key) == value:
        return None
    return (
        f"Secret {name!r} in namespace {namespace!r} does not carry the label {key}={value}; "
        "this operator uses only Secrets labelled for migrations (ask the platform team, or "
        f"label it: kubectl label secret {name} {key}={value})"
    )


def job_secret_names(spec: DatabaseMigrationSpec) -> tuple[str, ...]:
    """The Secrets the migration's tool Jobs read through `valueFrom.secretKeyRef`, and the S3
    credentials of its backup Job, besides the DSN Secret (which every backfill and backup Job
    mounts too), in order of first mention."""
    names: list[str] = []
    if spec.backup is not None and spec.backup.s3 is not None:
        names.append(spec.backup.s3.credentials_secret_ref.name)
    for step in spec.steps:
        for env in (step.job.env or []) if step.job else []:
            ref = env.value_from.secret_key_ref if env.value_from else None
            if ref is not None and ref.name not in names:
                names.append(ref.name)
    dsn = spec.database.dsn_secret_ref.name
    return tuple(n for n in names if n != dsn)
