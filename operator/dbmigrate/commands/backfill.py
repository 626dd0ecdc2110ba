"""`dbmigrate backfill`: the worker that backfill Jobs run, usable by hand too.

Owns the command line (arguments mirror `steps[].backfill`; the DSN comes only from the
environment variable `DBMIGRATE_DSN`), running the worker, the exit status, SIGTERM handling
(finish the current batch, then stop: the checkpoint lets the next run resume) and the
worker's optional Prometheus metrics. What it shows while it runs, and its final line, are
`commands.backfill_progress`; the work itself is `dbmigrate.db.backfill.run_backfill`.

Exit status (the backfill Job's podFailurePolicy in `core.jobs` acts on these, see
`exit_code`):
  0    done, or nothing left to do
  1    an error that cannot heal: no primary key, no such table, invalid SQL, a runtime error
       of the `set`, a checkpoint of another backfill, a wrong password: the Job fails at once
  2    bad arguments: the Job fails at once
  75   the database stayed unavailable past the worker's own reconnects (connection lost or
       refused: class 08, 57P01, 57P02, 57P03, 53300), or a lock, deadlock or serialization
       failure outlasted its retries: it can heal, so the Job retries the pod, which resumes
       from the checkpoint
  143  stopped by SIGTERM after its current batch: retried, resumes from the checkpoint
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from dbmigrate.api.durations import parse_duration
from dbmigrate.api.worker import (
    BACKFILL_EXIT_FAILED,
    BACKFILL_EXIT_RETRYABLE,
    BACKFILL_EXIT_STOPPED,
    BACKFILL_EXIT_USAGE,
)
from dbmigrate.commands.backfill_progress import open_display, result_text
from dbmigrate.core.batching import CONTENTION_SQLSTATES, parse_worker
from dbmigrate.db.backfill import (
    APPLICATION_NAME_PREFIX,
    CHECKPOINT_TABLE,
    DEFAULT_MAX_RECONNECTS,
    BackfillError,
    BackfillEvent,
    BackfillOptions,
    BackfillResult,
    BackfillSqlError,
    BatchDone,
    Blocked,
    DatabaseUnavailable,
    Retrying,
    Started,
    Throttled,
    run_backfill_reconnecting,
    transient_error,
)
from dbmigrate.db.errors import MalformedDsn, check_dsn, describe_error, redact_dsn

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

DSN_ENV = "DBMIGRATE_DSN"
EXIT_FAILED = BACKFILL_EXIT_FAILED
EXIT_USAGE = BACKFILL_EXIT_USAGE
EXIT_RETRYABLE = BACKFILL_EXIT_RETRYABLE  # EX_TEMPFAIL
EXIT_STOPPED = BACKFILL_EXIT_STOPPED  # 128 + SIGTERM, as a shell reports a process ended by SIGTERM

EXIT_CODES_HELP = (
    "exit status: 0 done (or nothing left to do); 1 an error that cannot heal (no primary key, "
    "invalid SQL, ...); 2 bad arguments; 75 the database stayed unavailable past the "
    "reconnects (or a lock past the retries): run again to resume; 143 stopped by SIGTERM"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backfill",
        help="run a batched, resumable backfill (the worker of backfill Jobs)",
        formatter_class=_DefaultsFormatter,
        description=(
            "Update a table in keyset batches on its primary key, each batch its own short "
            f"transaction, checkpointed in {CHECKPOINT_TABLE} so that a killed run "
            "resumes where it stopped. The database is read from the environment variable "
            f"{DSN_ENV} (a libpq DSN), never from the command line. A lost connection is "
            "reconnected with back-off and the run resumes from the checkpoint."
        ),
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("--table", required=True, help="[schema.]table; it must have a primary key")
    p.add_argument(
        "--set", required=True, dest="set_sql", metavar="EXPR", help="assignments: a = expr, ..."
    )
    p.add_argument("--where", metavar="PRED", help="only rows matching this SQL predicate")
    p.add_argument(
        "--batch-size", type=_positive_int, default=1000, metavar="N", help="first batch size"
    )
    p.add_argument(
        "--max-batch-size", type=_positive_int, default=100_000, metavar="N", help="largest batch"
    )
    p.add_argument(
        "--target-batch-duration",
        type=_duration,
        default="500ms",
        metavar="DURATION",
        help="the batch size adapts so that a batch takes about this long",
    )
    p.add_argument(
        "--pause", type=_duration, default="0s", metavar="DURATION", help="sleep between batches"
    )
    p.add_argument(
        "--worker",
        default="0/1",
        metavar="I/N",
        help="work on the I-th of N key slices (I from JOB_COMPLETION_INDEX when I is 'auto')",
    )
    p.add_argument(
        "--checkpoint",
        metavar="NAME",
        help="checkpoint name (default: derived from table, set and where, so the same command "
        "resumes)",
    )
    p.add_argument(
        "--lock-timeout",
        type=_duration,
        default="1s",
        metavar="DURATION",
        help="lock_timeout of every batch (55P03 is retried with back-off)",
    )
    p.add_argument(
        "--max-blocked-duration",
        type=_duration,
        default="2s",
        metavar="DURATION",
        help="a batch that makes another session wait this long is cancelled and retried at "
        "half its size (watched from a second session); 0s: not watched",
    )
    p.add_argument(
        "--max-replication-lag",
        type=_duration,
        default="1.5s",
        metavar="DURATION",
        help="wait while a replica's replay lag is above this",
    )
    p.add_argument(
        "--max-active-sessions",
        type=_non_negative_int,
        default=25,
        metavar="N",
        help="wait while more other sessions than this are active",
    )
    p.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="consecutive retries of a batch hitting a lock or statement timeout",
    )
    p.add_argument(
        "--max-reconnects",
        type=_non_negative_int,
        default=DEFAULT_MAX_RECONNECTS,
        metavar="N",
        help="consecutive reconnects after a lost or refused connection (class 08, 57P01, "
        "53300, ...) before exiting with status 75",
    )
    p.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on this port"
    )
    p.add_argument(
        "--metrics-address",
        default="0.0.0.0",  # noqa: S104 - scraped from outside the pod
        metavar="ADDRESS",
        help="address for --metrics-port",
    )
    p.add_argument(
        "--progress-interval",
        type=_duration,
        default="10s",
        metavar="DURATION",
        help="how often a progress line is printed when not on a terminal",
    )
    p.set_defaults(handler=_handle)


class _DefaultsFormatter(argparse.HelpFormatter):
    """Says each option's default, unless it has none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type`: an integer of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _handle(args: argparse.Namespace) -> int:
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        return _fail(f"set {DSN_ENV} to the database's DSN (it is never read from arguments)")
    try:
        check_dsn(dsn, DSN_ENV)
    except MalformedDsn as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        worker, workers = parse_worker(args.worker, os.environ.get("JOB_COMPLETION_INDEX"))
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.max_batch_size < args.batch_size:
        return _fail("--max-batch-size must be at least --batch-size", EXIT_USAGE)
    opts = BackfillOptions(
        table=args.table,
        set=args.set_sql,
        where=args.where,
        batch_size=args.batch_size,
        max_batch_size=args.max_batch_size,
        target_batch_seconds=args.target_batch_duration,
        pause_seconds=args.pause,
        worker=worker,
        workers=workers,
        checkpoint=args.checkpoint,
        lock_timeout_seconds=args.lock_timeout,
        max_blocked_seconds=args.max_blocked_duration,
        max_replication_lag_seconds=args.max_replication_lag,
        max_active_sessions=args.max_active_sessions,
        max_retries=args.max_retries,
        max_reconnects=args.max_reconnects,
    )
    metrics = _WorkerMetrics(opts) if args.metrics_port else None
    if metrics is not None:
        try:
            metrics.serve(args.metrics_address, args.metrics_port)
        except OSError as exc:
            return _fail(
                f"cannot serve metrics on {args.metrics_address}:{args.metrics_port}: {exc}"
            )
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_sigterm(signum: int, _frame: FrameType | None) -> None:
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(
            dsn, autocommit=True, application_name=f"{APPLICATION_NAME_PREFIX} {worker}/{workers}"
        )

    def guard_connect() -> psycopg.Connection[Any]:
        # Not a backfill session by name: the tests and views that count workers count one.
        return psycopg.connect(
            dsn, autocommit=True, application_name=f"dbmigrate-guard backfill {worker}/{workers}"
        )

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return _run(
            connect, guard_connect, opts, args.progress_interval, metrics, stop, stopped_by, dsn
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(
    connect: Callable[[], psycopg.Connection[Any]],
    guard_connect: Callable[[], psycopg.Connection[Any]],
    opts: BackfillOptions,
    progress_interval: float,
    metrics: _WorkerMetrics | None,
    stop: threading.Event,
    stopped_by: list[str],
    dsn: str,
) -> int:
    display = open_display(progress_interval)

    def on_event(event: BackfillEvent) -> None:
        display.event(event)
        if metrics is not None:
            metrics.event(event)

    with display:
        try:
            result = run_backfill_reconnecting(
                connect, opts, on_event=on_event, stop=stop, guard_connect=guard_connect
            )
        except BackfillError as exc:
            display.close()
            return _fail(_scrub(str(exc), dsn), exit_code(exc))
        except psycopg.Error as exc:
            display.close()
            return _fail(_scrub(f"database error: {describe_error(exc)}", dsn), exit_code(exc))
        display.finish(result)
    return _report(result, stopped_by)


def exit_code(exc: BaseException) -> int:
    """The exit status of a worker ended by `exc`: 75 (the Job retries the pod) when the
    error can heal by itself, 1 (the Job fails at once) otherwise."""
    if isinstance(exc, DatabaseUnavailable) or transient_error(exc) is not None:
        return EXIT_RETRYABLE
    if isinstance(exc, BackfillSqlError) and exc.sqlstate in CONTENTION_SQLSTATES:
        return EXIT_RETRYABLE  # retried with back-off until the retries ran out
    return EXIT_FAILED


def _report(result: BackfillResult, stopped_by: list[str]) -> int:
    print(result_text(result, stopped_by[0] if stopped_by else None))
    if result.stopped and not result.already_finished:
        return EXIT_STOPPED
    return 0


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"dbmigrate backfill: error: {message}", file=sys.stderr)
    return code


