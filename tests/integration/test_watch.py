"""The post-deployment watch's reads against a real PostgreSQL with pg_stat_statements
(db.watch): the snapshot, a sample after the migration, and what core.watch makes of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from dbmigrate.api.postdeploy import PostDeploy
from dbmigrate.core.watch import WatchObservation, judge
from dbmigrate.db import history
from dbmigrate.db import watch as db_watch

ROWS = 30_000
LOOKUPS = 60


@pytest.fixture
async def aconn(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection]:
    conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


async def users(conn: psycopg.AsyncConnection) -> None:
    await conn.execute(
        "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, note text);"
        f"INSERT INTO users SELECT g, 'u' || g || '@example.com', NULL "
        f"FROM generate_series(1, {ROWS}) g;"
        "CREATE INDEX users_email ON users (email); ANALYZE users;"
    )
    await history.ensure_schema(conn)


async def look_up(conn: psycopg.AsyncConnection, n: int = LOOKUPS) -> None:
    for i in range(n):
        await conn.execute("SELECT id FROM users WHERE email = %s", (f"u{i * 7 + 1}@example.com",))


async def test_a_dropped_index_is_a_regression_and_a_new_unused_index_is_found(
    aconn: psycopg.AsyncConnection,
) -> None:
    await aconn.execute("CREATE EXTENSION pg_stat_statements")
    await users(aconn)
    await look_up(aconn)
    # The step names only the index (DROP INDEX): the snapshot finds its table.
    baseline = await db_watch.take_baseline(
        aconn, "20260101000000_x", "uid-1", (), ("users_email",)
    )
    assert baseline.tables == ("users",)
    assert baseline.statements_available
    assert "users_email" in baseline.indexes
    assert any("email =" in s.query for s in baseline.statements)
    # The migration: drops the index the lookup used, adds one nothing uses.
    await aconn.execute("DROP INDEX users_email; CREATE INDEX users_note ON users (note)")
    await look_up(aconn)

    read = await db_watch.read_baseline(aconn, "20260101000000_x", "uid-1")
    assert read == baseline  # what a restarted operator compares with
    sample = await db_watch.read_sample(aconn, read.tables)
    post = PostDeploy(watch="10s", min_calls=LOOKUPS)
    verdict = judge(post, WatchObservation(read, sample), None, datetime.now(UTC), final=True)
    kinds = {f.kind: f for f in verdict.new_findings}
    assert set(kinds) == {"QueryRegression", "UnusedIndex"}, verdict
    lookup = next(s for s in verdict.statements if s.queryid == kinds["QueryRegression"].queryid)
    assert "email" in lookup.query
    assert lookup.calls == LOOKUPS
    assert lookup.ratio is not None
    assert lookup.ratio >= 3, lookup
    assert kinds["UnusedIndex"].index == "users_note"
    # The operator's own statements are not the application's.
    assert not any("dbmigrate." in s.query for s in sample.statements)


async def test_without_the_extension_only_indexes_are_watched(
    aconn: psycopg.AsyncConnection,
) -> None:
    await users(aconn)
    baseline = await db_watch.take_baseline(aconn, "20260101000000_x", "uid-2", ("users",))
    assert not baseline.statements_available
    sample = await db_watch.read_sample(aconn, ("users",))
    assert sample.statements == ()
    assert sample.statements_unavailable is not None
    assert "CREATE EXTENSION pg_stat_statements" in sample.statements_unavailable
    assert {ix.name for ix in sample.indexes} == {"users_pkey", "users_email"}


async def test_a_snapshot_is_replaced_not_duplicated(aconn: psycopg.AsyncConnection) -> None:
    await users(aconn)
    await db_watch.take_baseline(aconn, "20260101000000_x", "uid-3", ("users",))
    await aconn.execute("CREATE INDEX users_note ON users (note)")
    again = await db_watch.take_baseline(aconn, "20260101000000_x", "uid-3", ("users",))
    cur = await aconn.execute("SELECT count(*) FROM dbmigrate.watch_baselines")
    assert (await cur.fetchone()) == (1,)
    assert "users_note" in again.indexes
