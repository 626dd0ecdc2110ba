"""A tiny HTTP service whose error ratio and latency can be changed while it runs.

It stands in for the application a migration is gated on: Prometheus scrapes its `/metrics`
(`http_requests_total{code}`, `http_request_duration_seconds`) and the analysis reads the
error ratio and latency quantiles from there. It makes its own traffic (a background loop
simulating `requestsPerSecond` requests with the current settings) so that rates exist with no
load generator, and serves real requests on `/` the same way.

Errors are spread deterministically (every request adds `errorRatio` to an accumulator and
fails when it reaches 1) so a 10 s rate window shows the configured ratio exactly, not a
random walk around it; simulated requests take exactly `latencySeconds`.

    python -m dbmigrate_dev.testapp --port 8080 [--error-ratio 0.0] [--latency 0.02]
    curl -X POST localhost:8080/control -d '{"errorRatio": 0.3, "latencySeconds": 0.25}'

`AppProcess` starts and drives such a process for the tests and the demo.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from dbmigrate_dev.http_wait import wait_until_answers

DEFAULT_ERROR_RATIO = 0.0
DEFAULT_LATENCY = 0.02
DEFAULT_RPS = 30.0
MAX_LATENCY = 30.0
MAX_RPS = 1000.0
TICK = 0.05  # seconds between bursts of simulated requests


@dataclass
class Settings:
    """What the service does right now; changed through `POST /control`."""

    error_ratio: float = DEFAULT_ERROR_RATIO
    latency_seconds: float = DEFAULT_LATENCY
    requests_per_second: float = DEFAULT_RPS

    def to_json(self) -> dict[str, float]:
        return {
            "errorRatio": self.error_ratio,
            "latencySeconds": self.latency_seconds,
            "requestsPerSecond": self.requests_per_second,
        }

    def updated(self, doc: dict[str, Any]) -> Settings:
        """A copy with the fields of a control request applied; ValueError when invalid."""
        unknown = set(doc) - {"errorRatio", "latencySeconds", "requestsPerSecond"}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        new = Settings(self.error_ratio, self.latency_seconds, self.requests_per_second)
        if "errorRatio" in doc:
            new.error_ratio = _number(doc, "errorRatio", 0.0, 1.0)
        if "latencySeconds" in doc:
            new.latency_seconds = _number(doc, "latencySeconds", 0.0, MAX_LATENCY)
        if "requestsPerSecond" in doc:
            new.requests_per_second = _number(doc, "requestsPerSecond", 0.0, MAX_RPS)
        return new


def error_ratio_query(job: str, window: str = "10s") -> str:
    """PromQL: the share of the app's requests that failed (5xx) over `window`, for `job`."""
    return (
        f'sum(rate(http_requests_total{{job="{job}",code=~"5.."}}[{window}])) / '
        f'sum(rate(http_requests_total{{job="{job}"}}[{window}]))'
    )


def _number(doc: dict[str, Any], key: str, low: float, high: float) -> float:
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low:g} and {high:g}")
    return float(value)


