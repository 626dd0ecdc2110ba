"""The rehearsal itself: a migration run on a scratch copy of its database, with the verdict.

`rehearse` creates the scratch database (`scratch`), copies the schema and sample rows into it
(`copying`), snapshots the schema, then runs what `core.rehearsal.plan_rehearsal` says with the
engine the real migration uses — `db.executor.apply_sql` for SQL (lock-safe, verify in the
step's transaction, history rows in the scratch database's own `dbmigrate` schema) and the
backfill worker in-process — and compares the schema after the down phase with the snapshot
(`core.schema_diff`). The scratch database is dropped at the end, whatever the end (a timeout,
a failure, a cancellation), unless `keep` asks to look at it.

The verdict is a `RehearsalStatus`: Passed, or Failed with the step, phase and message, or the
schema diff. `RehearsalUnavailable` means the rehearsal could not run at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql as pgsql

from dbmigrate import failpoints
from dbmigrate.api.durations import format_duration, parse_duration
from dbmigrate.api.models import DatabaseMigrationSpec, Step
from dbmigrate.api.rehearsal import (
    MAX_DIFF_LINES,
    RehearsalPhase,
    RehearsalSkip,
    RehearsalStatus,
    RehearsalStep,
    RehearsalTable,
)
from dbmigrate.core.jobs import backfill_checkpoint_name
from dbmigrate.core.lint import Resolved
from dbmigrate.core.plan import tables_touched
from dbmigrate.core.rehearsal import RehearsalPlan, plan_rehearsal
from dbmigrate.core.schema_diff import SchemaSnapshot, capped, diff_schemas
from dbmigrate.core.statements import checksum
from dbmigrate.core.steps import ResolvedSql, limits_of, step_checksum
from dbmigrate.db import executor, history
from dbmigrate.db.backfill import (
    BackfillError,
    BackfillOptions,
    DatabaseUnavailable,
    run_backfill_reconnecting,
)
from dbmigrate.db.errors import describe_error, first_line, redact_dsn
from dbmigrate.db.rehearsal import copying
from dbmigrate.db.rehearsal.scratch import (
    RehearsalUnavailable,
    check_pg_dump,
    create_scratch,
    drop_scratch,
    find_tool,
    scratch_dsn,
)
from dbmigrate.db.snapshot import read_snapshot

APPLICATION_NAME = "dbmigrate-rehearsal"


@dataclass(frozen=True)
class RehearsalRequest:
    """What to rehearse, and where."""

    spec: DatabaseMigrationSpec
    sql: Mapping[str, ResolvedSql]
    real_dsn: str
    database: str  # the scratch database's name (`core.rehearsal.scratch_database_name`)
    server_dsn: str | None = None  # another server to rehearse on; None: the real one's
    sample_rows: int = 1000
    timeout: float = 900.0
    keep: bool = False  # leave the scratch database for a person to look at
    generation: int | None = None

    @property
    def server(self) -> str:
        return self.server_dsn or self.real_dsn


# Told as the rehearsal goes: a stage ("copying the schema") or a step done.
OnStage = Callable[[str], None]
OnStep = Callable[[RehearsalStep], None]


class _Failed(Exception):
    """The migration failed its rehearsal (not the rehearsal's own machinery)."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Rehearsal:
    def __init__(self, req: RehearsalRequest, on_stage: OnStage, on_step: OnStep) -> None:
        self.req = req
        self.spec = req.spec
        self.sql = dict(req.sql)
        self.plan: RehearsalPlan = plan_rehearsal(req.spec)
        self.scratch_dsn = scratch_dsn(req.server, req.database)
        self.on_stage = on_stage
        self.on_step = on_step
        self.steps: list[RehearsalStep] = []
        self.tables: list[RehearsalTable] = []
        self.diff: list[str] = []
        self.doing = "starting"
        self.conn: psycopg.AsyncConnection | None = None

    # --- messages ----------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        for dsn in (self.req.real_dsn, self.req.server_dsn, self.scratch_dsn):
            text = redact_dsn(text, dsn)
        return text

    def stage(self, text: str) -> None:
        self.doing = text
        self.on_stage(text)

    def record(
        self, step: str, phase: RehearsalPhase, started: float, ok: bool, message: str | None
    ) -> None:
        entry = RehearsalStep(
            step=step,
            phase=phase,
            seconds=round(time.monotonic() - started, 3),
            result="Succeeded" if ok else "Failed",
            message=self.redact(message) if message else None,
        )
        self.steps.append(entry)
        self.on_step(entry)
        if not ok:
            raise _Failed(f"step {step!r} failed in the {phase} phase: {entry.message}")

    # --- the copy ----------------------------------------------------------------------------

    async def _connect(self, dsn: str, what: str) -> psycopg.AsyncConnection:
        try:
            return await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, application_name=APPLICATION_NAME
            )
        except psycopg.Error as exc:
            raise RehearsalUnavailable(
                self.redact(f"cannot reach the {what}: {describe_error(exc)}")
            ) from None

    async def copy(self) -> None:
        """The scratch database, created and filled: schema, sample rows, sequences."""
        pg_dump, psql = find_tool("pg_dump"), find_tool("psql")
        real = await self._connect(self.req.real_dsn, "database")
        try:
            await real.set_read_only(True)
            await check_pg_dump(pg_dump, real.info.server_version // 10000)
            cur = await real.execute(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
                "WHERE datname = current_database()"
            )
            like = await cur.fetchone()
            self.stage(f"creating the scratch database {self.req.database}")
            await create_scratch(self.req.server, self.req.database, like=like)
            self.stage("copying the schema")
            await copying.copy_schema_section(
                pg_dump, psql, self.req.real_dsn, self.scratch_dsn, "pre-data"
            )
            self.conn = await self._connect(self.scratch_dsn, "scratch database")
            if self.req.sample_rows > 0:
                await self._copy_rows(real, self.conn)
            self.stage("copying indexes, constraints and triggers")
            await copying.copy_schema_section(
                pg_dump, psql, self.req.real_dsn, self.scratch_dsn, "post-data"
            )
            await copying.copy_sequence_values(real, self.conn)
        except psycopg.Error as exc:
            raise RehearsalUnavailable(
                self.redact(f"copying into the scratch database failed: {describe_error(exc)}")
            ) from None
        finally:
            await real.close()

    async def _copy_rows(
        self, real: psycopg.AsyncConnection, scratch: psycopg.AsyncConnection
    ) -> None:
        resolved: Resolved = {name: (r.up, r.down) for name, r in self.sql.items()}
        try:
            touched = tables_touched(self.spec, resolved)
        except Exception:  # SQL the parser refuses: its step fails in the rehearsal itself
            touched = [s.backfill.table for s in self.spec.steps if s.backfill is not None]
        tables = await copying.tables_to_sample(real, touched)
        for table in tables:
            self.stage(f"copying up to {self.req.sample_rows} rows of {copying.table_name(table)}")
            await copying.copy_sample(real, scratch, table, self.req.sample_rows)
        await copying.prune_orphans(scratch, await copying.foreign_keys(real), tables)
        for table in tables:
            rows = await copying.count_rows(scratch, table)
            self.tables.append(RehearsalTable(table=copying.table_name(table), rows=rows))

    # --- the steps ---------------------------------------------------------------------------

    async def up(self, step: Step, phase: RehearsalPhase) -> None:
        assert self.conn is not None
        self.stage(f"{phase}: step {step.name!r}")
        started = time.monotonic()
        message: str | None
        if step.backfill is not None:
            ok, done = await self._backfill(step)
            if not ok:
                self.record(step.name, phase, started, False, done)
            result = await self._apply(step, "up", "", verify=None)
            message = done if result.ok else result.message
        else:
            assert step.sql is not None
            result = await self._apply(step, "up", self.sql[step.name].up, verify=step.verify)
            message = None if result.ok else result.message
        self.record(step.name, phase, started, result.ok, message)

    async def down(self, step: Step) -> None:
        self.stage(f"down: step {step.name!r}")
        started = time.monotonic()
        down = (self.sql[step.name].down or "") if step.sql is not None else ""
        result = await self._apply(step, "down", down, verify=None)
        self.record(step.name, "down", started, result.ok, None if result.ok else result.message)

    async def verify(self, step: Step) -> None:
        assert self.conn is not None
        assert step.verify is not None
        self.stage(f"verify: step {step.name!r}")
        started = time.monotonic()
        ok, message = True, None
        try:
            async with self.conn.transaction():
                cur = await self.conn.execute(pgsql.SQL(step.verify))  # type: ignore[arg-type]
                row = await cur.fetchone()
            if row is None or len(row) != 1 or not isinstance(row[0], bool):
                ok, message = False, f"verify must return one boolean, got {row!r}"
            elif row[0] is not True:
                ok, message = False, f"verify returned false: {step.verify.strip()}"
        except psycopg.Error as exc:
            if self.conn.broken:
                raise
            ok, message = False, f"verify failed: SQLSTATE {describe_error(exc)}"
        self.record(step.name, "verify", started, ok, message)

    async def _apply(
        self, step: Step, direction: str, sql: str, *, verify: str | None
    ) -> executor.StepResult:
        assert self.conn is not None
        mode = step.sql.transaction if step.sql is not None else "Auto"
        return await executor.apply_sql(
            self.conn,
            migration_id=self.spec.migration_id,
            step=step.name,
            step_kind=step.kind,
            direction=direction,
            sql=sql,
            mode=mode,
            checksum=step_checksum(step, self.sql) if direction == "up" else checksum(sql),
            limits=limits_of(self.spec),
            verify=verify,
        )

    async def _backfill(self, step: Step) -> tuple[bool, str]:
        bf = step.backfill
        assert bf is not None
        opts = BackfillOptions(
            table=bf.table,
            set=bf.set,
            where=bf.where,
            batch_size=bf.batch_size,
            max_batch_size=bf.max_batch_size,
            target_batch_seconds=parse_duration(bf.target_batch_duration),
            # A rehearsal has no application to leave room for: no pause between batches.
            pause_seconds=0.0,
            checkpoint=backfill_checkpoint_name(self.spec.migration_id, step.name),
            lock_timeout_seconds=parse_duration(self.spec.safety.lock_timeout),
        )
        dsn = self.scratch_dsn
        stop = threading.Event()
        work = asyncio.ensure_future(
            asyncio.to_thread(
                run_backfill_reconnecting,
                lambda: psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME),
                opts,
                stop=stop,
            )
        )
        try:
            result = await asyncio.shield(work)
        except asyncio.CancelledError:
            stop.set()  # the worker stops after its batch; the scratch database goes after it
            with contextlib.suppress(Exception):
                await work
            raise
        except DatabaseUnavailable as exc:
            raise RehearsalUnavailable(self.redact(f"backfill {step.name!r}: {exc}")) from None
        except BackfillError as exc:
            return False, str(exc)
        return True, f"{result.rows} rows in {result.batches} batches"

    # --- the sequence ------------------------------------------------------------------------

    async def run(self) -> None:
        await self.copy()
        failpoints.hit("rehearsal.scratch-filled")
        conn = self.conn
        assert conn is not None
        if not await history.try_migration_lock(conn):
            raise RehearsalUnavailable("the scratch database's migration lock is taken")
        await history.ensure_schema(conn)
        before = await read_snapshot(conn)
        plan = self.plan
        for step in plan.round_trip:
            await self.up(step, "up")
        for step in plan.round_trip:
            if step.verify:
                await self.verify(step)
        if plan.round_trip and plan.irreversible:
            raise _Failed(plan.irreversible)
        for step in reversed(plan.round_trip):
            await self.down(step)
        self.stage("comparing the schema with the one before")
        after = await read_snapshot(conn)
        self.diff = diff_schemas(before, after)
        if self.diff:
            raise _Failed(self._diff_message(before))
        for step in plan.reapply:
            await self.up(step, "reapply")
        for step in plan.reapply:
            if step.verify:
                await self.verify(step)

    def _diff_message(self, before: SchemaSnapshot) -> str:
        return (
            f"down did not restore the schema: {len(self.diff)} difference(s) from the "
            f"{len(before)} objects before the migration, first: {self.diff[0]}"
        )

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None

    # --- the verdict -------------------------------------------------------------------------

    def verdict(self, failure: str | None, started_at: str, started: float) -> RehearsalStatus:
        plan = self.plan
        rows = sum(t.rows for t in self.tables)
        if failure is None:
            parts = [
                f"up, verify, down and up again on a scratch copy ({rows} sample rows): the "
                "schema after down equals the schema before"
            ]
            if not plan.round_trip:
                parts = [f"up on a scratch copy ({rows} sample rows)"]
        else:
            parts = [failure]
        if plan.up_only:
            parts.append(f"past the point of no return, checked up only: {', '.join(plan.up_only)}")
        if plan.skipped:
            parts.append(f"not rehearsed: {', '.join(name for name, _ in plan.skipped)}")
        return RehearsalStatus(
            result="Passed" if failure is None else "Failed",
            generation=self.req.generation,
            started_at=started_at,
            finished_at=_now(),
            seconds=round(time.monotonic() - started, 3),
            database=self.req.database,
            rows_copied=rows,
            tables=self.tables or None,
            steps=self.steps or None,
            up_only=list(plan.up_only) or None,
            skipped=[RehearsalSkip(step=s, why=w) for s, w in plan.skipped] or None,
            schema_diff=capped(self.diff, MAX_DIFF_LINES) or None,
            message=self.redact("; ".join(parts)),
        )


