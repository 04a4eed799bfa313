"""A store: one directory holding the catalog, the blobs, and the mounts' scratch areas.

Layout (all private, 0700)::

    <store>/format         "volfs-store <format_version>" (2; a format 1 store is upgraded
                           in place when opened, see catalog.FORMAT_VERSION)
    <store>/catalog/       LMDB, durable (see volfs/catalog/ for the schema)
    <store>/runtime/       LMDB, mounts and open handles (not synced)
    <store>/blobs/ab/cd…   blobs, read-only files named by digest
    <store>/tmp/           blobs being written
    <store>/overlays/mo-…/ each mount's scratch area (see overlay.py)
    <store>/run/mo-….sock  each mount's control socket
    <store>/backend.json   distributed mode only: PostgreSQL + bucket (see remote.py);
                           then catalog/ and blobs/ are this machine's cache

Opening a store is cheap and idempotent; one :class:`Store` per path per process.

This is the composition root: the one place (with remote.py, which builds the distributed
backends) that picks the catalog and blob backends. Everything above holds
``store.catalog`` as a :class:`volfs.catalog.Catalog` and ``store.blobs`` as a
:class:`volfs.blobs.BlobStore` and never asks which backend it has; what differs is
declared in those interfaces as capabilities.

Must not: import anything above the snapshots layer; let a backend type leak into the
attributes' types.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
from pathlib import Path

from volfs import remote
from volfs.blobs import BlobStore
from volfs.blobs.local import LocalBlobStore
from volfs.catalog import FORMAT_VERSION, Catalog
from volfs.catalog.lmdb import LmdbCatalog
from volfs.config import default_store_path
from volfs.errors import VolfsError, from_os_error

log = logging.getLogger(__name__)
_STORES: dict[str, Store] = {}
_LOCK = threading.Lock()


class Store:
    catalog: Catalog
    blobs: BlobStore

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            fmt = root / "format"
            if fmt.exists():
                version = _read_format(fmt)
                if version > FORMAT_VERSION or version < 1:
                    raise VolfsError(
                        f"store {root} has format {version}; this volfs reads formats "
                        f"1 to {FORMAT_VERSION} (upgrade volfs)"
                    )
            else:
                version = FORMAT_VERSION
                _write_format(fmt)
            for sub in ("overlays", "run", "tmp"):
                (root / sub).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, f"opening the store at {root}") from exc
        config = remote.load(root)  # distributed mode: PostgreSQL + S3, local cache (remote.py)
        if config is not None:
            self.catalog, self.blobs = remote.open_backends(root, config)
        else:
            self.catalog = LmdbCatalog(root)
            self.blobs = LocalBlobStore(root / "blobs", root / "tmp")
        if version < FORMAT_VERSION:
            # After the catalog (which upgrades its own records when opened): the format
            # file says 2 only once everything else does.
            try:
                _upgrade_format(fmt)
            except OSError as exc:
                raise from_os_error(exc, f"upgrading the store at {root}") from exc

    @property
    def format_version(self) -> int:
        """The store's format (``<store>/format``): FORMAT_VERSION once opened writable."""
        return _read_format(self.root / "format")

    @property
    def overlays_dir(self) -> Path:
        return self.root / "overlays"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @staticmethod
    def open(path: str | os.PathLike[str] | None = None) -> Store:
        root = Path(path) if path is not None else default_store_path()
        key = str(root.absolute())
        with _LOCK:
            store = _STORES.get(key)
            if store is None:
                store = Store(Path(key))
                _STORES[key] = store
            return store


def _read_format(fmt: Path) -> int:
    text = fmt.read_text().split()
    if len(text) != 2 or text[0] != "volfs-store" or not text[1].isdigit():
        raise VolfsError(f"{fmt} is not a volfs store format file ({' '.join(text)[:40]!r})")
    return int(text[1])


def _write_format(fmt: Path) -> None:
    """Writes the format file whole or not at all: a temp file, fsynced, renamed over it."""
    tmp = fmt.with_name(f"format.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # two openers may race
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"volfs-store {FORMAT_VERSION}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, fmt)
    dir_fd = os.open(fmt.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _upgrade_format(fmt: Path) -> None:
    """A format 1 store becomes format 2 in place. Nothing stored changes: format 2 only adds
    tree and record fields (VT1 trees keep decoding). A store this process cannot write (a
    read-only filesystem, another user's) is read as it is."""
    try:
        _write_format(fmt)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        log.info("store %s stays at format 1 (not writable here: %s)", fmt.parent, exc.strerror)
