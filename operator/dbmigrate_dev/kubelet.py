"""The local kubelet (the "local pod executor"): the kubelet's job for pods of chosen images, as
local processes.

kwok fakes every pod on its nodes (Running, then Succeeded), which is good enough for a
Deployment's rollout but not for a Job whose work is the point (a backfill, `alembic upgrade
head`). For each pod bound to a node whose first container's image is in the image map, this
executor runs the containers' command and args as local processes with the pod's environment
(`value`, `secretKeyRef`, `configMapKeyRef`, `fieldRef`, `envFrom`), writes the real outcome
through the pods/status subresource (Running, then Succeeded/Failed with the exit code and the
tail of the output as the termination message) so that the real Job controller completes or
retries the Job, kills the processes when the pod is deleted and then finalises the deletion,
as a kubelet does. kwok's pod stages exclude the same images (`hack/kwok/`), so nothing else
writes these pods' status.

Images:
- `localhost/dbmigrate:dev` — the operator's own image: a command starting with `dbmigrate`
  (the image's entrypoint, also used when the pod gives only args) runs as
  `<this Python> -m dbmigrate ...`;
- `localhost/host-exec:latest` — the command and args run as they are on the host
  (`sh -c ...`, `psql ...`, `alembic upgrade head`);
- `localhost/dbmigrate:container` — the operator's image built from the Dockerfile
  (`hack/build-image.sh localhost/dbmigrate:container`): run for real by a Docker engine
  (`docker run` with the host's network, the pod's security context, emptyDir as tmpfs, the
  projected ServiceAccount token volume written out and mounted; `--docker-env` names the
  command that tells which engine);
- more from `DBMIGRATE_EXECUTOR_IMAGES` (or `--image`), `IMAGE=host|dbmigrate|docker`
  comma-separated.

Logs: each container's output is kept in a log file, and a CRI copy of it is what `kubectl logs`
reads through the API server (kwok's node server serves it from the pod's kwok `Logs` object,
which the executor creates: dbmigrate_dev.kubelet_logs).

Volumes: a local process shares the host's filesystem (no mount namespace), so a volume cannot
appear at its mountPath. A `persistentVolumeClaim` volume is emulated as far as a program that
is told its paths can tell: the claim's bound PersistentVolume (hostPath or local, what a
single-node cluster has; the pod waits while the claim is unbound, as pods wait for volumes)
gives a host directory (plus the mount's subPath), and every env value and argument naming a
path under the mountPath is rewritten to the same path under that directory. A program that
finds the mount by itself (without being told the path) would not see it; the operator's own
Jobs are always told (`--output-dir /backup/...`). emptyDir mounts are not emulated (processes
use the host's /tmp); the Docker runner mounts emptyDir as tmpfs and projected volumes.

Failpoints (`dbmigrate.failpoints`) reach a pod's processes the way a chaos tool reaches a
cluster: a namespace annotated `dev.dbmigrate.io/failpoints: "name=action,..."` gets them in
the environment of the first pod of each Job (so a crash happens once, and the Job's next pod
shows the recovery). A namespace annotated `dev.dbmigrate.io/source: DIR` runs its pods with
`PYTHONPATH=DIR`: the code of the checkout whose tests made the namespace, not the executor's.

Run as `python -m dbmigrate_dev.kubelet --kubeconfig FILE --state-dir DIR`;
`hack/local-cluster.sh up` starts it. `--list-images` prints the image names (one per line),
which is how `up` renders kwok's stage selectors from the same map.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from dbmigrate.failpoints import ENV as FAILPOINTS_ENV
from dbmigrate_dev.cluster_client import parse_exports
from dbmigrate_dev.kubelet_logs import (
    KWOK_GROUP,
    KWOK_LOGS,
    KWOK_VERSION,
    CriLog,
    cri_path,
    logs_object,
)
from dbmigrate_dev.kubelet_podspec import (
    ConfigError,
    EnvSources,
    build_argv,
    claim_host_path,
    claim_mounts,
    docker_run_args,
    projected_files,
    resolve_env,
    run_as,
    under_mounts,
)

DBMIGRATE_IMAGE = "localhost/dbmigrate:dev"
HOST_EXEC_IMAGE = "localhost/host-exec:latest"
IMAGES_ENV = "DBMIGRATE_EXECUTOR_IMAGES"
RUNNER_HOST = "host"
RUNNER_DBMIGRATE = "dbmigrate"
RUNNER_DOCKER = "docker"
RUNNERS = (RUNNER_HOST, RUNNER_DBMIGRATE, RUNNER_DOCKER)
# The operator's image as built from the Dockerfile (hack/build-image.sh), run by a Docker engine.
CONTAINER_IMAGE = "localhost/dbmigrate:container"
BUILTIN_IMAGES: dict[str, str] = {
    DBMIGRATE_IMAGE: RUNNER_DBMIGRATE,
    HOST_EXEC_IMAGE: RUNNER_HOST,
    CONTAINER_IMAGE: RUNNER_DOCKER,
}
FIELD_MANAGER = "dbmigrate-local-executor"
# The first `docker stop`-like signal, then SIGKILL: a pod's own grace period, capped so that a
# test deleting a pod does not wait half a minute.
FAILPOINTS_ANNOTATION = "dev.dbmigrate.io/failpoints"
# The directory holding the `dbmigrate` package the namespace's pods are to run (PYTHONPATH):
# a test run from another checkout than the executor's gets its own code in its Jobs' pods.
SOURCE_ANNOTATION = "dev.dbmigrate.io/source"
MAX_GRACE_SECONDS = float(os.environ.get("DBMIGRATE_EXECUTOR_MAX_GRACE", "10"))
# Kubernetes caps a termination message at 4096 bytes; keep well under it.
MESSAGE_TAIL_BYTES = 2048
RESTART_BACKOFF_MAX = 10.0
POLL_SECONDS = 0.1

log = logging.getLogger("dbmigrate_dev.kubelet")

Obj = dict[str, Any]


def parse_image_map(spec: str | None) -> dict[str, str]:
    """`img=host,img2=dbmigrate` (the env var's format) → {image: runner}."""
    images: dict[str, str] = {}
    for raw_item in (spec or "").split(","):
        item = raw_item.strip()
        if not item:
            continue
        image, sep, runner = item.rpartition("=")
        if not sep or runner not in RUNNERS or not image:
            raise ValueError(f"bad image mapping {item!r}: expected IMAGE=" + "|".join(RUNNERS))
        images[image] = runner
    return images


def image_map(extra: str | None = None) -> dict[str, str]:
    """The built-in images plus those of `DBMIGRATE_EXECUTOR_IMAGES` and `extra`."""
    return {
        **BUILTIN_IMAGES,
        **parse_image_map(os.environ.get(IMAGES_ENV)),
        **parse_image_map(extra),
    }


# --- one container's process ---------------------------------------------------------------


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tail(path: Path, start: int) -> str:
    """The end of what the process wrote since `start`: its termination message."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - MESSAGE_TAIL_BYTES))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


@dataclass
class Container:
    spec: Obj
    log_path: Path
    restart_count: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    restart_at: float | None = None
    # Set for a container that a Docker engine runs (RUNNER_DOCKER): its name prefix there.
    docker_prefix: str | None = None
    docker_name: str | None = None
    _docker_client: tuple[str, dict[str, str]] | None = None
    # The CRI copy of the output that `kubectl logs` reads (dbmigrate_dev.kubelet_logs).
    cri_log: CriLog | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def exit_code(self) -> int | None:
        term = self.state.get("terminated")
        return None if term is None else int(term["exitCode"])

    def start(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        if "terminated" in self.state:
            self.last_state = {"terminated": self.state["terminated"]}
            self.restart_count += 1
        if self.docker_prefix is not None:
            # argv is `docker run OPTIONS…`: each start gets a container name of its own.
            self.docker_name = f"{self.docker_prefix}-{self.restart_count}"
            argv = [argv[0], "run", "--name", self.docker_name, *argv[2:]]
            self._docker_client = (argv[0], env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.log_offset = out.tell()
            try:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Its own process group, so that deleting the pod also stops `sh -c`'s children.
                    start_new_session=True,
                )
            except OSError as e:
                self.proc = None
                started = now()
                self.state = {
                    "terminated": {
                        "exitCode": 128,
                        "reason": "StartError",
                        "message": str(e),
                        "startedAt": started,
                        "finishedAt": started,
                    }
                }
                return
        self.cri_log = CriLog(self.log_path, cri_path(self.log_path), self.log_offset)
        self.cri_log.start()
        self.state = {"running": {"startedAt": now()}}

    def poll(self) -> bool:
        """True when the process has just ended (its state becomes `terminated`)."""
        if self.proc is None or self.proc.poll() is None:
            return False
        self._terminated(self.proc.returncode)
        return True

    def _terminated(self, returncode: int) -> None:
        # A process killed by a signal reports 128+N, as container runtimes do.
        code = returncode if returncode >= 0 else 128 - returncode
        started = (self.state.get("running") or {}).get("startedAt", now())
        term: Obj = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now(),
            "containerID": self._container_id(),
        }
        message = tail(self.log_path, self.log_offset)
        if message:
            term["message"] = message
        self.state = {"terminated": term}
        self.proc = None
        if self.cri_log is not None:
            self.cri_log.finish()
            self.cri_log = None

    def _container_id(self) -> str:
        if self.docker_name is not None:
            return f"docker://{self.docker_name}"
        return f"local://{self.proc.pid if self.proc else 0}"

    def kill(self, grace: float) -> None:
        """SIGTERM to the process group, SIGKILL after `grace` seconds. (The docker client
        passes SIGTERM on to the container; past the grace period the engine removes it.)"""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            if self._docker_client is not None and self.docker_name is not None:
                client, env = self._docker_client
                subprocess.run(
                    [client, "rm", "--force", self.docker_name],
                    env=env,
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait()
        # Whatever the shell started in the background goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self._terminated(self.proc.returncode)

    def status(self, image: str) -> Obj:
        running = "running" in self.state
        out: Obj = {
            "name": self.name,
            "image": image,
            "imageID": f"local://{image}",
            "ready": running,
            "started": running,
            "restartCount": self.restart_count,
            "state": self.state,
        }
        if self.proc is not None:
            out["containerID"] = self._container_id()
        elif "terminated" in self.state:
            out["containerID"] = self.state["terminated"].get("containerID", "local://0")
        if self.last_state:
            out["lastState"] = self.last_state
        return out


# --- one pod ---------------------------------------------------------------------------------


class PodRun(threading.Thread):
    """The life of one pod on this host: start, restart per policy, report, stop on delete."""

    def __init__(self, executor: Executor, pod: Obj) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.ex = executor
        self.pod = pod
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.policy: str = pod["spec"].get("restartPolicy", "Always")
        self.deleting = threading.Event()  # the pod has a deletionTimestamp
        self.gone = threading.Event()  # the pod no longer exists: nothing to report
        self.grace = MAX_GRACE_SECONDS
        self.start_time = now()
        base = executor.state_dir / "pods" / f"{self.ns}_{self.pod_name}_{self.uid[:8]}"
        self.workdir = base / "work"
        logs = executor.state_dir / "logs" / f"{self.ns}_{self.pod_name}_{self.uid[:8]}"
        self.init_containers = [
            Container(c, logs / f"{c['name']}.log") for c in pod["spec"].get("initContainers") or []
        ]
        self.containers = [
            Container(c, logs / f"{c['name']}.log") for c in pod["spec"]["containers"]
        ]
        self.base_dir = base

    # -- signals from the watch --

    def request_delete(self, grace_seconds: float | None) -> None:
        if grace_seconds is not None:
            self.grace = min(max(grace_seconds, 0.5), MAX_GRACE_SECONDS)
        self.deleting.set()

    def vanished(self) -> None:
        self.grace = min(self.grace, 2.0)
        self.gone.set()
        self.deleting.set()

    # -- lifecycle --

    def run(self) -> None:
        try:
            self._lifecycle()
        except Exception:
            log.exception("pod %s/%s: executor error", self.ns, self.pod_name)
            for c in self.init_containers + self.containers:
                c.kill(0.5)
            try:
                self._report("Failed", reason="ExecutorError")
            except Exception:
                log.exception("pod %s/%s: cannot report the failure", self.ns, self.pod_name)
        try:
            if self.deleting.is_set() and not self.gone.is_set():
                self.ex.finalize_deletion(self.ns, self.pod_name, self.uid)
        except Exception:
            # The watch sees the pod again and finalises it then (the run is finished).
            log.exception("pod %s/%s: cannot finalise the deletion", self.ns, self.pod_name)
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.ex.run_finished(self.uid)

    def _lifecycle(self) -> None:
        envs = self._prepare()
        if envs is None:  # deleted before it could start
            return
        init_envs, main_envs = envs
        self.ex.publish_logs(
            self.pod, {c.name: cri_path(c.log_path) for c in self.init_containers + self.containers}
        )
        for c, (argv, env) in zip(self.init_containers, init_envs, strict=True):
            if not self._run_to_completion(c, argv, env):
                return
        for c, (argv, env) in zip(self.containers, main_envs, strict=True):
            c.start(argv, env, self._cwd(c))
        log.info("pod %s/%s: started %d container(s)", self.ns, self.pod_name, len(self.containers))
        self._report("Running")
        while True:
            if self.deleting.wait(POLL_SECONDS):
                self._stop_all()
                return
            changed = False
            for c in self.containers:
                if c.poll():
                    changed = True
                    log.info(
                        "pod %s/%s: container %s exited %s",
                        self.ns,
                        self.pod_name,
                        c.name,
                        c.exit_code,
                    )
                    if self._should_restart(c):
                        c.restart_at = time.monotonic() + min(
                            2.0**c.restart_count, RESTART_BACKOFF_MAX
                        )
                if c.restart_at is not None and time.monotonic() >= c.restart_at:
                    c.restart_at = None
                    argv, env = main_envs[self.containers.index(c)]
                    c.start(argv, env, self._cwd(c))
                    changed = True
            done = all("terminated" in c.state and c.restart_at is None for c in self.containers)
            if done:
                ok = all(c.exit_code == 0 for c in self.containers)
                self._report("Succeeded" if ok else "Failed")
                log.info("pod %s/%s: %s", self.ns, self.pod_name, "Succeeded" if ok else "Failed")
                # Stay until the pod is deleted, so that the deletion is finalised here.
                self.deleting.wait()
                return
            if changed:
                self._report("Running")

    def _prepare(
        self,
    ) -> (
        tuple[list[tuple[list[str], dict[str, str]]], list[tuple[list[str], dict[str, str]]]] | None
    ):
        """Each container's argv and env; waits (reporting why) while a Secret is missing."""
        while True:
            try:
                sources = self.ex.env_sources()
                # Containers run by Docker get the pod's own env and token volume instead.
                on_host = any(
                    self.ex.images.get(c.spec.get("image", "")) != RUNNER_DOCKER
                    for c in self.init_containers + self.containers
                )
                base = self.ex.base_env(self.pod, self.workdir) if on_host else {}
                init = [self._argv_env(c, sources, base) for c in self.init_containers]
                main = [self._argv_env(c, sources, base) for c in self.containers]
                return init, main
            except ConfigError as e:
                log.warning("pod %s/%s: cannot start yet: %s", self.ns, self.pod_name, e)
                waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
                for c in self.containers:
                    c.state = dict(waiting)
                self._report("Pending")
                if self.deleting.wait(2.0):
                    return None

    def _argv_env(
        self, c: Container, sources: EnvSources, base: dict[str, str]
    ) -> tuple[list[str], dict[str, str]]:
        runner = self.ex.images.get(c.spec.get("image", ""))
        if runner is None:
            raise ConfigError(
                f"container {c.name!r}: image {c.spec.get('image')!r} is not mapped to a local "
                f"command (set {IMAGES_ENV})"
            )
        if runner == RUNNER_DOCKER:
            return self._docker_argv_env(c, sources)
        own = resolve_env(self.pod, c.spec, sources)
        # No mount namespace here: a path under a claim's mountPath is its host directory.
        mounts = claim_mounts(
            self.pod, c.spec, lambda claim: self.ex.claim_host_dir(self.ns, claim)
        )
        own = {k: under_mounts(v, mounts) for k, v in own.items()}
        env = {**base, **own}
        if runner == RUNNER_HOST:
            return [under_mounts(a, mounts) for a in build_argv(c.spec, [], env)], env
        argv = [under_mounts(a, mounts) for a in build_argv(c.spec, ["dbmigrate"], env)]
        if argv[0] == "dbmigrate":
            # The operator's image: its `dbmigrate` is this virtualenv's.
            argv = [self.ex.python, "-m", "dbmigrate", *argv[1:]]
        return argv, env

    def _docker_argv_env(
        self, c: Container, sources: EnvSources
    ) -> tuple[list[str], dict[str, str]]:
        """`docker run …` for a container of a RUNNER_DOCKER image, and the client's env. The
        container finds the API server as a pod does: KUBERNETES_SERVICE_HOST/PORT (the host's
        loopback, since it shares the host's network) and the ServiceAccount token volume."""
        env = resolve_env(self.pod, c.spec, sources)
        env.setdefault("HOSTNAME", self.pod_name)
        server = urllib.parse.urlsplit(self.ex.api_client.configuration.host)
        env.setdefault("KUBERNETES_SERVICE_HOST", server.hostname or "127.0.0.1")
        env.setdefault("KUBERNETES_SERVICE_PORT", str(server.port or 443))
        uid, gid = run_as(self.pod, c.spec)
        dirs: dict[str, str] = {}
        for volume in self.pod["spec"].get("volumes") or []:
            if "projected" not in volume:
                continue
            files = projected_files(
                self.pod, volume, sources, lambda: self.ex.service_account_token(self.pod)
            )
            where = self.base_dir / "volumes" / volume["name"]
            where.mkdir(parents=True, exist_ok=True)
            for rel, content in files.items():
                path = where / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
                if os.geteuid() == 0:
                    # For the container's user only, as the kubelet does with fsGroup.
                    os.chown(path, uid or 0, gid if gid is not None else -1)
                    path.chmod(0o400)
                else:
                    # Not ours to chown: readable by the container's (other) user. A token of
                    # the test cluster, on a developer's machine.
                    path.chmod(0o444)
            where.chmod(0o755)
            dirs[volume["name"]] = str(where)
        args, client_env = docker_run_args(self.pod, c.spec, env, volume_dirs=dirs)
        client, engine_env = self.ex.docker_client()
        c.docker_prefix = f"dbmigrate-{self.pod_name}-{c.name}-{self.uid[:8]}"
        return [client, "run", *args], {**engine_env, **client_env}

    def _cwd(self, c: Container) -> Path:
        wd = c.spec.get("workingDir")
        if wd and Path(wd).is_dir():
            return Path(wd)
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir

    def _should_restart(self, c: Container) -> bool:
        if self.policy == "Always":
            return True
        return self.policy == "OnFailure" and c.exit_code != 0

    def _run_to_completion(self, c: Container, argv: list[str], env: dict[str, str]) -> bool:
        """An init container: runs (and re-runs, per the restart policy) until it succeeds."""
        while True:
            c.start(argv, env, self._cwd(c))
            self._report("Pending")
            while not c.poll():
                if self.deleting.wait(POLL_SECONDS):
                    self._stop_all()
                    return False
            if c.exit_code == 0:
                return True
            if self.policy == "Never":
                self._report("Failed")
                self.deleting.wait()
                return False
            if self.deleting.wait(min(2.0**c.restart_count, RESTART_BACKOFF_MAX)):
                self._stop_all()
                return False

    def _stop_all(self) -> None:
        for c in self.containers + self.init_containers:
            if c.proc is not None:
                log.info("pod %s/%s: stopping %s", self.ns, self.pod_name, c.name)
                c.kill(self.grace)
        if not self.gone.is_set():
            # As the kubelet does for a deleted pod: a terminal phase, then the final delete.
            ok = all(c.exit_code == 0 for c in self.containers)
            self._report("Succeeded" if ok else "Failed")

    def _report(self, phase: str, reason: str | None = None) -> None:
        if self.gone.is_set():
            return
        image_of = {c["name"]: c.get("image", "") for c in self.pod["spec"]["containers"]}
        init_image_of = {
            c["name"]: c.get("image", "") for c in self.pod["spec"].get("initContainers") or []
        }
        statuses = []
        for c in self.containers:
            st = c.status(image_of[c.name])
            if c.restart_at is not None:
                st["ready"] = st["started"] = False
                st["state"] = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off restarting failed container {c.name}",
                    }
                }
            statuses.append(st)
        init_statuses = [c.status(init_image_of[c.name]) for c in self.init_containers]
        for st in init_statuses:
            st["ready"] = "terminated" in st["state"] and st["state"]["terminated"]["exitCode"] == 0
        ready = phase == "Running" and all(s["ready"] for s in statuses)
        initialized = all(s["ready"] for s in init_statuses)
        status: Obj = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
            "conditions": self.ex.merge_conditions(
                self.pod,
                {
                    "PodReadyToStartContainers": True,
                    "Initialized": initialized,
                    "ContainersReady": ready,
                    "Ready": ready,
                },
                reason="PodCompleted" if phase in ("Succeeded", "Failed") else None,
            ),
        }
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        if reason:
            status["reason"] = reason
        self.ex.patch_status(self.ns, self.pod_name, status)


