"""The CRDs the Helm chart ships (`charts/dbmigrate-operator/crds/`).

Aspects covered:
- every CRD file in the repository's `crds/` is in the chart, byte for byte (the chart carries
  copies, not symlinks, so that `helm package` never loses them), and the chart has no others;
- the kopf peering CRDs serve exactly the group, version, plural and scope that kopf looks up,
  and the peering objects' status (kopf's keep-alives) is kept, not pruned.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kopf._cogs.structs import references

ROOT = Path(__file__).resolve().parents[2]
REPO_CRDS = ROOT / "crds"
CHART_CRDS = ROOT / "charts" / "dbmigrate-operator" / "crds"
PEERING = REPO_CRDS / "kopf-peering.yaml"


def _crd_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.yaml"))


@pytest.mark.parametrize("name", _crd_files(REPO_CRDS))
def test_chart_carries_an_identical_copy(name: str) -> None:
    chart_copy = CHART_CRDS / name
    assert chart_copy.is_file(), f"missing: cp crds/{name} {chart_copy.relative_to(ROOT)}"
    assert not chart_copy.is_symlink()
    assert chart_copy.read_bytes() == (REPO_CRDS / name).read_bytes(), (
        f"charts' copy of {name} is stale: cp crds/{name} {chart_copy.relative_to(ROOT)}"
    )


def test_chart_has_no_other_crds() -> None:
    assert _crd_files(CHART_CRDS) == _crd_files(REPO_CRDS)


def _peering_crds() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(PEERING.read_text()) if d]
    assert all(d["kind"] == "CustomResourceDefinition" for d in docs)
    return {d["spec"]["names"]["kind"]: d for d in docs}


@pytest.mark.parametrize(
    ("kind", "selector", "scope"),
    [
        pytest.param(
            "ClusterKopfPeering", references.CLUSTER_PEERINGS_K, "Cluster", id="cluster-wide"
        ),
        pytest.param(
            "KopfPeering", references.NAMESPACED_PEERINGS_K, "Namespaced", id="namespaced"
        ),
    ],
)
def test_peering_crd_serves_what_kopf_looks_up(
    kind: str, selector: references.Selector, scope: str
) -> None:
    crd = _peering_crds()[kind]
    spec = crd["spec"]
    assert spec["scope"] == scope
    (version,) = spec["versions"]
    assert version["served"] is True
    assert version["storage"] is True
    served = references.Resource(
        group=spec["group"],
        version=version["name"],
        plural=spec["names"]["plural"],
        kind=spec["names"]["kind"],
        singular=spec["names"]["singular"],
        namespaced=scope == "Namespaced",
    )
    assert selector.check(served), f"kopf's {selector} does not select {served}"
    assert crd["metadata"]["name"] == f"{served.plural}.{served.group}"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status.get("x-kubernetes-preserve-unknown-fields") is True, (
        "kopf writes free-form keep-alives into status; a structural schema would prune them"
    )
    assert "subresources" not in version, "kopf patches status on the main resource"
