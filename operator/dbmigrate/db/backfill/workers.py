"""How many workers a backfill step runs with: `parallelism`, or what `auto` stands for.

`auto` is decided once per backfill: by the plan its workers already made when there is one
(the checkpoint was sliced for that many workers, so a restarted operator never changes it),
else from the table's statistics and the server's settings by `core.batching.auto_workers`.
Nothing here scans the table.
"""

from __future__ import annotations

from typing import Any

import psycopg

from dbmigrate.core.batching import auto_workers
from dbmigrate.db.backfill.checkpoints import read_checkpoints
from dbmigrate.db.backfill.model import BackfillError
from dbmigrate.db.backfill.table import read_table, rows_to_do_estimate


def resolve_workers(
    conn: psycopg.Connection[Any],
    checkpoint: str,
    table: str,
    where_sql: str | None,
    *,
    parallelism: int | str,
    pause_seconds: float,
) -> tuple[int, str]:
    """The workers a backfill step runs with, and why, in words."""
    if isinstance(parallelism, int):
        return parallelism, f"{parallelism} worker{'s' if parallelism > 1 else ''}"
    planned = read_checkpoints(conn, checkpoint)
    if planned:
        workers = planned[0].workers
        return workers, f"{workers} worker{'s' if workers > 1 else ''}, as already planned"
    try:
        info = read_table(conn, table)
    except BackfillError:
        return 1, "1 worker: the table is not readable (the worker will say why)"
    try:
        to_do = rows_to_do_estimate(conn, info, where_sql)
    except psycopg.Error:
        if conn.closed or conn.broken:
            raise  # the database is away: the pass fails and is retried
        # An invalid `where`: one worker, whose check of the SQL fails the step and says why.
        return 1, "1 worker: the step's where does not plan (the worker will say why)"
    setting = conn.execute(
        "SELECT current_setting('max_parallel_workers_per_gather')::int"
    ).fetchone()
    return auto_workers(
        to_do,
        server_parallel_workers=None if setting is None else int(setting[0]) + 1,
        pause_seconds=pause_seconds,
    )
