"""The ConfigMap that carries a migration's report: `<migration>-report`, key `report.md`,
labelled as the operator's and owned by the DatabaseMigration (garbage-collected with it).

A ConfigMap holds at most 1 MiB: a longer report is cut, with a note saying so (the whole
report stays in `dbmigrate.runs`).
"""

from __future__ import annotations

from typing import Any

from dbmigrate.core.jobs import (
    LABEL_MANAGED_BY,
    LABEL_MIGRATION,
    label_value,
    owner_reference,
)

CONFIG_MAP_KEY = "report.md"
CONFIG_MAP_SUFFIX = "-report"
# The API server refuses objects past 1 MiB (data and metadata together): room for the latter.
MAX_REPORT_BYTES = 1_000_000


def report_config_map_name(migration_name: str) -> str:
    return f"{migration_name}{CONFIG_MAP_SUFFIX}"


def fit_report(markdown: str, limit: int = MAX_REPORT_BYTES) -> str:
    """The report, cut to `limit` bytes of UTF-8 (with a note) when it is longer."""
    data = markdown.encode("utf-8")
    if len(data) <= limit:
        return markdown
    note = (
        f"\n\n> This report was cut: it has {len(data):,} bytes and a ConfigMap holds at most "
        f"{limit:,}. The whole report is in the database's `dbmigrate.runs` table "
        "(`dbmigrate report --migration-id ID`).\n"
    )
    keep = limit - len(note.encode("utf-8"))
    head = data[: max(0, keep)].decode("utf-8", errors="ignore")
    return head + note


def build_report_config_map(body: dict[str, Any], markdown: str) -> dict[str, Any]:
    """The report's ConfigMap for the DatabaseMigration `body` (its name, namespace, uid)."""
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": report_config_map_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {
                LABEL_MANAGED_BY: "dbmigrate",
                LABEL_MIGRATION: label_value(meta["name"]),
            },
            "ownerReferences": [owner_reference(body)],
        },
        "data": {CONFIG_MAP_KEY: fit_report(markdown)},
    }
