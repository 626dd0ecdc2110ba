"""Backfill batch sizing and its arithmetic (`dbmigrate.core.batching`).

Aspects covered:
- the adaptive sizer: steering towards the target duration, bounded growth and shrink per
  batch, smoothing, halving after a statement timeout, the [1, max] bounds, convergence;
- statement timeout per batch, retry back-off with jitter, the throttling verdict;
- `--worker I/N` parsing (including JOB_COMPLETION_INDEX);
- key-space slices: the even integer split (the fallback when sampling finds nothing), slices
  that are disjoint and cover every key exactly once (the sampled quantiles are tested against
  PostgreSQL in tests/integration/test_backfill_slices.py);
- `parallelism: auto`: a worker per million rows to do, the server's cap, 1 with a pause;
- which SQLSTATEs mean the database is unavailable for now (reconnect and resume);
- progress numbers and text: percent, rows/s, ETA, the progress line, the summary line,
  the default checkpoint name.
"""

from __future__ import annotations

import itertools
import math

import pytest

from dbmigrate.core.batching import (
    BatchSizer,
    auto_workers,
    backoff_delay,
    batch_statement_timeout,
    default_checkpoint_name,
    eta_seconds,
    extrapolate_remaining,
    format_eta,
    is_transient_sqlstate,
    parse_worker,
    percent_done,
    progress_text,
    rows_in_key_range,
    rows_per_second,
    split_integer_range,
    summary_text,
    throttle_reason,
    worker_slice,
)

# ---------------------------------------------------------------------------------------------
# the sizer


@pytest.mark.parametrize(
    ("size", "max_size", "target", "keys", "seconds", "expected"),
    [
        pytest.param(1000, 100_000, 0.5, 1000, 0.5, 1000, id="on-target-stays"),
        pytest.param(1000, 100_000, 0.5, 1000, 0.005, 2000, id="much-faster-grows-at-most-2x"),
        pytest.param(1000, 100_000, 0.5, 1000, 0.4, 1250, id="a-bit-faster-grows-to-ideal"),
        pytest.param(1000, 100_000, 0.5, 1000, 10.0, 500, id="much-slower-shrinks-at-most-half"),
        pytest.param(1000, 100_000, 0.5, 1000, 0.625, 800, id="a-bit-slower-shrinks-to-ideal"),
        pytest.param(80_000, 100_000, 0.5, 80_000, 0.1, 100_000, id="growth-capped-at-max"),
        pytest.param(1, 100_000, 0.5, 1, 60.0, 1, id="never-below-one"),
        pytest.param(1000, 100_000, 0.5, 0, 0.3, 1000, id="no-keys-learns-nothing"),
        pytest.param(1000, 100_000, 0.5, 1000, 0.0, 1000, id="zero-time-learns-nothing"),
    ],
)
def test_sizer_first_batch(
    size: int, max_size: int, target: float, keys: int, seconds: float, expected: int
) -> None:
    sizer = BatchSizer.start(size, max_size, target).after_batch(keys, seconds)
    assert sizer.size == expected


@pytest.mark.parametrize(
    ("size", "max_size", "expected"),
    [
        pytest.param(1000, 100_000, 1000, id="within-bounds"),
        pytest.param(500_000, 100_000, 100_000, id="start-above-max-clamped"),
        pytest.param(0, 10, 1, id="start-below-one-clamped"),
    ],
)
def test_sizer_start_clamps(size: int, max_size: int, expected: int) -> None:
    assert BatchSizer.start(size, max_size, 0.5).size == expected


