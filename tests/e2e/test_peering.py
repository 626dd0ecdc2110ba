"""Two operator replicas with kopf peering: only one acts.

Both watch the same namespace with `--peering`; the one with the lower priority stays paused
in favour of the other (each replica draws its own priority). A migration whose steps record
themselves in a table then runs every step exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import history, migration, wait_phase
from tests.fixtures.operator import OperatorProcess

RESUMED = "Resuming operations after the pause"
PAUSED = "Pausing operations in favour of"


def active(replicas: list[OperatorProcess]) -> list[OperatorProcess]:
    """Replicas whose latest peering decision was to resume."""
    out = []
    for replica in replicas:
        log = replica.log()
        if log.rfind(RESUMED) > log.rfind(PAUSED):
            out.append(replica)
    return out


def test_two_replicas_never_act_at_once(
    cluster: Cluster, namespace: str, pg_dsn: str, db_secret: Callable[[str, str], None]
) -> None:
    db_secret("db", pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE applied (step text)")
    cluster.apply(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "dbmigrate", "namespace": namespace},
        }
    )
    replicas = [
        OperatorProcess(namespace, cluster.kubeconfig, args=("--peering",)) for _ in range(2)
    ]
    for replica in replicas:
        replica.start()
    try:
        # kopf starts every replica paused until peering decides; the winner logs that it
        # resumes, a replica that sees a higher-priority peer stays (or goes back to) paused.
        try:
            wait_for(lambda: len(active(replicas)) == 1, 60, "exactly one active replica")
        except AssertionError as exc:
            logs = "\n=====\n".join(r.log()[-3000:] for r in replicas)
            raise AssertionError(f"{exc}\n{logs}") from None
        steps = [
            {"name": f"s{i}", "sql": {"up": f"INSERT INTO applied VALUES ('s{i}')"}}
            for i in range(1, 4)
        ]
        cluster.apply(migration(namespace, steps))
        wait_phase(cluster, namespace, "Succeeded", timeout=90)
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute("SELECT step, count(*) FROM applied GROUP BY 1 ORDER BY 1")
            assert rows.fetchall() == [("s1", 1), ("s2", 1), ("s3", 1)]
        assert history(pg_dsn) == [("s1", "up"), ("s2", "up"), ("s3", "up")]
        assert len(active(replicas)) == 1  # still one: the other never took over
    finally:
        for replica in replicas:
            replica.stop()
            replica._log.unlink(missing_ok=True)
