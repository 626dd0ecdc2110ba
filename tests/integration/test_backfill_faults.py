"""Fault injection on the backfill worker, against real PostgreSQL.

Aspects covered:
- a finished checkpoint outlives what it was about: a table dropped and re-created (or
  restored from a copy) is another table (its `pg_class` oid), so the checkpoint is stale and
  the backfill starts over, and says so;
- a finished checkpoint while rows still match the step's `where` (the table truncated and
  reloaded, or rows put back) is never "nothing to do"; with none left it still is;
- reverting a backfill step (its `down` history row, written by the executor) forgets the
  step's checkpoint in the same transaction, so the same migrationId applied again
  backfills again;
- a database blip: the worker's connection terminated mid-run (`pg_terminate_backend`) is
  reconnected with back-off and the run resumes from the checkpoint, every row exactly once;
  a connection that stays impossible (53300, refused, terminated and then refused) ends with
  the exit code the Job's podFailurePolicy retries (75); an invalid DSN fails with 1.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dbmigrate.core.jobs import backfill_checkpoint_name
from dbmigrate.core.statements import checksum
from dbmigrate.db import executor, history
from dbmigrate.db.backfill import read_checkpoints
from dbmigrate_dev.postgres import free_port
from tests.integration.backfill_helpers import (
    COUNTER_SET,
    assert_same_as_single_update,
    cli,
    make_table,
)

EXIT_RETRYABLE = 75  # the literal on purpose: the contract with core/jobs.py's podFailurePolicy
EXIT_USAGE = 2  # likewise: bad arguments or a DSN that does not parse, FailJob


def rows_done(conn: psycopg.Connection[Any], name: str) -> int:
    return sum(c.rows_done for c in read_checkpoints(conn, name))


def oid_of(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute("SELECT %s::regclass::oid", (table,)).fetchone()
    assert row is not None
    return int(row[0])


# ---------------------------------------------------------------------------------------------
# a checkpoint belongs to the table it was made on


@pytest.mark.parametrize(
    "recreate",
    [
        pytest.param(
            "DROP TABLE items; CREATE TABLE items (LIKE items_expected); "
            "ALTER TABLE items ADD PRIMARY KEY (id); INSERT INTO items TABLE items_expected",
            id="drop-and-recreate",
        ),
        pytest.param(
            "ALTER TABLE items RENAME TO items_before; "
            "CREATE TABLE items (LIKE items_before INCLUDING ALL); "
            "INSERT INTO items TABLE items_expected",
            id="restored-from-a-copy",
        ),
    ],
)
def test_recreated_table_is_backfilled_again(
    pg_dsn: str, pg_conn: psycopg.Connection[Any], recreate: str
) -> None:
    # No `where`: nothing in the rows tells done from not done, only the table's identity.
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 3000)
    args = ["--table", "items", "--set", COUNTER_SET, "--checkpoint", "m1/fill"]
    assert cli(pg_dsn, *args, "--batch-size", "500").returncode == 0
    before = oid_of(pg_conn, "items")
    pg_conn.execute(recreate)
    assert oid_of(pg_conn, "items") != before
    again = cli(pg_dsn, *args, "--batch-size", "500")
    assert again.returncode == 0, again.stderr
    assert "nothing to do" not in again.stdout
    assert "starting over" in again.stdout
    assert "another table" in again.stdout
    assert_same_as_single_update(pg_conn, "items", COUNTER_SET)
    assert pg_conn.execute("SELECT min(n), max(n) FROM items").fetchone() == (1, 1)
    assert rows_done(pg_conn, "m1/fill") == 3000  # a fresh plan, not 3000 on top of 3000


def test_rewritten_table_keeps_its_checkpoint(pg_dsn: str, pg_conn: psycopg.Connection[Any]):
    """VACUUM FULL rewrites the table (a new relfilenode) but it holds the same rows: the
    checkpoint still stands, and a non-idempotent `set` is not applied twice."""
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 1000)
    args = ["--table", "items", "--set", COUNTER_SET, "--checkpoint", "rw"]
    assert cli(pg_dsn, *args).returncode == 0
    pg_conn.execute("VACUUM FULL items")
    again = cli(pg_dsn, *args)
    assert again.returncode == 0, again.stderr
    assert "already finished (1,000 rows); nothing to do" in again.stdout
    assert pg_conn.execute("SELECT min(n), max(n) FROM items").fetchone() == (1, 1)


def users_table(conn: psycopg.Connection[Any], rows: int) -> None:
    conn.execute(
        "CREATE TABLE users (id bigint PRIMARY KEY, confirmed boolean NOT NULL, "
        "verified boolean, n int NOT NULL DEFAULT 0)"
    )
    conn.execute(
        "INSERT INTO users (id, confirmed) SELECT g, g %% 2 = 0 FROM generate_series(1, %s) g",
        (rows,),
    )


FILL = ["--set", "verified = confirmed, n = n + 1", "--where", "verified IS NULL"]


@pytest.mark.parametrize(
    ("undo", "matching"),
    [
        pytest.param(
            "TRUNCATE users; INSERT INTO users (id, confirmed) "
            "SELECT g, g % 2 = 0 FROM generate_series(1, 4000) g",
            4000,
            id="truncated-and-reloaded",
        ),
        pytest.param("UPDATE users SET verified = NULL WHERE id % 8 = 0", 500, id="rows-put-back"),
    ],
)
def test_finished_checkpoint_with_rows_still_matching_where_runs_again(
    pg_dsn: str, pg_conn: psycopg.Connection[Any], undo: str, matching: int
) -> None:
    users_table(pg_conn, 4000)
    args = ["--table", "users", *FILL, "--checkpoint", "m2/fill", "--batch-size", "1000"]
    assert cli(pg_dsn, *args).returncode == 0
    oid = oid_of(pg_conn, "users")
    pg_conn.execute(undo)
    assert oid_of(pg_conn, "users") == oid  # the same table: only the rows tell
    again = cli(pg_dsn, *args)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" not in again.stdout
    assert "starting over" in again.stdout
    assert "still match" in again.stdout
    assert pg_conn.execute("SELECT count(*) FROM users WHERE verified IS NULL").fetchone() == (0,)
    assert pg_conn.execute("SELECT count(*) FROM users WHERE verified <> confirmed").fetchone() == (
        0,
    )
    assert rows_done(pg_conn, "m2/fill") == matching
    assert again.stdout.splitlines()[-1].startswith(f"done: {matching:,} rows")


def test_finished_checkpoint_with_no_row_left_is_nothing_to_do(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    users_table(pg_conn, 2000)
    args = ["--table", "users", *FILL, "--checkpoint", "m3/fill"]
    assert cli(pg_dsn, *args).returncode == 0
    again = cli(pg_dsn, *args)
    assert again.returncode == 0
    assert "already finished (2,000 rows); nothing to do" in again.stdout
    assert pg_conn.execute("SELECT min(n), max(n) FROM users").fetchone() == (1, 1)


# ---------------------------------------------------------------------------------------------
# reverting the step forgets its checkpoint, in the down's transaction

MIGRATION = "20240301000000_add_verified"
LIMITS = executor.ExecutionLimits(lock_timeout=1.0, lock_retries=5, statement_timeout=0)
ADD = "ALTER TABLE users ADD COLUMN verified2 boolean"
DROP = "ALTER TABLE users DROP COLUMN verified2"


async def apply(
    conn: psycopg.AsyncConnection, step: str, kind: str, direction: str, sql: str
) -> executor.StepResult:
    return await executor.apply_sql(
        conn,
        migration_id=MIGRATION,
        step=step,
        step_kind=kind,
        direction=direction,
        sql=sql,
        mode="Auto",
        checksum=checksum(sql),
        limits=LIMITS,
    )


async def operator_session(dsn: str) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    assert await history.try_migration_lock(conn)
    await history.ensure_schema(conn)
    return conn


async def test_reverted_then_reapplied_migration_backfills_again(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    """expand (add a column), backfill it, revert both, apply the same migrationId again.

    No `where` and a column re-added to the same table (same oid): only the revert's reset of
    the checkpoint can tell the second run that its work is gone."""
    users_table(pg_conn, 3000)
    name = backfill_checkpoint_name(MIGRATION, "fill")
    args = ["--table", "users", "--set", "verified2 = confirmed, n = n + 1", "--checkpoint", name]
    conn = await operator_session(pg_dsn)
    try:
        for _ in range(2):
            assert (await apply(conn, "add", "sql", "up", ADD)).ok
            done = cli(pg_dsn, *args)
            assert done.returncode == 0, done.stderr
            assert "nothing to do" not in done.stdout
            assert (await apply(conn, "fill", "backfill", "up", "")).ok
            assert pg_conn.execute(
                "SELECT count(*) FROM users WHERE verified2 IS DISTINCT FROM confirmed"
            ).fetchone() == (0,)
            assert rows_done(pg_conn, name) == 3000
            # the rollback: the backfill step's down row (empty SQL), then the column's
            assert (await apply(conn, "fill", "backfill", "down", "")).ok
            assert read_checkpoints(pg_conn, name) == []
            assert (await apply(conn, "add", "sql", "down", DROP)).ok
        assert pg_conn.execute("SELECT min(n), max(n) FROM users").fetchone() == (2, 2)
        rows = await history.read_history(conn, MIGRATION)
        assert [(r.step, r.direction) for r in rows] == [
            ("add", "up"),
            ("fill", "up"),
            ("fill", "down"),
            ("add", "down"),
        ] * 2
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(
            "CREATE TRIGGER refuse BEFORE INSERT ON dbmigrate.history FOR EACH ROW "
            "EXECUTE FUNCTION refuse()",
            id="history-row-refused",
        ),
        pytest.param(
            "CREATE TRIGGER refuse BEFORE DELETE ON dbmigrate.backfill_checkpoints "
            "FOR EACH ROW EXECUTE FUNCTION refuse()",
            id="checkpoint-delete-refused",
        ),
    ],
)
async def test_revert_writes_its_row_and_forgets_the_checkpoint_together(
    pg_dsn: str, pg_conn: psycopg.Connection[Any], fault: str
) -> None:
    """Either half of the down's transaction failing leaves both undone."""
    users_table(pg_conn, 500)
    name = backfill_checkpoint_name(MIGRATION, "fill")
    assert cli(pg_dsn, "--table", "users", *FILL, "--checkpoint", name).returncode == 0
    conn = await operator_session(pg_dsn)
    try:
        assert (await apply(conn, "fill", "backfill", "up", "")).ok
        pg_conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
        )
        pg_conn.execute(fault)
        with pytest.raises(psycopg.errors.RaiseException):
            await apply(conn, "fill", "backfill", "down", "")
        assert len(read_checkpoints(pg_conn, name)) == 1
        rows = await history.read_history(conn, MIGRATION)
        assert [r.direction for r in rows] == ["up"]
    finally:
        await conn.close()


