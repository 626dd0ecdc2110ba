"""Benchmark: the operator with a fleet of DatabaseMigrations (issue #15, part 2).

Brings up what it needs (the local control plane of hack/local-cluster.sh unless it runs, a
throwaway PostgreSQL, the operator as a local process watching all namespaces, its Kubernetes
API requests counted by `dbmigrate_dev.counted_operator`) and then, in one namespace:

1. finished: `objects - active` migrations, each one SQL step (CREATE TABLE) really run by the
   operator to Succeeded, in waves of one per database (one migration per database at a time is
   the operator's rule; a wave's migrations run concurrently);
   then, with only finished objects present, the operator is measured for `--window` seconds:
   RSS, CPU, API requests per minute, database connections — once in the operator that ran
   them, once in a new one after a restart (and the requests the restart cost);
2. active: `active` migrations, one per database: CREATE TABLE, then an awaitRollout gate on a
   Deployment that stays on v1 (so they stay active, waiting), then an ALTER TABLE; measured
   the same way once every one waits at its gate;
3. start latency: with all of them present, `--samples` new one-step migrations (each on a
   database of its own) are created one after the other; from the create call's return to
   (a) the status saying step 1 Running or Succeeded and (b) its row in dbmigrate.history;
4. head-of-line: the bench takes an ACCESS EXCLUSIVE lock on the table the last step of active
   migration 0 alters, then rolls the Deployment out to v2, which opens every gate at once:
   the time from the rollout being complete to each migration's Succeeded, migration 0 (stuck
   behind the lock, retrying) apart from the others; then the lock is released.

    .venv/bin/python hack/bench/fleet.py [--objects 500] [--active 50] [--window 60]

Diagnostics: `--profile FILE` (cProfile of the operator over the window with the active ones),
`--objects-file FILE` (its live objects by type once the finished ones ran), `--operator-env
NAME=VALUE`. The namespace `fleet-bench` is deleted before and after.

Benchmarks are not tests: it prints tables whose figures go into BENCHMARKS.md (Fleet).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table

from dbmigrate_dev.cluster_client import Cluster, parse_exports, wait_for
from dbmigrate_dev.counted_operator import CountedOperator
from dbmigrate_dev.postgres import PostgresServer, free_port

REPO = Path(__file__).resolve().parents[2]
NS = "fleet-bench"
GROUP, VERSION, PLURAL = "dbmigrate.io", "v1alpha1", "databasemigrations"


# --- the stack --------------------------------------------------------------------------------


@contextlib.contextmanager
def local_cluster() -> Iterator[Cluster]:
    """hack/local-cluster.sh's cluster: reused if it runs, else started and stopped at the end."""
    script = REPO / "hack" / "local-cluster.sh"
    started = False
    if subprocess.run([script, "status"], capture_output=True, check=False).returncode != 0:
        print("  starting the local control plane (hack/local-cluster.sh up)", flush=True)
        subprocess.run([script, "up"], check=True, capture_output=True)
        started = True
    env = parse_exports(
        subprocess.run([script, "env"], capture_output=True, text=True, check=True).stdout
    )
    bin_dir = env["PATH"].removesuffix(":$PATH")
    cluster = Cluster(Path(env["KUBECONFIG"]), kubectl_bin=f"{bin_dir}/kubectl", local=True)
    cluster.install_crds(sorted((REPO / "crds").glob("*.yaml")))
    try:
        yield cluster
    finally:
        if started:
            subprocess.run([script, "down"], check=False, capture_output=True)


# --- objects ----------------------------------------------------------------------------------


def secret(name: str, dsn: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "data": {"dsn": base64.b64encode(dsn.encode()).decode()},
    }


def migration_id(name: str) -> str:
    return "20261202000000_" + name.replace("-", "_")


def migration(
    name: str, db: str, steps: list[dict[str, Any]], group: str = "", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DatabaseMigration",
        "metadata": {"name": name, "namespace": NS, "labels": {"fleet-bench/group": group}},
        "spec": {
            "migrationId": migration_id(name),
            "database": {"dsnSecretRef": {"name": db, "key": "dsn"}},
            "steps": steps,
            **spec,
        },
    }


def create_table_step(table: str) -> dict[str, Any]:
    return {
        "name": "create",
        "sql": {
            "up": f"CREATE TABLE {table} (id bigint PRIMARY KEY)",
            "down": f"DROP TABLE IF EXISTS {table}",
        },
    }


