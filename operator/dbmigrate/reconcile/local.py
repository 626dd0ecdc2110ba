"""The platform of `dbmigrate apply`: the same runner, straight against a database.

The DatabaseMigration and its status live in memory; ConfigMaps come from the same YAML files;
the DSN is given on the command line. There is no cluster: rollout gates do not apply and
`awaitRollout` steps are skipped (the runner says so). Backfill "Jobs" run in-process, one
thread per worker, through the very worker code the operator's Jobs run. `job` steps run
container images and need Kubernetes: they fail with that message.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg

from dbmigrate.api.durations import parse_duration
from dbmigrate.api.models import ArgoCDRollbackStatus, DatabaseMigrationSpec
from dbmigrate.core.decide import ActiveJob, JobState
from dbmigrate.core.jobs import ANNOTATION_STEP, backfill_checkpoint_name
from dbmigrate.core.rollout import Revision, UndoPlan
from dbmigrate.db.backfill import BackfillEvent, BackfillOptions, run_backfill_reconnecting
from dbmigrate.reconcile.platform import NotFound

StatusListener = Callable[[dict[str, Any]], None]
EventListener = Callable[[str, str, str], None]
BackfillListener = Callable[[str, BackfillEvent], None]


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies it to status."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class LocalPlatform:
    has_rollouts = False

    def __init__(
        self,
        resource: dict[str, Any],
        dsn: str,
        config_maps: dict[str, dict[str, str]] | None = None,
        *,
        on_status: StatusListener | None = None,
        on_event: EventListener | None = None,
        on_backfill: BackfillListener | None = None,
        confirm: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.resource = copy.deepcopy(resource)
        self.resource.setdefault("metadata", {}).setdefault("generation", 1)
        self.resource["metadata"].setdefault("namespace", "local")
        self.resource["metadata"].setdefault("uid", "local")
        self.namespace = str(self.resource["metadata"]["namespace"])
        self.name = str(self.resource["metadata"].get("name", "migration"))
        self.dsn = dsn
        self.config_maps = config_maps or {}
        self.on_status = on_status or (lambda _s: None)
        self.on_event = on_event or (lambda _t, _r, _m: None)
        self.on_backfill = on_backfill or (lambda _s, _e: None)
        self.confirm = confirm
        self._jobs: dict[str, list[Future[Any]]] = {}
        self._stop: dict[str, threading.Event] = {}  # per Job: its workers stop after a batch
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="backfill")
        self.report: str | None = None  # the migration's record, once it ended

    # --- the record ----------------------------------------------------------------------------

    def run_name(self, body: dict[str, Any]) -> tuple[str, str]:
        return "dbmigrate apply", ""  # no resource, no uid: the migration id says which

    async def save_report(self, body: dict[str, Any], markdown: str) -> str:
        """Kept for `dbmigrate apply` to print or write to `--report FILE`."""
        self.report = markdown
        return "dbmigrate apply"

    # --- the resource ------------------------------------------------------------------------

    async def read_resource(self) -> dict[str, Any]:
        return copy.deepcopy(self.resource)

    async def write_status(self, patch: dict[str, Any]) -> None:
        merge_patch(self.resource.setdefault("status", {}), patch)
        self.on_status(copy.deepcopy(self.resource["status"]))

    async def event(self, type_: str, reason: str, message: str) -> None:
        self.on_event(type_, reason, message)

    async def read_secret(self, name: str, key: str) -> str:
        return self.dsn  # given on the command line instead of a Secret

    async def check_secret(self, name: str) -> None:
        return None  # tool Jobs do not run locally

    async def read_config_map(self, name: str, key: str) -> str:
        try:
            return self.config_maps[name][key]
        except KeyError:
            raise NotFound(
                f"configmap {name!r} with key {key!r} is not in the given files"
            ) from None

    # --- no cluster ----------------------------------------------------------------------------

    async def read_deployment(self, name: str) -> dict[str, Any]:
        raise NotFound(f"no Kubernetes here: deployment {name!r} is not checked")

    async def undo_rollout(self, deployment: str, to_revision: str) -> UndoPlan:
        return UndoPlan(None, "no Kubernetes here: no rollout to undo")

    async def deployment_revisions(self, deployment: dict[str, Any]) -> tuple[Revision, ...]:
        return ()

    async def pause_argo_cd(
        self, deployment: dict[str, Any], resume: str
    ) -> ArgoCDRollbackStatus | None:
        return None

    async def read_argo_application(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def resume_argo_auto_sync(self, app: dict[str, Any], automated: dict[str, bool]) -> None:
        return None

    async def confirm_rollout(self, step: str, image: str | None) -> None:
        """`apply --interactive`: wait until the person says the new version is out."""
        if self.confirm is not None:
            await asyncio.to_thread(self.confirm, step, image)

    # --- jobs ----------------------------------------------------------------------------------

    async def start_job(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        if name in self._jobs:
            return
        spec = DatabaseMigrationSpec.model_validate(self.resource["spec"])
        step = spec.step(job["metadata"]["annotations"][ANNOTATION_STEP])
        if step.backfill is None:
            failed: Future[Any] = Future()
            failed.set_exception(
                RuntimeError(
                    f"step {step.name!r} runs the image {step.job.image if step.job else '?'}: "
                    "job steps need Kubernetes (run this migration with the operator)"
                )
            )
            self._jobs[name] = [failed]
            return
        bf = step.backfill
        workers = int(job["spec"]["completions"])  # `parallelism` as resolved for this run
        stop = self._stop[name] = threading.Event()
        self._jobs[name] = [
            self._pool.submit(
                self._run_worker,
                step.name,
                stop,
                BackfillOptions(
                    table=bf.table,
                    set=bf.set,
                    where=bf.where,
                    batch_size=bf.batch_size,
                    max_batch_size=bf.max_batch_size,
                    target_batch_seconds=parse_duration(bf.target_batch_duration),
                    pause_seconds=parse_duration(bf.pause),
                    worker=index,
                    workers=workers,
                    checkpoint=backfill_checkpoint_name(spec.migration_id, step.name),
                    lock_timeout_seconds=parse_duration(spec.safety.lock_timeout),
                    max_blocked_seconds=parse_duration(spec.safety.max_blocked_duration),
                ),
            )
            for index in range(workers)
        ]

    def _run_worker(self, step: str, stop: threading.Event, opts: BackfillOptions) -> None:
        result = run_backfill_reconnecting(
            lambda: psycopg.connect(self.dsn, autocommit=True, application_name="dbmigrate"),
            opts,
            on_event=lambda e: self.on_backfill(step, e),
            stop=stop,
            guard_connect=lambda: psycopg.connect(
                self.dsn, autocommit=True, application_name="dbmigrate-guard"
            ),
        )
        if result.stopped:
            raise RuntimeError("stopped")

    async def job_state(self, name: str, owner_uid: str) -> JobState | None:
        futures = self._jobs.get(name)
        if futures is None:
            return None
        active = sum(1 for f in futures if not f.done())
        errors = [f.exception() for f in futures if f.done() and f.exception() is not None]
        if errors:
            return JobState(name, active=active, failed=True, message=str(errors[0]))
        return JobState(name, active=active, succeeded=active == 0)

    async def active_jobs(self, owner_uid: str) -> list[ActiveJob]:
        """The in-process backfills whose workers still run (all of them are this migration's)."""
        out = []
        for name, futures in self._jobs.items():
            running = sum(1 for f in futures if not f.done())
            if running:
                deleting = name in self._stop and self._stop[name].is_set()
                out.append(ActiveJob(name, uid=name, deleting=deleting, pods=running))
        return out

    async def stop_job(self, job: ActiveJob) -> None:
        """The workers stop after their current batch (the next passes see them finish)."""
        if job.name in self._stop:
            self._stop[job.name].set()

    def close(self) -> None:
        """Stop running backfill workers after their current batch."""
        for stop in self._stop.values():
            stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
