"""Where a migration runs: the seam between the runner and the world around the database.

The runner (`reconcile.runner`, with `reconcile.observe` and `reconcile.effects`) drives a
migration the same way everywhere; a `Platform` gives it the resource, a place to report status
and events, the DSN, SQL from ConfigMaps, the target Deployment and somewhere to run Jobs.
`KubernetesPlatform` is the operator's; the local one of `dbmigrate apply` (`reconcile.local`)
has no cluster, runs backfills in-process and skips rollout gates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

from dbmigrate.api import reasons
from dbmigrate.api.models import ArgoCDRollbackStatus
from dbmigrate.core.access import secret_refusal
from dbmigrate.core.argocd import (
    argo_application_refusal,
    automated_flags,
    operation_pending,
    operation_unfinished,
    pause_record,
    paused_by,
    paused_message,
    synced_revision,
)
from dbmigrate.core.decide import ActiveJob, JobState
from dbmigrate.core.jobs import job_selector
from dbmigrate.core.record import build_report_config_map
from dbmigrate.core.rollout import (
    Revision,
    UndoPlan,
    plan_rollout_undo,
    revision_history,
)
from dbmigrate.core.status import merge_patch_changes
from dbmigrate.kube import argocd
from dbmigrate.kube import cluster as kube

NotFound = kube.NotFound
Forbidden = kube.Forbidden
Conflict = kube.Conflict
Invalid = kube.Invalid  # start_job: the Job was rejected as invalid; retrying cannot help


# How long a rollback waits for Argo CD to end the sync operation it terminated before it
# undoes the rollout anyway (and says so).
OPERATION_END_TIMEOUT = 15.0


class SecretNotPermitted(Exception):
    """The Secret exists but this operator may not use it (it lacks the required label)."""


class StatusConflict(Exception):
    """Someone else wrote the status since this pass read it: the pass must start over."""


class Platform(Protocol):
    """What the runner needs from its surroundings. Methods raise `NotFound` for missing things."""

    namespace: str
    name: str
    has_rollouts: bool  # Deployments and rollout gates exist here

    async def read_resource(self) -> dict[str, Any]: ...

    async def write_status(self, patch: dict[str, Any]) -> None: ...

    async def event(self, type_: str, reason: str, message: str) -> None: ...

    async def read_secret(self, name: str, key: str) -> str:
        """The value of one key; `SecretNotPermitted` when the Secret may not be used."""
        ...

    async def check_secret(self, name: str) -> None:
        """Raise `NotFound` or `SecretNotPermitted` unless a Job may be given this Secret."""
        ...

    async def read_config_map(self, name: str, key: str) -> str: ...

    async def read_deployment(self, name: str) -> dict[str, Any]: ...

    async def deployment_revisions(self, deployment: dict[str, Any]) -> tuple[Revision, ...]:
        """The Deployment's revisions, newest first (from its ReplicaSets)."""
        ...

    async def undo_rollout(self, deployment: str, to_revision: str) -> UndoPlan: ...

    async def pause_argo_cd(
        self, deployment: dict[str, Any], resume: str
    ) -> ArgoCDRollbackStatus | None:
        """Switch off automated sync of the Argo CD Application tracking the Deployment
        (`resume`: spec.rollback.argoCD.resumeAutoSync, for what the pause says)."""
        ...

    async def read_argo_application(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Application (None when it is gone)."""
        ...

    async def resume_argo_auto_sync(self, app: dict[str, Any], automated: dict[str, bool]) -> None:
        """Put automated sync back; `Conflict` when the Application changed since it was read."""
        ...

    async def start_job(self, job: dict[str, Any]) -> None: ...

    async def job_state(self, name: str, owner_uid: str) -> JobState | None:
        """The Job of that name; `foreign_owner` set when it is not owned by `owner_uid`."""
        ...

    async def active_jobs(self, owner_uid: str) -> list[ActiveJob]:
        """The migration's Jobs (owned by `owner_uid`) still running or being deleted."""
        ...

    async def stop_job(self, job: ActiveJob) -> None:
        """Stop the Job and its pods (deleting them); idempotent, does not wait."""
        ...

    async def confirm_rollout(self, step: str, image: str | None) -> None:
        """Where there are no rollouts to watch: called before an awaitRollout step is recorded."""

    def run_name(self, body: dict[str, Any]) -> tuple[str, str]:
        """(name, uid) of the migration's rows in `dbmigrate.runs`."""
        ...

    async def save_report(self, body: dict[str, Any], markdown: str) -> str:
        """Keep the migration's report where a person finds it (create or replace); says
        where."""
        ...


class KubernetesPlatform:
    """The operator's platform: the API server."""

    has_rollouts = True

    def __init__(
        self,
        namespace: str,
        name: str,
        argocd_namespaces: tuple[str, ...],
        secret_label: tuple[str, str] | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.argocd_namespaces = argocd_namespaces
        self.secret_label = secret_label  # only Secrets carrying it may be used (None: any)
        self._body: dict[str, Any] = {}
        # What this pass's decisions rest on: the object's version and its status as last read
        # or written by us. A status write is based on them (optimistic concurrency).
        self._resource_version: str | None = None
        self._status_seen: dict[str, Any] = {}

    async def read_resource(self) -> dict[str, Any]:
        self._body = await kube.read_migration(self.namespace, self.name)
        self._resource_version = self._body["metadata"].get("resourceVersion")
        self._status_seen = self._body.get("status") or {}
        return self._body

    async def write_status(self, patch: dict[str, Any]) -> None:
        """Write the status only over the one this pass saw: two operators (a peering hand-over)
        must not clobber each other's status. The object also changes when only its metadata
        does (kopf's own annotations); then the write is based on the new version and sent
        again. Raises `StatusConflict` when someone else wrote the status.

        A patch that would change nothing in the status this pass saw is not sent: a waiting
        migration computes the same status every pass."""
        if self._resource_version is not None and not merge_patch_changes(self._status_seen, patch):
            return
        try:
            written = await kube.patch_migration_status(
                self.namespace, self.name, patch, self._resource_version
            )
        except kube.Conflict:
            fresh = await kube.read_migration(self.namespace, self.name)
            if (fresh.get("status") or {}) != self._status_seen:
                raise StatusConflict(
                    f"the status of {self.namespace}/{self.name} was written by someone else "
                    "since this pass read it; the pass starts over"
                ) from None
            written = await kube.patch_migration_status(
                self.namespace, self.name, patch, fresh["metadata"].get("resourceVersion")
            )
        self._resource_version = written["metadata"].get("resourceVersion")
        self._status_seen = written.get("status") or {}

    async def event(self, type_: str, reason: str, message: str) -> None:
        if self._body:
            await kube.post_event(self._body, type_, reason, message)

    async def read_secret(self, name: str, key: str) -> str:
        return kube.secret_value(name, await self._permitted_secret(name), key)

    async def check_secret(self, name: str) -> None:
        if self.secret_label is not None:  # else any Secret: the kubelet reports a missing one
            await self._permitted_secret(name)

    async def _permitted_secret(self, name: str) -> dict[str, str]:
        """The Secret's data, once its labels allow this operator to use it."""
        labels, data = await kube.read_secret(self.namespace, name)
        refusal = secret_refusal(self.namespace, name, labels, self.secret_label)
        if refusal:
            raise SecretNotPermitted(refusal)
        return data

    async def read_config_map(self, name: str, key: str) -> str:
        return await kube.read_config_map_value(self.namespace, name, key)

    async def read_deployment(self, name: str) -> dict[str, Any]:
        return await kube.read_deployment(self.namespace, name)

    async def _replica_sets(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        selector = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return await kube.list_replica_sets(self.namespace, selector)

    async def deployment_revisions(self, deployment: dict[str, Any]) -> tuple[Revision, ...]:
        return revision_history(deployment, await self._replica_sets(deployment))

    async def undo_rollout(self, deployment: str, to_revision: str) -> UndoPlan:
        """`kubectl rollout undo --to-revision`: plan from the ReplicaSets, then one patch."""
        dep = await kube.read_deployment(self.namespace, deployment)
        replica_sets = await self._replica_sets(dep)
        plan = plan_rollout_undo(dep, replica_sets, to_revision)
        if plan.patch is not None:
            await kube.json_patch_deployment(self.namespace, deployment, plan.patch)
        return plan

    async def pause_argo_cd(
        self, deployment: dict[str, Any], resume: str
    ) -> ArgoCDRollbackStatus | None:
        """Switch off automated sync of the Argo CD Application tracking the Deployment, and end
        its running sync operation; None when no Application tracks it."""
        app_name, ns_hint = argocd.argo_application_of(deployment)
        if app_name is None:
            return None
        namespaces = [ns_hint] if ns_hint else [*self.argocd_namespaces, self.namespace]
        try:
            app = await argocd.find_application(app_name, namespaces)
        except Forbidden:
            msg = (
                f"deployment is tracked by Argo CD application {app_name!r} but the operator "
                "may not read applications.argoproj.io; undoing the rollout anyway (self-heal "
                "may re-apply the new version)"
            )
            await self.event("Warning", reasons.ARGO_CD_NOT_PAUSED, msg)
            return ArgoCDRollbackStatus(application=app_name, auto_sync_paused=False, message=msg)
        # Other API errors fail the pass (retried): the rollout undo waits until we know.
        if app is None:  # not found: no such Application, or no Argo CD in this cluster
            return None
        ns = app["metadata"]["namespace"]
        dep_name = str((deployment.get("metadata") or {}).get("name"))
        refusal = argo_application_refusal(app, self.namespace, dep_name)
        if refusal is not None:
            await self.event("Warning", reasons.ARGO_CD_NOT_PAUSED, refusal)
            return ArgoCDRollbackStatus(
                application=app_name, namespace=ns, auto_sync_paused=False, message=refusal
            )
        me = f"{self.namespace}/{self.name}"
        automated = automated_flags(app)
        earlier = paused_by(app, me)
        if earlier is not None:  # this rollback paused it before a crash: as it was then
            automated, revision = earlier
        elif automated is None:
            return ArgoCDRollbackStatus(
                application=app_name,
                namespace=ns,
                auto_sync_paused=False,
                message="automated sync was already off",
            )
        else:
            revision = synced_revision(app)
            try:
                await argocd.switch_off_auto_sync(app, pause_record(me, automated, revision))
            except Exception as exc:  # Forbidden, or the Application changed under us
                msg = (
                    f"could not switch off automated sync of Argo CD application "
                    f"{ns}/{app_name}: "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                    "undoing the rollout anyway"
                )
                await self.event("Warning", reasons.ARGO_CD_NOT_PAUSED, msg)
                return ArgoCDRollbackStatus(
                    application=app_name, namespace=ns, auto_sync_paused=False, message=msg
                )
        paused = ArgoCDRollbackStatus(
            application=app_name,
            namespace=ns,
            auto_sync_paused=True,
            automated=automated,
            paused_revision=revision,
        )
        ended = ""
        if operation_pending(app):
            paused.operation_terminated = await self._end_operation(app)
            ended = (
                "; its sync operation under way was ended"
                if paused.operation_terminated
                else "; its sync operation under way could not be ended (end it: argocd app "
                f"terminate-op {ns}/{app_name})"
            )
        paused.message = paused_message(paused, resume, dep_name) + ended
        await self.event("Warning", reasons.ARGO_CD_AUTO_SYNC_PAUSED, paused.message)
        return paused

    async def _end_operation(self, app: dict[str, Any]) -> bool:
        """Terminate the Application's sync operation and wait until Argo CD has ended it.

        Once is not enough: the application controller writes the operation's state from the
        copy it read when its pass began, and a pass under way overwrote `Terminating` with
        `Running` (seen while the migration's own status writes made Argo CD refresh often).
        So it is asked again whenever the operation shows up as pending.
        """
        meta = app["metadata"]
        deadline = time.monotonic() + OPERATION_END_TIMEOUT
        current: dict[str, Any] | None = app
        while current is not None and operation_unfinished(current):
            if time.monotonic() > deadline:
                return False
            if operation_pending(current):
                with contextlib.suppress(Conflict):  # it moved on in between: look again
                    await argocd.terminate_operation(current)
            await asyncio.sleep(0.5)
            current = await argocd.read_application(meta["namespace"], meta["name"])
        return True

    async def read_argo_application(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await argocd.read_application(namespace, name)

    async def resume_argo_auto_sync(self, app: dict[str, Any], automated: dict[str, bool]) -> None:
        await argocd.switch_on_auto_sync(app, automated)

    async def start_job(self, job: dict[str, Any]) -> None:
        await kube.create_job(job)

    def run_name(self, body: dict[str, Any]) -> tuple[str, str]:
        meta = body["metadata"]
        return f"{meta['namespace']}/{meta['name']}", str(meta.get("uid") or "")

    async def save_report(self, body: dict[str, Any], markdown: str) -> str:
        """The `<name>-report` ConfigMap, owned by the migration; replaced when it is there."""
        config_map = build_report_config_map(body, markdown)
        try:
            await kube.put_config_map(config_map, body["metadata"]["uid"])
        except kube.Conflict:  # replaced by someone between our read and write: once more
            await kube.put_config_map(config_map, body["metadata"]["uid"])
        return f"configmap {self.namespace}/{config_map['metadata']['name']}"

    async def confirm_rollout(self, step: str, image: str | None) -> None:
        return None  # the rollout itself is watched here

    async def job_state(self, name: str, owner_uid: str) -> JobState | None:
        """A Job with the right name is ours only if it names our uid in its ownerReferences:
        another migration's (or a deleted migration's, or a person's) Job of that name is
        reported as foreign and never read as the step's outcome."""
        try:
            job = await kube.read_job(self.namespace, name)
        except NotFound:
            return None
        owners = job["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid for o in owners):
            foreign = ", ".join(
                f"{o.get('kind')} {o.get('name')} uid {o.get('uid')}" for o in owners
            )
            return JobState(name=name, foreign_owner=foreign or "no owner")
        jstatus = job.get("status") or {}
        conditions = {c.get("type"): c for c in jstatus.get("conditions") or []}
        complete = conditions.get("Complete", {}).get("status") == "True"
        failed = conditions.get("Failed", {}).get("status") == "True"
        message = None
        if failed:
            message = await self._last_termination_message(name) or conditions["Failed"].get(
                "message"
            )
        return JobState(
            name=name,
            active=int(jstatus.get("active") or 0),
            succeeded=complete,
            failed=failed,
            message=message,
        )

    async def active_jobs(self, owner_uid: str) -> list[ActiveJob]:
        """By the migration's label, then by owner uid: not finished, or being deleted."""
        out: list[ActiveJob] = []
        for job in await kube.list_jobs(self.namespace, job_selector(self.name)):
            meta = job["metadata"]
            if not any(o.get("uid") == owner_uid for o in meta.get("ownerReferences") or []):
                continue
            jstatus = job.get("status") or {}
            finished = any(
                c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                for c in jstatus.get("conditions") or []
            )
            deleting = meta.get("deletionTimestamp") is not None
            active = int(jstatus.get("active") or 0)
            if finished and not deleting and active == 0:
                continue
            pods = (
                len(await kube.list_job_pods(self.namespace, meta["name"])) if deleting else active
            )
            out.append(ActiveJob(name=meta["name"], uid=meta["uid"], deleting=deleting, pods=pods))
        return out

    async def stop_job(self, job: ActiveJob) -> None:
        await kube.delete_job_foreground(self.namespace, job.name, job.uid)

    async def _last_termination_message(self, name: str) -> str | None:
        pods = await kube.list_job_pods(self.namespace, name)
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        for pod in reversed(pods):
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                term = (cs.get("state") or {}).get("terminated")
                if term and term.get("message"):
                    return str(term["message"]).strip()[-800:]
        return None
