"""The locked dependency sets (hack/lock.sh): a rebuild of the same commit gets the same packages.

Aspects covered:
- each lock satisfies what pyproject.toml asks for (runtime, test/dev extras, build backend),
  every pin carries file hashes, and the image's runtime set is the one the tests run with;
- the Dockerfile installs from the locks in hash-checking mode, and the build context has them;
- this environment (made by hack/bootstrap.sh) holds exactly the dev lock's versions.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def _pins(name: str) -> dict[str, tuple[str, str | None, int]]:
    """{canonical name: (version, marker, number of hashes)} of a lock file."""
    pins: dict[str, tuple[str, str | None, int]] = {}
    current = None
    for line in (ROOT / name).read_text().splitlines():
        if m := _PIN.match(line):
            current = canonicalize_name(m.group(1))
            pins[current] = (m.group(2), m.group(3), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, marker, hashes = pins[current]
            pins[current] = (version, marker, hashes + 1)
    return pins


def _wanted(requirements: list[str]) -> list[Requirement]:
    return [Requirement(r) for r in requirements]


LOCKS = [
    pytest.param("requirements.lock", PYPROJECT["project"]["dependencies"], id="runtime"),
    pytest.param(
        "requirements-dev.lock",
        [
            *PYPROJECT["project"]["dependencies"],
            *PYPROJECT["project"]["optional-dependencies"]["test"],
            *PYPROJECT["project"]["optional-dependencies"]["dev"],
        ],
        id="dev",
    ),
    pytest.param("requirements-build.lock", PYPROJECT["build-system"]["requires"], id="build"),
]


@pytest.mark.parametrize(("lock", "requirements"), LOCKS)
def test_lock_satisfies_pyproject(lock: str, requirements: list[str]) -> None:
    pins = _pins(lock)
    assert pins, f"{lock} pins nothing"
    for req in _wanted(requirements):
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock} has no pin for {req} (run hack/lock.sh)"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, pyproject.toml asks for {req} (run hack/lock.sh)"
        )
        for extra in req.extras:  # psycopg[binary] -> psycopg-binary
            assert canonicalize_name(f"{req.name}-{extra}") in pins, f"{lock}: {req} extra"


@pytest.mark.parametrize(
    "lock", ["requirements.lock", "requirements-dev.lock", "requirements-build.lock"]
)
def test_every_pin_has_hashes(lock: str) -> None:
    unhashed = [name for name, (_, _, hashes) in _pins(lock).items() if hashes == 0]
    assert unhashed == [], f"{lock}: pins without a hash: {unhashed}"


def test_the_image_runs_what_the_tests_run() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    differ = {
        n: (v[0], dev.get(n, ("-",))[0]) for n, v in runtime.items() if dev.get(n, v)[0] != v[0]
    }
    missing = set(runtime) - set(dev)
    assert not differ, f"runtime and dev locks disagree: {differ}"
    assert not missing, f"the dev lock lacks runtime packages: {missing}"


def test_dockerfile_installs_the_locks_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.lock requirements-build.lock ./" in dockerfile
    assert "pip wheel --require-hashes --no-deps --wheel-dir /wheels -r requirements.lock" in (
        dockerfile
    )
    assert "pip install --require-hashes --no-deps -r requirements-build.lock" in dockerfile
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"!requirements.lock", "!requirements-build.lock"} <= set(ignore)


def test_this_environment_holds_the_dev_lock() -> None:
    env = default_environment()
    wrong = {}
    for name, (version, marker, _) in _pins("requirements-dev.lock").items():
        if marker and not Requirement(f"x; {marker}").marker.evaluate(env):  # type: ignore[union-attr]
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, (
        f"installed versions differ from requirements-dev.lock (locked, installed): {wrong}"
    )
