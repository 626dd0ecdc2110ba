"""The life of one DatabaseMigration: observe -> decide -> carry out, until terminal.

One `MigrationRunner` runs per non-terminal DatabaseMigration (a kopf daemon). A pass reads the
resource, observes the world (`reconcile.observe`), asks `core.decide` for the one next Action
and carries it out (`reconcile.effects`). The runner itself owns the loop between passes and the
database session: the connection whose session holds the migration lock for as long as the
migration is active — if the operator dies, the session dies and the lock is released.
Everything else is re-read each pass (the resource, the history table, the Deployment, the
Jobs), so a fresh runner after a crash continues exactly where the last one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from pydantic import ValidationError

from dbmigrate.api import reasons
from dbmigrate.api.durations import parse_duration
from dbmigrate.api.models import (
    BackfillProgress,
    DatabaseMeasurements,
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
)
from dbmigrate.api.steps import Backfill
from dbmigrate.core import decide as d
from dbmigrate.core.argocd import paused_pending
from dbmigrate.core.conditions import set_conditions
from dbmigrate.core.locks import DEFAULT_SERVER_VERSION
from dbmigrate.core.plan import TableEstimate
from dbmigrate.core.status import status_patch, with_step_list
from dbmigrate.core.watch import WatchBaseline
from dbmigrate.db import catalog, executor, guard, history, measurements, watch
from dbmigrate.db.backfill import read_backfill_progress, resolve_workers
from dbmigrate.db.errors import first_line, redact_dsn
from dbmigrate.db.executor import StepResult
from dbmigrate.db.runs import RunRecord, write_run
from dbmigrate.db.statistics import analyze_table
from dbmigrate.metrics import registry as metrics
from dbmigrate.reconcile.argocd import follow_paused_auto_sync
from dbmigrate.reconcile.checklist import MonitoringCache
from dbmigrate.reconcile.effects import carry_out
from dbmigrate.reconcile.linting import LintCache
from dbmigrate.reconcile.observe import observe, rollback_requested
from dbmigrate.reconcile.passes import EventMemory, Pass, Reporter, now_iso
from dbmigrate.reconcile.platform import NotFound, Platform
from dbmigrate.settings import Settings

log = logging.getLogger(__name__)
IDLE = TransactionStatus.IDLE
# The longest wait between two failed passes. Short, because a pass is cheap (one GET, one
# query) and an outage's end should be noticed soon: with a minute, a kube-apiserver away for
# 20 s kept migrations idle for another 30 s after it was back (the fault matrix measured it).
MAX_RETRY_DELAY = 16.0
# How long the tables' size estimates (for the lint gate before the start) are used before
# they are read again: they change with ANALYZE, not from one pass to the next.
SIZES_MAX_AGE = 300.0


def retry_delay(failures: int) -> float:
    """Seconds before the next pass after `failures` failed passes in a row: 2, 4, 8, 16, 16..."""
    return min(MAX_RETRY_DELAY, 2.0 ** max(1, failures))


class MigrationRunner:
    """Drives one DatabaseMigration to a terminal phase."""

    def __init__(self, platform: Platform, settings: Settings) -> None:
        self.platform = platform
        self.namespace = platform.namespace
        self.name = platform.name
        self.settings = settings
        self.conn: psycopg.AsyncConnection | None = None
        self.lock_held = False
        self._lock_pid: int | None = None  # the server process that took the lock
        self.wakeup = asyncio.Event()
        self._events = EventMemory()
        self._lint = LintCache()
        self._monitoring = MonitoringCache()
        self._dsn: str | None = None  # the last one read, for redaction
        self._progress_conn: psycopg.Connection[Any] | None = None
        # (tables, when read, their size estimates): what the lint gate weighs findings by
        self._sizes: tuple[tuple[str, ...], float, dict[str, TableEstimate]] | None = None

    # --- the loop ------------------------------------------------------------------------------

    async def run(
        self, stopped: asyncio.Event | Any, deleted: Callable[[], bool] = lambda: False
    ) -> None:
        """Passes until the migration is done or kopf stops the runner. `deleted` tells whether
        the stop is the resource's deletion: then a statement under way is cancelled."""
        failures = 0
        try:
            while not _is_stopped(stopped):
                # Cleared before the pass, not before the sleep: a wake-up that arrives while the
                # pass runs (say, the rollback annotation added as soon as the status said
                # Failed) must cut the next sleep short, not be forgotten.
                self.wakeup.clear()
                try:
                    delay = await self._one_pass(stopped, deleted)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never give up silently: show it, back off, retry
                    failures += 1
                    delay = retry_delay(failures)
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
            metrics.DATABASE.forget(self.namespace, self.name)
            await self.close()

    async def _one_pass(self, stopped: Any, deleted: Callable[[], bool]) -> float | None:
        """One pass; if the migration is deleted meanwhile, the statement it runs is cancelled.

        A deleted migration is abandoned, as a deleted Job is: its statement is cancelled on the
        server (its transaction rolls back; a CREATE INDEX CONCURRENTLY's INVALID index is
        dropped by the executor's error path) instead of running on for kopf's cancellation
        timeout and being cut off half-way. Kopf's shutdown is not a deletion: then the pass
        runs on (a new operator finds committed work done).
        """
        the_pass = asyncio.ensure_future(self.reconcile_once())
        if stopped is None or not hasattr(stopped, "wait"):
            return await the_pass
        stop = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait([the_pass, stop], return_when=asyncio.FIRST_COMPLETED)
            if not the_pass.done() and deleted():
                log.info("%s/%s: deleted: cancelling its statement", self.namespace, self.name)
                await self.cancel_statement()
            return await the_pass
        except asyncio.CancelledError:
            the_pass.cancel()
            raise
        finally:
            stop.cancel()

    async def cancel_statement(self) -> None:
        """Ask the server to cancel what the migration's session runs (pg_cancel_backend)."""
        if self.conn is not None and not self.conn.closed:
            with contextlib.suppress(psycopg.Error):
                await self.conn.cancel_safe(timeout=5.0)

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
        if self._connection_spent(exc):
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

    def _connection_spent(self, exc: Exception) -> bool:
        """Whether a failed pass costs the database connection, and with it the migration lock.

        Only a database error, or a session left inside a transaction, does: an API server error
        between two steps must not release the lock, or another migration of this database
        could slip in between them.
        """
        if isinstance(exc, psycopg.Error | history.MigrationLockLost):
            return True
        conn = self.conn
        if conn is None:
            return False
        return conn.closed or conn.broken or conn.info.transaction_status != IDLE

    async def reconcile_once(self) -> float | None:
        """One pass; returns seconds until the next pass, or None when the migration is done."""
        try:
            body = await self.platform.read_resource()
        except NotFound:
            metrics.MIGRATIONS.forget(self.namespace, self.name)
            return None
        status = DatabaseMigrationStatus.model_validate(body.get("status") or {})
        if not d.is_active(status, rollback_requested(body)):
            return None
        generation = int(body["metadata"].get("generation", 1))
        report = Reporter(self.platform, generation, self._dsn, self._events)
        try:
            spec = DatabaseMigrationSpec.model_validate(body["spec"])
        except ValidationError as exc:
            wait = d.Wait("Failed", reasons.INVALID_SPEC, f"invalid spec: {exc}", stalled=True)
            await report.report_wait(status, wait)
            return 60.0
        if paused_pending(status):  # rolled back: only Argo CD's automated sync is left
            return await follow_paused_auto_sync(self.platform, spec, status, generation)
        seen = await observe(self.platform, self, spec, status, body, self._lint, self._monitoring)
        self._dsn = report.dsn = seen.dsn or self._dsn
        await report.verdict_changes(seen.verdict_changes)
        for message in seen.blocked:
            await report.event("Warning", reasons.APPLICATION_BLOCKED, message)
        action = d.decide(spec, seen.status, seen.obs)
        log.debug("%s/%s: %s", self.namespace, self.name, action)
        the_pass = Pass(
            report=report,
            database=self,
            settings=self.settings,
            body=body,
            spec=spec,
            status=with_step_list(spec, seen.status),
            obs=seen.obs,
            sql=seen.sql,
        )
        return await carry_out(the_pass, action)

    # --- the database session (observe.DatabaseSession, effects.StepDatabase) -----------------

    @property
    def server_version(self) -> int:
        """The server's major version (the default before the first connection)."""
        if self.conn is None:
            return DEFAULT_SERVER_VERSION
        return int(self.conn.info.server_version // 10000)

    async def connect(self, dsn: str, *, want_lock: bool) -> tuple[psycopg.AsyncConnection, bool]:
        self._dsn = dsn
        if self.conn is None or self.conn.closed:
            self.lock_held = False
            self.conn = await psycopg.AsyncConnection.connect(
                dsn,
                autocommit=True,
                connect_timeout=self.settings.db_connect_timeout,
                application_name="dbmigrate",
            )
        if want_lock and self.lock_held:
            await self._check_session(self.conn)
        if want_lock and not self.lock_held:
            self.lock_held = await history.try_migration_lock(self.conn)
            if self.lock_held:
                self._lock_pid, _ = await history.session_state(self.conn)
                await history.ensure_schema(self.conn)
        elif not want_lock and self.lock_held:
            await history.release_migration_lock(self.conn)
            self.lock_held = False
        return self.conn, self.lock_held

    async def _check_session(self, conn: psycopg.AsyncConnection) -> None:
        """The session still is the one that took the lock, and still holds it."""
        pid, held = await history.session_state(conn)
        if pid != self._lock_pid:
            raise history.MigrationLockLost(
                f"the database session moved from server process {self._lock_pid} to {pid} "
                "between two statements: a transaction-pooling connection pooler (PgBouncer "
                "pool_mode=transaction) is in between, and a session-level lock cannot hold "
                "there. Connect directly or through a session-pooling pool"
            )
        if not held:
            raise history.MigrationLockLost(
                "the migration lock was released by someone else's pg_advisory_unlock or a "
                "step's SQL; stopping until it can be taken again"
            )

    async def table_sizes(self, dsn: str, tables: list[str]) -> dict[str, TableEstimate]:
        key = tuple(tables)
        now = time.monotonic()
        if self._sizes is None or self._sizes[0] != key or now - self._sizes[1] > SIZES_MAX_AGE:
            try:
                _, sizes = await asyncio.to_thread(
                    catalog.read_tables, dsn, tables, connect_timeout=5
                )
            except (catalog.DatabaseError, OSError):
                return {}  # the pass reports the database as unreachable when it connects
            self._sizes = (key, now, sizes)
        return self._sizes[2]

    async def release_lock(self) -> None:
        if self.conn is not None and self.lock_held:
            with contextlib.suppress(psycopg.Error):
                await history.release_migration_lock(self.conn)
        self.lock_held = False

    async def apply_sql(self, **step: Any) -> StepResult:
        assert self.conn is not None  # observe connected before decide chose a database action
        return await executor.apply_sql(self.conn, guard_connect=self._guard_connect, **step)

    async def _guard_connect(self) -> psycopg.AsyncConnection:
        """The blocking guard's session while a step runs (`db.guard`)."""
        assert self._dsn is not None
        return await psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=self.settings.db_connect_timeout,
            application_name="dbmigrate-guard",
            options=guard.SESSION_OPTIONS,
        )

    async def analyze(self, table: str, lock_timeout: float) -> str | None:
        assert self.conn is not None  # observe connected before decide chose a database action
        return await analyze_table(self.conn, table, lock_timeout=lock_timeout)

    async def take_watch_baseline(
        self, migration_id: str, uid: str, tables: tuple[str, ...], indexes: tuple[str, ...]
    ) -> WatchBaseline:
        assert self.conn is not None  # observe connected before decide chose a database action
        return await watch.take_baseline(self.conn, migration_id, uid, tables, indexes)

    async def write_run(self, run: RunRecord) -> None:
        if self.conn is None or self.conn.closed or self.conn.broken:
            raise RuntimeError("no database session to write dbmigrate.runs with")
        await write_run(self.conn, run)

    def _progress_connection(self) -> psycopg.Connection[Any]:
        """The session for estimates (progress, worker counts), opened on first use."""
        assert self._dsn is not None
        if self._progress_conn is None or self._progress_conn.closed:
            self._progress_conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=self.settings.db_connect_timeout,
                application_name="dbmigrate-progress",
                # an estimate is not worth waiting for: never a lock, never a long scan
                options="-c statement_timeout=5s -c lock_timeout=1s",
            )
        return self._progress_conn

    async def database_measurements(self) -> DatabaseMeasurements | None:
        if self.conn is None or self.conn.closed or self.conn.broken:
            return None
        return await measurements.read_database_measurements(self.conn)

    def read_progress(self, checkpoint: str, table: str, where: str | None) -> BackfillProgress:
        conn = self._progress_connection()
        try:
            summary = read_backfill_progress(conn, checkpoint, table=table, where=where)
        except psycopg.OperationalError:
            conn.close()
            raise
        return BackfillProgress(**dataclasses.asdict(summary))

    async def backfill_workers(self, checkpoint: str, backfill: Backfill) -> tuple[int, str]:
        """How many workers the step's Job runs (`parallelism: auto` resolved), and why."""

        def resolve() -> tuple[int, str]:
            conn = self._progress_connection()
            try:
                return resolve_workers(
                    conn,
                    checkpoint,
                    backfill.table,
                    backfill.where,
                    parallelism=backfill.parallelism,
                    pause_seconds=parse_duration(backfill.pause),
                )
            except psycopg.OperationalError:
                conn.close()
                raise

        return await asyncio.to_thread(resolve)


def _is_stopped(stopped: Any) -> bool:
    return bool(stopped.is_set()) if stopped is not None else False
