"""`dbmigrate apply -f migration.yaml --dsn DSN`: run a DatabaseMigration without Kubernetes.

The same engine as the operator (`reconcile.runner` with the local platform): lock-safe SQL,
history table and checksums, verify, backfills (in-process workers), SLO analysis and SQL
rollback. The record of the run (the migration log entry or the post-mortem draft) goes to
`dbmigrate.runs`, and with `--report FILE` to a file. `awaitRollout` steps are skipped with a
notice; `job` steps need a cluster.

Exit codes (for CI pipelines): 0 applied (or already applied); 1 the migration failed or was
rolled back, or lint blocked it; 2 usage errors (file, DSN, unsupported steps); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dbmigrate.api import reasons
from dbmigrate.api.schema import APPROVAL_ANNOTATION
from dbmigrate.core.batching import format_count
from dbmigrate.core.lint.documents import ManifestError, parse_manifests
from dbmigrate.core.record.facts import FOUND_IN_HISTORY
from dbmigrate.db.backfill import BackfillEvent, BatchDone, Started, Throttled
from dbmigrate.db.errors import MalformedDsn, check_dsn
from dbmigrate.reconcile.local import LocalPlatform
from dbmigrate.reconcile.runner import MigrationRunner
from dbmigrate.settings import Settings

SUCCESS, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130
# Before the start, these wait for an edited spec: apply stops with FAILED instead.
NEEDS_A_NEW_SPEC = frozenset({reasons.LINT_FAILED, reasons.INVALID_SPEC})


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "apply",
        help="run a DatabaseMigration straight against a database (no Kubernetes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-f",
        "--filename",
        required=True,
        type=Path,
        help="YAML with one DatabaseMigration (and any ConfigMaps its SQL comes from)",
    )
    p.add_argument("--dsn", help="libpq DSN; default: the DBMIGRATE_DSN environment variable")
    p.add_argument(
        "--prometheus",
        metavar="URL",
        help="Prometheus to run the migration's analysis against (overrides "
        "spec.analysis.prometheus.address)",
    )
    p.add_argument("--name", help="which DatabaseMigration, when the file has several")
    p.add_argument(
        "--approved-by",
        metavar="NAME",
        help="approve the migration (the checklist's Approval item; on a cluster, the "
        f"{APPROVAL_ANNOTATION} annotation)",
    )
    p.add_argument(
        "--interactive",
        action="store_true",
        help="at awaitRollout steps, wait for Enter (after deploying the new version by hand) "
        "instead of skipping them",
    )
    p.add_argument(
        "--report",
        metavar="FILE",
        type=Path,
        help="write the migration's record (the migration log entry, or the post-mortem draft "
        "after a rollback) to FILE as Markdown; it is in dbmigrate.runs either way",
    )
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    console = Console(stderr=True, highlight=False)
    dsn = args.dsn or os.environ.get("DBMIGRATE_DSN")
    if not dsn:
        console.print("[red]error:[/] no database: pass --dsn or set DBMIGRATE_DSN")
        return USAGE
    try:
        check_dsn(dsn, "--dsn" if args.dsn else "DBMIGRATE_DSN")
    except MalformedDsn as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return USAGE
    try:
        migrations, config_maps = parse_manifests(args.filename.read_text())
    except OSError as exc:
        console.print(f"[red]error:[/] {args.filename}: {exc.strerror}")
        return USAGE
    except ManifestError as exc:
        console.print(f"[red]error:[/] {args.filename}: {exc}")
        return USAGE
    if args.name:
        migrations = [m for m in migrations if m.name == args.name]
    if len(migrations) != 1:
        which = "no DatabaseMigration" if not migrations else f"{len(migrations)} migrations"
        console.print(
            f"[red]error:[/] {args.filename} has {which}; pass --name to choose one"
            if migrations
            else f"[red]error:[/] {args.filename} has {which}"
        )
        return USAGE
    resource = migrations[0].resource
    jobs = [s.name for s in resource.spec.steps if s.kind == "job"]
    if jobs:
        console.print(
            f"[red]error:[/] step(s) {', '.join(jobs)} run container images: job steps "
            "need Kubernetes (apply this migration with the operator)"
        )
        return USAGE
    doc = resource.to_k8s()
    doc.pop("status", None)
    if args.approved_by:
        doc["metadata"].setdefault("annotations", {})[APPROVAL_ANNOTATION] = args.approved_by
    if args.prometheus and resource.spec.analysis is not None:
        doc["spec"]["analysis"]["prometheus"] = {"address": args.prometheus}
    report = Reporter(console)
    platform = LocalPlatform(
        doc,
        dsn,
        {cm.name: cm.data for cm in config_maps},
        on_status=report.status,
        on_event=report.event,
        on_backfill=report.backfill,
        confirm=_ask_for_rollout if args.interactive else None,
    )
    runner = MigrationRunner(platform, Settings(poll_interval=0.5))
    console.print(
        f"[bold]dbmigrate apply[/] {resource.spec.migration_id} ({len(resource.spec.steps)} steps)"
    )
    try:
        asyncio.run(runner.run(report.stop))
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted:[/] the running step's transaction is rolled back; "
            "run the same command again to continue"
        )
        return INTERRUPTED
    finally:
        platform.close()
    final = platform.resource.get("status") or {}
    report.summary(final)
    _tell_where_the_record_is(console, resource.spec.migration_id, final, platform, args.report)
    phase = final.get("phase")
    return SUCCESS if phase == "Succeeded" else FAILED


def _tell_where_the_record_is(
    console: Console,
    migration_id: str,
    status: dict[str, Any],
    platform: LocalPlatform,
    path: Path | None,
) -> None:
    """Where the record the run wrote is: `dbmigrate.runs`, and `--report FILE`."""
    if platform.report is None:
        return  # the migration did not end (held before its start, interrupted)
    steps = status.get("steps") or []
    if steps and all(str(s.get("message")).startswith(FOUND_IN_HISTORY) for s in steps):
        console.print(
            "record: nothing ran; dbmigrate.runs keeps the record of the run that applied it "
            f"(dbmigrate report --migration-id {migration_id})"
        )
    else:
        console.print(
            f"record: {status.get('phase')} row of {migration_id} in dbmigrate.runs "
            f"(dbmigrate report --migration-id {migration_id})"
        )
    if path is not None:
        try:
            path.write_text(platform.report, encoding="utf-8")
        except OSError as exc:
            console.print(f"[red]error:[/] could not write {path}: {exc.strerror}")
            return
        console.print(f"report: {path}")


def _ask_for_rollout(step: str, image: str | None) -> None:
    what = f"the new version ({image})" if image else "the new version"
    input(f"step {step!r}: deploy {what}, then press Enter to continue ")


class Reporter:
    """Live progress on the terminal: events as they happen, backfill progress, a summary."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()
        self._last_backfill: dict[str, float] = {}
        self._last_reason: str | None = None
        # Set when the migration is stuck on something only a new spec can change: the
        # operator would wait for that edit; a command line has nobody to wait for.
        self.stop = asyncio.Event()

    def _stamp(self) -> str:
        return f"[dim]{time.monotonic() - self.started:7.1f}s[/]"

    def event(self, type_: str, reason: str, message: str) -> None:
        colour = "yellow" if type_ == "Warning" else "cyan"
        self.console.print(f"{self._stamp()} [{colour}]{reason:<22}[/] {message}")

    def status(self, status: dict[str, Any]) -> None:
        self._checklist(status)
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Stalled" and cond.get("status") == "True":
                reason = cond.get("reason")
                if reason != self._last_reason:
                    self._last_reason = reason
                    self.console.print(
                        f"{self._stamp()} [red]{reason:<22}[/] {cond.get('message', '')}"
                    )
                if (
                    reason in NEEDS_A_NEW_SPEC
                    and not status.get("startedAt")
                    and not self.stop.is_set()
                ):
                    for finding in status.get("lint") or []:
                        if finding.get("severity") == "error" and not finding.get("suppressed"):
                            self.console.print(
                                f"{self._stamp()} [red]{finding.get('rule', ''):<22}[/] "
                                f"{finding.get('message', '')}"
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
        for line in checklist.get("checkboxes") or []:
            self.console.print(f"{self._stamp()} [yellow]{'Checklist':<22}[/] {escape(line)}")
        hint = " (pass --approved-by NAME)" if "Approval" in checklist["missing"] else ""
        self.console.print(
            f"{self._stamp()} [red]{reasons.CHECKLIST_INCOMPLETE:<22}[/] required item(s) "
            f"missing: {', '.join(checklist['missing'])}{hint}; nothing was applied"
        )
        self.stop.set()

    def backfill(self, step: str, event: BackfillEvent) -> None:
        now = time.monotonic()
        if isinstance(event, Started):
            total = f" of ~{format_count(event.rows_estimated)}" if event.rows_estimated else ""
            self.console.print(
                f"{self._stamp()} [cyan]{'Backfill':<22}[/] {step}: worker "
                f"{event.worker + 1}/{event.workers} on {event.table}"
                f"{' (resumed)' if event.resumed else ''}: "
                f"{format_count(event.rows_done_before)}{total} rows done"
            )
        elif isinstance(event, Throttled):
            self.console.print(
                f"{self._stamp()} [yellow]{'Throttled':<22}[/] {step}: {event.reason}"
            )
        elif isinstance(event, BatchDone) and now - self._last_backfill.get(step, 0) >= 1.0:
            self._last_backfill[step] = now
            rate = event.rows / event.seconds if event.seconds > 0 else 0
            self.console.print(
                f"{self._stamp()} [cyan]{'Backfill':<22}[/] {step}: "
                f"{format_count(event.rows_done)} rows, batch {format_count(event.batch_size)} in "
                f"{event.seconds * 1000:.0f} ms ({format_count(rate)} rows/s)"
            )

    def summary(self, status: dict[str, Any]) -> None:
        table = Table(title=f"{status.get('phase', '?')} in {time.monotonic() - self.started:.1f}s")
        for column in ("step", "state", "attempts", "lock retries", "detail"):
            table.add_column(column)
        for st in status.get("steps") or []:
            detail = st.get("message") or ""
            if st.get("backfill"):
                bf = st["backfill"]
                detail = f"{format_count(bf.get('rowsDone', 0))} rows" + (
                    f"; {detail}" if detail else ""
                )
            colour = {"Succeeded": "green", "Failed": "red", "RolledBack": "yellow"}.get(
                st.get("state", ""), "white"
            )
            table.add_row(
                st["name"],
                f"[{colour}]{st.get('state')}[/]",
                str(st.get("attempts", 0)),
                str(st.get("lockRetries", 0)),
                detail,
            )
        self.console.print(table)
        rollback = status.get("rollback") or {}
        if rollback.get("reason"):
            self.console.print(
                f"rollback: {rollback['reason']}; reverted "
                f"{', '.join(rollback.get('stepsReverted') or []) or 'nothing'}"
            )
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") != "True":
                self.console.print(f"[red]{cond.get('reason')}:[/] {cond.get('message')}")
        sys.stderr.flush()
