"""What each runtime dependency adds to the image: installed size, own and with what it pulls in.

Not a test: it prints a Markdown table whose figures go into BENCHMARKS.md ("Image").

    python hack/bench/dependencies.py

Installs requirements.lock (what the image installs: the same wheels, hashes checked) into a
scratch directory with bytecode compiled, as the Dockerfile does, then sizes every
distribution from its RECORD. For each of our direct dependencies (pyproject.toml) it reports
its own size and the size of everything it brings that nothing else of ours needs (what
dropping it would save), following Requires-Dist with the markers evaluated for Python 3.11 on
Linux. No Docker needed; the image's site-packages holds the same files.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from _common import machine, markdown_table
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def installed(target: Path) -> dict[str, metadata.Distribution]:
    return {
        canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions(path=[str(target)])
    }


def size_of(dist: metadata.Distribution, target: Path) -> int:
    total = 0
    for f in dist.files or []:
        path = target / f
        if path.is_file():
            total += path.stat().st_size
    return total


def requires(dist: metadata.Distribution, extras: Iterable[str] = ()) -> set[str]:
    out = set()
    for text in dist.requires or []:
        req = Requirement(text)
        for extra in ("", *extras):
            env = {"python_version": "3.11", "sys_platform": "linux", "extra": extra}
            if req.marker is None or req.marker.evaluate(env):
                out.add(canonicalize_name(req.name))
    return out


def closure(roots: Iterable[str], dists: dict[str, metadata.Distribution]) -> set[str]:
    """`roots` (names, with `[extras]` as in pyproject.toml) and all they require."""
    seen: set[str] = set()
    todo = [(canonicalize_name(Requirement(r).name), Requirement(r).extras) for r in roots]
    while todo:
        name, extras = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        todo.extend((r, set()) for r in requires(dists[name], extras))
    return seen


def direct_dependencies() -> list[str]:
    """pyproject.toml's dependencies, as `name[extras]`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = []
    for text in project["dependencies"]:
        req = Requirement(text)
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        out.append(canonicalize_name(req.name) + extras)
    return out


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "site-packages"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--require-hashes",
                "--only-binary",
                ":all:",
                "--target",
                str(target),
                "-r",
                str(REPO / "requirements.lock"),
            ],
            check=True,
        )
        dists = installed(target)
        sizes = {name: size_of(d, target) for name, d in dists.items()}
        ours = direct_dependencies()
        total = sum(sizes.values())
        rows = []
        for dep in sorted(ours, key=lambda n: -sum(sizes[x] for x in closure([n], dists))):
            mine = closure([dep], dists)
            others = closure([d for d in ours if d != dep], dists)
            alone = mine - others
            pulled = sorted(
                alone - {canonicalize_name(Requirement(dep).name)}, key=lambda n: -sizes[n]
            )
            name = canonicalize_name(Requirement(dep).name)
            rows.append(
                [
                    dep,
                    f"{sizes[name] / 1e6:.1f}",
                    f"{sum(sizes[x] for x in alone) / 1e6:.1f}",
                    ", ".join(f"{n} {sizes[n] / 1e6:.1f}" for n in pulled[:6])
                    + (" …" if len(pulled) > 6 else ""),
                ]
            )
    print(f"# Runtime dependencies, installed with bytecode: {total / 1e6:.1f} MB in all")
    print(f"machine: {machine()}\n")
    print(
        markdown_table(
            ["dependency", "own MB", "MB saved without it", "what only it pulls in (MB)"], rows
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
