"""The fault matrix, part two: faults from outside while a step runs, each against each step type
(sql, sql CONCURRENTLY, backfill, awaitRollout, job) and the rollback path, on the real API
server and controllers with a real PostgreSQL; and Prometheus stopped during analysis.

The faults: the operator SIGKILLed; the operator's or the backfill worker's session terminated;
PostgreSQL restarted; kube-apiserver stopped for 20 s; the step's Job or its pod deleted by
someone else; the DatabaseMigration deleted. `make test` runs the cells in `DEFAULT` (every
fault and every step type at least once); `DBMIGRATE_EXHAUSTIVE=1` runs the whole product.
One cell: `pytest tests/e2e/test_fault_outages.py -k 'postgres-restarted and sql'`.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from dbmigrate_dev.cluster_client import Cluster, wait_for
from dbmigrate_dev.postgres import PostgresServer
from tests.e2e.fault_matrix import (
    FAULTS,
    RESULTS,
    SHAPES,
    SLEEP,
    Fault,
    Result,
    Shape,
    World,
    backfill_rows,
    column_exists,
    controllers_recovered,
    history_rows,
    roll_out,
    verify_abandoned,
    verify_recovered,
)
from tests.e2e.helpers import condition, deploy_app, image, migration, status, wait_phase
from tests.fixtures.operator import OperatorProcess

# What `make test` runs: each fault kind and each step type at least once.
DEFAULT = {
    ("operator-sigkill", "await-rollout"),
    ("operator-sigkill", "job"),
    ("operator-connection-terminated", "concurrently"),
    ("worker-connection-terminated", "backfill"),
    ("postgres-restarted", "sql"),
    ("postgres-restarted", "rollback"),
    ("apiserver-stopped", "backfill"),
    ("job-deleted", "backfill"),
    ("pod-deleted", "job"),
    ("migration-deleted", "concurrently"),
    ("migration-deleted", "backfill"),
}


def _cells() -> list[Any]:
    cells = []
    for fault in FAULTS.values():
        for shape_id in fault.shapes:
            chosen = (fault.id, shape_id) in DEFAULT
            marks = () if chosen else (pytest.mark.exhaustive,)
            cells.append(pytest.param(fault.id, shape_id, id=f"{fault.id}-{shape_id}", marks=marks))
    return cells


@pytest.mark.parametrize(("fault_id", "shape_id"), _cells())
def test_a_fault_while_a_step_runs(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    pg_server: PostgresServer,
    request: pytest.FixtureRequest,
    fault_id: str,
    shape_id: str,
) -> None:
    fault, shape = FAULTS[fault_id], SHAPES[shape_id]
    if fault.local_only and not cluster.local:
        pytest.skip("stops a component of the local control plane")
    if shape.pods:
        request.getfixturevalue("local_executor")
    if shape.setup:
        with psycopg.connect(app_db, autocommit=True) as conn:
            conn.execute(shape.setup)  # type: ignore[arg-type]
    if shape.rollout:
        deploy_app(cluster, namespace)
    world = World(cluster, namespace, app_db, operator, pg_server)
    cluster.apply(migration(namespace, shape.steps, **shape.spec))

    shape.under_way(world)
    hit = time.monotonic()
    try:
        fault.inject(world)
        outcome = verdict(world, fault, shape)
        took = time.monotonic() - hit
    finally:
        if fault.local_only:
            controllers_recovered(cluster)
    RESULTS.append(Result("matrix", fault.id, fault.label, shape.label, outcome, took))


def verdict(world: World, fault: Fault, shape: Shape) -> str:
    """The outcome, once checked against the database and the cluster."""
    cluster, namespace, app_db = world.cluster, world.namespace, world.dsn
    if fault.deletes:
        return verify_abandoned(world, shape)
    if shape.rollout:
        roll_out(world)
    st = wait_phase(cluster, namespace, shape.final, timeout=180)
    verify_recovered(cluster, namespace, app_db, shape.steps, shape.final)
    with psycopg.connect(app_db) as conn:
        shape.done(conn)
    assert condition(st, "Ready")["reason"] == shape.final
    if shape.rows is not None:
        assert backfill_rows(world, shape.key) == shape.rows
    if shape.rollout:
        assert image(cluster, namespace) == "app:v2"
    return shape.final


def test_prometheus_stopped_during_analysis(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    prometheus: Any,
    test_app: Any,
) -> None:
    """No data is not a breach: with Prometheus gone the analysis turns Inconclusive and the
    migration pauses before its next step (onInconclusive: Pause), reverting nothing; once
    Prometheus answers again the first conclusive round lifts the pause and it finishes."""
    steps = [
        {
            "name": "expand",
            "sql": {
                "up": f"ALTER TABLE users ADD COLUMN flag boolean; SELECT pg_sleep({SLEEP})",
                "down": "ALTER TABLE users DROP COLUMN IF EXISTS flag",
            },
        },
        {"name": "after", "sql": {"up": "CREATE TABLE after (id int)", "down": "DROP TABLE after"}},
    ]
    analysis = {
        "prometheus": {"address": prometheus.url},
        "interval": "1s",
        "inconclusiveLimit": 1,
        "onInconclusive": "Pause",
        "settle": "3s",
        "metrics": [{"name": "error-rate", "query": test_app.error_ratio_query("5s"), "max": 0.05}],
    }
    cluster.apply(migration(namespace, steps, analysis=analysis))
    world = World(cluster, namespace, app_db, operator, None)
    SHAPES["sql"].under_way(world)  # the runner measures between steps: the next is "after"
    prometheus.stop()
    stopped = time.monotonic()
    try:
        paused = wait_for(
            lambda: (
                (s := status(cluster, namespace)).get("conditions")
                and condition(s, "Ready")["reason"] == "AnalysisInconclusive"
                and s
            ),
            60,
            "the migration to pause on inconclusive analysis",
        )
        assert paused["currentStep"] == "after"
        with psycopg.connect(app_db) as conn:
            assert ("after", "up") not in history_rows(conn)  # paused before it
            assert not [k for k in history_rows(conn) if k[1] == "down"]  # nothing reverted
    finally:
        prometheus.start()
    st = wait_phase(cluster, namespace, "Succeeded", timeout=120)
    verify_recovered(cluster, namespace, app_db, steps, "Succeeded")
    with psycopg.connect(app_db) as conn:
        column_exists("flag")(conn)
    assert condition(st, "Ready")["reason"] == "Succeeded"
    assert st["analysis"]["last"][0]["result"] == "Successful"  # measured again, not skipped
    RESULTS.append(
        Result(
            "other",
            "prometheus-stopped",
            "Prometheus stopped during analysis, started again",
            "sql, analysed",
            "paused (AnalysisInconclusive), then Succeeded",
            time.monotonic() - stopped,
            recovers=False,
        )
    )
