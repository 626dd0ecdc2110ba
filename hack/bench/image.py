"""The operator's image: build times, size over its base, and start-up inside vs outside it.

Not a test: it prints a Markdown table whose figures go into BENCHMARKS.md ("Image").

    python hack/bench/image.py            # 5 start-up runs of each kind

Measured in one run against the same engine (hack/lib/docker-engine.sh up) and base
(hack/lib/python-base-image.sh):
- a cold build (`--no-cache`: every layer, wheels downloaded from PyPI) and the rebuild after a
  one-line change to the package (a copy of the build context, so the tree is left alone);
- the image's size and how much of it is ours (over the base image);
- start-up: `dbmigrate --version` run in a locked-down container (read-only root, no
  capabilities, no network) vs the same command in this virtualenv, and `docker run` of the
  base's `python3 -c pass` — the container's own cost, as the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, markdown_table

from dbmigrate_dev.cluster_client import parse_exports

REPO = Path(__file__).resolve().parents[2]
TAG = "localhost/dbmigrate:bench"
LOCKED = ["--read-only", "--cap-drop", "ALL", "--network", "none", "--user", "65532:65532"]


def engine() -> tuple[str, dict[str, str]]:
    out = subprocess.run(
        [str(REPO / "hack" / "lib" / "docker-engine.sh"), "up"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exports = parse_exports(out)
    return exports.get("DOCKER", "docker"), {**os.environ, **exports}


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def size_mb(docker: str, env: dict[str, str], image: str) -> float:
    out = subprocess.run(
        [docker, "image", "inspect", image], env=env, check=True, capture_output=True, text=True
    ).stdout
    return float(json.loads(out)[0]["Size"]) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    docker, env = engine()
    base = subprocess.run(
        [str(REPO / "hack" / "lib" / "python-base-image.sh")],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    with tempfile.TemporaryDirectory(prefix="dbmigrate-image-bench-") as tmp:
        context = Path(tmp) / "src"
        shutil.copytree(
            REPO,
            context,
            ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info"),
        )
        script = str(context / "hack" / "build-image.sh")
        cold = timed([script, TAG, "--no-cache"], env)
        unchanged = timed([script, TAG], env)
        init = context / "operator" / "dbmigrate" / "__init__.py"
        init.write_text(init.read_text() + "\n# bench: a one-line change\n")
        changed = timed([script, TAG], env)

    image_mb, base_mb = size_mb(docker, env, TAG), size_mb(docker, env, base)
    in_container = [
        timed([docker, "run", "--rm", *LOCKED, TAG, "--version"], env) for _ in range(args.runs)
    ]
    on_host = [
        timed([str(REPO / ".venv" / "bin" / "dbmigrate"), "--version"], env)
        for _ in range(args.runs)
    ]
    bare = [
        timed([docker, "run", "--rm", *LOCKED, base, "python3", "-c", "pass"], env)
        for _ in range(args.runs)
    ]
    med = statistics.median
    print(f"{time.strftime('%Y-%m-%d')}, {machine()}, base {base}\n")
    print(
        markdown_table(
            ["what", "time"],
            [
                ["cold build (`--no-cache`, wheels from PyPI)", f"{cold:.1f} s"],
                ["rebuild, nothing changed", f"{unchanged:.1f} s"],
                ["rebuild after a one-line change to the package", f"{changed:.1f} s"],
            ],
        )
    )
    print()
    print(
        markdown_table(
            ["image", "size"],
            [
                ["base", f"{base_mb:.0f} MB"],
                ["dbmigrate", f"{image_mb:.0f} MB"],
                ["ours (over the base)", f"{image_mb - base_mb:.0f} MB"],
            ],
        )
    )
    print()
    print(
        markdown_table(
            [f"start-up (median of {args.runs})", "time", "vs host"],
            [
                ["`dbmigrate --version` on the host (.venv)", f"{med(on_host):.2f} s", "1.00x"],
                [
                    "`dbmigrate --version` in the locked-down container",
                    f"{med(in_container):.2f} s",
                    f"{med(in_container) / med(on_host):.2f}x",
                ],
                [
                    "`python3 -c pass` in a container of the base (the container's own cost)",
                    f"{med(bare):.2f} s",
                    f"{med(bare) / med(on_host):.2f}x",
                ],
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