def _scrub(text: str, dsn: str) -> str:
    """Remove the DSN and its password from a message (libpq messages never contain them,
    but a message is printed, so make sure)."""
    return redact_dsn(text, dsn)


# ---------------------------------------------------------------------------------------------
# metrics


M = TypeVar("M", "Counter", "Gauge", "Histogram")


class _WorkerMetrics:
    """The worker's own Prometheus metrics, on a registry of its own."""

    def __init__(self, opts: BackfillOptions) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
        )

        self.registry = CollectorRegistry()
        labels = {"checkpoint": opts.checkpoint_name, "worker": str(opts.worker)}

        def metric(kind: type[M], name: str, documentation: str, **options: Any) -> M:
            """One metric of this worker's registry, with this worker's labels set."""
            return kind(
                name, documentation, list(labels), registry=self.registry, **options
            ).labels(**labels)

        self.rows = metric(
            Counter, "dbmigrate_backfill_rows", "Rows changed by this backfill worker."
        )
        self.batches = metric(
            Counter, "dbmigrate_backfill_batches", "Batches committed by this backfill worker."
        )
        self.retries = metric(
            Counter,
            "dbmigrate_backfill_retries",
            "Batches retried after a lock timeout, statement timeout or deadlock.",
        )
        self.duration = metric(
            Histogram,
            "dbmigrate_backfill_batch_duration_seconds",
            "Duration of one batch (boundary query, UPDATE, checkpoint, commit).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batch_size = metric(
            Gauge, "dbmigrate_backfill_batch_size", "Size (keys) of the next batch."
        )
        self.blocked = metric(
            Counter,
            "dbmigrate_backfill_blocked_application_episodes",
            "Batches cancelled because application queries waited on them longer than "
            "--max-blocked-duration.",
        )
        self.throttled = metric(
            Gauge,
            "dbmigrate_backfill_throttled",
            "1 while the worker waits for replication lag or active sessions to come down.",
        )

    def serve(self, address: str, port: int) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=address, registry=self.registry)

    def event(self, event: BackfillEvent) -> None:
        if isinstance(event, Started):
            self.batch_size.set(event.batch_size)
        elif isinstance(event, BatchDone):
            self.rows.inc(event.rows)
            self.batches.inc()
            self.duration.observe(event.seconds)
            self.batch_size.set(event.next_batch_size)
            self.throttled.set(0)
        elif isinstance(event, Throttled):
            self.throttled.set(1)
        elif isinstance(event, Retrying):
            self.retries.inc()
            self.batch_size.set(event.batch_size)
        elif isinstance(event, Blocked):
            self.blocked.inc()
