"""The demo behind `make demo`: the seed's migration, end to end, then an automatic rollback.

Brings up a cluster — kind when a Docker engine answers (the operator's image built, loaded and
installed with the chart), the local control plane otherwise or when kind cannot start
(`--cluster` chooses) — with PostgreSQL, Prometheus scraping a test app that stands in for
`shop-api`, and the operator; seeds `users` (1 M rows by default), then:

1. applies the seed's "add email_verified" migration (examples/add-email-verified.yaml) and
   follows it to Succeeded: the rehearsal on a scratch copy, the pre-deployment checklist (the
   demo approves it), expand, concurrent index, batched backfill as a Kubernetes Job, waiting
   for shop-api v2 to roll out (the demo plays your CD system and rolls it out), the verified
   backup before the point of no return, the NOT NULL contract — under SLO analysis the whole
   time;
   then prints the migration log entry the operator wrote (`dbmigrate report`);
2. applies a second migration whose release (v3) makes the app's error ratio rise: the operator
   undoes the rollout to v2 and runs the down SQL, by itself, and leaves a post-mortem draft
   with the facts filled in, which the demo prints.

It ends with `kubectl dbmigrate get` of both migrations (the kubectl plugin installed with
the package), prints what to look at and keeps everything running until Ctrl-C (`--no-wait`: stop at
once). Ctrl-C at any time stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml

from dbmigrate.core.batching import format_count
from dbmigrate_dev.stack import KindStack, LocalStack, tool_dir

REPO = Path(__file__).resolve().parents[1]
BOLD, DIM, GREEN, RED, YELLOW, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[33m", "\033[0m")
    if sys.stdout.isatty()
    else ("",) * 6
)


def say(text: str = "") -> None:
    print(text, flush=True)


def banner(text: str) -> None:
    say(f"\n{BOLD}== {text} =={RESET}")


def seed_users(stack: LocalStack, rows: int) -> None:
    t0 = time.monotonic()
    with psycopg.connect(stack.dsn, autocommit=True) as conn:
        # What the post-deployment watch compares the application's queries with.
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(
            "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, "
            "email_confirmed_at timestamptz, created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO users (email, email_confirmed_at) SELECT 'user' || g || '@example.com', "
            "CASE WHEN g %% 3 <> 0 THEN now() - g * interval '1 second' END "
            "FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE users")
    say(f"seeded users with {format_count(rows)} rows in {time.monotonic() - t0:.1f}s")


BACKUP_CLAIM = "shop-db-backups"
DEMO_WATCH = "2m"


def backup_claim(stack: LocalStack) -> None:
    """Where the demo's backup goes: a PersistentVolumeClaim (the example names S3). On kind the
    default StorageClass provisions it; on the local control plane it binds a hostPath volume
    in the demo's directory."""
    assert stack.cluster is not None
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": BACKUP_CLAIM, "namespace": stack.namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
    }
    if not isinstance(stack, KindStack):
        host = stack.workdir / "backups"
        host.mkdir(parents=True, exist_ok=True)
        host.chmod(0o777)  # the backup Job runs as a non-root user
        volume = f"{stack.namespace}-{BACKUP_CLAIM}"
        # A cluster kept running from an earlier demo still has its volume (cluster-scoped,
        # retained), pointing at that run's directory: the path of a volume cannot change.
        stack.cluster.kubectl("delete", "pv", volume, "--ignore-not-found", "--wait=true")
        stack.cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": volume},
                "spec": {
                    "capacity": {"storage": "2Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(host), "type": "Directory"},
                },
            }
        )
        claim["spec"].update(storageClassName="", volumeName=volume)
    stack.cluster.apply(claim)


def seed_migration(stack: LocalStack) -> dict[str, Any]:
    """The example, pointed at the local Prometheus, with demo-sized windows and settle, and
    its backup written to the demo's claim instead of S3."""
    doc = yaml.safe_load((REPO / "examples" / "add-email-verified.yaml").read_text())
    doc["metadata"]["namespace"] = stack.namespace
    backup = doc["spec"]["backup"]
    backup.pop("s3")
    backup["persistentVolumeClaim"] = {"claimName": BACKUP_CLAIM}
    analysis = doc["spec"]["analysis"]
    analysis["prometheus"]["address"] = stack.prometheus.url  # type: ignore[union-attr]
    analysis.update(interval="5s", settle="20s", baselineWindow="30s")
    for metric in analysis["metrics"]:
        metric["query"] = metric["query"].replace("[1m]", "[15s]")
    doc["spec"]["postDeploy"].update(watch=DEMO_WATCH, interval="10s")  # not the example's day
    return doc  # type: ignore[no-any-return]


