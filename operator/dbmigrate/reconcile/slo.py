"""One round of SLO analysis: ask Prometheus and the database, judge with `core.slo`.

A `query:` metric is measured in Prometheus (its baseline: the query averaged over the baseline
window); an `sql:` metric in the migration's database (`db.measurements`). An `sql:` metric has
no history to average, so its baseline is the value of the round measured before the first
step (the first round: it runs in the pass after the start, before the first step is chosen);
when that one gave no usable value, there is none, and `maxRatioToBaseline` stays Inconclusive.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from dbmigrate.api.models import Analysis, AnalysisStatus, Metric
from dbmigrate.core import slo
from dbmigrate.core.slo import QueryResult
from dbmigrate.db.measurements import measure_sql_metrics
from dbmigrate.prom.client import PrometheusClient

NO_SQL_BASELINE = QueryResult.failed(
    "the baseline of an sql metric is its value before the first step, and none was measured then"
)


async def measure_round(
    analysis: Analysis,
    previous: AnalysisStatus | None,
    started_at: datetime,
    now: datetime,
    *,
    dsn: str | None = None,
    before_first_step: bool = False,
) -> slo.AnalysisRound:
    """Measure every metric (and missing baselines) concurrently and judge the round."""
    prom_metrics = [m for m in analysis.metrics if m.query is not None]
    sql_metrics = [m for m in analysis.metrics if m.sql is not None]
    need = slo.metrics_needing_baseline(analysis, previous)
    (current, baselines), sql_current = await asyncio.gather(
        _measure_prometheus(analysis, prom_metrics, need, started_at, now),
        sql_metric_values(sql_metrics, dsn),
    )
    current.update(sql_current)
    for m in need:
        if m.sql is not None:
            baselines[m.name] = sql_current[m.name] if before_first_step else NO_SQL_BASELINE
    return slo.evaluate_round(analysis, previous, current, now, baselines=baselines)


async def _measure_prometheus(
    analysis: Analysis,
    metrics: list[Metric],
    need: tuple[Metric, ...],
    started_at: datetime,
    now: datetime,
) -> tuple[dict[str, QueryResult], dict[str, QueryResult]]:
    """(current values, baselines) of the PromQL metrics."""
    need = tuple(m for m in need if m.query is not None)
    if not metrics or analysis.prometheus is None:
        return {}, {}
    async with PrometheusClient(analysis.prometheus.address) as prom:
        current = await asyncio.gather(*(prom.query(_promql(m), at=now) for m in metrics))
        start, end = slo.baseline_window(analysis, started_at)
        baselines = await asyncio.gather(
            *(prom.query_average(_promql(m), start, end) for m in need)
        )
    return (
        {m.name: r for m, r in zip(metrics, current, strict=True)},
        {m.name: b for m, b in zip(need, baselines, strict=True)},
    )


async def sql_metric_values(metrics: list[Metric], dsn: str | None) -> dict[str, QueryResult]:
    """The sql metrics' values now, in the migration's database (each failure Inconclusive)."""
    if not metrics:
        return {}
    if dsn is None:
        return {m.name: QueryResult.failed("the database's DSN is not readable") for m in metrics}
    return await measure_sql_metrics(dsn, {m.name: _sql(m) for m in metrics})


def _promql(metric: Metric) -> str:
    assert metric.query is not None
    return metric.query


def _sql(metric: Metric) -> str:
    assert metric.sql is not None
    return metric.sql
