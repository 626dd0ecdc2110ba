"""The logs of the local pod executor's containers, served through the API server (`kubectl
logs`, the pods/log subresource) as a kubelet serves them.

The API server asks the pod's node for a container's log; the node's kubelet endpoint is kwok's
server (`hack/local-cluster.sh` starts kwok with `--enable-crds=Logs`), which serves the file a
kwok `Logs` object names for the pod, in the container runtime's (CRI) log format
(`<RFC3339Nano> stdout F <line>`). So for each pod it runs, the executor

- keeps a CRI copy of each container's output (`CriLog`: a thread that turns the lines the
  process appends to its plain log into CRI entries, the plain log staying what the termination
  message is cut from), and
- creates the pod's `Logs` object (`logs_object`), owned by the pod so that the garbage
  collector deletes it with the pod.

A cluster without kwok's Logs CRD (an older `up`) just has no logs: the executor says so once.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

KWOK_GROUP, KWOK_VERSION, KWOK_LOGS = "kwok.x-k8s.io", "v1alpha1", "logs"
POLL_SECONDS = 0.2


def cri_path(log_path: Path) -> Path:
    """Where the CRI copy of a container's plain log is kept."""
    return log_path.with_suffix(".cri.log")


def cri_entry(line: bytes, at: dt.datetime) -> bytes:
    """One CRI log entry: a full line (`F`) of stdout, timestamped (RFC 3339, UTC)."""
    stamp = at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    return stamp + b" stdout F " + line.rstrip(b"\r\n") + b"\n"


class CriLog(threading.Thread):
    """Appends the lines written to `source` after `offset` to `target` as CRI entries, until
    `finish()`: then what is left (a last line without its newline too) and it ends."""

    def __init__(self, source: Path, target: Path, offset: int) -> None:
        super().__init__(name=f"cri-log-{source.name}", daemon=True)
        self.source, self.target, self.offset = source, target, offset
        self._done = threading.Event()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()

    def finish(self, timeout: float = 5.0) -> None:
        self._done.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        pending = b""
        while True:
            last = self._done.wait(POLL_SECONDS)
            try:
                with self.source.open("rb") as f:
                    f.seek(self.offset)
                    chunk = f.read()
            except OSError:
                chunk = b""
            self.offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if last and pending:
                lines.append(pending)
                pending = b""
            if lines:
                now = dt.datetime.now(dt.UTC)
                with self.target.open("ab") as out:
                    out.write(b"".join(cri_entry(line, now) for line in lines))
            if last:
                return


def logs_object(pod: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
    """kwok's `Logs` object for the pod: each container's CRI log file; owned by the pod."""
    meta = pod["metadata"]
    return {
        "apiVersion": f"{KWOK_GROUP}/{KWOK_VERSION}",
        "kind": "Logs",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "spec": {
            "logs": [
                {"containers": [name], "logsFile": str(path), "follow": True}
                for name, path in files.items()
            ]
        },
    }
