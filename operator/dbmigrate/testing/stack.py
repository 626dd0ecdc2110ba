"""The whole local stack in one object: the local control plane, PostgreSQL, Prometheus, the
test app it scrapes, and the operator itself — for the demo and the end-to-end benchmarks.

Everything binds to loopback and lives under one work directory; `down()` stops what `up()`
started (the cluster only if it was not running before).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbmigrate.testing.cluster import Cluster, parse_exports, wait_for
from dbmigrate.testing.executor import DBMIGRATE_IMAGE
from dbmigrate.testing.postgres import PostgresServer, free_port
from dbmigrate.testing.prometheus import PrometheusServer
from dbmigrate.testing.testapp import AppProcess

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
    metrics_port: int = 0
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
        self.dsn = self.postgres.create_database("shop")
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
                "data": {"dsn": base64.b64encode(self.dsn.encode()).decode()},
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
                        "spec": {"containers": [{"name": "shop-api", "image": image}]},
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

    def error_ratio_query(self, window: str = "10s") -> str:
        return (
            f'sum(rate(http_requests_total{{job="{APP_JOB}",code=~"5.."}}[{window}])) / '
            f'sum(rate(http_requests_total{{job="{APP_JOB}"}}[{window}]))'
        )

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
