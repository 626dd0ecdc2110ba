"""One round of SLO analysis: ask Prometheus, judge with `core.slo`, return the round."""

from __future__ import annotations

import asyncio
from datetime import datetime

from dbmigrate.api.models import Analysis, AnalysisStatus
from dbmigrate.core import slo
from dbmigrate.prom.client import PrometheusClient


async def measure_round(
    analysis: Analysis,
    previous: AnalysisStatus | None,
    started_at: datetime,
    now: datetime,
) -> slo.AnalysisRound:
    """Measure every metric (and missing baselines) concurrently and judge the round."""
    async with PrometheusClient(analysis.prometheus.address) as prom:
        names = [m.name for m in analysis.metrics]
        current = await asyncio.gather(*(prom.query(m.query, at=now) for m in analysis.metrics))
        start, end = slo.baseline_window(analysis, started_at)
        need = slo.metrics_needing_baseline(analysis, previous)
        baselines = await asyncio.gather(*(prom.query_average(m.query, start, end) for m in need))
    return slo.evaluate_round(
        analysis,
        previous,
        dict(zip(names, current, strict=True)),
        now,
        baselines={m.name: b for m, b in zip(need, baselines, strict=True)},
    )