def risky_migration(stack: LocalStack) -> dict[str, Any]:
    return {
        "apiVersion": "dbmigrate.io/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": {"name": "add-nickname", "namespace": stack.namespace},
        "spec": {
            "migrationId": "20240201090000_add_nickname",
            "database": {"dsnSecretRef": {"name": "shop-db", "key": "dsn"}},
            "target": {"deployment": "shop-api"},
            "steps": [
                {
                    "name": "expand",
                    "sql": {
                        "up": "ALTER TABLE users ADD COLUMN IF NOT EXISTS nickname text;",
                        "down": "ALTER TABLE users DROP COLUMN IF EXISTS nickname;",
                    },
                },
                {
                    "name": "release-v3",
                    "awaitRollout": {"image": "registry.example.com/shop-api:v3"},
                },
            ],
            "analysis": {
                "prometheus": {"address": stack.prometheus.url},  # type: ignore[union-attr]
                "interval": "5s",
                "failureLimit": 2,
                "settle": "10m",
                "metrics": [
                    {
                        "name": "error-rate",
                        "query": stack.error_ratio_query("10s"),
                        "max": 0.05,
                    }
                ],
            },
        },
    }


def _measurement(m: dict[str, Any]) -> str:
    value = "no value" if m.get("value") is None else f"{m['value']:.4g}"
    return f"{m['metric']}={value} {m['result']}"


def line(status: dict[str, Any]) -> str:
    phase = status.get("phase", "Pending")
    colour = {"Succeeded": GREEN, "RolledBack": YELLOW, "Failed": RED}.get(phase, "")
    parts = [
        f"{colour}{phase}{RESET}",
        f"step {status.get('currentStep', '-')}",
        f"progress {status.get('progress', '-')}",
    ]
    for st in status.get("steps") or []:
        bf = st.get("backfill")
        if st.get("state") == "Running" and bf:
            pct = f"{bf['percent']}%" if bf.get("percent") is not None else "?"
            rate = f"{format_count(bf['rowsPerSecond'])} rows/s" if bf.get("rowsPerSecond") else ""
            parts.append(
                f"backfill {format_count(bf.get('rowsDone', 0))} rows ({pct}) {rate} "
                f"eta {bf.get('eta') or '?'}"
            )
    for cond in status.get("conditions") or []:
        if cond["type"] == "Ready" and cond.get("message"):
            parts.append(f"{DIM}{cond['message'][:110]}{RESET}")
    last = (status.get("analysis") or {}).get("last") or []
    if last:
        parts.append("slo " + ", ".join(_measurement(m) for m in last))
    return " | ".join(parts)