def active_migration(i: int, db: str) -> dict[str, Any]:
    steps = [
        create_table_step(f"active_{i}"),
        {"name": "release", "awaitRollout": {"image": "fleet-app:v2", "timeout": "2h"}},
        {
            "name": "alter",
            "sql": {
                "up": f"ALTER TABLE active_{i} ADD COLUMN note text",
                "down": f"ALTER TABLE active_{i} DROP COLUMN IF EXISTS note",
            },
        },
    ]
    return migration(f"active-{i:04d}", db, steps, "active", target={"deployment": "app"})


def deployment(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "app", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


class Fleet:
    def __init__(self, cluster: Cluster, pg: PostgresServer) -> None:
        self.cluster = cluster
        self.pg = pg
        self.custom = client.CustomObjectsApi(cluster.api)
        self.core = client.CoreV1Api(cluster.api)

    def clear(self) -> None:
        """Delete the namespace with the migrations left in it, the operator stopped: their
        finalizers are taken off first (else the namespace would wait for an operator)."""
        with contextlib.suppress(client.ApiException):
            for obj in self.custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)[
                "items"
            ]:
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, NS, PLURAL, obj["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                )  # fmt: skip
        self.cluster.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true",
                             timeout=300)  # fmt: skip

    def create(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)

    def statuses(self, group: str) -> dict[str, dict[str, Any]]:
        """The statuses of one group's migrations (a wave, the active ones): listing all of
        them every half second would load the API server more than the operator does."""
        items = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, label_selector=f"fleet-bench/group={group}"
        )["items"]
        return {o["metadata"]["name"]: o.get("status") or {} for o in items}

    def status(self, name: str) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
        return obj.get("status") or {}

    def wait_phase(
        self, group: str, names: list[str], ok: Callable[[dict[str, Any]], bool], what: str
    ) -> None:
        def done() -> bool:
            statuses = self.statuses(group)
            failed = [n for n in names if statuses.get(n, {}).get("phase") == "Failed"]
            if failed:
                raise RuntimeError(f"{failed[0]} failed: {statuses[failed[0]]}")
            return all(ok(statuses.get(n, {})) for n in names)

        wait_for(done, 600, what, interval=0.5)

    def connections(self) -> dict[str, int]:
        """The operator's sessions in pg_stat_activity, by application_name."""
        with psycopg.connect(self.pg.dsn(), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity "
                "WHERE application_name LIKE 'dbmigrate%' GROUP BY 1"
            ).fetchall()
        return {name: int(n) for name, n in rows}


def gate_waiting(status: dict[str, Any]) -> bool:
    return any(s["name"] == "release" and s["state"] == "Waiting" for s in status.get("steps", []))


def measure_window(op: CountedOperator, fleet: Fleet, seconds: float) -> dict[str, Any]:
    """RSS, CPU share of one core, API requests per minute and connections over `seconds`."""
    r0, c0, t0 = op.requests(), op.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    r1, c1, t1 = op.requests(), op.cpu_seconds(), time.monotonic()
    minutes = (t1 - t0) / 60
    by_kind = {k: v - r0.get(k, 0.0) for k, v in r1.items() if v - r0.get(k, 0.0) > 0}
    return {
        "rss": op.rss_mib(),
        "cpu": 100 * (c1 - c0) / (t1 - t0),
        "req_per_min": sum(by_kind.values()) / minutes,
        "requests": {k: v / minutes for k, v in sorted(by_kind.items())},
        "connections": fleet.connections(),
    }


def history_row(dsn: str, migration_id: str) -> bool:
    with contextlib.suppress(psycopg.Error), psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM dbmigrate.history WHERE migration_id = %s", (migration_id,)
        ).fetchone()
        return row is not None
    return False


def start_latency(fleet: Fleet, k: int) -> tuple[float, float, float]:
    """Seconds from the create call's return to step 1 started, its history row, Succeeded."""
    db = f"fresh_{k}"
    dsn = fleet.pg.create_database(db)
    fleet.cluster.apply(secret(db.replace("_", "-"), dsn))
    name = f"new-{k:02d}"
    fleet.create(migration(name, db.replace("_", "-"), [create_table_step("fresh")], "new"))
    t0 = time.monotonic()
    started = history = succeeded = None
    while succeeded is None or history is None:
        now = time.monotonic() - t0
        if now > 120:
            raise RuntimeError(f"{name} did not succeed in 120 s")
        status = fleet.status(name)
        steps = status.get("steps") or [{}]
        if started is None and steps[0].get("state") in ("Running", "Succeeded"):
            started = now
        if history is None and history_row(dsn, migration_id(name)):
            history = time.monotonic() - t0
        if succeeded is None and status.get("phase") == "Succeeded":
            succeeded = now
        time.sleep(0.02)
    return (started if started is not None else history), history, succeeded


