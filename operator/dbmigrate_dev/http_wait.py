"""Waiting for a process we started to answer over HTTP (Prometheus, the test app)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx


def wait_until_answers(
    url: str,
    process: subprocess.Popen[Any] | None,
    *,
    name: str,
    timeout: float,
    interval: float,
    exit_detail: Callable[[], str],
) -> None:
    """Poll `url` until it answers 200; fail at once, with `exit_detail()`, if the process
    exits first, and after `timeout` seconds otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {exit_detail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(interval)
    raise RuntimeError(f"{name} did not answer on {url} within {timeout:g}s")
