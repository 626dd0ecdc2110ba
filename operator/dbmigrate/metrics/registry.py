"""The operator's Prometheus metrics (prometheus-client) and the /metrics endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

MIGRATIONS_BY_PHASE = Gauge(
    "dbmigrate_migrations",
    "DatabaseMigrations by phase, as last seen by this operator",
    ["namespace", "phase"],
)
STEPS_APPLIED = Counter("dbmigrate_steps_applied_total", "Steps applied", ["kind"])
STEPS_REVERTED = Counter("dbmigrate_steps_reverted_total", "Steps reverted", ["kind"])
STEP_DURATION = Histogram(
    "dbmigrate_step_duration_seconds",
    "Duration of applied steps",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
LOCK_RETRIES = Counter(
    "dbmigrate_lock_timeout_retries_total", "DDL attempts retried after lock_timeout (55P03)"
)
RECONCILE_ERRORS = Counter(
    "dbmigrate_reconcile_errors_total", "Reconcile passes that failed unexpectedly"
)


def serve(port: int) -> None:
    start_http_server(port, addr="0.0.0.0")  # noqa: S104 - scraped from inside the cluster
