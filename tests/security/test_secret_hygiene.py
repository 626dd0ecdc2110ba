"""A malformed DSN in a Secret is reported as malformed — a fixed reason, where the DSN is —
and no piece of the password reaches the status, the Events, the operator's log or its metrics.
Real API server, the operator as a process."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import condition, migration, status
from tests.fixtures.operator import OperatorProcess

PASSWORD = "Zq7Xk9vQj"
FRAGMENTS = {PASSWORD[i : i + 4] for i in range(len(PASSWORD) - 3)}


@pytest.mark.parametrize(
    "dsn",
    [
        pytest.param(f"postgresql://bob:{PASSWORD}%zz@db.invalid/app", id="bad-percent-escape"),
        pytest.param(
            f"host=db.invalid user=bob password={PASSWORD[:4]} {PASSWORD[4:]}", id="space"
        ),
        pytest.param(f"postgresql://bob:{PASSWORD[:4]}@{PASSWORD[4:]}@db.invalid/app", id="at"),
    ],
)
def test_a_malformed_dsn_leaks_nothing(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    db_secret: Callable[[str, str], None],
    dsn: str,
) -> None:
    db_secret("db", dsn)
    cluster.apply(
        migration(namespace, [{"name": "s", "sql": {"up": "SELECT 1", "down": "SELECT 1"}}])
    )
    st = wait_for(
        lambda: (s := status(cluster, namespace)).get("conditions") and s,
        60,
        "the migration's conditions",
    )
    ready = condition(st, "Ready")
    assert ready["reason"] == "InvalidDsn"
    assert ready["message"].startswith("the DSN in Secret db key dsn is malformed")
    assert condition(st, "Stalled")["status"] == "True"
    events = wait_for(
        lambda: [
            e
            for e in cluster.get("events", "-n", namespace).get("items", [])
            if e.get("reason") == "InvalidDsn"
        ],
        30,
        "an InvalidDsn event",
    )
    seen = {
        "status": json.dumps(status(cluster, namespace)),
        "events": json.dumps(cluster.get("events", "-n", namespace)),
        "log": operator.log(),
        "metrics": operator.metrics(),
    }
    assert events
    for where, text in seen.items():
        leaked = sorted(f for f in FRAGMENTS if f in text)
        assert not leaked, (where, leaked)
