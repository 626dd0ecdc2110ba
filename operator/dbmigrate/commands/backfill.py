"""`dbmigrate backfill`: the worker that backfill Jobs run, usable by hand too.

Owns the command line (arguments mirror `steps[].backfill`; the DSN comes only from the
environment variable `DBMIGRATE_DSN`), the progress display (a rich progress bar on a terminal,
plain periodic lines otherwise, which is what Job logs show), the final summary line, the exit
status, SIGTERM handling (finish the current batch, then stop: the checkpoint lets the next run
resume) and the worker's optional Prometheus metrics. The work itself is
`dbmigrate.db.backfill.run_backfill`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, TextIO

import psycopg

from dbmigrate.api.durations import parse_duration
from dbmigrate.core.batching import (
    format_count,
    parse_worker,
    progress_text,
    rows_per_second,
    summary_text,
)
from dbmigrate.db.backfill import (
    APPLICATION_NAME_PREFIX,
    BackfillError,
    BackfillEvent,
    BackfillOptions,
    BackfillResult,
    BatchDone,
    Retrying,
    Started,
    Throttled,
    run_backfill,
)
from dbmigrate.db.errors import describe_error, first_line, redact_dsn

DSN_ENV = "DBMIGRATE_DSN"
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 143  # 128 + SIGTERM, as a shell reports a process ended by SIGTERM


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backfill",
        help="run a batched, resumable backfill (the worker of backfill Jobs)",
        formatter_class=_DefaultsFormatter,
        description=(
            "Update a table in keyset batches on its primary key, each batch its own short "
            "transaction, checkpointed in dbmigrate.backfill_checkpoints so that a killed run "
            "resumes where it stopped. The database is read from the environment variable "
            f"{DSN_ENV} (a libpq DSN), never from the command line."
        ),
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


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
        max_replication_lag_seconds=args.max_replication_lag,
        max_active_sessions=args.max_active_sessions,
        max_retries=args.max_retries,
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

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        try:
            conn = psycopg.connect(
                dsn,
                autocommit=True,
                application_name=f"{APPLICATION_NAME_PREFIX} {worker}/{workers}",
            )
        except psycopg.Error as exc:
            return _fail(_scrub(f"cannot connect to the database: {first_line(exc)}", dsn))
        with conn:
            return _run(conn, opts, args.progress_interval, metrics, stop, stopped_by, dsn)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(
    conn: psycopg.Connection[Any],
    opts: BackfillOptions,
    progress_interval: float,
    metrics: _WorkerMetrics | None,
    stop: threading.Event,
    stopped_by: list[str],
    dsn: str,
) -> int:
    display: _Display = (
        _RichDisplay() if sys.stdout.isatty() else _PlainDisplay(sys.stdout, progress_interval)
    )

    def on_event(event: BackfillEvent) -> None:
        display.event(event)
        if metrics is not None:
            metrics.event(event)

    with display:
        try:
            result = run_backfill(conn, opts, on_event=on_event, stop=stop)
        except BackfillError as exc:
            display.close()
            return _fail(_scrub(str(exc), dsn))
        except psycopg.Error as exc:
            display.close()
            return _fail(_scrub(f"database error: {describe_error(exc)}", dsn))
        display.finish(result)
    return _report(result, stopped_by)


def _report(result: BackfillResult, stopped_by: list[str]) -> int:
    if result.already_finished:
        print(
            f"checkpoint {result.checkpoint!r} is already finished "
            f"({format_count(result.rows_total)} rows); nothing to do"
        )
        return 0
    if result.stopped:
        print(
            f"stopped by {stopped_by[0] if stopped_by else 'request'} after "
            f"{format_count(result.rows)} rows in {result.batches} batches; "
            "run the same command again to resume from the checkpoint"
        )
        return EXIT_STOPPED
    print(
        summary_text(result.rows, result.seconds, result.batches, resumed_from=result.resumed_from)
    )
    return 0


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"dbmigrate backfill: error: {message}", file=sys.stderr)
    return code


def _scrub(text: str, dsn: str) -> str:
    """Remove the DSN and its password from a message (libpq messages never contain them,
    but a message is printed, so make sure)."""
    return redact_dsn(text, dsn)


# ---------------------------------------------------------------------------------------------
# progress display


class _Display:
    def __enter__(self) -> _Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def event(self, event: BackfillEvent) -> None:
        raise NotImplementedError

    def finish(self, result: BackfillResult) -> None:
        """The run ended (done or stopped): the summary line follows."""

    def close(self) -> None:
        pass


class _Tally:
    """What every display shows: rows done, estimate, this run's rate, the batch size."""

    def __init__(self) -> None:
        self.rows_done = 0
        self.rows_before = 0
        self.rows_estimated: int | None = None
        self.batch_size = 0
        self.started = time.monotonic()
        self.throttled: str | None = None

    def update(self, event: BackfillEvent) -> None:
        if isinstance(event, Started):
            self.rows_done = self.rows_before = event.rows_done_before
            self.rows_estimated = event.rows_estimated
            self.batch_size = event.batch_size
            self.started = time.monotonic()
        elif isinstance(event, BatchDone):
            self.rows_done = event.rows_done
            self.batch_size = event.next_batch_size
            self.throttled = None
            if self.rows_estimated is not None:
                # An estimate below what is already done is no estimate at all.
                self.rows_estimated = max(self.rows_estimated, self.rows_done)
        elif isinstance(event, Throttled):
            self.throttled = event.reason
        elif isinstance(event, Retrying):
            self.batch_size = event.batch_size

    @property
    def rate(self) -> float | None:
        return rows_per_second(self.rows_done - self.rows_before, time.monotonic() - self.started)

    def line(self) -> str:
        return progress_text(
            self.rows_done,
            self.rows_estimated,
            self.rate,
            self.batch_size,
            throttled=self.throttled,
        )


