"""What the runner does for each Action of `core.decide`: one function per Action.

`carry_out(p, action)` dispatches; each function changes the world (the database through the
runner's session, the cluster through the `Platform`), writes the status that says so and
posts the events, then returns how long to wait before the next pass (None: the migration is
over). "What happens on an SLO breach" is `start_rollback`, then `stop_jobs` (the migration's
running Jobs), `undo_rollout` and `revert_step`, then `finish_rollback`, or
`await_manual_rollback` under a Manual policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from dbmigrate import failpoints
from dbmigrate.api import reasons
from dbmigrate.api.models import (
    DatabaseMigrationStatus,
    RollbackStatus,
    Step,
)
from dbmigrate.core import decide as d
from dbmigrate.core import slo
from dbmigrate.core.argocd import POLL_SECONDS, paused_pending
from dbmigrate.core.conditions import set_condition
from dbmigrate.core.jobs import backfill_checkpoint_name, build_backfill_job, build_tool_job
from dbmigrate.core.lint import count_blocking
from dbmigrate.core.record import Outcome
from dbmigrate.core.statements import checksum
from dbmigrate.core.steps import limits_of, step_checksum
from dbmigrate.db.errors import redact_dsn
from dbmigrate.metrics import registry as metrics
from dbmigrate.reconcile.backups import BACKUP_EFFECTS
from dbmigrate.reconcile.passes import (
    Pass,
    now_iso,
    seconds_since,
)
from dbmigrate.reconcile.platform import Invalid
from dbmigrate.reconcile.record import write_record
from dbmigrate.reconcile.rehearsing import rehearse_migration
from dbmigrate.reconcile.watching import (
    WATCH_EFFECTS,
    begin_watch,
    end_watch_for_rollback,
    take_snapshot,
)


async def carry_out(p: Pass, action: d.Action) -> float | None:
    """Carry out one Action; seconds until the next pass, or None when the migration is over."""
    if isinstance(action, d.Done):
        return None
    effect: Callable[[Pass, Any], Awaitable[float | None]] = EFFECTS[type(action)]
    return await effect(p, action)


# --- progress ------------------------------------------------------------------------------------


async def wait(p: Pass, action: d.Wait) -> float:
    await p.report.report_wait(p.status, action)
    if (
        p.spec.analysis is None
        or p.status.started_at is None
        or action.phase not in slo.MEASURED_PHASES
    ):
        # No measurement to wake for (a Succeeded migration's watch samples on its own clock).
        return action.requeue_after
    # Wake for the next SLO measurement even when the wait itself is longer.
    due = slo.seconds_until_due(p.spec.analysis, p.status.analysis, p.obs.now)
    return max(0.1, min(action.requeue_after, due))


async def start(p: Pass, action: d.Start) -> float:
    status, spec = p.status, p.spec
    # Before startedAt: a crash in between takes the snapshot again, before any step ran.
    snapshot = await take_snapshot(p)
    status.started_at = now_iso()
    status.target_revision = action.target_revision
    status.phase = "Progressing"
    for st in status.steps or []:  # what runs is what was there at the start
        st.checksum = p.obs.checksums.get(st.name)
    await p.report.save(status, reasons.STEP_RUNNING, "migration started")
    rev = f" (deployment revision {action.target_revision})" if action.target_revision else ""
    if action.note:
        rev = f" ({action.note})"
    checked = ""
    if status.checklist is not None and spec.checklist is not None and spec.checklist.require:
        approval = status.checklist.item("Approval")
        approved = f"; {approval.detail}" if approval is not None and approval.satisfied else ""
        checked = f"; checklist complete ({', '.join(spec.checklist.require)}{approved})"
    await p.report.event(
        "Normal", reasons.STARTED, f"migration {spec.migration_id} started{rev}{checked}"
    )
    if snapshot is not None:
        await p.report.event("Normal", reasons.WATCHING, snapshot)
    findings = list(p.obs.lint_findings)
    if findings and spec.safety.lint == "Warn":
        await p.report.event(
            "Warning",
            reasons.LINT_FINDINGS,
            f"{len(findings)} lint finding(s), {count_blocking(findings)} error(s); safety.lint "
            "is Warn, so the migration goes on (see status.lint): "
            + "; ".join(f"{f.step}: {f.rule}" for f in (status.lint or [])[:5]),
        )
    return 0.0


async def run_step(p: Pass, action: d.RunStep) -> float:
    """sql: apply it now; backfill/job: create its Job (the next passes watch it)."""
    spec, status = p.spec, p.status
    step = spec.step(action.step)
    st = p.step_status(step.name)
    first_attempt = st.state not in ("Running",)
    st.state = "Running"
    st.started_at = st.started_at or now_iso()
    st.attempts += 1 if first_attempt or step.kind == "sql" else 0
    st.message = None
    status.phase = "Progressing"
    status.current_step = step.name
    workers = ""
    if step.kind in ("backfill", "job"):
        if step.backfill is not None:
            count, why = await p.database.backfill_workers(
                backfill_checkpoint_name(spec.migration_id, step.name), step.backfill
            )
            workers = f", {why}"
            job = build_backfill_job(p.body, spec, step, p.settings.image, count)
        else:
            job = build_tool_job(p.body, spec, step)
        try:
            await p.report.platform.start_job(job)
        except Invalid as exc:
            # The same Job would be rejected every pass: the step fails (its policy applies).
            message = f"job {job['metadata']['name']} rejected by the API server: {exc}"
            return await fail_step(p, d.fail_step(spec, step.name, reasons.JOB_INVALID, message))
        failpoints.hit("runner.job-created")
        st.job = job["metadata"]["name"]
        await p.report.save(
            status, reasons.STEP_RUNNING, f"step {step.name!r}: job {st.job} created"
        )
        await p.report.event(
            "Normal",
            reasons.STEP_STARTED,
            f"step {step.name!r} ({step.kind}) started: job {st.job}{workers}",
        )
        return 0.0
    await p.report.save(status, reasons.STEP_RUNNING, f"step {step.name!r} running")
    await p.report.event("Normal", reasons.STEP_STARTED, f"step {step.name!r} (sql) started")
    assert step.sql is not None

    async def on_lock_retry(n: int, what: str) -> None:
        metrics.LOCK_RETRIES.inc()
        st.lock_retries += 1
        st.message = f"lock not available for {what}; retry {n}/{spec.safety.lock_retries}"
        await p.report.save(status, reasons.STEP_RUNNING, st.message)

    on_blocked = _blocked_reporter(p, step.name, reasons.STEP_RUNNING)

    result = await p.database.apply_sql(
        migration_id=spec.migration_id,
        step=step.name,
        step_kind=step.kind,
        direction="up",
        sql=p.sql[step.name].up,
        mode=step.sql.transaction,
        checksum=step_checksum(step, p.sql),
        limits=limits_of(spec),
        verify=step.verify,
        on_lock_retry=on_lock_retry,
        on_blocked=on_blocked,
    )
    if result.ok:
        failpoints.hit("runner.history-written")
        await _mark_succeeded(p, step, f"applied in {result.duration_ms} ms")
        return 0.0
    failure = d.fail_step(spec, step.name, result.reason or reasons.SQL_ERROR, result.message)
    return await fail_step(p, failure)


def _blocked_reporter(p: Pass, step: str, reason: str) -> Callable[[int, str], Awaitable[None]]:
    """What the runner does when the blocking guard cancelled a statement of `step`: count it
    (status, metric), say so in status and as an event."""

    async def on_blocked(_attempt: int, text: str) -> None:
        st = p.step_status(step)
        metrics.BLOCKED_EPISODES.labels("sql").inc()
        st.blocking_episodes += 1
        st.message = text
        await p.report.save(p.status, reason, f"step {step!r}: {text}")
        await p.report.event("Warning", reasons.APPLICATION_BLOCKED, f"step {step!r}: {text}")

    return on_blocked


async def record_step(p: Pass, action: d.RecordStep) -> float:
    """The step is done (history, a completed Job, a finished rollout): record and mark it."""
    spec = p.spec
    step = spec.step(action.step)
    if step.await_rollout is not None and not p.report.platform.has_rollouts:
        await p.report.platform.confirm_rollout(step.name, step.await_rollout.image)
    if action.write_history:
        result = await p.database.apply_sql(
            migration_id=spec.migration_id,
            step=step.name,
            step_kind=step.kind,
            direction="up",
            sql="",
            mode="Auto",
            checksum=p.obs.checksums[step.name],
            limits=limits_of(spec),
            verify=step.verify,
            elapsed_before=seconds_since(p.status.step(step.name)),
        )
        if not result.ok:
            reason = result.reason or reasons.SQL_ERROR
            return await fail_step(p, d.fail_step(spec, step.name, reason, result.message))
        failpoints.hit("runner.history-written")
    message = action.message
    if step.backfill is not None:
        # The planner has no statistics for what the backfill wrote (seed Step 6.2).
        table = step.backfill.table
        why_not = await p.database.analyze(table, limits_of(spec).lock_timeout)
        if why_not is None:
            message += f"; {table} analyzed"
        else:
            await p.report.event(
                "Warning",
                reasons.STEP_SUCCEEDED,
                f"step {step.name!r}: ANALYZE {table} skipped ({why_not}); autovacuum will do it",
            )
    await _mark_succeeded(p, step, message)
    return 0.0


async def _mark_succeeded(p: Pass, step: Step, message: str) -> None:
    st = p.step_status(step.name)
    st.state = "Succeeded"
    st.started_at = st.started_at or now_iso()
    st.finished_at = now_iso()
    p.status.phase = "Progressing"
    metrics.STEPS_APPLIED.labels(step.kind).inc()
    metrics.STEP_DURATION.labels(step.kind).observe(seconds_since(st))
    st.message = message
    st.reason = None
    await p.report.save(p.status, reasons.STEP_RUNNING, f"step {step.name!r} succeeded")
    await p.report.event(
        "Normal", reasons.STEP_SUCCEEDED, f"step {step.name!r} succeeded: {message}"
    )


async def succeed(p: Pass, action: d.Succeed) -> float | None:
    """The steps are done; the post-deployment watch starts, if there is one (the runner goes
    on); otherwise the migration is over."""
    watch = await begin_watch(p)
    await _finish(p, "Succeeded", reasons.SUCCEEDED, action.message)
    return watch


# --- failure -------------------------------------------------------------------------------------


async def fail_step(p: Pass, action: d.FailStep) -> float:
    """A step failed: roll back (Automatic policy) or stop for a person (Manual)."""
    st = p.step_status(action.step)
    message = redact_dsn(action.message, p.report.dsn)
    st.state = "Failed"
    st.reason = action.reason
    st.message = message
    st.finished_at = now_iso()
    await p.report.event("Warning", reasons.STEP_FAILED, f"step {action.step!r} failed: {message}")
    what = f"step {action.step!r} failed: {message}"
    if action.rollback:
        return await start_rollback(p, d.StartRollback(action.reason, what))
    manual = d.AwaitManualRollback(
        action.reason, f"{what}; rollback policy is Manual: {d.ANNOTATE_TO_ROLL_BACK}"
    )
    await _stop_for_person(p, manual)
    return 0.0


async def await_manual_rollback(p: Pass, action: d.AwaitManualRollback) -> float:
    """The SLOs were breached under a Manual policy: stop in Failed, say how to roll back."""
    await _stop_for_person(p, action)
    await p.report.event("Warning", action.reason, action.message)
    return 60.0


async def _stop_for_person(p: Pass, action: d.AwaitManualRollback) -> None:
    p.status.phase = "Failed"
    # The record before the status: a runner that dies in between writes it again.
    await write_record(p, "Failed", reason=action.reason, message=action.message)
    await p.report.save(p.status, action.reason, action.message, stalled=True)
    await p.database.release_lock()  # other migrations of this database may go on meanwhile


# --- rollback ------------------------------------------------------------------------------------


async def start_rollback(p: Pass, action: d.StartRollback) -> float:
    status = p.status
    status.phase = "RollingBack"
    status.rollback = RollbackStatus(
        reason=action.message,
        trigger=action.reason,
        started_at=now_iso(),
        rollout_kept=action.keep_rollout,
        step=status.current_step or _last_step_done(status),
    )
    status.finished_at = None  # a finished migration's rollback: it is under way again
    end_watch_for_rollback(status, p.report.generation)
    metrics.ROLLBACKS.labels(action.reason).inc()
    await p.report.save(status, reasons.ROLLING_BACK, f"rolling back: {action.message}")
    await p.report.event(
        "Warning",
        reasons.ROLLBACK_STARTED,
        f"rolling back ({action.reason}): {action.message}",
    )
    return 0.0


def _last_step_done(status: DatabaseMigrationStatus) -> str | None:
    done = [s for s in status.steps or [] if s.finished_at is not None]
    return max(done, key=lambda s: s.finished_at or "").name if done else None


async def refuse_rollback(p: Pass, action: d.RefuseRollback) -> float | None:
    """The migration stays Succeeded; status.rollback says the request was refused and why."""
    now = now_iso()
    p.status.rollback = RollbackStatus(
        reason=action.message,
        trigger=reasons.ROLLBACK_REQUESTED,
        started_at=now,
        finished_at=now,
        database="Refused",
    )
    await p.report.save(p.status, action.reason, action.message)
    await p.report.event("Warning", action.reason, action.message)
    await p.database.release_lock()
    return None


async def stop_jobs(p: Pass, action: d.StopJobs) -> float:
    """Delete the migration's running Jobs (foreground) before the rollback touches anything;
    the next passes wait (`StoppingJobs`) until they and their pods are gone."""
    names = ", ".join(j.name for j in action.jobs)
    for job in action.jobs:
        await p.report.platform.stop_job(job)
    for st in p.status.steps or []:
        if st.job is not None and any(j.name == st.job for j in action.jobs):
            st.message = f"job {st.job} stopped by the rollback"
    message = f"stopping job(s) {names} before rolling back"
    await p.report.save(p.status, reasons.STOPPING_JOBS, message)
    await p.report.event("Normal", reasons.STOPPING_JOBS, message)
    p.report.memory.last_wait = (reasons.STOPPING_JOBS, "")  # the wait that follows: no event
    return 1.0


async def undo_rollout(p: Pass, action: d.UndoRollout) -> float:
    """`kubectl rollout undo` to the revision recorded at the start (Argo CD paused first)."""
    platform, status = p.report.platform, p.status
    rb = status.rollback or RollbackStatus(started_at=now_iso())
    argo = p.spec.rollback.argo_cd
    if argo.pause_auto_sync and rb.argo_cd is None:
        dep = await platform.read_deployment(action.deployment)
        rb.argo_cd = await platform.pause_argo_cd(dep, argo.resume_auto_sync)
        failpoints.hit("rollback.argocd-paused")
        if rb.argo_cd is not None and rb.argo_cd.auto_sync_paused:
            rb.argo_cd.paused_at = now_iso()
            # Saved with the undo below; a crash before that finds the pause recorded on the
            # Application itself (core.argocd.PAUSE_ANNOTATION).
            set_condition(
                status,
                reasons.AUTO_SYNC_PAUSED,
                True,
                reason=reasons.ARGO_CD_AUTO_SYNC_PAUSED,
                message=rb.argo_cd.message or "",
                generation=p.report.generation,
                now=rb.argo_cd.paused_at,
            )
    plan = await platform.undo_rollout(action.deployment, action.to_revision)
    failpoints.hit("rollback.rollout-undone")
    status.rollback = rb
    if plan.error:
        await _finish(p, "Failed", reasons.ROLLBACK_FAILED, plan.message)
        return 0.0
    rb.rollout_undone = True
    rb.undone_to_revision = action.to_revision
    await p.report.save(status, reasons.ROLLING_BACK, plan.message)
    await p.report.event("Normal", reasons.ROLLOUT_UNDONE, plan.message)
    return 0.0


async def revert_step(p: Pass, action: d.RevertStep) -> float:
    """Run a step's down SQL (an empty body for steps without one) and record the `down` row."""
    spec, status = p.spec, p.status
    step = spec.step(action.step)
    down = p.sql[step.name].down if step.kind == "sql" else ""
    await p.report.event("Normal", reasons.STEP_REVERTING, f"reverting step {step.name!r}")
    result = await p.database.apply_sql(
        migration_id=spec.migration_id,
        step=step.name,
        step_kind=step.kind,
        direction="down",
        sql=down or "",
        mode=step.sql.transaction if step.sql else "Auto",
        checksum=checksum(down),
        limits=limits_of(spec),
        on_blocked=_blocked_reporter(p, step.name, reasons.ROLLING_BACK),
    )
    st = p.step_status(step.name)
    if not result.ok:
        message = redact_dsn(f"reverting step {step.name!r} failed: {result.message}", p.report.dsn)
        st.message = message
        await _finish(p, "Failed", reasons.ROLLBACK_FAILED, message)
        return 0.0
    failpoints.hit("rollback.step-reverted")
    st.state = "RolledBack"
    st.message = f"reverted in {result.duration_ms} ms"
    metrics.STEPS_REVERTED.labels(step.kind).inc()
    rb = status.rollback or RollbackStatus(started_at=now_iso())
    rb.steps_reverted = [*(rb.steps_reverted or []), step.name]
    status.rollback = rb
    await p.report.save(status, reasons.ROLLING_BACK, f"step {step.name!r} reverted")
    await p.report.event("Normal", reasons.STEP_REVERTED, f"step {step.name!r} reverted")
    return 0.0


