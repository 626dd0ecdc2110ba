"""The operator's Prometheus metrics (prometheus-client) and the /metrics endpoint.

Label sets are bounded: namespaces, phases, step kinds, condition reasons and verdicts — never
migration names, SQL or anything from a Secret.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

STEPS_APPLIED = Counter("dbmigrate_steps_applied_total", "Steps applied", ["kind"])
STEPS_REVERTED = Counter("dbmigrate_steps_reverted_total", "Steps reverted", ["kind"])
STEP_DURATION = Histogram(
    "dbmigrate_step_duration_seconds",
    "Wall time of applied steps, from start to success",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400),
)
LOCK_RETRIES = Counter(
    "dbmigrate_lock_timeout_retries_total", "DDL attempts retried after lock_timeout (55P03)"
)
BLOCKED_EPISODES = Counter(
    "dbmigrate_blocked_application_episodes_total",
    "Statements (kind sql) and backfill batches (kind backfill) cancelled because application "
    "queries waited on them longer than safety.maxBlockedDuration",
    ["kind"],
)
ROLLBACKS = Counter("dbmigrate_rollbacks_total", "Rollbacks started, by trigger", ["reason"])
RECONCILE_ERRORS = Counter(
    "dbmigrate_reconcile_errors_total", "Reconcile passes that failed unexpectedly (retried)"
)
BACKFILL_ROWS = Counter("dbmigrate_backfill_rows_total", "Rows updated by backfill steps")
POST_DEPLOY_FINDINGS = Counter(
    "dbmigrate_post_deploy_findings_total",
    "Findings of post-deployment watches: QueryRegression (a statement on a migrated table "
    "slower than postDeploy.maxQueryRegression times its mean before the migration) and "
    "UnusedIndex (an index the migration created, never scanned during the watch)",
    ["kind"],
)
ANALYSIS_MEASUREMENTS = Counter(
    "dbmigrate_analysis_measurements_total", "SLO analysis measurements by verdict", ["verdict"]
)


class MigrationPhases(Collector):
    """`dbmigrate_migrations{namespace,phase}`: how many migrations this operator sees per phase."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], tuple[str, str]] = {}

    def set(self, namespace: str, name: str, phase: str) -> None:
        with self._lock:
            self._phases[(namespace, name)] = (namespace, phase)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._phases.pop((namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "dbmigrate_migrations",
            "DatabaseMigrations by phase, as last seen by this operator",
            labels=["namespace", "phase"],
        )
        with self._lock:
            counts = Tally(self._phases.values())
        for (namespace, phase), count in sorted(counts.items()):
            family.add_metric([namespace, phase], count)
        yield family


MIGRATIONS = MigrationPhases()
REGISTRY.register(MIGRATIONS)


class DatabaseGauges(Collector):
    """What the databases of the migrations under way say about themselves, by namespace (the
    worst of the namespace's migrations): `dbmigrate_database_blocked_backends`,
    `dbmigrate_database_longest_lock_wait_seconds`, `dbmigrate_database_replication_lag_seconds`
    (absent while no migration of the namespace sees a replica)."""

    _FAMILIES = (
        ("blocked_backends", "Sessions waiting for a lock in a migration's database"),
        ("longest_lock_wait_seconds", "The longest lock wait in a migration's database"),
        ("replication_lag_seconds", "The worst replica's replay lag of a migration's database"),
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], tuple[float | None, ...]] = {}

    def set(self, namespace: str, name: str, measured: Any) -> None:
        """`measured`: an `api.status.DatabaseMeasurements`."""
        values = (
            float(measured.blocked_backends),
            float(measured.longest_lock_wait_seconds),
            measured.replication_lag_seconds,
        )
        with self._lock:
            self._values[(namespace, name)] = values

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._values.pop((namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            values = dict(self._values)
        for index, (suffix, documentation) in enumerate(self._FAMILIES):
            family = GaugeMetricFamily(
                f"dbmigrate_database_{suffix}", documentation, labels=["namespace"]
            )
            worst: dict[str, float] = {}
            for (namespace, _name), measured in values.items():
                value = measured[index]
                if value is not None:
                    worst[namespace] = max(value, worst.get(namespace, value))
            for namespace, value in sorted(worst.items()):
                family.add_metric([namespace], value)
            yield family


DATABASE = DatabaseGauges()
REGISTRY.register(DATABASE)


def serve(port: int) -> None:
    start_http_server(port, addr="0.0.0.0")  # noqa: S104 - scraped from inside the cluster