@pytest.mark.parametrize(
    ("max_size", "target"),
    [
        pytest.param(0, 0.5, id="max-zero"),
        pytest.param(10, 0.0, id="target-zero"),
        pytest.param(10, -1.0, id="target-negative"),
    ],
)
def test_sizer_rejects_bad_settings(max_size: int, target: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        BatchSizer.start(1, max_size, target)


def test_sizer_smooths_rate_with_ewma() -> None:
    # First sample sets the rate; the second is blended 0.4 new / 0.6 old.
    sizer = BatchSizer.start(1000, 1_000_000, 1.0).after_batch(1000, 1.0)
    assert sizer.rate == pytest.approx(1000.0)
    sizer = sizer.after_batch(1000, 0.5)  # sample 2000 rows/s
    assert sizer.rate == pytest.approx(0.4 * 2000 + 0.6 * 1000)
    assert sizer.size == 1400


@pytest.mark.parametrize(
    ("rate", "expected_steady"),
    [
        pytest.param(200_000.0, 100_000, id="fast-database-reaches-max"),
        pytest.param(50_000.0, 25_000, id="steady-at-rate-times-target"),
        pytest.param(500.0, 250, id="slow-database-shrinks-below-start"),
    ],
)
def test_sizer_converges_to_rate_times_target(rate: float, expected_steady: int) -> None:
    sizer = BatchSizer.start(1000, 100_000, 0.5)
    for _ in range(40):
        sizer = sizer.after_batch(sizer.size, sizer.size / rate)
    assert sizer.size == pytest.approx(expected_steady, rel=0.01)


def test_sizer_growth_is_bounded_every_step() -> None:
    sizer = BatchSizer.start(1000, 100_000, 0.5)
    sizes = [sizer.size]
    for _ in range(10):
        sizer = sizer.after_batch(sizer.size, sizer.size / 10_000_000)  # absurdly fast
        sizes.append(sizer.size)
    assert sizes[:8] == [1000, 2000, 4000, 8000, 16000, 32000, 64000, 100_000]
    assert all(b <= 2 * a for a, b in itertools.pairwise(sizes))


@pytest.mark.parametrize(
    ("size", "rate", "expected_size", "expected_rate"),
    [
        pytest.param(10_000, 40_000.0, 5000, 20_000.0, id="halves-size-and-rate"),
        pytest.param(1, None, 1, None, id="stays-at-one"),
        pytest.param(3, None, 1, None, id="floors"),
    ],
)
def test_sizer_after_timeout(
    size: int, rate: float | None, expected_size: int, expected_rate: float | None
) -> None:
    sizer = BatchSizer(size=size, max_size=100_000, target_seconds=0.5, rate=rate)
    after = sizer.after_timeout()
    assert after.size == expected_size
    assert after.rate == expected_rate


def test_sizer_after_timeout_then_recovers_gradually() -> None:
    sizer = BatchSizer(size=100_000, max_size=100_000, target_seconds=0.5, rate=200_000.0)
    sizer = sizer.after_timeout()
    assert sizer.size == 50_000
    sizer = sizer.after_batch(sizer.size, 0.25)  # 200k rows/s again
    assert 50_000 < sizer.size <= 100_000


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        pytest.param([1000], 500, id="halves"),
        pytest.param([1000, 500], 250, id="halves-again"),
        pytest.param([1], 1, id="floors-at-one"),
    ],
)
def test_sizer_after_blocking_halves(sizes: list[int], expected: int) -> None:
    sizer = BatchSizer(size=sizes[0], max_size=100_000, target_seconds=0.5)
    for _ in sizes:
        sizer = sizer.after_blocking()
    assert sizer.size == expected
    assert sizer.blocked_ceiling == expected


def test_sizer_after_blocking_never_grows_past_the_ceiling() -> None:
    """A batch holds its rows' locks until it commits: after a blocking episode the sizer does
    not grow back to the size that blocked, however fast batches are."""
    sizer = BatchSizer(size=1000, max_size=100_000, target_seconds=0.5).after_blocking()
    for _ in range(10):
        sizer = sizer.after_batch(sizer.size, 0.001)  # very fast: would grow 2x a batch
    assert sizer.size == 500
    assert sizer.after_timeout().size == 250
    assert sizer.after_timeout().after_batch(250, 0.001).size == 500


# ---------------------------------------------------------------------------------------------
# timeouts, retries, throttling


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(0.5, 5.0, id="default-target-hits-the-floor"),
        pytest.param(2.0, 20.0, id="ten-times-target"),
        pytest.param(0.01, 5.0, id="tiny-target-floor"),
    ],
)
def test_batch_statement_timeout(target: float, expected: float) -> None:
    assert batch_statement_timeout(target) == expected


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [
        pytest.param(0, 0.0, 0.1, id="first-min-jitter"),
        pytest.param(0, 1.0, 0.2, id="first-max-jitter"),
        pytest.param(3, 1.0, 1.6, id="doubles"),
        pytest.param(3, 0.5, 1.2, id="jitter-in-between"),
        pytest.param(20, 1.0, 30.0, id="capped"),
        pytest.param(500, 0.0, 15.0, id="huge-attempt-capped-no-overflow"),
        pytest.param(1, 7.0, 0.4, id="jitter-clamped"),
    ],
)
def test_backoff_delay(attempt: int, jitter: float, expected: float) -> None:
    assert backoff_delay(attempt, jitter) == pytest.approx(expected)


def test_backoff_rejects_negative_attempt() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1, 0.5)