# --- the run ----------------------------------------------------------------------------------


def fmt_requests(requests: dict[tuple[str, str, str], float]) -> str:
    parts = [f"{verb} {res} ({cl}) {n:.0f}" for (cl, verb, res), n in requests.items()]
    return "; ".join(parts) or "none"


def run(args: argparse.Namespace, workdir: Path) -> None:
    finished_n = args.objects - args.active
    dbs = args.active
    rows: list[list[object]] = []
    with local_cluster() as cluster:
        pg = PostgresServer(workdir / "postgres", free_port())
        pg.init()
        pg.start()
        op: CountedOperator | None = None
        fleet = Fleet(cluster, pg)
        try:
            fleet.clear()
            cluster.kubectl("create", "namespace", NS)
            wait_for(
                lambda: (
                    cluster.kubectl("get", "sa", "default", "-n", NS, check=False).returncode == 0
                ),
                60,
                "the default ServiceAccount",
            )
            dsns = [pg.create_database(f"db_{i}") for i in range(dbs)]
            cluster.apply(*[secret(f"db-{i}", dsn) for i, dsn in enumerate(dsns)])
            cluster.apply(deployment("fleet-app:v1"))
            cluster.kubectl("rollout", "status", "deploy/app", "-n", NS, "--timeout=120s")
            env = {"DBMIGRATE_POLL_INTERVAL": str(args.poll_interval)}
            env.update(kv.split("=", 1) for kv in args.operator_env)
            if args.objects_file:
                env["DBMIGRATE_BENCH_OBJECTS"] = args.objects_file
            if args.profile:
                env["DBMIGRATE_BENCH_PROFILE"] = args.profile
            op = CountedOperator(cluster.kubeconfig, workdir, env)
            rss_start = op.rss_mib()

            t0 = time.monotonic()
            for wave_start in range(0, finished_n, dbs):
                wave, group = [], f"wave-{wave_start // dbs}"
                for i in range(wave_start, min(finished_n, wave_start + dbs)):
                    name = f"done-{i:04d}"
                    fleet.create(
                        migration(name, f"db-{i % dbs}", [create_table_step(f"t_{i}")], group)
                    )
                    wave.append(name)
                fleet.wait_phase(group, wave, lambda s: s.get("phase") == "Succeeded", "a wave")
                print(
                    f"  {wave_start + len(wave)}/{finished_n} finished "
                    f"({time.monotonic() - t0:.0f} s, RSS {op.rss_mib():.0f} MiB)",
                    flush=True,
                )
            finish_time = time.monotonic() - t0
            time.sleep(10)  # the last daemons stop, kopf's last patches land
            ran = measure_window(op, fleet, args.window)
            print(f"  only finished, the operator that ran them: {ran}", flush=True)
            if args.objects_file:
                os.kill(op.proc.pid, signal.SIGUSR1)
                time.sleep(5)
            op.stop()
            op = CountedOperator(cluster.kubeconfig, workdir, env)
            restart = op.settle()
            print(f"  restarted: {restart}", flush=True)
            idle = measure_window(op, fleet, args.window)
            print(f"  only finished, after a restart: {idle}", flush=True)

            names = [f"active-{i:04d}" for i in range(args.active)]
            for i in range(args.active):
                fleet.create(active_migration(i, f"db-{i}"))
            fleet.wait_phase("active", names, gate_waiting, "every active migration at its gate")
            time.sleep(5)
            if args.profile:
                os.kill(op.proc.pid, signal.SIGUSR2)
            busy = measure_window(op, fleet, args.window)
            if args.profile:
                os.kill(op.proc.pid, signal.SIGUSR2)
            print(f"  with {args.active} active: {busy}", flush=True)

            lat = [start_latency(fleet, k) for k in range(args.samples)]
            print(f"  start latencies: {lat}", flush=True)

            hol = head_of_line(cluster, fleet, dsns[0], names)
            print(f"  head of line: {hol}", flush=True)
            rss_end = op.rss_mib()
        finally:
            if op is not None:
                op.stop()
            fleet.clear()
            pg.stop()

    extra = f", operator env {' '.join(args.operator_env)}" if args.operator_env else ""
    print(
        f"\n{machine()}; {args.objects} objects ({finished_n} finished, {args.active} active "
        f"on {dbs} databases), poll interval {args.poll_interval} s, "
        f"window {args.window} s{extra}\n"
    )
    print(
        f"finished migrations run in {finish_time:.0f} s "
        f"({finished_n / finish_time:.1f}/s); RSS at start {rss_start:.0f} MiB, "
        f"at the end {rss_end:.0f} MiB\n"
    )
    print(
        f"restart with {finished_n} finished present: {restart['requests']:.0f} API requests "
        "until none came for 5 s\n"
    )
    measured = (
        (f"{finished_n} finished, the operator that ran them", ran),
        (f"{finished_n} finished, after a restart", idle),
        (f"+ {args.active} active (waiting at a gate)", busy),
    )
    for label, m in measured:
        rows.append(
            [
                label,
                f"{m['rss']:.0f}",
                f"{m['cpu']:.2f}",
                f"{m['req_per_min']:.1f}",
                sum(m["connections"].values()),
            ]
        )
    print(
        markdown_table(
            ["objects present", "RSS MiB", "CPU % of a core", "API requests/min", "DB connections"],
            rows,
        )
    )
    for label, m in measured:
        print(
            f"\n{label}: requests/min by kind: {fmt_requests(m['requests'])}; "
            f"connections {m['connections']}"
        )
    cols = list(zip(*lat, strict=True))
    print()
    print(
        markdown_table(
            ["new migration (s after create)", "min", "median", "max"],
            [
                [what, f"{min(v):.2f}", f"{statistics.median(v):.2f}", f"{max(v):.2f}"]
                for what, v in zip(
                    ("step 1 Running", "history row", "Succeeded"), cols, strict=True
                )
            ],
        )
    )
    others = hol["others"]
    print(
        f"\nhead of line: rollout complete -> Succeeded, {len(others)} others: min "
        f"{min(others):.1f} s, median {statistics.median(others):.1f} s, max {max(others):.1f} "
        f"s; the locked one: still {hol['stuck_phase']} after {hol['held']:.0f} s "
        f"({hol['stuck_retries']} lock retries), Succeeded {hol['stuck_after_release']:.1f} s "
        "after the lock was released"
    )


