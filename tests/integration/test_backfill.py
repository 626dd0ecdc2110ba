"""The backfill worker against real PostgreSQL: `dbmigrate.db.backfill` and `dbmigrate backfill`.

Aspects covered:
- result equals one UPDATE of the whole table, for single, gapped, text, uuid and composite
  primary keys (the `set` increments a counter, so a row done twice would show);
- `where` filters the rows touched and the rows counted;
- rows inserted while the backfill runs do not keep it from ending;
- a worker PROCESS killed with SIGKILL three times resumes from its checkpoint, exactly once;
- expected failures are clear and write nothing: no primary key, missing table, bad SQL in
  `set`/`where` (SQLSTATE + server message, no traceback, no DSN in the output);
- parallel workers 0/2 and 1/2 together cover every row exactly once, and share one plan;
- a second process on the same slice waits instead of doing batches twice;
- lock timeouts are retried (and reported), statement timeouts shrink the batch, exhausted
  retries fail with the SQLSTATE and record it in the checkpoint;
- throttling on active sessions is reported and waited out;
- the progress readout (`read_backfill_progress`) mid-run and at the end, with and without
  `where`; the CLI's log lines, summary and exit codes; the worker's Prometheus metrics.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import psycopg
import pytest

from dbmigrate.db.backfill import (
    BackfillEvent,
    BackfillOptions,
    BackfillResult,
    BackfillSqlError,
    BackfillSummary,
    BatchDone,
    CheckpointMismatch,
    NoPrimaryKey,
    Retrying,
    Started,
    Throttled,
    read_backfill_progress,
    read_checkpoints,
    run_backfill,
)
from dbmigrate_dev.postgres import free_port
from tests.integration.backfill_helpers import (
    COUNTER_SET,
    assert_same_as_single_update,
    cli,
    cli_env,
    make_table,
)


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


def backfill(dsn: str, **kwargs: Any) -> tuple[BackfillResult, list[BackfillEvent]]:
    events: list[BackfillEvent] = []
    stop = kwargs.pop("stop", None)
    with connect(dsn) as conn:
        result = run_backfill(conn, BackfillOptions(**kwargs), on_event=events.append, stop=stop)
    return result, events


# ---------------------------------------------------------------------------------------------
# the result equals one UPDATE


KEY_SHAPES = [
    pytest.param("id bigserial PRIMARY KEY", "g", id="bigserial"),
    pytest.param("id int PRIMARY KEY", "g * 7 + (g % 5) * 1000000", id="int-with-gaps"),
    pytest.param("id text PRIMARY KEY", "'k' || g", id="text"),
    pytest.param("id uuid PRIMARY KEY", "md5(g::text)::uuid", id="uuid"),
    pytest.param(
        "tenant int, seq int, PRIMARY KEY (tenant, seq)", "g % 7, g", id="composite-int-int"
    ),
    pytest.param(
        "region text, at timestamptz, PRIMARY KEY (region, at)",
        "'r' || (g % 3), timestamptz '2024-01-01' + g * interval '1 second'",
        id="composite-text-timestamptz",
    ),
]


@pytest.mark.parametrize(("key_ddl", "key_expr"), KEY_SHAPES)
def test_result_equals_one_update(
    pg_dsn: str, pg_conn: psycopg.Connection[Any], key_ddl: str, key_expr: str
) -> None:
    make_table(pg_conn, "items", key_ddl, key_expr, 5000)
    result, events = backfill(
        pg_dsn, table="items", set=COUNTER_SET, batch_size=100, max_batch_size=700
    )
    assert result.rows == 5000
    assert result.batches >= 5000 // 700
    assert max(result.batch_sizes) <= 700
    assert_same_as_single_update(pg_conn, "items", COUNTER_SET)
    assert pg_conn.execute("SELECT min(n), max(n) FROM items").fetchone() == (1, 1)
    (cp,) = read_checkpoints(pg_conn, result.checkpoint)
    assert cp.finished
    assert cp.rows_done == 5000
    assert cp.last_key == cp.upper_key
    assert sum(e.rows for e in events if isinstance(e, BatchDone)) == 5000


def test_schema_qualified_and_mixed_case_table(pg_dsn: str, pg_conn: psycopg.Connection[Any]):
    pg_conn.execute('CREATE SCHEMA app; CREATE TABLE app."Orders" (id int PRIMARY KEY, n int)')
    pg_conn.execute('INSERT INTO app."Orders" SELECT g, 0 FROM generate_series(1, 300) g')
    result, _ = backfill(pg_dsn, table='app."Orders"', set="n = n + 1", batch_size=50)
    assert result.rows == 300
    assert pg_conn.execute('SELECT sum(n) FROM app."Orders"').fetchone() == (300,)


def test_empty_table_finishes_at_once(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    pg_conn.execute("CREATE TABLE empty (id int PRIMARY KEY, n int)")
    result, _ = backfill(pg_dsn, table="empty", set="n = 1", checkpoint="e")
    assert (result.rows, result.stopped) == (0, False)
    progress = read_backfill_progress(pg_conn, "e")
    assert (progress.rows_done, progress.percent) == (0, 100)


def test_where_filter(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 6000)
    result, _ = backfill(
        pg_dsn, table="items", set=COUNTER_SET, where="flag", batch_size=200, checkpoint="w"
    )
    assert result.rows == 2000  # every third row
    assert_same_as_single_update(pg_conn, "items", COUNTER_SET, "flag")
    assert pg_conn.execute("SELECT count(*) FROM items WHERE n = 0").fetchone() == (4000,)
    progress = read_backfill_progress(pg_conn, "w")
    assert (progress.rows_done, progress.rows_estimated, progress.percent) == (2000, 2000, 100)


def test_rerun_of_finished_checkpoint_does_nothing(pg_dsn: str, pg_conn: psycopg.Connection[Any]):
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 500)
    first, _ = backfill(pg_dsn, table="items", set=COUNTER_SET)
    again, _ = backfill(pg_dsn, table="items", set=COUNTER_SET)
    assert first.checkpoint == again.checkpoint  # the default name is stable
    assert (again.already_finished, again.rows, again.rows_total) == (True, 0, 500)
    assert pg_conn.execute("SELECT max(n) FROM items").fetchone() == (1,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"set": "n = n + 2"}, "belongs to another backfill", id="other-set"),
        pytest.param({"where": "flag"}, "belongs to another backfill", id="other-where"),
        pytest.param({"workers": 2}, "planned for 1 workers, not 2", id="other-worker-count"),
    ],
)
def test_checkpoint_of_another_backfill_is_refused(
    pg_dsn: str, pg_conn: psycopg.Connection[Any], change: dict[str, Any], message: str
) -> None:
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 100)
    base = {"table": "items", "set": COUNTER_SET, "checkpoint": "c1"}
    backfill(pg_dsn, **base)
    with pytest.raises(CheckpointMismatch, match=message):
        backfill(pg_dsn, **{**base, **change})


# ---------------------------------------------------------------------------------------------
# concurrency: inserts, parallel workers, a second process on a slice


def test_concurrent_inserts_do_not_keep_it_from_ending(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
):
    pg_conn.execute("CREATE TABLE users (id bigserial PRIMARY KEY, verified boolean)")
    pg_conn.execute("INSERT INTO users (verified) SELECT NULL FROM generate_series(1, 20000)")
    stop = threading.Event()
    inserted = [0]

    def insert() -> None:
        with connect(pg_dsn) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO users (verified) SELECT NULL FROM generate_series(1, 50)")
                inserted[0] += 50
                time.sleep(0.002)

    inserter = threading.Thread(target=insert)
    inserter.start()
    try:
        time.sleep(0.05)
        t0 = time.monotonic()
        result, _ = backfill(
            pg_dsn,
            table="users",
            set="verified = true",
            where="verified IS NULL",
            batch_size=500,
            max_batch_size=500,
            pause_seconds=0.005,
            checkpoint="ins",
        )
        elapsed = time.monotonic() - t0
        inserted_during = inserted[0]
    finally:
        stop.set()
        inserter.join()
    (cp,) = read_checkpoints(pg_conn, "ins")
    upper = int(cp.upper_key.strip("[]"))  # type: ignore[union-attr]
    assert inserted_during > 1000  # the table really grew while the backfill ran
    assert elapsed < 30
    assert not result.stopped
    assert upper >= 20000
    assert result.rows == upper  # everything up to the key captured at start
    assert pg_conn.execute(
        "SELECT count(*) FROM users WHERE id <= %s AND verified IS NULL", (upper,)
    ).fetchone() == (0,)
    # Rows that arrived after the start are the application's business, not the backfill's.
    assert pg_conn.execute("SELECT count(*) FROM users WHERE id > %s", (upper,)).fetchone()[0] > 0


@pytest.mark.parametrize(("key_ddl", "key_expr"), [KEY_SHAPES[1], KEY_SHAPES[3], KEY_SHAPES[4]])
def test_parallel_workers_cover_everything_once(
    pg_dsn: str, pg_conn: psycopg.Connection[Any], key_ddl: str, key_expr: str
) -> None:
    make_table(pg_conn, "items", key_ddl, key_expr, 8000)
    results: dict[int, BackfillResult] = {}
    barrier = threading.Barrier(2)

    def work(worker: int) -> None:
        barrier.wait()
        results[worker], _ = backfill(
            pg_dsn,
            table="items",
            set=COUNTER_SET,
            worker=worker,
            workers=2,
            checkpoint="par",
            batch_size=300,
            max_batch_size=300,
        )

    threads = [threading.Thread(target=work, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1]
    assert results[0].rows + results[1].rows == 8000
    assert min(results[0].rows, results[1].rows) > 8000 * 0.3  # slices of similar size
    assert_same_as_single_update(pg_conn, "items", COUNTER_SET)
    cps = read_checkpoints(pg_conn, "par")
    assert [c.worker for c in cps] == [0, 1]
    assert cps[0].slice_lower is None
    assert cps[1].slice_lower == cps[0].upper_key
    progress = read_backfill_progress(pg_conn, "par")
    assert (progress.rows_done, progress.percent, progress.workers) == (8000, 100, 2)


def test_workers_starting_apart_share_one_plan(pg_dsn: str, pg_conn: psycopg.Connection[Any]):
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 4000)
    second, _ = backfill(
        pg_dsn, table="items", set=COUNTER_SET, worker=1, workers=2, checkpoint="p"
    )
    # Rows added between the two workers' starts: the plan (slices, upper key) is not redone.
    pg_conn.execute(
        "INSERT INTO items SELECT g, 0, 'late', false FROM generate_series(4001, 6000) g"
    )
    first, _ = backfill(pg_dsn, table="items", set=COUNTER_SET, worker=0, workers=2, checkpoint="p")
    assert (first.rows, second.rows) == (2000, 2000)
    counts = pg_conn.execute(
        "SELECT count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n = 0), "
        "count(*) FILTER (WHERE n > 1) FROM items"
    ).fetchone()
    assert counts == (4000, 2000, 0)


def test_second_process_on_a_slice_waits(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 3000)
    opts = {
        "table": "items",
        "set": COUNTER_SET,
        "checkpoint": "dup",
        "batch_size": 100,
        "max_batch_size": 100,
        "pause_seconds": 0.01,
    }
    results: list[tuple[BackfillResult, list[BackfillEvent]]] = []
    first = threading.Thread(target=lambda: results.append(backfill(pg_dsn, **opts)))
    first.start()
    deadline = time.monotonic() + 10
    while not read_checkpoints(pg_conn, "dup") and time.monotonic() < deadline:
        time.sleep(0.01)
    second_result, second_events = backfill(pg_dsn, **opts)
    first.join()
    assert any(isinstance(e, Throttled) and "another session" in e.reason for e in second_events)
    assert second_result.already_finished  # it waited until the first one was done
    assert results[0][0].rows == 3000
    assert pg_conn.execute("SELECT min(n), max(n) FROM items").fetchone() == (1, 1)


# ---------------------------------------------------------------------------------------------
# kill the worker process, resume from the checkpoint


def test_killed_worker_process_resumes_exactly_once(pg_dsn: str, pg_conn: psycopg.Connection[Any]):
    rows = 20_000
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", rows)
    # Each batch's transaction stays open ~20 ms after its UPDATE, so a kill lands inside a
    # batch most of the time (its UPDATE done, the checkpoint not yet committed).
    pg_conn.execute(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$;"
        "CREATE TRIGGER slow AFTER UPDATE ON items FOR EACH STATEMENT EXECUTE FUNCTION slow()"
    )
    args = [
        "--table",
        "items",
        "--set",
        COUNTER_SET,
        "--checkpoint",
        "kill",
        "--batch-size",
        "150",
        "--max-batch-size",
        "150",
        "--progress-interval",
        "100ms",
    ]
    progress_at_kill = []
    states_at_kill = []
    for _ in range(3):
        before = _rows_done(pg_conn, "kill")
        proc = subprocess.Popen(
            [sys.executable, "-m", "dbmigrate", "backfill", *args],
            env=cli_env(pg_dsn),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while _rows_done(pg_conn, "kill") < before + 2000 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.013)  # land somewhere inside a batch
            states_at_kill.append(_worker_session_state(pg_conn))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        _wait_until_backfill_sessions_end(pg_conn)  # its last batch is rolled back by then
        progress_at_kill.append(_rows_done(pg_conn, "kill"))
    assert 0 < progress_at_kill[0] < progress_at_kill[1] < progress_at_kill[2] < rows
    # At least one kill hit a batch in flight (its UPDATE done, its commit not yet).
    assert {"active", "idle in transaction"} & set(states_at_kill), states_at_kill
    done = cli(pg_dsn, *args)
    assert done.returncode == 0, done.stderr
    assert "resuming after" in done.stdout
    assert f"resumed after {progress_at_kill[2]:,} rows" in done.stdout
    pg_conn.execute("DROP TRIGGER slow ON items")
    assert_same_as_single_update(pg_conn, "items", COUNTER_SET)
    assert pg_conn.execute("SELECT min(n), max(n) FROM items").fetchone() == (1, 1)
    assert _rows_done(pg_conn, "kill") == rows


def _worker_session_state(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute(
        "SELECT state FROM pg_stat_activity WHERE application_name LIKE 'dbmigrate-backfill%'"
    ).fetchone()
    return row[0] if row else None


def _wait_until_backfill_sessions_end(conn: psycopg.Connection[Any]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name LIKE 'dbmigrate-backfill%'"
        ).fetchone()
        if row == (0,):
            return
        time.sleep(0.01)
    raise AssertionError("the killed worker's session did not end")


def _rows_done(conn: psycopg.Connection[Any], name: str) -> int:
    return sum(c.rows_done for c in read_checkpoints(conn, name))


# ---------------------------------------------------------------------------------------------
# expected failures


def test_no_primary_key_is_refused_before_anything_is_written(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    pg_conn.execute("CREATE TABLE nokey (id int, n int)")
    pg_conn.execute("INSERT INTO nokey SELECT g, 0 FROM generate_series(1, 100) g")
    with pytest.raises(NoPrimaryKey, match="has no primary key"):
        backfill(pg_dsn, table="nokey", set="n = 1")
    proc = cli(pg_dsn, "--table", "nokey", "--set", "n = 1")
    assert proc.returncode == 1
    assert "error: table public.nokey has no primary key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert pg_conn.execute("SELECT sum(n) FROM nokey").fetchone() == (0,)
    assert pg_conn.execute("SELECT to_regnamespace('dbmigrate')").fetchone() == (None,)


@pytest.mark.parametrize(
    ("args", "expected", "rows_written"),
    [
        pytest.param(
            ["--table", "missing", "--set", "n = 1"],
            "table missing does not exist",
            0,
            id="missing-table",
        ),
        pytest.param(
            ["--table", "items", "--set", "nope = 1"],
            '42703: column "nope" of relation "items" does not exist',
            0,
            id="unknown-column-in-set",
        ),
        pytest.param(
            ["--table", "items", "--set", "n = 1", "--where", "flag IS"],
            "42601: syntax error",
            0,
            id="syntax-error-in-where",
        ),
        pytest.param(
            ["--table", "items", "--set", "n = 1", "--where", "n"],
            "42804: argument of WHERE must be type boolean",
            0,
            id="where-not-boolean",
        ),
        pytest.param(
            ["--table", "items", "--set", "n = 1; DROP TABLE items"],
            "42601: cannot insert multiple commands",
            0,
            id="two-statements",
        ),
        # The first two batches commit; the third hits id 300 and is rolled back.
        pytest.param(
            ["--table", "items", "--set", "n = 1 + 0 / (id - 300)"],
            "22012: division by zero",
            200,
            id="runtime-error-in-third-batch",
        ),
    ],
)
def test_cli_reports_sql_errors_clearly(
    pg_dsn: str,
    pg_conn: psycopg.Connection[Any],
    args: list[str],
    expected: str,
    rows_written: int,
) -> None:
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 1000)
    proc = cli(pg_dsn, *args, "--batch-size", "100", "--max-batch-size", "100")
    assert proc.returncode == 1
    assert proc.stderr.startswith("dbmigrate backfill: error: ")
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    password = psycopg.conninfo.conninfo_to_dict(pg_dsn)["password"]
    assert password not in proc.stderr + proc.stdout
    assert pg_conn.execute("SELECT count(*) FROM items WHERE n <> 0").fetchone() == (rows_written,)
    assert pg_conn.execute("SELECT to_regclass('items') IS NOT NULL").fetchone() == (True,)


def test_runtime_error_is_recorded_in_the_checkpoint(pg_dsn: str, pg_conn: psycopg.Connection[Any]):
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 1000)
    with pytest.raises(BackfillSqlError) as info:
        backfill(
            pg_dsn,
            table="items",
            set="n = 1 + 0 / (id - 300)",
            batch_size=100,
            max_batch_size=100,
            checkpoint="z",
        )
    assert info.value.sqlstate == "22012"
    (cp,) = read_checkpoints(pg_conn, "z")
    assert cp.last_error is not None
    assert cp.last_error.startswith("22012: division by zero")
    assert cp.rows_done == 200  # the two batches before the failing one
    assert cp.last_key == "[200]"
    assert pg_conn.execute("SELECT count(*), max(id) FROM items WHERE n <> 0").fetchone() == (
        200,
        200,
    )


def test_cli_needs_the_dsn_in_the_environment() -> None:
    proc = cli(None, "--table", "t", "--set", "a = 1")
    assert proc.returncode == 1
    assert "set DBMIGRATE_DSN" in proc.stderr


# ---------------------------------------------------------------------------------------------
# retries and throttling


def test_lock_timeout_is_retried_until_the_lock_goes(pg_dsn: str, pg_conn: psycopg.Connection[Any]):
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 1000)
    holder = connect(pg_dsn)
    holder.autocommit = False
    holder.execute("SELECT * FROM items WHERE id = 10 FOR UPDATE")
    timer = threading.Timer(1.0, holder.rollback)
    timer.start()
    try:
        result, events = backfill(
            pg_dsn, table="items", set=COUNTER_SET, lock_timeout_seconds=0.1, batch_size=100
        )
    finally:
        timer.join()
        holder.close()
    retries = [e for e in events if isinstance(e, Retrying)]
    assert retries
    assert all(e.error.startswith("55P03: canceling statement") for e in retries)
    assert result.rows == 1000
    assert_same_as_single_update(pg_conn, "items", COUNTER_SET)


def test_retries_exhausted_fail_with_sqlstate(pg_dsn: str, pg_conn: psycopg.Connection[Any]):
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 500)
    with connect(pg_dsn) as holder:
        holder.autocommit = False
        holder.execute("SELECT * FROM items WHERE id = 1 FOR UPDATE")
        with pytest.raises(BackfillSqlError, match="failed 3 times in a row: 55P03") as info:
            backfill(
                pg_dsn,
                table="items",
                set="n = 1",
                lock_timeout_seconds=0.05,
                max_retries=2,
                checkpoint="locked",
            )
        holder.rollback()
    assert info.value.sqlstate == "55P03"
    (cp,) = read_checkpoints(pg_conn, "locked")
    assert cp.last_error is not None
    assert cp.last_error.startswith("55P03")
    assert cp.rows_done == 0
    assert pg_conn.execute("SELECT count(*) FROM items WHERE n <> 0").fetchone() == (0,)


def test_table_locked_by_ddl_is_waited_for_with_the_lock_timeout(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 500)
    with connect(pg_dsn) as holder:
        holder.autocommit = False
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        with pytest.raises(BackfillSqlError, match="waited for a lock on items 3 times") as info:
            backfill(
                pg_dsn,
                table="items",
                set="n = 1",
                lock_timeout_seconds=0.05,
                max_retries=2,
                checkpoint="ddl",
            )
        assert time.monotonic() - t0 < 5
        holder.rollback()
    assert info.value.sqlstate == "55P03"
    assert read_checkpoints(pg_conn, "ddl") == []
    assert pg_conn.execute("SELECT count(*) FROM items WHERE n <> 0").fetchone() == (0,)


def test_statement_timeout_shrinks_the_batch(pg_dsn: str, pg_conn: psycopg.Connection[Any]):
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 600)
    # 2 ms per row: a batch of 400 needs 0.8 s, over the 0.3 s statement timeout.
    slow_set = "n = n + 1 + (SELECT 0 FROM pg_sleep(0.002 + id * 0))"  # correlated: per row
    result, events = backfill(
        pg_dsn,
        table="items",
        set=slow_set,
        batch_size=400,
        max_batch_size=400,
        statement_timeout_seconds=0.3,
        target_batch_seconds=0.1,
    )
    retries = [e for e in events if isinstance(e, Retrying)]
    assert retries
    assert retries[0].error.startswith("57014")
    assert [r.batch_size for r in retries[:2]] == [200, 100]
    assert result.rows == 600
    assert max(result.batch_sizes) <= 100
    assert pg_conn.execute("SELECT min(n), max(n) FROM items").fetchone() == (1, 1)


def busy_session(dsn: str, seconds: float) -> threading.Thread:
    """A session that stays active for `seconds` (or until its query is cancelled)."""

    def run() -> None:
        with connect(dsn) as conn, contextlib.suppress(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(%s)", (seconds,))

    return threading.Thread(target=run)


def test_waits_while_too_many_sessions_are_active(pg_dsn: str, pg_conn: psycopg.Connection[Any]):
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 300)
    busy = busy_session(pg_dsn, 1.5)
    busy.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    try:
        result, events = backfill(pg_dsn, table="items", set="n = 1", max_active_sessions=0)
    finally:
        busy.join()
    throttled = [e for e in events if isinstance(e, Throttled)]
    assert throttled
    assert throttled[0].reason == "1 active sessions > 0"
    assert time.monotonic() - t0 >= 1.0  # it waited for the busy session
    assert result.rows == 300


def test_cli_prints_throttling(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 300)
    busy = busy_session(pg_dsn, 60)
    busy.start()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dbmigrate",
            "backfill",
            "--table",
            "items",
            "--set",
            "n = 1",
            "--max-active-sessions",
            "0",
        ],
        env=cli_env(pg_dsn),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("waiting:"):
                break
        # It waits, and writes nothing, until the busy session is gone.
        assert pg_conn.execute("SELECT count(*) FROM items WHERE n <> 0").fetchone() == (0,)
    finally:
        pg_conn.execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'SELECT pg_sleep%%' AND pid <> pg_backend_pid()"
        )
        busy.join()
    lines += proc.stdout.read().splitlines()
    assert proc.wait(timeout=30) == 0
    assert "waiting: 1 active sessions > 0" in lines
    assert lines[-1].startswith("done: 300 rows")
    assert pg_conn.execute("SELECT count(*) FROM items WHERE n = 1").fetchone() == (300,)


# ---------------------------------------------------------------------------------------------
# progress


def _stop_after(batches: int) -> tuple[threading.Event, Any]:
    stop = threading.Event()
    seen = [0]

    def on_event(event: BackfillEvent) -> None:
        if isinstance(event, BatchDone):
            seen[0] += 1
            if seen[0] >= batches:
                stop.set()

    return stop, on_event


@pytest.mark.parametrize(
    ("where", "matching"),
    [
        pytest.param(None, 9000, id="all-rows"),
        # The set makes the where false: remaining rows must still be counted honestly.
        pytest.param("v IS NOT NULL AND n = 0", 9000, id="where-turned-false-by-set"),
        pytest.param("flag", 3000, id="where-third-of-rows"),
    ],
)
def test_progress_mid_run_and_at_the_end(
    pg_dsn: str, pg_conn: psycopg.Connection[Any], where: str | None, matching: int
) -> None:
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 9000)
    assert read_backfill_progress(pg_conn, "prog") == BackfillSummary(rows_done=0)
    stop, on_event = _stop_after(3)
    with connect(pg_dsn) as conn:
        partial = run_backfill(
            conn,
            BackfillOptions(
                table="items",
                set=COUNTER_SET,
                where=where,
                checkpoint="prog",
                batch_size=900,
                max_batch_size=900,
            ),
            on_event=on_event,
            stop=stop,
        )
    assert partial.stopped
    assert partial.batches == 3
    done_rows = matching * 3 // 10  # 3 of 10 equal key ranges
    assert partial.rows == done_rows
    progress = read_backfill_progress(pg_conn, "prog")
    assert progress.rows_done == done_rows
    assert progress.rows_estimated == matching  # counted exactly: a small table
    assert progress.percent == 30
    assert progress.rows_per_second is not None
    assert progress.rows_per_second > 0
    assert progress.eta is not None
    assert progress.eta != "0s"

    final, _ = backfill(
        pg_dsn,
        table="items",
        set=COUNTER_SET,
        where=where,
        checkpoint="prog",
        batch_size=900,
        max_batch_size=900,
    )
    assert final.rows == matching - done_rows
    progress = read_backfill_progress(pg_conn, "prog")
    assert (progress.rows_done, progress.rows_estimated, progress.percent, progress.eta) == (
        matching,
        matching,
        100,
        "0s",
    )
    assert progress.rows_per_second is not None
    assert progress.rows_per_second > 0


def test_progress_of_a_big_table_is_estimated_without_counting(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    pg_conn.execute("CREATE TABLE big (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0)")
    pg_conn.execute("INSERT INTO big SELECT g FROM generate_series(1, 150000) g")
    pg_conn.execute("ANALYZE big")
    stop, on_event = _stop_after(1)
    with connect(pg_dsn) as conn:
        run_backfill(
            conn,
            BackfillOptions(
                table="big", set="n = 1", checkpoint="big", batch_size=30000, max_batch_size=30000
            ),
            on_event=on_event,
            stop=stop,
        )
    progress = read_backfill_progress(pg_conn, "big")
    assert progress.rows_done == 30000
    assert progress.rows_estimated is not None
    assert 150000 * 0.9 <= progress.rows_estimated <= 150000 * 1.1  # the planner's estimate
    assert progress.percent is not None
    assert 18 <= progress.percent <= 22


def test_cli_log_lines_and_summary(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 3000)
    proc = cli(
        pg_dsn,
        "--table",
        "items",
        "--set",
        COUNTER_SET,
        "--batch-size",
        "100",
        "--max-batch-size",
        "100",
        "--pause",
        "5ms",
        "--progress-interval",
        "50ms",
        "--checkpoint",
        "cli",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        "backfill public.items (key id), worker 0/1, checkpoint 'cli': starting; ~3,000 rows"
    )
    assert any(
        line.startswith(("1,", "2,")) and "/3,000 rows (" in line and "rows/s" in line
        for line in lines[1:-1]
    )
    assert lines[-1].startswith("done: 3,000 rows in ")
    assert lines[-1].endswith("rows/s, 30 batches)")
    again = cli(pg_dsn, "--table", "items", "--set", COUNTER_SET, "--checkpoint", "cli")
    assert again.returncode == 0
    assert "already finished (3,000 rows); nothing to do" in again.stdout


def test_cli_sigterm_stops_after_the_current_batch(pg_dsn: str, pg_conn: psycopg.Connection[Any]):
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 5000)
    args = [
        "--table",
        "items",
        "--set",
        COUNTER_SET,
        "--batch-size",
        "100",
        "--max-batch-size",
        "100",
        "--pause",
        "20ms",
        "--checkpoint",
        "term",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbmigrate", "backfill", *args],
        env=cli_env(pg_dsn),
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while _rows_done(pg_conn, "term") < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 143
    assert "stopped by SIGTERM after" in out
    assert "run the same command again to resume" in out
    stopped_at = _rows_done(pg_conn, "term")
    assert 500 <= stopped_at < 5000
    assert pg_conn.execute("SELECT count(*) FROM items WHERE n = 1").fetchone() == (stopped_at,)
    assert cli(pg_dsn, *args).returncode == 0
    assert pg_conn.execute("SELECT min(n), max(n) FROM items").fetchone() == (1, 1)


def test_worker_metrics(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    make_table(pg_conn, "items", "id bigint PRIMARY KEY", "g", 2000)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dbmigrate",
            "backfill",
            "--table",
            "items",
            "--set",
            "n = 1",
            "--batch-size",
            "100",
            "--max-batch-size",
            "100",
            "--pause",
            "50ms",
            "--checkpoint",
            "m",
            "--metrics-port",
            str(port),
            "--metrics-address",
            "127.0.0.1",
        ],
        env=cli_env(pg_dsn),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        text = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                text = ""
            if (
                'dbmigrate_backfill_rows_total{checkpoint="m",worker="0"} ' in text
                and _rows_done(pg_conn, "m") >= 300
            ):
                break
            time.sleep(0.05)
    finally:
        proc.wait(timeout=30)
    samples = _samples(text)
    assert samples['dbmigrate_backfill_rows_total{checkpoint="m",worker="0"}'] >= 100
    assert samples['dbmigrate_backfill_batch_size{checkpoint="m",worker="0"}'] == 100
    assert (
        samples['dbmigrate_backfill_batch_duration_seconds_count{checkpoint="m",worker="0"}'] >= 1
    )
    assert proc.returncode == 0


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_progress_estimate_of_a_new_column_without_statistics(pg_conn: psycopg.Connection) -> None:
    """The migration's own column has no planner statistics: `IS NULL` would be guessed at
    0.5 % of the table, so a quarter-done backfill must not claim to be nearly finished."""
    rows = 150_000  # above the small-table threshold: estimated, not counted
    pg_conn.execute("CREATE TABLE big (id bigint PRIMARY KEY, v int)")
    pg_conn.execute("INSERT INTO big SELECT g, g FROM generate_series(1, %s) g", (rows,))
    pg_conn.execute("ANALYZE big")
    pg_conn.execute("ALTER TABLE big ADD COLUMN flag boolean")  # no statistics for it
    stop = threading.Event()
    seen: list[int] = []

    def stop_after_a_quarter(event: Any) -> None:
        if isinstance(event, BatchDone):
            seen.append(event.rows_done)
            if event.rows_done >= rows // 4:
                stop.set()

    opts = BackfillOptions(
        table="big",
        set="flag = (v % 2 = 0)",
        where="flag IS NULL",
        batch_size=5000,
        max_batch_size=5000,
        checkpoint="estimate",
    )
    run_backfill(pg_conn, opts, on_event=stop_after_a_quarter, stop=stop)
    progress = read_backfill_progress(pg_conn, "estimate")
    assert progress.rows_done == seen[-1]
    assert progress.rows_estimated is not None
    assert abs(progress.rows_estimated - rows) / rows < 0.05
    assert progress.percent is not None
    assert 20 <= progress.percent <= 35


FIRST_ESTIMATE_ROWS = 200_000


@pytest.mark.parametrize(
    ("before", "after", "where", "matching"),
    [
        pytest.param("", "", "flag IS NULL", FIRST_ESTIMATE_ROWS, id="never-analysed"),
        pytest.param(
            "",
            "ANALYZE big; ALTER TABLE big ADD COLUMN flag boolean",
            "flag IS NULL",
            FIRST_ESTIMATE_ROWS,
            id="column-added-after-analyze",
        ),
        pytest.param(
            "",
            "",
            "flag IS NULL AND v % 3 = 0",
            FIRST_ESTIMATE_ROWS // 3,
            id="never-analysed-a-third-matches",
        ),
    ],
)
def test_first_estimate_without_statistics_comes_from_the_key_range(
    pg_conn: psycopg.Connection, before: str, after: str, where: str, matching: int
) -> None:
    """The worker's first estimate (its Started event, what `dbmigrate apply` prints first)
    on a 200 000-row table the planner has no statistics for: the key range and the density
    of its first rows, not the planner's 0.5 % guess for `IS NULL` ("~333 rows")."""
    column = "" if "ADD COLUMN" in after else ", flag boolean"
    pg_conn.execute(f"CREATE TABLE big (id bigserial PRIMARY KEY, v int{column})")
    for statement in filter(None, before.split("; ")):
        pg_conn.execute(statement)
    pg_conn.execute(
        "INSERT INTO big (v) SELECT g FROM generate_series(1, %s) g", (FIRST_ESTIMATE_ROWS,)
    )
    for statement in filter(None, after.split("; ")):
        pg_conn.execute(statement)
    stop = threading.Event()
    started: list[Started] = []

    def first_batch_only(event: Any) -> None:
        if isinstance(event, Started):
            started.append(event)
        if isinstance(event, BatchDone):
            stop.set()

    opts = BackfillOptions(table="big", set="flag = true", where=where, checkpoint="first")
    run_backfill(pg_conn, opts, on_event=first_batch_only, stop=stop)
    assert started[0].rows_estimated is not None
    assert abs(started[0].rows_estimated - matching) / matching < 0.05, started[0]
    progress = read_backfill_progress(pg_conn, "first", table="big", where=where)
    assert progress.rows_estimated is not None
    assert abs(progress.rows_estimated - matching) / matching < 0.05, progress


def test_percent_signs_in_the_authors_sql(pg_conn: psycopg.Connection) -> None:
    pg_conn.execute("CREATE TABLE p (id bigint PRIMARY KEY, v int, s text, out text)")
    pg_conn.execute(
        "INSERT INTO p SELECT g, g, CASE WHEN g % 2 = 0 THEN 'a%' ELSE 'b' END "
        "FROM generate_series(1, 1000) g"
    )
    opts = BackfillOptions(
        table="p", set="out = (v % 7)::text || '%'", where="s LIKE 'a%'", checkpoint="pct"
    )
    result = run_backfill(pg_conn, opts)
    assert result.rows == 500
    assert pg_conn.execute(
        "SELECT count(*) FROM p WHERE out = (v % 7)::text || '%'"
    ).fetchone() == (500,)
