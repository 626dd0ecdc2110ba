"""`core.rollout`: the `kubectl rollout status` rule and the `kubectl rollout undo` patch.

Aspects: each clause of the completeness rule; ProgressDeadlineExceeded as failure; the undo
picks the recorded revision, strips pod-template-hash, keeps the controller's annotations,
refuses a paused Deployment, and is a no-op when the template already matches.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dbmigrate.core.argocd import argo_application_refusal
from dbmigrate.core.rollout import (
    Revision,
    plan_rollout_undo,
    revision_before_version,
    revision_history,
    rollout_state,
)


def deployment(
    *,
    generation: int = 2,
    observed: int = 2,
    replicas: int = 3,
    updated: int = 3,
    current: int = 3,
    available: int = 3,
    deadline: bool = False,
    image: str = "app:v2",
    paused: bool = False,
) -> dict[str, Any]:
    conditions = []
    if deadline:
        conditions.append(
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        )
    return {
        "metadata": {
            "name": "app",
            "uid": "dep-uid",
            "generation": generation,
            "annotations": {"deployment.kubernetes.io/revision": "2", "team": "shop"},
        },
        "spec": {
            "replicas": replicas,
            "paused": paused,
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
        "status": {
            "observedGeneration": observed,
            "replicas": current,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": conditions,
        },
    }


@pytest.mark.parametrize(
    ("kwargs", "complete", "failed", "words"),
    [
        pytest.param({}, True, False, "successfully rolled out", id="complete"),
        pytest.param({"observed": 1}, False, False, "spec update", id="generation-not-observed"),
        pytest.param({"updated": 1}, False, False, "1 out of 3 new", id="not-all-updated"),
        pytest.param({"current": 4}, False, False, "1 old replicas", id="old-replicas-remain"),
        pytest.param({"available": 2}, False, False, "2 of 3 updated", id="not-all-available"),
        pytest.param({"deadline": True}, False, True, "progress deadline", id="deadline"),
        pytest.param(
            {"replicas": 0, "updated": 0, "current": 0, "available": 0},
            True,
            False,
            "successfully",
            id="scaled-to-zero",
        ),
    ],
)
def test_rollout_state(kwargs: dict[str, Any], complete: bool, failed: bool, words: str) -> None:
    state = rollout_state(deployment(**kwargs))
    assert (state.complete, state.failed) == (complete, failed)
    assert words in state.message
    assert state.revision == "2"
    assert state.images == ("app:v2",)


def replica_set(revision: str, image: str, owner: str = "dep-uid") -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"app-{revision}",
            "annotations": {
                "deployment.kubernetes.io/revision": revision,
                "deployment.kubernetes.io/desired-replicas": "3",
                "team": "shop",
                "changed-by": f"release-{revision}",
            },
            "ownerReferences": [{"uid": owner, "kind": "Deployment"}],
        },
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "app", "pod-template-hash": f"h{revision}"}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            }
        },
    }


def undone_again(rs: dict[str, Any], *earlier: str) -> dict[str, Any]:
    """A ReplicaSet the controller used again for an undo: newest revision, the old ones in
    its revision history."""
    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] = ",".join(earlier)
    return rs


def test_revision_history_is_newest_first_and_only_the_deployments_own() -> None:
    sets = [
        replica_set("2", "app:v3"),
        replica_set("10", "app:v3"),
        undone_again(replica_set("9", "app:v2"), "1"),
        replica_set("11", "app:v9", owner="other-uid"),
        replica_set("", "app:v0"),
    ]
    history = revision_history(deployment(), sets)
    assert history == (
        Revision("10", ("app:v3",)),
        Revision("9", ("app:v2",)),
        Revision("2", ("app:v3",)),
    )
    assert revision_before_version(history, "app:v3") == Revision("9", ("app:v2",))
    assert revision_before_version(history, "app:v2") == Revision("10", ("app:v3",))
    assert revision_before_version(history[:1], "app:v3") is None


def test_undo_patches_template_and_annotations_like_kubectl() -> None:
    plan = plan_rollout_undo(
        deployment(), [replica_set("1", "app:v1"), replica_set("2", "app:v2")], "1"
    )
    assert not plan.error
    assert plan.patch is not None
    template = plan.patch[0]["value"]
    assert template["spec"]["containers"][0]["image"] == "app:v1"
    assert "pod-template-hash" not in template["metadata"]["labels"]
    annotations = plan.patch[1]["value"]
    # the Deployment's own revision bookkeeping is kept, the revision's other annotations copied
    assert annotations["deployment.kubernetes.io/revision"] == "2"
    assert annotations["changed-by"] == "release-1"
    assert "deployment.kubernetes.io/desired-replicas" not in annotations


@pytest.mark.parametrize(
    ("dep", "sets", "revision", "error", "words"),
    [
        pytest.param(
            deployment(image="app:v1"),
            [replica_set("1", "app:v1")],
            "1",
            False,
            "already has the template",
            id="already-there-is-noop",
        ),
        pytest.param(
            deployment(image="app:v1"),
            [undone_again(replica_set("3", "app:v1"), "1"), replica_set("2", "app:v2")],
            "1",
            False,
            "already has the template",
            id="undone-before-a-crash-is-noop",
        ),
        pytest.param(
            deployment(paused=True),
            [replica_set("1", "app:v1")],
            "1",
            True,
            "paused",
            id="paused-refused",
        ),
        pytest.param(
            deployment(),
            [replica_set("1", "app:v1")],
            "7",
            True,
            "revision 7",
            id="unknown",
        ),
        pytest.param(
            deployment(),
            [replica_set("1", "app:v1", owner="other")],
            "1",
            True,
            "not found",
            id="foreign-replicaset-ignored",
        ),
    ],
)
def test_undo_edge_cases(
    dep: dict[str, Any], sets: list[dict[str, Any]], revision: str, error: bool, words: str
) -> None:
    before = copy.deepcopy(dep)
    plan = plan_rollout_undo(dep, sets, revision)
    assert plan.patch is None
    assert plan.error == error
    assert words in plan.message
    assert dep == before


def argo_app(destination: str | None, resources: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "shop", "namespace": "argocd"},
        "spec": {"destination": {"namespace": destination} if destination else {}},
        "status": {"resources": resources},
    }


DEPLOYMENT = {"group": "apps", "kind": "Deployment", "namespace": "shop", "name": "api"}


@pytest.mark.parametrize(
    ("app", "refused"),
    [
        pytest.param(argo_app("shop", [DEPLOYMENT]), None, id="its-own-app"),
        pytest.param(
            argo_app("shop", [{**DEPLOYMENT, "namespace": "team-b"}]),
            "does not manage",
            id="resource-in-another-namespace",
        ),
        pytest.param(argo_app("team-b", [DEPLOYMENT]), "deploys to namespace 'team-b'", id="b"),
        pytest.param(argo_app(None, [DEPLOYMENT]), "deploys to namespace '(none)'", id="none"),
        pytest.param(argo_app("shop", []), "does not manage", id="not-managing-it"),
        pytest.param(
            argo_app("shop", [{**DEPLOYMENT, "name": "worker"}]), "does not manage", id="other"
        ),
        pytest.param(
            argo_app("shop", [{**DEPLOYMENT, "kind": "StatefulSet"}]), "does not manage", id="kind"
        ),
    ],
)
def test_only_the_application_managing_the_target_may_be_paused(
    app: dict[str, Any], refused: str | None
) -> None:
    why = argo_application_refusal(app, "shop", "api")
    if refused is None:
        assert why is None
    else:
        assert why is not None
        assert refused in why
