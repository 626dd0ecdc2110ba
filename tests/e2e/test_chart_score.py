"""kube-score (built from the Go module proxy by hack/lib/build-kube-score.sh) on the rendered
chart, for every values variation: no check fails but the few the chart departs from on
purpose, each with its reason below. Optional checks we meet are switched on too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.helpers import CHART_VARIATIONS, ROOT, render_chart, substitute_namespace

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BUILD = ROOT / "hack" / "lib" / "build-kube-score.sh"
OPTIONAL = ("container-seccomp-profile",)

# (check id, what kube-score says) -> why the chart does it anyway.
ACCEPTED = {
    ("container-image-pull-policy", "ImagePullPolicy is not set to Always"): (
        "the image is pinned by tag or digest: Always would only make every restart depend on "
        "the registry"
    ),
    ("pod-networkpolicy", "The pod does not have a matching egress NetworkPolicy"): (
        "the operator must reach the API server, every migration's database and Prometheus, "
        "wherever they are; networkPolicy.egress narrows it where they are known"
    ),
    ("deployment-replicas", "Deployment few replicas"): (
        "one replica by default: a standby needs kopf peering (replicaCount > 1 turns it on), "
        "and the Service only serves metrics"
    ),
    ("deployment-strategy", "Deployment update strategy"): (
        "Recreate with one replica and no peering: two operators must never run the same "
        "migration at once"
    ),
}


@pytest.fixture(scope="session")
def kube_score() -> str:
    proc = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    binary = Path(proc.stdout.strip().splitlines()[-1]) / "kube-score"
    assert binary.is_file(), proc.stdout
    return str(binary)


def _findings(
    kube_score: str, docs: list[dict[str, Any]], tmp_path: Path
) -> list[tuple[str, str, str]]:
    """(object, check id, summary) of every check that did not pass."""
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    optional = [a for o in OPTIONAL for a in ("--enable-optional-test", o)]
    proc = subprocess.run(
        [kube_score, "score", *optional, "--output-format", "json", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.stdout.strip(), proc.stderr
    found = []
    for obj in json.loads(proc.stdout):
        for check in obj["checks"]:
            if check["skipped"] or check["grade"] >= 10:
                continue
            for comment in check["comments"] or [{"summary": check["check"]["name"]}]:
                found.append((obj["object_name"], check["check"]["id"], comment["summary"]))
    return found


@pytest.mark.parametrize("values", CHART_VARIATIONS)
def test_kube_score_finds_nothing_unexplained(
    helm: str, kube_score: str, values: dict[str, Any], tmp_path: Path
) -> None:
    docs = render_chart(helm, substitute_namespace(values, "team-a"))
    found = _findings(kube_score, docs, tmp_path)
    unexplained = [f for f in found if (f[1], f[2]) not in ACCEPTED]
    assert unexplained == [], "\n".join(" | ".join(f) for f in unexplained)


def test_kube_score_is_not_blind(helm: str, kube_score: str, tmp_path: Path) -> None:
    """The same run on a chart with its hardening taken away does complain."""
    docs = render_chart(helm, {"networkPolicy": {"enabled": False}})
    for doc in docs:
        if doc["kind"] == "Deployment":
            (c,) = doc["spec"]["template"]["spec"]["containers"]
            c.pop("resources")
            c.pop("securityContext")
    checks = {f[1] for f in _findings(kube_score, docs, tmp_path)}
    assert {
        "pod-networkpolicy",
        "container-resources",
        "container-ephemeral-storage-request-and-limit",
        "container-security-context-readonlyrootfilesystem",
    } <= checks, checks
