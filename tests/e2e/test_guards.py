"""Database-side guards while the operator runs a migration (real API server, real PostgreSQL).

Aspects: an application query blocked by a step holding ACCESS EXCLUSIVE is released within
safety.maxBlockedDuration + 1 s (timed from the application's side); the step is retried and
succeeds, and the episode is an ApplicationBlocked event, the step's blockingEpisodes and the
operator's dbmigrate_blocked_application_episodes_total. A migration analysed by an `sql:`
metric alone (no Prometheus) rolls back when a step breaches it: RolledBack, trigger
SloBreached, every step's down SQL applied and recorded; status.analysis shows the metric's
SQL and the database's own measurements, and the operator exports them as gauges.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time

import psycopg

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import columns, condition, history, migration, status, wait_phase
from tests.fixtures.operator import OperatorProcess

MAX_BLOCKED = 1.0


def query_when_locked(dsn: str, waits: list[float]) -> None:
    """The application: once someone holds ACCESS EXCLUSIVE on users, read it once."""
    with psycopg.connect(dsn, autocommit=True, application_name="app") as conn:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass "
                "AND mode = 'AccessExclusiveLock' AND granted"
            ).fetchone()
            if row and row[0]:
                break
            time.sleep(0.02)
        t0 = time.monotonic()
        conn.execute("SELECT count(*) FROM users")
        waits.append(time.monotonic() - t0)


def test_blocked_application_query_is_released(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    waits: list[float] = []
    app = threading.Thread(target=query_when_locked, args=(app_db, waits), daemon=True)
    app.start()
    cluster.apply(
        migration(
            namespace,
            [
                {
                    "name": "expand",
                    "sql": {
                        "up": "ALTER TABLE users ADD COLUMN c int; SELECT pg_sleep(6)",
                        "down": "ALTER TABLE users DROP COLUMN IF EXISTS c",
                    },
                }
            ],
            safety={"lint": "Off", "maxBlockedDuration": "1s", "lockRetries": 5},
        )
    )
    st = wait_phase(cluster, namespace, "Succeeded", timeout=90)
    app.join(10)
    assert len(waits) == 1
    assert MAX_BLOCKED - 0.1 < waits[0] < MAX_BLOCKED + 1.0, waits
    (step,) = st["steps"]
    assert step["blockingEpisodes"] == 1
    assert "c" in columns(app_db)
    assert history(app_db) == [("expand", "up")]
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "ApplicationBlocked" in events
    assert re.search(
        r"step 'expand': 1 application query waited 1\.\ds on ALTER TABLE users ADD COLUMN c "
        r"int \(\+1 more in its transaction\); cancelled, retry 1/5",
        events,
    ), events
    page = operator.metrics()
    assert 'dbmigrate_blocked_application_episodes_total{kind="sql"} 1.0' in page


def test_sql_metric_breach_rolls_back_without_prometheus(
    cluster: Cluster, namespace: str, app_db: str, operator: OperatorProcess
) -> None:
    cluster.apply(
        migration(
            namespace,
            [
                {
                    "name": "expand",
                    "sql": {
                        "up": "ALTER TABLE users ADD COLUMN email_verified boolean",
                        "down": "ALTER TABLE users DROP COLUMN IF EXISTS email_verified",
                    },
                },
                {
                    "name": "lose-emails",
                    "sql": {
                        "up": "UPDATE users SET email = NULL WHERE id <= 5",
                        "down": "UPDATE users SET email = 'u' || id WHERE email IS NULL",
                    },
                },
            ],
            analysis={
                "interval": "1s",
                "failureLimit": 2,
                "settle": "10m",
                "metrics": [
                    {
                        "name": "emails-missing",
                        "sql": "SELECT count(*) FROM users WHERE email IS NULL",
                        "max": 0,
                    }
                ],
            },
        )
    )
    gauge = f'dbmigrate_database_blocked_backends{{namespace="{namespace}"}} 0.0'
    gauges_seen: list[bool] = []

    def finished() -> dict[str, object] | None:
        # The gauges are there while the migration runs (its runner forgets them at the end).
        with contextlib.suppress(OSError):  # its endpoint is up a moment after the start
            gauges_seen.append(gauge in operator.metrics())
        s = status(cluster, namespace)
        return s if s.get("phase") in ("RolledBack", "Failed") else None

    st = wait_for(finished, 90, "the rollback to finish")
    assert st["phase"] == "RolledBack", st
    rb = st["rollback"]
    assert rb["trigger"] == "SloBreached"
    assert re.search(r"emails-missing 5 > max 0 \(2 consecutive\)", rb["reason"]), rb
    assert condition(st, "Ready")["reason"] == "RolledBack"
    assert history(app_db)[-2:] == [("lose-emails", "down"), ("expand", "down")]
    assert "email_verified" not in columns(app_db)
    with psycopg.connect(app_db) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE email IS NULL").fetchone() == (0,)
    last = st["analysis"]["last"][0]
    assert (last["metric"], last["result"], last["value"]) == ("emails-missing", "Failed", 5.0)
    assert last["sql"] == "SELECT count(*) FROM users WHERE email IS NULL"
    database = st["analysis"]["database"]
    assert database["blockedBackends"] == 0
    assert database["measuredAt"]
    page = operator.metrics()
    assert 'dbmigrate_rollbacks_total{reason="SloBreached"} 1.0' in page
    assert any(gauges_seen)