def follow(
    stack: LocalStack, name: str, *, on_status: Any, until: set[str], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    shown = ""
    while time.monotonic() < deadline:
        status = stack.migration_status(name)
        text = line(status)
        if text != shown:
            say(f"  {DIM}{time.strftime('%H:%M:%S')}{RESET} {text}")
            shown = text
        on_status(status)
        if status.get("phase") in until:
            return status
        time.sleep(0.5)
    raise TimeoutError(f"{name} did not reach {until} within {timeout:.0f}s")


def print_report(stack: LocalStack, name: str, what: str) -> None:
    """The record the operator left when the migration ended (`dbmigrate report NAME`)."""
    assert stack.cluster is not None
    got = stack.cluster.kubectl(
        "get", "configmap", f"{name}-report", "-n", stack.namespace, "-o", "json", check=False
    )
    if got.returncode != 0:
        say(f"{YELLOW}no report ConfigMap {name}-report: see the ReportFailed event{RESET}")
        return
    say(f"\n{BOLD}{what} (dbmigrate report {name} -n {stack.namespace}):{RESET}")
    for text in json.loads(got.stdout)["data"]["report.md"].rstrip().splitlines():
        say(f"  {DIM}|{RESET} {text}")


def story_one(stack: LocalStack, rows: int) -> None:
    banner("1. the seed's migration: add users.email_verified (expand, backfill, contract)")
    assert stack.cluster is not None
    seed_users(stack, rows)
    stack.deploy_app("registry.example.com/shop-api:v1")
    say("shop-api v1 is running (3 replicas); applying examples/add-email-verified.yaml")
    backup_claim(stack)
    stack.cluster.apply(seed_migration(stack))
    released = approved = False

    def roll_out_v2(status: dict[str, Any]) -> None:
        nonlocal released, approved
        checklist = status.get("checklist") or {}
        if checklist.get("missing") == ["Approval"] and not approved:
            approved = True
            say(f"  {BOLD}-> the pre-deployment checklist (status.checklist):{RESET}")
            for line in checklist.get("checkboxes") or []:
                say(f"       {line}")
            say(
                f"  {BOLD}-> it waits for a person's approval; approving "
                f"(kubectl annotate dbm add-email-verified dbmigrate.io/approved-by=demo){RESET}"
            )
            assert stack.cluster is not None
            stack.cluster.kubectl(
                "annotate",
                "dbm",
                "add-email-verified",
                "-n",
                stack.namespace,
                "dbmigrate.io/approved-by=demo",
            )
        waiting = any(
            s["name"] == "release-v2" and s["state"] == "Waiting" for s in status.get("steps") or []
        )
        if waiting and not released:
            released = True
            say(
                f"  {BOLD}-> the migration waits for shop-api v2; rolling it out "
                f"(what your CD system would do){RESET}"
            )
            assert stack.cluster is not None
            stack.cluster.kubectl(
                "set",
                "image",
                "deploy/shop-api",
                "shop-api=registry.example.com/shop-api:v2",
                "-n",
                stack.namespace,
            )

    t0 = time.monotonic()
    final = follow(
        stack,
        "add-email-verified",
        on_status=roll_out_v2,
        until={"Succeeded", "Failed", "RolledBack"},
        timeout=900,
    )
    if final.get("phase") != "Succeeded":
        raise SystemExit(f"{RED}the seed's migration ended {final.get('phase')}{RESET}")
    say(f"{GREEN}Succeeded{RESET} in {time.monotonic() - t0:.0f}s")
    with psycopg.connect(stack.dsn) as conn:
        verified, unverified, nulls = conn.execute(
            "SELECT count(*) FILTER (WHERE email_verified), count(*) FILTER (WHERE NOT "
            "email_verified), count(*) FILTER (WHERE email_verified IS NULL) FROM users"
        ).fetchone() or (0, 0, 0)
        rows_ = conn.execute(
            "SELECT step, direction, duration_ms FROM dbmigrate.history "
            "WHERE migration_id = '20240115120000_add_email_verified_column' ORDER BY id"
        ).fetchall()
    say(
        f"users: {format_count(verified)} verified, {format_count(unverified)} not, {nulls} NULL; "
        "email_verified is NOT NULL now"
    )
    say("history: " + ", ".join(f"{s} {d} ({ms} ms)" for s, d, ms in rows_))
    backup = final.get("backup") or {}
    if backup.get("state") == "Succeeded":
        say(
            f"backup before {backup.get('beforeStep')}: {backup.get('location')} "
            f"({format_count(backup.get('sizeBytes') or 0)} bytes, sha256 "
            f"{(backup.get('sha256') or '')[:12]}, verified)"
        )
        say(f"  restore: {backup.get('restoreCommand')}")
    print_report(stack, "add-email-verified", "the migration log entry it wrote")


def story_two(stack: LocalStack) -> None:
    banner("2. a release that breaks the app: the operator rolls back by itself")
    assert stack.cluster is not None and stack.app is not None
    stack.cluster.apply(risky_migration(stack))
    state = {"released": False, "broken": False}

    def misbehave(status: dict[str, Any]) -> None:
        assert stack.cluster is not None and stack.app is not None
        waiting = any(
            s["name"] == "release-v3" and s["state"] == "Waiting" for s in status.get("steps") or []
        )
        if waiting and not state["released"]:
            state["released"] = True
            say(f"  {BOLD}-> rolling out shop-api v3{RESET}")
            stack.cluster.kubectl(
                "set",
                "image",
                "deploy/shop-api",
                "shop-api=registry.example.com/shop-api:v3",
                "-n",
                stack.namespace,
            )
        if status.get("progress") == "2/2" and not state["broken"]:
            state["broken"] = True
            say(f"  {BOLD}{RED}-> v3 has a bug: 30% of its requests now fail{RESET}")
            stack.app.set_slo(error_ratio=0.3)

    t0 = time.monotonic()
    final = follow(
        stack,
        "add-nickname",
        on_status=misbehave,
        until={"RolledBack", "Failed", "Succeeded"},
        timeout=300,
    )
    stack.app.set_slo(error_ratio=0.0)
    if final.get("phase") != "RolledBack":
        raise SystemExit(f"{RED}expected RolledBack, got {final.get('phase')}{RESET}")
    rollback = final.get("rollback") or {}
    dep = stack.cluster.get("deploy", "shop-api", "-n", stack.namespace)
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    with psycopg.connect(stack.dsn) as conn:
        has_column = conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'users' AND column_name = 'nickname'"
        ).fetchone()
    say(f"{YELLOW}RolledBack{RESET} {time.monotonic() - t0:.0f}s after it was applied")
    say(f"  why:        {rollback.get('reason')}")
    say(f"  deployment: back to {image} (revision {rollback.get('undoneToRevision')} restored)")
    say(
        f"  database:   reverted {', '.join(rollback.get('stepsReverted') or [])}; "
        f"users.nickname {'still exists' if has_column and has_column[0] else 'is gone'}"
    )
    print_report(stack, "add-nickname", "the post-mortem draft it wrote, for the team to finish")


