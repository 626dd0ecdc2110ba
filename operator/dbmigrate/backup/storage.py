"""Where a backup is stored: a directory (a PersistentVolumeClaim mounted into the Job's pod) or
S3-compatible object storage (through the MinIO client library, Apache-2.0, which speaks to any
S3 API: AWS, SeaweedFS, Ceph RGW, ...).

Each storage writes a stream under a name, reads it back in chunks (the verification reads what
was stored, not what was sent), deletes it, and says where it is without any credential.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from minio import Minio

CHUNK = 1 << 20
# S3 multipart part size for a stream of unknown length (at most 10 000 parts: 160 GiB).
PART_SIZE = 16 << 20


class StorageError(RuntimeError):
    """The storage refused or failed; `retryable` when it may heal (unreachable, 5xx)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class Storage(Protocol):
    def put(self, name: str, stream: Readable) -> None:
        """Store everything `stream.read()` returns under `name`."""
        ...

    def read(self, name: str) -> Iterator[bytes]:
        """What is stored under `name`, in chunks."""
        ...

    def delete(self, name: str) -> None: ...

    def location(self, name: str) -> str:
        """Where `name` is, for people and for status (no credentials)."""
        ...


class DirectoryStorage:
    """A directory: the dump is written as `<name>.partial`, flushed to disk and renamed."""

    def __init__(self, directory: Path, location_prefix: str | None = None) -> None:
        self.directory = directory
        self.location_prefix = location_prefix

    def put(self, name: str, stream: Readable) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial = self.directory / f"{name}.partial"
            with partial.open("wb") as out:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(self.directory / name)
        except OSError as exc:
            raise StorageError(f"cannot write {self.directory / name}: {exc}") from exc

    def read(self, name: str) -> Iterator[bytes]:
        try:
            with (self.directory / name).open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        except OSError as exc:
            raise StorageError(f"cannot read {self.directory / name} back: {exc}") from exc

    def delete(self, name: str) -> None:
        for path in (self.directory / name, self.directory / f"{name}.partial"):
            path.unlink(missing_ok=True)

    def location(self, name: str) -> str:
        if self.location_prefix:
            return f"{self.location_prefix.rstrip('/')}/{name}"
        return str(self.directory / name)


class S3Storage:
    """An S3 bucket; objects are `<prefix>/<name>`."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str | None,
        access_key: str,
        secret_key: str,
        *,
        region: str | None = None,
        insecure_skip_tls_verify: bool = False,
    ) -> None:
        from minio import Minio  # only a backup to S3 loads the client

        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.netloc or url.path not in ("", "/"):
            raise StorageError(f"the S3 endpoint must be http(s)://host[:port], not {endpoint!r}")
        self.bucket = bucket
        self.prefix = (prefix or "").strip("/")
        self.client: Minio = Minio(
            url.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=url.scheme == "https",
            region=region,
            cert_check=not insecure_skip_tls_verify,
        )

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, name: str, stream: Readable) -> None:
        # The client only calls read(n) on it.
        data = cast(BinaryIO, stream)
        self._call(
            "upload",
            lambda: self.client.put_object(
                self.bucket, self.key(name), data, length=-1, part_size=PART_SIZE
            ),
        )

    def read(self, name: str) -> Iterator[bytes]:
        response = self._call(
            "download", lambda: self.client.get_object(self.bucket, self.key(name))
        )
        try:
            yield from response.stream(CHUNK)
        except Exception as exc:
            raise StorageError(f"reading {self.location(name)} back failed: {exc}") from exc
        finally:
            response.close()
            response.release_conn()

    def delete(self, name: str) -> None:
        self._call("delete", lambda: self.client.remove_object(self.bucket, self.key(name)))

    def size(self, name: str) -> int:
        stat = self._call("stat", lambda: self.client.stat_object(self.bucket, self.key(name)))
        return int(stat.size or 0)

    def location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def _call(self, what: str, call: Any) -> Any:
        from minio.error import MinioException, S3Error
        from urllib3.exceptions import HTTPError

        try:
            return call()
        except S3Error as exc:
            # AccessDenied, NoSuchBucket, InvalidAccessKeyId, SignatureDoesNotMatch: a person
            # must fix the spec or the Secret; a server error may pass.
            retryable = exc.response is not None and exc.response.status >= 500
            raise StorageError(
                f"S3 {what} of s3://{self.bucket}/{self.prefix} failed: {exc.code}: {exc.message}",
                retryable=retryable,
            ) from exc
        except MinioException as exc:
            raise StorageError(f"S3 {what} failed: {exc}") from exc
        except (OSError, HTTPError) as exc:  # refused, reset, timed out, retries used up
            raise StorageError(
                f"S3 endpoint unreachable during {what}: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc
