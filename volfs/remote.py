"""Distributed mode's configuration: which PostgreSQL and which bucket a store uses.

``volfs store init --meta postgresql://… --blobs s3://bucket/prefix`` writes
``<store>/backend.json`` (atomically: temp file, fsync, rename; mode 0600 since a database
URL may carry a password); :meth:`volfs.store.Store.open` reads it and builds a
:class:`~volfs.catalog.postgres.PgCatalog` and an :class:`~volfs.blobs.s3.S3BlobStore` instead of
the embedded backends. Without the file a store is embedded, exactly as before.

``backend.json``::

    {"meta": "postgresql://user@host:5432/db", "blobs": "s3://bucket/prefix",
     "endpoint": "http://127.0.0.1:17480" | null, "region": "us-east-1" | null,
     "cache_size": 8589934592}

Credentials are never written there: boto3 reads ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (or its other sources); a null endpoint falls back to
``VOLFS_S3_ENDPOINT``, then to boto3's own (``AWS_ENDPOINT_URL``, or AWS itself).

boto3 and psycopg are imported only here and below, so the embedded default needs neither.

Part of the composition root (with store.py): :func:`open_backends` is the one place that
builds the distributed backends and wires them together — the one bucket the blob store
and the catalog share, the LMDB catalog and blob directory they compose as caches.

Must not: import anything above the snapshots layer.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volfs.errors import InvalidError, VolfsError

if TYPE_CHECKING:  # the backends' modules import boto3/psycopg lazily; only their types here
    from volfs.blobs.s3 import S3BlobStore
    from volfs.catalog.postgres import PgCatalog

CONFIG_NAME = "backend.json"
DEFAULT_CACHE_SIZE = 8 << 30
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class RemoteConfig:
    meta: str
    blobs: str
    endpoint: str | None = None
    region: str | None = None
    cache_size: int = DEFAULT_CACHE_SIZE

    @property
    def bucket(self) -> str:
        return parse_blobs_url(self.blobs)[0]

    @property
    def prefix(self) -> str:
        return parse_blobs_url(self.blobs)[1]

    def effective_endpoint(self) -> str | None:
        return self.endpoint or os.environ.get("VOLFS_S3_ENDPOINT") or None

    def effective_region(self) -> str | None:
        return (
            self.region
            or os.environ.get("VOLFS_S3_REGION")
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )


def parse_blobs_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix); the prefix may be empty."""
    m = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?", url)
    if m is None:
        raise InvalidError(f"--blobs must look like s3://bucket/prefix, not {url!r}")
    prefix = (m.group(2) or "").strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise InvalidError(f"bad prefix in {url!r}")
    return m.group(1), prefix


def check_meta_url(url: str) -> str:
    if not re.match(r"postgres(ql)?://", url):
        raise InvalidError(f"--meta must be a postgresql:// URL, not {url!r}")
    return url


def parse_size(text: str) -> int:
    """``512M``, ``10G``, ``1.5T``, ``1000`` (bytes) -> bytes."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", text.upper())
    if m is None:
        raise InvalidError(f"bad size {text!r} (expected e.g. 512M, 10G)")
    size = int(float(m.group(1)) * _UNITS[m.group(2)])
    if size < 1 << 20:
        raise InvalidError(f"cache size {text!r} is too small (at least 1M)")
    return size


def load(root: Path) -> RemoteConfig | None:
    path = root / CONFIG_NAME
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VolfsError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data: dict[str, Any] = json.loads(raw)
        return RemoteConfig(**data)
    except (ValueError, TypeError) as exc:
        raise VolfsError(f"{path} is damaged ({exc}); run `volfs store init` again") from None


def save(root: Path, config: RemoteConfig) -> None:
    path = root / CONFIG_NAME
    tmp = root / (CONFIG_NAME + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (json.dumps(asdict(config), indent=1) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def open_backends(root: Path, config: RemoteConfig) -> tuple[PgCatalog, S3BlobStore]:
    """(catalog, blobs) of a distributed store; nothing is contacted until first use."""
    try:
        import boto3  # noqa: F401
        import psycopg  # noqa: F401

        from volfs.blobs.local import LocalBlobStore
        from volfs.blobs.s3 import Bucket, S3BlobStore
        from volfs.catalog.lmdb import LmdbCatalog
        from volfs.catalog.postgres import PgCatalog
    except ImportError as exc:
        raise VolfsError(
            f"distributed mode needs boto3 and psycopg: pip install 'volfs[distributed]' ({exc})"
        ) from None
    # One bucket for both: the blob store's blobs and the catalog's trees (and gc sweeps both).
    bucket = Bucket(
        config.bucket,
        config.prefix,
        endpoint=config.effective_endpoint(),
        region=config.effective_region(),
    )
    catalog = PgCatalog(LmdbCatalog(root), config.meta, bucket)
    blobs = S3BlobStore(LocalBlobStore(root / "blobs", root / "tmp"), bucket, config.cache_size)
    catalog.on_gc.append(blobs.forget_remote)  # gc may have deleted what it remembers uploading
    return catalog, blobs


def store_identity(root: Path) -> str:
    """What makes two store directories the same store, for telling whose a mount is:
    ``local:<resolved path>`` for an embedded store; for a distributed one
    ``meta:<metadata URL>|<blobs URL>`` (two hosts' local caches of one store agree on it),
    with the password dropped and host and scheme lowercased, since it is shown in a mount's
    control attribute, readable by whoever can read the mount's root."""
    config = load(root)
    if config is None:
        return f"local:{os.path.realpath(root)}"
    from urllib.parse import urlsplit  # only distributed mode needs it

    try:
        url = urlsplit(config.meta)
        host = (url.hostname or "").lower()
        port = url.port or 5432
        user = f"{url.username}@" if url.username else ""
        meta = f"{url.scheme.lower()}://{user}{host}:{port}{url.path or '/'}"
    except ValueError:  # a URL urlsplit cannot parse: compare it as written
        meta = config.meta.split("?", 1)[0]
    return f"meta:{meta}|{config.blobs}"
