"""`spec.backup` on the local cluster: the backup Job runs for real (the local pod executor),
with real storage, and what it recorded is restored into a fresh database and compared.

Aspects:
- to a PersistentVolumeClaim (a hostPath PersistentVolume bound by the controller manager):
  the backup is taken after the reversible step and before the point of no return, shown in
  status.backup (location, size, sha256, restore command), and the dump on the volume restores
  the table as it was before the point of no return;
- to S3 (SeaweedFS): the same, from the object;
- a failing backup (a wrong S3 secret key): Failed with BackupFailed, the guarded step not
  applied (no history row, its column still there); after the Secret is fixed and the failed Job
  deleted, the backup is taken again and the migration finishes;
- the API server refuses a backup without exactly one destination, a subPath climbing out of
  its volume, an endpoint without a scheme.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbmigrate.backup.pgdump import libpq_env
from dbmigrate_dev.cluster_client import Cluster, wait_for
from dbmigrate_dev.postgres import PostgresServer
from dbmigrate_dev.seaweedfs import SeaweedS3
from tests.e2e.helpers import condition, history, migration, wait_phase
from tests.fixtures.operator import OperatorProcess

ROWS = 20_000
STEPS: list[dict[str, Any]] = [
    {
        "name": "expand",
        "sql": {
            "up": "ALTER TABLE users ADD COLUMN nickname text",
            "down": "ALTER TABLE users DROP COLUMN nickname",
        },
    },
    {
        "name": "contract",
        "sql": {"up": "ALTER TABLE users DROP COLUMN legacy"},
        "pointOfNoReturn": True,
    },
]


def fingerprint(dsn: str) -> tuple[int, str]:
    """Rows and an md5 over (id, email, legacy) of every row in key order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), md5(string_agg(concat_ws(',', id, email, legacy), '|' ORDER BY id)) "
            "FROM users"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


@pytest.fixture
def app_db(pg_dsn: str, db_secret: Callable[[str, str], None], local_executor: Cluster) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, legacy text);"
            "INSERT INTO users SELECT g, 'u' || g || '@example.com', 'old-' || g "
            f"FROM generate_series(1, {ROWS}) g;"
            "CREATE TABLE audit (id bigint PRIMARY KEY);"  # not the migration's: not dumped
        )
    db_secret("db", pg_dsn)
    return pg_dsn


@pytest.fixture
def fresh_dsn(pg_server: PostgresServer) -> Iterator[str]:
    name = f"restore_{uuid.uuid4().hex[:10]}"
    dsn = pg_server.create_database(name)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def claim(cluster: Cluster, namespace: str) -> Iterator[tuple[str, Path]]:
    """A PersistentVolumeClaim bound to a hostPath PersistentVolume on a temporary directory."""
    host = Path(tempfile.mkdtemp(prefix="dbmigrate-pv-"))
    pv = f"backup-{namespace}"[:63]
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "manual",
                "hostPath": {"path": str(host), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": "backups"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "backups", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "manual",
                "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": pv,
            },
        },
    )
    wait_for(
        lambda: cluster.get("pvc", "backups", "-n", namespace)["status"].get("phase") == "Bound",
        60,
        "the claim to be bound",
    )
    try:
        yield "backups", host
    finally:
        cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)
        shutil.rmtree(host, ignore_errors=True)


def s3_secret(cluster: Cluster, namespace: str, access: str, secret: str) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3", "namespace": namespace},
            "data": {
                "accessKeyId": base64.b64encode(access.encode()).decode(),
                "secretAccessKey": base64.b64encode(secret.encode()).decode(),
            },
        }
    )


