"""Backfill batch sizing and the arithmetic around it: pure, no I/O.

Owns the adaptive batch sizer (a smoothed rows/s rate steered towards `targetBatchDuration`,
bounded growth per step, halving after a statement timeout, halving and a ceiling after a
batch blocked the application), the retry back-off schedule, the
throttling verdict, how a key space is cut into one slice per worker, and the numbers and text
of a progress report (percent, rows/s, ETA). `dbmigrate.db.backfill` does the I/O around these.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from dbmigrate.api.durations import format_duration
from dbmigrate.api.worker import MAX_PARALLELISM

K = TypeVar("K")

# pt-osc and GitLab's optimizer both smooth the rate; GitLab uses 0.4 over recent batches.
DEFAULT_SMOOTHING = 0.4
# Growth per batch is bounded so that one fast batch (a cached page run, an empty key range)
# cannot send the next batch far past the target duration.
DEFAULT_MAX_GROWTH = 2.0
# Without a timeout the size falls at most to half per batch: the EWMA already damps noise,
# this only stops a single slow outlier (a checkpoint, an autovacuum pass) from collapsing it.
DEFAULT_MAX_SHRINK = 0.5
# After a statement timeout the batch was clearly too big for the database's current state.
TIMEOUT_SHRINK = 0.5
# After the blocking guard cancelled a batch (application queries waited on its row locks
# too long): half the size, and never above that again in this run, since a batch holds its
# rows' locks until it commits and a smaller batch commits sooner.
BLOCKING_SHRINK = 0.5
# A batch may take this many times the target before its statements are cancelled, but never
# less than MIN_STATEMENT_TIMEOUT (a cold cache or a checkpoint should not fail a batch).
STATEMENT_TIMEOUT_FACTOR = 10.0
MIN_STATEMENT_TIMEOUT = 5.0


@dataclass(frozen=True)
class BatchSizer:
    """The next batch size, learned from how long the previous batches took.

    Immutable: `after_batch` and `after_timeout` return the sizer for the next batch.
    `rate` is the smoothed number of keys per second (None before the first observation).
    """

    size: int
    max_size: int
    target_seconds: float
    rate: float | None = None
    smoothing: float = DEFAULT_SMOOTHING
    max_growth: float = DEFAULT_MAX_GROWTH
    max_shrink: float = DEFAULT_MAX_SHRINK
    # the ceiling a blocking episode set (None: max_size is the only one)
    blocked_ceiling: int | None = None

    @classmethod
    def start(cls, size: int, max_size: int, target_seconds: float) -> BatchSizer:
        """A sizer starting at `size`, clamped to [1, max_size]."""
        if max_size < 1:
            raise ValueError(f"max batch size must be at least 1, got {max_size}")
        if target_seconds <= 0:
            raise ValueError(f"target batch duration must be positive, got {target_seconds}")
        return cls(size=_clamp(size, 1, max_size), max_size=max_size, target_seconds=target_seconds)

    def after_batch(self, keys: int, seconds: float) -> BatchSizer:
        """The sizer after a batch that covered `keys` keys in `seconds`."""
        if keys <= 0 or seconds <= 0:
            return self  # nothing learned
        sample = keys / seconds
        rate = (
            sample
            if self.rate is None
            else self.smoothing * sample + (1 - self.smoothing) * self.rate
        )
        ideal = rate * self.target_seconds
        bounded = min(max(ideal, self.size * self.max_shrink), self.size * self.max_growth)
        return replace(self, size=_clamp(math.floor(bounded), 1, self._ceiling), rate=rate)

    @property
    def _ceiling(self) -> int:
        return self.max_size if self.blocked_ceiling is None else self.blocked_ceiling

    def after_timeout(self) -> BatchSizer:
        """The sizer after a batch was cancelled by its statement timeout: halve the size."""
        return replace(
            self,
            size=_clamp(math.floor(self.size * TIMEOUT_SHRINK), 1, self._ceiling),
            rate=None if self.rate is None else self.rate * TIMEOUT_SHRINK,
        )

    def after_blocking(self) -> BatchSizer:
        """The sizer after the blocking guard cancelled a batch: half the size (at least 1),
        which is also the largest size from now on."""
        size = _clamp(math.floor(self.size * BLOCKING_SHRINK), 1, self._ceiling)
        return replace(self, size=size, blocked_ceiling=size)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def batch_statement_timeout(target_seconds: float) -> float:
    """Seconds after which one statement of a batch is cancelled (and the batch retried)."""
    return max(STATEMENT_TIMEOUT_FACTOR * target_seconds, MIN_STATEMENT_TIMEOUT)


def backoff_delay(attempt: int, jitter: float, *, base: float = 0.2, cap: float = 30.0) -> float:
    """Delay before retry number `attempt` (0-based): exponential, capped, jittered.

    `jitter` is a number in [0, 1) supplied by the caller (random in production), which
    spreads the delay over [50 %, 100 %] of the exponential value so that parallel workers
    blocked by the same lock do not retry in lockstep.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    exponential = min(cap, base * 2.0 ** min(attempt, 30))
    return exponential * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