@pytest.mark.parametrize(
    ("lag", "active", "expected"),
    [
        pytest.param(None, 3, None, id="no-replicas-quiet"),
        pytest.param(0.2, 3, None, id="small-lag"),
        pytest.param(1.5, 25, None, id="at-limits-is-fine"),
        pytest.param(2.25, 3, "replication lag 2.2s > 1.5s", id="lag"),
        pytest.param(None, 30, "30 active sessions > 25", id="sessions"),
        pytest.param(4.0, 26, "replication lag 4.0s > 1.5s; 26 active sessions > 25", id="both"),
    ],
)
def test_throttle_reason(lag: float | None, active: int, expected: str | None) -> None:
    assert throttle_reason(lag, active, max_replication_lag=1.5, max_active_sessions=25) == expected


# ---------------------------------------------------------------------------------------------
# workers and slices


@pytest.mark.parametrize(
    ("text", "job_index", "expected"),
    [
        pytest.param("0/1", None, (0, 1), id="single"),
        pytest.param("3/4", None, (3, 4), id="last-of-four"),
        pytest.param("auto/4", "2", (2, 4), id="auto-from-job-index"),
        pytest.param("/4", "1", (1, 4), id="empty-index-from-job-index"),
        pytest.param("$(JOB_COMPLETION_INDEX)/3", "0", (0, 3), id="unexpanded-variable"),
    ],
)
def test_parse_worker(text: str, job_index: str | None, expected: tuple[int, int]) -> None:
    assert parse_worker(text, job_index) == expected


