"""`kubectl dbmigrate` through the real kubectl (it finds `kubectl-dbmigrate` on the PATH) against
a real API server, with the user's kubeconfig.

Aspects: `list` and `get` (text and `-o json`) follow a migration through its states; `approve`
starts a migration the checklist holds; `suspend` holds it before its next step and `resume`
lets it go on; `rollback` of a running migration reverts it (and `get` shows the rollback);
`history` prints the database's `dbmigrate.history` rows with the DSN from the migration's
Secret, and a user who may not read that Secret is told so and gets nothing; `logs` reads a
backfill Job's pod log through the API server (the local pod executor serves it), following it
until the pod ends; `get --watch` in a real terminal (tmux, 80 columns) draws the tree and
redraws it as the migration advances, and Ctrl-C ends it with exit 0.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbmigrate_dev.cluster_client import Cluster, wait_for
from tests.e2e.helpers import (
    deploy_app,
    history,
    kubectl_plugin,
    migration,
    plugin_env,
    serviceaccount_kubeconfig,
    status,
    step_state,
    wait_phase,
)
from tests.fixtures.operator import OperatorProcess

EXPAND = {
    "name": "expand",
    "sql": {
        "up": "ALTER TABLE users ADD COLUMN email_verified boolean",
        "down": "ALTER TABLE users DROP COLUMN IF EXISTS email_verified",
    },
}
FILL = {
    "name": "fill",
    "backfill": {
        "table": "users",
        "set": "email_verified = false",
        "batchSize": 200,
        "maxBatchSize": 500,
        "targetBatchDuration": "50ms",
        "pause": "40ms",  # a few seconds: long enough to watch and to follow
    },
}
RELEASE = {"name": "release", "awaitRollout": {"image": "app:v2", "timeout": "5m"}}
ROWS = 40_000


@pytest.fixture
def users_db(pg_dsn: str, db_secret: Callable[[str, str], None]) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigserial PRIMARY KEY, email text)")
        conn.execute(
            "INSERT INTO users (email) SELECT 'u' || g FROM generate_series(1, %s) g", (ROWS,)
        )
        conn.execute("VACUUM ANALYZE users")
    db_secret("db", pg_dsn)
    return pg_dsn


def plugin(cluster: Cluster, *args: str, **kw: Any) -> str:
    """`kubectl dbmigrate ARGS`, which must succeed; its stdout."""
    done = kubectl_plugin(cluster, *args, **kw)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def tree(text: str) -> list[list[str]]:
    """The step lines of `get`'s tree, split into their columns."""
    return [line.split() for line in text.splitlines() if line.startswith(("├── ", "└── "))]


def get_json(cluster: Cluster, namespace: str, name: str = "m") -> dict[str, Any]:
    return json.loads(plugin(cluster, "get", name, "-n", namespace, "-o", "json"))  # type: ignore[no-any-return]


