"""What the local pod executor asks of a Docker engine for a pod's container (`docker run`
options), the files of a projected ServiceAccount volume, and where a persistentVolumeClaim
mount is on the host for a local process: pure, from pod specs."""

from __future__ import annotations

from typing import Any

import pytest

from dbmigrate_dev.kubelet_podspec import (
    ConfigError,
    EnvSources,
    claim_host_path,
    claim_mounts,
    docker_run_args,
    projected_files,
    under_mounts,
)

IMAGE = "localhost/dbmigrate:container"


def pod(container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p-1", "namespace": "ns", "uid": "u-1"},
        "spec": {"containers": [container], **spec},
    }


HARDENED = {
    "name": "worker",
    "image": IMAGE,
    "args": ["backfill", "--worker", "$(JOB_COMPLETION_INDEX)/2"],
    "securityContext": {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    },
    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
}


@pytest.mark.parametrize(
    ("spec", "env", "expected", "absent"),
    [
        pytest.param(
            pod(
                HARDENED,
                securityContext={"runAsUser": 65532, "runAsGroup": 65532},
                volumes=[{"name": "tmp", "emptyDir": {}}],
            ),
            {"JOB_COMPLETION_INDEX": "1", "DBMIGRATE_DSN": "postgresql://u:secret@h/db"},
            [
                "--network host",
                "--user 65532:65532",
                "--read-only",
                "--cap-drop ALL",
                "--security-opt no-new-privileges",
                "--tmpfs /tmp:rw,nosuid,nodev,mode=1777",
                "--env DBMIGRATE_DSN",
                f"{IMAGE} backfill --worker 1/2",
            ],
            ["secret", "--entrypoint"],
            id="hardened-job-pod",
        ),
        pytest.param(
            pod({"name": "c", "image": IMAGE, "securityContext": {"runAsUser": 1000}}),
            {},
            ["--user 1000", IMAGE],
            ["--read-only", "--user 1000:"],
            id="user-without-group",
        ),
        pytest.param(
            pod(
                {
                    "name": "c",
                    "image": IMAGE,
                    "command": ["sh", "-c"],
                    "args": ["echo $(A)"],
                    "workingDir": "/work",
                }
            ),
            {"A": "x"},
            ["--workdir /work", "--entrypoint sh", f"{IMAGE} -c echo x"],
            [],
            id="command-replaces-the-entrypoint",
        ),
        pytest.param(
            pod(
                {
                    "name": "c",
                    "image": IMAGE,
                    "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/sa"}],
                },
                volumes=[{"name": "kube-api-access", "projected": {"sources": []}}],
            ),
            {"PATH": "/usr/bin"},
            ["--volume /host/sa:/var/run/sa:ro", "--env PATH=/usr/bin"],
            [],
            id="projected-volume-and-client-env-names",
        ),
    ],
)
def test_docker_run_args(
    spec: dict[str, Any], env: dict[str, str], expected: list[str], absent: list[str]
) -> None:
    args, client_env = docker_run_args(
        spec, spec["spec"]["containers"][0], env, volume_dirs={"kube-api-access": "/host/sa"}
    )
    line = " ".join(args)
    for part in expected:
        assert part in line
    for part in absent:
        assert part not in line
    assert args[:2] == ["--rm", "--network"]
    # Values reach the container through the client's environment, not its argv...
    for name, value in env.items():
        if name != "PATH":
            assert client_env[name] == value
    # ...except names the docker client itself needs.
    assert "PATH" not in client_env


def test_unsupported_volume_is_a_config_error() -> None:
    spec = pod(
        {"name": "c", "image": IMAGE, "volumeMounts": [{"name": "data", "mountPath": "/d"}]},
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}],
    )
    with pytest.raises(ConfigError, match="volume 'data'"):
        docker_run_args(spec, spec["spec"]["containers"][0], {})


KUBE_API_ACCESS = {
    "name": "kube-api-access-abcde",
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {
                "configMap": {
                    "name": "kube-root-ca.crt",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }
            },
            {
                "downwardAPI": {
                    "items": [
                        {
                            "path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                        }
                    ]
                }
            },
        ],
    },
}


def sources(config_maps: dict[str, dict[str, str]]) -> EnvSources:
    return EnvSources(
        read_secret=lambda ns, name: None,
        read_config_map=lambda ns, name: (
            {"data": config_maps[name]} if name in config_maps else None
        ),
    )


@pytest.mark.parametrize(
    ("config_maps", "token", "expected"),
    [
        pytest.param(
            {"kube-root-ca.crt": {"ca.crt": "PEM"}},
            "tok",
            {"token": "tok", "ca.crt": "PEM", "namespace": "ns"},
            id="service-account-volume",
        ),
        pytest.param({}, "tok", 'configmap "kube-root-ca.crt" not found', id="no-root-ca"),
        pytest.param(
            {"kube-root-ca.crt": {"ca.crt": "PEM"}},
            None,
            "no ServiceAccount token",
            id="no-token",
        ),
    ],
)
def test_projected_files(
    config_maps: dict[str, dict[str, str]], token: str | None, expected: Any
) -> None:
    spec = pod({"name": "c", "image": IMAGE}, volumes=[KUBE_API_ACCESS])
    if isinstance(expected, dict):
        assert projected_files(spec, KUBE_API_ACCESS, sources(config_maps), lambda: token) == (
            expected
        )
    else:
        with pytest.raises(ConfigError, match=expected):
            projected_files(spec, KUBE_API_ACCESS, sources(config_maps), lambda: token)


def test_claim_mounts_and_paths_under_them() -> None:
    container = {
        "name": "backup",
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "backup", "mountPath": "/backup"},
            {"name": "more", "mountPath": "/data/", "subPath": "a/b"},
        ],
    }
    spec = {
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "backup", "persistentVolumeClaim": {"claimName": "c1"}},
            {"name": "more", "persistentVolumeClaim": {"claimName": "c2"}},
        ]
    }
    hosts = {"c1": "/srv/pv1", "c2": "/srv/pv2/"}
    mounts = claim_mounts(pod(container, **spec), container, hosts.__getitem__)
    assert mounts == {"/backup": "/srv/pv1", "/data": "/srv/pv2/a/b"}
    assert under_mounts("/backup", mounts) == "/srv/pv1"
    assert under_mounts("/backup/shop/x.dump", mounts) == "/srv/pv1/shop/x.dump"
    assert under_mounts("/data/f", mounts) == "/srv/pv2/a/b/f"
    assert under_mounts("/backups-not-a-mount", mounts) == "/backups-not-a-mount"
    assert under_mounts("pvc:c1/x", mounts) == "pvc:c1/x"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"hostPath": {"path": "/srv/pv"}}, "/srv/pv", id="host-path"),
        pytest.param({"local": {"path": "/mnt/disk"}}, "/mnt/disk", id="local"),
        pytest.param({"nfs": {"server": "n", "path": "/x"}}, None, id="nfs-refused"),
    ],
)
def test_claim_host_path(spec: dict[str, Any], expected: str | None) -> None:
    pv = {"metadata": {"name": "pv"}, "spec": spec}
    if expected is None:
        with pytest.raises(ConfigError, match="only hostPath and local"):
            claim_host_path(pv)
    else:
        assert claim_host_path(pv) == expected
