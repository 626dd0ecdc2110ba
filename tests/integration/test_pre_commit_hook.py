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


def _head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """`pre-commit run --all-files` in a repository using both hooks of this repository at its
    HEAD commit (one virtualenv per commit, cached: the first run installs the project)."""
    repo = tmp_path_factory.mktemp("user-repo")
    (repo / "migrations").mkdir()
    (repo / "migrations" / "1_index.up.sql").write_text(
        "-- add an index\nCREATE INDEX users_email ON users (email);\n"
    )
    (repo / "migrations" / "2_safe.up.sql").write_text(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_name ON users (name);\n"
    )
    (repo / "notes.txt").write_text("CREATE INDEX not_sql ON users (email);\n")
    (repo / "deploy.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {ROOT}\n    rev: {_head()}\n    hooks:\n"
        "      - id: dbmigrate-lint\n      - id: dbmigrate-lint-manifests\n"
    )
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "migrations")
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(CACHE / "pre-commit"),
        "PRE_COMMIT_COLOR": "never",
    }
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "run", "--all-files"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )


def _section(output: str, title: str) -> str:
    """What one hook printed: from its title line to the next hook's."""
    start = output.index(title)
    rest = output[start + len(title) :]
    nxt = rest.find("dbmigrate lint (")
    return rest if nxt < 0 else rest[:nxt]


def test_the_sql_hook_fails_on_the_blocking_migration_only(
    run: subprocess.CompletedProcess[str],
) -> None:
    assert run.returncode == 1, run.stdout + run.stderr
    sql = _section(run.stdout, "dbmigrate lint (SQL)")
    assert "Failed" in sql.splitlines()[0]
    assert "migrations/1_index.up.sql:2: error require-concurrent-index-creation" in sql
    assert "2_safe" not in sql
    assert "notes.txt" not in sql


def test_the_manifest_hook_passes_yaml_without_migrations(
    run: subprocess.CompletedProcess[str],
) -> None:
    manifests = _section(run.stdout, "dbmigrate lint (DatabaseMigration YAML)")
    assert "Passed" in manifests.splitlines()[0], run.stdout