def plugin_get(stack: LocalStack) -> None:
    """Both migrations as `kubectl dbmigrate get` draws them (kubectl finds the plugin, installed
    next to this Python, on the PATH)."""
    assert stack.cluster is not None
    banner("kubectl dbmigrate get")
    env = {
        **os.environ,
        "KUBECONFIG": str(stack.cluster.kubeconfig),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for name in ("add-email-verified", "add-nickname"):
        argv = [stack.cluster.kubectl_bin, "dbmigrate", "get", name, "-n", stack.namespace]
        got = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        say(f"$ kubectl dbmigrate get {name} -n {stack.namespace}")
        say((got.stdout or got.stderr).rstrip())
        say()


def what_to_look_at(stack: LocalStack) -> None:
    assert stack.cluster is not None and stack.prometheus is not None
    banner("what to look at")
    ns = stack.namespace
    say(f"export KUBECONFIG={stack.cluster.kubeconfig}")
    say(f"kubectl dbmigrate list -n {ns}")
    say(f"kubectl dbmigrate get add-email-verified -n {ns} --watch   (Ctrl-C ends it)")
    say(f"kubectl dbmigrate history add-nickname -n {ns}")
    say(f"kubectl describe dbm add-nickname -n {ns}")
    say(f"dbmigrate report add-nickname -n {ns}   (the post-mortem; add-email-verified: the log)")
    say(
        f"kubectl dbmigrate report add-email-verified -n {ns}   (after its {DEMO_WATCH} watch: "
        "its findings, e.g. an index the app never scanned, and its cleanup)"
    )
    say(f"kubectl get events -n {ns} --sort-by=.lastTimestamp")
    say(f"kubectl rollout history deploy/shop-api -n {ns}")
    hints = dict(stack.operator_hints())
    say(f"operator metrics: {hints['operator metrics']}")
    say(
        f"Prometheus:       {stack.prometheus.url}/graph  (paste: {stack.error_ratio_query('15s')})"
    )
    secret = f"kubectl get secret shop-db -n {ns} -o jsonpath='{{.data.dsn}}' | base64 -d"
    say(f'database:         psql "$({secret})" -c "TABLE dbmigrate.history"')
    say(f'                  psql "$({secret})" -c "SELECT outcome, report FROM dbmigrate.runs"')
    say(f"operator log:     {hints['operator log']}")


def docker_engine_works() -> bool:
    """`docker info` answers: the machine's own engine (the demo never starts one)."""
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


def quiet(message: str) -> None:
    say(f"{DIM}{message}{RESET}")


def make_stack(mode: str, workdir: Path) -> LocalStack:
    if mode == "local":
        return LocalStack(workdir, REPO, namespace="shop", say=quiet)
    return KindStack(
        workdir,
        REPO,
        namespace="shop",
        say=quiet,
        kind=f"{tool_dir(REPO, 'build-kind.sh')}/kind",
        helm=f"{tool_dir(REPO, 'build-helm.sh')}/helm",
    )


def bring_up(mode: str, workdir: Path, stacks: list[LocalStack]) -> LocalStack:
    """`kind`: on kind or fail; `local`: the local control plane; `auto`: kind when a Docker
    engine works, the local control plane otherwise (or when kind cannot start). Every stack
    started is appended to `stacks` first, so that the caller stops it whatever happens."""
    chosen = mode
    if mode == "auto":
        chosen = "kind" if docker_engine_works() else "local"
        if chosen == "local":
            say(f"{DIM}no Docker engine answers: using the local control plane{RESET}")
    banner(f"bringing up the stack ({'kind' if chosen == 'kind' else 'local control plane'})")
    stacks.append(make_stack(chosen, workdir))
    try:
        stacks[-1].up()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        if mode != "auto" or chosen != "kind":
            raise
        say(f"{YELLOW}kind could not start: {str(exc).strip().splitlines()[-1]}{RESET}")
        say("falling back to the local control plane")
        stacks.pop().down()
        stacks.append(make_stack("local", workdir / "local"))
        stacks[-1].up()
    return stacks[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="users to seed")
    parser.add_argument("--no-wait", action="store_true", help="stop everything at the end")
    parser.add_argument("--workdir", type=Path, help="where to keep state (default: a temp dir)")
    parser.add_argument(
        "--cluster",
        choices=("auto", "kind", "local"),
        default="auto",
        help="kind (needs a Docker engine), the local control plane, or kind when Docker works",
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dbmigrate-demo-"))
    stacks: list[LocalStack] = []

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        stack = bring_up(args.cluster, workdir, stacks)
        story_one(stack, args.rows)
        story_two(stack)
        plugin_get(stack)
        what_to_look_at(stack)
        if not args.no_wait:
            say(f"\n{BOLD}Everything keeps running; Ctrl-C stops it.{RESET}")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        say("\nstopping")
    finally:
        for started in reversed(stacks):
            started.down()
        say("stopped everything the demo started")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