def restore(archive: bytes, dsn: str) -> None:
    env = libpq_env(dsn)
    done = subprocess.run(
        ["pg_restore", "--no-owner", "--single-transaction", "--dbname", env["PGDATABASE"]],
        input=archive,
        env={**os.environ, **env},
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


def recorded_backups(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('dbmigrate.backups')").fetchone() == (None,):
            return 0
        row = conn.execute("SELECT count(*) FROM dbmigrate.backups").fetchone()
    assert row is not None
    return int(row[0])


def events(cluster: Cluster, namespace: str) -> list[str]:
    items = cluster.get("events", "-n", namespace)["items"]
    return [e["reason"] for e in sorted(items, key=lambda e: e["metadata"]["creationTimestamp"])]


def check_backup(st: dict[str, Any]) -> dict[str, Any]:
    backup = st["backup"]
    assert backup["state"] == "Succeeded"
    assert backup["beforeStep"] == "contract"
    assert backup["tables"] == ["public.users"]
    assert backup["sizeBytes"] > 0
    assert len(backup["sha256"]) == 64
    assert backup["restoreCommand"].startswith(("pg_restore", "aws s3 cp"))
    assert "pg_restore --clean --if-exists" in backup["restoreCommand"]
    assert backup["serverVersion"].startswith("15")
    assert backup["clientVersion"].startswith("15")
    contract = next(s for s in st["steps"] if s["name"] == "contract")
    assert backup["finishedAt"] <= contract["startedAt"]  # before the point of no return
    return backup  # type: ignore[no-any-return]


def test_backup_to_a_claim_restores_the_table_as_before_the_point_of_no_return(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    fresh_dsn: str,
    claim: tuple[str, Path],
    operator: OperatorProcess,
) -> None:
    before = fingerprint(app_db)
    name, host = claim
    backup_spec = {"persistentVolumeClaim": {"claimName": name, "subPath": "shop"}}
    cluster.apply(migration(namespace, STEPS, backup=backup_spec))
    st = wait_phase(cluster, namespace, "Succeeded", timeout=240)
    backup = check_backup(st)
    assert backup["location"].startswith(f"pvc:{name}/shop/")
    dump = host / backup["location"].removeprefix(f"pvc:{name}/")
    data = dump.read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (backup["sizeBytes"], backup["sha256"])
    assert backup["restoreCommand"].endswith(f'"$CLAIM_ROOT"/shop/{dump.name}')
    assert history(app_db) == [("expand", "up"), ("contract", "up")]
    reasons = events(cluster, namespace)
    assert reasons.index("BackupStarted") < reasons.index("BackupSucceeded")

    restore(data, fresh_dsn)
    assert fingerprint(fresh_dsn) == before == (ROWS, before[1])
    with psycopg.connect(fresh_dsn) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    assert tables == {"users"}


def test_backup_to_s3(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    fresh_dsn: str,
    seaweed_s3: SeaweedS3,
    s3_bucket: str,
    operator: OperatorProcess,
) -> None:
    before = fingerprint(app_db)
    s3_secret(cluster, namespace, seaweed_s3.access_key, seaweed_s3.secret_key)
    backup_spec = {
        "s3": {
            "endpoint": seaweed_s3.endpoint,
            "bucket": s3_bucket,
            "prefix": "shop",
            "credentialsSecretRef": {"name": "s3"},
        }
    }
    cluster.apply(migration(namespace, STEPS, backup=backup_spec))
    st = wait_phase(cluster, namespace, "Succeeded", timeout=240)
    backup = check_backup(st)
    key = backup["location"].removeprefix(f"s3://{s3_bucket}/")
    assert key.startswith("shop/20")
    assert seaweed_s3.list_keys(s3_bucket) == [key]
    data = seaweed_s3.read_object(s3_bucket, key)
    assert hashlib.sha256(data).hexdigest() == backup["sha256"]
    assert seaweed_s3.endpoint in backup["restoreCommand"]
    assert seaweed_s3.secret_key not in str(cluster.get("jobs", "-n", namespace))
    restore(data, fresh_dsn)
    assert fingerprint(fresh_dsn) == before


def test_a_failed_backup_stops_before_the_guarded_step_and_is_taken_again(
    cluster: Cluster,
    namespace: str,
    app_db: str,
    seaweed_s3: SeaweedS3,
    s3_bucket: str,
    operator: OperatorProcess,
) -> None:
    s3_secret(cluster, namespace, seaweed_s3.access_key, "not-the-secret-key")
    backup_spec = {
        "s3": {
            "endpoint": seaweed_s3.endpoint,
            "bucket": s3_bucket,
            "credentialsSecretRef": {"name": "s3"},
        }
    }
    cluster.apply(migration(namespace, STEPS, backup=backup_spec, rollback={"policy": "Manual"}))
    st = wait_phase(cluster, namespace, "Failed", timeout=180)
    ready = condition(st, "Ready")
    assert ready["reason"] == "BackupFailed"
    assert st["backup"]["state"] == "Failed"
    assert "SignatureDoesNotMatch" in st["backup"]["message"]
    assert "delete job" in st["backup"]["message"]
    contract = next(s for s in st["steps"] if s["name"] == "contract")
    assert contract["state"] == "Pending"
    # The guarded step did not run: no history row, its column still there.
    assert history(app_db) == [("expand", "up")]
    assert fingerprint(app_db)[0] == ROWS
    assert seaweed_s3.list_keys(s3_bucket) == []
    assert recorded_backups(app_db) == 0
    assert "BackupFailed" in events(cluster, namespace)

    # A person fixes the Secret and deletes the failed Job: the backup is taken again.
    s3_secret(cluster, namespace, seaweed_s3.access_key, seaweed_s3.secret_key)
    cluster.kubectl("delete", "job", st["backup"]["job"], "-n", namespace, "--wait=true")
    st = wait_phase(cluster, namespace, "Succeeded", timeout=240)
    check_backup(st)
    assert history(app_db) == [("expand", "up"), ("contract", "up")]
    assert len(seaweed_s3.list_keys(s3_bucket)) == 1
    assert recorded_backups(app_db) == 1


@pytest.mark.parametrize(
    ("backup", "says"),
    [
        pytest.param({}, "exactly one of persistentVolumeClaim and s3", id="no-destination"),
        pytest.param(
            {
                "persistentVolumeClaim": {"claimName": "b"},
                "s3": {
                    "endpoint": "https://s3",
                    "bucket": "bkt",
                    "credentialsSecretRef": {"name": "s"},
                },
            },
            "exactly one of persistentVolumeClaim and s3",
            id="two-destinations",
        ),
        pytest.param(
            {"persistentVolumeClaim": {"claimName": "b", "subPath": "../etc"}},
            "subPath",
            id="sub-path-climbs-out",
        ),
        pytest.param(
            {
                "s3": {
                    "endpoint": "s3.example.com",
                    "bucket": "b",
                    "credentialsSecretRef": {"name": "s"},
                }
            },
            "endpoint",
            id="endpoint-without-scheme",
        ),
    ],
)
def test_invalid_backups_are_rejected_by_the_api_server(
    cluster: Cluster, namespace: str, backup: dict[str, Any], says: str
) -> None:
    manifest = migration(namespace, STEPS, backup=backup)
    proc = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(manifest), check=False
    )
    assert proc.returncode != 0
    assert says in proc.stderr