async def test_reverting_another_kind_of_step_keeps_checkpoints(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    users_table(pg_conn, 200)
    name = backfill_checkpoint_name(MIGRATION, "fill")
    assert cli(pg_dsn, "--table", "users", *FILL, "--checkpoint", name).returncode == 0
    conn = await operator_session(pg_dsn)
    try:
        assert (await apply(conn, "fill", "sql", "down", "")).ok  # a step named alike, not it
        assert (await apply(conn, "other", "backfill", "down", "")).ok  # another backfill
        assert len(read_checkpoints(pg_conn, name)) == 1
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# a database blip: reconnect and resume; a lasting outage exits with the retryable code


def slow_batches(conn: psycopg.Connection[Any], table: str) -> None:
    """Each batch's transaction stays open ~20 ms after its UPDATE, so that a termination
    lands inside a batch most of the time (its UPDATE done, its commit not yet)."""
    conn.execute(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$;"
        f"CREATE TRIGGER slow AFTER UPDATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION slow()"
    )


def terminate_workers(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name LIKE 'dbmigrate-backfill%%' AND pid <> pg_backend_pid()"
    ).fetchone()
    return int(row[0]) if row else 0


def run_cli_terminating(
    dsn: str, conn: psycopg.Connection[Any], args: list[str], checkpoint: str, at: list[int]
) -> tuple[Any, int]:
    """Run the CLI; terminate its session each time the checkpoint passes a row count in `at`."""
    import subprocess
    import sys

    from tests.integration.backfill_helpers import cli_env

    proc = subprocess.Popen(
        [sys.executable, "-m", "dbmigrate", "backfill", *args],
        env=cli_env(dsn),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    terminated = 0
    try:
        for threshold in at:
            deadline = time.monotonic() + 30
            while rows_done(conn, checkpoint) < threshold and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.013)  # somewhere inside a batch
            terminated += terminate_workers(conn)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), terminated


def test_terminated_connection_is_reconnected_and_resumed_exactly_once(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    rows = 12_000
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", rows)
    slow_batches(pg_conn, "items")
    args = [
        "--table",
        "items",
        "--set",
        COUNTER_SET,  # not idempotent: a batch applied twice would show as n = 2
        "--checkpoint",
        "blip",
        "--batch-size",
        "150",
        "--max-batch-size",
        "150",
    ]
    proc, terminated = run_cli_terminating(pg_dsn, pg_conn, args, "blip", [2000, 5000, 8000])
    assert terminated == 3
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    reconnects = [line for line in lines if "lost the database connection" in line]
    assert len(reconnects) == 3, lines
    assert all(line.startswith("retry 1 in ") for line in reconnects)
    assert lines[-1].startswith(f"done: {rows:,} rows in "), lines[-1]
    pg_conn.execute("DROP TRIGGER slow ON items")
    assert_same_as_single_update(pg_conn, "items", COUNTER_SET)
    assert pg_conn.execute("SELECT min(n), max(n), count(*) FROM items").fetchone() == (1, 1, rows)
    assert rows_done(pg_conn, "blip") == rows
    (cp,) = read_checkpoints(pg_conn, "blip")
    assert cp.finished


@pytest.fixture
def limited_role(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> Any:
    """A login role that is not a superuser (a superuser ignores connection limits), with what
    a backfill worker needs, and its DSN; dropped at the end (roles are per server)."""
    role = f"w_{uuid.uuid4().hex[:10]}"
    password = "w-" + uuid.uuid4().hex
    dbname = conninfo_to_dict(pg_dsn)["dbname"]
    pg_conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    pg_conn.execute(f'GRANT CREATE ON DATABASE "{dbname}" TO {role}')
    dsn = make_conninfo(pg_dsn, user=role, password=password)
    try:
        yield role, dsn
    finally:
        pg_conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        pg_conn.execute(f"DROP OWNED BY {role}")
        pg_conn.execute(f"DROP ROLE {role}")


def test_connections_refused_53300_exit_with_the_retryable_code(
    pg_conn: psycopg.Connection[Any], limited_role: tuple[str, str]
) -> None:
    role, dsn = limited_role
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 100)
    pg_conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")
    t0 = time.monotonic()
    proc = cli(dsn, "--table", "items", "--set", "n = 1", "--max-reconnects", "2")
    assert proc.returncode == EXIT_RETRYABLE, proc.stderr
    assert time.monotonic() - t0 < 20
    # 53300, but libpq reports no SQLSTATE for a connection it could not open: only the text.
    assert "too many connections for role" in proc.stderr
    assert "3 times in a row" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert dsn not in proc.stderr + proc.stdout
    assert proc.stdout.count("retry ") == 2


def test_lasting_outage_mid_run_exits_retryable_and_the_retry_resumes(
    pg_dsn: str, pg_conn: psycopg.Connection[Any], limited_role: tuple[str, str]
) -> None:
    role, dsn = limited_role
    rows = 6000
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", rows)
    pg_conn.execute(f"GRANT SELECT, UPDATE ON items TO {role}")
    slow_batches(pg_conn, "items")
    args = ["--table", "items", "--set", COUNTER_SET, "--checkpoint", "outage"]
    args += ["--batch-size", "100", "--max-batch-size", "100", "--max-reconnects", "2"]

    def block_then_terminate() -> None:
        deadline = time.monotonic() + 30
        while rows_done(pg_conn, "outage") < 1500 and time.monotonic() < deadline:
            time.sleep(0.005)
        pg_conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT 0")  # no new session from now on
        terminate_workers(pg_conn)

    blocker = threading.Thread(target=block_then_terminate)
    blocker.start()
    try:
        proc = cli(dsn, *args)
    finally:
        blocker.join()
    assert proc.returncode == EXIT_RETRYABLE, proc.stderr
    assert "3 times in a row" in proc.stderr
    assert "too many connections for role" in proc.stderr
    stopped_at = rows_done(pg_conn, "outage")
    assert 1500 <= stopped_at < rows
    assert pg_conn.execute("SELECT count(*) FROM items WHERE n = 1").fetchone() == (stopped_at,)
    # The database is back: the Job's next pod resumes from the checkpoint.
    pg_conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT -1")
    again = cli(dsn, *args)
    assert again.returncode == 0, again.stderr
    assert f"resumed after {stopped_at:,} rows" in again.stdout
    assert pg_conn.execute("SELECT min(n), max(n), count(*) FROM items").fetchone() == (1, 1, rows)


@pytest.mark.parametrize(
    ("dsn_of", "expected"),
    [
        pytest.param(
            lambda dsn: (
                f"postgresql://someone:s3cret-pw@127.0.0.1:{free_port()}/db?connect_timeout=2"
            ),
            "Connection refused",
            id="refused",
        ),
        # libpq gives no SQLSTATE for a connection it could not open, so these are retried
        # too (a bounded number of times): the next pod reads the DSN secret again, which
        # may have been fixed meanwhile.
        pytest.param(
            lambda dsn: make_conninfo(dsn, password="s3cret-pw-wrong"),
            "password authentication failed",
            id="wrong-password",
        ),
        pytest.param(
            lambda dsn: make_conninfo(dsn, dbname="no_such_db"),
            'database "no_such_db" does not exist',
            id="missing-database",
        ),
    ],
)
def test_connection_that_cannot_be_opened_exits_retryable(
    pg_dsn: str, dsn_of: Any, expected: str
) -> None:
    dsn = dsn_of(pg_dsn)
    t0 = time.monotonic()
    proc = cli(dsn, "--table", "t", "--set", "a = 1", "--max-reconnects", "1")
    assert proc.returncode == EXIT_RETRYABLE, proc.stderr
    assert proc.stderr.startswith("dbmigrate backfill: error: cannot connect to the database: ")
    assert expected in proc.stderr
    assert "2 times in a row" in proc.stderr
    assert "s3cret-pw" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 20


def test_invalid_dsn_fails_at_once() -> None:
    """A DSN that does not parse is a usage error (the Job fails at once), told without a word
    of the DSN: libpq's parse errors quote the piece they choke on."""
    proc = cli("host=127.0.0.1 no_such_option=s3cret-pw", "--table", "t", "--set", "a = 1")
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "the DSN in DBMIGRATE_DSN is malformed" in proc.stderr
    assert "s3cret" not in proc.stderr
    assert "Traceback" not in proc.stderr
