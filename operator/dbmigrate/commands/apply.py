"""`dbmigrate apply -f migration.yaml --dsn DSN`: run a DatabaseMigration without Kubernetes.

The same engine as the operator (`reconcile.runner` with the local platform): lock-safe SQL,
history table and checksums, verify, backfills (in-process workers), SLO analysis and SQL
rollback. The record of the run (the migration log entry or the post-mortem draft) goes to
`dbmigrate.runs`, and with `--report FILE` to a file. `awaitRollout` steps are skipped with a
notice; `job` steps need a cluster.

A spec with PromQL metrics is analysed against Prometheus: its address in the spec, or
`--prometheus URL`. It is probed once before anything runs; if it does not answer, the command
says so and stops (exit 2, nothing applied) rather than apply with an analysis that can only be
Inconclusive: rerun with `--prometheus URL` (a port-forward) or `--no-analysis` (no SLO
measurement, no settle wait, no rollback on a breach). While the analysis settles after the last
step, a countdown shows what is left. On a terminal the output has colours, aligned columns and a
table; written to a pipe or a file it is plain lines, never wrapped, padded or coloured.

Exit codes (for CI pipelines): 0 applied (or already applied); 1 the migration failed or was
rolled back, or lint blocked it; 2 usage errors (file, DSN, unsupported steps); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from dbmigrate.api.durations import parse_duration
from dbmigrate.api.schema import APPROVAL_ANNOTATION
from dbmigrate.commands.apply_output import Reporter, open_console
from dbmigrate.core.lint.documents import ManifestError, parse_manifests
from dbmigrate.core.record.facts import FOUND_IN_HISTORY
from dbmigrate.db.errors import MalformedDsn, check_dsn
from dbmigrate.prom.client import PROBE_TIMEOUT, probe
from dbmigrate.reconcile.local import LocalPlatform
from dbmigrate.reconcile.runner import MigrationRunner
from dbmigrate.settings import Settings

SUCCESS, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130


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
    analysis = p.add_mutually_exclusive_group()
    analysis.add_argument(
        "--prometheus",
        metavar="URL",
        help="Prometheus to run the migration's analysis against (overrides "
        "spec.analysis.prometheus.address; e.g. a kubectl port-forward)",
    )
    analysis.add_argument(
        "--no-analysis",
        action="store_true",
        help="run without spec.analysis: no SLO measurement, no settle wait, no rollback on "
        "an SLO breach (and no Monitoring checklist item)",
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
    console = open_console()
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
    elif args.prometheus:
        console.print("analysis: none in the spec (--prometheus is not used)")
    if args.no_analysis:
        _without_analysis(console, doc)
    elif (why := _prometheus_unreachable(doc)) is not None:
        console.print(f"[red]error:[/] {escape(why)}")
        return USAGE
    analysis = doc["spec"].get("analysis")
    report = Reporter(console, parse_duration(analysis["settle"]) if analysis else None)
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
        asyncio.run(_run(runner, report))
    except KeyboardInterrupt:
        report.end_countdown()
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


async def _run(runner: MigrationRunner, report: Reporter) -> None:
    ticking = asyncio.create_task(report.ticking())
    try:
        await runner.run(report.stop)
    finally:
        ticking.cancel()


def _without_analysis(console: Console, doc: dict[str, Any]) -> None:
    """`--no-analysis`: the spec without its analysis (and the checklist item needing it)."""
    spec = doc["spec"]
    if spec.pop("analysis", None) is None:
        console.print("analysis: none in the spec (--no-analysis changes nothing)")
        return
    require = (spec.get("checklist") or {}).get("require") or []
    dropped = ""
    if "Monitoring" in require:
        require.remove("Monitoring")
        dropped = "; the checklist's Monitoring item is dropped with it"
    console.print(
        "analysis: off (--no-analysis): the steps run without SLO measurements, nothing rolls "
        f"them back on an SLO breach and nothing settles after the last step{dropped}"
    )


def _prometheus_unreachable(doc: dict[str, Any]) -> str | None:
    """Why the analysis cannot run here, before anything is applied; None when it can.

    One probe with a short timeout: an analysis whose Prometheus does not answer can only be
    Inconclusive (and pause the migration, or settle for minutes measuring nothing), and the
    address in a spec written for a cluster (`http://prometheus.monitoring.svc:9090`) is
    rarely reachable from a laptop or a CI runner. Stopping here loses nothing; the person
    chooses between a reachable Prometheus and no analysis.
    """
    analysis = doc["spec"].get("analysis")
    if not analysis or not any(m.get("query") for m in analysis.get("metrics") or []):
        return None  # no PromQL metric (sql: metrics are measured in the database)
    why = asyncio.run(probe(str((analysis.get("prometheus") or {}).get("address", ""))))
    if why is None:
        return None
    return (
        f"the spec's analysis cannot run from here: {why} (one probe, {PROBE_TIMEOUT:g}s). "
        "Pass --prometheus URL for a Prometheus that answers "
        "(e.g. kubectl port-forward -n monitoring svc/prometheus 9090, then --prometheus "
        "http://localhost:9090), or --no-analysis to apply without the SLO analysis. "
        "Nothing was applied."
    )


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
