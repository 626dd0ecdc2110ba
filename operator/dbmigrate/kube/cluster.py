"""Kubernetes API calls the operator makes besides kopf's own watching.

Thin async wrappers (the official client, run in a worker thread) that return plain dicts and
raise the small set of exceptions below, so the reconciler can turn them into status reasons.
Secret values are returned to the caller and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from dbmigrate.api.models import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)
T = TypeVar("T")


class NotFound(Exception):
    """The object (or the key in it) does not exist."""


class Forbidden(Exception):
    """RBAC does not allow the call."""


class Conflict(Exception):
    """The object changed since the resourceVersion the write was based on (HTTP 409)."""


class Invalid(Exception):
    """The API server rejected the object as invalid (422): sending it again cannot help."""


def _api_message(exc: ApiException) -> str:
    """The API server's own message of a failed call (its Status body), else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or f"HTTP {exc.status}")


@functools.cache
def api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, the kubeconfig otherwise."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        # KUBECONFIG as it is now: the client's own default was read when it was imported.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.ApiClient()


SERVICEACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def current_namespace() -> str:
    """The namespace `kubectl` would use: the kubeconfig's current context's, in a pod its
    own, else `default`."""
    namespace = None
    try:
        _, active = config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG"))
        namespace = ((active or {}).get("context") or {}).get("namespace")
    except (config.ConfigException, OSError):
        try:
            with open(SERVICEACCOUNT_NAMESPACE, encoding="utf-8") as f:
                namespace = f.read().strip()
        except OSError:
            namespace = None
    return str(namespace or "default")


