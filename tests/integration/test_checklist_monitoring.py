"""The checklist's Monitoring facts against a real Prometheus scraping the test app: a baseline
for every metric when Prometheus has the series; the metric named with why when it has none
(an unknown job) or when Prometheus cannot be reached (a closed port)."""

from __future__ import annotations

from datetime import UTC, datetime

from dbmigrate.api.models import Analysis
from dbmigrate.reconcile.checklist import MonitoringCache, measure_monitoring
from dbmigrate_dev.postgres import free_port
from dbmigrate_dev.prometheus import PrometheusServer
from tests.fixtures.prometheus import ScrapedApp


def analysis(address: str, *queries: tuple[str, str]) -> Analysis:
    return Analysis.model_validate(
        {
            "prometheus": {"address": address},
            "baselineWindow": "5s",
            "metrics": [{"name": n, "query": q, "max": 1} for n, q in queries],
        }
    )


async def test_baselines_of_every_metric(
    prometheus: PrometheusServer, test_app: ScrapedApp
) -> None:
    spec = analysis(
        prometheus.url,
        ("requests", f'sum(rate(http_requests_total{{job="{test_app.job}"}}[5s]))'),
        ("missing", 'sum(rate(http_requests_total{job="no-such-job"}[5s]))'),
    )
    facts = await measure_monitoring(spec, datetime.now(UTC))
    assert set(facts.baselines) == {"requests"}
    assert facts.baselines["requests"] > 0
    assert set(facts.problems) == {"missing"}
    assert not facts.ready


async def test_unreachable_prometheus_names_every_metric() -> None:
    spec = analysis(f"http://127.0.0.1:{free_port()}", ("errors", "sum(x)"), ("p99", "sum(y)"))
    facts = await measure_monitoring(spec, datetime.now(UTC))
    assert facts.baselines == {}
    assert set(facts.problems) == {"errors", "p99"}
    assert all("cannot connect to Prometheus" in p for p in facts.problems.values())


async def test_the_cache_measures_once_per_spec(
    prometheus: PrometheusServer, test_app: ScrapedApp
) -> None:
    query = f'sum(rate(http_requests_total{{job="{test_app.job}"}}[5s]))'
    cache = MonitoringCache()
    first = await cache.facts(analysis(prometheus.url, ("requests", query)), datetime.now(UTC))
    again = await cache.facts(analysis(prometheus.url, ("requests", query)), datetime.now(UTC))
    assert again is first
    other = await cache.facts(analysis(prometheus.url, ("rps", query)), datetime.now(UTC))
    assert other is not first
    assert set(other.baselines) == {"rps"}


async def test_an_sql_metric_is_measured_in_the_database(pg_dsn: str) -> None:
    spec = Analysis.model_validate(
        {
            "metrics": [
                {"name": "ok", "sql": "SELECT 42", "max": 100},
                {"name": "null", "sql": "SELECT NULL::int", "max": 1},
            ]
        }
    )
    facts = await measure_monitoring(spec, datetime.now(UTC), pg_dsn)
    assert facts.baselines == {"ok": 42.0}
    assert set(facts.problems) == {"null"}
