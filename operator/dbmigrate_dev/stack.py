"""The whole local stack in one object: the local control plane, PostgreSQL, Prometheus, the
test app it scrapes, and the operator itself — for the demo and the end-to-end benchmarks.

Everything binds to loopback and lives under one work directory; `down()` stops what `up()`
started (the cluster only if it was not running before).

`KindStack` is the same on a kind cluster: the image built and loaded, the operator installed
by the chart, the host's services reached from pods at the host's address on kind's network.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dbmigrate_dev.cluster_client import Cluster, parse_exports, wait_for
from dbmigrate_dev.kubelet import DBMIGRATE_IMAGE
from dbmigrate_dev.postgres import PostgresServer, free_port
from dbmigrate_dev.prometheus import PrometheusServer
from dbmigrate_dev.testapp import AppProcess, error_ratio_query

APP_JOB = "shop-api"


@dataclass
class LocalStack:
    workdir: Path
    repo: Path
    namespace: str = "shop"
    say: Callable[[str], None] = print
    cluster: Cluster | None = None
    postgres: PostgresServer | None = None
    prometheus: PrometheusServer | None = None
    app: AppProcess | None = None
    operator: subprocess.Popen[bytes] | None = None
    dsn: str = ""
    # The DSN the cluster's pods use (the Secret's): the same database, maybe another address.
    cluster_dsn: str = ""
    metrics_port: int = 0
    # The stand-in app's pods only need to exist (kwok runs nothing); where pods really run,
    # they need a command.
    app_command: tuple[str, ...] = ()
    operator_args: tuple[str, ...] = ()
    _started_cluster: bool = False
    _env: dict[str, str] = field(default_factory=dict)

    # --- up ------------------------------------------------------------------------------------

    def up(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_cluster()
        self.start_postgres()
        self.start_prometheus_and_app()
        self.prepare_namespace()
        self.start_operator()

    def start_cluster(self) -> None:
        script = self.repo / "hack" / "local-cluster.sh"
        running = subprocess.run([script, "status"], capture_output=True, check=False)
        if running.returncode != 0:
            self.say("starting the local Kubernetes control plane (first time: builds it)")
            subprocess.run([script, "up"], check=True)
            self._started_cluster = True
        env = parse_exports(
            subprocess.run([script, "env"], capture_output=True, text=True, check=True).stdout
        )
        bin_dir = env["PATH"].removesuffix(":$PATH")
        self._env = {"KUBECONFIG": env["KUBECONFIG"], "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        self.cluster = Cluster(
            Path(env["KUBECONFIG"]), kubectl_bin=f"{bin_dir}/kubectl", local=True
        )
        self.cluster.install_crds(sorted((self.repo / "crds").glob("*.yaml")))
        self.say(f"cluster ready (KUBECONFIG={env['KUBECONFIG']})")

    def start_postgres(self) -> None:
        self.postgres = PostgresServer(self.workdir / "postgres", free_port())
        self.postgres.init()
        self.postgres.start()
        self.dsn = self.cluster_dsn = self.postgres.create_database("shop")
        self.say(f"PostgreSQL 15 on 127.0.0.1:{self.postgres.port} (database shop)")

    def start_prometheus_and_app(self) -> None:
        self.prometheus = PrometheusServer(self.workdir / "prometheus")
        self.prometheus.start()
        self.app = AppProcess.start(free_port(), error_ratio=0.0)
        self.prometheus.set_targets(APP_JOB, [self.app.target])
        self.say(
            f"Prometheus at {self.prometheus.url}, scraping the test app {self.app.url} "
            f"as job {APP_JOB!r}"
        )

    def prepare_namespace(self) -> None:
        assert self.cluster is not None
        ns = self.namespace
        self.cluster.kubectl("create", "namespace", ns, check=False)
        wait_for(
            lambda: (
                self.cluster is not None
                and self.cluster.kubectl("get", "sa", "default", "-n", ns, check=False).returncode
                == 0
            ),
            60,
            "the default ServiceAccount",
        )
        self.cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "shop-db", "namespace": ns},
                "data": {"dsn": base64.b64encode(self.cluster_dsn.encode()).decode()},
            }
        )

    def start_operator(self) -> None:
        self.metrics_port = free_port()
        env = dict(os.environ)
        env.update(self._env)
        env.update(DBMIGRATE_IMAGE=DBMIGRATE_IMAGE, PYTHONUNBUFFERED="1")
        log = (self.workdir / "operator.log").open("ab")
        self.operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dbmigrate",
                "run",
                "-n",
                self.namespace,
                "--liveness-port",
                "0",
                "--metrics-port",
                str(self.metrics_port),
                *self.operator_args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.say(
            f"operator running (metrics http://127.0.0.1:{self.metrics_port}/metrics, "
            f"log {self.workdir / 'operator.log'})"
        )

    # --- helpers -------------------------------------------------------------------------------

    def deploy_app(self, image: str = "shop-api:v1", replicas: int = 3) -> None:
        assert self.cluster is not None
        container: dict[str, Any] = {"name": "shop-api", "image": image}
        if self.app_command:
            container["command"] = list(self.app_command)
        self.cluster.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "shop-api", "namespace": self.namespace},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": "shop-api"}},
                    "template": {
                        "metadata": {"labels": {"app": "shop-api"}},
                        "spec": {"containers": [container], "terminationGracePeriodSeconds": 2},
                    },
                },
            }
        )
        self.cluster.kubectl(
            "rollout", "status", "deploy/shop-api", "-n", self.namespace, "--timeout=120s"
        )

    def migration_status(self, name: str) -> dict[str, Any]:
        assert self.cluster is not None
        return self.cluster.get("dbm", name, "-n", self.namespace).get("status") or {}

    def wait_status(
        self,
        name: str,
        check: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        interval: float = 0.1,
    ) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.migration_status(name)) and check(s) and s,
            timeout,
            what,
            interval=interval,
        )

    def operator_hints(self) -> list[tuple[str, str]]:
        """Where to look at the operator: (what, how)."""
        return [
            ("operator metrics", f"http://127.0.0.1:{self.metrics_port}/metrics"),
            ("operator log", str(self.workdir / "operator.log")),
        ]

    def error_ratio_query(self, window: str = "10s") -> str:
        return error_ratio_query(APP_JOB, window)

    # --- down ----------------------------------------------------------------------------------

    def down(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.terminate()
            try:
                self.operator.wait(20)
            except subprocess.TimeoutExpired:
                self.operator.kill()
        if self.cluster is not None:
            self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)
        if self.app is not None:
            self.app.stop()
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self._started_cluster:
            subprocess.run([self.repo / "hack" / "local-cluster.sh", "down"], check=False)


# --- the same stack on kind ---------------------------------------------------------------------

KIND_IMAGE = "localhost/dbmigrate:dev"
# The stand-in app's images: the operator's image under the app's tags (any image that can
# run `sleep` would do; this one is already built and loaded).
APP_IMAGES = tuple(f"registry.example.com/shop-api:v{n}" for n in (1, 2, 3))


def tool_dir(repo: Path, script: str) -> str:
    """The bin directory a `hack/lib/build-*.sh` script prints (it builds the tool if needed)."""
    proc = subprocess.run(
        [str(repo / "hack" / "lib" / script)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def kind_network(inspect: list[dict[str, Any]]) -> tuple[str, str]:
    """The host's address on kind's Docker network and that network's IPv4 subnet, from
    `docker network inspect kind`: pods reach PostgreSQL and Prometheus on the host there."""
    for network in inspect:
        for cfg in (network.get("IPAM") or {}).get("Config") or []:
            subnet, gateway = cfg.get("Subnet", ""), cfg.get("Gateway", "")
            if ":" not in subnet and subnet:
                if not gateway:
                    # Docker leaves Gateway out when it picked the default: the first host.
                    net = ipaddress.ip_network(subnet)
                    gateway = str(next(net.hosts()))
                return gateway, subnet
    raise RuntimeError("the kind network has no IPv4 subnet")


def kind_chart_values(namespace: str, image: str = KIND_IMAGE) -> dict[str, Any]:
    """Helm values for the operator on kind: the locally built image (loaded, never pulled),
    watching the demo's namespace."""
    repository, _, tag = image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "watchNamespaces": [namespace],
        "operator": {"pollInterval": 2},
    }


