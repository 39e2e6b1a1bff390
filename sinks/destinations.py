"""Where a sink's files go: a local folder or an S3 bucket, behind one small interface.

The exactly-once protocol (``sinks.progress``) and compaction need only five operations,
and only one guarantee: **a put is atomic** — a reader, or a restart after SIGKILL, sees
the old object (or none) or the whole new one, never a part.

- :class:`LocalDestination` writes to a hidden temporary sibling (``.<name>.tmp``: no
  ``*.parquet`` glob sees it), fsyncs, renames it into place and fsyncs the folder.
- :class:`S3Destination` uses one ``PutObject`` per file — S3 stores an object only when
  its whole body arrived (a connection cut mid-upload stores nothing), and reads after a
  put are strongly consistent. Files are at most a buffer's worth (≤ 128 MiB, Firehose's
  largest), far under the 5 GiB single-PUT limit, so no multipart upload, whose parts
  could outlive a crash, is ever started. S3 has no rename; nothing here needs one.

Fencing needs one more thing, a **conditional put** (:meth:`Destination.put_if`): store
only if the object is absent (:data:`ABSENT`) or still the version the caller read or wrote
last, else raise :class:`Conflict`. On S3 this is ``PutObject`` with ``If-None-Match: *`` or
``If-Match: <ETag>``; locally, creating with ``O_EXCL`` semantics (a hard link of the
written temporary file, which fails if the name exists) or replacing under an exclusive
``flock`` on a hidden lock file after comparing the content's hash. The progress protocol
puts its intent and state files this way, so a sink that lost its partitions (a zombie)
cannot overwrite what the new owner wrote.

Keys are ``/``-separated paths relative to the destination root. Pure I/O, no Kafka.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow.fs as pafs

from firelake.config import FirelakeConfig, SinkConfig

__all__ = [
    "ABSENT",
    "Conflict",
    "Destination",
    "LocalDestination",
    "ObjectInfo",
    "S3Destination",
    "S3Settings",
    "destination_for",
    "fsync_dir",
    "lake_destination",
    "open_destination",
]


#: ``put_if``'s expected version of an object that must not exist yet.
ABSENT = ""


class Conflict(Exception):
    """A conditional put found the object changed (or present) since the caller's version."""

    retriable = True

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        super().__init__(f"{key}: {detail}")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored file: key relative to the root, size in bytes, modification time (epoch s)."""

    key: str
    size: int
    mtime: float


class Destination(Protocol):
    """A root files are put into atomically."""

    url: str

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` all-or-nothing, replacing what was there."""
        ...

    def get(self, key: str) -> bytes | None:
        """The bytes under ``key``, None when there is none."""
        ...

    def get_versioned(self, key: str) -> tuple[bytes | None, str]:
        """The bytes under ``key`` and their version (:data:`ABSENT` when there is none)."""
        ...

    def put_if(self, key: str, data: bytes, expected: str) -> str:
        """Store ``data`` only if ``key`` is still at version ``expected`` (:data:`ABSENT`:
        not there); returns the new version, raises :class:`Conflict` otherwise."""
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Remove keys (absent ones are fine)."""
        ...

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every complete file under ``prefix`` (a folder key ending in '/'), sorted by key."""
        ...

    def uri(self, key: str) -> str:
        """Where a reader (DuckDB, pyarrow) finds ``key``."""
        ...

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and the root's path in it, for readers."""
        ...


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new or deleted file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version(data: bytes | None) -> str:
    """A local object's version: the hash of its bytes (:data:`ABSENT` for none)."""
    return ABSENT if data is None else hashlib.blake2b(data, digest_size=16).hexdigest()


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad key {key!r}")
    return key


