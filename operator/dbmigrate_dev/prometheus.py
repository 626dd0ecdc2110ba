"""A throwaway Prometheus server from Debian's package, on a free loopback port.

Owns one working directory: the generated config (`prometheus.yml`, 1 s scrape and
evaluation intervals so tests see changes within seconds), the TSDB (`data/`), the log, the
pid and the port. Scrape jobs (job name -> list of `host:port`) live in the config itself; adding
or replacing one rewrites it and asks the server to reload (`--web.enable-lifecycle`).

Used by the pytest fixtures and by the demo:

    python -m dbmigrate_dev.prometheus up DIR [--port N]      # prints the URL
    python -m dbmigrate_dev.prometheus targets DIR JOB HOST:PORT [HOST:PORT ...]
    python -m dbmigrate_dev.prometheus targets DIR JOB        # no targets: drop the job
    python -m dbmigrate_dev.prometheus down DIR
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from dbmigrate_dev.http_wait import wait_until_answers
from dbmigrate_dev.postgres import free_port

SCRAPE_INTERVAL = "1s"
EVALUATION_INTERVAL = "1s"
HOST = "127.0.0.1"


def find_prometheus() -> str:
    """The Prometheus binary (`DBMIGRATE_PROMETHEUS` overrides the one on PATH)."""
    override = os.environ.get("DBMIGRATE_PROMETHEUS")
    if override:
        return override
    found = shutil.which("prometheus")
    if not found:
        raise RuntimeError(
            "prometheus not found: apt-get install prometheus (hack/bootstrap.sh does)"
        )
    return found


def render_config(jobs: dict[str, list[str]]) -> str:
    """The Prometheus configuration scraping `jobs` (job name -> `host:port` targets)."""
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            # Must not exceed the interval (Prometheus refuses the config otherwise).
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": EVALUATION_INTERVAL,
        },
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in sorted(jobs.items())
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


class PrometheusServer:
    """A Prometheus process owned by this object (or, from the CLI, by its directory)."""

    def __init__(self, workdir: Path, port: int | None = None, host: str = HOST) -> None:
        self.workdir = Path(workdir).absolute()
        self.host = host
        if port is None and self.port_path.exists():
            port = int(self.port_path.read_text())
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()

    # --- files -----------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "prometheus.pid"

    @property
    def port_path(self) -> Path:
        return self.workdir / "port"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def jobs(self) -> dict[str, list[str]]:
        """The scrape jobs in the config (job name -> targets)."""
        if not self.config_path.exists():
            return {}
        config = yaml.safe_load(self.config_path.read_text()) or {}
        jobs: dict[str, list[str]] = {}
        for scrape in config.get("scrape_configs") or []:
            targets = [t for sc in scrape.get("static_configs") or [] for t in sc["targets"]]
            jobs[scrape["job_name"]] = targets
        return jobs

    def _write_config(self, jobs: dict[str, list[str]]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".yml.tmp")
        tmp.write_text(render_config(jobs))
        os.replace(tmp, self.config_path)  # a reload never reads a half-written file

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, *, detach: bool = False, timeout: float = 60.0) -> None:
        """Start the server (keeping any jobs already in the config) and wait until ready.

        `detach`: the server outlives this Python process (the CLI); `stop` finds it by its
        pid file.
        """
        self._write_config(self.jobs())
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                find_prometheus(),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address={self.host}:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
        self.pid_path.write_text(str(self.process.pid))
        self.port_path.write_text(str(self.port))
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def running(self) -> bool:
        """A Prometheus started from this directory is alive."""
        pid = self._pid()
        return pid is not None and self._is_ours(pid)

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until_answers(
            f"{self.url}/-/ready",
            self.process,
            name="prometheus",
            timeout=timeout,
            interval=0.1,
            exit_detail=lambda: f"\n{self._log_tail()}",
        )

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=timeout)
            self.process = None
        else:
            pid = self._pid()
            if pid is not None and self._is_ours(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and self._is_ours(pid):
                    time.sleep(0.1)
                if self._is_ours(pid):
                    os.kill(pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text())
        except (OSError, ValueError):
            return None

    def _is_ours(self, pid: int) -> bool:
        # A pid file can outlive its process and the pid be reused: only a prometheus
        # reading our config counts.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
        return not zombie and f"--config.file={self.config_path}".encode() in cmdline

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- scrape jobs -----------------------------------------------------------------------

    def set_targets(
        self, job: str, targets: list[str], *, wait: bool = True, timeout: float = 30.0
    ) -> None:
        """Add or replace a scrape job (no targets: remove it), reload, wait until scraped."""
        with self._lock:
            jobs = self.jobs()
            if targets:
                jobs[job] = list(targets)
            else:
                jobs.pop(job, None)
            self._write_config(jobs)
            self.reload()
        if wait:
            for target in targets:
                self.wait_target_up(job, target, timeout=timeout)

    def remove_job(self, job: str) -> None:
        self.set_targets(job, [], wait=False)

    def reload(self) -> None:
        """Make the server read its config again (raises when it refuses the config)."""
        response = httpx.post(f"{self.url}/-/reload", timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"prometheus refused its config: {response.text.strip()}")

    def targets(self) -> list[dict[str, Any]]:
        """The active targets as /api/v1/targets reports them."""
        response = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=5)
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
        return found

    def wait_target_up(self, job: str, target: str | None = None, timeout: float = 30.0) -> None:
        """Wait until Prometheus has scraped `job` (one `target` of it, if given) successfully."""
        deadline = time.monotonic() + timeout
        last = "not discovered yet"
        while time.monotonic() < deadline:
            for t in self.targets():
                labels = t.get("labels", {})
                if labels.get("job") != job:
                    continue
                if target is not None and labels.get("instance") != target:
                    continue
                if t.get("health") == "up":
                    return
                last = f"health {t.get('health')}: {t.get('lastError') or 'not scraped yet'}"
            time.sleep(0.2)
        raise RuntimeError(
            f"prometheus target {job}/{target or '*'} not up in {timeout:g}s: {last}"
        )

    # --- queries (for tests and the demo; the operator uses dbmigrate.prom) ------------------

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The raw instant-vector result of a query; raises on any error."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of a query (NaN as NaN); None when it returns no series."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise RuntimeError(f"query {promql!r} returned {len(result)} series")
        return float(result[0]["value"][1])

    def wait_value(
        self, promql: str, accept: Any = None, timeout: float = 30.0, poll: float = 0.5
    ) -> float:
        """Poll a query until it has a finite value that `accept(value)` likes; return it."""
        deadline = time.monotonic() + timeout
        seen: float | None = None
        while True:
            seen = self.value(promql)
            if seen is not None and math.isfinite(seen) and (accept is None or accept(seen)):
                return seen
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{promql} = {seen} not accepted within {timeout:g}s")
            time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dbmigrate_dev.prometheus")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start (or reuse) a server in DIR and print its URL")
    up.add_argument("dir", type=Path)
    up.add_argument("--port", type=int)
    down = sub.add_parser("down", help="stop the server of DIR")
    down.add_argument("dir", type=Path)
    url = sub.add_parser("url", help="print the URL of the server of DIR")
    url.add_argument("dir", type=Path)
    targets = sub.add_parser("targets", help="set a scrape job's targets (none: remove the job)")
    targets.add_argument("dir", type=Path)
    targets.add_argument("job")
    targets.add_argument("targets", nargs="*", metavar="HOST:PORT")
    targets.add_argument("--no-wait", action="store_true", help="do not wait for a first scrape")
    args = parser.parse_args(argv)

    server = PrometheusServer(args.dir, getattr(args, "port", None))
    if args.command == "up":
        if not server.running():
            server.start(detach=True)
        print(server.url)
    elif args.command == "down":
        server.stop()
    elif args.command == "url":
        print(server.url)
    else:
        if not server.running():
            print(f"no prometheus running from {args.dir}; run `up` first", file=sys.stderr)
            return 1
        server.set_targets(args.job, args.targets, wait=not args.no_wait)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
