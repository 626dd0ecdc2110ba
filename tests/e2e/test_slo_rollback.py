"""The showcase: a migration watched by SLO analysis rolls itself back when the app degrades.

Real API server and controllers, real PostgreSQL, real Prometheus scraping the test app. The
app's Deployment goes v1 -> v2 while the migration waits for it; then the app's error ratio
rises: the operator undoes the rollout to the revision recorded at start (a new revision by the
real controller), runs the expand step's down SQL, records it in the history table, and says so
in status, events and its own metrics. With a point of no return already passed, the database
is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import (
    columns,
    condition,
    dbmigrate_report,
    deploy_app,
    history,
    image,
    migration,
    report_config_map,
    runs,
    status,
)
from tests.fixtures.operator import OperatorProcess


def analysis(prometheus_url: str, query: str) -> dict[str, Any]:
    return {
        "prometheus": {"address": prometheus_url},
        "interval": "2s",
        "failureLimit": 2,
        "settle": "10m",
        "metrics": [{"name": "error-rate", "query": query, "max": 0.05}],
    }


def showcase_steps(pnr: bool = False) -> list[dict[str, Any]]:
    return [
        {
            "name": "expand",
            "sql": {
                "up": "ALTER TABLE users ADD COLUMN email_verified boolean",
                "down": "ALTER TABLE users DROP COLUMN IF EXISTS email_verified",
            },
            "pointOfNoReturn": pnr,
        },
        {"name": "release", "awaitRollout": {"image": "app:v2", "timeout": "5m"}},
    ]


def run_showcase(
    cluster: Cluster, namespace: str, prometheus: Any, app: Any, *, pnr: bool
) -> dict[str, Any]:
    deploy_app(cluster, namespace)
    cluster.apply(
        migration(
            namespace,
            showcase_steps(pnr),
            target={"deployment": "app"},
            analysis=analysis(prometheus.url, app.error_ratio_query("5s")),
        )
    )
    wait_for(
        lambda: any(
            s["name"] == "release" and s["state"] == "Waiting"
            for s in status(cluster, namespace).get("steps", [])
        ),
        60,
        "the release step to wait for v2",
    )
    cluster.kubectl("set", "image", "deploy/app", "app=app:v2", "-n", namespace)
    st = wait_for(
        lambda: (s := status(cluster, namespace)).get("progress") == "2/2" and s,
        60,
        "both steps done",
    )
    assert st["phase"] == "Progressing"  # settling: analysis keeps watching
    healthy = wait_for(
        lambda: (s := status(cluster, namespace)).get("analysis", {}).get("last") and s,
        30,
        "a measurement",
    )
    assert healthy["analysis"]["last"][0]["result"] == "Successful"
    app.set_slo(error_ratio=0.5)
    return wait_for(
        lambda: (s := status(cluster, namespace)).get("phase") in ("RolledBack", "Failed") and s,
        90,
        "the rollback to finish",
    )


def test_slo_breach_rolls_back_rollout_and_database(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    prometheus: Any,
    start_test_app: Callable[..., Any],
) -> None:
    app = start_test_app(error_ratio=0.0)
    st = run_showcase(cluster, namespace, prometheus, app, pnr=False)
    assert st["phase"] == "RolledBack"
    assert image(cluster, namespace) == "app:v1"
    cluster.kubectl("rollout", "status", "deploy/app", "-n", namespace, "--timeout=60s")
    assert "email_verified" not in columns(app_db)
    assert history(app_db)[-2:] == [("release", "down"), ("expand", "down")]
    rb = st["rollback"]
    assert rb["trigger"] == "SloBreached"
    assert re.search(r"error-rate \S+ > max 0\.05 \(2 consecutive\)", rb["reason"]), rb
    assert rb["undoneToRevision"] == "1"
    last = st["analysis"]["last"][0]
    assert (last["metric"], last["result"]) == ("error-rate", "Failed")
    assert "0.05" in (last["threshold"] or "")
    assert condition(st, "Ready")["reason"] == "RolledBack"
    events = cluster.kubectl("get", "events", "-n", namespace).stdout
    for reason in ("AnalysisVerdict", "RollbackStarted", "RolloutUndone", "StepReverted"):
        assert reason in events
    page = operator.metrics()
    assert 'dbmigrate_rollbacks_total{reason="SloBreached"} 1.0' in page
    failed = re.search(r'dbmigrate_analysis_measurements_total\{verdict="Failed"\} (\S+)', page)
    assert failed is not None
    assert float(failed.group(1)) >= 2
    assert 'dbmigrate_steps_reverted_total{kind="sql"} 1.0' in page
    assert f'dbmigrate_migrations{{namespace="{namespace}",phase="RolledBack"}} 1.0' in page

    # The post-mortem draft: the breaching metric with its timestamp, the step, what was undone.
    cm = report_config_map(cluster, namespace)
    assert cm is not None
    report = cm["data"]["report.md"]
    assert report.startswith("## Rollback Post-Mortem: ")
    assert f"- Trigger: SloBreached: {rb['reason']}" in report
    assert f"  - `error-rate` = {last['value']:.4g}, threshold {last['threshold']}" in report
    assert f"at {last['at']}" in report
    assert "- Step running at the time: `release` (step 2, awaitRollout" in report
    assert "- Rollout: undone to revision 1" in report
    assert "- Reverted: `release`, `expand` (newest first)" in report
    assert "- Left applied: nothing" in report
    assert "### Root Cause" in report
    (row,) = runs(app_db)
    assert (row["outcome"], row["report"]) == ("RolledBack", report)
    assert dbmigrate_report(cluster, "m", "-n", namespace).stdout == report


def test_slo_breach_past_point_of_no_return_keeps_the_database(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    operator: OperatorProcess,
    prometheus: Any,
    start_test_app: Callable[..., Any],
) -> None:
    app = start_test_app(error_ratio=0.0)
    st = run_showcase(cluster, namespace, prometheus, app, pnr=True)
    assert st["phase"] == "Failed"
    assert image(cluster, namespace) == "app:v1"
    assert "email_verified" in columns(app_db)
    assert ("expand", "down") not in history(app_db)
    ready = condition(st, "Ready")
    assert ready["reason"] == "PastPointOfNoReturn"
    assert st["rollback"]["trigger"] == "SloBreached"
    with psycopg.connect(app_db) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (100,)
    cm = report_config_map(cluster, namespace)
    assert cm is not None
    report = cm["data"]["report.md"]
    assert "- Outcome: Failed (PastPointOfNoReturn)" in report
    assert "`error-rate` = " in report
    assert "- Left applied: `expand` (point of no return), `release`: past the point of no " in (
        report
    )
    (row,) = runs(app_db)
    assert row["outcome"] == "Failed"
