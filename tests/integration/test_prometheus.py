"""The SLO signal end to end: test app -> real Prometheus -> PromQL.

Covers:
- the test app's control endpoint (read, change, reject bad input) and real requests on `/`;
- the error ratio Prometheus computes follows a change made through the control endpoint
  within seconds;
- the latency histogram's quantile follows a latency change.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from dbmigrate_dev.postgres import free_port
from dbmigrate_dev.prometheus import PrometheusServer
from dbmigrate_dev.testapp import AppProcess
from tests.fixtures.prometheus import ScrapedApp, StartTestApp


@pytest.fixture(scope="module")
def bare_app() -> Iterator[AppProcess]:
    """A test app nobody scrapes: enough for the control endpoint."""
    app = AppProcess.start(free_port())
    try:
        yield app
    finally:
        app.stop()


def test_control_endpoint_reads_and_changes_settings(bare_app: AppProcess) -> None:
    assert bare_app.settings() == {
        "errorRatio": 0.0,
        "latencySeconds": 0.02,
        "requestsPerSecond": 30.0,
    }
    changed = bare_app.set_slo(error_ratio=0.3, latency=0.25)
    assert changed == {"errorRatio": 0.3, "latencySeconds": 0.25, "requestsPerSecond": 30.0}
    assert bare_app.settings() == changed
    assert bare_app.set_slo(rps=0)["requestsPerSecond"] == 0.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"errorRatio": 1.5}, "errorRatio must be between 0 and 1", id="ratio-above-1"),
        pytest.param({"errorRatio": -0.1}, "errorRatio must be between", id="ratio-negative"),
        pytest.param({"latencySeconds": "slow"}, "must be a number", id="latency-not-number"),
        pytest.param({"latencySeconds": True}, "must be a number", id="latency-bool"),
        pytest.param({"errorRate": 0.1}, "unknown settings: ['errorRate']", id="unknown-key"),
        pytest.param([0.1], "expected a JSON object", id="not-an-object"),
    ],
)
def test_control_endpoint_rejects_bad_settings(
    bare_app: AppProcess, body: object, message: str
) -> None:
    before = bare_app.settings()
    response = httpx.post(f"{bare_app.url}/control", json=body, timeout=5)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert bare_app.settings() == before


def test_real_requests_follow_the_settings(
    prometheus: PrometheusServer, start_test_app: StartTestApp
) -> None:
    app = start_test_app(error_ratio=1.0, latency=0.05, rps=0)
    codes = []
    for _ in range(4):
        started = time.monotonic()
        codes.append(httpx.get(f"{app.url}/", timeout=5).status_code)
        assert time.monotonic() - started >= 0.05
    assert codes == [500, 500, 500, 500]
    metrics = httpx.get(f"{app.url}/metrics", timeout=5).text
    assert 'http_requests_total{code="500"} 4.0' in metrics
    assert 'http_requests_total{code="200"} 0.0' in metrics
    assert "http_request_duration_seconds_count 4.0" in metrics
    # ... and Prometheus sees them too.
    prometheus.wait_value(
        f'sum(http_requests_total{{job="{app.job}",code="500"}})', lambda v: v == 4, timeout=15
    )


def test_error_ratio_follows_the_control_endpoint(
    prometheus: PrometheusServer, test_app: ScrapedApp
) -> None:
    query = test_app.error_ratio_query("10s")
    assert prometheus.wait_value(query, timeout=10) == 0.0

    test_app.set_slo(error_ratio=0.3)
    changed = time.monotonic()
    # The 10 s window starts to show the errors at the next scrape ...
    rising = prometheus.wait_value(query, lambda v: v > 0.05, timeout=10, poll=0.25)
    assert time.monotonic() - changed < 5, "the ratio did not move within a few seconds"
    assert rising <= 0.3 + 0.02
    # ... and holds the new ratio once the window covers only the new traffic.
    settled = prometheus.wait_value(query, lambda v: abs(v - 0.3) <= 0.02, timeout=30)
    assert settled == pytest.approx(0.3, abs=0.02)


def test_latency_quantile_follows_the_control_endpoint(
    prometheus: PrometheusServer, test_app: ScrapedApp
) -> None:
    query = test_app.latency_query(0.99, "10s")
    # Requests take 20 ms: the quantile lies in the (10 ms, 25 ms] bucket.
    before = prometheus.wait_value(query, timeout=10)
    assert 0.01 < before <= 0.025

    test_app.set_slo(latency=0.6)
    changed = time.monotonic()
    # Once more than 1 % of the window's requests are slow, p99 is in the (0.5 s, 0.75 s] bucket.
    after = prometheus.wait_value(query, lambda v: v > 0.5, timeout=15, poll=0.25)
    assert time.monotonic() - changed < 5
    assert 0.5 < after <= 0.75
