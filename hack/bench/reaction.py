"""Benchmark: how fast an SLO breach turns into a rollback, end to end.

The whole local stack (control plane, PostgreSQL, Prometheus scraping the test app, the
operator) runs the showcase migration: expand -> awaitRollout(v2), analysis on the app's error
ratio with `interval` 5 s and `failureLimit` 2. Once v2 is out and the analysis is healthy, the
app's error ratio is raised; we time (a) until the rollback starts (phase RollingBack) and (b)
until it finished (RolledBack: rollout undone and completed, expand's down SQL run).
The rule of thumb of Argo Rollouts and Flagger is failureLimit x interval (+ initialDelay).

    .venv/bin/python hack/bench/reaction.py [--runs 3] [--interval 5] [--failure-limit 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from dbmigrate_dev.stack import LocalStack

REPO = Path(__file__).resolve().parents[2]


def one_run(stack: LocalStack, run: int, interval: int, failure_limit: int) -> tuple[float, float]:
    assert stack.cluster is not None
    name = f"reaction-{run}"
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS users (id bigserial PRIMARY KEY, email text)")
    stack.app.set_slo(error_ratio=0.0)  # type: ignore[union-attr]
    # Start healthy: the previous run's errors must have left the rate window.
    stack.prometheus.wait_value(  # type: ignore[union-attr]
        stack.error_ratio_query("10s"), lambda v: v < 0.01, timeout=60
    )
    stack.deploy_app("shop-api:v1")
    stack.cluster.apply(
        {
            "apiVersion": "dbmigrate.io/v1alpha1",
            "kind": "DatabaseMigration",
            "metadata": {"name": name, "namespace": stack.namespace},
            "spec": {
                "migrationId": f"2026112800000{run}_reaction",
                "database": {"dsnSecretRef": {"name": "shop-db", "key": "dsn"}},
                "target": {"deployment": "shop-api"},
                "safety": {"lint": "Off"},
                "steps": [
                    {
                        "name": "expand",
                        "sql": {
                            "up": f"ALTER TABLE users ADD COLUMN c{run} boolean",
                            "down": f"ALTER TABLE users DROP COLUMN IF EXISTS c{run}",
                        },
                    },
                    {"name": "release", "awaitRollout": {"image": "shop-api:v2"}},
                ],
                "analysis": {
                    "prometheus": {"address": stack.prometheus.url},  # type: ignore[union-attr]
                    "interval": f"{interval}s",
                    "failureLimit": failure_limit,
                    "settle": "30m",
                    "metrics": [
                        {"name": "error-rate", "query": stack.error_ratio_query("10s"), "max": 0.05}
                    ],
                },
            },
        }
    )
    stack.wait_status(
        name,
        lambda s: any(
            x["name"] == "release" and x["state"] == "Waiting" for x in s.get("steps", [])
        ),
        60,
        "release waiting",
    )
    stack.cluster.kubectl(
        "set", "image", "deploy/shop-api", "shop-api=shop-api:v2", "-n", stack.namespace
    )
    # v2 is out and the app is healthy again: the last measurement is Successful (the previous
    # run's errors must have left the rate window).
    stack.wait_status(
        name,
        lambda s: (
            s.get("progress") == "2/2"
            and [m["result"] for m in (s.get("analysis") or {}).get("last") or []] == ["Successful"]
        ),
        120,
        "v2 out and a healthy measurement",
    )
    t0 = time.monotonic()
    stack.app.set_slo(error_ratio=0.5)  # type: ignore[union-attr]
    stack.wait_status(
        name,
        lambda s: s.get("phase") in ("RollingBack", "RolledBack", "Failed"),
        120,
        "the rollback to start",
        interval=0.05,
    )
    started = time.monotonic() - t0
    final = stack.wait_status(
        name,
        lambda s: s.get("phase") in ("RolledBack", "Failed"),
        120,
        "the rollback to finish",
        interval=0.05,
    )
    finished = time.monotonic() - t0
    assert final["phase"] == "RolledBack", final
    stack.cluster.kubectl("delete", "dbm", name, "-n", stack.namespace)
    return started, finished


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--failure-limit", type=int, default=2)
    args = parser.parse_args()
    stack = LocalStack(
        Path(tempfile.mkdtemp(prefix="dbmigrate-reaction-")),
        REPO,
        namespace="bench-reaction",
        say=lambda m: print(f"  {m}"),
    )
    results = []
    try:
        stack.up()
        for run in range(1, args.runs + 1):
            results.append(one_run(stack, run, args.interval, args.failure_limit))
            print(
                f"  run {run}: rollback started after {results[-1][0]:.1f} s, "
                f"finished after {results[-1][1]:.1f} s"
            )
    finally:
        stack.down()
    rule = args.failure_limit * args.interval
    print(
        f"\ninterval {args.interval} s, failureLimit {args.failure_limit}; "
        f"rule of thumb failureLimit x interval = {rule} s\n"
    )
    print("| | min | median | max | median / rule of thumb |")
    print("|---|---|---|---|---|")
    for label, values in (
        ("(a) breach -> rollback started", [r[0] for r in results]),
        ("(b) breach -> rollback finished", [r[1] for r in results]),
    ):
        med = statistics.median(values)
        print(
            f"| {label} | {min(values):.1f} s | {med:.1f} s | {max(values):.1f} s "
            f"| {med / rule:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