async def _read_json(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A read as the API server's JSON, not the client's models: building a V1Deployment and
    turning it back into a dict cost more CPU than anything else in a waiting migration's pass
    (hack/bench/fleet.py, profiled with 50 migrations waiting at a rollout gate)."""
    response = await _call(fn, *args, _preload_content=False, **kwargs)
    return json.loads(response.data)


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            raise NotFound(str(exc.reason)) from None
        if exc.status == 403:
            raise Forbidden(str(exc.reason)) from None
        raise


# --- Secrets and ConfigMaps --------------------------------------------------------------------


async def read_secret(namespace: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """The Secret's labels and its (base64) data; `secret_value` decodes one key."""
    try:
        secret = await _read_json(
            client.CoreV1Api(api_client()).read_namespaced_secret, name, namespace
        )
    except NotFound:
        raise NotFound(f"secret {name!r} not found in namespace {namespace!r}") from None
    return dict(secret["metadata"].get("labels") or {}), dict(secret.get("data") or {})


def secret_value(name: str, data: dict[str, str], key: str) -> str:
    if key not in data:
        raise NotFound(f"secret {name!r} has no key {key!r}")
    return base64.b64decode(data[key]).decode("utf-8").strip()


async def read_config_map_value(namespace: str, name: str, key: str) -> str:
    try:
        cm = await _read_json(
            client.CoreV1Api(api_client()).read_namespaced_config_map, name, namespace
        )
    except NotFound:
        raise NotFound(f"configmap {name!r} not found in namespace {namespace!r}") from None
    data = cm.get("data") or {}
    if key not in data:
        raise NotFound(f"configmap {name!r} has no key {key!r}")
    return str(data[key])


async def put_config_map(config_map: dict[str, Any], owner_uid: str) -> None:
    """Create the ConfigMap, or replace the one of that name if it is ours: owned by
    `owner_uid`, or labelled as made by dbmigrate for the same migration (an earlier
    DatabaseMigration of that name, not yet garbage-collected). Anyone else's is left alone
    (`Conflict`)."""
    api = client.CoreV1Api(api_client())
    meta = config_map["metadata"]
    ns, name = meta["namespace"], meta["name"]
    try:
        await _call(api.create_namespaced_config_map, ns, config_map)
        return
    except ApiException as exc:
        if exc.status != 409:
            raise
    current = await _read_json(api.read_namespaced_config_map, name, ns)
    cur_meta = current.get("metadata") or {}
    owned = any(o.get("uid") == owner_uid for o in cur_meta.get("ownerReferences") or [])
    labels = cur_meta.get("labels") or {}
    ours = all(labels.get(k) == v for k, v in (meta.get("labels") or {}).items())
    if not (owned or ours):
        raise Conflict(f"configmap {name!r} exists and is not this migration's: left alone")
    body = {**config_map, "metadata": {**meta, "resourceVersion": cur_meta["resourceVersion"]}}
    try:
        await _call(api.replace_namespaced_config_map, name, ns, body)
    except ApiException as exc:
        if exc.status == 409:  # changed between the read and the write: the caller retries
            raise Conflict(f"configmap {name!r} changed while it was replaced") from None
        raise


# --- Deployments ---------------------------------------------------------------------------------


async def read_deployment(namespace: str, name: str) -> dict[str, Any]:
    dep = await _read_json(
        client.AppsV1Api(api_client()).read_namespaced_deployment, name, namespace
    )
    return dict(dep)


async def list_replica_sets(namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
    label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    result = await _read_json(
        client.AppsV1Api(api_client()).list_namespaced_replica_set,
        namespace,
        label_selector=label_selector,
    )
    return [dict(rs) for rs in result["items"]]


async def json_patch_deployment(namespace: str, name: str, patch: list[dict[str, Any]]) -> None:
    api = client.AppsV1Api(api_client())

    def send() -> None:
        # The generated client picks the patch content type from the body: a list is a JSON patch.
        api.patch_namespaced_deployment(name, namespace, patch)

    await _call(send)


# --- Jobs and pods -------------------------------------------------------------------------------


async def create_job(job: dict[str, Any]) -> None:
    """Create the Job; one of that name already there is fine (an earlier attempt created it,
    or not: the caller checks whose it is). Raises `Invalid` when the API server rejects it."""
    ns = job["metadata"]["namespace"]
    try:
        await _call(client.BatchV1Api(api_client()).create_namespaced_job, ns, job)
    except ApiException as exc:
        if exc.status == 422:
            raise Invalid(_api_message(exc)) from None
        if exc.status != 409:
            raise


async def list_jobs(namespace: str, label_selector: str) -> list[dict[str, Any]]:
    result = await _read_json(
        client.BatchV1Api(api_client()).list_namespaced_job,
        namespace,
        label_selector=label_selector,
    )
    return [dict(j) for j in result["items"]]


async def delete_job_foreground(namespace: str, name: str, uid: str) -> None:
    """Delete the Job with foreground propagation: it stays (with a deletionTimestamp) until
    the garbage collector has deleted its pods. Only the Job of that uid: one re-created under
    the name meanwhile is left alone. Gone already: fine."""
    options = client.V1DeleteOptions(
        propagation_policy="Foreground", preconditions=client.V1Preconditions(uid=uid)
    )
    try:
        await _call(
            client.BatchV1Api(api_client()).delete_namespaced_job, name, namespace, body=options
        )
    except NotFound:
        return
    except ApiException as exc:
        if exc.status != 409:  # 409: the uid precondition failed, it is another Job now
            raise


async def read_job(namespace: str, name: str) -> dict[str, Any]:
    job = await _read_json(client.BatchV1Api(api_client()).read_namespaced_job, name, namespace)
    return dict(job)


async def list_job_pods(namespace: str, job_name: str) -> list[dict[str, Any]]:
    result = await _read_json(
        client.CoreV1Api(api_client()).list_namespaced_pod,
        namespace,
        label_selector=f"batch.kubernetes.io/job-name={job_name}",
    )
    return [dict(p) for p in result["items"]]


# --- the DatabaseMigration itself ----------------------------------------------------------------


async def read_migration(namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = await _call(
        client.CustomObjectsApi(api_client()).get_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
    )
    return obj


async def patch_migration_status(
    namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
) -> dict[str, Any]:
    """Merge-patch .status (status subresource); with `resource_version`, only if the object is
    still at that version (else `Conflict`). Returns the object as written."""
    body: dict[str, Any] = {"status": status}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        obj: dict[str, Any] = await _call(
            client.CustomObjectsApi(api_client()).patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
        )
    except ApiException as exc:
        if exc.status == 409:
            what = f"{namespace}/{name} changed since resourceVersion {resource_version}"
            raise Conflict(what) from None
        raise
    return obj


async def post_event(
    body: dict[str, Any], type_: str, reason: str, message: str, component: str = "dbmigrate"
) -> None:
    """An Event on the DatabaseMigration (shown by `kubectl describe`)."""
    meta = body["metadata"]
    now = datetime.now(UTC)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
        involved_object=client.V1ObjectReference(
            api_version=f"{GROUP}/{VERSION}",
            kind="DatabaseMigration",
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid"),
        ),
        reason=reason,
        message=message[:1024],
        type=type_,
        first_timestamp=now,
        last_timestamp=now,
        count=1,
        source=client.V1EventSource(component=component),
        reporting_component=component,
        reporting_instance=component,
    )
    try:
        await _call(
            client.CoreV1Api(api_client()).create_namespaced_event, meta["namespace"], event
        )
    except (ApiException, NotFound, Forbidden) as exc:  # events are best effort
        log.warning("could not post event %s: %s", reason, exc)
