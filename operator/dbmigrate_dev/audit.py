"""Known vulnerabilities in the locked dependency sets: pip-audit (PyPI's advisory data, from
OSV) over requirements.lock and requirements-dev.lock, in hash-checking mode, without
installing anything. Run by `make test` (hack/test.sh) after the static checks.

Verdict (`judge`):
- a known vulnerability in any locked package: exit 1, each listed with its fixed versions;
- some packages audited and others not: exit 1 (a partial audit is not a clean one);
- no package could be audited (the advisory service is not reachable, or a PyPI mirror without
  per-release metadata answers "not found" for every package): `AUDIT NOT DONE` and the exact
  reason on stderr, exit 0 — or exit 2 with DBMIGRATE_AUDIT_REQUIRED=1 (set it where PyPI is
  reachable, so that an outage cannot pass for a clean audit);
- every package audited, none vulnerable: exit 0.

    python -m dbmigrate_dev.audit            # from the repository's root
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCKS = ("requirements.lock", "requirements-dev.lock")


@dataclass(frozen=True)
class Verdict:
    code: int
    lines: tuple[str, ...]


def judge(report: dict[str, Any] | None, error: str, *, required: bool) -> Verdict:
    """The verdict on pip-audit's JSON report (None when it printed none, with `error`)."""
    deps = (report or {}).get("dependencies") or []
    if report is None or not deps or all("skip_reason" in d for d in deps):
        if deps:  # pip-audit's own summary ("No known vulnerabilities found") would mislead
            reason = f"{len(deps)} skipped, e.g. {deps[0]['skip_reason']}"
        else:
            reason = error.strip().splitlines()[-1] if error.strip() else ""
        return Verdict(
            2 if required else 0,
            (f"AUDIT NOT DONE: no locked package could be audited: {reason or 'no report'}",),
        )
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if "skip_reason" in d]
    lines: list[str] = []
    for d in vulnerable:
        for v in d["vulns"]:
            fixed = ", ".join(v.get("fix_versions") or []) or "no fixed release"
            lines.append(f"{d['name']} {d.get('version', '?')}: {v['id']} (fixed in: {fixed})")
    for d in skipped:
        lines.append(f"{d['name']}: not audited: {d['skip_reason']}")
    audited = len(deps) - len(skipped)
    lines.append(
        f"{audited} locked packages audited, {len(vulnerable)} with known vulnerabilities, "
        f"{len(skipped)} not audited"
    )
    return Verdict(1 if vulnerable or skipped else 0, tuple(lines))


def run(root: Path) -> tuple[dict[str, Any] | None, str]:
    args = [sys.executable, "-m", "pip_audit", "--require-hashes", "--disable-pip"]
    for lock in LOCKS:
        args += ["-r", str(root / lock)]
    args += ["--format", "json", "--progress-spinner", "off"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    try:
        return json.loads(proc.stdout), proc.stderr
    except ValueError:
        return None, proc.stderr or f"pip-audit exited {proc.returncode} without a report"


def main() -> int:
    report, error = run(Path.cwd())
    verdict = judge(report, error, required=os.environ.get("DBMIGRATE_AUDIT_REQUIRED") == "1")
    for line in verdict.lines:
        print(f"[audit] {line}", file=sys.stderr)
    return verdict.code


if __name__ == "__main__":
    sys.exit(main())