async def finish_rollback(p: Pass, action: d.FinishRollback) -> float | None:
    """RolledBack ends the migration (unless an Argo CD Application's automated sync is left to
    follow: `reconcile.argocd`); a Failed rollback waits for a person (looked at again every
    minute)."""
    failpoints.hit("rollback.before-final-status")
    await _finish(p, action.phase, action.reason, action.message)
    if action.phase != "RolledBack":
        return 60.0
    return POLL_SECONDS if paused_pending(p.status) else None


async def _finish(p: Pass, phase: str, reason: str, message: str) -> None:
    status = p.status
    status.phase = phase  # type: ignore[assignment]
    status.finished_at = now_iso()
    if status.rollback is not None and status.rollback.started_at is not None:
        status.rollback.finished_at = status.finished_at
        if reason == reasons.PAST_POINT_OF_NO_RETURN:
            status.rollback.database = "Refused"
        elif phase == "RolledBack":
            status.rollback.database = "RolledBack"
    if phase == "Succeeded":
        status.current_step = None
    failed = phase not in ("Succeeded", "RolledBack")
    # The record before the final status: a runner that dies in between finishes the same
    # action again and writes the same record (upserted, replaced).
    outcome: Outcome = "Failed" if failed else "Succeeded" if phase == "Succeeded" else "RolledBack"
    await write_record(p, outcome, reason=reason, message=message)
    await p.report.save(status, reason, message, stalled=failed)
    await p.report.event("Warning" if failed else "Normal", reason, message)
    await p.database.release_lock()


# Which function carries out which Action (`Done` needs none).
EFFECTS: dict[type, Callable[[Pass, Any], Awaitable[float | None]]] = {
    d.Wait: wait,
    d.Start: start,
    d.Rehearse: rehearse_migration,
    d.RunStep: run_step,
    d.RecordStep: record_step,
    d.FailStep: fail_step,
    d.AwaitManualRollback: await_manual_rollback,
    d.StartRollback: start_rollback,
    d.RefuseRollback: refuse_rollback,
    d.StopJobs: stop_jobs,
    d.UndoRollout: undo_rollout,
    d.RevertStep: revert_step,
    d.FinishRollback: finish_rollback,
    d.Succeed: succeed,
    **BACKUP_EFFECTS,
    **WATCH_EFFECTS,
}
