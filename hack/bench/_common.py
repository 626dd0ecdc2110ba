"""Shared helpers of the benchmarks in hack/bench: a database to run against, the seed's users
table to backfill, a concurrent OLTP-like load with its latency percentiles, our package as
installed (bytecode compiled), and Markdown tables.

Benchmarks are not tests: they print a table whose figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[str]:
    """`dsn` as given, or a throwaway PostgreSQL server (Debian's packages) on loopback."""
    if dsn:
        yield dsn
        return
    from dbmigrate_dev.postgres import PostgresServer, free_port

    with tempfile.TemporaryDirectory(prefix="dbmigrate-bench-") as tmp:
        server = PostgresServer(Path(tmp) / "data", free_port())
        server.init()
        server.start()
        try:
            yield server.create_database("bench")
        finally:
            server.stop()


def create_pristine_users(conn: psycopg.Connection, schema: str, rows: int) -> str:
    """`<schema>.pristine`: `rows` users (g bigint, email, email_confirmed_at: 70 % confirmed,
    the same rows every time), that each benchmark copies into the table it backfills."""
    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute("SELECT setseed(0.42)")
    conn.execute(
        f"""
        CREATE TABLE {schema}.pristine AS
        SELECT g::bigint AS g, 'user' || g || '@example.com' AS email,
               CASE WHEN random() < 0.7
                    THEN timestamptz '2024-01-01' + random() * interval '365 days' END
                   AS email_confirmed_at
        FROM generate_series(1, %s) AS g
        """,
        (rows,),
    )
    return f"{schema}.pristine"


def installed_env(repo: Path) -> dict[str, str]:
    """The environment to run our package as installed: with bytecode (pip compiles it at
    install; a source tree run with PYTHONDONTWRITEBYTECODE would compile every module at every
    start), compiled here once."""
    env = {**os.environ, "PYTHONPATH": str(repo / "operator")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(repo / "operator" / "dbmigrate")],
        env=env,
        check=True,
        capture_output=True,
    )
    return env


def machine() -> str:
    """`N cores, M GiB` of this machine, and the Python version."""
    mem = 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: int = 0

    @property
    def ops(self) -> int:
        return len(self.latencies)

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


class OltpLoad:
    """A few threads doing short reads and writes by random primary key, each on its own
    connection, on a fixed schedule (open loop), until stopped or `max_seconds`.

    Each thread intends one operation every 1/rate seconds and a latency is measured from
    the operation's intended start, not from when the thread got round to it. A closed loop
    (wait, then send the next request) would hide a stall: a thread blocked for 5 s records
    one slow request instead of the thousand its users would have sent meanwhile
    ("coordinated omission"). After `stop()` the threads still run the operations that were
    due before it. Statements are bounded by a statement timeout (counted as errors).
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str,
        max_id: int,
        threads: int = 3,
        rate: float = 200.0,
        write_ratio: float = 0.5,
        max_seconds: float = 600.0,
        statement_timeout: float = 60.0,
    ) -> None:
        self.dsn = dsn
        self.table = table
        self.max_id = max_id
        self.threads = threads
        self.interval = 1.0 / rate
        self.write_ratio = write_ratio
        self.max_seconds = max_seconds
        self.statement_timeout = statement_timeout
        self._stop = threading.Event()
        self._stop_at = math.inf
        self._workers: list[threading.Thread] = []
        self._results: list[LoadResult] = []

    def __enter__(self) -> OltpLoad:
        ready = threading.Barrier(self.threads + 1)
        for i in range(self.threads):
            result = LoadResult()
            self._results.append(result)
            t = threading.Thread(target=self._run, args=(i, result, ready), daemon=True)
            t.start()
            self._workers.append(t)
        ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        if not self._stop.is_set():
            self._stop_at = time.perf_counter()
            self._stop.set()
        for t in self._workers:
            t.join()
        merged = LoadResult()
        for r in self._results:
            merged.latencies.extend(r.latencies)
            merged.errors += r.errors
        return merged

    def _run(self, seed: int, result: LoadResult, ready: threading.Barrier) -> None:
        rng = random.Random(seed)
        read = f"SELECT email, email_verified FROM {self.table} WHERE id = %s"
        write = f"UPDATE {self.table} SET email = email || '' WHERE id = %s"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"SET statement_timeout = '{int(self.statement_timeout * 1000)}ms'")
            ready.wait()
            # Threads start a fraction of an interval apart, not in lockstep.
            start = time.perf_counter() + self.interval * seed / self.threads
            deadline = start + self.max_seconds
            k = 0
            while True:
                intended = start + k * self.interval
                if intended >= min(self._stop_at, deadline):
                    break
                ahead = intended - time.perf_counter()
                if ahead > 0 and self._stop.wait(ahead) and intended >= self._stop_at:
                    break
                query = write if rng.random() < self.write_ratio else read
                key = rng.randint(1, self.max_id)
                try:
                    cur = conn.execute(query, (key,))
                    if query is read:
                        cur.fetchall()
                except psycopg.Error:
                    result.errors += 1
                result.latencies.append(time.perf_counter() - intended)
                k += 1


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
