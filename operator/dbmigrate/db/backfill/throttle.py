"""Backing off while the database is under strain: replica lag and active sessions.

Owns reading the strain signals (the worst replica's replay lag, the count of other active
client sessions) and waiting, between batches, until they are below the backfill's limits.
The decision itself is `dbmigrate.core.batching.throttle_reason`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg

from dbmigrate.core.batching import throttle_reason
from dbmigrate.db.backfill.model import BackfillEvent, BackfillOptions, Throttled

# How often the strain signals (replication lag, active sessions) are read.
THROTTLE_CHECK_INTERVAL = 1.0
THROTTLE_WAIT = 1.0
# Application names of backfill sessions start with this; they do not count as "active
# sessions" for each other's throttling (parallel workers would otherwise throttle themselves).
APPLICATION_NAME_PREFIX = "dbmigrate-backfill"


_STRAIN = """
SELECT
    (SELECT max(extract(epoch FROM replay_lag)) FROM pg_stat_replication),
    (SELECT count(*) FROM pg_stat_activity
     WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
       AND coalesce(application_name, '') NOT LIKE %s)
"""


def read_strain(conn: psycopg.Connection[Any]) -> tuple[float | None, int]:
    """(worst replica replay lag in seconds or None, active client sessions but ours)."""
    row = conn.execute(_STRAIN, (APPLICATION_NAME_PREFIX + "%",)).fetchone()
    if row is None:
        return None, 0
    return (float(row[0]) if row[0] is not None else None), int(row[1])


def wait_while_strained(
    conn: psycopg.Connection[Any],
    opts: BackfillOptions,
    emit: Callable[[BackfillEvent], None],
    stop: threading.Event,
) -> bool:
    """Block while replicas lag or too many sessions are active; True if stopped meanwhile."""
    last_reason = None
    while True:
        lag, active = read_strain(conn)
        reason = throttle_reason(
            lag,
            active,
            max_replication_lag=opts.max_replication_lag_seconds,
            max_active_sessions=opts.max_active_sessions,
        )
        if reason is None:
            return False
        if reason != last_reason:
            emit(Throttled(reason=reason))
            last_reason = reason
        if stop.wait(THROTTLE_WAIT):
            return True
