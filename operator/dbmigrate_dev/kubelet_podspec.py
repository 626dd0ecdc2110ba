"""What a pod's container spec asks of a local process: its argv and its environment.

The kubelet's rules, for the local pod executor (`dbmigrate_dev.kubelet`): `command` and
`args` against the image's entrypoint, `$(VAR)` expansion, and env from `value`, `fieldRef`,
`secretKeyRef`, `configMapKeyRef` and `envFrom`; where a persistentVolumeClaim mount is on the
host (`claim_mounts`, `under_mounts`). Pure: Secrets, ConfigMaps and volumes come through
readers the executor supplies.
"""

from __future__ import annotations

import re
from base64 import b64decode
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

_EXPANSION = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` escapes a `$`,
    undefined references stay as written."""

    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _EXPANSION.sub(replace, text)


class ConfigError(Exception):
    """The pod cannot start yet (a missing Secret or key): CreateContainerConfigError."""


def build_argv(container: Obj, entrypoint: list[str], env: Mapping[str, str]) -> list[str]:
    """The process's argv by Kubernetes' rules: `command` replaces the image's entrypoint, `args`
    follow it; `$(VAR)` references are expanded."""
    command = [expand(c, env) for c in container.get("command") or []]
    args = [expand(a, env) for a in container.get("args") or []]
    argv = command + args if command else [*entrypoint, *args]
    if not argv:
        raise ConfigError(f"container {container['name']!r}: no command, and the image has none")
    return argv


@dataclass
class EnvSources:
    """Reads the Secrets and ConfigMaps a pod's env refers to (cached for one start)."""

    read_secret: Callable[[str, str], Obj | None]
    read_config_map: Callable[[str, str], Obj | None]
    _cache: dict[tuple[str, str], Obj | None] = field(default_factory=dict)

    def data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        key = (kind, name)
        if key not in self._cache:
            reader = self.read_secret if kind == "Secret" else self.read_config_map
            self._cache[key] = reader(namespace, name)
        obj = self._cache[key]
        if obj is None:
            return None
        if kind == "Secret":
            return {k: b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})


_LABEL_REF = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def field_ref(pod: Obj, path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP") or "127.0.0.1",
        "status.podIP": status.get("podIP") or "127.0.0.1",
        "status.podIPs": status.get("podIP") or "127.0.0.1",
        "status.hostIPs": status.get("hostIP") or "127.0.0.1",
    }
    if path in simple:
        return str(simple[path] or "")
    m = _LABEL_REF.fullmatch(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise ConfigError(f"fieldRef {path!r} is not supported by the local executor")


def resolve_env(pod: Obj, container: Obj, sources: EnvSources) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env in order
    (later entries may refer to earlier ones with `$(NAME)`)."""
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = src.get(key)
            if ref is None:
                continue
            data = sources.data(kind, ns, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
            env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        vf = var["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_ref(pod, vf["fieldRef"]["fieldPath"])
            continue
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            ref = vf.get(key)
            if ref is None:
                continue
            data = sources.data(kind, ns, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    break
                what = f'{kind.lower()} "{ref["name"]}"'
                raise ConfigError(
                    f"{what} not found" if data is None else f"key {ref['key']!r} not in {what}"
                )
            env[name] = data[ref["key"]]
            break
        else:
            raise ConfigError(f"env {name!r}: this valueFrom is not supported by the executor")
    return env


# Names a docker client needs from its own environment: a container env var of the same name
# goes on the command line with its value instead of through the client's environment.
_CLIENT_ENV = frozenset({"PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT"})


def run_as(pod: Obj, container: Obj) -> tuple[int | None, int | None]:
    """The container's user and group ids: its own security context's, else the pod's."""
    pod_sc = pod["spec"].get("securityContext") or {}
    sc = container.get("securityContext") or {}
    return sc.get("runAsUser", pod_sc.get("runAsUser")), sc.get(
        "runAsGroup", pod_sc.get("runAsGroup")
    )


def projected_files(
    pod: Obj, volume: Obj, sources: EnvSources, token: Callable[[], str | None]
) -> dict[str, str]:
    """The files of a `projected` volume (path -> content), as the kubelet writes them: the
    ServiceAccount token volume every pod gets (`kube-api-access-*`: token, `ca.crt` from the
    `kube-root-ca.crt` ConfigMap, the namespace) and any other of those three source kinds."""
    ns = pod["metadata"]["namespace"]
    files: dict[str, str] = {}
    for src in volume["projected"].get("sources") or []:
        if "serviceAccountToken" in src:
            value = token()
            if value is None:
                raise ConfigError("no ServiceAccount token for the pod")
            files[src["serviceAccountToken"]["path"]] = value
        elif "configMap" in src:
            ref = src["configMap"]
            data = sources.data("ConfigMap", ns, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'configmap "{ref["name"]}" not found')
            items = ref.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                if item["key"] not in data:
                    raise ConfigError(f"key {item['key']!r} not in configmap {ref['name']!r}")
                files[item["path"]] = data[item["key"]]
        elif "downwardAPI" in src:
            for item in src["downwardAPI"].get("items") or []:
                if "fieldRef" not in item:
                    raise ConfigError("downwardAPI resourceFieldRef is not supported")
                files[item["path"]] = field_ref(pod, item["fieldRef"]["fieldPath"])
        else:
            raise ConfigError(f"projected source {sorted(src)} is not supported")
    return files


def docker_run_args(
    pod: Obj,
    container: Obj,
    env: Mapping[str, str],
    *,
    volume_dirs: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """`docker run` options, image and arguments for a container of a pod (everything after
    `docker run --name NAME`), and the environment the docker client must run with.

    As a kubelet starts it, minus what a local engine cannot stand in for: the host's network
    (the pod's addresses are the host's), the security context (`runAsUser`/`runAsGroup`,
    `readOnlyRootFilesystem`, capabilities, `allowPrivilegeEscalation: false`), `emptyDir`
    mounts as tmpfs, other volumes as read-only bind mounts of the host directories that
    `volume_dirs` gives for them (the executor writes a projected volume's files there),
    `workingDir`, `command` as the entrypoint. Env values travel through the client's
    environment (`-e NAME`), so a Secret's value never appears in a process's argv."""
    spec = pod["spec"]
    sc = container.get("securityContext") or {}
    args = ["--rm", "--network", "host", "--stop-timeout", "2"]
    user, group = run_as(pod, container)
    if user is not None:
        args += ["--user", f"{user}:{group}" if group is not None else str(user)]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    caps = sc.get("capabilities") or {}
    for cap in caps.get("drop") or []:
        args += ["--cap-drop", cap]
    for cap in caps.get("add") or []:
        args += ["--cap-add", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    dirs = volume_dirs or {}
    for vm in container.get("volumeMounts") or []:
        volume = volumes.get(vm["name"])
        if volume is not None and "emptyDir" in volume:
            args += ["--tmpfs", f"{vm['mountPath']}:rw,nosuid,nodev,mode=1777"]
        elif vm["name"] in dirs:
            args += ["--volume", f"{dirs[vm['name']]}:{vm['mountPath']}:ro"]
        else:
            raise ConfigError(
                f"volume {vm['name']!r}: only emptyDir and projected volumes are supported by "
                "the local executor's containers"
            )
    if container.get("workingDir"):
        args += ["--workdir", container["workingDir"]]
    client_env = {k: v for k, v in env.items() if k not in _CLIENT_ENV}
    for name in env:
        args += ["--env", name if name in client_env else f"{name}={env[name]}"]
    command = [expand(c, env) for c in container.get("command") or []]
    rest = [expand(a, env) for a in container.get("args") or []]
    if command:
        args += ["--entrypoint", command[0]]
        rest = command[1:] + rest
    return [*args, container["image"], *rest], client_env


def claim_host_path(pv: Obj) -> str:
    """The host directory of a bound PersistentVolume: its `hostPath` or `local` path (the
    kinds a single-node cluster has); any other kind cannot be reached from a local process."""
    spec = pv.get("spec") or {}
    for kind in ("hostPath", "local"):
        if kind in spec:
            return str(spec[kind]["path"])
    raise ConfigError(
        f"persistentvolume {pv['metadata']['name']!r}: only hostPath and local volumes are "
        "supported by the local executor"
    )


def claim_mounts(pod: Obj, container: Obj, host_dir: Callable[[str], str]) -> dict[str, str]:
    """{mountPath: host directory} of the container's persistentVolumeClaim mounts (with their
    subPath); `host_dir(claim)` finds the bound volume's directory (ConfigError while unbound)."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts: dict[str, str] = {}
    for vm in container.get("volumeMounts") or []:
        volume = volumes.get(vm["name"]) or {}
        claim = volume.get("persistentVolumeClaim")
        if claim is None:
            continue
        where = host_dir(claim["claimName"])
        if vm.get("subPath"):
            where = f"{where.rstrip('/')}/{vm['subPath']}"
        mounts[vm["mountPath"].rstrip("/") or "/"] = where
    return mounts


def under_mounts(value: str, mounts: Mapping[str, str]) -> str:
    """`value` with a leading mount path (the whole value, or the path before a `/`) replaced by
    its host directory: how a local process finds a file the container would find there."""
    for mount, host in sorted(mounts.items(), key=lambda m: -len(m[0])):
        if value == mount or value.startswith(mount + "/"):
            return host + value[len(mount) :]
    return value
