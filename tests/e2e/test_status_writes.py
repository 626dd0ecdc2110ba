"""Status writes against the real API server: optimistic concurrency (reconcile.platform).

Aspects: a status written by someone else since the pass read the object (another operator
during a peering hand-over) is not clobbered — the write fails with StatusConflict and the pass
starts over; a change of the object's metadata alone (kopf's own annotations) does not stop the
write; the writes of one pass follow each other without conflicts.
"""

from __future__ import annotations

import json

import pytest

from dbmigrate.reconcile.platform import KubernetesPlatform, StatusConflict
from dbmigrate_dev.cluster_client import Cluster
from tests.e2e.helpers import migration, status

STEPS = [{"name": "one", "sql": {"up": "SELECT 1", "down": "SELECT 1"}}]


def patch_status(cluster: Cluster, namespace: str, body: dict[str, object]) -> None:
    cluster.kubectl(
        "patch",
        "dbm",
        "m",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": body}),
    )


async def test_a_status_written_by_someone_else_is_not_clobbered(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(migration(namespace, STEPS))
    platform = KubernetesPlatform(namespace, "m", ())
    await platform.read_resource()
    patch_status(cluster, namespace, {"phase": "Progressing", "progress": "1/1"})
    with pytest.raises(StatusConflict):
        await platform.write_status({"phase": "Failed", "progress": "0/1"})
    assert status(cluster, namespace) == {"phase": "Progressing", "progress": "1/1"}
    # The next pass reads again and writes over what it has seen.
    await platform.read_resource()
    await platform.write_status({"phase": "Succeeded", "progress": "1/1"})
    assert status(cluster, namespace)["phase"] == "Succeeded"


async def test_a_metadata_change_does_not_stop_the_status_write(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(migration(namespace, STEPS))
    platform = KubernetesPlatform(namespace, "m", ())
    await platform.read_resource()
    await platform.write_status({"phase": "Progressing", "progress": "0/1"})
    cluster.kubectl("annotate", "dbm", "m", "-n", namespace, "dbmigrate.io/last-handled=x")
    await platform.write_status({"phase": "Progressing", "progress": "1/1"})
    await platform.write_status({"phase": "Succeeded"})
    assert status(cluster, namespace) == {"phase": "Succeeded", "progress": "1/1"}