@dataclass
class KindStack(LocalStack):
    """The stack on a kind cluster (for machines with a Docker engine and a registry to pull
    kind's node image from): the operator's image is built from the Dockerfile, loaded into
    kind and installed with the chart; PostgreSQL, Prometheus and the test app run on the host,
    and pods reach the first two at the host's address on kind's network."""

    cluster_name: str = "dbmigrate-demo"
    kind: str = "kind"
    docker: str = "docker"
    helm: str = "helm"
    release: str = "dbmigrate"
    host_address: str = ""
    subnet: str = ""
    app_command: tuple[str, ...] = ("sleep", "infinity")
    _created_kind: bool = False

    def _run(self, *argv: str, timeout: float = 600) -> str:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self._tools_env(),
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:3])} failed:\n{(proc.stderr or proc.stdout)[-3000:]}"
            )
        return proc.stdout

    def _tools_env(self) -> dict[str, str]:
        return {**os.environ, **self._env}

    def start_cluster(self) -> None:
        # Our kubectl (built with the local control plane, cached), before any other.
        bin_dir = tool_dir(self.repo, "build-control-plane.sh")
        self._env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
        clusters = self._run(self.kind, "get", "clusters").split()
        if self.cluster_name not in clusters:
            self.say(f"creating the kind cluster {self.cluster_name!r}")
            self._run(self.kind, "create", "cluster", "--name", self.cluster_name, "--wait", "180s")
            self._created_kind = True
        kubeconfig = self.workdir / "kubeconfig"
        kubeconfig.write_text(
            self._run(self.kind, "get", "kubeconfig", "--name", self.cluster_name)
        )
        kubeconfig.chmod(0o600)
        self._env["KUBECONFIG"] = str(kubeconfig)
        self.cluster = Cluster(kubeconfig, kubectl_bin=f"{bin_dir}/kubectl", local=False)
        self.host_address, self.subnet = kind_network(
            json.loads(self._run(self.docker, "network", "inspect", "kind"))
        )
        self.say("building the operator's image (hack/build-image.sh) and loading it into kind")
        self._run(str(self.repo / "hack" / "build-image.sh"), KIND_IMAGE, timeout=1800)
        for tag in APP_IMAGES:
            self._run(self.docker, "tag", KIND_IMAGE, tag)
        self._run(
            self.kind, "load", "docker-image", "--name", self.cluster_name, KIND_IMAGE, *APP_IMAGES
        )
        self.cluster.install_crds(sorted((self.repo / "crds").glob("*.yaml")))
        self.say(
            f"kind cluster ready (KUBECONFIG={kubeconfig}); "
            f"pods reach the host at {self.host_address}"
        )

    def start_postgres(self) -> None:
        self.postgres = PostgresServer(
            self.workdir / "postgres",
            free_port(),
            listen=(self.host_address,),
            allow=(self.subnet,),
        )
        self.postgres.init()
        self.postgres.start()
        self.dsn = self.postgres.create_database("shop")
        self.cluster_dsn = self.postgres.dsn("shop", host=self.host_address)
        self.say(f"PostgreSQL 15 on 127.0.0.1 and {self.host_address}:{self.postgres.port}")

    def start_prometheus_and_app(self) -> None:
        self.prometheus = PrometheusServer(self.workdir / "prometheus", host=self.host_address)
        self.prometheus.start()
        self.app = AppProcess.start(free_port(), error_ratio=0.0)
        self.prometheus.set_targets(APP_JOB, [self.app.target])
        self.say(f"Prometheus at {self.prometheus.url}, scraping the test app as job {APP_JOB!r}")

    def start_operator(self) -> None:
        assert self.cluster is not None
        chart = self.repo / "charts" / "dbmigrate-operator"
        values = self.workdir / "values.yaml"
        values.write_text(yaml.safe_dump(kind_chart_values(self.namespace)))
        self._run(
            self.helm,
            "upgrade",
            "--install",
            self.release,
            str(chart),
            "--namespace",
            self.namespace,
            "--values",
            str(values),
            "--wait",
            "--timeout",
            "3m",
        )
        self.say(
            f"operator installed with the chart (release {self.release!r}, image {KIND_IMAGE})"
        )

    def operator_hints(self) -> list[tuple[str, str]]:
        deploy = f"deploy/{self.release}-dbmigrate-operator"
        return [
            (
                "operator metrics",
                f"kubectl port-forward -n {self.namespace} {deploy} 8080 "
                "& curl -s 127.0.0.1:8080/metrics",
            ),
            ("operator log", f"kubectl logs -n {self.namespace} {deploy}"),
        ]

    def down(self) -> None:
        if self.cluster is not None and not self._created_kind:
            with contextlib.suppress(Exception):
                self._run(self.helm, "uninstall", self.release, "--namespace", self.namespace)
        super().down()
        if self._created_kind:
            subprocess.run(
                [self.kind, "delete", "cluster", "--name", self.cluster_name],
                check=False,
                capture_output=True,
                env=self._tools_env(),
            )
