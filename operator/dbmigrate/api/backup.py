"""The backup a migration takes before it changes anything it cannot undo (`spec.backup`), and
what the operator reports of it (`status.backup`).

A Job of the operator's image runs `dbmigrate backup`: `pg_dump -Fc` of the tables the
migration touches (or of the whole database), verified after it was stored (the stored bytes
read back: size, sha256, and `pg_restore --list` parsing them), written to a
PersistentVolumeClaim or to S3-compatible object storage. The worker records the verified
backup in the database's `dbmigrate.backups` table; the operator reads that row, not the Job's
exit status, before it lets the guarded step start.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from dbmigrate.api.schema import DNS_SUBDOMAIN, Duration, Model, cel_rules

# A relative path of plain segments: none starts with a dot, so `..` cannot climb out.
RELATIVE_PATH = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$"
# S3 bucket names (lower case, digits, dots and hyphens, 3 to 63 characters).
BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
ENDPOINT = r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?/?$"

# The keys of the S3 credentials Secret (`s3.credentialsSecretRef`).
S3_ACCESS_KEY_ID_KEY = "accessKeyId"
S3_SECRET_ACCESS_KEY_KEY = "secretAccessKey"  # noqa: S105 - the name of a key, not a secret

BackupWhen = Literal["BeforeFirstStep", "BeforePointOfNoReturn"]
BackupScope = Literal["Tables", "Database"]
BackupState = Literal["Running", "Succeeded", "Failed", "Skipped"]


class BackupVolume(Model):
    """A PersistentVolumeClaim in the migration's namespace; the dump is written to its root
    (or `subPath`) as `<migrationId>-<step>-<UTC timestamp>.dump`."""

    claim_name: Annotated[
        str, Field(max_length=253, pattern=DNS_SUBDOMAIN, description="The claim's name.")
    ]
    sub_path: Annotated[
        str | None,
        Field(
            default=None,
            max_length=512,
            pattern=RELATIVE_PATH,
            description="A directory inside the volume (created when missing).",
        ),
    ]


class SecretRef(Model):
    name: Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")]


class BackupS3(Model):
    """S3-compatible object storage (AWS S3, SeaweedFS, Ceph RGW, GCS's XML API, ...)."""

    endpoint: Annotated[
        str,
        Field(
            max_length=512,
            pattern=ENDPOINT,
            description="`https://host[:port]` (or `http://` inside a trusted network).",
        ),
    ]
    bucket: Annotated[str, Field(pattern=BUCKET, description="An existing bucket.")]
    prefix: Annotated[
        str | None,
        Field(
            default=None,
            max_length=512,
            pattern=RELATIVE_PATH,
            description="Key prefix: objects are `<prefix>/<migrationId>-<step>-<UTC "
            "timestamp>.dump`.",
        ),
    ]
    region: Annotated[
        str | None, Field(default=None, max_length=64, description="The bucket's region.")
    ]
    credentials_secret_ref: Annotated[
        SecretRef,
        Field(
            description=f"Secret with the keys `{S3_ACCESS_KEY_ID_KEY}` and "
            f"`{S3_SECRET_ACCESS_KEY_KEY}`; the Job reads them through secretKeyRef, they "
            "are never shown."
        ),
    ]
    insecure_skip_tls_verify: Annotated[
        bool, Field(default=False, description="Do not verify the endpoint's certificate.")
    ]


class Backup(Model):
    """A verified `pg_dump -Fc` taken by a Job before the guarded step starts."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            {
                "rule": "has(self.persistentVolumeClaim) != has(self.s3)",
                "message": "backup needs exactly one of persistentVolumeClaim and s3",
            },
        )
    )

    when: Annotated[
        BackupWhen,
        Field(
            default="BeforePointOfNoReturn",
            description="BeforePointOfNoReturn: before the first step marked "
            "pointOfNoReturn (a migration without one: before its first step). "
            "BeforeFirstStep: before anything runs.",
        ),
    ]
    scope: Annotated[
        BackupScope,
        Field(
            default="Tables",
            description="Tables: the existing tables the migration's SQL and backfills touch. "
            "Database: the whole database.",
        ),
    ]
    persistent_volume_claim: BackupVolume | None = None
    s3: BackupS3 | None = None
    timeout: Annotated[
        Duration,
        Field(
            default="1h",
            description="The backup Job's activeDeadlineSeconds: past it the backup failed.",
        ),
    ]

    @model_validator(mode="after")
    def _one_destination(self) -> Backup:
        if (self.persistent_volume_claim is None) == (self.s3 is None):
            raise ValueError("backup needs exactly one of persistentVolumeClaim and s3")
        return self


class BackupStatus(Model):
    """The backup as the operator saw it recorded (`dbmigrate.backups`) or failing."""

    model_config = ConfigDict(extra="ignore")

    state: BackupState
    before_step: str | None = None
    job: str | None = None
    # s3://bucket/key or pvc:<claim>/<path>: where the dump is, never a credential
    location: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    seconds: float | None = None
    scope: BackupScope | None = None
    tables: list[str] | None = None
    # What a person runs to restore it, the connection left to them (PG* variables).
    restore_command: str | None = None
    server_version: str | None = None
    client_version: str | None = None
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
