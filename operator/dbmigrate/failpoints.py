"""Failpoints: named places where a test makes the process crash, raise or stall.

In the style of TiKV's and CockroachDB's failpoints. Tests switch them on for one process with
`DBMIGRATE_FAILPOINTS="name=action,name=action"`, action being one of:

- `crash`: exit at once without any clean-up (`os._exit(137)`, as after SIGKILL);
- `raise`: raise `FailpointError` (an unexpected error at that point);
- `stall`: block the whole process (its event loop too) for an hour, until it is killed;
- `sleep:SECONDS`: block for that long, then go on.

The variable is read once at import. Unset (production), `hit` returns after one test of an
empty dict. Unknown names are refused at start: a misspelt failpoint would silently test
nothing.
"""

from __future__ import annotations

import os
import sys
import time

ENV = "DBMIGRATE_FAILPOINTS"

# Every failpoint, where it is, and what has (not) happened when it is hit.
POINTS: dict[str, str] = {
    "executor.group-committed": "a statement group and its progress row committed; the next "
    "group not started",
    "executor.statement-committed": "a non-transactional statement committed; its progress "
    "and history rows not written",
    "runner.history-written": "a step's history row committed; its status not written",
    "runner.job-created": "a step's Job created; its status not written",
    "rollback.argocd-paused": "an Argo CD Application's automated sync switched off (the pause "
    "recorded on it); status not written, the rollout not undone",
    "rollback.rollout-undone": "the rollout undone; status not written, no down run",
    "rollback.step-reverted": "a step's down and its history row committed; status not written",
    "rollback.before-final-status": "every down committed; the final status not written",
    "backfill.batch-committed": "a backfill batch and its checkpoint committed; the next batch "
    "not started",
    "rehearsal.scratch-filled": "a rehearsal's scratch database created and filled; no step "
    "run there, no verdict recorded",
    "backup.job-created": "the backup Job created; its status not written",
    "backup.recorded": "a backup stored, verified and its row committed; the worker not exited",
    "watch.snapshot-taken": "the post-deployment watch's snapshot committed; startedAt not "
    "written, no step run",
    "watch.cleanup-applied": "a cleanup step's SQL and history row committed; its status not "
    "written",
}


class FailpointError(RuntimeError):
    """What a failpoint with the action `raise` raises."""


def _parse(spec: str) -> dict[str, str]:
    active: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown failpoint {name!r} (known: {', '.join(POINTS)})")
        if action not in ("crash", "raise", "stall") and not action.startswith("sleep:"):
            raise ValueError(f"{ENV}: unknown action {action!r} for {name}")
        active[name] = action
    return active


_ACTIVE = _parse(os.environ.get(ENV, ""))


def hit(name: str) -> None:
    """Do what the test asked for at this point; nothing (and at no cost) otherwise."""
    if not _ACTIVE:
        return
    action = _ACTIVE.get(name)
    if action is None:
        return
    print(f"failpoint {name}: {action}", file=sys.stderr, flush=True)
    if action == "crash":
        os._exit(137)
    if action == "raise":
        raise FailpointError(f"failpoint {name}")
    if action == "stall":
        time.sleep(3600)
    else:
        time.sleep(float(action.removeprefix("sleep:")))