def _started_text(event: Started) -> str:
    how = (
        f"resuming after {format_count(event.rows_done_before)} rows"
        if event.resumed
        else "starting"
    )
    estimate = (
        f"~{format_count(event.rows_estimated)} rows" if event.rows_estimated is not None else "?"
    )
    return (
        f"backfill {event.table} (key {', '.join(event.key_columns)}), worker "
        f"{event.worker}/{event.workers}, checkpoint {event.checkpoint!r}: {how}; {estimate}"
    )


class _PlainDisplay(_Display):
    """Lines for logs: the start, every `interval` seconds, and every throttle or retry."""

    def __init__(self, out: TextIO, interval: float) -> None:
        self.out = out
        self.interval = interval
        self.tally = _Tally()
        self.next_line = time.monotonic() + interval

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def event(self, event: BackfillEvent) -> None:
        self.tally.update(event)
        if isinstance(event, Started):
            self._print(_started_text(event))
        elif isinstance(event, Throttled):
            self._print(f"waiting: {event.reason}")
        elif isinstance(event, Retrying):
            self._print(
                f"retry {event.attempt} in {event.delay:.1f}s after {event.error} "
                f"(batch size now {format_count(event.batch_size)})"
            )
        elif isinstance(event, BatchDone) and time.monotonic() >= self.next_line:
            self._print(self.tally.line())
            self.next_line = time.monotonic() + self.interval


class _RichDisplay(_Display):
    """A progress bar on a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = Console()
        self.tally = _Tally()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("[yellow]{task.fields[note]}"),
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self.progress.start()

    def event(self, event: BackfillEvent) -> None:
        self.tally.update(event)
        t = self.tally
        if isinstance(event, Started):
            self.console.print(_started_text(event))
            self.task = self.progress.add_task(
                "backfill",
                total=t.rows_estimated,
                completed=t.rows_done,
                counts="",
                rate="",
                note="",
            )
        if self.task is None:
            return
        note = ""
        if t.throttled:
            note = f"waiting: {t.throttled}"
        elif isinstance(event, Retrying):
            note = f"retry {event.attempt}: {event.error}"
        rate = t.rate
        self.progress.update(
            self.task,
            completed=t.rows_done,
            total=t.rows_estimated,
            counts=f"{format_count(t.rows_done)} rows",
            rate=f"{format_count(rate)} rows/s" if rate is not None else "",
            note=note,
        )

    def finish(self, result: BackfillResult) -> None:
        if self.task is not None and not result.stopped:
            # Done is done, whatever the estimate said: show a full bar.
            self.progress.update(self.task, total=result.rows_total, completed=result.rows_total)

    def close(self) -> None:
        if self.progress.live.is_started:
            self.progress.stop()


# ---------------------------------------------------------------------------------------------
# metrics


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
        names = list(labels)
        self.rows = Counter(
            "dbmigrate_backfill_rows",
            "Rows changed by this backfill worker.",
            names,
            registry=self.registry,
        ).labels(**labels)
        self.batches = Counter(
            "dbmigrate_backfill_batches",
            "Batches committed by this backfill worker.",
            names,
            registry=self.registry,
        ).labels(**labels)
        self.retries = Counter(
            "dbmigrate_backfill_retries",
            "Batches retried after a lock timeout, statement timeout or deadlock.",
            names,
            registry=self.registry,
        ).labels(**labels)
        self.duration = Histogram(
            "dbmigrate_backfill_batch_duration_seconds",
            "Duration of one batch (boundary query, UPDATE, checkpoint, commit).",
            names,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        ).labels(**labels)
        self.batch_size = Gauge(
            "dbmigrate_backfill_batch_size",
            "Size (keys) of the next batch.",
            names,
            registry=self.registry,
        ).labels(**labels)
        self.throttled = Gauge(
            "dbmigrate_backfill_throttled",
            "1 while the worker waits for replication lag or active sessions to come down.",
            names,
            registry=self.registry,
        ).labels(**labels)

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
