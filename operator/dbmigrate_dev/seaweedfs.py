"""A throwaway SeaweedFS (Apache-2.0) with its S3 gateway, on free loopback ports: the
S3-compatible object store of the backup tests and the backup benchmark.

`weed server` runs a master, a volume server, a filer and the S3 gateway in one process. Every
port it opens is given (or switched off), it binds to 127.0.0.1 only, and its anonymous usage
report to the project's telemetry server is switched off: nothing leaves the machine. The S3
gateway knows one identity (an access key and a secret key made up per server).

The binary is built once from the Go module proxy by `hack/lib/build-seaweedfs.sh` (cached).
Used by tests/fixtures/s3.py and hack/bench/backup.py.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbmigrate_dev.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "hack" / "lib" / "build-seaweedfs.sh"


def find_weed() -> str:
    """The cached `weed` binary (built on first use, which takes minutes)."""
    done = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT.name} failed:\n{done.stderr[-4000:]}")
    weed = Path(done.stdout.strip().splitlines()[-1]) / "weed"
    if not weed.is_file():
        raise RuntimeError(f"{BUILD_SCRIPT.name} printed no bin directory holding weed")
    return str(weed)


@dataclass
class SeaweedS3:
    """One `weed server -s3`; `endpoint`, `access_key`, `secret_key` for clients."""

    workdir: Path
    weed: str
    access_key: str = field(default_factory=lambda: "dbmigrate-" + secrets.token_hex(4))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def start(self, timeout: float = 90.0) -> None:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "dbmigrate-tests",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        config.chmod(0o600)
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        argv = [
            self.weed,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            "-master.telemetry=false",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={free_port()}",
            "-master.volumeSizeLimitMB=256",
            "-volume.max=0",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={free_port()}",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={free_port()}",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={free_port()}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        # The gateway answers before the filer behind it has volumes: ready is a bucket made.
        deadline = time.monotonic() + timeout
        probe = f"ready-{secrets.token_hex(4)}"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self.process.returncode}: {self._log_tail()}"
                )
            try:
                self.create_bucket(probe)
                self.client().remove_bucket(probe)
                return
            except Exception as exc:  # not up yet: connection refused, 503, no volumes
                last = exc
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"SeaweedFS S3 not ready within {timeout:g}s: {last}\n{self._log_tail()}"
        )

    def client(self, *, secret_key: str | None = None) -> Any:
        from minio import Minio

        return Minio(
            f"127.0.0.1:{self.port}",
            access_key=self.access_key,
            secret_key=secret_key or self.secret_key,
            secure=False,
        )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        if not client.bucket_exists(name):
            client.make_bucket(name)

    def read_object(self, bucket: str, key: str) -> bytes:
        response = self.client().get_object(bucket, key)
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        return [
            o.object_name for o in self.client().list_objects(bucket, prefix=prefix, recursive=True)
        ]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""