def head_of_line(cluster: Cluster, fleet: Fleet, dsn0: str, names: list[str]) -> dict[str, Any]:
    """Migration 0's last step blocked on a lock the bench holds; the others must not wait."""
    blocker = psycopg.connect(dsn0)
    blocker.execute("LOCK TABLE active_0 IN ACCESS EXCLUSIVE MODE")  # until rollback
    try:
        cluster.kubectl("set", "image", "deploy/app", "app=fleet-app:v2", "-n", NS)
        cluster.kubectl("rollout", "status", "deploy/app", "-n", NS, "--timeout=120s")
        t0 = time.monotonic()
        done: dict[str, float] = {}
        while len(done) < len(names) - 1 and time.monotonic() - t0 < 300:
            for name, status in fleet.statuses("active").items():
                if name in names[1:] and name not in done and status.get("phase") == "Succeeded":
                    done[name] = time.monotonic() - t0
            time.sleep(0.1)
        time.sleep(max(0.0, 30 - (time.monotonic() - t0)))  # hold the lock 30 s in all
        held = time.monotonic() - t0
        stuck = fleet.status(names[0])
        retries = sum(s.get("lockRetries", 0) for s in stuck.get("steps", []))
    finally:
        blocker.rollback()
        blocker.close()
    t1 = time.monotonic()
    wait_for(lambda: fleet.status(names[0]).get("phase") == "Succeeded", 120, "migration 0")
    return {
        "others": list(done.values()),
        "stuck_phase": stuck.get("phase"),
        "held": held,
        "stuck_retries": retries,
        "stuck_after_release": time.monotonic() - t1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=500, help="migrations in all")
    parser.add_argument("--active", type=int, default=50, help="active ones, one per database")
    parser.add_argument("--window", type=float, default=60, help="seconds per measurement")
    parser.add_argument("--samples", type=int, default=5, help="new migrations timed")
    parser.add_argument(
        "--objects-file",
        metavar="FILE",
        help="the operator's live objects by type, written to FILE after the finished ones ran",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="the operator's cProfile over the window with the active ones, written to FILE",
    )
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the operator (repeatable), e.g. MALLOC_ARENA_MAX=2",
    )
    parser.add_argument("--poll-interval", type=float, default=5.0, help="DBMIGRATE_POLL_INTERVAL")
    args = parser.parse_args()
    # Stopped with a signal (also when started in the background, where SIGINT is ignored),
    # it still cleans up: the operator and PostgreSQL stop, the namespace goes.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.objects <= args.active:
        parser.error("--objects must be more than --active")
    workdir = Path(tempfile.mkdtemp(prefix="dbmigrate-fleet-"))
    print(f"work directory {workdir} (operator log: operator.log)", flush=True)
    run(args, workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