# Errors that say the database or the way to it is (for now) unavailable, not that the work is
# wrong: class 08 (connection exception), 57P01 admin_shutdown (pg_terminate_backend, a fast
# shutdown), 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up, in recovery) and
# 53300 too_many_connections. A worker reconnects after them and resumes from its checkpoint.
TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


# Another transaction was in the way (lock_timeout, deadlock, serialization failure): retried
# with back-off in the worker, and when the retries run out still an error that heals when
# that transaction ends.
CONTENTION_SQLSTATES = frozenset({"55P03", "40P01", "40001"})


def is_transient_sqlstate(sqlstate: str | None) -> bool:
    """Whether an error with this SQLSTATE can heal by itself (reconnect and try again)."""
    return sqlstate is not None and (sqlstate.startswith("08") or sqlstate in TRANSIENT_SQLSTATES)


def throttle_reason(
    replication_lag: float | None,
    active_sessions: int,
    *,
    max_replication_lag: float,
    max_active_sessions: int,
) -> str | None:
    """Why the next batch must wait, or None when the database is not under strain."""
    reasons = []
    if replication_lag is not None and replication_lag > max_replication_lag:
        reasons.append(f"replication lag {replication_lag:.1f}s > {max_replication_lag:g}s")
    if active_sessions > max_active_sessions:
        reasons.append(f"{active_sessions} active sessions > {max_active_sessions}")
    return "; ".join(reasons) or None


# ---------------------------------------------------------------------------------------------
# key-space slices for parallel workers


def parse_worker(text: str, job_index: str | None = None) -> tuple[int, int]:
    """`I/N` → (I, N) with 0 <= I < N.

    When the index part is empty, `auto` or an unexpanded `$(JOB_COMPLETION_INDEX)`, the
    index comes from `job_index` (the Job controller's `JOB_COMPLETION_INDEX`).
    """
    index_text, sep, count_text = text.partition("/")
    if not sep:
        raise ValueError(f"worker must look like I/N (e.g. 0/4), got {text!r}")
    if index_text in ("", "auto", "$(JOB_COMPLETION_INDEX)"):
        if job_index is None:
            raise ValueError(
                f"worker {text!r} takes its index from JOB_COMPLETION_INDEX, which is not set"
            )
        index_text = job_index
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"worker must look like I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"worker index must be in [0, N) and N >= 1, got {index}/{count}")
    return index, count


# `parallelism: auto`: a worker per this many rows to do. Below it a second worker gains less
# than its pod's start costs (hack/bench/backfill_parallel.py: at 100 000 rows two workers
# finished within a few hundred milliseconds of one).
AUTO_ROWS_PER_WORKER = 1_000_000


def auto_workers(
    rows_to_do: float | None, *, server_parallel_workers: int | None, pause_seconds: float
) -> tuple[int, str]:
    """The worker count `parallelism: auto` stands for, and why, in words.

    A worker per AUTO_ROWS_PER_WORKER rows to do, at most what the server lets one query use
    (`max_parallel_workers_per_gather` + 1 backends: the administrator's budget of cores for
    a single statement, 3 by default), and 1 when the step has a `pause` (its author asked for
    room for the application between batches, which more workers would take back).
    """
    if pause_seconds > 0:
        return 1, "1 worker: the step pauses between batches"
    if rows_to_do is None or rows_to_do <= 0:
        return 1, "1 worker: no rows to do by the table's statistics"
    by_size = math.ceil(rows_to_do / AUTO_ROWS_PER_WORKER)
    cap = MAX_PARALLELISM if server_parallel_workers is None else max(1, server_parallel_workers)
    workers = max(1, min(by_size, cap, MAX_PARALLELISM))
    why = (
        f"{workers} worker{'s' if workers > 1 else ''} for ~{format_count(round(rows_to_do))} rows"
    )
    if by_size > workers and workers == cap:
        why += f" (the server's max_parallel_workers_per_gather + 1 is {cap})"
    return workers, why


