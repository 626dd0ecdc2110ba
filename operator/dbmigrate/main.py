"""kopf handler registration only: which events start, wake and stop a migration's runner.

Where things happen, from here:

- a migration's life: `reconcile/runner.py` (observe -> `core/decide.py` -> carry out);
- an SLO breach: measured in `reconcile/observe.py` (`core/slo.py` judges), acted on in
  `reconcile/effects.py` (`start_rollback`, `undo_rollout`, `revert_step`, `finish_rollback`);
- how a backfill batch is sized: `core/batching.py`, used by the worker in `db/backfill/`;
- how a step's SQL is made lock-safe: `db/executor.py` (lock_timeout, retries, statement
  groups from `core/statements.py`), checked beforehand by `core/lint/`.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import kopf
from pydantic import ValidationError

from dbmigrate.api.models import (
    GROUP,
    PLURAL,
    ROLLBACK_ANNOTATION,
    ROLLBACK_REQUESTED,
    VERSION,
    DatabaseMigrationStatus,
)
from dbmigrate.core.decide import is_active
from dbmigrate.reconcile.platform import KubernetesPlatform
from dbmigrate.reconcile.runner import MigrationRunner
from dbmigrate.settings import Settings

SETTINGS = Settings.from_env()
# kopf's own annotations. Not GROUP itself (see configure), and not starting with "kopf.": kopf
# marks other prefixes with `<prefix>/kopf-managed` and leaves all of them out of its diffs.
KOPF_PREFIX = f"operator.{GROUP}"


def configure(settings: kopf.OperatorSettings, *, peering: bool, ours: Settings = SETTINGS) -> None:
    """kopf's own bookkeeping goes under operator.dbmigrate.io, not kopf.zalando.org."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Not GROUP itself: kopf ignores every annotation under its storage prefix when it compares
    # an object's versions, so with GROUP the user's `dbmigrate.io/rollback` never reached
    # `wake_runner` and a rollback request waited out the runner's sleep (up to a minute).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own events are posted by the runner
    settings.peering.name = ours.peering_name
    # kopf pauses every operator when peers share a priority: give each replica its own.
    settings.peering.priority = secrets.randbelow(1_000_000)
    settings.peering.standalone = not peering
    settings.peering.mandatory = peering
    # Measured at 2 000 migrations (BENCHMARKS.md "Fleet"): kopf's watches cost ~1 API request
    # a minute with these and a restart 10-11 in all; no figure called for other values.
    settings.watching.server_timeout = ours.watch_timeout
    settings.networking.request_timeout = ours.request_timeout


def migration_is_active(status: kopf.Status, annotations: kopf.Annotations, **_: Any) -> bool:
    """A runner runs while the migration is under way, or once more for a rollback requested
    after it succeeded."""
    requested = annotations.get(ROLLBACK_ANNOTATION) == ROLLBACK_REQUESTED
    try:
        return is_active(DatabaseMigrationStatus.model_validate(dict(status)), requested)
    except ValidationError:
        return True  # a status that is not ours to read: the runner says what is wrong


# When kopf stops a runner it first only says so (`stopped`, for `cancellation_backoff`), then
# cancels its task: without the graceful period a deletion cut a CREATE INDEX CONCURRENTLY off
# by task cancellation and left its INVALID index behind (the fault matrix found it).
@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    when=migration_is_active,
    cancellation_backoff=10.0,
    cancellation_timeout=10.0,
)
async def run_migration(
    namespace: str | None,
    name: str | None,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    assert namespace is not None
    assert name is not None
    platform = KubernetesPlatform(
        namespace, name, SETTINGS.argocd_namespaces, SETTINGS.secret_label
    )
    runner = MigrationRunner(platform, SETTINGS)
    memo["runner"] = runner
    try:
        await runner.run(
            stopped,
            deleted=lambda: bool(
                stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
            ),
        )
    finally:
        forget_runner(memo, runner)
    # Exit only when kopf stops the daemon (the filter no longer matches once the final status
    # arrives): kopf never spawns again a daemon that returned on its own, and a finished
    # migration must get a runner again when a rollback is requested of it.
    await stopped.wait()


def forget_runner(memo: kopf.Memo, runner: MigrationRunner) -> None:
    """A finished runner is not kept: kopf keeps each object's memo for as long as the object
    exists, and with it the runner's last resource, status and lint (hack/bench/fleet.py saw
    the operator's memory grow with every finished migration). A wake-up has nothing to wake
    then; a rollback requested later gets a new runner."""
    if memo.get("runner") is runner:
        del memo["runner"]


@kopf.on.update(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
def wake_runner(memo: kopf.Memo, **_: Any) -> None:
    """A spec or annotation change (suspend, rollback request) is acted on at once."""
    runner = memo.get("runner")
    if runner is not None:
        runner.wakeup.set()


@kopf.on.startup()
def configure_operator(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """`dbmigrate run --peering` puts `peering` into the operator's memo."""
    configure(settings, peering=bool(memo.get("peering", False)))


@kopf.on.probe(id="runners")
def report_alive(**_: Any) -> str:
    """A probe for /healthz: answers while the operator's event loop runs handlers."""
    return "ok"
