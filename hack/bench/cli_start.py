"""CLI start-up: `dbmigrate --version`, `lint` of a 20-statement file, the backfill worker.

Not a test: it prints a Markdown table whose figures go into BENCHMARKS.md ("CLI start-up").

    python hack/bench/cli_start.py              # median of 15 cold processes each
    python hack/bench/cli_start.py --runs 30

Each command runs as a new process with bytecode compiled, as installed (pip compiles it at
install; a source tree run with PYTHONDONTWRITEBYTECODE would compile every module at every
start), interleaved with the others so that a busy moment of the machine hits all alike. Next
to them, the floors: Python itself, and importing the one library each command cannot do
without (pglast for the linter, psycopg for the worker). `backfill` is the worker's whole start
before its first connection: its arguments parsed, the DSN read and checked, then a connection
refused at once (no server on port 1) and given up without a retry.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import installed_env, machine, markdown_table

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack" / "bench"))

from lint_vs_squawk import CORPUS, load_corpus, twenty_statement_file  # noqa: E402


def commands(sql: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    py = sys.executable
    refused = {"DBMIGRATE_DSN": "postgresql://u@127.0.0.1:1/db?connect_timeout=1"}
    worker = ["backfill", "--table", "t", "--set", "a = 1", "--max-reconnects", "1"]
    return [
        ("python -c pass (the floor)", [py, "-c", "pass"], {}),
        ("python -c 'import pglast'", [py, "-c", "import pglast"], {}),
        ("python -c 'import psycopg'", [py, "-c", "import psycopg"], {}),
        ("dbmigrate --version", [py, "-m", "dbmigrate", "--version"], {}),
        ("dbmigrate lint (20 statements)", [py, "-m", "dbmigrate", "lint", str(sql)], {}),
        ("dbmigrate backfill (worker start)", [py, "-m", "dbmigrate", *worker], refused),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    env = installed_env(REPO)
    with tempfile.TemporaryDirectory() as tmp:
        sql = Path(tmp) / "twenty.sql"
        sql.write_text(twenty_statement_file(load_corpus(CORPUS)), encoding="utf-8")
        todo = commands(sql)
        times: dict[str, list[float]] = {label: [] for label, _, _ in todo}
        for i in range(args.runs + 1):  # the first round warms the page cache
            for label, argv_, extra in todo:
                start = time.perf_counter()
                subprocess.run(argv_, env={**env, **extra}, capture_output=True, check=False)
                if i:
                    times[label].append(time.perf_counter() - start)
    load = os.getloadavg()[0]
    print(f"# CLI start-up, median of {args.runs} (load average {load:.1f})")
    print(f"machine: {machine()}\n")
    rows = [
        [label, f"{statistics.median(t):.3f} s", f"{min(t):.3f} s"] for label, t in times.items()
    ]
    print(markdown_table(["command", "median", "best"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
