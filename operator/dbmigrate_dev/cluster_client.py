"""A handle on a Kubernetes cluster for the e2e tests and the demo: `kubectl` with the right
kubeconfig, manifests applied from Python objects, namespaces of their own, and polling waits.

It drives any cluster (the local control plane of `hack/local-cluster.sh`, kind, a real one);
`local` says whether the local pod executor runs its pods, which only the local one has.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from kubernetes import config

import dbmigrate

T = TypeVar("T")
Manifest = dict[str, Any]


def parse_exports(text: str) -> dict[str, str]:
    """`export NAME=value` lines (what `hack/local-cluster.sh env` prints) -> {NAME: value}."""
    out = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            out[name] = value
    return out


class WaitTimeout(AssertionError):
    """What a test sees when the cluster did not get where it should in time."""


def wait_for(
    check: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Polls `check` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    last: T | Literal[False] | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


@dataclass
class Cluster:
    kubeconfig: Path
    kubectl_bin: str = "kubectl"
    local: bool = False
    _api: Any = field(default=None, repr=False)

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl against this cluster; on failure the error names the command and its
        stderr (kubectl never prints Secret values there)."""
        proc = subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def get(self, *args: str) -> Any:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, *manifests: Manifest | str, namespace: str | None = None) -> None:
        docs = [m if isinstance(m, str) else yaml.safe_dump(m) for m in manifests]
        ns = [f"--namespace={namespace}"] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input="---\n".join(docs))

    @property
    def api(self) -> Any:
        """A `kubernetes` ApiClient for this cluster (made once)."""
        if self._api is None:
            self._api = config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        return self._api

    # --- namespaces ----------------------------------------------------------------------------

    def create_namespace(self, hint: str = "e2e", timeout: float = 60) -> str:
        """A new namespace named after `hint`, once its default ServiceAccount exists (pods
        cannot be created before: the ServiceAccount admission plugin needs it)."""
        slug = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40].strip("-") or "e2e"
        name = f"{slug}-{uuid.uuid4().hex[:6]}"
        self.kubectl("create", "namespace", name)
        # The Jobs' pods run this checkout's code, whichever checkout started the executor.
        source = str(Path(dbmigrate.__file__).resolve().parent.parent)
        self.kubectl("annotate", "namespace", name, f"dev.dbmigrate.io/source={source}")
        wait_for(
            lambda: (
                self.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode
                == 0
            ),
            timeout,
            f"the default ServiceAccount in {name}",
        )
        return name

    def delete_namespace(self, name: str, wait: bool = False) -> None:
        self.kubectl(
            "delete", "namespace", name, "--ignore-not-found", f"--wait={str(wait).lower()}"
        )

    # --- CRDs --------------------------------------------------------------------------------

    def install_crds(self, paths: Iterable[Path], timeout: float = 60) -> None:
        """Applies the CRD files and waits until the API server serves them."""
        files = [str(p) for p in paths]
        if not files:
            return
        args = [a for f in files for a in ("-f", f)]
        self.kubectl("apply", "--server-side", "--force-conflicts", *args)
        self.kubectl(
            "wait",
            "--for=condition=Established",
            f"--timeout={int(timeout)}s",
            *args,
            timeout=timeout + 10,
        )