class LocalDestination:
    """A folder on this machine."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @staticmethod
    def _write_tmp(path: Path, data: bytes) -> Path:
        """The bytes in the hidden temporary sibling of ``path``, synced to disk."""
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return tmp

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            self._write_tmp(path, data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def get_versioned(self, key: str) -> tuple[bytes | None, str]:
        data = self.get(key)
        return data, _version(data)

    @contextlib.contextmanager
    def locked(self, path: Path) -> Iterator[None]:
        """Hold an exclusive lock on ``path`` among local processes (``flock`` on its
        ``.<name>.lock`` beside it) while the block runs."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def put_if(self, key: str, data: bytes, expected: str) -> str:
        path = self.path(key)
        with self.locked(path):
            try:
                current = _version(path.read_bytes())
            except FileNotFoundError:
                current = ABSENT
            if current != expected:
                raise Conflict(key, f"changed since read (expected {expected or 'absent'})")
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                self._write_tmp(path, data)
                if expected == ABSENT:
                    os.link(tmp, path)  # O_EXCL semantics: fails if the name exists
                    tmp.unlink()
                else:
                    os.replace(tmp, path)
            except FileExistsError:
                tmp.unlink(missing_ok=True)
                raise Conflict(key, "created by someone else meanwhile") from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_dir(path.parent)
        return _version(data)

    def delete(self, keys: Iterable[str]) -> None:
        folders: set[Path] = set()
        for key in keys:
            path = self.path(key)
            # The temporary name too: a kill in the middle of a put leaves one behind.
            for candidate in (path, path.with_name(f".{path.name}.tmp")):
                try:
                    candidate.unlink()
                    folders.add(candidate.parent)
                except FileNotFoundError:
                    pass
        for folder in folders:
            fsync_dir(folder)

    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self.root / prefix if prefix else self.root
        found = []
        for current, dirs, names in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                if name.startswith("."):
                    continue
                path = Path(current) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # deleted while listing (compaction): not there any more
                found.append(
                    ObjectInfo(path.relative_to(self.root).as_posix(), stat.st_size, stat.st_mtime)
                )
        return sorted(found, key=lambda info: info.key)

    def uri(self, key: str) -> str:
        return str(self.path(key))

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), str(self.root.resolve())


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to reach S3: endpoint ('' = AWS), region, credentials ('' = boto3's chain)."""

    endpoint_url: str = ""
    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: str = ""

    @classmethod
    def of(cls, sink: SinkConfig) -> S3Settings:
        return cls(
            sink.s3_endpoint_url, sink.s3_region, sink.s3_access_key_id, sink.s3_secret_access_key
        )


class S3Destination:
    """A bucket and key prefix, through boto3 (writes) and pyarrow's S3 filesystem (reads)."""

    def __init__(self, url: str, settings: S3Settings | None = None) -> None:
        if not url.startswith("s3://"):
            raise ValueError(f"not an s3:// URL: {url!r}")
        bucket, _, prefix = url[5:].partition("/")
        if not bucket:
            raise ValueError(f"{url!r} names no bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.settings = settings or S3Settings()
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            kwargs: dict[str, Any] = {"region_name": self.settings.region}
            if self.settings.endpoint_url:
                kwargs["endpoint_url"] = self.settings.endpoint_url
            if self.settings.access_key_id:
                kwargs["aws_access_key_id"] = self.settings.access_key_id
                kwargs["aws_secret_access_key"] = self.settings.secret_access_key
            # Bounded retries with backoff (botocore's "standard" mode adds jitter).
            kwargs["config"] = Config(retries={"max_attempts": 5, "mode": "standard"})
            self._client = boto3.client("s3", **kwargs)
        return self._client

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes | None:
        return self.get_versioned(key)[0]

    def get_versioned(self, key: str) -> tuple[bytes | None, str]:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None, ABSENT
        return response["Body"].read(), response["ETag"]

    def put_if(self, key: str, data: bytes, expected: str) -> str:
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if expected == ABSENT else {"IfMatch": expected}
        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, **condition
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise Conflict(key, f"S3 refused the conditional put ({code or status})") from exc
            raise
        return response["ETag"]

    def delete(self, keys: Iterable[str]) -> None:
        batch = [{"Key": self._key(k)} for k in keys]
        for start in range(0, len(batch), 1000):  # DeleteObjects takes at most 1000 keys
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch[start : start + 1000], "Quiet": True}
            )

    def list(self, prefix: str) -> list[ObjectInfo]:
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", ()):
                key = item["Key"][len(self.prefix) :]
                if key.rsplit("/", 1)[-1].startswith("."):
                    continue
                found.append(ObjectInfo(key, item["Size"], item["LastModified"].timestamp()))
        return sorted(found, key=lambda info: info.key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def arrow_fs(self) -> tuple[pafs.FileSystem, str]:
        kwargs: dict[str, Any] = {"region": self.settings.region}
        if self.settings.endpoint_url:
            scheme, _, host = self.settings.endpoint_url.partition("://")
            kwargs["endpoint_override"] = host
            kwargs["scheme"] = scheme
        if self.settings.access_key_id:
            kwargs["access_key"] = self.settings.access_key_id
            kwargs["secret_key"] = self.settings.secret_access_key
        return pafs.S3FileSystem(**kwargs), f"{self.bucket}/{self.prefix}".rstrip("/")


def open_destination(url: str, settings: S3Settings | None = None) -> Destination:
    """The destination of a URL: ``s3://bucket/prefix`` or a local folder."""
    if url.startswith("s3://"):
        return S3Destination(url, settings)
    return LocalDestination(url)


def lake_destination(config: FirelakeConfig) -> Destination:
    """The ``[lake] root``: a local folder, or ``s3://bucket/prefix`` with its S3 settings."""
    lake = config.lake
    if lake.root.startswith("s3://"):
        settings = S3Settings(
            lake.s3_endpoint_url, lake.s3_region, lake.s3_access_key_id, lake.s3_secret_access_key
        )
        return S3Destination(lake.root, settings)
    return LocalDestination(config.lake_root)


def destination_for(config: FirelakeConfig, sink: SinkConfig) -> Destination:
    """Where a configured sink writes: its ``destination``, else the lake root."""
    if sink.destination.startswith("s3://"):
        return S3Destination(sink.destination, S3Settings.of(sink))
    if sink.destination:
        path = Path(sink.destination).expanduser()
        return LocalDestination(path if path.is_absolute() else Path(config.base_dir) / path)
    return lake_destination(config)
