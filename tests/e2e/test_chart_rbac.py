"""The chart's RBAC: as rendered, as derived from the code, and as the API server answers.

- Rendered: no wildcards, no resourceNames, the objects each install mode needs.
- From the code: every Kubernetes API call in `dbmigrate.kube.cluster`, plus what kopf itself
  does, is exactly what the chart grants — a verb the code never uses is not granted, and a new
  call without its grant fails here before it fails in a cluster.
- For real: the chart is installed (namespaced and cluster-wide), a token is minted for its
  ServiceAccount, and with a kubeconfig holding only that token `kubectl auth can-i` answers yes
  to every verb the operator needs and no to what it must not do.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from dbmigrate.kube import argocd as kube_argocd
from dbmigrate.kube import cluster as kube_cluster
from dbmigrate_dev.cluster_client import Cluster
from tests.e2e.helpers import (
    CHART_VARIATIONS,
    INSTALL_MODES,
    Installed,
    render_chart,
    substitute_namespace,
)

# A cold helm build (the first run on a machine without hack/bootstrap.sh) takes minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

render = render_chart
_substitute = substitute_namespace

# --- RBAC as rendered ---------------------------------------------------------------------------

ALLOWED_VERBS = {"get", "list", "watch", "patch", "update", "create", "delete"}


@pytest.mark.parametrize("values", CHART_VARIATIONS)
def test_rbac_rules_are_enumerated(helm: str, values: dict[str, Any]) -> None:
    docs = render(helm, _substitute(values, "team-a"))
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{role['metadata']['name']}: wildcard in {key}"
            assert set(rule["verbs"]) <= ALLOWED_VERBS, rule
            assert "resourceNames" not in rule


@pytest.mark.parametrize(
    ("values", "kinds"),
    [
        pytest.param({}, {"ClusterRole": 1, "ClusterRoleBinding": 1}, id="cluster-wide"),
        pytest.param(
            {"watchNamespaces": ["a", "b"]},
            {"Role": 2, "RoleBinding": 2, "ClusterRole": 1, "ClusterRoleBinding": 1},
            id="namespaced",
        ),
        pytest.param(
            {"argocd": {"enabled": True, "namespaces": ["argocd"]}},
            {"ClusterRole": 1, "ClusterRoleBinding": 1, "Role": 1, "RoleBinding": 1},
            id="argocd",
        ),
        pytest.param({"rbac": {"create": False}}, {}, id="rbac-off"),
    ],
)
def test_rbac_objects(helm: str, values: dict[str, Any], kinds: dict[str, int]) -> None:
    docs = render(helm, values)
    rbac = [d["kind"] for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io/")]
    assert {k: rbac.count(k) for k in set(rbac)} == kinds
    for doc in docs:
        if doc["kind"] == "ClusterRole" and values.get("watchNamespaces"):
            resources = {r for rule in doc["rules"] for r in rule["resources"]}
            assert resources <= {"namespaces", "customresourcedefinitions"}, (
                "a namespaced install grants nothing namespaced cluster-wide"
            )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({}, [], id="single-replica-no-peering"),
        pytest.param({"replicaCount": 2}, [("ClusterKopfPeering", None)], id="cluster-wide"),
        pytest.param(
            {"replicaCount": 2, "watchNamespaces": ["a", "b"]},
            [("KopfPeering", "a"), ("KopfPeering", "b")],
            id="namespaced",
        ),
        pytest.param(
            {"replicaCount": 3, "peering": {"createObjects": False}}, [], id="objects-not-created"
        ),
    ],
)
def test_peering_objects(
    helm: str, values: dict[str, Any], expected: list[tuple[str, str | None]]
) -> None:
    docs = [d for d in render(helm, values) if d["apiVersion"] == "kopf.dev/v1"]
    assert [(d["kind"], d["metadata"].get("namespace")) for d in docs] == expected
    assert all(d["metadata"]["name"] == "dbmigrate" for d in docs)


# --- RBAC from the code: what the operator calls is what the chart grants ----------------------

# Each Kubernetes client method `dbmigrate.kube.cluster` and `dbmigrate.kube.argocd` call (with,
# for custom objects, the API group constant it passes) and the (group, resource, verb) it needs.
CALLS: dict[tuple[str, str | None], tuple[str, str, str]] = {
    ("read_namespaced_secret", None): ("", "secrets", "get"),
    ("read_namespaced_config_map", None): ("", "configmaps", "get"),
    ("create_namespaced_config_map", None): ("", "configmaps", "create"),
    ("replace_namespaced_config_map", None): ("", "configmaps", "update"),
    ("read_namespaced_deployment", None): ("apps", "deployments", "get"),
    ("patch_namespaced_deployment", None): ("apps", "deployments", "patch"),
    ("list_namespaced_replica_set", None): ("apps", "replicasets", "list"),
    ("create_namespaced_job", None): ("batch", "jobs", "create"),
    ("read_namespaced_job", None): ("batch", "jobs", "get"),
    ("list_namespaced_job", None): ("batch", "jobs", "list"),
    ("delete_namespaced_job", None): ("batch", "jobs", "delete"),
    ("list_namespaced_pod", None): ("", "pods", "list"),
    ("create_namespaced_event", None): ("", "events", "create"),
    ("get_namespaced_custom_object", "GROUP"): ("dbmigrate.io", "databasemigrations", "get"),
    ("patch_namespaced_custom_object_status", "GROUP"): (
        "dbmigrate.io",
        "databasemigrations/status",
        "patch",
    ),
    ("get_namespaced_custom_object", "ARGO_GROUP"): ("argoproj.io", "applications", "get"),
    ("patch_namespaced_custom_object", "ARGO_GROUP"): ("argoproj.io", "applications", "patch"),
}
# kopf's own calls in a watched namespace: it lists and watches the resource, patches its
# annotations and finalizers, and posts (core v1) events.
KOPF_NAMESPACED = {
    ("dbmigrate.io", "databasemigrations", "list"),
    ("dbmigrate.io", "databasemigrations", "watch"),
    ("dbmigrate.io", "databasemigrations", "patch"),
    ("", "events", "create"),
}
API_METHOD = re.compile(r"^(read|list|create|delete|patch|replace|get)_namespaced_\w+$")


def _calls_in_code() -> set[tuple[str, str | None]]:
    """The client methods the operator's Kubernetes modules (`dbmigrate.kube.cluster`,
    `dbmigrate.kube.argocd`) call, from their syntax trees: `api.method(...)` or
    `_call(api.method, ...)`, with the Name of the first argument after it (the group)."""
    found: set[tuple[str, str | None]] = set()
    for module in (kube_cluster, kube_argocd):
        found |= _calls_in(ast.parse(Path(module.__file__).read_text()))
    return found


def _calls_in(tree: ast.Module) -> set[tuple[str, str | None]]:
    found: set[tuple[str, str | None]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and API_METHOD.match(node.func.attr):
            method, rest = node.func.attr, node.args
        elif (
            node.args
            and isinstance(node.args[0], ast.Attribute)
            and API_METHOD.match(node.args[0].attr)
        ):
            method, rest = node.args[0].attr, node.args[1:]
        else:
            continue
        group = rest[0].id if "custom_object" in method and isinstance(rest[0], ast.Name) else None
        found.add((method, group))
    return found


def _granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_every_api_call_of_the_code_is_known() -> None:
    in_code = _calls_in_code()
    assert in_code, "found no API calls: the parser is broken"
    assert in_code - set(CALLS) == set(), "new API calls: add them to CALLS and to the chart"
    assert set(CALLS) - in_code == set(), "CALLS lists calls the code no longer makes"


def test_the_chart_grants_exactly_what_the_code_calls(helm: str) -> None:
    docs = render(helm, {"watchNamespaces": ["team-a"], "argocd": {"enabled": True}})
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    namespaced = _granted(next(r for n, r in roles.items() if not n.endswith("-argocd")))
    argocd = _granted(next(r for n, r in roles.items() if n.endswith("-argocd")))
    needed = set(CALLS.values()) | KOPF_NAMESPACED
    kopf_peering = {g for g in namespaced if g[1] == "kopfpeerings"}
    assert namespaced - kopf_peering == {n for n in needed if n[0] != "argoproj.io"}
    assert argocd == {n for n in needed if n[0] == "argoproj.io"}


# --- RBAC, for real: install, mint a token, ask the API server -----------------------------------


BOTH = frozenset(INSTALL_MODES)
NEVER: frozenset[str] = frozenset()
CLUSTER_WIDE = frozenset({"cluster-wide"})
NAMESPACED = frozenset({"namespaced"})


def _kubectl_name(group: str, resource: str) -> str:
    """How `kubectl auth can-i` names it: resource.group, then /subresource."""
    base, slash, sub = resource.partition("/")
    return f"{base}.{group}{slash}{sub}" if group else resource


# Derived from the code (above): every verb the operator needs, in a watched namespace.
OPERATOR_NEEDS = sorted(
    (verb, _kubectl_name(group, resource))
    for group, resource, verb in set(CALLS.values()) | KOPF_NAMESPACED
    if group != "argoproj.io"
)
OPERATOR_MUST_NOT = [
    ("list", "secrets"),
    ("watch", "secrets"),
    ("create", "secrets"),
    ("delete", "secrets"),
    ("update", "secrets"),
    ("list", "configmaps"),
    ("delete", "configmaps"),
    ("patch", "configmaps"),
    ("create", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("update", "deployments.apps"),
    # granted once, never used (issue: RBAC verbs the code never calls)
    ("list", "deployments.apps"),
    ("watch", "deployments.apps"),
    ("watch", "jobs.batch"),
    ("get", "pods"),
    ("update", "databasemigrations.dbmigrate.io"),
    ("update", "databasemigrations.dbmigrate.io/status"),
    ("patch", "events"),
    ("create", "events.events.k8s.io"),
    ("create", "databasemigrations.dbmigrate.io"),
    ("delete", "databasemigrations.dbmigrate.io"),
    ("update", "jobs.batch"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods/exec"),
    ("create", "serviceaccounts/token"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("delete", "replicasets.apps"),
    ("delete", "events"),
]

CAN_I = [
    *(pytest.param(verb, res, "ns", BOTH, id=f"ns-{verb}-{res}") for verb, res in OPERATOR_NEEDS),
    *(
        pytest.param(verb, res, "other", CLUSTER_WIDE, id=f"other-{verb}-{res}")
        for verb, res in OPERATOR_NEEDS
    ),
    *(
        pytest.param(verb, res, where, NEVER, id=f"{where}-denied-{verb}-{res}")
        for verb, res in OPERATOR_MUST_NOT
        for where in ("ns", "other")
    ),
    # kopf peering: per namespace when namespaced, one cluster object otherwise.
    *(
        pytest.param(verb, "kopfpeerings.kopf.dev", "ns", NAMESPACED, id=f"ns-{verb}-kopfpeerings")
        for verb in ("get", "list", "watch", "patch", "create")
    ),
    *(
        pytest.param(
            verb,
            "clusterkopfpeerings.kopf.dev",
            "cluster",
            CLUSTER_WIDE,
            id=f"{verb}-clusterpeerings",
        )
        for verb in ("get", "list", "watch", "patch", "create")
    ),
    pytest.param(
        "delete", "kopfpeerings.kopf.dev", "ns", NEVER, id="ns-denied-delete-kopfpeerings"
    ),
    # kopf's discovery, read only.
    pytest.param("list", "namespaces", "cluster", BOTH, id="list-namespaces"),
    pytest.param("watch", "namespaces", "cluster", BOTH, id="watch-namespaces"),
    pytest.param(
        "list", "customresourcedefinitions.apiextensions.k8s.io", "cluster", BOTH, id="list-crds"
    ),
    pytest.param(
        "watch", "customresourcedefinitions.apiextensions.k8s.io", "cluster", BOTH, id="watch-crds"
    ),
    pytest.param("create", "namespaces", "cluster", NEVER, id="denied-create-namespaces"),
    pytest.param("delete", "namespaces", "cluster", NEVER, id="denied-delete-namespaces"),
    pytest.param("get", "nodes", "cluster", NEVER, id="denied-get-nodes"),
    pytest.param(
        "create",
        "customresourcedefinitions.apiextensions.k8s.io",
        "cluster",
        NEVER,
        id="denied-create-crds",
    ),
    pytest.param(
        "create", "clusterrolebindings.rbac.authorization.k8s.io", "cluster", NEVER, id="denied-crb"
    ),
    # Argo CD Applications, only in the listed namespace.
    *(
        pytest.param(verb, "applications.argoproj.io", "ns", BOTH, id=f"ns-{verb}-applications")
        for verb in ("get", "patch")
    ),
    *(
        pytest.param(
            verb, "applications.argoproj.io", where, NEVER, id=f"{where}-denied-{verb}-applications"
        )
        for verb, where in (
            ("delete", "ns"),
            ("list", "ns"),
            ("update", "ns"),
            ("create", "ns"),
            ("get", "other"),
            ("patch", "other"),
        )
    ),
]


@pytest.mark.parametrize(("verb", "resource", "where", "allowed_in"), CAN_I)
def test_serviceaccount_can_exactly_what_the_operator_needs(
    installed: Installed, verb: str, resource: str, where: str, allowed_in: frozenset[str]
) -> None:
    expected = installed.mode in allowed_in
    assert installed.can_i(verb, resource, where) is expected, (
        f"{installed.mode}: can-i {verb} {resource} ({where}) should be {expected}"
    )


def test_token_authenticates_as_the_serviceaccount(installed: Installed) -> None:
    who = json.loads(installed.operator.kubectl("auth", "whoami", "-o", "json").stdout)
    assert who["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{installed.namespace}:{installed.serviceaccount}"
    )


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        pytest.param(("get", "databasemigrations"), True, id="list-migrations"),
        pytest.param(("get", "replicasets,jobs,pods"), True, id="list-workloads"),
        pytest.param(("get", "deployments"), False, id="list-deployments-forbidden"),
        pytest.param(("get", "configmap", "kube-root-ca.crt"), True, id="get-configmap"),
        pytest.param(("get", "secrets"), False, id="list-secrets-forbidden"),
        pytest.param(("delete", "configmap", "kube-root-ca.crt"), False, id="delete-forbidden"),
        # (ConfigMaps may be created: the report a migration leaves; Secrets may not)
        pytest.param(
            ("create", "secret", "generic", "probe", "--from-literal=a=b"),
            False,
            id="create-forbidden",
        ),
    ],
)
def test_token_really_works_against_the_api(
    installed: Installed, args: tuple[str, ...], allowed: bool
) -> None:
    proc = installed.operator.kubectl(*args, "-n", installed.namespace, check=False)
    if allowed:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0
        assert "forbidden" in proc.stderr.lower()


def test_token_creates_and_deletes_a_job(installed: Installed, cluster: Cluster) -> None:
    """What a backfill step does with Jobs, done with the ServiceAccount's token alone."""
    name = f"probe-{installed.mode}"
    ns = ["-n", installed.namespace]
    image = "registry.example.com/probe:1"
    installed.operator.kubectl("create", "job", name, f"--image={image}", *ns)
    job = cluster.get("job", name, *ns)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == image
    installed.operator.kubectl("delete", "job", name, "--wait=false", *ns)
    left = cluster.kubectl("get", "job", name, *ns, "-o", "json", "--ignore-not-found").stdout
    assert not left.strip() or "deletionTimestamp" in json.loads(left)["metadata"]
