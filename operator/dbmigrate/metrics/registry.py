"""The operator's Prometheus metrics (prometheus-client) and the /metrics endpoint.

Label sets are bounded: namespaces, phases, step kinds, condition reasons and verdicts — never
migration names, SQL or anything from a Secret.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator

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
ROLLBACKS = Counter("dbmigrate_rollbacks_total", "Rollbacks started, by trigger", ["reason"])
RECONCILE_ERRORS = Counter(
    "dbmigrate_reconcile_errors_total", "Reconcile passes that failed unexpectedly (retried)"
)
BACKFILL_ROWS = Counter("dbmigrate_backfill_rows_total", "Rows updated by backfill steps")
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


def serve(port: int) -> None:
    start_http_server(port, addr="0.0.0.0")  # noqa: S104 - scraped from inside the cluster
