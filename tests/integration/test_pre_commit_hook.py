"""The pre-commit hooks (`.pre-commit-hooks.yaml`) as a user's repository runs them: real
pre-commit, `try-repo` of this repository (installed into pre-commit's own virtualenv from this
checkout, cached under ~/.cache/dbmigrate/pre-commit), in a repository with a blocking
migration and a clean one. The hook fails on the first with the finding on its line, passes on
the second, and leaves other files alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("DBMIGRATE_CACHE", Path.home() / ".cache" / "dbmigrate"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _try_repo(repo: Path, hook: str, *files: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(CACHE / "pre-commit"),
        "PRE_COMMIT_COLOR": "never",
    }
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), hook, "--files", *files],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "1_index.up.sql").write_text(
        "-- add an index\nCREATE INDEX users_email ON users (email);\n"
    )
    (tmp_path / "migrations" / "2_safe.up.sql").write_text(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_name ON users (name);\n"
    )
    (tmp_path / "notes.txt").write_text("CREATE INDEX not_sql ON users (email);\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "migrations")
    return tmp_path


def test_the_hook_fails_on_a_blocking_migration(repo: Path) -> None:
    proc = _try_repo(repo, "dbmigrate-lint", "migrations/1_index.up.sql", "notes.txt")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "dbmigrate lint (SQL)" in proc.stdout
    assert "migrations/1_index.up.sql:2: error require-concurrent-index-creation" in proc.stdout
    assert "notes.txt" not in proc.stdout.split("dbmigrate lint (SQL)")[-1]


def test_the_hook_passes_a_safe_migration(repo: Path) -> None:
    proc = _try_repo(repo, "dbmigrate-lint", "migrations/2_safe.up.sql")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Passed" in proc.stdout
