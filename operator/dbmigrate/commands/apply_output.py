"""What `dbmigrate apply` shows while it runs: events, backfill progress, the settle countdown,
the checklist that holds it, and the summary.

Two forms, chosen by whether its output (stderr) is a terminal. On a terminal: colours,
aligned columns, a countdown updated in place while the analysis settles, and a table at the
end. Anywhere else (a pipe, a CI log, a file): plain lines that are never wrapped, padded,
coloured or rewritten with carriage returns, one fact per line, so that `grep` and a CI log
viewer see whole lines; the countdown is a line every SETTLE_LINE_INTERVAL seconds.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from dbmigrate.api import reasons
from dbmigrate.core.batching import format_count
from dbmigrate.db.backfill import BackfillEvent, BatchDone, Started, Throttled

# Before the start, these wait for an edited spec: apply stops with FAILED instead.
NEEDS_A_NEW_SPEC = frozenset({reasons.LINT_FAILED, reasons.INVALID_SPEC})
# Off a terminal the countdown is a line this often (a CI log must show the command is alive
# without a line a second).
SETTLE_LINE_INTERVAL = 30.0


def open_console() -> Console:
    """stderr, as rich renders it on a terminal; elsewhere no colour and no wrapping."""
    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=True, highlight=False, soft_wrap=True, no_color=True)
    return console


def left_text(seconds: float) -> str:
    """`4m 10s`, `45s`: what is left of a wait, rounded up (never `0s` while it lasts)."""
    whole = max(0, math.ceil(seconds))
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _finished_at(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class Reporter:
    """Live progress: events as they happen, backfill progress, the countdown, a summary."""

    def __init__(self, console: Console, settle_seconds: float | None = None) -> None:
        self.console = console
        self.live = console.is_terminal
        self.settle_seconds = settle_seconds
        self.started = time.monotonic()
        self._last_backfill: dict[str, float] = {}
        self._last_reason: str | None = None
        self._settle_until: float | None = None
        self._next_settle_line = 0.0
        self._countdown: Status | None = None
        # Set when the migration is stuck on something only a new spec can change: the
        # operator would wait for that edit; a command line has nobody to wait for.
        self.stop = asyncio.Event()

    # --- lines ---------------------------------------------------------------------------------

    def line(self, colour: str, label: str, message: str) -> None:
        """`  12.3s Label                  message` on a terminal; `12.3s Label message` else."""
        elapsed = time.monotonic() - self.started
        if self.live:
            self.console.print(
                f"[dim]{elapsed:7.1f}s[/] [{colour}]{label:<22}[/] {escape(message)}"
            )
        else:
            self.console.print(f"{elapsed:.1f}s {label} {message}", markup=False)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.line("yellow" if type_ == "Warning" else "cyan", reason, message)

    # --- status --------------------------------------------------------------------------------

    def status(self, status: dict[str, Any]) -> None:
        self._checklist(status)
        self._settling(status)
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Stalled" and cond.get("status") == "True":
                reason = cond.get("reason")
                if reason != self._last_reason:
                    self._last_reason = reason
                    self.line("red", str(reason), str(cond.get("message", "")))
                if (
                    reason in NEEDS_A_NEW_SPEC
                    and not status.get("startedAt")
                    and not self.stop.is_set()
                ):
                    for finding in status.get("lint") or []:
                        if finding.get("severity") == "error" and not finding.get("suppressed"):
                            self.line(
                                "red", str(finding.get("rule", "")), str(finding.get("message", ""))
                            )
                    self.stop.set()

    def _checklist(self, status: dict[str, Any]) -> None:
        """A required checklist item that does not hold stops the command: on a cluster the
        operator waits for it (an approval, Prometheus), here nobody would provide it."""
        checklist = status.get("checklist") or {}
        if status.get("startedAt") or not checklist.get("missing") or self.stop.is_set():
            return
        waiting = any(
            c.get("type") == "Ready" and c.get("reason") == reasons.CHECKLIST_INCOMPLETE
            for c in status.get("conditions") or []
        )
        if not waiting:
            return
        for text in checklist.get("checkboxes") or []:
            self.line("yellow", "Checklist", text)
        hint = " (pass --approved-by NAME)" if "Approval" in checklist["missing"] else ""
        self.line(
            "red",
            reasons.CHECKLIST_INCOMPLETE,
            f"required item(s) missing: {', '.join(checklist['missing'])}{hint}; "
            "nothing was applied",
        )
        self.stop.set()

    # --- the settle countdown ------------------------------------------------------------------

    def _settling(self, status: dict[str, Any]) -> None:
        """Starts the countdown when the steps are done and the analysis settles; ends it when
        the migration moved on (Succeeded, or a rollback)."""
        settling = any(c.get("reason") == reasons.SETTLING for c in status.get("conditions") or [])
        if not settling:
            self.end_countdown()
            return
        if self._settle_until is not None or not self.settle_seconds:
            return
        finished = [_finished_at(s.get("finishedAt")) for s in status.get("steps") or []]
        last = max((t for t in finished if t is not None), default=None)
        since = (datetime.now(UTC) - last).total_seconds() if last is not None else 0.0
        left = max(0.0, self.settle_seconds - since)
        self._settle_until = time.monotonic() + left
        # (The runner's Settling event has said what the wait is; this only counts it down.)
        if self.live:
            self._countdown = self.console.status(self._countdown_text(left))
            self._countdown.start()
        else:
            self._next_settle_line = time.monotonic()
        self.tick()

    def _countdown_text(self, left: float) -> str:
        return f"analysis settling: {left_text(left)} left"

    def tick(self) -> None:
        """Called every second: the countdown in place, or a line every ~30 s off a terminal."""
        if self._settle_until is None:
            return
        left = self._settle_until - time.monotonic()
        if left <= 0:
            return
        if self._countdown is not None:
            self._countdown.update(self._countdown_text(left))
        elif not self.live and time.monotonic() >= self._next_settle_line:
            self.console.print(self._countdown_text(left), markup=False)
            self._next_settle_line += SETTLE_LINE_INTERVAL

    async def ticking(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.tick()

    def end_countdown(self) -> None:
        if self._countdown is not None:
            self._countdown.stop()
            self._countdown = None
        self._settle_until = None

    # --- backfill ------------------------------------------------------------------------------

    def backfill(self, step: str, event: BackfillEvent) -> None:
        now = time.monotonic()
        if isinstance(event, Started):
            total = f" of ~{format_count(event.rows_estimated)}" if event.rows_estimated else ""
            self.line(
                "cyan",
                "Backfill",
                f"{step}: worker {event.worker + 1}/{event.workers} on {event.table}"
                f"{' (resumed)' if event.resumed else ''}: "
                f"{format_count(event.rows_done_before)}{total} rows done",
            )
        elif isinstance(event, Throttled):
            self.line("yellow", "Throttled", f"{step}: {event.reason}")
        elif isinstance(event, BatchDone) and now - self._last_backfill.get(step, 0) >= 1.0:
            self._last_backfill[step] = now
            rate = event.rows / event.seconds if event.seconds > 0 else 0
            self.line(
                "cyan",
                "Backfill",
                f"{step}: {format_count(event.rows_done)} rows, batch "
                f"{format_count(event.batch_size)} in {event.seconds * 1000:.0f} ms "
                f"({format_count(rate)} rows/s)",
            )

    # --- the end -------------------------------------------------------------------------------

    def summary(self, status: dict[str, Any]) -> None:
        self.end_countdown()
        title = f"{status.get('phase', '?')} in {time.monotonic() - self.started:.1f}s"
        rows = [_summary_row(st) for st in status.get("steps") or []]
        if self.live:
            table = Table(title=title)
            for column in ("step", "state", "attempts", "lock retries", "detail"):
                table.add_column(column)
            for name, state, attempts, retries, detail in rows:
                colour = {"Succeeded": "green", "Failed": "red", "RolledBack": "yellow"}.get(
                    state, "white"
                )
                table.add_row(name, f"[{colour}]{state}[/]", attempts, retries, escape(detail))
            self.console.print(table)
        else:
            self.console.print(title, markup=False)
            for name, state, attempts, retries, detail in rows:
                self.console.print(
                    f"step {name}: {state}, attempts {attempts}, lock retries {retries}"
                    + (f": {detail}" if detail else ""),
                    markup=False,
                )
        rollback = status.get("rollback") or {}
        if rollback.get("reason"):
            self.console.print(
                f"rollback: {rollback['reason']}; reverted "
                f"{', '.join(rollback.get('stepsReverted') or []) or 'nothing'}",
                markup=False,
            )
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") != "True":
                if self.live:
                    self.console.print(
                        f"[red]{cond.get('reason')}:[/] {escape(str(cond.get('message')))}"
                    )
                else:
                    self.console.print(f"{cond.get('reason')}: {cond.get('message')}", markup=False)
        sys.stderr.flush()


def _summary_row(st: dict[str, Any]) -> tuple[str, str, str, str, str]:
    detail = st.get("message") or ""
    if st.get("backfill"):
        rows = format_count(st["backfill"].get("rowsDone", 0))
        detail = f"{rows} rows" + (f"; {detail}" if detail else "")
    return (
        str(st["name"]),
        str(st.get("state")),
        str(st.get("attempts", 0)),
        str(st.get("lockRetries", 0)),
        str(detail),
    )
