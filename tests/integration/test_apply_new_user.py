"""`dbmigrate apply` tried as a new user would: the example, a laptop, a pipe.

Aspects: a Prometheus that does not answer is said once, before anything runs, with the choice
(`--prometheus URL`, `--no-analysis`), and nothing is applied (exit 2); `--no-analysis` applies
without the analysis and says so; the settle wait counts down (a line every ~30 s in a pipe, in
place on a terminal); output to a pipe is plain whole lines (no table, no colour, no carriage
return, no padding, nothing wrapped at 80 columns); the backfill's first estimate on a 200 000-row
table without statistics is right.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from dbmigrate_dev.postgres import free_port
from dbmigrate_dev.prometheus import PrometheusServer
from tests.fixtures.prometheus import ScrapedApp
from tests.integration.apply_helpers import create_users, example, run_apply, seed_migration

STEPS = ["expand", "index", "backfill", "release-v2", "contract-check", "contract"]


@pytest.fixture
def users(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """200 000 users, never analysed (as right after a restore or a bulk load)."""
    return create_users(pg_conn, 200_000)


def history(conn: psycopg.Connection) -> list[tuple[str, str]]:
    if conn.execute("SELECT to_regclass('dbmigrate.history')").fetchone() == (None,):
        return []
    return conn.execute("SELECT step, direction FROM dbmigrate.history ORDER BY id").fetchall()


def column_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_name = 'users' AND column_name = 'email_verified'"
    ).fetchone()
    return row == (1,)


def with_analysis(prometheus_url: str, query: str, settle: str) -> dict[str, Any]:
    """The example's steps with an analysis of one PromQL metric, settling for `settle`."""
    doc = seed_migration()
    doc["spec"]["analysis"] = {
        "prometheus": {"address": prometheus_url},
        "interval": "10s",
        "settle": settle,
        "metrics": [{"name": "error-rate", "query": query, "max": 0.05}],
    }
    return doc


@pytest.mark.parametrize(
    ("shipped", "why"),
    [
        pytest.param(True, "cannot resolve the host name", id="example-as-shipped"),
        pytest.param(False, "connection refused", id="prometheus-flag-refused"),
    ],
)
def test_an_unreachable_prometheus_stops_before_anything_with_the_choice(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection, shipped: bool, why: str
) -> None:
    if shipped:
        doc, extra = example(), ("--approved-by", "alice")
    else:
        refused = f"http://127.0.0.1:{free_port()}"
        doc, extra = with_analysis(refused, "vector(0)", "5m"), ("--prometheus", refused)
    began = time.monotonic()
    proc = run_apply(tmp_path, [doc], pg_dsn, *extra, timeout=60)
    elapsed = time.monotonic() - began
    assert proc.returncode == 2, proc.stderr
    out = proc.stderr
    assert why in out
    assert "Pass --prometheus URL for a Prometheus that answers" in out
    assert "or --no-analysis to apply without the SLO analysis. Nothing was applied." in out
    assert out.count("--no-analysis") == 1  # said once
    assert "Started" not in out
    assert elapsed < 15  # one short probe, not minutes of settling against nothing
    assert history(users) == []
    assert not column_exists(users)
    assert pg_dsn not in out


def test_no_analysis_applies_the_example_without_it_and_says_so(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    proc = run_apply(tmp_path, [example()], pg_dsn, "--no-analysis", "--approved-by", "alice")
    assert proc.returncode == 0, proc.stderr
    out = proc.stderr
    assert "analysis: off (--no-analysis)" in out
    assert "the checklist's Monitoring item is dropped with it" in out
    assert "Settling" not in out
    assert "Succeeded all 6 steps applied" in out
    assert history(users) == [(s, "up") for s in STEPS]
    assert column_exists(users)


def test_output_to_a_pipe_is_plain_whole_lines(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    proc = run_apply(tmp_path, [seed_migration()], pg_dsn, env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stderr
    assert "\x1b" not in out  # no colour, no cursor movement
    assert "\r" not in out
    assert not set("┏┃│└━─") & set(out)  # no table
    lines = out.splitlines()
    for line in lines:
        assert line == line.strip(), repr(line)
        assert "   " not in line, repr(line)  # no column padding
    # Whole lines: the long ones are not cut at 80 columns.
    backfill = next(line for line in lines if line.startswith("step backfill: "))
    assert backfill.startswith("step backfill: Succeeded, attempts 1, lock retries 0: 200,000 rows")
    assert backfill.endswith("completed; users analyzed")
    assert any(len(line) > 80 for line in lines)
    # The first estimate of the never-analysed table: its key range, not the planner's guess.
    first = next(line for line in lines if " Backfill backfill: worker 1/1" in line)
    assert first.endswith("0 of ~200,000 rows done"), first
    assert history(users) == [(s, "up") for s in STEPS]


SETTLE_LINE = re.compile(r"^analysis settling: (?:(\d+)m )?(\d+)s left$")


def test_the_settle_wait_counts_down_in_a_pipe(
    tmp_path: Path,
    pg_dsn: str,
    users: psycopg.Connection,
    prometheus: PrometheusServer,
    test_app: ScrapedApp,
) -> None:
    doc = with_analysis(prometheus.url, test_app.error_ratio_query("10s"), "35s")
    proc = run_apply(tmp_path, [doc], pg_dsn, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stderr
    assert "\r" not in out
    lefts = [
        int(m[1] or 0) * 60 + int(m[2])
        for line in out.splitlines()
        if (m := SETTLE_LINE.match(line))
    ]
    assert len(lefts) >= 2, out  # at the start, then every ~30 s
    assert lefts[0] >= 30, lefts
    assert lefts[1] <= 10, lefts
    assert "Settling all steps done; analysis keeps watching for 35s" in out
    assert "Succeeded all 6 steps applied" in out
    assert out.index("analysis settling") < out.index("Succeeded all 6 steps applied")


def test_the_settle_wait_counts_down_in_place_on_a_terminal(
    tmp_path: Path,
    pg_dsn: str,
    users: psycopg.Connection,
    prometheus: PrometheusServer,
    test_app: ScrapedApp,
) -> None:
    doc = with_analysis(prometheus.url, test_app.error_ratio_query("10s"), "8s")
    path = tmp_path / "migration.yaml"
    path.write_text(yaml.safe_dump(doc))
    controller, terminal = pty.openpty()
    env = {**os.environ, "DBMIGRATE_DSN": pg_dsn, "COLUMNS": "100", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbmigrate", "apply", "-f", str(path)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(controller)
    assert proc.wait(timeout=30) == 0, screen.decode(errors="replace")
    text = screen.decode(errors="replace")
    # Redrawn in place (cursor movement), the seconds going down.
    lefts = [int(s) for s in re.findall(r"analysis settling: (\d+)s left", text)]
    assert len(set(lefts)) >= 3, text
    assert lefts[0] > lefts[-1]
    assert "\x1b[" in text
    assert "┏" in text  # the summary is a table on a terminal