# --- the executor ----------------------------------------------------------------------------


class Executor:
    """Watches pods on all nodes and runs those of mapped images (see the module docstring)."""

    def __init__(
        self,
        api_client: Any,
        images: dict[str, str],
        state_dir: Path,
        docker_env_command: str | None = None,
    ) -> None:
        self.api_client = api_client
        self.docker_env_command = docker_env_command
        self._docker: tuple[str, dict[str, str]] | None = None
        # Any: we read raw JSON (`_preload_content=False`), not the client's models.
        self.core: Any = client.CoreV1Api(api_client)
        self.images = images
        self.state_dir = state_dir
        self.python = sys.executable
        self.runs: dict[str, PodRun] = {}
        self.finished: set[str] = set()
        self.failpoints_given: set[str] = set()  # uids of Jobs whose first pod got failpoints
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.logs_unavailable = False  # kwok's Logs CRD is not installed

    def docker_client(self) -> tuple[str, dict[str, str]]:
        """The docker client and its environment: what `--docker-env` prints (`export
        DOCKER_HOST=… DOCKER=…`), asked until an engine answers and then kept (an engine started
        after the executor is still found); without it, `$DOCKER` (default `docker`) and this
        process's env."""
        if self._docker is not None:
            return self._docker
        env = {k: os.environ[k] for k in ("PATH", "HOME", "DOCKER_HOST") if k in os.environ}
        if self.docker_env_command:
            done = subprocess.run(
                shlex.split(self.docker_env_command),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if done.returncode != 0:
                raise ConfigError(f"no Docker engine: {done.stderr.strip()[-300:]}")
            env.update(parse_exports(done.stdout))
        else:
            env.setdefault("DOCKER", os.environ.get("DOCKER", "docker"))
        self._docker = (env.pop("DOCKER", "docker"), env)
        return self._docker

    # -- API helpers (raw JSON: no model round-trips) --

    def _get(self, read: Callable[..., Any], *args: Any) -> Obj | None:
        try:
            resp = read(*args, _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return json.loads(resp.data)  # type: ignore[no-any-return]

    def publish_logs(self, pod: Obj, files: dict[str, Path]) -> None:
        """kwok's `Logs` object for the pod, so that `kubectl logs` reads its containers' output
        (dbmigrate_dev.kubelet_logs). Without kwok's Logs CRD: said once, and the pod runs."""
        body = logs_object(pod, files)
        try:
            client.CustomObjectsApi(self.api_client).create_namespaced_custom_object(
                KWOK_GROUP, KWOK_VERSION, body["metadata"]["namespace"], KWOK_LOGS, body
            )
        except ApiException as e:
            if e.status == 404 and not self.logs_unavailable:
                self.logs_unavailable = True
                log.warning("no kwok Logs CRD: `kubectl logs` cannot read the pods' output")
            elif e.status not in (404, 409):
                log.warning("pod %s: Logs object not created: %s", body["metadata"]["name"], e)

    def env_sources(self) -> EnvSources:
        return EnvSources(
            read_secret=lambda ns, name: self._get(self.core.read_namespaced_secret, name, ns),
            read_config_map=lambda ns, name: self._get(
                self.core.read_namespaced_config_map, name, ns
            ),
        )

    def base_env(self, pod: Obj, workdir: Path) -> dict[str, str]:
        """What every container's process gets before its own env: a PATH with this virtualenv's
        bin first (so `dbmigrate`, `alembic` are found), HOME, and the pod's identity."""
        venv_bin = str(Path(self.python).parent)
        path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        env = {
            "PATH": f"{venv_bin}{os.pathsep}{path}",
            "HOME": str(workdir),
            "HOSTNAME": pod["metadata"]["name"],
        }
        for key in ("LANG", "LC_ALL", "TZ"):
            if key in os.environ:
                env[key] = os.environ[key]
        kubeconfig = self._service_account_kubeconfig(pod, workdir.parent)
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        failpoints = self.failpoints_for(pod)
        if failpoints:
            env[FAILPOINTS_ENV] = failpoints
        source = self.namespace_annotation(pod, SOURCE_ANNOTATION)
        if source and Path(source, "dbmigrate").is_dir():
            env["PYTHONPATH"] = source
        return env

    def claim_host_dir(self, namespace: str, claim: str) -> str:
        """The host directory of the volume bound to the claim (ConfigError while unbound: the
        pod waits, as a kubelet waits for its volumes)."""
        pvc = self._get(self.core.read_namespaced_persistent_volume_claim, claim, namespace)
        if pvc is None:
            raise ConfigError(f'persistentvolumeclaim "{claim}" not found')
        volume = (pvc.get("spec") or {}).get("volumeName")
        if (pvc.get("status") or {}).get("phase") != "Bound" or not volume:
            raise ConfigError(f'persistentvolumeclaim "{claim}" is not bound yet')
        pv = self._get(self.core.read_persistent_volume, volume)
        if pv is None:
            raise ConfigError(f'persistentvolume "{volume}" of claim "{claim}" not found')
        return claim_host_path(pv)

    def namespace_annotation(self, pod: Obj, key: str) -> str | None:
        namespace = self._get(self.core.read_namespace, pod["metadata"]["namespace"]) or {}
        value = ((namespace.get("metadata") or {}).get("annotations") or {}).get(key)
        return str(value) if value else None

    def failpoints_for(self, pod: Obj) -> str | None:
        """The failpoints of the pod's namespace (its annotation), for the first pod of a Job."""
        meta = pod["metadata"]
        owner = next(
            (o["uid"] for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job"), None
        )
        if owner is None:
            return None
        spec = self.namespace_annotation(pod, FAILPOINTS_ANNOTATION)
        with self.lock:
            if not spec or owner in self.failpoints_given:
                return None
            self.failpoints_given.add(owner)
        log.info("pod %s/%s: failpoints %s", meta["namespace"], meta["name"], spec)
        return str(spec)

    def service_account_token(self, pod: Obj) -> str | None:
        """A token of the pod's ServiceAccount, bound to the pod (the kubelet's TokenRequest)."""
        spec, meta = pod["spec"], pod["metadata"]
        sa = spec.get("serviceAccountName") or "default"
        body = {
            "spec": {
                "expirationSeconds": 24 * 3600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            }
        }
        try:
            resp = self.core.create_namespaced_service_account_token(
                sa, meta["namespace"], body, _preload_content=False
            )
        except ApiException as e:
            log.warning(
                "pod %s/%s: no token for %s (%s)", meta["namespace"], meta["name"], sa, e.status
            )
            return None
        return str(json.loads(resp.data)["status"]["token"])

    def _service_account_kubeconfig(self, pod: Obj, where: Path) -> Path | None:
        """A kubeconfig with a token of the pod's ServiceAccount (bound to the pod), standing in
        for the mounted token: a pod running the operator gets its own RBAC, not ours."""
        spec, meta = pod["spec"], pod["metadata"]
        if spec.get("automountServiceAccountToken") is False:
            return None
        sa = spec.get("serviceAccountName") or "default"
        token = self.service_account_token(pod)
        if token is None:
            return None
        conf = self.api_client.configuration
        cluster: Obj = {"server": conf.host}
        if conf.ssl_ca_cert:
            cluster["certificate-authority"] = str(Path(conf.ssl_ca_cert).resolve())
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "pod",
                    "context": {"cluster": "local", "user": sa, "namespace": meta["namespace"]},
                }
            ],
            "current-context": "pod",
        }
        where.mkdir(parents=True, exist_ok=True)
        path = where / "kubeconfig"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(kubeconfig, f)
        return path

    @staticmethod
    def merge_conditions(pod: Obj, ours: dict[str, bool], reason: str | None) -> list[Obj]:
        """A merge patch replaces the whole list: keep others' conditions (PodScheduled, …)."""
        stamp = now()
        current = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
        current.setdefault(
            "PodScheduled", {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp}
        )
        for ctype, value in ours.items():
            status = "True" if value else "False"
            old = current.get(ctype)
            cond: Obj = {"type": ctype, "status": status, "lastTransitionTime": stamp}
            if old and old.get("status") == status:
                cond["lastTransitionTime"] = old.get("lastTransitionTime", stamp)
            if not value and reason and ctype in ("Ready", "ContainersReady"):
                cond["reason"] = reason
            current[ctype] = cond
        return list(current.values())

    def patch_status(self, ns: str, name: str, status: Obj) -> None:
        """Write the pod's status; like the kubelet's status manager, keep trying while the API
        server is away (a pod whose exit is never reported would hold its Job forever)."""
        attempt = 0
        while True:
            try:
                resp = self.core.patch_namespaced_pod_status(
                    name,
                    ns,
                    {"status": status},
                    field_manager=FIELD_MANAGER,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )
                break
            except ApiException as e:
                if e.status == 404:
                    return
                if e.status < 500 and e.status != 429:
                    raise
            except (OSError, urllib3.exceptions.HTTPError) as e:
                # The API server away or restarting.
                if attempt % 10 == 0:
                    log.warning("pod %s/%s: status not written yet (%s); retrying", ns, name, e)
            if self.stopping.is_set():
                return
            attempt += 1
            time.sleep(min(2.0, 0.25 * attempt))
        with self.lock:
            run = next((r for r in self.runs.values() if r.ns == ns and r.pod_name == name), None)
        if run is not None:
            run.pod = json.loads(resp.data)

    def finalize_deletion(self, ns: str, name: str, uid: str) -> None:
        """The kubelet's last word on a deleted pod: delete it for good (grace 0, this UID)."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.core.delete_namespaced_pod(name, ns, body=body, grace_period_seconds=0)
            log.info("pod %s/%s: deleted", ns, name)
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    # -- the watch --

    def owns(self, pod: Obj) -> bool:
        spec = pod.get("spec") or {}
        containers = spec.get("containers") or []
        return (
            bool(spec.get("nodeName"))
            and bool(containers)
            and (containers[0].get("image") in self.images)
        )

    def run_finished(self, uid: str) -> None:
        with self.lock:
            self.runs.pop(uid, None)
            self.finished.add(uid)

    def handle(self, event_type: str, pod: Obj) -> None:
        if not self.owns(pod):
            return
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.lock:
            run = self.runs.get(uid)
            finished = uid in self.finished
        if event_type == "DELETED":
            if run is not None:
                run.vanished()
            return
        deleting = meta.get("deletionTimestamp") is not None
        if run is not None:
            if deleting:
                run.request_delete(meta.get("deletionGracePeriodSeconds"))
            return
        phase = (pod.get("status") or {}).get("phase")
        if finished or phase in ("Succeeded", "Failed"):
            if deleting:
                self.finalize_deletion(meta["namespace"], meta["name"], uid)
            return
        if deleting:
            # Deleted before it started (or while we were away): nothing to stop.
            self.finalize_deletion(meta["namespace"], meta["name"], uid)
            return
        if phase == "Running":
            # It ran under an executor that has since stopped: its processes are gone.
            log.warning(
                "pod %s/%s: lost its process (executor restart)", meta["namespace"], meta["name"]
            )
            self._report_lost(pod)
            with self.lock:
                self.finished.add(uid)
            return
        run = PodRun(self, pod)
        with self.lock:
            self.runs[uid] = run
        log.info(
            "pod %s/%s: starting (image %s)",
            meta["namespace"],
            meta["name"],
            pod["spec"]["containers"][0]["image"],
        )
        run.start()

    def _report_lost(self, pod: Obj) -> None:
        stamp = now()
        statuses = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": f"local://{c.get('image', '')}",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "Error",
                        "message": "the local executor restarted and lost this process",
                        "startedAt": stamp,
                        "finishedAt": stamp,
                    }
                },
            }
            for c in pod["spec"]["containers"]
        ]
        conditions = self.merge_conditions(
            pod, {"ContainersReady": False, "Ready": False}, reason="PodCompleted"
        )
        self.patch_status(
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            {"phase": "Failed", "containerStatuses": statuses, "conditions": conditions},
        )

    def list_pods(self) -> tuple[list[Obj], str]:
        resp = self.core.list_pod_for_all_namespaces(
            field_selector="spec.nodeName!=", _preload_content=False
        )
        body = json.loads(resp.data)
        return body["items"], body["metadata"]["resourceVersion"]

    def watch(self, resource_version: str) -> Iterator[tuple[str, Obj]]:
        w: Any = watch.Watch()  # type: ignore[no-untyped-call]
        for event in w.stream(
            self.core.list_pod_for_all_namespaces,
            field_selector="spec.nodeName!=",
            resource_version=resource_version,
            timeout_seconds=60,
            allow_watch_bookmarks=True,
        ):
            if self.stopping.is_set():
                w.stop()
                return
            obj = event["raw_object"]
            if event["type"] == "ERROR":
                raise RuntimeError(f"watch error: {obj.get('message')}")
            yield event["type"], obj

    def serve(self) -> None:
        log.info("executor ready: images %s", ", ".join(f"{k}={v}" for k, v in self.images.items()))
        while not self.stopping.is_set():
            try:
                pods, rv = self.list_pods()
                seen = {p["metadata"]["uid"] for p in pods}
                with self.lock:
                    vanished = [r for uid, r in self.runs.items() if uid not in seen]
                for r in vanished:
                    r.vanished()
                for pod in pods:
                    self.handle("ADDED", pod)
                for event_type, pod in self.watch(rv):
                    if event_type == "BOOKMARK":
                        continue
                    self.handle(event_type, pod)
            except Exception as e:
                if self.stopping.is_set():
                    break
                # Expired resource versions, API server restarts: list again.
                log.warning("watch interrupted (%s); listing again", e)
                self.stopping.wait(1.0)

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            runs = list(self.runs.values())
        for r in runs:
            r.vanished()
        for r in runs:
            r.join(timeout=MAX_GRACE_SECONDS + 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbmigrate_dev.kubelet", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("DBMIGRATE_CLUSTER_DIR", "~/.cache/dbmigrate/cluster"))
        .expanduser()
        .joinpath("executor"),
        help="per-pod working directories and output logs",
    )
    parser.add_argument(
        "--image", action="append", default=[], help="IMAGE=host|dbmigrate|docker (repeatable)"
    )
    parser.add_argument(
        "--docker-env",
        metavar="COMMAND",
        help="shell command printing `export DOCKER_HOST=… DOCKER=…` for the engine that runs "
        "containers of docker-mapped images",
    )
    parser.add_argument("--list-images", action="store_true", help="print the mapped images")
    args = parser.parse_args(argv)
    images = image_map(",".join(args.image))
    if args.list_images:
        print("\n".join(images))
        return 0

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )

    api_client = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    args.state_dir.mkdir(parents=True, exist_ok=True)
    executor = Executor(api_client, images, args.state_dir, args.docker_env)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping the pods' processes", signum)
        executor.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = threading.Thread(target=executor.serve, name="watch", daemon=True)
    server.start()
    executor.stopping.wait()
    executor.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
