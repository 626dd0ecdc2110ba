"""Parallel backfill benchmark: `dbmigrate backfill` with 2 workers against its ceiling.

Not a test: it prints Markdown tables whose figures go into BENCHMARKS.md ("Parallel backfill").

    python hack/bench/backfill_parallel.py                       # 1 M rows, every table shape
    python hack/bench/backfill_parallel.py --rows 5000000 --shapes skewed
    python hack/bench/backfill_parallel.py --dsn postgresql://...   # an existing database

One UPDATE runs on one backend, so one core. With two workers the ceiling is two plain range
UPDATEs of half the rows each, run at once (`(h)`): the best two sessions can do. For every
table shape the methods run from the same physical state (the table rebuilt from a pristine
copy, VACUUM (ANALYZE), CHECKPOINT):

- (a) one UPDATE of all rows;
- (h) two UPDATEs of half the rows each (split at the median key), at once: the ceiling;
- (1) `run_backfill` with one worker, the defaults;
- (2) two worker processes (`--worker 0/2` and `1/2`), the defaults, released together.

Every method runs the seed's backfill (SET email_verified = (email_confirmed_at IS NOT NULL)
WHERE email_verified IS NULL) and is checked afterwards. Next to the time: the WAL written,
the CPU seconds of the server's processes and of the worker processes (read from /proc, so only
for a server on this machine), and for (2) how far apart the two workers finished.

Table shapes (`--shapes`):

- even: `users(id bigint pk, ...)`, ids 1..N;
- skewed: 90 % of the ids in the first 10 % of the key range (the rest spread over 90 %);
- text: `accounts(tenant text, id bigint, ..., pk (tenant, id))`, half the rows in one tenant;
- indexed: even, plus an index on the updated column (every update writes a new index entry);
- trigger: even, plus a BEFORE UPDATE trigger setting updated_at and a table with a foreign key
  to it (`sessions.user_id`, one row per 10 users);
- partitioned: `users` partitioned by hash of id into 4 partitions.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from _common import (
    LoadResult,
    OltpLoad,
    create_pristine_users,
    database,
    machine,
    markdown_table,
)

from dbmigrate.core.batching import format_count
from dbmigrate.db.backfill import BackfillOptions, delete_checkpoints, run_backfill

SCHEMA = "dbmigrate_bench_par"
SET = "email_verified = (email_confirmed_at IS NOT NULL)"
WHERE = "email_verified IS NULL"
SHAPES = ("even", "skewed", "text", "indexed", "trigger", "partitioned")


@dataclass
class Run:
    method: str
    rows: int
    seconds: float
    wal_bytes: int = 0
    server_cpu: float | None = None
    worker_cpu: float | None = None
    finished: list[float] = field(default_factory=list)  # per worker, seconds from the start
    worker_rows: list[int] = field(default_factory=list)
    load: LoadResult | None = None

    @property
    def spread(self) -> float | None:
        """(last finish - first finish) / last finish: 0 when the workers end together."""
        if len(self.finished) < 2 or max(self.finished) <= 0:
            return None
        return (max(self.finished) - min(self.finished)) / max(self.finished)


# --- the table shapes --------------------------------------------------------------------


def _users_columns(extra: str = "") -> str:
    return (
        "id bigint PRIMARY KEY, email text, email_confirmed_at timestamptz, "
        f"email_verified boolean{extra}"
    )


def _ids(shape: str, rows: int) -> str:
    """The SQL of row g's id (g in 1..rows)."""
    if shape != "skewed":
        return "g"
    dense = rows * 9 // 10
    # 90 % dense in [1, dense]; the other 10 % spread 81 apart: the key range is about 9x the
    # dense part, so 90 % of the rows sit in its first 10 %.
    return f"CASE WHEN g <= {dense} THEN g ELSE {dense} + (g - {dense}) * 81 END"


