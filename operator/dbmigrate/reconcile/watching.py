"""The post-deployment watch and its cleanup as the runner carries them out (`spec.postDeploy`):
the snapshot before the first step, the samples while the migration is Succeeded and watched,
their findings in status, events and metrics, and the cleanup steps when the watch is over.

What a sample means is `core.watch`'s; what the database says is `db.watch`'s. The snapshot is
taken in the database before the first step (so a restarted operator compares with the same
one); the watch's window and findings are in status.postDeploy, the cleanup steps' truth in
`dbmigrate.history`, as any step's.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import psycopg

from dbmigrate import failpoints
from dbmigrate.api import reasons
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus
from dbmigrate.api.postdeploy import CleanupStepStatus, PostDeployStatus
from dbmigrate.core import decide as d
from dbmigrate.core.conditions import set_condition
from dbmigrate.core.lint.findings import Resolved
from dbmigrate.core.plan import watched_relations
from dbmigrate.core.statements import checksum
from dbmigrate.core.steps import limits_of
from dbmigrate.core.watch import (
    WatchObservation,
    seconds_until_sample,
    watch_message,
    watch_pending,
    watch_window,
)
from dbmigrate.db import watch as db_watch
from dbmigrate.db.errors import redact_dsn
from dbmigrate.metrics import registry as metrics
from dbmigrate.reconcile.passes import Pass, now_iso
from dbmigrate.reconcile.record import write_record


def wants_lock_after_success(status: DatabaseMigrationStatus) -> bool | None:
    """A Succeeded migration holds the lock only for its cleanup (None: not in the watch)."""
    if status.phase != "Succeeded" or not watch_pending(status):
        return None
    assert status.post_deploy is not None
    return status.post_deploy.state == "CleaningUp"


async def observe_watch(
    conn: psycopg.AsyncConnection,
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    obs: d.Observation,
    uid: str,
) -> d.Observation:
    """The snapshot and a sample now, when the watch lasts and a sample is due."""
    pd, post = status.post_deploy, spec.post_deploy
    if status.phase != "Succeeded" or pd is None or post is None or pd.state != "Watching":
        return obs
    if pd.finished_at is not None or seconds_until_sample(post, pd, obs.now) > 0:
        return obs
    baseline = await db_watch.read_baseline(conn, spec.migration_id, uid)
    sample = await db_watch.read_sample(conn, baseline.tables if baseline else ())
    return replace(obs, watch=WatchObservation(baseline, sample))


async def take_snapshot(p: Pass) -> str | None:
    """Before the first step: the watched tables' statements and indexes (what the watch
    compares with); says what was taken (None: no watch here)."""
    spec = p.spec
    if spec.post_deploy is None or not p.report.platform.has_rollouts:
        return None
    resolved: Resolved = {name: (r.up, r.down) for name, r in p.sql.items()}
    tables, indexes = await asyncio.to_thread(watched_relations, spec, resolved)
    baseline = await p.database.take_watch_baseline(
        spec.migration_id, p.body["metadata"].get("uid", ""), tables, indexes
    )
    failpoints.hit("watch.snapshot-taken")
    tables = baseline.tables
    what = (
        f"{len(baseline.statements)} statement(s)"
        if baseline.statements_available
        else ("no statements (pg_stat_statements is not installed)")
    )
    return (
        f"snapshot for the post-deployment watch: {what} and {len(baseline.indexes)} "
        f"index(es) of {', '.join(tables) or 'no existing table'}"
    )


def _watching(p: Pass, value: bool, reason: str, message: str) -> None:
    set_condition(
        p.status,
        reasons.WATCHING,
        value,
        reason=reason,
        message=message,
        generation=p.report.generation,
        now=now_iso(),
    )


async def begin_watch(p: Pass) -> float | None:
    """The migration just succeeded: the watch starts (None: there is none to do)."""
    post = p.spec.post_deploy
    if post is None:
        return None
    if not p.report.platform.has_rollouts:
        # `dbmigrate apply` ends here: a day's watch, and the cleanup after it, are the
        # operator's (the spec applied to a cluster).
        now = now_iso()
        skipped = (
            "not watched: dbmigrate apply ends at the last step; the operator runs the "
            "post-deployment watch and the cleanup"
        )
        p.status.post_deploy = PostDeployStatus(
            state="Skipped", started_at=now, finished_at=now, message=skipped
        )
        await p.report.event("Normal", reasons.POST_DEPLOY_SKIPPED, skipped)
        return None
    started, ends = watch_window(post, p.obs.now)
    p.status.post_deploy = pd = PostDeployStatus(
        state="Watching",
        started_at=started,
        ends_at=ends,
        cleanup=[CleanupStepStatus(name=c.name) for c in post.cleanup or []] or None,
    )
    _watching(p, True, reasons.WATCHING, watch_message(pd))
    return 0.0


async def record_watch(p: Pass, action: d.RecordWatch) -> float | None:
    status, post = p.status, p.spec.post_deploy
    pd = status.post_deploy
    assert pd is not None
    assert post is not None
    verdict = action.judgement
    pd.last_sampled_at = now_iso()
    pd.statements = list(verdict.statements) or None
    pd.indexes = list(verdict.indexes) or None
    pd.findings = list(verdict.findings) or None
    sample, baseline = action.seen.sample, action.seen.baseline
    pd.statements_available = sample.statements_unavailable is None
    if baseline is None:
        pd.message = "no snapshot was taken before the first step: nothing to compare with"
    elif sample.statements_unavailable is not None:
        pd.message = f"{sample.statements_unavailable}: only the new indexes are watched"
    else:
        pd.message = None
    for finding in verdict.new_findings:
        metrics.POST_DEPLOY_FINDINGS.labels(finding.kind).inc()
        await p.report.event("Warning", finding.kind, finding.message)
    if not action.final:
        message = watch_message(pd) + (f"; {pd.message}" if pd.message else "")
        reason = reasons.WATCHING if pd.statements_available else reasons.STATEMENTS_UNAVAILABLE
        _watching(p, True, reason, message)
        await p.report.save(status, reasons.WATCHING, message)
        return max(0.5, seconds_until_sample(post, pd, p.obs.now))
    found = len(pd.findings or [])
    summary = f"the {post.watch} watch is over: {found} finding(s)" + (
        "; " + "; ".join(f.message for f in pd.findings or [])[:900] if found else ""
    )
    _watching(p, False, reasons.WATCH_FINISHED, summary)
    await p.report.event("Warning" if found else "Normal", reasons.WATCH_FINISHED, summary)
    if post.cleanup:
        pd.state = "CleaningUp"
        await p.report.save(status, reasons.CLEANING_UP, f"{summary}; cleaning up")
        return 0.0
    return await _finish_post_deploy(p, summary)


async def run_cleanup(p: Pass, action: d.RunCleanup) -> float | None:
    """A cleanup step's SQL, as a step's up SQL: lock timeout and retries, the blocking guard,
    a history row in the same transaction."""
    spec, status = p.spec, p.status
    pd, post = status.post_deploy, spec.post_deploy
    assert pd is not None
    assert post is not None
    step = next(c for c in post.cleanup or [] if c.name == action.step)
    st = _cleanup_status(pd, step.name)
    st.state, st.started_at = "Running", st.started_at or now_iso()
    await p.report.save(status, reasons.CLEANING_UP, f"cleanup step {step.name!r} running")
    await p.report.event("Normal", reasons.STEP_STARTED, f"cleanup step {step.name!r} started")
    result = await p.database.apply_sql(
        migration_id=spec.migration_id,
        step=step.name,
        step_kind="sql",
        direction="up",
        sql=step.sql,
        mode="Auto",
        checksum=checksum(step.sql),
        limits=limits_of(spec),
    )
    if result.ok:
        failpoints.hit("watch.cleanup-applied")
    st.finished_at = now_iso()
    if not result.ok:
        message = redact_dsn(f"cleanup step {step.name!r} failed: {result.message}", p.report.dsn)
        st.state, st.message = "Failed", message
        pd.state, pd.finished_at = "Failed", st.finished_at
        status.phase = "Failed"
        _watching(p, False, reasons.CLEANUP_FAILED, message)
        await write_record(p, "Failed", reason=reasons.CLEANUP_FAILED, message=message)
        await p.report.save(status, reasons.CLEANUP_FAILED, message, stalled=True)
        await p.report.event("Warning", reasons.CLEANUP_FAILED, message)
        await p.database.release_lock()
        return 60.0
    st.state, st.message = "Succeeded", f"applied in {result.duration_ms} ms"
    await p.report.save(status, reasons.CLEANING_UP, f"cleanup step {step.name!r} succeeded")
    await p.report.event(
        "Normal", reasons.STEP_SUCCEEDED, f"cleanup step {step.name!r} succeeded: {st.message}"
    )
    return 0.0


async def record_cleanup(p: Pass, action: d.RecordCleanup) -> float:
    pd = p.status.post_deploy
    assert pd is not None
    st = _cleanup_status(pd, action.step)
    st.state, st.message = "Succeeded", "found in history"
    st.finished_at = st.finished_at or now_iso()
    await p.report.save(p.status, reasons.CLEANING_UP, f"cleanup step {action.step!r} done")
    return 0.0


async def finish_post_deploy(p: Pass, action: d.FinishPostDeploy) -> float | None:
    return await _finish_post_deploy(p, action.message)


async def _finish_post_deploy(p: Pass, message: str) -> float | None:
    pd = p.status.post_deploy
    assert pd is not None
    pd.state, pd.finished_at = "Finished", now_iso()
    _watching(p, False, reasons.WATCH_FINISHED, message)
    # The report written when the migration succeeded, now with the watch's findings.
    await write_record(p, "Succeeded", reason=reasons.SUCCEEDED, message=message)
    await p.report.save(p.status, reasons.SUCCEEDED, message)
    await p.database.release_lock()
    return None


def end_watch_for_rollback(status: DatabaseMigrationStatus, generation: int) -> None:
    """A rollback during the watch (a regression, or asked for) ends it."""
    pd = status.post_deploy
    if pd is None or pd.finished_at is not None:
        return
    pd.state, pd.finished_at = "RolledBack", now_iso()
    set_condition(
        status,
        reasons.WATCHING,
        False,
        reason=reasons.ROLLING_BACK,
        message="the watch ended: the migration is rolled back",
        generation=generation,
        now=pd.finished_at,
    )


def _cleanup_status(pd: PostDeployStatus, name: str) -> CleanupStepStatus:
    for st in pd.cleanup or []:
        if st.name == name:
            return st
    st = CleanupStepStatus(name=name)
    pd.cleanup = [*(pd.cleanup or []), st]
    return st


# Which function carries out which watch Action.
WATCH_EFFECTS: dict[type, Any] = {
    d.RecordWatch: record_watch,
    d.RunCleanup: run_cleanup,
    d.RecordCleanup: record_cleanup,
    d.FinishPostDeploy: finish_post_deploy,
}
