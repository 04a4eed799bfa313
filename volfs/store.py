"""A store: one directory holding the catalog, the blobs, and the mounts' scratch areas.

Layout (all private, 0700)::

    <store>/format         "volfs-store <format_version>"
    <store>/catalog/       LMDB, durable (see catalog.py for the schema)
    <store>/runtime/       LMDB, mounts and open handles (not synced)
    <store>/blobs/ab/cd…   blobs, read-only files named by digest
    <store>/tmp/           blobs being written
    <store>/overlays/mo-…/ each mount's scratch area (see overlay.py)
    <store>/run/mo-….sock  each mount's control socket
    <store>/backend.json   distributed mode only: PostgreSQL + bucket (see remote.py);
                           then catalog/ and blobs/ are this machine's cache

Opening a store is cheap and idempotent; one :class:`Store` per path per process.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from volfs import remote
from volfs.blobs.local import LocalBlobStore
from volfs.catalog import FORMAT_VERSION, Catalog
from volfs.config import default_store_path
from volfs.errors import VolfsError, from_os_error

_STORES: dict[str, Store] = {}
_LOCK = threading.Lock()


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            fmt = root / "format"
            if fmt.exists():
                version = int(fmt.read_text().split()[-1])
                if version != FORMAT_VERSION:
                    raise VolfsError(f"store {root} has format {version}; this volfs reads {FORMAT_VERSION}")
            else:
                tmp = root / "format.tmp"
                tmp.write_text(f"volfs-store {FORMAT_VERSION}\n")
                os.replace(tmp, fmt)
            for sub in ("overlays", "run", "tmp"):
                (root / sub).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, f"opening the store at {root}") from exc
        config = remote.load(root)  # distributed mode: PostgreSQL + S3, local cache (remote.py)
        if config is not None:
            self.catalog, self.blobs = remote.open_backends(root, config)
        else:
            self.catalog = Catalog(root)
            self.blobs = LocalBlobStore(root / "blobs", root / "tmp")

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