@pytest.mark.parametrize(
    ("text", "job_index", "message"),
    [
        pytest.param("1", None, "I/N", id="no-slash"),
        pytest.param("a/2", None, "I/N", id="not-a-number"),
        pytest.param("2/2", None, r"\[0, N\)", id="index-too-big"),
        pytest.param("-1/2", None, r"\[0, N\)", id="negative"),
        pytest.param("0/0", None, r"\[0, N\)", id="zero-workers"),
        pytest.param("auto/2", None, "JOB_COMPLETION_INDEX", id="auto-without-env"),
    ],
)
def test_parse_worker_rejects(text: str, job_index: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_worker(text, job_index)


@pytest.mark.parametrize(
    ("first", "last", "parts", "expected"),
    [
        pytest.param(1, 100, 1, [], id="one-part"),
        pytest.param(1, 100, 2, [50], id="halves"),
        pytest.param(1, 100, 4, [25, 50, 75], id="quarters"),
        pytest.param(1, 10, 3, [3, 6], id="uneven"),
        pytest.param(-10, 9, 2, [-1], id="negative-keys"),
        pytest.param(5, 5, 3, [4, 4], id="one-key-goes-to-last-slice"),
        pytest.param(7, 3, 2, [3], id="empty-range"),
    ],
)
def test_split_integer_range(first: int, last: int, parts: int, expected: list[int]) -> None:
    assert split_integer_range(first, last, parts) == expected


def _keys_in(slice_: tuple[int | None, int], keys: range) -> set[int]:
    lower, upper = slice_
    return {k for k in keys if (lower is None or k > lower) and k <= upper}


@pytest.mark.parametrize(
    ("first", "last", "parts"),
    [
        pytest.param(1, 1000, 1, id="1-worker"),
        pytest.param(1, 1000, 3, id="3-workers"),
        pytest.param(1, 7, 16, id="more-workers-than-keys"),
        pytest.param(-50, 50, 4, id="negative"),
    ],
)
def test_integer_slices_cover_every_key_once(first: int, last: int, parts: int) -> None:
    keys = range(first, last + 1)
    boundaries = split_integer_range(first, last, parts)
    slices = [worker_slice(boundaries, last, w) for w in range(parts)]
    seen: list[int] = []
    for s in slices:
        seen.extend(_keys_in(s, keys))
    assert sorted(seen) == list(keys)


@pytest.mark.parametrize(
    ("boundaries", "worker", "expected"),
    [
        pytest.param([10, 20], 0, (None, 10), id="first-open-below"),
        pytest.param([10, 20], 1, (10, 20), id="middle"),
        pytest.param([10, 20], 2, (20, 99), id="last-to-upper"),
        pytest.param([], 0, (None, 99), id="single-worker"),
        pytest.param([], 2, (99, 99), id="beyond-boundaries-empty"),
    ],
)
def test_worker_slice(boundaries: list[int], worker: int, expected: tuple[int | None, int]) -> None:
    assert worker_slice(boundaries, 99, worker) == expected


# ---------------------------------------------------------------------------------------------
# progress


@pytest.mark.parametrize(
    ("done", "estimated", "finished", "expected"),
    [
        pytest.param(0, 100, False, 0, id="start"),
        pytest.param(24, 100, False, 24, id="quarter"),
        pytest.param(999, 1000, False, 99, id="rounds-down"),
        pytest.param(150, 100, False, 99, id="estimate-too-low-not-100-until-done"),
        pytest.param(100, 100, True, 100, id="finished"),
        pytest.param(3, None, True, 100, id="finished-without-estimate"),
        pytest.param(3, None, False, None, id="unknown"),
        pytest.param(3, 0, False, None, id="zero-estimate-unknown"),
    ],
)
def test_percent_done(
    done: int, estimated: int | None, finished: bool, expected: int | None
) -> None:
    assert percent_done(done, estimated, finished=finished) == expected


@pytest.mark.parametrize(
    ("rows", "seconds", "expected"),
    [
        pytest.param(1000, 2.0, 500.0, id="rate"),
        pytest.param(1000, 0.0, None, id="no-time"),
        pytest.param(0, 5.0, 0.0, id="nothing-yet"),
    ],
)
def test_rows_per_second(rows: int, seconds: float, expected: float | None) -> None:
    assert rows_per_second(rows, seconds) == expected


@pytest.mark.parametrize(
    ("done", "estimated", "rate", "expected"),
    [
        pytest.param(1_200_000, 5_000_000, 210_000.0, "18s", id="api-example"),
        pytest.param(0, 1_000_000, 2000.0, "8m20s", id="minutes"),
        pytest.param(0, 100, 1000.0, "100ms", id="subsecond"),
        pytest.param(200, 100, 10.0, "0ms", id="past-estimate"),
        pytest.param(0, None, 10.0, None, id="no-estimate"),
        pytest.param(0, 100, None, None, id="no-rate"),
        pytest.param(0, 100, 0.0, None, id="zero-rate"),
    ],
)
def test_eta(done: int, estimated: int | None, rate: float | None, expected: str | None) -> None:
    assert format_eta(eta_seconds(done, estimated, rate)) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"rows_done": 250, "rows_estimated": 1000, "rate": 100.0, "batch_size": 50},
            "250/1,000 rows (25%), 100 rows/s, batch 50, eta 8s",
            id="running",
        ),
        pytest.param(
            {"rows_done": 5, "rows_estimated": None, "rate": None, "batch_size": 1000},
            "5 rows, - rows/s, batch 1,000",
            id="nothing-known",
        ),
        pytest.param(
            {
                "rows_done": 10,
                "rows_estimated": 20,
                "rate": 1.0,
                "batch_size": 2,
                "throttled": "12 active sessions > 10",
            },
            "10/20 rows (50%), 1 rows/s, batch 2, eta 10s, throttled: 12 active sessions > 10",
            id="throttled",
        ),
        pytest.param(
            {
                "rows_done": 20,
                "rows_estimated": 20,
                "rate": 1.0,
                "batch_size": 2,
                "finished": True,
            },
            "20/20 rows (100%), 1 rows/s, batch 2",
            id="finished",
        ),
    ],
)
def test_progress_text(kwargs: dict[str, object], expected: str) -> None:
    assert progress_text(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rows", "seconds", "batches", "resumed", "expected"),
    [
        pytest.param(
            1_000_000,
            4.0,
            16,
            0,
            "done: 1,000,000 rows in 4s (250,000 rows/s, 16 batches)",
            id="plain",
        ),
        pytest.param(
            300,
            0.5,
            3,
            700,
            "done: 300 rows in 500ms (600 rows/s, 3 batches); resumed after 700 rows done earlier",
            id="resumed",
        ),
        pytest.param(0, 0.0, 0, 0, "done: 0 rows in 0ms (0 rows/s, 0 batches)", id="nothing"),
    ],
)
def test_summary_text(rows: int, seconds: float, batches: int, resumed: int, expected: str) -> None:
    assert summary_text(rows, seconds, batches, resumed_from=resumed) == expected


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param(("users", "x = 1", None), ("users", "x = 1", None), True, id="stable"),
        pytest.param(("users", "x = 1", None), ("users", "x = 2", None), False, id="set-differs"),
        pytest.param(("users", "x = 1", None), ("users", "x = 1", "y"), False, id="where-differs"),
        pytest.param(("users", "x = 1", None), ("orders", "x = 1", None), False, id="table"),
    ],
)
def test_default_checkpoint_name(
    a: tuple[str, str, str | None], b: tuple[str, str, str | None], same: bool
) -> None:
    name = default_checkpoint_name(*a)
    assert name.startswith(f"{a[0]}:")
    assert (name == default_checkpoint_name(*b)) is same


