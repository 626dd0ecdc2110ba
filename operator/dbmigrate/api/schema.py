"""What every model of the DatabaseMigration API shares: its names, the patterns its fields are
checked with, the base model (camelCase aliases, unknown fields refused) and CEL rules.

The models are the single source of the CRD schema: `dbmigrate.api.crd` renders
`crds/dbmigrate.io_databasemigrations.yaml` from them, including the CEL rules attached with
`cel_rules` (`x-kubernetes-validations`), and a test keeps the checked-in file identical to the
rendering.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from dbmigrate.api.durations import DURATION_PATTERN

GROUP = "dbmigrate.io"
VERSION = "v1alpha1"
KIND = "DatabaseMigration"
PLURAL = "databasemigrations"
SINGULAR = "databasemigration"
SHORT_NAMES = ("dbm", "dbmig")

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
MIGRATION_ID = r"^[0-9]{14}_[a-z0-9_]+$"
QUALIFIED_TABLE = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$"
ROLLBACK_ANNOTATION = "dbmigrate.io/rollback"
ROLLBACK_REQUESTED = "requested"
# Who approved the migration (the checklist's Approval item): any non-empty value, e.g. a name.
APPROVAL_ANNOTATION = "dbmigrate.io/approved-by"
# Inline SQL is part of the object (etcd stores it whole, every pass lints it): larger migrations
# keep their SQL in a ConfigMap (upFrom / downFrom).
MAX_INLINE_SQL = 65536


# A duration field (`500ms`, `30s`, `1h30m`); `api.durations` parses it.
Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        json_schema_extra={"x-dbmigrate-format": "duration"},
    ),
]


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` for CEL rules (`x-kubernetes-validations`) on a model or field."""
    return {"x-kubernetes-validations": list(rules)}


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    def to_k8s(self) -> dict[str, Any]:
        """The resource form: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
