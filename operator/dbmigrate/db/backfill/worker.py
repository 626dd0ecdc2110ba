"""The backfill worker: `run_backfill` walks this worker's key slice batch by batch.

Owns the worker's loop and its locks: the session's `lock_timeout` for everything before the
batches (so that a long DDL elsewhere never queues us for minutes), the advisory lock that
keeps one process per slice, the checkpoint claim, then batches until the slice is done or
`stop` is set. Between batches it adapts the batch size to the target duration (shrinking it
after a statement timeout), pauses, waits while the database is under strain, and retries
lock timeouts, statement timeouts, deadlocks and serialization failures with back-off.
Each batch commits with its checkpoint, so a killed worker resumes after the last one.
With `opts.max_blocked_seconds` and a `guard_connect`, each batch runs watched by the blocking
guard (`db.guard`, on a session of its own): a batch that makes application queries wait that
long is cancelled (it rolls back with its checkpoint update, so the checkpoint stays where the
last committed batch left it), recorded in the checkpoint row (`Blocked` event) and retried at
half its size.

`run_backfill_reconnecting` is the same on connections of its own: a connection lost or
refused with an error that can heal (`retry.transient_error`) is opened again after a back-off
and the run resumes from the checkpoint, which the database keeps, so a batch whose commit was
lost with the connection is neither lost nor done twice; past `max_reconnects` failures in a
row it raises `DatabaseUnavailable`. `run_backfill` on the caller's connection raises that at
the first one.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors

from dbmigrate import failpoints
from dbmigrate.core.batching import BatchSizer, batch_statement_timeout
from dbmigrate.core.guard import describe_episode
from dbmigrate.db.backfill.batches import build_statements, run_batch
from dbmigrate.db.backfill.checkpoints import (
    claim_checkpoint,
    ensure_checkpoint_table,
    finish_empty,
    record_blocked,
    record_error,
)
from dbmigrate.db.backfill.model import (
    BackfillEvent,
    BackfillOptions,
    BackfillResult,
    BackfillSqlError,
    BatchDone,
    Blocked,
    CheckpointReset,
    DatabaseUnavailable,
    Started,
    Throttled,
)
from dbmigrate.db.backfill.progress import estimate_rows
from dbmigrate.db.backfill.retry import RETRYABLE, Retries, retrying_locks, transient_error
from dbmigrate.db.backfill.table import TableInfo, check_statements, read_table
from dbmigrate.db.backfill.throttle import (
    THROTTLE_CHECK_INTERVAL,
    THROTTLE_WAIT,
    wait_while_strained,
)
from dbmigrate.db.errors import describe_error
from dbmigrate.db.guard import BlockingGuard, Watch, watching

Connect = Callable[[], psycopg.Connection[Any]]


def run_backfill(
    conn: psycopg.Connection[Any],
    opts: BackfillOptions,
    *,
    on_event: Callable[[BackfillEvent], None] | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    guard_connect: Connect | None = None,
) -> BackfillResult:
    """Run worker `opts.worker` of the backfill until its slice is done (or `stop` is set).

    `conn` must be in autocommit mode: every batch is its own transaction. Raises
    `BackfillError` subclasses for expected failures (missing table, no primary key, bad SQL,
    retries exhausted), with the server's SQLSTATE and message; `DatabaseUnavailable` when the
    connection is lost (`run_backfill_reconnecting` reconnects instead).
    """
    if not conn.autocommit:
        raise ValueError("run_backfill needs an autocommit connection")
    runs = _Runs()
    emit = runs.watching(on_event or (lambda _event: None))
    guard = _guard(opts, guard_connect)
    try:
        return runs.result(
            _run(conn, opts, emit, stop or threading.Event(), clock, runs, guard), clock
        )
    except Exception as exc:
        cause = transient_error(exc)
        if cause is None:
            raise
        raise DatabaseUnavailable(f"lost the database connection: {describe_error(cause)}") from exc
    finally:
        if guard is not None:
            guard.close()


def _guard(opts: BackfillOptions, connect: Connect | None) -> BlockingGuard | None:
    if connect is None or opts.max_blocked_seconds <= 0:
        return None
    return BlockingGuard(connect, opts.max_blocked_seconds)


def run_backfill_reconnecting(
    connect: Callable[[], psycopg.Connection[Any]],
    opts: BackfillOptions,
    *,
    on_event: Callable[[BackfillEvent], None] | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    guard_connect: Connect | None = None,
) -> BackfillResult:
    """`run_backfill` on connections of its own (`connect()` opens an autocommit one;
    `guard_connect`, default `connect`, the blocking guard's).

    A connection lost or refused with an error that can heal is closed, and after a back-off
    (`Retrying` events, `core.batching.backoff_delay`) opened again; the run resumes from the
    checkpoint. `opts.max_reconnects` failures in a row with no batch committed in between
    raise `DatabaseUnavailable`; a connection refused for good (a wrong password, no such
    database) raises `BackfillSqlError` at once, as do the errors `run_backfill` raises.
    """
    stop = stop or threading.Event()
    outer = on_event or (lambda _event: None)
    runs = _Runs()
    failures = Retries(opts.max_reconnects, outer, stop)
    guard = _guard(opts, guard_connect or connect)

    def on_attempt_event(event: BackfillEvent) -> None:
        if isinstance(event, BatchDone):
            failures.succeeded()
        outer(event)

    emit = runs.watching(on_attempt_event)
    try:
        while True:
            connected = False
            try:
                conn = connect()
                connected = True
                with conn:
                    return runs.result(_run(conn, opts, emit, stop, clock, runs, guard), clock)
            except Exception as exc:
                cause = transient_error(exc)
                if cause is None:
                    if not connected and isinstance(exc, psycopg.Error):
                        raise BackfillSqlError("cannot connect to the database", exc) from exc
                    raise
                what = (
                    "lost the database connection"
                    if connected
                    else "cannot connect to the database"
                )
                error = f"{what}: {describe_error(cause)}"
            if not stop.is_set():
                if not failures.failed():
                    raise DatabaseUnavailable(
                        f"{error} ({failures.failures} times in a row)"
                    ) from cause
                failures.back_off(error, opts.batch_size)
            if stop.is_set():
                return runs.stopped(opts, clock)
    finally:
        if guard is not None:
            guard.close()


@dataclass
class _Runs:
    """What this process did over one or more connections to the same checkpoint.

    The checkpoint is the truth of what committed: a batch whose commit was lost with the
    connection shows as rows done beyond the last ones seen when the checkpoint is claimed
    again (or at the end), and counts as this run's.
    """

    claimed: bool = False  # the checkpoint was claimed once: its finished state is this run's
    started: float | None = None
    resumed_from: int | None = None
    seen: int | None = None  # this worker's rows done as last seen; None: nothing seen yet
    rows: int = 0
    batches: int = 0
    batch_seconds: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    def watching(self, emit: Callable[[BackfillEvent], None]) -> Callable[[BackfillEvent], None]:
        def watch(event: BackfillEvent) -> None:
            if isinstance(event, CheckpointReset):
                self.seen = None  # a new plan: its rows done start from 0
            elif isinstance(event, Started):
                self.catch_up(event.rows_done_before)
                if self.resumed_from is None:
                    self.resumed_from = event.rows_done_before
            elif isinstance(event, BatchDone):
                self.rows += event.rows
                self.batches += 1
                self.seen = event.rows_done
                self.batch_seconds.append(event.seconds)
                self.batch_sizes.append(event.batch_size)
            emit(event)

        return watch

    def catch_up(self, rows_done: int) -> None:
        if self.seen is not None and rows_done > self.seen:
            self.rows += rows_done - self.seen
            self.batches += 1
        self.seen = rows_done

    def result(self, last: BackfillResult, clock: Callable[[], float]) -> BackfillResult:
        self.catch_up(last.rows_total)
        if (self.rows, self.batches) == (last.rows, last.batches):
            return last  # all that was done, was done on the last connection
        return BackfillResult(
            checkpoint=last.checkpoint,
            rows=self.rows,
            rows_total=last.rows_total,
            batches=self.batches,
            seconds=clock() - self.started if self.started is not None else last.seconds,
            stopped=last.stopped,
            resumed_from=self.resumed_from or 0,
            batch_seconds=self.batch_seconds,
            batch_sizes=self.batch_sizes,
        )

    def stopped(self, opts: BackfillOptions, clock: Callable[[], float]) -> BackfillResult:
        return BackfillResult(
            checkpoint=opts.checkpoint_name,
            rows=self.rows,
            rows_total=self.seen or 0,
            batches=self.batches,
            seconds=clock() - self.started if self.started is not None else 0.0,
            stopped=True,
            resumed_from=self.resumed_from or 0,
            batch_seconds=self.batch_seconds,
            batch_sizes=self.batch_sizes,
        )


def _run(
    conn: psycopg.Connection[Any],
    opts: BackfillOptions,
    emit: Callable[[BackfillEvent], None],
    stop: threading.Event,
    clock: Callable[[], float],
    runs: _Runs,
    guard: BlockingGuard | None = None,
) -> BackfillResult:
    """One connection's run: the table, the checks, the slice's lock, then the slice."""
    if runs.started is None:
        runs.started = clock()
    info = read_table(conn, opts.table)
    previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
    # Everything before the batches (EXPLAIN, checkpoint DDL, planning) waits for locks at
    # most this long too, so that a long DDL elsewhere never queues us for minutes.
    conn.execute(
        "SELECT set_config('lock_timeout', %s, false)",
        (_milliseconds(opts.lock_timeout_seconds),),
    )
    try:
        retrying_locks(lambda: check_statements(conn, info, opts.set, opts.where), opts, emit, stop)
        retrying_locks(lambda: ensure_checkpoint_table(conn), opts, emit, stop)
        if not _lock_slice(conn, opts, emit, stop):
            return BackfillResult(
                checkpoint=opts.checkpoint_name,
                rows=0,
                rows_total=0,
                batches=0,
                seconds=0.0,
                stopped=True,
            )
        try:
            return _run_slice(conn, info, opts, emit, stop, clock, runs, guard)
        finally:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_slice_lock_key(opts),))
    finally:
        if previous is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT set_config('lock_timeout', %s, false)", (previous[0],))


def _milliseconds(seconds: float) -> str:
    """A timeout setting's value; at least 1 ms, since 0 would mean no timeout at all."""
    return f"{max(1, round(seconds * 1000))}ms"


def _slice_lock_key(opts: BackfillOptions) -> int:
    digest = hashlib.sha256(f"dbmigrate.backfill:{opts.checkpoint_name}:{opts.worker}".encode())
    return int.from_bytes(digest.digest()[:8], "big", signed=True)


def _lock_slice(
    conn: psycopg.Connection[Any],
    opts: BackfillOptions,
    emit: Callable[[BackfillEvent], None],
    stop: threading.Event,
) -> bool:
    """Hold this worker's slice for the session: one process per slice, ever.

    A replacement pod can start while the old one is still ending, and the server rolls back
    a killed client's last batch only when it notices the client is gone; the second process
    waits here until the first one's session has ended. False if stopped while waiting.
    """
    key = _slice_lock_key(opts)
    announced = False
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if row and row[0]:
            return True
        if not announced:
            emit(
                Throttled(
                    reason=f"another session is working on worker {opts.worker}/{opts.workers} "
                    f"of checkpoint {opts.checkpoint_name!r}"
                )
            )
            announced = True
        if stop.wait(THROTTLE_WAIT):
            return False


def _run_slice(
    conn: psycopg.Connection[Any],
    info: TableInfo,
    opts: BackfillOptions,
    emit: Callable[[BackfillEvent], None],
    stop: threading.Event,
    clock: Callable[[], float],
    runs: _Runs,
    guard: BlockingGuard | None,
) -> BackfillResult:
    cp, reset = retrying_locks(
        lambda: claim_checkpoint(conn, info, opts, recheck_finished=not runs.claimed),
        opts,
        emit,
        stop,
    )
    runs.claimed = True
    name = opts.checkpoint_name
    if reset is not None:
        emit(CheckpointReset(checkpoint=name, reason=reset))
    if cp.finished or cp.upper_key is None:
        if not cp.finished:
            finish_empty(conn, opts)
        return BackfillResult(
            checkpoint=name,
            rows=0,
            rows_total=cp.rows_done,
            batches=0,
            seconds=0.0,
            already_finished=cp.finished,
            resumed_from=cp.rows_done,
        )

    sizer = BatchSizer.start(opts.batch_size, opts.max_batch_size, opts.target_batch_seconds)
    remaining = estimate_rows(conn, info, opts.where, [(cp.resume_after, cp.upper_key)])
    emit(
        Started(
            table=info.name,
            key_columns=info.key_columns,
            checkpoint=name,
            worker=opts.worker,
            workers=opts.workers,
            rows_done_before=cp.rows_done,
            rows_estimated=None if remaining is None else cp.rows_done + remaining,
            resumed=cp.last_key is not None,
            batch_size=sizer.size,
        )
    )
    statement_timeout = opts.statement_timeout_seconds or batch_statement_timeout(
        opts.target_batch_seconds
    )
    settings = (_milliseconds(opts.lock_timeout_seconds), _milliseconds(statement_timeout))
    statements = {
        has_lower: build_statements(
            info, opts.set, opts.where, has_lower=has_lower, method=opts.boundary_method
        )
        for has_lower in (False, True)
    }
    hi: str = cp.upper_key
    lo = cp.resume_after
    rows_total = cp.rows_done
    rows_run = batches = 0
    retries = Retries(opts.max_retries, emit, stop)
    batch_seconds: list[float] = []
    batch_sizes: list[int] = []
    started = clock()
    next_strain_check = started
    final = False

    while not final:
        if stop.is_set():
            break
        if clock() >= next_strain_check:
            if wait_while_strained(conn, opts, emit, stop):
                break
            next_strain_check = clock() + THROTTLE_CHECK_INTERVAL
        size = sizer.size
        t0 = clock()
        watch: Watch | None = None
        try:
            with watching(guard, conn) as watch:
                end, final, rows = run_batch(
                    conn,
                    statements[lo is not None],
                    settings,
                    opts,
                    lo,
                    hi,
                    size,
                    table_oid=info.oid,
                )
        except RETRYABLE as exc:
            message = describe_error(exc)
            canceled = isinstance(exc, errors.QueryCanceled)
            fired = watch.fired if canceled and watch is not None else None
            if fired is not None:  # the guard cancelled it, not statement_timeout
                sizer = sizer.after_blocking()
                message = describe_episode(fired, f"the batch of {size} {_after(lo)}")
                text = f"{message}; cancelled, retried at {sizer.size}"
                record_blocked(conn, opts, text)
                emit(
                    Blocked(
                        message=text,
                        waiters=fired.waiters,
                        longest_wait=fired.longest_wait,
                        batch_size=size,
                        next_batch_size=sizer.size,
                    )
                )
            if not retries.failed():
                record_error(conn, opts, message)
                raise BackfillSqlError(
                    f"the batch {_after(lo)} failed {retries.failures} times in a row", exc
                ) from exc
            if canceled and fired is None:
                sizer = sizer.after_timeout()
            retries.back_off(message, sizer.size)
            # Back to the top: a stop or strain that came meanwhile is seen before the retry.
            continue
        except psycopg.Error as exc:
            if conn.closed or transient_error(exc) is not None:
                raise BackfillSqlError("lost the database connection", exc) from exc
            record_error(conn, opts, describe_error(exc))
            raise BackfillSqlError(f"the batch {_after(lo)} failed", exc) from exc
        seconds = clock() - t0
        retries.succeeded()
        batches += 1
        rows_run += rows
        rows_total += rows
        batch_seconds.append(seconds)
        batch_sizes.append(size)
        if not final:
            # The last batch runs to the slice end: its key count is unknown and irrelevant.
            sizer = sizer.after_batch(size, seconds)
        lo = end
        failpoints.hit("backfill.batch-committed")
        emit(
            BatchDone(
                rows=rows,
                seconds=seconds,
                batch_size=size,
                next_batch_size=sizer.size,
                rows_done=rows_total,
                batches=cp.batches + batches,
                last_key=end,
            )
        )
        if not final and opts.pause_seconds > 0:
            stop.wait(opts.pause_seconds)
    return BackfillResult(
        checkpoint=name,
        rows=rows_run,
        rows_total=rows_total,
        batches=batches,
        seconds=clock() - started,
        stopped=not final,
        resumed_from=cp.rows_done,
        batch_seconds=batch_seconds,
        batch_sizes=batch_sizes,
    )


def _after(lo: str | None) -> str:
    return "at the start of the slice" if lo is None else f"after key {lo}"
