"""Operator settings: one typed object read from `DBMIGRATE_*` environment variables at start."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dbmigrate.core.access import parse_secret_label

DEFAULT_IMAGE = "ghcr.io/dbmigrate/dbmigrate:0.1.0"


@dataclass(frozen=True)
class Settings:
    image: str = DEFAULT_IMAGE  # the image backfill Jobs run (the operator's own)
    poll_interval: float = 5.0  # seconds between looks at a waiting migration
    db_connect_timeout: int = 10
    argocd_namespaces: tuple[str, ...] = ("argocd",)
    peering_name: str = "dbmigrate"
    # Only Secrets with this label may be used by a migration (None: any in its namespace).
    secret_label: tuple[str, str] | None = None
    # kopf: seconds the API server keeps a watch open before kopf opens it again, and for one
    # API request (chart values operator.kopf.*; BENCHMARKS.md "Fleet" for what they cost).
    watch_timeout: int = 300
    request_timeout: float = 60.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        return cls(
            image=e.get("DBMIGRATE_IMAGE", DEFAULT_IMAGE),
            poll_interval=float(e.get("DBMIGRATE_POLL_INTERVAL", "5")),
            db_connect_timeout=int(e.get("DBMIGRATE_DB_CONNECT_TIMEOUT", "10")),
            argocd_namespaces=tuple(
                ns for ns in e.get("DBMIGRATE_ARGOCD_NAMESPACES", "argocd").split(",") if ns
            ),
            peering_name=e.get("DBMIGRATE_PEERING", "dbmigrate"),
            secret_label=parse_secret_label(e.get("DBMIGRATE_SECRET_LABEL", "")),
            watch_timeout=int(e.get("DBMIGRATE_WATCH_TIMEOUT", "300")),
            request_timeout=float(e.get("DBMIGRATE_REQUEST_TIMEOUT", "60")),
        )
