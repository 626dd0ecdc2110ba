"""SLO analysis verdicts: from measured values to measurements, counters and a decision.

Pure. The reconciler asks Prometheus (`dbmigrate.prom.client`, `query:` metrics) or the
database (`dbmigrate.db.measurements`, `sql:` metrics) for each metric's current value and,
once, for each ratio metric's baseline; this module turns those `QueryResult`s into:

- one `Measurement` per metric (value, threshold text, Successful | Failed | Inconclusive and
  why), which goes into `status.analysis.last` so a person can see why a gate fired;
- the next `AnalysisStatus` (baselines, consecutive failed / inconclusive rounds);
- a `Decision`: `Continue`, `Pause(reason)` or `Rollback(reason)`;
- the verdicts that changed since the previous round (one event each).

Rules, decided here once:

- A metric is Failed when any of its thresholds is breached, else Inconclusive when any
  threshold cannot be judged (no value, NaN, error, no usable baseline), else Successful.
  "No data" is never a failure and never a success.
- A round with any Failed metric is a failed round; one with no Failed but some Inconclusive
  metric is an inconclusive round; an all-Successful round resets both counters.
- A failed round resets the inconclusive counter (it was conclusive). An inconclusive round
  leaves the failure counter alone: a Prometheus outage between two bad measurements must not
  hide the breach, and it is no evidence of health either.
- Rollback when a failed round brings `consecutiveFailures` to `failureLimit`; when an
  inconclusive round brings `consecutiveInconclusive` to `inconclusiveLimit`, `onInconclusive`
  says Pause, Rollback or (Ignore) Continue. Pause is a level, not an edge: it is returned for
  every inconclusive round past the limit, and the first conclusive round lifts it.
- `maxRatioToBaseline` compares against the metric's baseline (the query averaged over
  `baselineWindow` ending when the migration started; for an `sql:` metric, its value
  measured before the first step). The baseline is measured once and kept
  in `status.analysis.baseline`; a missing, zero, negative or non-finite baseline makes that
  threshold Inconclusive rather than guessing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dbmigrate.api.durations import parse_duration
from dbmigrate.api.models import Analysis, AnalysisStatus, Measurement, Metric, Verdict

SUCCESSFUL: Verdict = "Successful"
FAILED: Verdict = "Failed"
INCONCLUSIVE: Verdict = "Inconclusive"


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class QueryResult:
    """The outcome of one Prometheus query: a finite value, or why there is none.

    Exactly one of `value` and `error` is set when built with `of` / `failed`; the client
    turns every problem (empty result, several series, NaN, HTTP error, timeout) into `error`.
    """

    value: float | None = None
    error: str | None = None

    @classmethod
    def of(cls, value: float) -> QueryResult:
        """A measured value; NaN and infinities become an error with a message saying so."""
        if math.isnan(value):
            return cls(error="query returned NaN (for a ratio: 0/0, no traffic in the rate window)")
        if math.isinf(value):
            sign = "+" if value > 0 else "-"
            return cls(error=f"query returned {sign}Inf (a division by zero?)")
        return cls(value=float(value))

    @classmethod
    def failed(cls, error: str) -> QueryResult:
        return cls(error=error)

    @property
    def usable(self) -> bool:
        """A finite value is present (whatever built the result)."""
        return self.value is not None and math.isfinite(self.value)

    def reason(self) -> str:
        """Why the value cannot be used (only meaningful when not `usable`)."""
        if self.error:
            return self.error
        if self.value is None:
            return "no value"
        return QueryResult.of(self.value).error or "no value"


# ---------------------------------------------------------------------------------------------
# outputs


@dataclass(frozen=True)
class Continue:
    """Keep going (analysis healthy, or not yet conclusive enough to act)."""


@dataclass(frozen=True)
class Pause:
    """Hold the migration before its next step; `reason` says why."""

    reason: str


@dataclass(frozen=True)
class Rollback:
    """The SLO gate fired; `reason` is the rollback reason for status and events."""

    reason: str


Decision = Continue | Pause | Rollback


@dataclass(frozen=True)
class VerdictChange:
    """A metric whose verdict differs from the previous round (`previous` None: first one)."""

    metric: str
    previous: Verdict | None
    current: Measurement

    @property
    def message(self) -> str:
        before = self.previous or "unmeasured"
        detail = f": {self.current.message}" if self.current.message else ""
        return f"{self.metric} {before} -> {self.current.result}{detail}"


@dataclass(frozen=True)
class AnalysisRound:
    """Everything one round of measurements produced."""

    measurements: tuple[Measurement, ...]
    status: AnalysisStatus
    decision: Decision
    changes: tuple[VerdictChange, ...]

    @property
    def result(self) -> Verdict:
        return _round_verdict(self.measurements)


# ---------------------------------------------------------------------------------------------
# formatting


def format_number(value: float) -> str:
    """Short and stable: `0.05`, `0.1235`, `10`, `12345`, `1.5e-05`."""
    if value == 0:
        return "0"
    if 1e4 <= abs(value) < 1e15:
        return str(round(value))
    return f"{value:.4g}"


def format_timestamp(at: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as Kubernetes writes times."""
    return _utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    """The inverse of `format_timestamp` (accepts any ISO 8601 form); naive means UTC."""
    return _utc(datetime.fromisoformat(text))


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# one metric


