"""SLO analysis verdicts (dbmigrate.core.slo).

Covers:
- query results: finite values, NaN, +/-Inf, errors;
- one metric against each threshold kind (max, min, maxRatioToBaseline), combinations, and
  every way a value or a baseline can be unusable (empty, NaN, error, missing/zero baseline);
  an `sql:` metric is judged the same way and shows its SQL instead of a query;
- rounds: consecutive failed / inconclusive counters, resets, failureLimit, inconclusiveLimit
  with each onInconclusive mode, and the reason texts;
- baselines: recorded once, kept, pruned, and which metrics still need one;
- verdict changes since the previous round (for events);
- when the next measurement is due;
- number and time formatting.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from dbmigrate.api.models import Analysis, AnalysisStatus, Measurement, Metric
from dbmigrate.core.slo import (
    Continue,
    Pause,
    QueryResult,
    Rollback,
    baseline_window,
    changed_verdicts,
    evaluate_metric,
    evaluate_round,
    format_number,
    format_timestamp,
    measurement_due,
    metrics_needing_baseline,
    next_measurement_at,
    parse_timestamp,
    seconds_until_due,
)

AT = datetime(2024, 1, 15, 12, 0, 0, tzinfo=UTC)
ERR_QUERY = 'sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))'
EMPTY = QueryResult.failed("query returned no data (empty vector)")
REFUSED = QueryResult.failed("cannot connect to Prometheus at http://p:9090/: connection refused")
NAN = "query returned NaN (for a ratio: 0/0, no traffic in the rate window)"
INF = "query returned +Inf (a division by zero?)"
NO_THRESHOLD = "the metric has no threshold (set max, min or maxRatioToBaseline)"
MEANINGLESS = "a ratio to it means nothing (give this metric an absolute max instead)"


def metric(**fields: Any) -> Metric:
    doc = {"name": "m", "query": "q", **fields}
    return Metric.model_validate(doc)


def analysis(**fields: Any) -> Analysis:
    doc: dict[str, Any] = {
        "prometheus": {"address": "http://prometheus:9090"},
        "metrics": [
            {"name": "error-rate", "query": ERR_QUERY, "max": 0.05},
            {"name": "p99-latency", "query": "p99", "maxRatioToBaseline": 2.0},
        ],
        **fields,
    }
    return Analysis.model_validate(doc)


def measured(name: str, result: str) -> Measurement:
    return Measurement(metric=name, result=result, message=f"{name} was {result}")


# ---------------------------------------------------------------------------------------------
# query results


@pytest.mark.parametrize(
    ("value", "expected_value", "error"),
    [
        pytest.param(0.25, 0.25, None, id="finite"),
        pytest.param(0.0, 0.0, None, id="zero"),
        pytest.param(-3.0, -3.0, None, id="negative"),
        pytest.param(math.nan, None, "query returned NaN", id="nan"),
        pytest.param(math.inf, None, "query returned +Inf", id="plus-inf"),
        pytest.param(-math.inf, None, "query returned -Inf", id="minus-inf"),
    ],
)
def test_query_result_of(value: float, expected_value: float | None, error: str | None) -> None:
    result = QueryResult.of(value)
    assert result.value == expected_value
    assert result.usable == (error is None)
    if error is None:
        assert result.error is None
    else:
        assert result.error is not None
        assert result.error.startswith(error)
        assert result.reason().startswith(error)


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        pytest.param(QueryResult(value=math.nan), "query returned NaN", id="raw-nan"),
        pytest.param(QueryResult(), "no value", id="nothing"),
        pytest.param(QueryResult.failed("boom"), "boom", id="error"),
    ],
)
def test_unusable_results_say_why(result: QueryResult, reason: str) -> None:
    assert not result.usable
    assert result.reason().startswith(reason)


# ---------------------------------------------------------------------------------------------
# one metric


@pytest.mark.parametrize(
    ("thresholds", "result", "baseline", "verdict", "threshold", "message", "value"),
    [
        # max
        pytest.param(
            {"max": 0.05}, QueryResult.of(0.004), None,
            "Successful", "max 0.05", "0.004 <= max 0.05", 0.004, id="max-below",
        ),
        pytest.param(
            {"max": 0.05}, QueryResult.of(0.05), None,
            "Successful", "max 0.05", "0.05 <= max 0.05", 0.05, id="max-equal-is-fine",
        ),
        pytest.param(
            {"max": 0.05}, QueryResult.of(0.31), None,
            "Failed", "max 0.05", "0.31 > max 0.05", 0.31, id="max-above",
        ),
        pytest.param(
            {"max": 0.05}, QueryResult.of(0.123456), None,
            "Failed", "max 0.05", "0.1235 > max 0.05", 0.123456, id="max-value-rounded-in-text",
        ),
        # min
        pytest.param(
            {"min": 10}, QueryResult.of(12.0), None,
            "Successful", "min 10", "12 >= min 10", 12.0, id="min-above",
        ),
        pytest.param(
            {"min": 10}, QueryResult.of(10.0), None,
            "Successful", "min 10", "10 >= min 10", 10.0, id="min-equal-is-fine",
        ),
        pytest.param(
            {"min": 10}, QueryResult.of(3.5), None,
            "Failed", "min 10", "3.5 < min 10", 3.5, id="min-below",
        ),
        # maxRatioToBaseline
        pytest.param(
            {"maxRatioToBaseline": 2}, QueryResult.of(0.2), QueryResult.of(0.12),
            "Successful", "max 2x baseline 0.12 = 0.24", "0.2 <= max 2x baseline 0.12 = 0.24",
            0.2, id="ratio-below",
        ),
        pytest.param(
            {"maxRatioToBaseline": 2}, QueryResult.of(0.31), QueryResult.of(0.12),
            "Failed", "max 2x baseline 0.12 = 0.24", "0.31 > max 2x baseline 0.12 = 0.24",
            0.31, id="ratio-above",
        ),
        pytest.param(
            {"maxRatioToBaseline": 1.5}, QueryResult.of(0.3), QueryResult.of(0.2),
            "Successful", "max 1.5x baseline 0.2 = 0.3", "0.3 <= max 1.5x baseline 0.2 = 0.3",
            0.3, id="ratio-fractional-equal",
        ),
        pytest.param(
            {"maxRatioToBaseline": 2}, QueryResult.of(0.31), None,
            "Inconclusive", "max 2x baseline", "no baseline measured yet",
            0.31, id="ratio-baseline-missing",
        ),
        pytest.param(
            {"maxRatioToBaseline": 2}, QueryResult.of(0.31), QueryResult.of(0.0),
            "Inconclusive", "max 2x baseline 0 = 0", f"baseline is 0: {MEANINGLESS}",
            0.31, id="ratio-baseline-zero",
        ),
        pytest.param(
            {"maxRatioToBaseline": 2}, QueryResult.of(0.31), QueryResult.of(-1.0),
            "Inconclusive", "max 2x baseline -1 = -2", f"baseline is -1: {MEANINGLESS}",
            0.31, id="ratio-baseline-negative",
        ),
        pytest.param(
            {"maxRatioToBaseline": 2}, QueryResult.of(0.31), QueryResult.of(math.nan),
            "Inconclusive", "max 2x baseline", f"no usable baseline: {NAN}",
            0.31, id="ratio-baseline-nan",
        ),
        pytest.param(
            {"maxRatioToBaseline": 2}, QueryResult.of(0.31), QueryResult(value=math.inf),
            "Inconclusive", "max 2x baseline", f"no usable baseline: {INF}",
            0.31, id="ratio-baseline-raw-inf",
        ),
        pytest.param(
            {"maxRatioToBaseline": 2}, QueryResult.of(0.31), EMPTY,
            "Inconclusive", "max 2x baseline", f"no usable baseline: {EMPTY.error}",
            0.31, id="ratio-baseline-empty",
        ),
        # unusable values: never Failed, whatever the threshold
        pytest.param(
            {"max": 0.05}, QueryResult.of(math.nan), None,
            "Inconclusive", "max 0.05", NAN, None, id="max-value-nan",
        ),
        pytest.param(
            {"max": 0.05}, QueryResult.of(math.inf), None,
            "Inconclusive", "max 0.05", INF, None, id="max-value-inf",
        ),
        pytest.param(
            {"max": 0.05}, QueryResult(value=math.nan), None,
            "Inconclusive", "max 0.05", NAN, None, id="max-value-raw-nan",
        ),
        pytest.param(
            {"min": 10}, EMPTY, None,
            "Inconclusive", "min 10", EMPTY.error, None, id="min-value-empty",
        ),
        pytest.param(
            {"max": 0.05}, REFUSED, None,
            "Inconclusive", "max 0.05", REFUSED.error, None,
            id="max-prometheus-unreachable",
        ),
        pytest.param(
            {"maxRatioToBaseline": 2}, EMPTY, QueryResult.of(0.12),
            "Inconclusive", "max 2x baseline 0.12 = 0.24", EMPTY.error, None,
            id="ratio-value-empty",
        ),
        # several thresholds on one metric
        pytest.param(
            {"max": 1, "min": 0.5}, QueryResult.of(0.7), None,
            "Successful", "max 1, min 0.5", "0.7 <= max 1; 0.7 >= min 0.5", 0.7,
            id="max-and-min-pass",
        ),
        pytest.param(
            {"max": 1, "min": 0.5}, QueryResult.of(0.2), None,
            "Failed", "max 1, min 0.5", "0.2 < min 0.5", 0.2, id="max-passes-min-fails",
        ),
        pytest.param(
            {"max": 0.05, "maxRatioToBaseline": 2}, QueryResult.of(0.31), None,
            "Failed", "max 0.05, max 2x baseline", "0.31 > max 0.05", 0.31,
            id="failure-beats-missing-baseline",
        ),
        pytest.param(
            {"max": 0.5, "maxRatioToBaseline": 2}, QueryResult.of(0.31), QueryResult.of(0.0),
            "Inconclusive", "max 0.5, max 2x baseline 0 = 0", f"baseline is 0: {MEANINGLESS}", 0.31,
            id="pass-plus-zero-baseline-is-inconclusive",
        ),
        pytest.param(
            {"max": 1, "min": 0.5}, EMPTY, None,
            "Inconclusive", "max 1, min 0.5", EMPTY.error, None,
            id="one-error-said-once",
        ),
        pytest.param(
            {}, QueryResult.of(1.0), None,
            "Inconclusive", None, NO_THRESHOLD, 1.0, id="no-threshold",
        ),
    ],
)  # fmt: skip
def test_evaluate_metric(
    thresholds: dict[str, float],
    result: QueryResult,
    baseline: QueryResult | None,
    verdict: str,
    threshold: str | None,
    message: str,
    value: float | None,
) -> None:
    m = metric(name="error-rate", query=ERR_QUERY, **thresholds)
    measurement = evaluate_metric(m, result, baseline, AT)
    assert measurement.result == verdict
    assert measurement.threshold == threshold
    assert measurement.message == message
    assert measurement.value == value
    assert measurement.metric == "error-rate"
    assert measurement.query == ERR_QUERY
    assert measurement.at == "2024-01-15T12:00:00Z"


SQL_NULLS = "SELECT count(*) FROM users WHERE email_verified IS NULL"


@pytest.mark.parametrize(
    ("thresholds", "result", "baseline", "verdict", "message"),
    [
        pytest.param({"max": 0}, QueryResult.of(0), None, "Successful", "0 <= max 0", id="ok"),
        pytest.param({"max": 0}, QueryResult.of(3), None, "Failed", "3 > max 0", id="breach"),
        pytest.param(
            {"max": 0}, QueryResult.failed("sql returned NULL"), None,
            "Inconclusive", "sql returned NULL", id="null",
        ),
        pytest.param(
            {"maxRatioToBaseline": 2}, QueryResult.of(50), QueryResult.of(10),
            "Failed", "50 > max 2x baseline 10 = 20", id="ratio-to-start-value",
        ),
    ],
)  # fmt: skip
def test_sql_metric_is_judged_like_a_query(
    thresholds: dict[str, float],
    result: QueryResult,
    baseline: QueryResult | None,
    verdict: str,
    message: str,
) -> None:
    m = Metric.model_validate({"name": "nulls", "sql": SQL_NULLS, **thresholds})
    measurement = evaluate_metric(m, result, baseline, AT)
    assert (measurement.result, measurement.message) == (verdict, message)
    assert measurement.sql == SQL_NULLS
    assert measurement.query is None


def test_sql_only_analysis_rolls_back_after_failure_limit() -> None:
    a = Analysis.model_validate(
        {"failureLimit": 2, "metrics": [{"name": "nulls", "sql": SQL_NULLS, "max": 0}]}
    )
    first = evaluate_round(a, None, {"nulls": QueryResult.of(5)}, AT)
    assert isinstance(first.decision, Continue)
    second = evaluate_round(a, first.status, {"nulls": QueryResult.of(7)}, AT)
    assert isinstance(second.decision, Rollback)
    assert second.decision.reason == "nulls 7 > max 0 (2 consecutive)"


# ---------------------------------------------------------------------------------------------
# rounds

OK_ERR = QueryResult.of(0.004)
BAD_ERR = QueryResult.of(0.31)
OK_P99 = QueryResult.of(0.13)
BAD_P99 = QueryResult.of(0.5)
WITH_BASELINE = {"p99-latency": 0.12}


@pytest.mark.parametrize(
    ("spec", "previous", "results", "failures", "inconclusive", "decision"),
    [
        pytest.param(
            {}, None, {"error-rate": OK_ERR, "p99-latency": OK_P99},
            0, 0, Continue(), id="first-round-healthy",
        ),
        pytest.param(
            {}, AnalysisStatus(consecutive_failures=1, consecutive_inconclusive=2),
            {"error-rate": OK_ERR, "p99-latency": OK_P99},
            0, 0, Continue(), id="healthy-round-resets-both",
        ),
        pytest.param(
            {}, None, {"error-rate": BAD_ERR, "p99-latency": OK_P99},
            1, 0, Continue(), id="first-failure-below-limit",
        ),
        pytest.param(
            {}, AnalysisStatus(consecutive_failures=1),
            {"error-rate": BAD_ERR, "p99-latency": OK_P99},
            2, 0, Rollback("error-rate 0.31 > max 0.05 (2 consecutive)"),
            id="second-failure-rolls-back",
        ),
        pytest.param(
            {"failureLimit": 1}, None, {"error-rate": BAD_ERR, "p99-latency": OK_P99},
            1, 0, Rollback("error-rate 0.31 > max 0.05"), id="failure-limit-one",
        ),
        pytest.param(
            {"failureLimit": 3}, AnalysisStatus(consecutive_failures=1),
            {"error-rate": BAD_ERR, "p99-latency": OK_P99},
            2, 0, Continue(), id="failure-limit-three-not-reached",
        ),
        pytest.param(
            {}, AnalysisStatus(consecutive_failures=1),
            {"error-rate": BAD_ERR, "p99-latency": BAD_P99},
            2, 0,
            Rollback(
                "error-rate 0.31 > max 0.05; "
                "p99-latency 0.5 > max 2x baseline 0.12 = 0.24 (2 consecutive)"
            ),
            id="every-failed-metric-in-reason",
        ),
        pytest.param(
            {}, AnalysisStatus(consecutive_failures=1, consecutive_inconclusive=2),
            {"error-rate": BAD_ERR, "p99-latency": EMPTY},
            2, 0, Rollback("error-rate 0.31 > max 0.05 (2 consecutive)"),
            id="failed-plus-inconclusive-is-a-failed-round",
        ),
        pytest.param(
            {}, AnalysisStatus(consecutive_failures=1),
            {"error-rate": EMPTY, "p99-latency": OK_P99},
            1, 1, Continue(), id="inconclusive-round-keeps-failures",
        ),
        pytest.param(
            {}, AnalysisStatus(consecutive_inconclusive=1),
            {"error-rate": OK_ERR, "p99-latency": EMPTY},
            0, 2, Continue(), id="inconclusive-below-limit",
        ),
        pytest.param(
            {}, AnalysisStatus(consecutive_inconclusive=2),
            {"error-rate": EMPTY, "p99-latency": OK_P99},
            0, 3,
            Pause(
                "analysis inconclusive 3 times in a row: "
                "error-rate: query returned no data (empty vector)"
            ),
            id="inconclusive-limit-pauses-by-default",
        ),
        pytest.param(
            {"onInconclusive": "Rollback"}, AnalysisStatus(consecutive_inconclusive=2),
            {"error-rate": EMPTY, "p99-latency": OK_P99},
            0, 3,
            Rollback(
                "analysis inconclusive 3 times in a row: "
                "error-rate: query returned no data (empty vector)"
            ),
            id="inconclusive-limit-rolls-back",
        ),
        pytest.param(
            {"onInconclusive": "Ignore"}, AnalysisStatus(consecutive_inconclusive=2),
            {"error-rate": EMPTY, "p99-latency": OK_P99},
            0, 3, Continue(), id="inconclusive-limit-ignored",
        ),
        pytest.param(
            {"inconclusiveLimit": 1}, None, {"error-rate": REFUSED, "p99-latency": REFUSED},
            0, 1,
            Pause(
                "analysis inconclusive once: "
                "error-rate: cannot connect to Prometheus at http://p:9090/: connection refused; "
                "p99-latency: cannot connect to Prometheus at http://p:9090/: connection refused"
            ),
            id="inconclusive-limit-one-lists-every-metric",
        ),
        pytest.param(
            {}, AnalysisStatus(consecutive_inconclusive=5),
            {"error-rate": EMPTY, "p99-latency": OK_P99},
            0, 6,
            Pause(
                "analysis inconclusive 6 times in a row: "
                "error-rate: query returned no data (empty vector)"
            ),
            id="pause-holds-past-the-limit",
        ),
        pytest.param(
            {}, AnalysisStatus(consecutive_inconclusive=2),
            {"p99-latency": OK_P99},
            0, 3,
            Pause("analysis inconclusive 3 times in a row: error-rate: not measured this round"),
            id="missing-result-is-inconclusive",
        ),
    ],
)  # fmt: skip
def test_evaluate_round(
    spec: dict[str, Any],
    previous: AnalysisStatus | None,
    results: dict[str, QueryResult],
    failures: int,
    inconclusive: int,
    decision: Continue | Pause | Rollback,
) -> None:
    if previous is not None:
        previous = previous.model_copy(update={"baseline": WITH_BASELINE})
    else:
        previous = AnalysisStatus(baseline=WITH_BASELINE)
    outcome = evaluate_round(analysis(**spec), previous, results, AT)
    assert outcome.status.consecutive_failures == failures
    assert outcome.status.consecutive_inconclusive == inconclusive
    assert outcome.decision == decision
    assert outcome.status.last == list(outcome.measurements)
    assert [m.metric for m in outcome.measurements] == ["error-rate", "p99-latency"]
    assert outcome.status.last_measured_at == "2024-01-15T12:00:00Z"
    assert outcome.status.baseline == WITH_BASELINE


@pytest.mark.parametrize(
    ("results", "verdict"),
    [
        pytest.param({"error-rate": OK_ERR, "p99-latency": OK_P99}, "Successful", id="healthy"),
        pytest.param({"error-rate": BAD_ERR, "p99-latency": EMPTY}, "Failed", id="failed"),
        pytest.param({"error-rate": OK_ERR, "p99-latency": EMPTY}, "Inconclusive", id="unsure"),
    ],
)
def test_round_verdict(results: dict[str, QueryResult], verdict: str) -> None:
    previous = AnalysisStatus(baseline=WITH_BASELINE)
    assert evaluate_round(analysis(), previous, results, AT).result == verdict


def test_rollback_after_failure_limit_rounds_in_a_row() -> None:
    """Failed, inconclusive (a Prometheus blip), failed: the breach is not forgotten."""
    spec = analysis()
    status = AnalysisStatus(baseline=WITH_BASELINE)
    decisions = []
    for results in (
        {"error-rate": BAD_ERR, "p99-latency": OK_P99},
        {"error-rate": REFUSED, "p99-latency": REFUSED},
        {"error-rate": BAD_ERR, "p99-latency": OK_P99},
    ):
        outcome = evaluate_round(spec, status, results, AT)
        status = outcome.status
        decisions.append(outcome.decision)
    assert decisions == [
        Continue(),
        Continue(),
        Rollback("error-rate 0.31 > max 0.05 (2 consecutive)"),
    ]


# ---------------------------------------------------------------------------------------------
# baselines


@pytest.mark.parametrize(
    ("recorded", "fresh", "expected_baseline", "verdict", "message"),
    [
        pytest.param(
            None, {"p99-latency": QueryResult.of(0.12)}, {"p99-latency": 0.12},
            "Failed", "0.5 > max 2x baseline 0.12 = 0.24", id="fresh-baseline-recorded-and-used",
        ),
        pytest.param(
            {"p99-latency": 0.3}, None, {"p99-latency": 0.3},
            "Successful", "0.5 <= max 2x baseline 0.3 = 0.6", id="recorded-baseline-kept",
        ),
        pytest.param(
            {"p99-latency": 0.3}, {"p99-latency": EMPTY}, {"p99-latency": 0.3},
            "Successful", "0.5 <= max 2x baseline 0.3 = 0.6",
            id="failed-remeasure-keeps-recorded",
        ),
        pytest.param(
            None, {"p99-latency": EMPTY}, None,
            "Inconclusive", "no usable baseline: query returned no data",
            id="failed-baseline-not-recorded-says-why",
        ),
        pytest.param(
            None, {"p99-latency": QueryResult.of(math.nan)}, None,
            "Inconclusive", "no usable baseline: query returned NaN", id="nan-baseline",
        ),
        pytest.param(
            None, {"p99-latency": QueryResult.of(0.0)}, {"p99-latency": 0.0},
            "Inconclusive", "baseline is 0", id="zero-baseline-recorded-but-inconclusive",
        ),
        pytest.param(
            None, None, None,
            "Inconclusive", "no baseline measured yet", id="no-baseline-at-all",
        ),
        pytest.param(
            {"p99-latency": 0.3, "removed-metric": 1.0}, None, {"p99-latency": 0.3},
            "Successful", "0.5 <= max 2x baseline 0.3 = 0.6",
            id="baselines-of-removed-metrics-pruned",
        ),
    ],
)  # fmt: skip
def test_baselines(
    recorded: dict[str, float] | None,
    fresh: dict[str, QueryResult] | None,
    expected_baseline: dict[str, float] | None,
    verdict: str,
    message: str,
) -> None:
    previous = AnalysisStatus(baseline=recorded)
    results = {"error-rate": OK_ERR, "p99-latency": BAD_P99}
    outcome = evaluate_round(analysis(), previous, results, AT, baselines=fresh)
    assert outcome.status.baseline == expected_baseline
    p99 = outcome.measurements[1]
    assert p99.result == verdict
    assert p99.message is not None
    assert p99.message.startswith(message)


@pytest.mark.parametrize(
    ("recorded", "needing"),
    [
        pytest.param(None, ["p99-latency", "queue-depth"], id="none-recorded"),
        pytest.param({"p99-latency": 0.12}, ["queue-depth"], id="one-recorded"),
        pytest.param({"p99-latency": 0.12, "queue-depth": 0.0}, [], id="all-recorded"),
    ],
)
def test_metrics_needing_baseline(recorded: dict[str, float] | None, needing: list[str]) -> None:
    spec = analysis(
        metrics=[
            {"name": "error-rate", "query": "e", "max": 0.05},
            {"name": "p99-latency", "query": "p", "maxRatioToBaseline": 2},
            {"name": "queue-depth", "query": "q", "min": 0, "maxRatioToBaseline": 3},
        ]
    )
    got = metrics_needing_baseline(spec, AnalysisStatus(baseline=recorded))
    assert [m.name for m in got] == needing
    if recorded is None:
        assert [m.name for m in metrics_needing_baseline(spec, None)] == needing


@pytest.mark.parametrize(
    ("window", "started", "expected_start"),
    [
        pytest.param("10m", AT, AT - timedelta(minutes=10), id="default-window"),
        pytest.param("30s", AT, AT - timedelta(seconds=30), id="short-window"),
        pytest.param(
            "1h",
            datetime(2024, 1, 15, 13, 0, tzinfo=timezone(timedelta(hours=1))),
            AT - timedelta(hours=1),
            id="other-timezone-normalised",
        ),
        pytest.param("5m", AT.replace(tzinfo=None), AT - timedelta(minutes=5), id="naive-is-utc"),
    ],
)
def test_baseline_window(window: str, started: datetime, expected_start: datetime) -> None:
    start, end = baseline_window(analysis(baselineWindow=window), started)
    assert (start, end) == (expected_start, AT)
    assert end.tzinfo is not None


# ---------------------------------------------------------------------------------------------
# verdict changes


@pytest.mark.parametrize(
    ("previous", "current", "changes"),
    [
        pytest.param(
            None,
            [measured("error-rate", "Successful"), measured("p99", "Inconclusive")],
            [("error-rate", None, "Successful"), ("p99", None, "Inconclusive")],
            id="first-round-everything-new",
        ),
        pytest.param(
            [measured("error-rate", "Successful")],
            [measured("error-rate", "Successful")],
            [],
            id="unchanged",
        ),
        pytest.param(
            [measured("error-rate", "Successful"), measured("p99", "Successful")],
            [measured("error-rate", "Failed"), measured("p99", "Successful")],
            [("error-rate", "Successful", "Failed")],
            id="one-changed",
        ),
        pytest.param(
            [measured("error-rate", "Failed")],
            [measured("error-rate", "Successful"), measured("p99", "Failed")],
            [("error-rate", "Failed", "Successful"), ("p99", None, "Failed")],
            id="recovered-and-metric-added",
        ),
        pytest.param(
            [measured("error-rate", "Inconclusive"), measured("gone", "Failed")],
            [measured("error-rate", "Inconclusive")],
            [],
            id="removed-metric-is-no-change",
        ),
    ],
)
def test_changed_verdicts(
    previous: list[Measurement] | None,
    current: list[Measurement],
    changes: list[tuple[str, str | None, str]],
) -> None:
    got = changed_verdicts(previous, current)
    assert [(c.metric, c.previous, c.current.result) for c in got] == changes


@pytest.mark.parametrize(
    ("previous", "message"),
    [
        pytest.param(None, "error-rate unmeasured -> Failed: 0.31 > max 0.05", id="first"),
        pytest.param("Successful", "error-rate Successful -> Failed: 0.31 > max 0.05", id="flip"),
    ],
)
def test_verdict_change_message(previous: str | None, message: str) -> None:
    prev = [Measurement(metric="error-rate", result=previous)] if previous else None
    outcome = evaluate_round(
        analysis(metrics=[{"name": "error-rate", "query": "e", "max": 0.05}]),
        AnalysisStatus(last=prev),
        {"error-rate": BAD_ERR},
        AT,
    )
    assert [c.message for c in outcome.changes] == [message]


# ---------------------------------------------------------------------------------------------
# schedule


T0 = "2024-01-15T12:00:00Z"  # == AT


@pytest.mark.parametrize(
    ("interval", "last", "now_s", "due_s", "wait"),
    [
        pytest.param("30s", None, 0, None, 0.0, id="never-measured"),
        pytest.param("30s", T0, 10, 30, 20.0, id="waiting"),
        pytest.param("30s", T0, 30, 30, 0.0, id="exactly-due"),
        pytest.param("30s", T0, 300, 30, 0.0, id="overdue"),
        pytest.param("1m30s", T0, 0, 90, 90.0, id="compound-interval"),
        pytest.param("30s", "2024-01-15T13:00:00+01:00", 0, 30, 30.0, id="offset-timestamp"),
        pytest.param("30s", "yesterday", 0, None, 0.0, id="unreadable-timestamp-is-due"),
    ],
)
def test_next_measurement(
    interval: str, last: str | None, now_s: int, due_s: int | None, wait: float
) -> None:
    """`now_s` and `due_s` are seconds after AT (None: due now)."""
    spec = analysis(interval=interval)
    status = AnalysisStatus(last_measured_at=last)
    now = AT + timedelta(seconds=now_s)
    expected = None if due_s is None else AT + timedelta(seconds=due_s)
    assert next_measurement_at(spec, status) == expected
    assert seconds_until_due(spec, status, now) == wait
    assert measurement_due(spec, status, now) == (wait == 0.0)


def test_no_status_is_due_now() -> None:
    assert next_measurement_at(analysis(), None) is None
    assert measurement_due(analysis(), None, AT)


def test_a_round_schedules_the_next_one() -> None:
    spec = analysis(interval="30s")
    outcome = evaluate_round(spec, None, {"error-rate": OK_ERR, "p99-latency": OK_P99}, AT)
    assert next_measurement_at(spec, outcome.status) == AT + timedelta(seconds=30)
    assert not measurement_due(spec, outcome.status, AT + timedelta(seconds=29))
    assert measurement_due(spec, outcome.status, AT + timedelta(seconds=30))


# ---------------------------------------------------------------------------------------------
# formatting


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(0.0, "0", id="zero"),
        pytest.param(0.05, "0.05", id="small"),
        pytest.param(0.123456, "0.1235", id="four-significant-digits"),
        pytest.param(2.0, "2", id="whole"),
        pytest.param(10.0, "10", id="ten"),
        pytest.param(1.5e-5, "1.5e-05", id="tiny"),
        pytest.param(12345.6, "12346", id="large-as-integer"),
        pytest.param(-0.31, "-0.31", id="negative"),
        pytest.param(1e20, "1e+20", id="huge"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


@pytest.mark.parametrize(
    ("at", "text"),
    [
        pytest.param(AT, "2024-01-15T12:00:00Z", id="utc"),
        pytest.param(AT.replace(tzinfo=None), "2024-01-15T12:00:00Z", id="naive-is-utc"),
        pytest.param(
            datetime(2024, 1, 15, 7, 0, 0, 999_000, tzinfo=timezone(timedelta(hours=-5))),
            "2024-01-15T12:00:00Z",
            id="offset-and-fraction",
        ),
    ],
)
def test_timestamps(at: datetime, text: str) -> None:
    assert format_timestamp(at) == text
    assert parse_timestamp(text) == AT
