"""The life of one DatabaseMigration: observe -> decide -> act -> patch status, until terminal.

One `MigrationRunner` runs per non-terminal DatabaseMigration (a kopf daemon). It holds the
database connection whose session owns the migration lock for as long as the migration is
active: if the operator dies, the session dies and the lock is released. Everything it knows
it re-reads each pass (the resource, the history table, the Deployment, the Jobs), so a fresh
runner after a crash continues exactly where the last one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from pydantic import ValidationError

from dbmigrate.api import reasons
from dbmigrate.api.durations import parse_duration
from dbmigrate.api.models import (
    ROLLBACK_ANNOTATION,
    ROLLBACK_REQUESTED,
    BackfillProgress,
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
    LintFinding,
    RollbackStatus,
    Step,
    StepStatus,
)
from dbmigrate.core import analysis as verdicts
from dbmigrate.core import decide as d
from dbmigrate.core.conditions import set_conditions
from dbmigrate.core.jobs import (
    backfill_checkpoint_name,
    build_backfill_job,
    build_tool_job,
    job_name,
)
from dbmigrate.core.lint import Resolved, count_blocking, lint_migration
from dbmigrate.core.plan import render_plan_summary
from dbmigrate.core.rollout import rollout_state
from dbmigrate.core.statements import checksum
from dbmigrate.db import executor, history
from dbmigrate.db.backfill import read_backfill_progress
from dbmigrate.db.errors import first_line, redact_dsn
from dbmigrate.metrics import registry as metrics
from dbmigrate.reconcile.analysis import run_analysis_round
from dbmigrate.reconcile.platform import NotFound, Platform
from dbmigrate.settings import Settings

log = logging.getLogger(__name__)
FINAL_PHASES = frozenset({"Succeeded", "RolledBack"})


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ResolvedSql:
    up: str
    down: str | None


class MigrationRunner:
    """Drives one DatabaseMigration to a terminal phase."""

    def __init__(self, platform: Platform, settings: Settings) -> None:
        self.platform = platform
        self.namespace = platform.namespace
        self.name = platform.name
        self.settings = settings
        self.conn: psycopg.AsyncConnection | None = None
        self.lock_held = False
        self.wakeup = asyncio.Event()
        self._body: dict[str, Any] = {}
        self._last_event_key: tuple[str, str] | None = None
        self._analysis_decision: verdicts.Decision = verdicts.Continue()
        self._lint_findings: list[LintFinding] = []
        self._dsn: str | None = None
        self._progress_conn: psycopg.Connection[Any] | None = None

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, stopped: asyncio.Event | Any) -> None:
        failures = 0
        try:
            while not _is_stopped(stopped):
                # Cleared before the pass, not before the sleep: a wake-up that arrives while the
                # pass runs (say, the rollback annotation added as soon as the status said
                # Failed) must cut the next sleep short, not be forgotten.
                self.wakeup.clear()
                try:
                    delay = await self.reconcile_once()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never give up silently: show it, back off, retry
                    failures += 1
                    delay = min(60.0, 2.0**failures)
                    await self._report_transient_error(exc, delay)
                if delay is None:
                    return
                await self._sleep(delay, stopped)
            log.info(
                "%s/%s: runner stopped (%s)",
                self.namespace,
                self.name,
                getattr(stopped, "reason", None),
            )
        finally:
            await self.close()

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
        self.conn = None
        self.lock_held = False
        if self._progress_conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._progress_conn.close)
            self._progress_conn = None

    async def _sleep(self, delay: float, stopped: Any) -> None:
        """Sleep until the delay passes, something wakes the runner, or kopf asks it to stop."""
        waiters = [asyncio.ensure_future(self.wakeup.wait())]
        if stopped is not None and hasattr(stopped, "wait"):
            waiters.append(asyncio.ensure_future(stopped.wait()))
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _report_transient_error(self, exc: Exception, delay: float) -> None:
        metrics.RECONCILE_ERRORS.inc()
        message = redact_dsn(f"{type(exc).__name__}: {first_line(exc)}", self._dsn)
        log.error(
            "%s/%s: reconcile failed (retrying in %.0fs): %s",
            self.namespace,
            self.name,
            delay,
            message,
        )
        await self.close()  # a broken connection must not be reused; the lock goes with it
        with contextlib.suppress(Exception):
            body = await self.platform.read_resource()
            status = DatabaseMigrationStatus.model_validate(body.get("status") or {})
            set_conditions(
                status,
                reason=reasons.TRANSIENT_ERROR,
                message=f"retrying in {delay:.0f}s after an error: {message}",
                generation=int(body["metadata"].get("generation", 1)),
                now=now_iso(),
            )
            await self.platform.write_status(status_patch(status))

    async def reconcile_once(self) -> float | None:
        """One pass; returns seconds until the next pass, or None when the migration is done."""
        try:
            body = await self.platform.read_resource()
        except NotFound:
            metrics.MIGRATIONS.forget(self.namespace, self.name)
            return None
        self._body = body
        status = DatabaseMigrationStatus.model_validate(body.get("status") or {})
        if status.phase in FINAL_PHASES:
            return None
        generation = int(body["metadata"].get("generation", 1))
        try:
            spec = DatabaseMigrationSpec.model_validate(body["spec"])
        except ValidationError as exc:
            await self._report_wait(
                status,
                d.Wait("Failed", reasons.INVALID_SPEC, f"invalid spec: {exc}", stalled=True),
                generation,
            )
            return 60.0
        obs, sql = await self.observe(spec, status, body)
        status = await self.record_lint_and_plan(spec, status, obs, sql)
        status = await self.record_backfill_progress(spec, status)
        status = await self.analyse(spec, status, obs)
        obs = self._with_analysis_decision(obs)
        action = d.decide(spec, status, obs)
        log.debug("%s/%s: %s", self.namespace, self.name, action)
        return await self.act(spec, status, obs, sql, action, generation)

    # --- lint and plan -------------------------------------------------------------------------

    def _server_version(self) -> int:
        return self.conn.info.server_version // 10000 if self.conn is not None else 15

    def lint(
        self, spec: DatabaseMigrationSpec, obs: d.Observation, sql: dict[str, ResolvedSql]
    ) -> d.Observation:
        """Lint every step before anything runs; Enforce blocks on error findings."""
        if spec.safety.lint == "Off":
            self._lint_findings = []
            return obs
        resolved: Resolved = {name: (r.up, r.down) for name, r in sql.items()}
        self._lint_findings = lint_migration(spec, resolved, self._server_version())
        return replace(obs, lint_errors=count_blocking(self._lint_findings))

    async def record_lint_and_plan(
        self,
        spec: DatabaseMigrationSpec,
        status: DatabaseMigrationStatus,
        obs: d.Observation,
        sql: dict[str, ResolvedSql],
    ) -> DatabaseMigrationStatus:
        """status.lint (the findings) and status.plan (the concise plan, when first seen)."""
        if obs.problem is not None and obs.problem.reason == reasons.CONFIG_MAP_NOT_FOUND:
            return status  # the SQL is not all there yet
        status = status.model_copy(deep=True)
        if status.plan is None:
            resolved: Resolved = {name: (r.up, r.down) for name, r in sql.items()}
            status.plan = render_plan_summary(spec, resolved, self._server_version())
        status.lint = self._lint_findings or None
        return status

    # --- backfill progress ---------------------------------------------------------------------

    async def record_backfill_progress(
        self, spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus
    ) -> DatabaseMigrationStatus:
        """Rows done / estimated / rate / ETA of running backfills, from their checkpoints."""
        running = [
            s
            for s in spec.steps
            if s.backfill is not None
            and (st := status.step(s.name)) is not None
            and st.state == "Running"
        ]
        if not running or self._dsn is None:
            return status
        status = status.model_copy(deep=True)
        for step in running:
            checkpoint = backfill_checkpoint_name(spec.migration_id, step.name)
            try:
                progress = await asyncio.to_thread(self._read_progress, checkpoint)
            except (psycopg.Error, OSError) as exc:
                log.info(
                    "backfill progress of %s not readable yet: %s", step.name, first_line(exc)
                )
                continue
            st = status.step(step.name)
            assert st is not None
            before = st.backfill.rows_done if st.backfill is not None else 0
            if progress.rows_done > before:
                metrics.BACKFILL_ROWS.inc(progress.rows_done - before)
            st.backfill = progress
        return status

    def _read_progress(self, checkpoint: str) -> BackfillProgress:
        assert self._dsn is not None
        if self._progress_conn is None or self._progress_conn.closed:
            self._progress_conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=self.settings.db_connect_timeout,
                application_name="dbmigrate-progress",
            )
        try:
            return read_backfill_progress(self._progress_conn, checkpoint)
        except psycopg.OperationalError:
            self._progress_conn.close()
            raise

    # --- analysis ------------------------------------------------------------------------------

    async def analyse(
        self, spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: d.Observation
    ) -> DatabaseMigrationStatus:
        """While the migration is under way (first step until `settle` after the last), measure
        the SLOs when a measurement is due; events on every change of verdict."""
        analysis = spec.analysis
        if analysis is None or status.started_at is None:
            return status
        if status.phase not in ("Progressing", "Waiting", "Suspended"):
            self._analysis_decision = verdicts.Continue()
            return status
        if not verdicts.measurement_due(analysis, status.analysis, obs.now):
            return status
        started = datetime.fromisoformat(status.started_at.replace("Z", "+00:00"))
        round_ = await run_analysis_round(analysis, status.analysis, started, obs.now)
        for m in round_.measurements:
            metrics.ANALYSIS_MEASUREMENTS.labels(m.result).inc()
        for change in round_.changes:
            failed = change.current.result != verdicts.SUCCESSFUL
            await self._event("Warning" if failed else "Normal", "AnalysisVerdict", change.message)
        status = status.model_copy(deep=True)
        status.analysis = round_.status
        self._analysis_decision = round_.decision
        return status

    def _with_analysis_decision(self, obs: d.Observation) -> d.Observation:
        decision = self._analysis_decision
        if isinstance(decision, verdicts.Rollback):
            return replace(obs, slo_breach=decision.reason)
        if isinstance(decision, verdicts.Pause):
            return replace(obs, analysis_pause=decision.reason)
        return obs

    # --- observe -------------------------------------------------------------------------------

    async def observe(
        self, spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, body: dict[str, Any]
    ) -> tuple[d.Observation, dict[str, ResolvedSql]]:
        annotations = body["metadata"].get("annotations") or {}
        obs = d.Observation(
            now=datetime.now(UTC),
            generation=int(body["metadata"].get("generation", 1)),
            rollback_requested=annotations.get(ROLLBACK_ANNOTATION) == ROLLBACK_REQUESTED,
            rollout_gates=self.platform.has_rollouts,
        )
        if spec.target_deployment and self.platform.has_rollouts:
            try:
                dep = await self.platform.read_deployment(spec.target_deployment)
                obs = replace(obs, deployment=rollout_state(dep))
            except NotFound:
                obs = replace(obs, deployment_missing=True)
        sql: dict[str, ResolvedSql] = {}
        try:
            sql = await self.resolve_sql(spec)
        except NotFound as exc:
            return replace(
                obs, problem=d.ConfigProblem(reasons.CONFIG_MAP_NOT_FOUND, str(exc))
            ), sql
        obs = replace(obs, checksums={s.name: step_checksum(s, sql) for s in spec.steps})
        obs = self.lint(spec, obs, sql)

        # The lock is held while the migration is under way (or about to start), not while it
        # sits failed or blocked by lint: other migrations of this database must not wait on it.
        started = status.started_at is not None
        blocked_by_lint = not started and obs.lint_errors > 0 and spec.safety.lint == "Enforce"
        wants_lock = obs.rollback_requested or (
            not blocked_by_lint and ((status.phase or "Pending") != "Failed" or not started)
        )
        try:
            ref = spec.database.dsn_secret_ref
            dsn = await self.platform.read_secret(ref.name, ref.key)
        except NotFound as exc:
            return replace(obs, problem=d.ConfigProblem(reasons.SECRET_NOT_FOUND, str(exc))), sql
        self._dsn = dsn
        try:
            conn = await self.connection(dsn)
            if wants_lock and not self.lock_held:
                self.lock_held = await history.try_migration_lock(conn)
                if self.lock_held:
                    await history.ensure_schema(conn)
            elif not wants_lock and self.lock_held:
                await history.release_migration_lock(conn)
                self.lock_held = False
            applied, partial = await _read_applied_if_schema(conn, spec.migration_id)
        except (psycopg.Error, OSError) as exc:
            await self.close()
            message = redact_dsn(f"cannot reach the database: {first_line(exc)}", self._dsn)
            return replace(obs, problem=d.ConfigProblem(reasons.DATABASE_UNREACHABLE, message)), sql
        obs = replace(obs, lock_held=self.lock_held, applied=applied, partially_applied=partial)
        obs = replace(obs, jobs=await self.observe_jobs(spec, status))
        return obs, sql

    async def connection(self, dsn: str) -> psycopg.AsyncConnection:
        if self.conn is not None and not self.conn.closed:
            return self.conn
        self.lock_held = False
        self.conn = await psycopg.AsyncConnection.connect(
            dsn,
            autocommit=True,
            connect_timeout=self.settings.db_connect_timeout,
            application_name="dbmigrate",
        )
        return self.conn

    async def resolve_sql(self, spec: DatabaseMigrationSpec) -> dict[str, ResolvedSql]:
        out: dict[str, ResolvedSql] = {}
        for step in spec.steps:
            if step.sql is None:
                continue
            up = step.sql.up
            if up is None and step.sql.up_from is not None:
                ref = step.sql.up_from.config_map_key_ref
                up = await self.platform.read_config_map(ref.name, ref.key)
            down = step.sql.down
            if down is None and step.sql.down_from is not None:
                ref = step.sql.down_from.config_map_key_ref
                down = await self.platform.read_config_map(ref.name, ref.key)
            out[step.name] = ResolvedSql(up or "", down)
        return out

    async def observe_jobs(
        self, spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus
    ) -> dict[str, d.JobState]:
        jobs: dict[str, d.JobState] = {}
        for step in spec.steps:
            if step.kind not in ("backfill", "job"):
                continue
            st = status.step(step.name)
            if st is None or st.state not in ("Running", "Waiting"):
                continue
            name = st.job or job_name(self.name, step.name)
            state = await self.platform.job_state(name)
            if state is not None:
                message = redact_dsn(state.message, self._dsn) if state.message else None
                jobs[step.name] = replace(state, message=message)
        return jobs

    # --- act -----------------------------------------------------------------------------------

    async def act(
        self,
        spec: DatabaseMigrationSpec,
        status: DatabaseMigrationStatus,
        obs: d.Observation,
        sql: dict[str, ResolvedSql],
        action: d.Action,
        generation: int,
    ) -> float | None:
        status = status.model_copy(deep=True)
        self._ensure_step_list(spec, status)
        match action:
            case d.Done():
                return None
            case d.Wait():
                await self._report_wait(status, action, generation)
                return self._until_next_measurement(spec, status, obs, action.requeue_after)
            case d.Start():
                status.started_at = now_iso()
                status.target_revision = action.target_revision
                status.phase = "Progressing"
                await self._save(status, obs, reasons.STEP_RUNNING, "migration started", generation)
                rev = (
                    f" (deployment revision {action.target_revision})"
                    if (action.target_revision)
                    else ""
                )
                await self._event(
                    "Normal", "Started", f"migration {spec.migration_id} started{rev}"
                )
                if status.lint and spec.safety.lint == "Warn":
                    errors = count_blocking(status.lint)
                    await self._event(
                        "Warning",
                        "LintFindings",
                        f"{len(status.lint)} lint finding(s), {errors} error(s); safety.lint is "
                        "Warn, so the migration goes on (see status.lint): "
                        + "; ".join(f"{f.step}: {f.rule}" for f in status.lint[:5]),
                    )
                return 0.0
            case d.RunStep():
                await self._run_step(spec, status, obs, sql, spec.step(action.step), generation)
                return 0.0
            case d.RecordStep():
                await self._record_step(
                    spec, status, obs, spec.step(action.step), action, generation
                )
                return 0.0
            case d.FailStep():
                await self._fail_step(spec, status, obs, action, generation)
                return 0.0
            case d.StartRollback():
                await self._start_rollback(status, obs, action.reason, action.message, generation)
                return 0.0
            case d.UndoRollout():
                await self._undo_rollout(spec, status, obs, action, generation)
                return 0.0
            case d.RevertStep():
                await self._revert_step(spec, status, obs, sql, spec.step(action.step), generation)
                return 0.0
            case d.FinishRollback():
                await self._finish(
                    status,
                    obs,
                    action.phase,
                    action.reason,
                    action.message,
                    generation,
                    stalled=action.phase == "Failed",
                )
                return None if action.phase == "RolledBack" else 60.0
            case d.Succeed():
                await self._finish(
                    status, obs, "Succeeded", reasons.SUCCEEDED, action.message, generation
                )
                return None
        raise AssertionError(f"unhandled action {action!r}")

    def _until_next_measurement(
        self,
        spec: DatabaseMigrationSpec,
        status: DatabaseMigrationStatus,
        obs: d.Observation,
        default: float,
    ) -> float:
        if spec.analysis is None or status.started_at is None:
            return default
        due = verdicts.seconds_until_due(spec.analysis, status.analysis, obs.now)
        return max(0.1, min(default, due))

    def _ensure_step_list(
        self, spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus
    ) -> None:
        existing = {s.name: s for s in status.steps or []}
        status.steps = [existing.get(s.name) or StepStatus(name=s.name) for s in spec.steps]

    async def _report_wait(
        self, status: DatabaseMigrationStatus, wait: d.Wait, generation: int
    ) -> None:
        status = status.model_copy(deep=True)
        status.phase = wait.phase
        if wait.step:
            status.current_step = wait.step
            st = status.step(wait.step)
            if st is not None and wait.step_waiting:
                st.state = "Waiting"
                st.started_at = st.started_at or now_iso()
                st.message = wait.message
        await self._save(status, None, wait.reason, wait.message, generation, stalled=wait.stalled)
        key = (wait.reason, wait.step or "")
        if key != self._last_event_key:
            self._last_event_key = key
            event_type = "Warning" if wait.stalled else "Normal"
            await self._event(event_type, wait.reason, wait.message)

    async def _save(
        self,
        status: DatabaseMigrationStatus,
        obs: d.Observation | None,
        reason: str,
        message: str,
        generation: int,
        *,
        stalled: bool = False,
    ) -> None:
        if obs is not None:
            done = sum(1 for s in status.steps or [] if s.state in ("Succeeded",))
            status.progress = f"{done}/{len(status.steps or [])}"
        else:
            status.progress = status.progress or f"0/{len(status.steps or [])}"
        set_conditions(
            status,
            reason=reason,
            message=redact_dsn(message, self._dsn),
            generation=generation,
            now=now_iso(),
            stalled=stalled,
        )
        metrics.MIGRATIONS.set(self.namespace, self.name, status.phase or "Pending")
        await self.platform.write_status(status_patch(status))

    async def _event(self, type_: str, reason: str, message: str) -> None:
        await self.platform.event(type_, reason, redact_dsn(message, self._dsn))

    # --- steps -----------------------------------------------------------------------------

    async def _run_step(
        self,
        spec: DatabaseMigrationSpec,
        status: DatabaseMigrationStatus,
        obs: d.Observation,
        sql: dict[str, ResolvedSql],
        step: Step,
        generation: int,
    ) -> None:
        st = status.step(step.name)
        assert st is not None
        first_attempt = st.state not in ("Running",)
        st.state = "Running"
        st.started_at = st.started_at or now_iso()
        st.attempts += 1 if first_attempt or step.kind == "sql" else 0
        st.message = None
        status.phase = "Progressing"
        status.current_step = step.name
        if step.kind in ("backfill", "job"):
            if step.kind == "backfill":
                job = build_backfill_job(self._body, spec, step, self.settings.image)
            else:
                job = build_tool_job(self._body, step)
            await self.platform.start_job(job)
            st.job = job["metadata"]["name"]
            await self._save(
                status,
                obs,
                reasons.STEP_RUNNING,
                f"step {step.name!r}: job {st.job} created",
                generation,
            )
            await self._event(
                "Normal", "StepStarted", f"step {step.name!r} ({step.kind}) started: job {st.job}"
            )
            return
        await self._save(
            status, obs, reasons.STEP_RUNNING, f"step {step.name!r} running", generation
        )
        await self._event("Normal", "StepStarted", f"step {step.name!r} (sql) started")
        assert self.conn is not None
        assert step.sql is not None
        resolved = sql[step.name]

        async def on_lock_retry(n: int, what: str) -> None:
            metrics.LOCK_RETRIES.inc()
            st.lock_retries += 1
            st.message = f"lock not available for {what}; retry {n}/{spec.safety.lock_retries}"
            await self._save(status, obs, reasons.STEP_RUNNING, st.message, generation)

        result = await executor.apply_sql(
            self.conn,
            migration_id=spec.migration_id,
            step=step.name,
            step_kind=step.kind,
            direction="up",
            sql=resolved.up,
            mode=step.sql.transaction,
            checksum=step_checksum(step, sql),
            limits=limits_of(spec),
            verify=step.verify,
            on_lock_retry=on_lock_retry,
        )
        if result.ok:
            await self._mark_succeeded(
                status, obs, step, generation, f"applied in {result.duration_ms} ms"
            )
            return
        await self._fail_step(
            spec,
            status,
            obs,
            d.fail_step(spec, step.name, result.reason or reasons.SQL_ERROR, result.message),
            generation,
        )

    async def _mark_succeeded(
        self,
        status: DatabaseMigrationStatus,
        obs: d.Observation,
        step: Step,
        generation: int,
        message: str,
    ) -> None:
        st = status.step(step.name)
        assert st is not None
        st.state = "Succeeded"
        st.started_at = st.started_at or now_iso()
        st.finished_at = now_iso()
        status.phase = "Progressing"
        metrics.STEPS_APPLIED.labels(step.kind).inc()
        metrics.STEP_DURATION.labels(step.kind).observe(_seconds_since(st))
        st.message = message
        st.reason = None
        await self._save(
            status, obs, reasons.STEP_RUNNING, f"step {step.name!r} succeeded", generation
        )
        await self._event("Normal", "StepSucceeded", f"step {step.name!r} succeeded: {message}")

    async def _record_step(
        self,
        spec: DatabaseMigrationSpec,
        status: DatabaseMigrationStatus,
        obs: d.Observation,
        step: Step,
        action: d.RecordStep,
        generation: int,
    ) -> None:
        if step.await_rollout is not None and not self.platform.has_rollouts:
            await self.platform.confirm_rollout(step.name, step.await_rollout.image)
        if action.write_history:
            assert self.conn is not None
            result = await executor.apply_sql(
                self.conn,
                migration_id=spec.migration_id,
                step=step.name,
                step_kind=step.kind,
                direction="up",
                sql="",
                mode="Auto",
                checksum=obs.checksums[step.name],
                limits=limits_of(spec),
                verify=step.verify,
                elapsed_before=_seconds_since(status.step(step.name)),
            )
            if not result.ok:
                await self._fail_step(
                    spec,
                    status,
                    obs,
                    d.fail_step(
                        spec, step.name, result.reason or reasons.SQL_ERROR, result.message
                    ),
                    generation,
                )
                return
        await self._mark_succeeded(status, obs, step, generation, action.message)

    async def _fail_step(
        self,
        spec: DatabaseMigrationSpec,
        status: DatabaseMigrationStatus,
        obs: d.Observation,
        action: d.FailStep,
        generation: int,
    ) -> None:
        st = status.step(action.step)
        assert st is not None
        message = redact_dsn(action.message, self._dsn)
        st.state = "Failed"
        st.reason = action.reason
        st.message = message
        st.finished_at = now_iso()
        await self._event("Warning", "StepFailed", f"step {action.step!r} failed: {message}")
        if action.rollback:
            await self._start_rollback(
                status, obs, action.reason, f"step {action.step!r} failed: {message}", generation
            )
            return
        status.phase = "Failed"
        await self._save(
            status,
            obs,
            action.reason,
            f"step {action.step!r} failed: {message}; rollback policy is Manual: annotate "
            f"{ROLLBACK_ANNOTATION}={ROLLBACK_REQUESTED} to roll back",
            generation,
            stalled=True,
        )
        await self._release_lock()

    # --- rollback --------------------------------------------------------------------------

    async def _start_rollback(
        self,
        status: DatabaseMigrationStatus,
        obs: d.Observation,
        reason: str,
        message: str,
        generation: int,
    ) -> None:
        status.phase = "RollingBack"
        status.rollback = RollbackStatus(reason=message, trigger=reason, started_at=now_iso())
        metrics.ROLLBACKS.labels(reason).inc()
        await self._save(status, obs, reasons.ROLLING_BACK, f"rolling back: {message}", generation)
        await self._event("Warning", "RollbackStarted", f"rolling back ({reason}): {message}")

    async def _undo_rollout(
        self,
        spec: DatabaseMigrationSpec,
        status: DatabaseMigrationStatus,
        obs: d.Observation,
        action: d.UndoRollout,
        generation: int,
    ) -> None:
        rb = status.rollback or RollbackStatus(started_at=now_iso())
        if spec.rollback.argo_cd.pause_auto_sync and rb.argo_cd is None:
            dep = await self.platform.read_deployment(action.deployment)
            rb.argo_cd = await self.platform.pause_argo_cd(dep)
        plan = await self.platform.undo_rollout(action.deployment, action.to_revision)
        if plan.error:
            status.rollback = rb
            await self._finish(
                status,
                obs,
                "Failed",
                reasons.ROLLBACK_FAILED,
                plan.message,
                generation,
                stalled=True,
            )
            return
        rb.rollout_undone = True
        rb.undone_to_revision = action.to_revision
        status.rollback = rb
        await self._save(status, obs, reasons.ROLLING_BACK, plan.message, generation)
        await self._event("Normal", "RolloutUndone", plan.message)

    async def _revert_step(
        self,
        spec: DatabaseMigrationSpec,
        status: DatabaseMigrationStatus,
        obs: d.Observation,
        sql: dict[str, ResolvedSql],
        step: Step,
        generation: int,
    ) -> None:
        assert self.conn is not None
        down = sql[step.name].down if step.kind == "sql" else ""
        await self._event("Normal", "StepReverting", f"reverting step {step.name!r}")
        result = await executor.apply_sql(
            self.conn,
            migration_id=spec.migration_id,
            step=step.name,
            step_kind=step.kind,
            direction="down",
            sql=down or "",
            mode=step.sql.transaction if step.sql else "Auto",
            checksum=checksum(down),
            limits=limits_of(spec),
        )
        st = status.step(step.name)
        assert st is not None
        if not result.ok:
            message = redact_dsn(
                f"reverting step {step.name!r} failed: {result.message}", self._dsn
            )
            st.message = message
            await self._finish(
                status, obs, "Failed", reasons.ROLLBACK_FAILED, message, generation, stalled=True
            )
            return
        st.state = "RolledBack"
        st.message = f"reverted in {result.duration_ms} ms"
        metrics.STEPS_REVERTED.labels(step.kind).inc()
        rb = status.rollback or RollbackStatus(started_at=now_iso())
        rb.steps_reverted = [*(rb.steps_reverted or []), step.name]
        status.rollback = rb
        await self._save(
            status, obs, reasons.ROLLING_BACK, f"step {step.name!r} reverted", generation
        )
        await self._event("Normal", "StepReverted", f"step {step.name!r} reverted")

    async def _finish(
        self,
        status: DatabaseMigrationStatus,
        obs: d.Observation | None,
        phase: str,
        reason: str,
        message: str,
        generation: int,
        *,
        stalled: bool = False,
    ) -> None:
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
        await self._save(status, obs, reason, message, generation, stalled=stalled)
        await self._event(
            "Normal" if phase == "Succeeded" or phase == "RolledBack" else "Warning",
            reason,
            message,
        )
        await self._release_lock()

    async def _release_lock(self) -> None:
        if self.conn is not None and self.lock_held:
            with contextlib.suppress(psycopg.Error):
                await history.release_migration_lock(self.conn)
        self.lock_held = False


def status_patch(status: DatabaseMigrationStatus) -> dict[str, Any]:
    """A merge patch for the whole status: cleared top-level fields are sent as null."""
    body = status.to_k8s()
    for name, field in DatabaseMigrationStatus.model_fields.items():
        body.setdefault(field.alias or name, None)
    return body


def _seconds_since(step: StepStatus | None) -> float:
    if step is None or not step.started_at:
        return 0.0
    started = datetime.fromisoformat(step.started_at.replace("Z", "+00:00"))
    return max(0.0, (datetime.now(UTC) - started).total_seconds())


def _is_stopped(stopped: Any) -> bool:
    return bool(stopped.is_set()) if stopped is not None else False



async def _read_applied_if_schema(
    conn: psycopg.AsyncConnection, migration_id: str
) -> tuple[dict[str, d.AppliedStep], frozenset[str]]:
    cur = await conn.execute("SELECT to_regclass('dbmigrate.history') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return {}, frozenset()
    return await history.read_applied(conn, migration_id)


def limits_of(spec: DatabaseMigrationSpec) -> executor.ExecutionLimits:
    return executor.ExecutionLimits(
        lock_timeout=parse_duration(spec.safety.lock_timeout),
        lock_retries=spec.safety.lock_retries,
        statement_timeout=parse_duration(spec.safety.statement_timeout),
    )


def step_checksum(step: Step, sql: dict[str, ResolvedSql]) -> str:
    """What the history table records for a step's forward direction."""
    if step.sql is not None:
        resolved = sql.get(step.name)
        return checksum(resolved.up if resolved else step.sql.up, step.verify)
    if step.backfill is not None:
        bf = step.backfill
        return checksum(f"UPDATE {bf.table} SET {bf.set} WHERE {bf.where or 'true'}")
    if step.job is not None:
        return checksum(
            " ".join([step.job.image, *(step.job.command or []), *(step.job.args or [])]),
            step.verify,
        )
    return checksum(f"-- awaitRollout {step.await_rollout.image if step.await_rollout else ''}")
