"""What a pod's container spec asks of a local process: its argv and its environment.

The kubelet's rules, for the local pod executor (`dbmigrate.testing.executor`): `command` and
`args` against the image's entrypoint, `$(VAR)` expansion, and env from `value`, `fieldRef`,
`secretKeyRef`, `configMapKeyRef` and `envFrom`. Pure: Secrets and ConfigMaps come through
`EnvSources`, whose readers the executor supplies.
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