def test_backoff_schedule_is_monotonic_without_jitter() -> None:
    delays = [backoff_delay(i, 1.0) for i in range(12)]
    assert delays == sorted(delays)
    assert math.isclose(delays[-1], 30.0)


@pytest.mark.parametrize(
    ("rows_done", "lower", "last", "upper", "expected"),
    [
        pytest.param(500, 0, 1000, 4000, 1500.0, id="quarter-done-uniform"),
        pytest.param(100, 0, 1000, 4000, 300.0, id="sparse-where"),
        pytest.param(0, 0, 1000, 4000, 0.0, id="nothing-matches-so-far"),
        pytest.param(10, 0, 10, 4000, None, id="too-early-to-say"),
        pytest.param(4000, 0, 4000, 4000, 0.0, id="range-done"),
        pytest.param(5, 100, 100, 100, None, id="empty-range"),
    ],
)
def test_extrapolate_remaining(
    rows_done: int, lower: int, last: int, upper: int, expected: float | None
) -> None:
    assert extrapolate_remaining(rows_done, lower, last, upper) == expected


@pytest.mark.parametrize(
    ("matches", "sampled", "lower", "last", "upper", "expected"),
    [
        pytest.param(1000, 1000, 0, 1000, 200_000, 200_000.0, id="dense-all-match"),
        pytest.param(333, 1000, 0, 1000, 200_000, 66_600.0, id="a-third-matches"),
        pytest.param(1000, 1000, 0, 2000, 200_000, 100_000.0, id="gapped-keys"),
        pytest.param(400, 500, 0, 500, 200_000, 400.0, id="range-read-whole"),
        pytest.param(1000, 1000, 0, 200_000, 200_000, 1000.0, id="last-key-is-the-upper"),
        pytest.param(0, 1000, 0, 1000, 200_000, 0.0, id="none-match-so-far"),
    ],
)
def test_rows_in_key_range(
    matches: int, sampled: int, lower: int, last: int, upper: int, expected: float
) -> None:
    assert rows_in_key_range(matches, sampled, 1000, lower, last, upper) == expected


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [
        pytest.param("08000", True, id="08000-connection-exception"),
        pytest.param("08006", True, id="08006-connection-failure"),
        pytest.param("08P01", True, id="08P01-protocol-violation"),
        pytest.param("57P01", True, id="57P01-admin-shutdown"),
        pytest.param("57P02", True, id="57P02-crash-shutdown"),
        pytest.param("57P03", True, id="57P03-cannot-connect-now"),
        pytest.param("53300", True, id="53300-too-many-connections"),
        pytest.param("57014", False, id="57014-query-canceled"),
        pytest.param("55P03", False, id="55P03-lock-not-available-is-retried-in-place"),
        pytest.param("53100", False, id="53100-disk-full"),
        pytest.param("42601", False, id="42601-syntax-error"),
        pytest.param("22012", False, id="22012-division-by-zero"),
        pytest.param(None, False, id="no-sqlstate"),
    ],
)
def test_transient_sqlstates(sqlstate: str | None, transient: bool) -> None:
    assert is_transient_sqlstate(sqlstate) is transient


@pytest.mark.parametrize(
    ("rows", "server", "pause", "expected"),
    [
        pytest.param(None, 3, 0.0, 1, id="no-statistics"),
        pytest.param(0.0, 3, 0.0, 1, id="nothing-to-do"),
        pytest.param(100_000.0, 3, 0.0, 1, id="small-table"),
        pytest.param(1_000_000.0, 3, 0.0, 1, id="one-million"),
        pytest.param(1_000_001.0, 3, 0.0, 2, id="just-over-one-million"),
        pytest.param(2_500_000.0, 3, 0.0, 3, id="per-million"),
        pytest.param(50_000_000.0, 3, 0.0, 3, id="server-cap"),
        pytest.param(50_000_000.0, 1, 0.0, 1, id="parallel-query-off"),
        pytest.param(50_000_000.0, None, 0.0, 16, id="api-cap"),
        pytest.param(50_000_000.0, 3, 0.1, 1, id="pause-means-gentle"),
    ],
)
def test_auto_workers(rows: float | None, server: int | None, pause: float, expected: int) -> None:
    workers, why = auto_workers(rows, server_parallel_workers=server, pause_seconds=pause)
    assert workers == expected
    assert why.startswith(f"{expected} worker")


def test_auto_workers_says_the_server_capped_it() -> None:
    _, why = auto_workers(9_000_000.0, server_parallel_workers=3, pause_seconds=0.0)
    assert "max_parallel_workers_per_gather + 1 is 3" in why