@dataclass
class App:
    """The service's state and metrics, shared by the HTTP handlers and the traffic loop."""

    settings: Settings = field(default_factory=Settings)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._error_debt = 0.0
        self.requests = Counter(
            "http_requests_total", "HTTP requests served.", ["code"], registry=self.registry
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to serve an HTTP request.",
            registry=self.registry,
        )
        # Both codes exist from the start: otherwise `code=~"5.."` is an empty vector until
        # the first error, and an error-ratio query returns nothing instead of 0.
        self.requests.labels(code="200")
        self.requests.labels(code="500")

    def current(self) -> Settings:
        with self._lock:
            return Settings(**vars(self.settings))

    def control(self, doc: dict[str, Any]) -> Settings:
        with self._lock:
            self.settings = self.settings.updated(doc)
            return Settings(**vars(self.settings))

    def next_code(self) -> int:
        """The status code of the next request, spreading errors evenly at `errorRatio`."""
        with self._lock:
            self._error_debt += self.settings.error_ratio
            if self._error_debt >= 1.0 - 1e-9:
                self._error_debt -= 1.0
                return 500
            return 200

    def record(self, code: int, seconds: float) -> None:
        self.requests.labels(code=str(code)).inc()
        self.duration.observe(seconds)

    def simulate(self, count: int) -> None:
        latency = self.current().latency_seconds
        for _ in range(count):
            self.record(self.next_code(), latency)

    def run_traffic(self, stop: threading.Event) -> None:
        """Simulate `requestsPerSecond` requests per second until `stop` is set."""
        owed = 0.0
        last = time.monotonic()
        while not stop.wait(TICK):
            now = time.monotonic()
            owed += (now - last) * self.current().requests_per_second
            last = now
            whole = int(owed)
            owed -= whole
            self.simulate(whole)


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dbmigrate-testapp"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(app.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain")
            elif path == "/control":
                self._json(HTTPStatus.OK, app.current().to_json())
            elif path == "/":
                self._serve_request()
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != "/control":
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                doc = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(doc, dict):
                    raise ValueError("expected a JSON object")
                settings = app.control(doc)
            except ValueError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            self._json(HTTPStatus.OK, settings.to_json())

        def _serve_request(self) -> None:
            started = time.monotonic()
            settings = app.current()
            code = app.next_code()
            time.sleep(settings.latency_seconds)
            body = b"ok\n" if code == 200 else b"simulated failure\n"
            self._send(HTTPStatus(code), body, "text/plain")
            app.record(code, time.monotonic() - started)

        def _json(self, status: HTTPStatus, doc: dict[str, Any]) -> None:
            self._send(status, json.dumps(doc).encode() + b"\n", "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape and per request would drown the useful output

    return Handler


def serve(host: str, port: int, settings: Settings) -> None:
    """Run the service until SIGTERM or Ctrl-C."""
    app = App(settings=settings)
    server = ThreadingHTTPServer((host, port), make_handler(app))
    server.daemon_threads = True
    stop = threading.Event()
    traffic = threading.Thread(target=app.run_traffic, args=(stop,), daemon=True)
    traffic.start()

    def terminate(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever, so it must run outside the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, terminate)
    print(f"testapp listening on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbmigrate_dev.testapp",
        description="HTTP service with adjustable error ratio and latency, for SLO analysis.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--error-ratio", type=float, default=DEFAULT_ERROR_RATIO)
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY, help="seconds")
    parser.add_argument("--rps", type=float, default=DEFAULT_RPS, help="simulated requests/s")
    args = parser.parse_args(argv)
    try:
        settings = Settings().updated(
            {
                "errorRatio": args.error_ratio,
                "latencySeconds": args.latency,
                "requestsPerSecond": args.rps,
            }
        )
    except ValueError as exc:
        parser.error(str(exc))
    serve(args.host, args.port, settings)
    return 0


# ---------------------------------------------------------------------------------------------
# driving a test app process (tests, demo)


@dataclass
class AppProcess:
    """A test app running as a child process on a loopback port."""

    port: int
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def target(self) -> str:
        """The `host:port` Prometheus scrapes."""
        return f"{self.host}:{self.port}"

    @classmethod
    def start(
        cls,
        port: int,
        *,
        error_ratio: float = DEFAULT_ERROR_RATIO,
        latency: float = DEFAULT_LATENCY,
        rps: float = DEFAULT_RPS,
        timeout: float = 15.0,
    ) -> AppProcess:
        log = tempfile.TemporaryFile()  # noqa: SIM115 - outlives this call; stop() closes it
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dbmigrate_dev.testapp",
                "--port",
                str(port),
                "--error-ratio",
                str(error_ratio),
                "--latency",
                str(latency),
                "--rps",
                str(rps),
            ],
            stdout=subprocess.DEVNULL,
            # A file, not a pipe: nobody reads it while the app runs, and a full pipe would
            # block the app the day it prints a few tracebacks.
            stderr=log,
        )
        app = cls(port=port, process=process, log=log)
        try:
            app.wait_healthy(timeout)
        except BaseException:
            app.stop()
            raise
        return app

    def wait_healthy(self, timeout: float = 15.0) -> None:
        wait_until_answers(
            f"{self.url}/healthz",
            self.process,
            name="test app",
            timeout=timeout,
            interval=0.05,
            exit_detail=self.output,
        )

    def control(self, **changes: float) -> dict[str, float]:
        """POST /control with camelCase keys; returns the settings now in force."""
        response = httpx.post(f"{self.url}/control", json=changes, timeout=5)
        response.raise_for_status()
        result: dict[str, float] = response.json()
        return result

    def set_slo(
        self,
        error_ratio: float | None = None,
        latency: float | None = None,
        rps: float | None = None,
    ) -> dict[str, float]:
        """Change the error ratio, latency (seconds) and/or simulated requests per second."""
        changes: dict[str, float] = {}
        if error_ratio is not None:
            changes["errorRatio"] = error_ratio
        if latency is not None:
            changes["latencySeconds"] = latency
        if rps is not None:
            changes["requestsPerSecond"] = rps
        return self.control(**changes)

    def settings(self) -> dict[str, float]:
        response = httpx.get(f"{self.url}/control", timeout=5)
        response.raise_for_status()
        result: dict[str, float] = response.json()
        return result

    def output(self) -> str:
        """What the app wrote to stderr so far (its tracebacks, if any)."""
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.log is not None:
            self.log.close()
            self.log = None


if __name__ == "__main__":
    raise SystemExit(main())
