"""The pure parts of the demo's kind mode (dbmigrate_dev.stack): where pods find the host,
and what the chart is installed with. (The chart values are also linted and dry-run applied
by tests/e2e/test_chart.py; kind itself cannot run without its node image from a registry.)"""

from __future__ import annotations

from typing import Any

import pytest

from dbmigrate_dev.stack import KIND_IMAGE, kind_chart_values, kind_network


@pytest.mark.parametrize(
    ("inspect", "expected"),
    [
        pytest.param(
            [
                {
                    "Name": "kind",
                    "IPAM": {
                        "Config": [
                            {"Subnet": "fc00:f853:ccd:e793::/64"},
                            {"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"},
                        ]
                    },
                }
            ],
            ("172.18.0.1", "172.18.0.0/16"),
            id="dual-stack-ipv4-second",
        ),
        pytest.param(
            [{"Name": "kind", "IPAM": {"Config": [{"Subnet": "10.89.0.0/24"}]}}],
            ("10.89.0.1", "10.89.0.0/24"),
            id="gateway-left-out",
        ),
    ],
)
def test_kind_network(inspect: list[dict[str, Any]], expected: tuple[str, str]) -> None:
    assert kind_network(inspect) == expected


def test_kind_network_needs_ipv4() -> None:
    with pytest.raises(RuntimeError, match="no IPv4 subnet"):
        kind_network([{"Name": "kind", "IPAM": {"Config": [{"Subnet": "fc00::/64"}]}}])


def test_kind_chart_values_use_the_loaded_image() -> None:
    values = kind_chart_values("shop")
    image = values["image"]
    assert f"{image['repository']}:{image['tag']}" == KIND_IMAGE
    # loaded with `kind load docker-image`, never pulled
    assert image["pullPolicy"] == "Never"
    assert values["watchNamespaces"] == ["shop"]