async def rehearse(
    req: RehearsalRequest,
    *,
    on_stage: OnStage = lambda _text: None,
    on_step: OnStep = lambda _step: None,
) -> RehearsalStatus:
    """Rehearse the migration; the verdict. Raises `RehearsalUnavailable` when it could not
    run (then nothing is recorded: it is tried again). The scratch database is dropped at the
    end unless `req.keep`."""
    rehearsal = _Rehearsal(req, on_stage, on_step)
    started_at, started = _now(), time.monotonic()
    failure: str | None = None
    try:
        async with asyncio.timeout(req.timeout):
            await rehearsal.run()
    except _Failed as exc:
        failure = str(exc)
    except TimeoutError:
        failure = (
            f"the rehearsal did not finish within {format_duration(req.timeout)} "
            f"(rehearsal.timeout), while {rehearsal.doing}"
        )
    except psycopg.Error as exc:  # the scratch session was lost: not the migration's fault
        raise RehearsalUnavailable(
            rehearsal.redact(
                f"lost the scratch database while {rehearsal.doing}: {first_line(exc)}"
            )
        ) from None
    except history.MigrationLockLost as exc:
        failure = f"while {rehearsal.doing}: {exc}"
    finally:
        await rehearsal.close()
        if not req.keep:
            await _drop_quietly(req)
    return rehearsal.verdict(failure, started_at, started)


async def _drop_quietly(req: RehearsalRequest) -> None:
    """Drop the scratch database; a failure here must not hide the verdict (the next
    rehearsal of the migration drops the leftover before it starts)."""
    with contextlib.suppress(RehearsalUnavailable, psycopg.Error, OSError):
        await asyncio.shield(drop_scratch(req.server, req.database))


def describe(req: RehearsalRequest) -> dict[str, Any]:
    """Where the rehearsal runs, safe to show (no DSN)."""
    return {
        "database": req.database,
        "server": "rehearsal.dsnSecretRef" if req.server_dsn else "the migration's server",
        "sampleRows": req.sample_rows,
    }