@dataclass(frozen=True)
class _Check:
    """One threshold of one metric, judged."""

    threshold: str
    result: Verdict
    message: str


def _compare(value: float | None, limit: float, *, upper: bool, text: str, why: str) -> _Check:
    if value is None:
        return _Check(text, INCONCLUSIVE, why)
    shown = format_number(value)
    if upper:
        if value > limit:
            return _Check(text, FAILED, f"{shown} > {text}")
        return _Check(text, SUCCESSFUL, f"{shown} <= {text}")
    if value < limit:
        return _Check(text, FAILED, f"{shown} < {text}")
    return _Check(text, SUCCESSFUL, f"{shown} >= {text}")


def _check_ratio(
    value: float | None, ratio: float, baseline: QueryResult | None, why: str
) -> _Check:
    label = f"max {format_number(ratio)}x baseline"
    if baseline is None:
        return _Check(label, INCONCLUSIVE, "no baseline measured yet")
    if baseline.value is None or not baseline.usable:
        return _Check(label, INCONCLUSIVE, f"no usable baseline: {baseline.reason()}")
    limit = ratio * baseline.value
    text = f"{label} {format_number(baseline.value)} = {format_number(limit)}"
    if baseline.value <= 0:
        return _Check(
            text,
            INCONCLUSIVE,
            f"baseline is {format_number(baseline.value)}: a ratio to it means nothing "
            "(give this metric an absolute max instead)",
        )
    return _compare(value, limit, upper=True, text=text, why=why)


def _checks(metric: Metric, result: QueryResult, baseline: QueryResult | None) -> list[_Check]:
    value = result.value if result.usable else None
    why = result.reason()
    checks: list[_Check] = []
    if metric.max is not None:
        text = f"max {format_number(metric.max)}"
        checks.append(_compare(value, metric.max, upper=True, text=text, why=why))
    if metric.min is not None:
        text = f"min {format_number(metric.min)}"
        checks.append(_compare(value, metric.min, upper=False, text=text, why=why))
    if metric.max_ratio_to_baseline is not None:
        checks.append(_check_ratio(value, metric.max_ratio_to_baseline, baseline, why))
    return checks


def evaluate_metric(
    metric: Metric, result: QueryResult, baseline: QueryResult | None, at: datetime
) -> Measurement:
    """Judge one metric's value against all its thresholds.

    `baseline` is only read for `maxRatioToBaseline` (None: not measured yet).
    """
    checks = _checks(metric, result, baseline)
    if not checks:
        verdict: Verdict = INCONCLUSIVE
        message = "the metric has no threshold (set max, min or maxRatioToBaseline)"
    else:
        verdict = _worst(c.result for c in checks)
        # Only the thresholds that decided the verdict explain it; duplicates (the same query
        # error seen by every threshold) are said once.
        message = "; ".join(dict.fromkeys(c.message for c in checks if c.result == verdict))
    return Measurement(
        metric=metric.name,
        query=metric.query,
        sql=metric.sql,
        value=result.value if result.usable else None,
        threshold=", ".join(c.threshold for c in checks) or None,
        result=verdict,
        message=message,
        at=format_timestamp(at),
    )


def _worst(verdicts: Iterable[Verdict]) -> Verdict:
    seen = set(verdicts)
    if FAILED in seen:
        return FAILED
    if INCONCLUSIVE in seen:
        return INCONCLUSIVE
    return SUCCESSFUL


def _round_verdict(measurements: Sequence[Measurement]) -> Verdict:
    if not measurements:
        return INCONCLUSIVE
    return _worst(m.result for m in measurements)


# ---------------------------------------------------------------------------------------------
# one round