def shape_ddl(shape: str, table: str) -> list[str]:
    """The statements that create the (empty) table of a shape."""
    if shape == "text":
        return [
            f"CREATE TABLE {table} (tenant text, id bigint, email text, "
            "email_confirmed_at timestamptz, email_verified boolean, PRIMARY KEY (tenant, id))"
        ]
    if shape == "partitioned":
        ddl = [f"CREATE TABLE {table} ({_users_columns()}) PARTITION BY HASH (id)"]
        ddl += [
            f"CREATE TABLE {table}_p{i} PARTITION OF {table} "
            f"FOR VALUES WITH (MODULUS 4, REMAINDER {i})"
            for i in range(4)
        ]
        return ddl
    if shape == "trigger":
        return [
            f"CREATE TABLE {table} ({_users_columns(', updated_at timestamptz')})",
            f"CREATE FUNCTION {SCHEMA}.touch() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$",
            f"CREATE TRIGGER touch BEFORE UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.touch()",
            f"CREATE TABLE {SCHEMA}.sessions (id bigserial PRIMARY KEY, "
            f"user_id bigint NOT NULL REFERENCES {table} (id))",
            f"CREATE INDEX ON {SCHEMA}.sessions (user_id)",
        ]
    ddl = [f"CREATE TABLE {table} ({_users_columns()})"]
    if shape == "indexed":
        ddl.append(f"CREATE INDEX ON {table} (email_verified)")
    return ddl