def split_integer_range(first: int, last: int, parts: int) -> list[int]:
    """Inner boundaries cutting the keys [first, last] into `parts` equal slices.

    Boundary i is the inclusive end of slice i-1 (and the exclusive start of slice i); there
    are `parts - 1` of them, non-decreasing, each within [first - 1, last].
    """
    if parts < 1:
        raise ValueError("parts must be >= 1")
    if last < first:
        return [last] * (parts - 1)
    span = last - first + 1
    return [first - 1 + span * i // parts for i in range(1, parts)]


def worker_slice(boundaries: Sequence[K], upper: K, worker: int) -> tuple[K | None, K]:
    """Worker `worker`'s slice as (exclusive lower bound or None, inclusive upper bound).

    Slices are (None, b1], (b1, b2], ..., (b_last, upper]: disjoint, and together they cover
    every key up to `upper`, whatever the boundaries are as long as they are non-decreasing.
    With fewer boundaries than workers - 1 (an empty sample), later slices are empty.
    """
    if worker < 0:
        raise ValueError("worker must be >= 0")
    if worker > len(boundaries):
        return upper, upper  # empty
    lower = None if worker == 0 else boundaries[worker - 1]
    end = boundaries[worker] if worker < len(boundaries) else upper
    return lower, end


# ---------------------------------------------------------------------------------------------
# progress arithmetic


def percent_done(rows_done: int, rows_estimated: int | None, *, finished: bool) -> int | None:
    """Whole percent done; 100 only once finished (estimates are estimates), else at most 99."""
    if finished:
        return 100
    if not rows_estimated or rows_estimated <= 0:
        return None
    return max(0, min(99, math.floor(100 * rows_done / rows_estimated)))


def rows_per_second(rows: int, seconds: float) -> float | None:
    """Rate over an interval, None when the interval is too short to say."""
    if seconds <= 0:
        return None
    return rows / seconds


def eta_seconds(rows_done: int, rows_estimated: int | None, rate: float | None) -> float | None:
    """Seconds left at `rate`, None when unknown."""
    if rows_estimated is None or rate is None or rate <= 0:
        return None
    return max(0, rows_estimated - rows_done) / rate


def format_eta(seconds: float | None) -> str | None:
    """ETA in the API's short duration form (`850ms`, `18s`, `4m10s`), None when unknown."""
    if seconds is None:
        return None
    return format_duration(seconds)


def format_count(n: float) -> str:
    """Thousands separated by commas: 1234567 → `1,234,567`."""
    return f"{round(n):,}"


def progress_text(
    rows_done: int,
    rows_estimated: int | None,
    rate: float | None,
    batch_size: int,
    *,
    finished: bool = False,
    throttled: str | None = None,
) -> str:
    """One line of progress, as printed in Job logs (no terminal)."""
    pct = percent_done(rows_done, rows_estimated, finished=finished)
    parts = [
        f"{format_count(rows_done)}/{format_count(rows_estimated)} rows"
        if rows_estimated is not None
        else f"{format_count(rows_done)} rows"
    ]
    if pct is not None:
        parts[0] += f" ({pct}%)"
    parts.append(f"{format_count(rate)} rows/s" if rate is not None else "- rows/s")
    parts.append(f"batch {format_count(batch_size)}")
    eta = format_eta(eta_seconds(rows_done, rows_estimated, rate)) if not finished else None
    if eta is not None:
        parts.append(f"eta {eta}")
    if throttled:
        parts.append(f"throttled: {throttled}")
    return ", ".join(parts)


def summary_text(rows: int, seconds: float, batches: int, *, resumed_from: int = 0) -> str:
    """The final line: rows, time, rows/s, batches (and where a resumed run started)."""
    rate = rows_per_second(rows, seconds)
    text = (
        f"done: {format_count(rows)} rows in {format_duration(seconds)} "
        f"({format_count(rate or 0)} rows/s, {batches} batches)"
    )
    if resumed_from:
        text += f"; resumed after {format_count(resumed_from)} rows done earlier"
    return text


def default_checkpoint_name(table: str, set_sql: str, where_sql: str | None) -> str:
    """A stable checkpoint name for a backfill run by hand: the same command resumes."""
    digest = hashlib.sha256("\x00".join((table, set_sql, where_sql or "")).encode()).hexdigest()
    return f"{table}:{digest[:12]}"


MIN_FRACTION_FOR_EXTRAPOLATION = 0.02


def extrapolate_remaining(rows_done: int, lower: int, last: int, upper: int) -> float | None:
    """Rows still to come in a worker's integer key range, from the rows it found so far.

    A worker that covered keys (lower, last] of (lower, upper] and updated `rows_done` rows
    will find about rows_done * (upper - last) / (last - lower) more. This needs no planner
    statistics (a column added by the migration has none, so the planner's guess for
    `WHERE col IS NULL` is a default 0.5 %). None until 2 % of the range is covered.
    """
    span = upper - lower
    covered = last - lower
    if span <= 0 or covered < 0:
        return None
    if covered >= span:
        return 0.0
    if covered / span < MIN_FRACTION_FOR_EXTRAPOLATION:
        return None
    return rows_done * (span - covered) / covered


def rows_in_key_range(
    matches: int, sampled: int, limit: int, lower: int, last: int, upper: int
) -> float:
    """Rows matching in an integer key range (lower, upper], from its first keys read in order.

    The first `sampled` rows of the range (at most `limit`), keys (lower, last], held
    `matches` matching rows: fewer than `limit` means the range is read whole and `matches` is
    exact; else the density so far, matches / (last - lower), holds over the whole range.
    For a table without statistics, where the planner's guess is a fixed default.
    """
    if sampled < limit or last >= upper:
        return float(matches)
    covered = last - lower
    if covered <= 0:
        return float(matches)
    return matches * (upper - lower) / covered
