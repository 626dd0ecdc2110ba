"""SLO analysis against a real Prometheus scraping the test app.

Covers:
- an absolute `max` threshold: errors raised through the control endpoint turn the verdict
  Failed (and two failed rounds decide Rollback), errors lowered turn it Successful again;
- a `maxRatioToBaseline` threshold: the baseline is the query averaged over a window before the
  change (`query_average`), an instant query at a past time still sees it, and raised latency
  turns the verdict Failed;
- what must be Inconclusive and never Failed: NaN (0/0, no traffic), an empty result (a job
  that does not exist), several series, a range vector, a PromQL syntax error, an unreachable
  Prometheus (closed port), an HTTP error, a Prometheus that never answers (timeout) — for
  instant queries and for baselines;
- credentials in the address never show up in messages.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from dbmigrate.api.models import Analysis, AnalysisStatus, Measurement, Metric
from dbmigrate.core.slo import (
    Continue,
    Pause,
    QueryResult,
    Rollback,
    evaluate_metric,
    evaluate_round,
    format_number,
)
from dbmigrate.prom.client import PrometheusClient
from dbmigrate_dev.postgres import free_port
from dbmigrate_dev.prometheus import PrometheusServer
from tests.fixtures.prometheus import ScrapedApp, StartTestApp

WINDOW = "5s"  # short rate windows keep the tests fast: a change shows fully within ~6 s


def now() -> datetime:
    return datetime.now(UTC)


async def wait_for_verdict(
    measure: Callable[[], Awaitable[Measurement]], verdict: str, within: float = 30.0
) -> Measurement:
    """Measure every half second until the verdict is `verdict`; return that measurement."""
    deadline = time.monotonic() + within
    while True:
        measurement = await measure()
        if measurement.result == verdict:
            return measurement
        if time.monotonic() > deadline:
            raise AssertionError(f"still {measurement.result} after {within:g}s: {measurement}")
        await asyncio.sleep(0.5)


@pytest.fixture
async def client(prometheus: PrometheusServer) -> AsyncIterator[PrometheusClient]:
    async with PrometheusClient(prometheus.url, timeout=5) as prom:
        yield prom


async def test_max_threshold_fails_when_errors_rise_and_recovers(
    client: PrometheusClient, test_app: ScrapedApp
) -> None:
    error_rate = Metric(name="error-rate", query=test_app.error_ratio_query(WINDOW), max=0.05)
    spec = Analysis.model_validate(
        {
            "prometheus": {"address": client.address},
            "failureLimit": 2,
            "metrics": [error_rate.to_k8s()],
        }
    )

    async def measure() -> Measurement:
        return evaluate_metric(error_rate, await client.query(error_rate.query), None, now())

    healthy = await measure()
    assert healthy.result == "Successful", healthy
    assert healthy.value == 0.0
    assert healthy.message == "0 <= max 0.05"

    test_app.set_slo(error_ratio=0.3)
    failed = await wait_for_verdict(measure, "Failed")
    assert failed.value is not None
    assert failed.value > 0.05
    assert failed.message == f"{format_number(failed.value)} > max 0.05"

    # Two failed rounds in a row reach failureLimit 2: roll back, with the measured values.
    status: AnalysisStatus | None = None
    decisions = []
    for _ in range(2):
        result = await client.query(error_rate.query)
        outcome = evaluate_round(spec, status, {"error-rate": result}, now())
        status = outcome.status
        decisions.append(outcome.decision)
    assert decisions[0] == Continue()
    assert isinstance(decisions[1], Rollback)
    assert decisions[1].reason.startswith("error-rate ")
    assert decisions[1].reason.endswith(" > max 0.05 (2 consecutive)")
    assert status is not None
    assert status.consecutive_failures == 2

    test_app.set_slo(error_ratio=0.0)
    recovered = await wait_for_verdict(measure, "Successful")
    assert recovered.value is not None
    assert recovered.value <= 0.05
    outcome = evaluate_round(spec, status, {"error-rate": QueryResult.of(recovered.value)}, now())
    assert outcome.status.consecutive_failures == 0
    assert outcome.decision == Continue()
    assert [c.message for c in outcome.changes] == [
        f"error-rate Failed -> Successful: {format_number(recovered.value)} <= max 0.05"
    ]


async def test_ratio_to_baseline_fails_when_latency_rises(
    client: PrometheusClient, start_test_app: StartTestApp
) -> None:
    app = start_test_app(latency=0.05)
    p99 = Metric(
        name="p99-latency", query=app.latency_query(0.99, WINDOW), max_ratio_to_baseline=2.0
    )
    # Let the baseline window fill with a few evaluations of the 50 ms latency.
    await asyncio.sleep(3)
    started = now()  # "the migration started"
    baseline = await client.query_average(p99.query, started - timedelta(seconds=5), started)
    assert baseline.error is None
    assert baseline.value is not None
    # 50 ms requests sit in the (25 ms, 50 ms] bucket: p99 interpolates to 49.75 ms.
    assert baseline.value == pytest.approx(0.04975, rel=0.01)

    async def measure() -> Measurement:
        return evaluate_metric(p99, await client.query(p99.query), baseline, now())

    steady = await measure()
    assert steady.result == "Successful", steady
    assert steady.threshold is not None
    assert steady.threshold.startswith("max 2x baseline 0.04975 = 0.0995")

    app.set_slo(latency=0.6)
    failed = await wait_for_verdict(measure, "Failed")
    assert failed.value is not None
    assert 0.5 < failed.value <= 0.75
    assert failed.message == f"{format_number(failed.value)} > max 2x baseline 0.04975 = 0.0995"

    # The instant query at the start time still sees the old latency.
    then = await client.query(p99.query, at=started)
    assert then.value == pytest.approx(0.04975, rel=0.01)


# --- inconclusive, never failed --------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung Prometheus)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("where", "query", "rps", "message"),
    [
        pytest.param(
            "prometheus",
            "{error_ratio}",
            0,
            "query returned NaN (for a ratio: 0/0, no traffic in the rate window)",
            id="nan-no-traffic",
        ),
        pytest.param(
            "prometheus",
            'sum(rate(http_requests_total{{job="no-such-job-{unique}"}}[5s]))',
            None,
            "query returned no data (empty vector)",
            id="empty-unknown-job",
        ),
        pytest.param(
            "prometheus",
            'http_requests_total{{job="{job}"}}',
            30,
            "query returned 2 series; aggregate it",
            id="several-series",
        ),
        pytest.param(
            "prometheus",
            'http_requests_total{{job="{job}",code="200"}}[5s]',
            30,
            "query returned a range vector",
            id="range-vector",
        ),
        pytest.param(
            "prometheus",
            "sum(rate(http_requests_total[5s]",
            None,
            "Prometheus rejected the query (bad_data)",
            id="syntax-error",
        ),
        pytest.param(
            "closed-port",
            "vector(0.01)",
            None,
            "cannot connect to Prometheus at http://127.0.0.1:{port}: connection refused",
            id="unreachable-closed-port",
        ),
        pytest.param(
            "wrong-path",
            "vector(0.01)",
            None,
            "Prometheus at {address} answered HTTP 404",
            id="http-error",
        ),
        pytest.param(
            "silent-port",
            "vector(0.01)",
            None,
            "Prometheus at http://127.0.0.1:{port} did not answer in 1s",
            id="timeout",
        ),
    ],
)
async def test_unusable_answers_are_inconclusive(
    prometheus: PrometheusServer,
    start_test_app: StartTestApp,
    silent_port: int,
    where: str,
    query: str,
    rps: float | None,
    message: str,
) -> None:
    app = start_test_app(rps=rps) if rps is not None else None
    promql = query.format(
        job=app.job if app else "",
        error_ratio=app.error_ratio_query(WINDOW) if app else "",
        unique=uuid.uuid4().hex,
    )
    port = {"closed-port": free_port(), "silent-port": silent_port}.get(where)
    address = f"http://127.0.0.1:{port}" if port is not None else prometheus.url
    if where == "wrong-path":
        address += "/not-prometheus"
    metric = Metric(name="m", query=promql, max=0.05, min=0.0, max_ratio_to_baseline=2.0)

    async with PrometheusClient(address, timeout=1) as client:
        result = await client.query(promql)
        started = now()
        baseline = await client.query_average(promql, started - timedelta(seconds=5), started)

    expected = message.format(port=port, address=address)
    assert result.value is None
    assert result.error is not None
    assert result.error.startswith(expected)
    assert "page not found" not in result.error  # nothing of a body is echoed into status
    assert "parse error" not in result.error
    assert not baseline.usable
    assert baseline.error is not None

    measurement = evaluate_metric(metric, result, baseline, started)
    assert measurement.result == "Inconclusive"
    assert measurement.value is None
    assert measurement.message is not None
    assert measurement.message.startswith(expected)

    # Three such rounds reach the default inconclusiveLimit: Pause, not Rollback.
    spec = Analysis.model_validate(
        {"prometheus": {"address": address}, "metrics": [metric.to_k8s()]}
    )
    status = None
    for _ in range(3):
        outcome = evaluate_round(spec, status, {"m": result}, started, baselines={"m": baseline})
        status = outcome.status
    assert outcome.status.consecutive_failures == 0
    assert outcome.status.consecutive_inconclusive == 3
    assert outcome.status.baseline is None
    assert isinstance(outcome.decision, Pause)


async def test_baseline_of_a_job_without_data_says_why(client: PrometheusClient) -> None:
    end = now()
    result = await client.query_average(
        f'sum(rate(http_requests_total{{job="none-{uuid.uuid4().hex}"}}[5s]))',
        end - timedelta(minutes=1),
        end,
    )
    assert result == QueryResult.failed("query returned no data in the baseline window")


async def test_baseline_window_must_not_be_empty(client: PrometheusClient) -> None:
    end = now()
    result = await client.query_average("vector(1)", end, end)
    assert result.value is None
    assert result.error is not None
    assert result.error.startswith("empty baseline window")


@pytest.mark.parametrize(
    ("query", "value"),
    [
        pytest.param("vector(0.25)", 0.25, id="instant-vector"),
        pytest.param("0.5", 0.5, id="scalar"),
        pytest.param("scalar(vector(2))", 2.0, id="scalar-function"),
    ],
)
async def test_plain_values(client: PrometheusClient, query: str, value: float) -> None:
    assert await client.query(query) == QueryResult(value=value)
    end = now()
    average = await client.query_average(query, end - timedelta(seconds=30), end)
    assert average == QueryResult(value=value)


async def test_credentials_never_appear_in_messages(prometheus: PrometheusServer) -> None:
    # Prometheus does not check them; the point is what the client says about the address.
    port = free_port()
    address = f"http://admin:s3cret-token@127.0.0.1:{port}/prefix"
    async with PrometheusClient(address, timeout=1) as client:
        result = await client.query("vector(1)")
    assert client.address == f"http://127.0.0.1:{port}/prefix"
    assert result.error is not None
    assert "s3cret" not in result.error
    assert "admin" not in result.error
    assert f"http://127.0.0.1:{port}/prefix" in result.error

    # A URL with credentials is still a working address (Prometheus here does not check them).
    authed = prometheus.url.replace("http://", "http://admin:s3cret-token@")
    async with PrometheusClient(authed, timeout=5) as client:
        assert await client.query("vector(1)") == QueryResult(value=1.0)
