"""What one pass of the runner sees before it decides.

`observe` reads the world through the `Platform` (the Deployment, ConfigMaps, the Secret, Jobs)
and the runner's database session (the migration lock, the history table, backfill
checkpoints), lints the SQL and measures the SLOs when a measurement is due. It returns one
`Observed`: the `Observation` that `core.decide` decides on — lint findings and the standing SLO
verdict included — and the status brought up to date with what was seen (plan, lint findings,
backfill progress, the analysis round). Nothing here changes the migration or the database.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg

from dbmigrate.api import reasons
from dbmigrate.api.models import (
    ROLLBACK_ANNOTATION,
    ROLLBACK_REQUESTED,
    AnalysisStatus,
    BackfillProgress,
    DatabaseMeasurements,
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
)
from dbmigrate.core import decide as d
from dbmigrate.core import slo
from dbmigrate.core.access import job_secret_names
from dbmigrate.core.backup import backup_retry
from dbmigrate.core.jobs import backfill_checkpoint_name, job_name
from dbmigrate.core.plan import TableEstimate
from dbmigrate.core.rollback import migration_version
from dbmigrate.core.rollout import rollout_state
from dbmigrate.core.steps import ResolvedSql, step_checksum
from dbmigrate.db import history
from dbmigrate.db.errors import MalformedDsn, check_dsn, first_line, redact_dsn
from dbmigrate.db.history import MigrationLockLost
from dbmigrate.metrics import registry as metrics
from dbmigrate.reconcile.backups import observe_backup_job, observe_backup_record
from dbmigrate.reconcile.checklist import MonitoringCache, evaluate_checklist
from dbmigrate.reconcile.linting import LintCache, lint, record_lint_and_plan
from dbmigrate.reconcile.platform import NotFound, Platform, SecretNotPermitted
from dbmigrate.reconcile.slo import measure_round
from dbmigrate.reconcile.watching import observe_watch, wants_lock_after_success

log = logging.getLogger(__name__)


class DatabaseSession(Protocol):
    """The runner's connection to the migration's database (it owns the lock's life cycle)."""

    @property
    def server_version(self) -> int: ...

    async def connect(self, dsn: str, *, want_lock: bool) -> tuple[psycopg.AsyncConnection, bool]:
        """The session's connection and whether it holds the migration lock, taking the lock
        when wanted and releasing it when not."""
        ...

    async def close(self) -> None: ...

    async def table_sizes(self, dsn: str, tables: list[str]) -> dict[str, TableEstimate]:
        """The tables' size estimates (pg_class), read at most every few minutes; empty when
        the database cannot be read (then lint does without)."""
        ...

    def read_progress(self, checkpoint: str, table: str, where: str | None) -> BackfillProgress:
        """A running backfill's progress from its checkpoint, estimated with the step's own
        table and predicate (blocking; run in a thread)."""
        ...

    async def database_measurements(self) -> DatabaseMeasurements | None:
        """Lock waits and replication lag in the migration's database now (None: the session
        is not connected)."""
        ...


@dataclass(frozen=True)
class Observed:
    """Everything one pass saw."""

    obs: d.Observation
    sql: dict[str, ResolvedSql]
    status: DatabaseMigrationStatus  # with plan, lint, backfill progress and analysis recorded
    dsn: str | None = None  # for redaction of whatever the pass reports
    verdict_changes: tuple[slo.VerdictChange, ...] = ()  # one event each
    # backfill batches the blocking guard cancelled since the last pass: one event each step
    blocked: tuple[str, ...] = ()


async def observe(
    platform: Platform,
    session: DatabaseSession,
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    body: dict[str, Any],
    lint_cache: LintCache,
    monitoring: MonitoringCache | None = None,
) -> Observed:
    monitoring = monitoring or MonitoringCache()
    obs, sql, dsn = await _observe_world(
        platform, session, spec, status, body, lint_cache, monitoring
    )
    if obs.checklist is not None:
        status = status.model_copy(deep=True)
        status.checklist = obs.checklist
    status = record_lint_and_plan(spec, status, obs, sql, session.server_version)
    status, blocked = await record_backfill_progress(session, spec, status, dsn)
    status, obs, changes, round_measured = await _measure_slo(spec, status, obs, dsn)
    status = await _record_database(platform, session, spec, status, obs, round_measured)
    return Observed(
        obs=obs, sql=sql, status=status, dsn=dsn, verdict_changes=changes, blocked=blocked
    )


async def _observe_world(
    platform: Platform,
    session: DatabaseSession,
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    body: dict[str, Any],
    lint_cache: LintCache,
    monitoring: MonitoringCache,
) -> tuple[d.Observation, dict[str, ResolvedSql], str | None]:
    obs = d.Observation(
        now=datetime.now(UTC),
        generation=int(body["metadata"].get("generation", 1)),
        rollback_requested=rollback_requested(body),
        rollout_gates=platform.has_rollouts,
    )
    if spec.target_deployment and platform.has_rollouts:
        try:
            dep = await platform.read_deployment(spec.target_deployment)
            state = rollout_state(dep)
            obs = replace(obs, deployment=state)
            version = migration_version(spec)
            if status.started_at is None and version and version in state.images:
                # Started after its version: the rollback's revision is an older one.
                revisions = await platform.deployment_revisions(dep)
                obs = replace(obs, revisions=revisions)
        except NotFound:
            obs = replace(obs, deployment_missing=True)
    if status.phase == "RollingBack":  # before any problem below can cut the observation short
        active = await platform.active_jobs(body["metadata"]["uid"])
        obs = replace(obs, active_jobs=tuple(active))
    sql: dict[str, ResolvedSql] = {}
    try:
        sql = await resolve_sql(platform, spec)
    except NotFound as exc:
        problem = d.ConfigProblem(reasons.CONFIG_MAP_NOT_FOUND, str(exc))
        return replace(obs, problem=problem), sql, None
    obs = replace(obs, checksums={s.name: step_checksum(s, sql) for s in spec.steps})
    dsn, secret_problem = await _read_dsn(platform, spec)
    sizes: dict[str, TableEstimate] | None = None  # None: as the last lint weighed them
    if dsn is not None and status.started_at is None and spec.safety.lint != "Off":
        # Before the start the lint gates it: weigh the findings by the tables' sizes.
        sizes = await session.table_sizes(dsn, await lint_cache.tables(spec, sql))
    obs = await lint(spec, obs, sql, session.server_version, lint_cache, sizes)
    checklist = await evaluate_checklist(spec, status, obs, body["metadata"], monitoring, dsn)
    obs = replace(obs, checklist=checklist)
    if secret_problem is not None or dsn is None:
        return replace(obs, problem=secret_problem), sql, None
    uid = body["metadata"]["uid"]
    # The backup Job before its record: see reconcile.backups.
    obs = await observe_backup_job(platform, spec, status, obs, uid, dsn)
    try:
        conn, lock_held = await session.connect(dsn, want_lock=wants_lock(spec, status, obs))
        applied, partial = await _read_applied_if_schema(conn, spec.migration_id)
        obs = await observe_backup_record(conn, spec, status, obs, uid)
        obs = await observe_watch(conn, spec, status, obs, uid)
    except (psycopg.Error, OSError) as exc:
        await session.close()
        message = redact_dsn(f"cannot reach the database: {first_line(exc)}", dsn)
        problem = d.ConfigProblem(reasons.DATABASE_UNREACHABLE, message)
        return replace(obs, problem=problem), sql, dsn
    except MigrationLockLost as exc:
        await session.close()  # the next pass takes the lock again, or waits for it
        problem = d.ConfigProblem(reasons.MIGRATION_LOCK_LOST, str(exc))
        return replace(obs, problem=problem), sql, dsn
    obs = replace(obs, lock_held=lock_held, applied=applied, partially_applied=partial)
    obs = replace(obs, jobs=await observe_jobs(platform, spec, status, dsn, uid))
    return obs, sql, dsn


async def _read_dsn(
    platform: Platform, spec: DatabaseMigrationSpec
) -> tuple[str | None, d.ConfigProblem | None]:
    """The DSN, once every Secret the migration names may be used; else why not."""
    try:
        ref = spec.database.dsn_secret_ref
        dsn = await platform.read_secret(ref.name, ref.key)
        check_dsn(dsn, f"Secret {ref.name} key {ref.key}")
        for name in job_secret_names(spec):
            await platform.check_secret(name)
    except NotFound as exc:
        return None, d.ConfigProblem(reasons.SECRET_NOT_FOUND, str(exc))
    except SecretNotPermitted as exc:
        return None, d.ConfigProblem(reasons.SECRET_NOT_PERMITTED, str(exc))
    except MalformedDsn as exc:
        return None, d.ConfigProblem(reasons.INVALID_DSN, str(exc))
    return dsn, None


def rollback_requested(body: dict[str, Any]) -> bool:
    """The rollback annotation says `requested`."""
    annotations = body["metadata"].get("annotations") or {}
    return bool(annotations.get(ROLLBACK_ANNOTATION) == ROLLBACK_REQUESTED)


def wants_lock(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: d.Observation
) -> bool:
    """The lock is held while the migration is under way (or about to start), not while it sits
    failed or blocked by lint: other migrations of this database must not wait on it. A
    migration Failed by its backup goes on (and takes the lock) once the failed Job is deleted."""
    after_success = wants_lock_after_success(status)
    if after_success is not None:  # the watch needs none; its cleanup and a rollback do
        return after_success or (obs.rollback_requested and status.rollback is None)
    started = status.started_at is not None
    blocked_by_lint = not started and obs.lint_errors > 0 and spec.safety.lint == "Enforce"
    gated = not started and not d.holds_lock_before_start(spec, status, obs)
    return (
        obs.rollback_requested
        or backup_retry(status, obs)
        or (
            not blocked_by_lint
            and not gated
            and ((status.phase or "Pending") != "Failed" or not started)
        )
    )


async def resolve_sql(platform: Platform, spec: DatabaseMigrationSpec) -> dict[str, ResolvedSql]:
    """Every sql step's statements, inline or from its ConfigMaps."""
    out: dict[str, ResolvedSql] = {}
    for step in spec.steps:
        if step.sql is None:
            continue
        up = step.sql.up
        if up is None and step.sql.up_from is not None:
            ref = step.sql.up_from.config_map_key_ref
            up = await platform.read_config_map(ref.name, ref.key)
        down = step.sql.down
        if down is None and step.sql.down_from is not None:
            ref = step.sql.down_from.config_map_key_ref
            down = await platform.read_config_map(ref.name, ref.key)
        out[step.name] = ResolvedSql(up or "", down)
    return out


async def observe_jobs(
    platform: Platform,
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    dsn: str | None,
    uid: str,
) -> dict[str, d.JobState]:
    """The Jobs of the backfill and job steps under way, by the name status recorded (or the
    one `job_name` gives). A Job of that name counts only if its owner is this migration's
    `uid`; another's comes back with `foreign_owner` set, and decide waits instead of taking
    its outcome for the step's."""
    jobs: dict[str, d.JobState] = {}
    for step in spec.steps:
        if step.kind not in ("backfill", "job"):
            continue
        st = status.step(step.name)
        if st is None or st.state not in ("Running", "Waiting"):
            continue
        name = st.job or job_name(platform.name, step.name, uid)
        state = await platform.job_state(name, uid)
        if state is not None:
            message = redact_dsn(state.message, dsn) if state.message else None
            jobs[step.name] = replace(state, message=message)
    return jobs


async def record_backfill_progress(
    session: DatabaseSession,
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    dsn: str | None,
) -> tuple[DatabaseMigrationStatus, tuple[str, ...]]:
    """Rows done / estimated / rate / ETA of running backfills, from their checkpoints, and
    the batches the blocking guard cancelled since the last pass (what to post as events)."""
    running = [
        s
        for s in spec.steps
        if s.backfill is not None
        and (st := status.step(s.name)) is not None
        and st.state == "Running"
    ]
    if not running or dsn is None:
        return status, ()
    status = status.model_copy(deep=True)
    blocked: list[str] = []
    for step in running:
        checkpoint = backfill_checkpoint_name(spec.migration_id, step.name)
        try:
            backfill = step.backfill
            assert backfill is not None
            progress = await asyncio.to_thread(
                session.read_progress, checkpoint, backfill.table, backfill.where
            )
        except (psycopg.Error, OSError) as exc:
            log.info("backfill progress of %s not readable yet: %s", step.name, first_line(exc))
            continue
        st = status.step(step.name)
        assert st is not None
        before = st.backfill.rows_done if st.backfill is not None else 0
        if progress.rows_done > before:
            metrics.BACKFILL_ROWS.inc(progress.rows_done - before)
        if progress.blocking_episodes > st.blocking_episodes:
            new = progress.blocking_episodes - st.blocking_episodes
            metrics.BLOCKED_EPISODES.labels("backfill").inc(new)
            st.blocking_episodes = progress.blocking_episodes
            blocked.append(
                f"step {step.name!r}: {progress.last_blocked} ({new} batch(es) cancelled since "
                f"the last look, {progress.blocking_episodes} in all)"
            )
        st.backfill = progress
    return status, tuple(blocked)


async def _measure_slo(
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    obs: d.Observation,
    dsn: str | None,
) -> tuple[DatabaseMigrationStatus, d.Observation, tuple[slo.VerdictChange, ...], bool]:
    """While the migration is under way, measure the SLOs when a measurement is due; between
    measurements the last round's decision stands. The decision goes into the observation;
    the last value says whether a round was measured."""
    analysis = spec.analysis
    if analysis is None or status.started_at is None or status.phase not in slo.MEASURED_PHASES:
        return status, obs, (), False
    changes: tuple[slo.VerdictChange, ...] = ()
    measured = slo.measurement_due(analysis, status.analysis, obs.now)
    if measured:
        started = datetime.fromisoformat(status.started_at.replace("Z", "+00:00"))
        round_ = await measure_round(
            analysis,
            status.analysis,
            started,
            obs.now,
            dsn=dsn,
            before_first_step=all(st.state == "Pending" for st in status.steps or []),
        )
        for m in round_.measurements:
            metrics.ANALYSIS_MEASUREMENTS.labels(m.result).inc()
        status = status.model_copy(deep=True)
        database = status.analysis.database if status.analysis else None
        status.analysis = round_.status.model_copy(update={"database": database})
        changes = round_.changes
        decision = round_.decision
    else:
        decision = slo.standing_decision(analysis, status.analysis)
    if isinstance(decision, slo.Rollback):
        obs = replace(obs, slo_breach=decision.reason)
    elif isinstance(decision, slo.Pause):
        obs = replace(obs, analysis_pause=decision.reason)
    return status, obs, changes, measured


# Without analysis, the database's own numbers are read at most this often while a step runs.
DATABASE_MEASUREMENT_INTERVAL = 5.0


async def _record_database(
    platform: Platform,
    session: DatabaseSession,
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    obs: d.Observation,
    round_measured: bool,
) -> DatabaseMigrationStatus:
    """`status.analysis.database`: with each analysis round, and without analysis every few
    seconds while a step runs (a sql step's pass is busy with it: seen before and after)."""
    if round_measured:
        due = True
    elif spec.analysis is not None or status.phase not in slo.MEASURED_PHASES:
        due = False
    else:
        running = any(st.state == "Running" for st in status.steps or [])
        last = status.analysis.database if status.analysis else None
        due = running and (
            last is None
            or last.measured_at is None
            or (obs.now - slo.parse_timestamp(last.measured_at)).total_seconds()
            >= DATABASE_MEASUREMENT_INTERVAL
        )
    if not due:
        return status
    try:
        measured = await session.database_measurements()
    except (psycopg.Error, OSError) as exc:
        log.info("database measurements not readable: %s", first_line(exc))
        return status
    if measured is None:
        return status
    measured.measured_at = slo.format_timestamp(obs.now)
    metrics.DATABASE.set(platform.namespace, platform.name, measured)
    status = status.model_copy(deep=True)
    status.analysis = status.analysis or AnalysisStatus()
    status.analysis.database = measured
    return status


async def _read_applied_if_schema(
    conn: psycopg.AsyncConnection, migration_id: str
) -> tuple[dict[str, d.AppliedStep], frozenset[str]]:
    cur = await conn.execute("SELECT to_regclass('dbmigrate.history') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return {}, frozenset()
    return await history.read_applied(conn, migration_id)
