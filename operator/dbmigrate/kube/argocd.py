"""Argo CD Applications, as the operator reads and changes them around a rollback.

The same writes the `argocd` CLI's server makes: automated sync off (`argocd app set
--sync-policy none`) and on again (`--sync-policy automated ...`), and a running sync operation
ended (`argocd app terminate-op`, which sets `status.operationState.phase: Terminating` for the
application controller to act on; Argo CD 3 retries a failed automated sync, and a retry would
apply the rolled-back revision again).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from dbmigrate.core.argocd import PAUSE_ANNOTATION
from dbmigrate.kube.cluster import Conflict, NotFound, _call, _read_json, api_client

ARGO_GROUP, ARGO_VERSION, ARGO_PLURAL = "argoproj.io", "v1alpha1", "applications"
ARGO_TRACKING_LABEL = "app.kubernetes.io/instance"
ARGO_TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"


def argo_application_of(deployment: dict[str, Any]) -> tuple[str | None, str]:
    """(application name, namespace hint) from Argo CD's tracking annotation or label."""
    meta = deployment.get("metadata", {})
    annotation = (meta.get("annotations") or {}).get(ARGO_TRACKING_ANNOTATION)
    if annotation:
        # "<app>:<group>/<kind>:<namespace>/<name>"; app may be "<namespace>_<app>"
        app = annotation.split(":", 1)[0]
        if "_" in app:
            ns, name = app.split("_", 1)
            return name, ns
        return app, ""
    label = (meta.get("labels") or {}).get(ARGO_TRACKING_LABEL)
    return (label, "") if label else (None, "")


def _api() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


async def read_application(namespace: str, name: str) -> dict[str, Any] | None:
    """The Application, or None when there is none of that name."""
    try:
        obj: dict[str, Any] = await _read_json(
            _api().get_namespaced_custom_object,
            ARGO_GROUP,
            ARGO_VERSION,
            namespace,
            ARGO_PLURAL,
            name,
        )
        return obj
    except NotFound:
        return None


async def find_application(name: str, namespaces: list[str]) -> dict[str, Any] | None:
    for ns in namespaces:
        app = await read_application(ns, name)
        if app is not None:
            return app
    return None


async def _patch(app: dict[str, Any], body: Any) -> None:
    meta = app["metadata"]

    # A list is a JSON patch, a dict a merge patch (in which null deletes a key). Said
    # explicitly: for custom objects the client sends any body as a merge patch.
    content_type = (
        "application/json-patch+json" if isinstance(body, list) else "application/merge-patch+json"
    )

    def send() -> None:
        _api().patch_namespaced_custom_object(
            ARGO_GROUP,
            ARGO_VERSION,
            meta["namespace"],
            ARGO_PLURAL,
            meta["name"],
            body,
            _content_type=content_type,
        )

    try:
        await _call(send)
    except ApiException as exc:
        # 409: the resourceVersion moved on; 422: a JSON patch's `test` did not hold.
        if exc.status in (409, 422):
            raise Conflict(str(exc.reason)) from None
        raise


async def switch_off_auto_sync(app: dict[str, Any], pause_record: str) -> None:
    """Remove spec.syncPolicy.automated (what `argocd app set --sync-policy none` does) and, in
    the same write, leave `pause_record` (who paused it, what to put back) in an annotation:
    an operator that dies before it records the pause in its own status finds it there."""
    await _patch(
        app,
        {
            "metadata": {"annotations": {PAUSE_ANNOTATION: pause_record}},
            "spec": {"syncPolicy": {"automated": None}},
        },
    )


async def switch_on_auto_sync(app: dict[str, Any], automated: dict[str, bool]) -> None:
    """Put spec.syncPolicy.automated back and drop the pause record, unless the Application
    changed since it was read (`Conflict`): look again, somebody may have decided meanwhile."""
    version = app["metadata"]["resourceVersion"]
    await _patch(
        app,
        {
            "metadata": {"resourceVersion": version, "annotations": {PAUSE_ANNOTATION: None}},
            "spec": {"syncPolicy": {"automated": dict(automated)}},
        },
    )


async def terminate_operation(app: dict[str, Any]) -> None:
    """End the sync operation under way (`argocd app terminate-op`); `Conflict` when it is not
    the one that was read any more (it finished, or another started)."""
    phase = app["status"]["operationState"]["phase"]
    path = "/status/operationState/phase"
    await _patch(
        app,
        [
            {"op": "test", "path": "/operation", "value": app["operation"]},
            {"op": "test", "path": path, "value": phase},
            {"op": "replace", "path": path, "value": "Terminating"},
        ],
    )
