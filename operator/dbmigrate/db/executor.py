"""The lock-safe SQL executor: runs one step's SQL in one direction, exactly once.

Every attempt runs under `lock_timeout` so our ACCESS EXCLUSIVE request can never sit in the lock
queue in front of the application's queries; SQLSTATE 55P03 is retried with exponential backoff
and jitter (cap 30 s). Statements are grouped into transactions by `core.statements`; the history
row is written in the same transaction as the last group (and `verify` runs inside it too), so a
crash either leaves the step fully applied and recorded, or not recorded with its last group
rolled back. A `CREATE INDEX CONCURRENTLY` that failed leaves an INVALID index behind: it is
dropped before the statement is tried again. A non-transactional statement commits on its own:
it is marked as started first, so that when the process dies after its commit and before its
progress row, the restart finds its object there (42P07 / 42710 / 42704) and counts it done
instead of failing the step on its own work; without the mark such an error fails as ever.

With `guard_connect` (a second session), each group runs watched by `db.guard`: when another
session has waited on it for `limits.max_blocked_duration`, the guard cancels it; its
transaction rolls back and the group is retried with the same backoff as a lock timeout,
counting against `lock_retries` (`on_blocked` is told of each episode); when they run out the
step fails as BlockingApplication. A cancel from anyone else (statement_timeout, a person's
pg_cancel_backend) stays an SqlError: the guard knows when it cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psycopg
from pglast import ast
from psycopg import sql as pgsql

from dbmigrate import failpoints
from dbmigrate.api import reasons
from dbmigrate.core.batching import backoff_delay, is_transient_sqlstate
from dbmigrate.core.guard import describe_episode, retry_text
from dbmigrate.core.statements import (
    SqlSyntaxError,
    Statement,
    TransactionMode,
    group_for_execution,
    group_is_transactional,
    parse_statements,
)
from dbmigrate.core.steps import ExecutionLimits
from dbmigrate.db import history
from dbmigrate.db.errors import describe_error
from dbmigrate.db.guard import AsyncBlockingGuard, Watch, watching_async

log = logging.getLogger(__name__)

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
# What a non-transactional statement that already ran says when it runs again: its object exists
# (CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE) or is gone (DROP INDEX CONCURRENTLY).
ALREADY_DONE = frozenset({"42P07", "42710", "42704"})
BACKOFF_START = 0.25
BACKOFF_CAP = 30.0


@dataclass(frozen=True)
class StepResult:
    ok: bool
    reason: str | None = None
    message: str = ""
    sqlstate: str | None = None
    lock_retries: int = 0
    duration_ms: int = 0
    blocking_episodes: int = 0


class _VerifyFailed(Exception):
    pass


def _connection_lost(conn: psycopg.AsyncConnection, exc: psycopg.Error) -> bool:
    """The session is gone or going (no SQLSTATE, class 08, 57P01 admin_shutdown after
    pg_terminate_backend, ...): not a failure of the step's SQL, which rolled back with the
    session. The runner reconnects, takes the migration lock again and retries the step."""
    return exc.sqlstate is None or is_transient_sqlstate(exc.sqlstate) or conn.broken


def _ms(seconds: float) -> str:
    return f"{max(0, round(seconds * 1000))}ms"


async def _set_timeouts(
    conn: psycopg.AsyncConnection, limits: ExecutionLimits, *, local: bool
) -> None:
    scope = "LOCAL " if local else ""
    await conn.execute(
        pgsql.SQL("SET {}lock_timeout = {}").format(
            pgsql.SQL(scope), pgsql.Literal(_ms(limits.lock_timeout))
        )
    )
    await conn.execute(
        pgsql.SQL("SET {}statement_timeout = {}").format(
            pgsql.SQL(scope), pgsql.Literal(_ms(limits.statement_timeout))
        )
    )


async def _reset_session(conn: psycopg.AsyncConnection) -> None:
    """Undo what a step's SQL set for the session (SET ROLE, search_path, any setting): the
    operator's own bookkeeping and the next step run as the operator's user with its settings.
    """
    await conn.execute("RESET ALL")
    await conn.execute("RESET SESSION AUTHORIZATION")  # also resets the role


async def _drop_invalid_index(conn: psycopg.AsyncConnection, stmt: Statement) -> None:
    """Remove the INVALID index a failed CREATE INDEX CONCURRENTLY leaves behind."""
    node = stmt.node
    if not (isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname):
        return
    schema = node.relation.schemaname if node.relation is not None else None
    cur = await conn.execute(
        """
        SELECT n.nspname, c.relname FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relname = %s AND NOT i.indisvalid
          AND (n.nspname = %s OR (%s::text IS NULL AND pg_catalog.pg_table_is_visible(c.oid)))
        """,
        (node.idxname, schema, schema),
    )
    row = await cur.fetchone()
    if row is None:
        return
    log.warning("dropping INVALID index %s.%s left by an earlier attempt", row[0], row[1])
    await conn.execute(
        pgsql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
            pgsql.Identifier(row[0]), pgsql.Identifier(row[1])
        )
    )


async def _run_verify(conn: psycopg.AsyncConnection, verify: str) -> None:
    try:
        cur = await conn.execute(pgsql.SQL(verify))  # type: ignore[arg-type]
        row = await cur.fetchone()
    except psycopg.Error as exc:
        if _connection_lost(conn, exc):
            raise
        raise _VerifyFailed(f"verify failed: SQLSTATE {describe_error(exc)}") from exc
    if row is None or len(row) != 1 or not isinstance(row[0], bool):
        raise _VerifyFailed(f"verify must return one boolean, got {row!r}")
    if row[0] is not True:
        raise _VerifyFailed(f"verify returned false: {verify.strip()}")


async def apply_sql(
    conn: psycopg.AsyncConnection,
    *,
    migration_id: str,
    step: str,
    step_kind: str,
    direction: str,
    sql: str,
    mode: TransactionMode,
    checksum: str,
    limits: ExecutionLimits,
    verify: str | None = None,
    elapsed_before: float = 0.0,
    on_lock_retry: Callable[[int, str], Awaitable[None]] | None = None,
    guard_connect: Callable[[], Awaitable[psycopg.AsyncConnection]] | None = None,
    on_blocked: Callable[[int, str], Awaitable[None]] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> StepResult:
    """Apply one step's SQL (or an empty body: just the history row) on an autocommit connection.

    The connection must hold the migration lock. Returns a StepResult; raises only for
    connection-level failures (the reconciler retries those as DatabaseUnreachable).
    `guard_connect` opens the blocking guard's session (see the module's docstring);
    `on_blocked(n, text)` hears of each episode, `text` saying what waited how long on what
    and what happens next.
    """
    guard = None
    if guard_connect is not None and limits.max_blocked_duration > 0:
        guard = AsyncBlockingGuard(guard_connect, limits.max_blocked_duration)
    try:
        return await _apply_sql(
            conn,
            migration_id=migration_id,
            step=step,
            step_kind=step_kind,
            direction=direction,
            sql=sql,
            mode=mode,
            checksum=checksum,
            limits=limits,
            verify=verify,
            elapsed_before=elapsed_before,
            on_lock_retry=on_lock_retry,
            guard=guard,
            on_blocked=on_blocked,
            sleep=sleep,
        )
    finally:
        if guard is not None:
            await guard.close()


async def _apply_sql(
    conn: psycopg.AsyncConnection,
    *,
    migration_id: str,
    step: str,
    step_kind: str,
    direction: str,
    sql: str,
    mode: TransactionMode,
    checksum: str,
    limits: ExecutionLimits,
    verify: str | None,
    elapsed_before: float,
    on_lock_retry: Callable[[int, str], Awaitable[None]] | None,
    guard: AsyncBlockingGuard | None,
    on_blocked: Callable[[int, str], Awaitable[None]] | None,
    sleep: Callable[[float], Awaitable[None]],
) -> StepResult:
    # A Job or rollout step is recorded when it ends: its history duration covers its whole run.
    started = time.monotonic() - elapsed_before
    try:
        statements = parse_statements(sql) if sql.strip() else []
    except SqlSyntaxError as exc:
        return StepResult(False, reasons.SQL_ERROR, f"syntax error: {exc}")
    if any(s.is_transaction_control for s in statements):
        return StepResult(
            False,
            reasons.SQL_ERROR,
            "transaction control (BEGIN/COMMIT/ROLLBACK) is not allowed in a step: the executor "
            "runs each step in a transaction itself; use sql.transaction to choose how",
        )
    groups = group_for_execution(statements, mode)
    retries = 0
    episodes = 0

    async def finish_in_current_transaction() -> None:
        if verify:
            await _run_verify(conn, verify)  # under the step's own settings (search_path, ...)
        await _reset_session(conn)
        await history.insert_history(
            conn,
            migration_id=migration_id,
            step=step,
            step_kind=step_kind,
            direction=direction,
            checksum=checksum,
            duration_ms=round((time.monotonic() - started) * 1000),
        )

    if not groups:
        async with conn.transaction():
            try:
                await finish_in_current_transaction()
            except _VerifyFailed as exc:
                return StepResult(False, reasons.VERIFY_FAILED, str(exc))
        return StepResult(True, duration_ms=round((time.monotonic() - started) * 1000))

    progress = await history.read_step_progress(conn, migration_id, step, direction, checksum)
    index = progress.groups_done
    while index < len(groups):
        group = groups[index]
        last = index == len(groups) - 1
        transactional = group_is_transactional(group, mode)
        current: Statement | None = None
        watch: Watch | None = None
        try:
            if transactional:
                async with watching_async(guard, conn) as watch, conn.transaction():
                    await _set_timeouts(conn, limits, local=True)
                    for current in group:
                        await conn.execute(pgsql.SQL(current.text))  # type: ignore[arg-type]
                    current = None
                    if last:
                        await finish_in_current_transaction()
                    else:
                        await history.write_groups_done(
                            conn, migration_id, step, direction, checksum, index + 1
                        )
                if not last:
                    failpoints.hit("executor.group-committed")
            else:
                (current,) = group
                await _drop_invalid_index(conn, current)
                resuming = progress.group_started == index
                await history.write_group_started(
                    conn, migration_id, step, direction, checksum, index
                )
                await _set_timeouts(conn, limits, local=False)
                try:
                    async with watching_async(guard, conn) as watch:
                        await conn.execute(pgsql.SQL(current.text))  # type: ignore[arg-type]
                except psycopg.Error as exc:
                    if _connection_lost(conn, exc):
                        raise  # whether it ran is not known: the runner reconnects
                    if not (resuming and exc.sqlstate in ALREADY_DONE):
                        # It did not run: a later attempt is a first attempt again.
                        await history.write_groups_done(
                            conn, migration_id, step, direction, checksum, index
                        )
                        raise
                    log.info(
                        "%s/%s: %s found done (%s): it committed before the operator restarted",
                        migration_id,
                        step,
                        _short(current.text),
                        exc.sqlstate,
                    )
                finally:
                    await conn.execute("RESET lock_timeout")
                    await conn.execute("RESET statement_timeout")
                current = None
                failpoints.hit("executor.statement-committed")
                async with conn.transaction():
                    if last:
                        await finish_in_current_transaction()
                    else:
                        await history.write_groups_done(
                            conn, migration_id, step, direction, checksum, index + 1
                        )
        except _VerifyFailed as exc:
            return StepResult(
                False,
                reasons.VERIFY_FAILED,
                str(exc),
                lock_retries=retries,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
        except psycopg.OperationalError as exc:
            if _connection_lost(conn, exc):
                raise  # the session is gone: the runner reconnects and tries the step again
            if current is not None and not transactional:
                await _drop_invalid_index(conn, current)
            if exc.sqlstate == QUERY_CANCELED and watch is not None and watch.fired is not None:
                # Our guard cancelled it: the application waited on us too long. Rolled back;
                # retried like a lock timeout.
                retries += 1
                episodes += 1
                what = _group_text(group)
                episode = describe_episode(watch.fired, what)
                text = f"{episode}; {retry_text(retries, limits.lock_retries)}"
                log.warning("%s/%s: %s", migration_id, step, text)
                if on_blocked is not None:
                    await on_blocked(retries, text)
                if retries > limits.lock_retries:
                    return StepResult(
                        False,
                        reasons.BLOCKING_APPLICATION,
                        f"{episode}: cancelled {episodes} time(s) for blocking the application "
                        f"longer than {_ms(limits.max_blocked_duration)} (safety."
                        f"maxBlockedDuration) and retries ran out ({limits.lock_retries})",
                        sqlstate=exc.sqlstate,
                        lock_retries=retries - 1,
                        duration_ms=round((time.monotonic() - started) * 1000),
                        blocking_episodes=episodes,
                    )
                jitter = random.random()  # noqa: S311 - jitter only
                await sleep(backoff_delay(retries - 1, jitter, base=BACKOFF_START, cap=BACKOFF_CAP))
                continue
            if exc.sqlstate == LOCK_NOT_AVAILABLE:
                retries += 1
                what = current.text if current is not None else "statement"
                if retries > limits.lock_retries:
                    return StepResult(
                        False,
                        reasons.LOCK_TIMEOUT,
                        f"could not take the lock for {_short(what)} within "
                        f"{_ms(limits.lock_timeout)} after {limits.lock_retries} retries: "
                        "a long transaction holds the table",
                        sqlstate=exc.sqlstate,
                        lock_retries=retries - 1,
                        duration_ms=round((time.monotonic() - started) * 1000),
                        blocking_episodes=episodes,
                    )
                if on_lock_retry is not None:
                    await on_lock_retry(retries, _short(what))
                # retries counts from 1; the backoff's retry number from 0
                jitter = random.random()  # noqa: S311 - jitter only
                await sleep(backoff_delay(retries - 1, jitter, base=BACKOFF_START, cap=BACKOFF_CAP))
                continue
            return _sql_failure(exc, current, retries, started)
        except psycopg.Error as exc:
            if _connection_lost(conn, exc):
                raise
            if current is not None and not transactional:
                await _drop_invalid_index(conn, current)
            return _sql_failure(exc, current, retries, started)
        await history.keep_migration_lock(conn)
        index += 1
    return StepResult(
        True,
        lock_retries=retries,
        duration_ms=round((time.monotonic() - started) * 1000),
        blocking_episodes=episodes,
    )


def _group_text(group: list[Statement]) -> str:
    """A group as an episode names it: the statement, or the transaction's first one."""
    if len(group) == 1:
        return _short(group[0].text)
    return f"{_short(group[0].text, 80)} (+{len(group) - 1} more in its transaction)"


def _short(text: str, limit: int = 120) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _sql_failure(
    exc: psycopg.Error, stmt: Statement | None, retries: int, started: float
) -> StepResult:
    where = (
        f" in statement {stmt.index + 1} (line {stmt.line}): {_short(stmt.text)}" if stmt else ""
    )
    return StepResult(
        False,
        reasons.SQL_ERROR,
        f"SQLSTATE {describe_error(exc)}{where}",
        sqlstate=exc.sqlstate,
        lock_retries=retries,
        duration_ms=round((time.monotonic() - started) * 1000),
    )
