"""What `dbmigrate backfill` shows while it runs, and the line it ends with.

Owns the progress display of the backfill worker: a rich progress bar on a terminal, plain
periodic lines otherwise (what Job logs show: the start, every interval, every throttle and
retry, every checkpoint found stale), both fed by the worker's events, and the text of the
final line (done, stopped, or already finished). The numbers and their wording come from
`dbmigrate.core.batching`.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from dbmigrate.core.batching import format_count, progress_text, rows_per_second, summary_text
from dbmigrate.db.backfill import (
    BackfillEvent,
    BackfillResult,
    BatchDone,
    Blocked,
    CheckpointReset,
    Retrying,
    Started,
    Throttled,
)


def open_display(progress_interval: float) -> Display:
    """A progress bar on a terminal; lines every `progress_interval` seconds otherwise."""
    if sys.stdout.isatty():
        return RichDisplay()
    return PlainDisplay(sys.stdout, progress_interval)


def result_text(result: BackfillResult, stopped_by: str | None) -> str:
    """The final line: nothing to do, stopped (by a signal's name) and how to resume, or done."""
    if result.already_finished:
        return (
            f"checkpoint {result.checkpoint!r} is already finished "
            f"({format_count(result.rows_total)} rows); nothing to do"
        )
    if result.stopped:
        return (
            f"stopped by {stopped_by or 'request'} after "
            f"{format_count(result.rows)} rows in {result.batches} batches; "
            "run the same command again to resume from the checkpoint"
        )
    return summary_text(
        result.rows, result.seconds, result.batches, resumed_from=result.resumed_from
    )


class Display:
    """Shows a run: every event of the worker, then `finish`; `close` ends the display."""

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def event(self, event: BackfillEvent) -> None:
        raise NotImplementedError

    def finish(self, result: BackfillResult) -> None:
        """The run ended (done or stopped): the summary line follows."""

    def close(self) -> None:
        pass


class Tally:
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


def started_text(event: Started) -> str:
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


def reset_text(event: CheckpointReset) -> str:
    return f"starting over: {event.reason}; forgot the checkpoint and planned the backfill again"


class PlainDisplay(Display):
    """Lines for logs: the start, every `interval` seconds, and every throttle or retry."""

    def __init__(self, out: TextIO, interval: float) -> None:
        self.out = out
        self.interval = interval
        self.tally = Tally()
        self.next_line = time.monotonic() + interval

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def event(self, event: BackfillEvent) -> None:
        self.tally.update(event)
        if isinstance(event, Started):
            self._print(started_text(event))
        elif isinstance(event, Throttled):
            self._print(f"waiting: {event.reason}")
        elif isinstance(event, CheckpointReset):
            self._print(reset_text(event))
        elif isinstance(event, Blocked):
            self._print(f"blocking the application: {event.message}")
        elif isinstance(event, Retrying):
            self._print(
                f"retry {event.attempt} in {event.delay:.1f}s after {event.error} "
                f"(batch size now {format_count(event.batch_size)})"
            )
        elif isinstance(event, BatchDone) and time.monotonic() >= self.next_line:
            self._print(self.tally.line())
            self.next_line = time.monotonic() + self.interval


class RichDisplay(Display):
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
        self.tally = Tally()
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
        if isinstance(event, CheckpointReset):
            self.console.print(reset_text(event))
        if isinstance(event, Started):
            self.console.print(started_text(event))
            if self.task is not None:  # started again on a new connection
                self.progress.remove_task(self.task)
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
        elif isinstance(event, Blocked):
            note = f"blocking the application: {event.message}"
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