def evaluate_round(
    analysis: Analysis,
    previous: AnalysisStatus | None,
    results: Mapping[str, QueryResult],
    at: datetime,
    baselines: Mapping[str, QueryResult] | None = None,
) -> AnalysisRound:
    """Judge one round of measurements and say what to do.

    `results` maps metric names to this round's query results (a metric missing from it is
    Inconclusive). `baselines` carries baselines measured for this round (see
    `metrics_needing_baseline`); usable ones are recorded in the new status, and baselines
    already in `previous.baseline` are used as they are.
    """
    prev = previous or AnalysisStatus()
    fresh = dict(baselines or {})
    names = {m.name for m in analysis.metrics}
    recorded = {k: v for k, v in (prev.baseline or {}).items() if k in names}
    recorded.update(
        {
            k: float(r.value)
            for k, r in fresh.items()
            if k in names and r.usable and r.value is not None
        }
    )

    def baseline_of(metric: Metric) -> QueryResult | None:
        if metric.name in recorded:
            return QueryResult(value=recorded[metric.name])
        return fresh.get(metric.name)  # a failed measurement says why there is none

    measurements = tuple(
        evaluate_metric(
            m,
            results.get(m.name, QueryResult.failed("not measured this round")),
            baseline_of(m),
            at,
        )
        for m in analysis.metrics
    )
    verdict = _round_verdict(measurements)
    if verdict == FAILED:
        failures, inconclusive = prev.consecutive_failures + 1, 0
    elif verdict == INCONCLUSIVE:
        failures, inconclusive = prev.consecutive_failures, prev.consecutive_inconclusive + 1
    else:
        failures, inconclusive = 0, 0
    status = AnalysisStatus(
        baseline=recorded or None,
        consecutive_failures=failures,
        consecutive_inconclusive=inconclusive,
        last=list(measurements),
        last_measured_at=format_timestamp(at),
    )
    return AnalysisRound(
        measurements=measurements,
        status=status,
        decision=_decide(analysis, verdict, status, measurements),
        changes=changed_verdicts(prev.last, measurements),
    )


def _decide(
    analysis: Analysis,
    verdict: Verdict,
    status: AnalysisStatus,
    measurements: Sequence[Measurement],
) -> Decision:
    if verdict == FAILED and status.consecutive_failures >= analysis.failure_limit:
        return Rollback(_failure_reason(measurements, status.consecutive_failures))
    if verdict == INCONCLUSIVE and status.consecutive_inconclusive >= analysis.inconclusive_limit:
        reason = _inconclusive_reason(measurements, status.consecutive_inconclusive)
        if analysis.on_inconclusive == "Pause":
            return Pause(reason)
        if analysis.on_inconclusive == "Rollback":
            return Rollback(reason)
    return Continue()


def standing_decision(analysis: Analysis, status: AnalysisStatus | None) -> Decision:
    """The decision of the last recorded round, between two measurements: it stands until the
    next round (recorded in status, so it survives a restart of the operator)."""
    if status is None or not status.last:
        return Continue()
    return _decide(analysis, _round_verdict(status.last), status, status.last)


def _failure_reason(measurements: Sequence[Measurement], count: int) -> str:
    what = "; ".join(f"{m.metric} {m.message}" for m in measurements if m.result == FAILED)
    return f"{what} ({count} consecutive)" if count > 1 else what


def _inconclusive_reason(measurements: Sequence[Measurement], count: int) -> str:
    what = "; ".join(f"{m.metric}: {m.message}" for m in measurements if m.result == INCONCLUSIVE)
    times = "once" if count == 1 else f"{count} times in a row"
    return f"analysis inconclusive {times}: {what}"


def changed_verdicts(
    previous: Sequence[Measurement] | None, current: Sequence[Measurement]
) -> tuple[VerdictChange, ...]:
    """The metrics whose verdict differs from the previous round's (new metrics included)."""
    before = {m.metric: m.result for m in previous or ()}
    return tuple(
        VerdictChange(metric=m.metric, previous=before.get(m.metric), current=m)
        for m in current
        if before.get(m.metric) != m.result
    )


# ---------------------------------------------------------------------------------------------
# schedule and baselines


def next_measurement_at(analysis: Analysis, status: AnalysisStatus | None) -> datetime | None:
    """When the next round is due: `interval` after the last one (None: due now)."""
    if status is None or not status.last_measured_at:
        return None
    try:
        last = parse_timestamp(status.last_measured_at)
    except ValueError:
        return None  # an unreadable timestamp must not stop the analysis
    return last + timedelta(seconds=parse_duration(analysis.interval))


# While these phases last the SLOs are measured (from the first step until `settle` after the
# last); a rollback, a stop or the post-deployment watch needs no more measurements.
MEASURED_PHASES: frozenset[str] = frozenset({"Progressing", "Waiting", "Suspended"})


def seconds_until_due(analysis: Analysis, status: AnalysisStatus | None, now: datetime) -> float:
    """Seconds to wait before the next round; 0 when it is due."""
    due = next_measurement_at(analysis, status)
    if due is None:
        return 0.0
    return max(0.0, (due - _utc(now)).total_seconds())


def measurement_due(analysis: Analysis, status: AnalysisStatus | None, now: datetime) -> bool:
    return seconds_until_due(analysis, status, now) == 0.0


def metrics_needing_baseline(
    analysis: Analysis, status: AnalysisStatus | None
) -> tuple[Metric, ...]:
    """Ratio metrics without a recorded baseline: query these with the baseline window."""
    recorded = (status.baseline if status else None) or {}
    return tuple(
        m
        for m in analysis.metrics
        if m.max_ratio_to_baseline is not None and m.name not in recorded
    )


def baseline_window(analysis: Analysis, started_at: datetime) -> tuple[datetime, datetime]:
    """The baseline window: `baselineWindow` long, ending when the migration started."""
    end = _utc(started_at)
    return end - timedelta(seconds=parse_duration(analysis.baseline_window)), end
