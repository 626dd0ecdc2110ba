"""Local Git repositories for GitOps tests: a bare repository under the base path of the Git
daemon that `hack/local-cluster.sh up --with-argocd` runs, and commits pushed to it from a
scratch clone, the way a developer's `git push` lands on a Git server.

The daemon only serves (git:// is read-only here); commits reach the bare repository through
the filesystem. Git's own configuration (user's and system's) is ignored, so the commits do not
depend on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

BRANCH = "main"


def git(*args: str, cwd: Path | None = None) -> str:
    env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "dbmigrate tests",
        "GIT_AUTHOR_EMAIL": "tests@dbmigrate.invalid",
        "GIT_COMMITTER_NAME": "dbmigrate tests",
        "GIT_COMMITTER_EMAIL": "tests@dbmigrate.invalid",
    }
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


@dataclass(frozen=True)
class GitRepo:
    bare: Path
    url: str
    branch: str = BRANCH

    @classmethod
    def create(cls, root: Path, base_url: str, name: str) -> GitRepo:
        """A new, empty bare repository `root/name.git`, served as `base_url/name.git`."""
        bare = root / f"{name}.git"
        git("init", "--quiet", "--bare", f"--initial-branch={BRANCH}", str(bare))
        return cls(bare, f"{base_url}/{name}.git")

    def commit(self, files: Mapping[str, str | None], message: str) -> str:
        """Writes `files` (path -> content; None deletes the file) on top of the branch, commits
        and pushes; returns the new commit's SHA."""
        with tempfile.TemporaryDirectory(prefix="dbmigrate-git-") as tmp:
            work = Path(tmp) / "work"
            git("clone", "--quiet", str(self.bare), str(work))
            # An empty repository clones onto an unborn branch named by the local default.
            git("symbolic-ref", "HEAD", f"refs/heads/{self.branch}", cwd=work)
            for path, content in files.items():
                target = work / path
                if content is None:
                    target.unlink()
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            git("add", "--all", cwd=work)
            git("commit", "--quiet", "--message", message, cwd=work)
            git("push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}", cwd=work)
            return git("rev-parse", "HEAD", cwd=work)

    def revert(self, commit: str) -> str:
        """`git revert` of `commit` on top of the branch, pushed; returns the new commit's SHA."""
        with tempfile.TemporaryDirectory(prefix="dbmigrate-git-") as tmp:
            work = Path(tmp) / "work"
            git("clone", "--quiet", "--branch", self.branch, str(self.bare), str(work))
            git("revert", "--no-edit", commit, cwd=work)
            git("push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}", cwd=work)
            return git("rev-parse", "HEAD", cwd=work)

    def head(self) -> str:
        return git("--git-dir", str(self.bare), "rev-parse", self.branch)

    def remove(self) -> None:
        shutil.rmtree(self.bare, ignore_errors=True)
