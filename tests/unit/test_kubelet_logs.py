"""The local pod executor's container logs in the CRI format kwok's node server reads
(dbmigrate_dev.kubelet_logs): lines written after the start offset become `F` entries, the last
line without a newline too when the container ends; the pod's kwok `Logs` object names each
container's file and is owned by the pod."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from dbmigrate_dev.kubelet_logs import CriLog, cri_path, logs_object

ENTRY = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z stdout F (.*)$")


@pytest.mark.parametrize(
    ("before", "written", "expected"),
    [
        pytest.param(b"", [b"one\n", b"two\n"], [b"one", b"two"], id="lines"),
        pytest.param(b"", [b"par", b"tial\nlast"], [b"partial", b"last"], id="split-and-unended"),
        pytest.param(b"earlier run\n", [b"restart\n"], [b"restart"], id="after-the-offset"),
        pytest.param(b"", [b"crlf\r\n", b"\n"], [b"crlf", b""], id="crlf-and-empty"),
    ],
)
def test_cri_copy(
    tmp_path: Path, before: bytes, written: list[bytes], expected: list[bytes]
) -> None:
    plain = tmp_path / "c.log"
    plain.write_bytes(before)
    writer = CriLog(plain, cri_path(plain), offset=len(before))
    writer.start()
    for chunk in written:
        with plain.open("ab") as f:
            f.write(chunk)
        time.sleep(0.3)
    writer.finish()
    assert not writer.is_alive()
    lines = cri_path(plain).read_bytes().splitlines()
    got = [m.group(1) for m in map(ENTRY.match, lines) if m]
    assert len(got) == len(lines), lines
    assert got == expected


def test_logs_object_names_each_container_file_and_is_owned_by_the_pod() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}}
    obj = logs_object(pod, {"init": Path("/x/init.cri.log"), "main": Path("/x/main.cri.log")})
    assert obj["kind"] == "Logs"
    assert obj["apiVersion"] == "kwok.x-k8s.io/v1alpha1"
    assert (obj["metadata"]["name"], obj["metadata"]["namespace"]) == ("p", "ns")
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u-1"}
    ]
    assert obj["spec"]["logs"] == [
        {"containers": ["init"], "logsFile": "/x/init.cri.log", "follow": True},
        {"containers": ["main"], "logsFile": "/x/main.cri.log", "follow": True},
    ]
