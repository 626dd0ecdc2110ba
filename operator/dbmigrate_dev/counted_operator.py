"""`dbmigrate run` with every Kubernetes API request it makes counted, for hack/bench/fleet.py.

    python -m dbmigrate_dev.counted_operator run [dbmigrate run's arguments]

The operator talks to the API server through two HTTP clients: kopf's (aiohttp: the watches,
its own patches and events) and the official client's (urllib3: everything the runners read
and write). Both are wrapped before the operator starts, and each request adds one to
`dbmigrate_bench_api_requests_total{client, verb, resource}` on the operator's own /metrics
page. A watch is one request for as long as its stream lasts. Nothing else changes: this is
the operator's code, started the way `dbmigrate run` starts it. `CountedOperator` starts such
a process and reads its counts, its RSS and its CPU time.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter

from dbmigrate_dev.cluster_client import wait_for
from dbmigrate_dev.postgres import free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
REQUESTS = Counter(
    "dbmigrate_bench_api_requests_total",
    "Kubernetes API requests made by this operator process",
    ["client", "verb", "resource"],
)
# /api/v1/namespaces/ns/secrets/name, /apis/group/version/namespaces/ns/plural/name/status, ...
_PATH = re.compile(
    r"^/(?:api/[^/]+|apis/[^/]+/[^/]+)(?:/namespaces/[^/]+)?/(?P<resource>[^/?]+)"
    r"(?:/[^/?]+(?:/(?P<sub>[^/?]+))?)?"
)


def classify(method: str, url: str) -> tuple[str, str]:
    """(verb, resource) of a request: GET with `watch=` is a watch; status is a subresource."""
    parts = urlsplit(url)
    match = _PATH.match(parts.path)
    resource = "other"
    if match:
        resource = match["resource"]
        if match["sub"]:
            resource = f"{resource}/{match['sub']}"
    verb = method.upper()
    if verb == "GET" and "watch=" in (parts.query or ""):
        verb = "WATCH"
    return verb, resource


def install() -> None:
    import aiohttp
    import urllib3.connectionpool

    original_request = aiohttp.ClientSession._request

    @functools.wraps(original_request)
    async def counted_request(self: Any, method: str, str_or_url: Any, **kwargs: Any) -> Any:
        url = str(str_or_url)
        params = kwargs.get("params")
        if params and "watch" in dict(params):
            url += ("&" if "?" in url else "?") + "watch=true"
        REQUESTS.labels("kopf", *classify(method, url)).inc()
        return await original_request(self, method, str_or_url, **kwargs)

    aiohttp.ClientSession._request = counted_request  # type: ignore[method-assign]

    original_urlopen = urllib3.connectionpool.HTTPConnectionPool.urlopen

    @functools.wraps(original_urlopen)
    def counted_urlopen(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        REQUESTS.labels("client", *classify(method, url)).inc()
        return original_urlopen(self, method, url, *args, **kwargs)

    urllib3.connectionpool.HTTPConnectionPool.urlopen = counted_urlopen  # type: ignore[method-assign]


def count_objects_on_signal(path: str) -> None:
    """With DBMIGRATE_BENCH_OBJECTS=FILE: SIGUSR1 writes the live objects the garbage collector
    tracks, by type (count, shallow size), the 40 largest totals, to FILE. Costs nothing until
    the signal (tracemalloc slowed the operator too much to run the fleet)."""
    import gc
    import signal
    from collections import Counter as Tally

    def dump(*_: object) -> None:
        gc.collect()
        count: Tally[str] = Tally()
        size: Tally[str] = Tally()
        for obj in gc.get_objects():
            name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            count[name] += 1
            size[name] += sys.getsizeof(obj)
        with open(path, "w") as out:
            out.write(f"{sum(size.values()) / 2**20:.1f} MiB shallow in {sum(count.values())}\n")
            for name, total in size.most_common(400):
                out.write(f"{total / 2**10:10.0f} KiB {count[name]:9d} {name}\n")

    signal.signal(signal.SIGUSR1, dump)


def profile_on_signal(path: str) -> None:
    """With DBMIGRATE_BENCH_PROFILE=FILE: the first SIGUSR2 starts cProfile, the second stops it
    and writes the 40 functions with the most cumulative time to FILE."""
    import cProfile
    import io
    import pstats
    import signal

    profiler = cProfile.Profile()
    running = False

    def toggle(*_: object) -> None:
        nonlocal running
        if not running:
            profiler.enable()
            running = True
            return
        profiler.disable()
        running = False
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(60)
        with open(path, "w") as out:
            out.write(text.getvalue())

    signal.signal(signal.SIGUSR2, toggle)


class CountedOperator:
    """`dbmigrate run --all-namespaces` through this module in a process of its own: its API
    requests (from /metrics), RSS and CPU time (from /proc)."""

    def __init__(self, kubeconfig: Path, workdir: Path, env: dict[str, str]) -> None:
        self.metrics_port = free_port()
        self.log = workdir / "operator.log"
        full_env = dict(os.environ)
        full_env.update(KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1", **env)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dbmigrate_dev.counted_operator",
                    "run",
                    "--all-namespaces",
                    "--liveness-port",
                    "0",
                    "--metrics-port",
                    str(self.metrics_port),
                ],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self._metrics_or_none() is not None, 60, "the operator's /metrics")

    def _metrics_or_none(self) -> str | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the operator exited; see {self.log}")
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        return None

    def requests(self) -> dict[tuple[str, str, str], float]:
        """API requests so far: {(client, verb, resource): count}."""
        text = self._metrics_or_none() or ""
        out = {}
        pattern = (
            r"^dbmigrate_bench_api_requests_total"
            r'\{client="([^"]*)",resource="([^"]*)",verb="([^"]*)"\} (\S+)'
        )
        for m in re.finditer(pattern, text, re.M):
            out[(m[1], m[3], m[2])] = float(m[4])
        return out

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def settle(self, quiet: float = 5.0) -> dict[str, float]:
        """After a start: wait until no API request was made for `quiet` seconds; how many were
        made until then, and how long that took."""
        t0 = time.monotonic()
        last, last_change = sum(self.requests().values()), time.monotonic()
        while time.monotonic() - last_change < quiet and time.monotonic() - t0 < 300:
            time.sleep(0.5)
            now = sum(self.requests().values())
            if now != last:
                last, last_change = now, time.monotonic()
        return {"requests": last, "seconds": last_change - t0}


def main() -> int:
    install()
    if os.environ.get("DBMIGRATE_BENCH_PROFILE"):
        profile_on_signal(os.environ["DBMIGRATE_BENCH_PROFILE"])
    if os.environ.get("DBMIGRATE_BENCH_OBJECTS"):
        count_objects_on_signal(os.environ["DBMIGRATE_BENCH_OBJECTS"])
    from dbmigrate.cli import main as dbmigrate_main

    return dbmigrate_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
