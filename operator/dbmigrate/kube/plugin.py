"""The Kubernetes calls of `kubectl dbmigrate`, made with the user's kubeconfig and RBAC.

Synchronous (a command does one thing at a time): list and patch DatabaseMigrations, watch one
of them, find a Job's pods and read or follow a container's log. Errors are the small set of
`kube.cluster` (NotFound, Forbidden) plus `ApiError` carrying the API server's message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NoReturn

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from dbmigrate.api.models import GROUP, PLURAL, VERSION
from dbmigrate.kube.cluster import Forbidden, NotFound, _api_message, api_client

# Who changed the object, as the API server records it (managedFields): the checklist shows
# it next to the approval.
FIELD_MANAGER = "kubectl-dbmigrate"
# A watch is re-opened after this long (the API server ends watches on its own too).
WATCH_SECONDS = 300


class ApiError(Exception):
    """Any other refusal by the API server (its message)."""


def _raise(exc: ApiException, what: str) -> NoReturn:
    if exc.status == 404:
        raise NotFound(f"{what} not found") from None
    if exc.status == 403:
        raise Forbidden(_api_message(exc)) from None
    raise ApiError(_api_message(exc)) from None


def _custom() -> Any:
    # Any: the generated client's annotations say `object` for custom objects
    return client.CustomObjectsApi(api_client())


def _core() -> Any:
    # Any: with _preload_content=False the calls return the HTTP response, not the models
    return client.CoreV1Api(api_client())


def get_migration(namespace: str, name: str) -> dict[str, Any]:
    try:
        obj: dict[str, Any] = _custom().get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
    except ApiException as exc:
        _raise(exc, f"DatabaseMigration {name!r} in namespace {namespace!r}")
    return obj


def list_migrations(namespace: str | None) -> list[dict[str, Any]]:
    """The namespace's migrations, or every namespace's (None), sorted by namespace and name."""
    try:
        if namespace is None:
            got = _custom().list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            got = _custom().list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    except ApiException as exc:
        _raise(exc, "DatabaseMigrations")
    items: list[dict[str, Any]] = list(got.get("items") or [])
    return sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))


def merge_patch_migration(namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of the object (metadata or spec): what `kubectl patch --type merge`
    sends."""
    try:
        obj: dict[str, Any] = _custom().patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            patch,
            field_manager=FIELD_MANAGER,
            _content_type="application/merge-patch+json",
        )
    except ApiException as exc:
        _raise(exc, f"DatabaseMigration {name!r} in namespace {namespace!r}")
    return obj


def watch_migration(namespace: str, name: str) -> Iterator[dict[str, Any] | None]:
    """The object now, then again at every change (the watch API, re-opened when it ends);
    None when it was deleted."""
    api = _custom()
    selector = f"metadata.name={name}"
    while True:
        try:
            listed = api.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, field_selector=selector
            )
        except ApiException as exc:
            _raise(exc, "DatabaseMigrations")
        items = listed.get("items") or []
        yield items[0] if items else None
        version = listed["metadata"]["resourceVersion"]
        w = watch.Watch()
        try:
            for event in w.stream(
                api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                field_selector=selector,
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
            ):
                if event["type"] == "ERROR":
                    break  # e.g. 410 Gone: list again
                yield None if event["type"] == "DELETED" else event["object"]
        except ApiException as exc:
            if exc.status != 410:
                _raise(exc, "DatabaseMigrations")
        finally:
            w.stop()


def job_pods(namespace: str, job: str) -> list[dict[str, Any]]:
    """The Job's pods, oldest first."""
    core = _core()
    try:
        got = core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={job}", _preload_content=False
        )
    except ApiException as exc:
        _raise(exc, f"the pods of Job {job!r}")
    pods: list[dict[str, Any]] = json.loads(got.data)["items"]
    return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")


def get_pod(namespace: str, name: str) -> dict[str, Any]:
    core = _core()
    try:
        got = core.read_namespaced_pod(name, namespace, _preload_content=False)
    except ApiException as exc:
        _raise(exc, f"pod {name!r}")
    pod: dict[str, Any] = json.loads(got.data)
    return pod


def pod_log(namespace: str, pod: str, container: str, *, follow: bool) -> Iterator[bytes]:
    """The container's log through the API server (pods/log), as it comes."""
    core = _core()
    try:
        response = core.read_namespaced_pod_log(
            pod, namespace, container=container, follow=follow, _preload_content=False
        )
    except ApiException as exc:
        _raise(exc, f"the log of pod {pod!r}")
    try:
        yield from response.stream(4096, decode_content=True)
    finally:
        response.release_conn()
