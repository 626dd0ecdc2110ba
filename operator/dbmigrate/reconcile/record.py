"""Write a migration's record when it ends: the `dbmigrate.runs` row and the report ConfigMap.

Called by `effects._finish` and `effects._stop_for_person` before the final status is saved, so
a runner that dies in between writes the same record again (the row is upserted on
(migration_id, uid, outcome); the ConfigMap is created or replaced). The post-deployment watch
calls `write_record` again when it ends, to replace the Succeeded report with one that includes
its findings. A record that cannot be written never costs the outcome: it is logged and posted
as a `ReportFailed` Warning event, and the status is saved all the same.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from dbmigrate.api import reasons
from dbmigrate.core.record import Outcome, gather_facts, render_record, run_steps
from dbmigrate.core.record.facts import parse_time
from dbmigrate.db.errors import first_line, redact_dsn
from dbmigrate.db.runs import RunRecord
from dbmigrate.reconcile.passes import Pass

log = logging.getLogger(__name__)


async def write_record(
    p: Pass, outcome: Outcome, *, reason: str | None = None, message: str | None = None
) -> str:
    """Render the record from `p.status` (its final phase and times already set) and write it
    to `dbmigrate.runs` and the platform's report (a ConfigMap); returns the Markdown.

    `reason` and `message` are the final condition's (default: the Ready condition's)."""
    platform = p.report.platform
    try:
        name, uid = platform.run_name(p.body)
        facts = gather_facts(
            p.spec, p.status, resource=name, outcome=outcome, reason=reason, message=message
        )
        # Step messages and the rollback's reason were redacted when they were saved; the
        # report is redacted once more as a whole, since it leaves the cluster for the database.
        markdown = redact_dsn(render_record(facts), p.report.dsn)
    except Exception as exc:  # a bug here must not keep the outcome from being saved
        await _failed(p, f"could not render the record: {_why(exc)}")
        return ""
    run = RunRecord(
        migration_id=p.spec.migration_id,
        name=name,
        uid=uid,
        outcome=outcome,
        started_at=parse_time(p.status.started_at),
        finished_at=parse_time(p.status.finished_at) or datetime.now(UTC),
        steps=run_steps(facts, {step: sql.up for step, sql in p.sql.items()}),
        report=markdown,
    )
    if facts.nothing_ran:
        # Every step was applied by an earlier run, whose row is the record: not replaced by
        # one of a run that did nothing.
        log.info("%s: nothing ran; dbmigrate.runs keeps the earlier record", name)
    else:
        try:
            await p.database.write_run(run)
        except Exception as exc:  # the outcome matters more than its record: say so, go on
            await _failed(p, f"could not write the record to dbmigrate.runs: {_why(exc)}")
    try:
        where = await platform.save_report(p.body, markdown)
    except Exception as exc:
        await _failed(p, f"could not write the report: {_why(exc)}")
    else:
        log.info("%s/%s: %s report in %s", platform.namespace, platform.name, outcome, where)
    return markdown


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"


async def _failed(p: Pass, message: str) -> None:
    message = redact_dsn(message, p.report.dsn)
    log.warning("%s/%s: %s", p.report.platform.namespace, p.report.platform.name, message)
    await p.report.event("Warning", reasons.REPORT_FAILED, message)