class Bench:
    def __init__(self, dsn: str, rows: int, *, autovacuum: bool = True) -> None:
        self.dsn = dsn
        self.rows = rows
        self.autovacuum = autovacuum
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.postmaster = _postmaster_pid(self.conn)

    def log(self, text: str) -> None:
        print(f"[bench] {text}", file=sys.stderr, flush=True)

    def table(self, shape: str) -> str:
        return f"{SCHEMA}.{'accounts' if shape == 'text' else 'users'}"

    def create_pristine(self) -> None:
        self.log(f"creating {format_count(self.rows)} pristine rows")
        create_pristine_users(self.conn, SCHEMA, self.rows)

    def reset(self, shape: str) -> None:
        c = self.conn
        table = self.table(shape)
        c.execute(f"DROP TABLE IF EXISTS {SCHEMA}.sessions, {table} CASCADE")
        c.execute(f"DROP FUNCTION IF EXISTS {SCHEMA}.touch()")
        for statement in shape_ddl(shape, table):
            c.execute(statement)
        if shape == "text":
            # Half the rows in tenant-00, the rest over 49 tenants.
            c.execute(
                f"INSERT INTO {table} SELECT CASE WHEN g % 2 = 0 THEN 'tenant-00' ELSE "
                "'tenant-' || lpad((1 + g % 49)::text, 2, '0') END, g, email, "
                f"email_confirmed_at, NULL FROM {SCHEMA}.pristine ORDER BY 1, 2"
            )
        else:
            extra = ", NULL" if shape == "trigger" else ""
            c.execute(
                f"INSERT INTO {table} SELECT {_ids(shape, self.rows)}, email, "
                f"email_confirmed_at, NULL{extra} FROM {SCHEMA}.pristine ORDER BY g"
            )
        if shape == "trigger":
            c.execute(
                f"INSERT INTO {SCHEMA}.sessions (user_id) SELECT id FROM {table} WHERE id % 10 = 0"
            )
        if not self.autovacuum:
            # Batches commit as they go, so autovacuum starts on the table mid-run and takes a
            # core; the single statements leave their dead rows only at the end.
            leaves = [f"{table}_p{i}" for i in range(4)] if shape == "partitioned" else [table]
            for leaf in leaves:  # a partitioned table has no storage parameters of its own
                c.execute(f"ALTER TABLE {leaf} SET (autovacuum_enabled = false)")
        c.execute(f"VACUUM (ANALYZE) {table}")
        c.execute("CHECKPOINT")

    def check_done(self, shape: str) -> None:
        row = self.conn.execute(
            f"SELECT count(*) FILTER (WHERE email_verified IS NULL), "
            f"count(*) FILTER (WHERE email_verified IS DISTINCT FROM "
            f"(email_confirmed_at IS NOT NULL)) FROM {self.table(shape)}"
        ).fetchone()
        assert row == (0, 0), f"backfill incomplete or wrong: {row}"
        if shape == "trigger":
            stale = self.conn.execute(
                f"SELECT count(*) FROM {self.table(shape)} WHERE updated_at IS NULL"
            ).fetchone()
            assert stale == (0,), f"the trigger did not run for {stale} rows"

    def range_split_share(self, shape: str) -> float | None:
        """The share of the rows that an even split of the key range gives the first worker."""
        if shape == "text":
            return None
        row = self.conn.execute(
            f"SELECT count(*) FILTER (WHERE id <= (lo + hi) / 2)::float / count(*) "
            f"FROM {self.table(shape)}, (SELECT min(id) lo, max(id) hi FROM {self.table(shape)}) b"
        ).fetchone()
        return float(row[0]) if row else None

    # --- measuring ---------------------------------------------------------------------

    def measure(self, method: str, shape: str, body: Any) -> Run:
        self.reset(shape)
        wal0 = self._wal()
        cpu0 = _server_cpu(self.postmaster)
        run: Run = body(shape)
        run.wal_bytes = self._wal() - wal0
        self._wait_for_backends_to_exit()
        cpu1 = _server_cpu(self.postmaster)
        run.server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        self.check_done(shape)
        return run

    def _wait_for_backends_to_exit(self) -> None:
        """Closed sessions' CPU counts once their backend has exited and been reaped."""
        for _ in range(100):
            row = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"
            ).fetchone()
            if row == (0,):
                break
            time.sleep(0.05)
        time.sleep(0.2)

    def _wal(self) -> int:
        row = self.conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
        return int(row[0]) if row else 0

    # --- methods -----------------------------------------------------------------------

    def single_update(self, shape: str) -> Run:
        t0 = time.perf_counter()
        rows = self.conn.execute(f"UPDATE {self.table(shape)} SET {SET} WHERE {WHERE}").rowcount
        return Run("(a) one UPDATE", rows, time.perf_counter() - t0)

    def halves(self, shape: str) -> Run:
        table = self.table(shape)
        key = "(tenant, id)" if shape == "text" else "id"
        row = self.conn.execute(
            f"SELECT {key} FROM {table} ORDER BY {key} OFFSET %s LIMIT 1", (self.rows // 2,)
        ).fetchone()
        assert row is not None
        median = row[0]
        literal = "ROW(%s, %s)" if shape == "text" else "%s"
        params = tuple(median) if shape == "text" else (median,)
        parts = [f"{key} < {literal}", f"{key} >= {literal}"]
        conns = [psycopg.connect(self.dsn, autocommit=True) for _ in parts]
        counts = [0, 0]
        finished = [0.0, 0.0]
        start = threading.Event()
        t0 = 0.0

        def half(i: int) -> None:
            start.wait()
            counts[i] = (
                conns[i]
                .execute(f"UPDATE {table} SET {SET} WHERE {WHERE} AND {parts[i]}", params)
                .rowcount
            )
            finished[i] = time.perf_counter() - t0

        threads = [threading.Thread(target=half, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        start.set()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        for c in conns:
            c.close()
        return Run("(h) two half UPDATEs at once", sum(counts), seconds, finished=finished)

    def ours(self, shape: str, workers: int) -> Run:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        ctx = multiprocessing.get_context("spawn")
        go = ctx.Event()
        results: Any = ctx.Queue()
        procs = [
            ctx.Process(
                target=_worker,
                args=(self.dsn, self.table(shape), name, i, workers, go, results),
            )
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        for _ in procs:  # every worker has imported and connected
            assert results.get(timeout=120) == "ready"
        t0 = time.time()
        go.set()
        done = [results.get(timeout=3600) for _ in procs]
        seconds = time.time() - t0
        for p in procs:
            p.join()
        delete_checkpoints(self.conn, name)
        label = f"({workers}) dbmigrate, {workers} worker{'s' if workers > 1 else ''}"
        return Run(
            label,
            sum(d["rows"] for d in done),
            seconds,
            worker_cpu=sum(d["cpu"] for d in done),
            finished=[d["finished"] - t0 for d in done],
            worker_rows=[d["rows"] for d in done],
        )

    def explain_batch(self, shape: str, rows: int = 100_000) -> dict[str, Any]:
        """EXPLAIN (ANALYZE, BUFFERS, WAL) of one batch UPDATE of `rows` keys (rolled back)."""
        self.reset(shape)
        table = self.table(shape)
        key = "(tenant, id)" if shape == "text" else "id"
        row = self.conn.execute(
            f"SELECT {key} FROM {table} ORDER BY {key} OFFSET %s LIMIT 1", (rows - 1,)
        ).fetchone()
        assert row is not None
        bound = "ROW(%s, %s)" if shape == "text" else "%s"
        params = tuple(row[0]) if shape == "text" else (row[0],)
        with self.conn.transaction(force_rollback=True):
            plan = self.conn.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) UPDATE {table} SET {SET} "
                f"WHERE {key} <= {bound} AND {WHERE}",
                params,
            ).fetchone()
        assert plan is not None
        top = plan[0][0]
        p = top["Plan"]
        return {
            "ms": top["Execution Time"],
            "shared hit": p.get("Shared Hit Blocks", 0),
            "shared read": p.get("Shared Read Blocks", 0),
            "dirtied": p.get("Shared Dirtied Blocks", 0),
            "WAL records": p.get("WAL Records", 0),
            "WAL FPI": p.get("WAL FPI", 0),
            "WAL MiB": p.get("WAL Bytes", 0) / 2**20,
            "trigger ms": sum(t.get("Time", 0.0) for t in top.get("Triggers", [])),
        }

    def with_load(self, shape: str, body: Any, threads: int) -> Run:
        """`body` while the application reads and writes rows of the table (open loop)."""

        def loaded(shape: str) -> Run:
            with OltpLoad(
                self.dsn, table=self.table(shape), max_id=self.rows, threads=threads
            ) as load:
                run: Run = body(shape)
                run.load = load.stop()
            return run

        return self.measure("load", shape, loaded)

    def idle_load(self, shape: str, seconds: float, threads: int) -> LoadResult:
        self.reset(shape)
        with OltpLoad(self.dsn, table=self.table(shape), max_id=self.rows, threads=threads) as load:
            time.sleep(seconds)
            return load.stop()

    def close(self, keep: bool) -> None:
        if not keep:
            self.conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        self.conn.close()


def _worker(
    dsn: str, table: str, name: str, worker: int, workers: int, go: Any, results: Any
) -> None:
    """One worker process, as `dbmigrate backfill --worker i/n` runs it."""
    opts = BackfillOptions(
        table=table, set=SET, where=WHERE, checkpoint=name, worker=worker, workers=workers
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        results.put("ready")
        go.wait()
        before = resource.getrusage(resource.RUSAGE_SELF)
        result = run_backfill(conn, opts)
        after = resource.getrusage(resource.RUSAGE_SELF)
        results.put(
            {
                "rows": result.rows,
                "finished": time.time(),
                "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            }
        )


def _postmaster_pid(conn: psycopg.Connection[Any]) -> int | None:
    """The server's postmaster, when the server runs on this machine (else None)."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    stat = Path(f"/proc/{row[0] if row else 0}/stat")
    if not stat.exists():
        return None
    return int(stat.read_text().rsplit(")", 1)[1].split()[1])


def _server_cpu(postmaster: int | None) -> float | None:
    """CPU seconds of the server: the postmaster, its reaped children, its live ones."""
    if postmaster is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                f = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(f[1]) == postmaster:
                total += int(f[11]) + int(f[12])
    except OSError:
        return None
    return total / tick


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dsn", help="an existing database (default: a throwaway server)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each method this many times, keep the fastest"
    )
    parser.add_argument("--keep", action="store_true", help=f"keep schema {SCHEMA}")
    parser.add_argument(
        "--no-autovacuum",
        action="store_true",
        help="switch autovacuum off on the benchmark's table (to see what it costs the batches)",
    )
    parser.add_argument(
        "--oltp-threads",
        type=int,
        default=3,
        help="application threads (200 ops/s each) for the latency table; 0: skip it",
    )
    args = parser.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown:
        parser.error(f"unknown shapes {unknown}; choose from {', '.join(SHAPES)}")
    with database(args.dsn) as dsn:
        bench = Bench(dsn, args.rows, autovacuum=not args.no_autovacuum)
        try:
            code = report(bench, shapes, args.repeat)
            if args.oltp_threads > 0:
                report_load(bench, args.oltp_threads)
            return code
        finally:
            bench.close(args.keep)


def report(bench: Bench, shapes: list[str], repeat: int) -> int:
    bench.create_pristine()
    server = bench.conn.execute("SHOW server_version").fetchone()
    print(
        f"# Parallel backfill: {format_count(bench.rows)} rows, "
        f"PostgreSQL {server[0] if server else '?'}, fastest of {repeat}"
        + ("" if bench.autovacuum else ", autovacuum off on the table")
    )
    print(f"machine: {machine()}\n")
    methods = [
        ("a", bench.single_update),
        ("h", bench.halves),
        ("1", lambda shape: bench.ours(shape, 1)),
        ("2", lambda shape: bench.ours(shape, 2)),
    ]
    for shape in shapes:
        best: dict[str, Run] = {}
        for attempt in range(repeat):
            for key, body in methods:
                bench.log(f"{shape}: {key} (run {attempt + 1}/{repeat})")
                run = bench.measure(key, shape, body)
                if key not in best or run.seconds < best[key].seconds:
                    best[key] = run
        share = bench.range_split_share(shape)
        print(f"## {shape}\n")
        if share is not None:
            print(f"An even split of the key range would give worker 0 {share:.0%} of the rows.\n")
        rows = []
        for key, _ in methods:
            run = best[key]
            rows.append(
                [
                    run.method,
                    f"{run.seconds:.2f}",
                    f"{run.rows / run.seconds:,.0f}",
                    f"{best['a'].seconds / run.seconds:.2f}",
                    f"{best['h'].seconds / run.seconds:.2f}",
                    f"{run.wal_bytes / 2**20:,.0f}",
                    "-" if run.server_cpu is None else f"{run.server_cpu:.1f}",
                    "-" if run.worker_cpu is None else f"{run.worker_cpu:.2f}",
                    "-" if run.spread is None else f"{run.spread:.0%}",
                    " / ".join(format_count(r) for r in run.worker_rows) or "-",
                ]
            )
        print(
            markdown_table(
                [
                    "method",
                    "seconds",
                    "rows/s",
                    "vs (a)",
                    "vs (h)",
                    "WAL MiB",
                    "server CPU s",
                    "worker CPU s",
                    "finish spread",
                    "rows per worker",
                ],
                rows,
            )
        )
        print(flush=True)
    print("## One batch of 100 000 rows: EXPLAIN (ANALYZE, BUFFERS, WAL)\n")
    explained = []
    for shape in shapes:
        bench.log(f"{shape}: explain one batch")
        e = bench.explain_batch(shape)
        explained.append(
            [
                shape,
                f"{e['ms']:.0f}",
                e["shared hit"],
                e["shared read"],
                e["dirtied"],
                e["WAL records"],
                e["WAL FPI"],
                f"{e['WAL MiB']:.1f}",
                f"{e['trigger ms']:.0f}",
            ]
        )
    print(
        markdown_table(
            [
                "shape",
                "ms",
                "shared hit",
                "shared read",
                "dirtied",
                "WAL records",
                "WAL FPI",
                "WAL MiB",
                "triggers ms",
            ],
            explained,
        )
    )
    print(flush=True)
    return 0


def report_load(bench: Bench, threads: int) -> None:
    """Application latency on the even table while 1 and 2 workers and one UPDATE run."""
    shape = "even"
    rows = []

    def row(label: str, seconds: str, rate: str, load: LoadResult) -> list[object]:
        return [
            label,
            seconds,
            rate,
            f"{load.p(50) * 1000:.1f}",
            f"{load.p(99) * 1000:.1f}",
            f"{load.p(99.9) * 1000:.1f}",
            f"{max(load.latencies) * 1000:.1f}",
            load.errors,
        ]

    bench.log("load: idle")
    rows.append(row("no migration (5 s)", "-", "-", bench.idle_load(shape, 5.0, threads)))
    for label, body in [
        ("(a) one UPDATE", bench.single_update),
        ("(1) dbmigrate, 1 worker", lambda s: bench.ours(s, 1)),
        ("(2) dbmigrate, 2 workers", lambda s: bench.ours(s, 2)),
    ]:
        bench.log(f"load: {label}")
        run = bench.with_load(shape, body, threads)
        assert run.load is not None
        rows.append(row(label, f"{run.seconds:.2f}", f"{run.rows / run.seconds:,.0f}", run.load))
    print(f"## Application latency during the backfill (even, {threads} threads x 200 ops/s)\n")
    print(
        markdown_table(
            ["during", "seconds", "rows/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors"],
            rows,
        )
    )
    print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
