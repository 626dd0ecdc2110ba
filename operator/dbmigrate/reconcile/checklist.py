"""The checklist's facts that need I/O: whether the analysis can measure (Prometheus answers,
the database answers an sql metric, every metric has a baseline). `core.checklist` judges them
with the rest.

Measured only before the start (after it, the analysis itself measures) and at most every
`MONITORING_MAX_AGE` seconds while the migration waits, so that a migration waiting for its
approval does not query Prometheus at every pass.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from dbmigrate.api.checklist import ChecklistStatus
from dbmigrate.api.models import Analysis, DatabaseMigrationSpec, DatabaseMigrationStatus
from dbmigrate.core import slo
from dbmigrate.core.actions import Observation
from dbmigrate.core.checklist import ChecklistFacts, MonitoringFacts, approval_of
from dbmigrate.core.checklist import evaluate_checklist as judge
from dbmigrate.core.slo import QueryResult
from dbmigrate.prom.client import PrometheusClient
from dbmigrate.reconcile.slo import sql_metric_values

MONITORING_MAX_AGE = 30.0


async def measure_monitoring(
    analysis: Analysis, now: datetime, dsn: str | None = None
) -> MonitoringFacts:
    """Each metric's baseline as the start would take it: a PromQL metric's average over
    `baselineWindow` ending now, an sql metric's value in the database now."""
    start, end = slo.baseline_window(analysis, now)
    promql = [m for m in analysis.metrics if m.query is not None]
    results = await sql_metric_values([m for m in analysis.metrics if m.sql is not None], dsn)
    if promql and analysis.prometheus is not None:
        async with PrometheusClient(analysis.prometheus.address) as prom:
            averages = await asyncio.gather(
                *(prom.query_average(m.query or "", start, end) for m in promql)
            )
        results.update({m.name: r for m, r in zip(promql, averages, strict=True)})
    baselines: dict[str, float] = {}
    problems: dict[str, str] = {}
    for metric in analysis.metrics:
        result = results.get(metric.name) or QueryResult.failed("not measured")
        if result.usable and result.value is not None:
            baselines[metric.name] = result.value
        else:
            problems[metric.name] = result.reason()
    return MonitoringFacts(baselines=baselines, problems=problems)


class MonitoringCache:
    """The last monitoring facts and what they were measured for."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._at = 0.0
        self._facts: MonitoringFacts | None = None

    async def facts(
        self, analysis: Analysis, now: datetime, dsn: str | None = None
    ) -> MonitoringFacts:
        key = analysis.model_dump_json()
        fresh = time.monotonic() - self._at < MONITORING_MAX_AGE
        if self._facts is None or key != self._key or not fresh:
            self._facts = await measure_monitoring(analysis, now, dsn)
            self._key, self._at = key, time.monotonic()
        return self._facts


async def evaluate_checklist(
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    obs: Observation,
    metadata: dict[str, Any],
    cache: MonitoringCache,
    dsn: str | None = None,
) -> ChecklistStatus:
    """The checklist as it stands this pass."""
    monitoring = None
    if spec.analysis is not None and status.started_at is None:
        monitoring = await cache.facts(spec.analysis, obs.now, dsn)
    facts = ChecklistFacts(
        lint_errors=obs.lint_errors,
        lint_findings=len(obs.lint_findings),
        approval=approval_of(metadata),
        monitoring=monitoring,
    )
    return judge(spec, status, facts)