def test_approve_suspend_resume_and_rollback(
    cluster: Cluster, namespace: str, users_db: str, operator: OperatorProcess
) -> None:
    deploy_app(cluster, namespace)
    cluster.apply(
        migration(
            namespace,
            [EXPAND, RELEASE],
            target={"deployment": "app"},
            checklist={"require": ["Approval"]},
        )
    )
    wait_phase(cluster, namespace, "Waiting")
    listed = plugin(cluster, "list", "-n", namespace).splitlines()
    assert listed[0].split() == ["NAME", "PHASE", "PROGRESS", "STEP", "AGE"]
    assert listed[1].split()[:3] == ["m", "Waiting", "0/2"]
    text = plugin(cluster, "get", "m", "-n", namespace)
    assert "Checklist:   waiting" in text
    assert tree(text) == [
        ["├──", "•", "expand", "sql", "Pending"],
        ["└──", "•", "release", "awaitRollout", "Pending"],
    ]
    assert "\x1b[" not in text, "no ANSI when stdout is not a terminal"
    assert all(len(line) <= 80 for line in text.splitlines())

    # Suspended while it waits for approval: approved, it still starts no step.
    assert plugin(cluster, "suspend", "m", "-n", namespace).strip() == (
        f"databasemigration {namespace}/m suspended"
    )
    assert cluster.get("dbm", "m", "-n", namespace)["spec"]["suspend"] is True
    said = plugin(cluster, "approve", "m", "--by", "alice", "-n", namespace)
    assert said.strip() == f"databasemigration {namespace}/m approved by alice"
    meta = cluster.get("dbm", "m", "-n", namespace)["metadata"]
    assert meta["annotations"]["dbmigrate.io/approved-by"] == "alice"
    st = wait_phase(cluster, namespace, "Suspended")
    assert st["checklist"]["approvedBy"] == "alice"
    assert history(users_db) == []

    plugin(cluster, "resume", "m", "-n", namespace)
    assert cluster.get("dbm", "m", "-n", namespace)["spec"]["suspend"] is False
    wait_for(
        lambda: step_state(cluster, namespace, "release") == "Waiting",
        60,
        "the release step to wait for app:v2",
    )
    got = get_json(cluster, namespace)
    assert [(s["name"], s["kind"], s["state"]) for s in got["steps"]] == [
        ("expand", "sql", "Succeeded"),
        ("release", "awaitRollout", "Waiting"),
    ]
    assert (got["phase"], got["progress"], got["currentStep"]) == ("Waiting", "1/2", "release")
    assert got["checklist"]["approvedBy"] == "alice"
    assert history(users_db) == [("expand", "up")]

    # The running migration rolled back on request.
    said = plugin(cluster, "rollback", "m", "-n", namespace)
    assert said.strip() == f"databasemigration {namespace}/m rollback requested"
    st = wait_phase(cluster, namespace, "RolledBack", timeout=90)
    assert history(users_db) == [("expand", "up"), ("expand", "down")]
    text = plugin(cluster, "get", "m", "-n", namespace)
    assert "Status:      ↺ RolledBack" in text
    assert f"Rollout:     revision {st['targetRevision']}" in text
    why = st["rollback"].get("reason") or st["rollback"]["trigger"]
    assert f"Rollback:    {why}" in text
    assert tree(text)[0][:5] == ["├──", "↺", "expand", "sql", "RolledBack"]
    got = get_json(cluster, namespace)
    assert got["rollback"]["stepsReverted"] == ["expand"]
    listed = plugin(cluster, "list", "-A").splitlines()
    assert listed[0].split() == ["NAMESPACE", "NAME", "PHASE", "PROGRESS", "STEP", "AGE"]
    assert all(len(line) <= 80 for line in listed), "a long namespace is cut"
    items = json.loads(plugin(cluster, "list", "-A", "-o", "json"))["items"]
    ours = [i for i in items if i["namespace"] == namespace]
    assert [(i["name"], i["phase"], i["progress"]) for i in ours] == [("m", "RolledBack", "0/2")]

    missing = kubectl_plugin(cluster, "get", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert f"DatabaseMigration 'nope' in namespace {namespace!r} not found" in missing.stderr


@pytest.fixture
def viewer(cluster: Cluster, namespace: str, tmp_path: Path) -> Path:
    """A user who may read DatabaseMigrations in the namespace, but not Secrets."""
    cluster.kubectl("create", "serviceaccount", "viewer", "-n", namespace)
    cluster.kubectl(
        "create", "role", "dbm-viewer", "-n", namespace,
        "--verb=get,list,watch", "--resource=databasemigrations.dbmigrate.io",
    )  # fmt: skip
    cluster.kubectl(
        "create", "rolebinding", "dbm-viewer", "-n", namespace,
        "--role=dbm-viewer", f"--serviceaccount={namespace}:viewer",
    )  # fmt: skip
    return serviceaccount_kubeconfig(cluster, namespace, "viewer", tmp_path / "viewer.kubeconfig")


def test_history_with_the_users_access_to_the_secret(
    cluster: Cluster, namespace: str, users_db: str, operator: OperatorProcess, viewer: Path
) -> None:
    cluster.apply(migration(namespace, [EXPAND]))
    wait_phase(cluster, namespace, "Succeeded", timeout=120)

    text = plugin(cluster, "history", "m", "-n", namespace)
    lines = text.splitlines()
    assert lines[0].split() == ["STEP", "KIND", "DIRECTION", "APPLIED", "AT", "DURATION"]
    assert [line.split()[:3] for line in lines[1:]] == [["expand", "sql", "up"]]
    rows = json.loads(plugin(cluster, "history", "m", "-n", namespace, "-o", "json"))["items"]
    with psycopg.connect(users_db) as conn:
        (applied_at, duration_ms), *_ = conn.execute(
            "SELECT applied_at, duration_ms FROM dbmigrate.history"
        ).fetchall()
    assert rows == [
        {
            "step": "expand",
            "kind": "sql",
            "direction": "up",
            "appliedAt": applied_at.isoformat(),
            "durationMs": duration_ms,
        }
    ]
    password = psycopg.conninfo.conninfo_to_dict(users_db).get("password")
    assert password is None or str(password) not in text

    # The viewer sees the migration, but may not read its Secret: told so, nothing printed.
    seen = kubectl_plugin(cluster, "get", "m", "-n", namespace, kubeconfig=viewer)
    assert seen.returncode == 0, seen.stderr
    refused = kubectl_plugin(cluster, "history", "m", "-n", namespace, kubeconfig=viewer)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert f"you may not read Secret 'db' in namespace {namespace!r}" in refused.stderr
    # and the viewer may not steer it either
    denied = kubectl_plugin(cluster, "suspend", "m", "-n", namespace, kubeconfig=viewer)
    assert denied.returncode == 1
    assert f"you may not patch DatabaseMigration {namespace}/m" in denied.stderr


def running_fill(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    for st in status(cluster, namespace).get("steps", []):
        started = (st.get("backfill") or {}).get("rowsDone", 0) > 0
        if st["name"] == "fill" and st["state"] == "Running" and st.get("job") and started:
            return st  # type: ignore[no-any-return]
    return None


def test_logs_of_a_backfill_job(
    cluster: Cluster,
    namespace: str,
    users_db: str,
    operator: OperatorProcess,
    local_executor: Cluster,
) -> None:
    cluster.apply(migration(namespace, [EXPAND, FILL]))
    st = wait_for(lambda: running_fill(cluster, namespace), 120, "the backfill Job to run")
    # Followed while it runs: the command ends when the pod has ended, with the whole log.
    followed = kubectl_plugin(cluster, "logs", "m", "fill", "-n", namespace, "-f", timeout=180)
    assert followed.returncode == 0, followed.stderr
    assert "backfill public.users (key id), worker 0/1" in followed.stdout
    assert f"done: {ROWS:,} rows" in followed.stdout
    final = wait_phase(cluster, namespace, "Succeeded", timeout=120)
    assert final["steps"][1]["job"] == st["job"]
    # Read again after the end: the same log, from the pods API (not from a local file).
    again = plugin(cluster, "logs", "m", "fill", "-n", namespace)
    assert "backfill public.users (key id), worker 0/1" in again
    assert "done:" in again
    pod = cluster.get("pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={st['job']}")
    name = pod["items"][0]["metadata"]["name"]
    raw = cluster.kubectl("logs", name, "-n", namespace).stdout
    assert raw.strip()
    assert raw.strip() in again
    # A step without a Job, and one that does not exist.
    none = kubectl_plugin(cluster, "logs", "m", "expand", "-n", namespace)
    assert none.returncode == 1
    assert f"step 'expand' of {namespace}/m has run no Job (yet)" in none.stderr
    unknown = kubectl_plugin(cluster, "logs", "m", "nope", "-n", namespace)
    assert unknown.returncode == 1
    assert "no step 'nope' in its status (steps: expand, fill)" in unknown.stderr


def test_get_watch_to_a_pipe_appends_plain_blocks(
    cluster: Cluster, namespace: str, users_db: str, operator: OperatorProcess
) -> None:
    cluster.apply(migration(namespace, [EXPAND], checklist={"require": ["Approval"]}))
    wait_phase(cluster, namespace, "Waiting")
    watch = subprocess.Popen(
        [cluster.kubectl_bin, "dbmigrate", "get", "m", "-n", namespace, "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=plugin_env(cluster),
        # Ctrl-C as a terminal delivers it: a test run in the background (`make test &`) has
        # SIGINT ignored, which its children inherit, and Python then installs no handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen: list[str] = []
    reader = threading.Thread(
        target=lambda: seen.extend(iter(watch.stdout.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    try:
        # The first block (drawn from the list before the watch starts), however slow the
        # plugin's start on a loaded machine, before the change.
        wait_for(lambda: any("Status:" in line for line in seen), 60, "the first block")
        cluster.kubectl("annotate", "dbm", "m", "-n", namespace, "dbmigrate.io/approved-by=eve")
        wait_phase(cluster, namespace, "Succeeded", timeout=60)
        wait_for(
            lambda: any("Succeeded" in line for line in seen if "Status:" in line),
            30,
            "the last change to reach the watch",
        )
    finally:
        watch.send_signal(signal.SIGINT)  # kubectl execs the plugin: this is its process
        watch.wait(timeout=60)
        reader.join(10)
        err = watch.stderr.read() if watch.stderr else ""  # type: ignore[union-attr]
    out = "".join(seen)
    assert watch.returncode == 0, err
    assert "\x1b[" not in out, "no ANSI in a pipe"
    blocks = out.split("Name:        m ")[1:]
    assert len(blocks) >= 3, out  # waiting, then the changes up to Succeeded, each appended
    assert "Status:      ॥ Waiting" in blocks[0]
    assert "Status:      ✔ Succeeded" in blocks[-1]
    assert all(len(line) <= 80 for line in out.splitlines())


# --- a real terminal ---------------------------------------------------------------------------


class Tmux:
    """A tmux server of its own (its own socket), one 80x30 window running a command."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def run(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-u", "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    def screen(self) -> list[str]:
        return self.run("capture-pane", "-p", "-t", "w").splitlines()


@pytest.fixture
def tmux(namespace: str) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (hack/bootstrap.sh installs it)")
    t = Tmux(f"dbmigrate-{namespace}")
    try:
        yield t
    finally:
        subprocess.run(["tmux", "-L", t.socket, "kill-server"], capture_output=True, check=False)


def shown(t: Tmux, text: str) -> list[str] | None:
    lines = t.screen()
    return lines if any(text in line for line in lines) else None


def test_get_watch_in_a_real_terminal(
    cluster: Cluster,
    namespace: str,
    users_db: str,
    operator: OperatorProcess,
    local_executor: Cluster,
    tmux: Tmux,
) -> None:
    cluster.apply(migration(namespace, [EXPAND, FILL], checklist={"require": ["Approval"]}))
    wait_phase(cluster, namespace, "Waiting")
    env = plugin_env(cluster)
    keep = ("KUBECONFIG", "PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL")
    exports = " ".join(f"{k}={shlex.quote(env[k])}" for k in keep if k in env)
    command = (
        f"env {exports} TERM=xterm-256color kubectl dbmigrate get m -n {namespace} --watch; "
        "echo WATCH-EXIT=$?; sleep 600"
    )
    tmux.run("new-session", "-d", "-s", "w", "-x", "80", "-y", "30", "bash", "-c", command)

    first = wait_for(lambda: shown(tmux, "Checklist:   waiting"), 30, "the tree on the screen")
    assert any(line.startswith("├── • expand") for line in first), first
    assert any(line.startswith("└── • fill") for line in first), first
    assert all(len(line) <= 80 for line in first)

    # The migration advances: the screen is redrawn (not appended to) with each change.
    cluster.kubectl("annotate", "dbm", "m", "-n", namespace, "dbmigrate.io/approved-by=bob")
    bar = wait_for(lambda: shown(tmux, "rows/s"), 120, "the backfill bar on the screen")
    assert any(line.startswith("├── ✔ expand") for line in bar), bar
    assert sum(line.startswith("Name:") for line in bar) == 1, "redrawn, not appended"
    done = wait_for(lambda: shown(tmux, "Status:      ✔ Succeeded"), 120, "Succeeded shown")
    assert any(line.startswith("└── ✔ fill") for line in done), done
    assert all(len(line) <= 80 for line in done)

    tmux.run("send-keys", "-t", "w", "C-c")
    wait_for(lambda: shown(tmux, "WATCH-EXIT=0"), 15, "the watch to end with exit 0 on Ctrl-C")
