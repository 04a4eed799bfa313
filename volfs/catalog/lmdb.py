"""The embedded catalog: LMDB holds volumes, snapshots, heads and trees (the truth), and
this machine's runtime tables (mounts, open handles, leases).

This module owns the two LMDB environments of a store (``catalog/`` durable,
``runtime/`` not synced) laid out as the schema in :mod:`volfs.catalog` says, and
:class:`LmdbCatalog`, which implements the :class:`volfs.catalog.Catalog` interface on
them. In distributed mode the same class is the PostgreSQL catalog's local cache
(postgres.py composes one): it then holds cached trees, the trees of this machine's
mounts' views and the runtime tables, and nothing it holds is the truth of a head.

Concurrency: one ``lmdb.Environment`` per path per process (LMDB forbids opening the
same environment twice in one process), kept in ``_ENVS``; each transaction opens and
closes inside one call here and never spans an ``await``. LMDB serialises writers across
processes, which is what makes :meth:`LmdbCatalog.advance_head` a compare-and-swap.

Must not: know about PostgreSQL, buckets or FUSE; keep a transaction open past a call.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import lmdb

from volfs import locks
from volfs.blobs import Digest, ObjectStore
from volfs.catalog.records import (
    FORMAT_VERSION,
    HeadMoved,
    Lease,
    MountRecord,
    Pin,
    SnapshotId,
    SnapshotRecord,
    VolumeId,
    VolumeRecord,
    follow_parents,
    new_id,
    new_volume_records,
    process_start,
)
from volfs.catalog.watch import PollWatch
from volfs.core.tree import EMPTY_TREE, Tree, decode_verified, encode, tree_digest
from volfs.errors import (
    AlreadyExistsError,
    CorruptionError,
    NotFoundError,
    PidCollisionError,
    VolfsError,
    from_os_error,
)

log = logging.getLogger("volfs.catalog")  # the name its log lines have always had
#: One LMDB environment per catalog directory and process (LMDB requires it); kept open
#: for the process's life, as a store usually is.
_ENVS: dict[str, lmdb.Environment] = {}
_ENVS_LOCK = threading.Lock()


def close_environments(under: Path) -> int:
    """Closes the LMDB environments of catalogs below ``under``; how many. Every Catalog of
    them is unusable afterwards: for a process done with those stores (a test)."""
    prefix = str(under.resolve()) + os.sep
    with _ENVS_LOCK:
        keys = [key for key in _ENVS if key.startswith(prefix)]
        for key in keys:
            _ENVS.pop(key).close()
    return len(keys)


def _open_env(path: Path, *, durable: bool) -> lmdb.Environment:
    key = str(path.resolve())
    with _ENVS_LOCK:
        env = _ENVS.get(key)
        if env is None:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                env = lmdb.open(
                    key,
                    map_size=1 << 38,
                    max_dbs=16,
                    max_readers=1024,
                    sync=durable,
                    metasync=durable,
                    readahead=False,
                )
            except lmdb.LockError as exc:
                raise PidCollisionError(
                    f"cannot open the catalog at {key}: pid {os.getpid()} is in use by a "
                    "process of another PID namespace that has the store open (LMDB's "
                    "reader lock); retry from a process with another pid"
                ) from exc
            except lmdb.Error as exc:
                raise VolfsError(f"cannot open the catalog at {key}: {exc}") from exc
            _ENVS[key] = env
        return env


@contextmanager
def _writing(env: lmdb.Environment, path: Path) -> Iterator[lmdb.Transaction]:
    """A write transaction; a full disk raises StoreFullError (exit 9), not an internal error."""
    try:
        with env.begin(write=True) as txn:
            yield txn
    except lmdb.MapFullError as exc:
        raise from_os_error(OSError(28, "catalog map full"), "writing the catalog") from exc
    except lmdb.Error as exc:
        # LMDB reports a write cut short by a full disk as EIO ("short write").
        if "No space" in str(exc) or _disk_full(path):
            raise from_os_error(OSError(28, str(exc)), "writing the catalog") from exc
        raise


def _flock_within(fd: int, timeout: float) -> bool:
    """Takes ``fd``'s exclusive flock within ``timeout`` seconds. False if not: the fd then
    belongs to a thread still blocked on the lock, which closes it (dropping the lock)
    once it gets it. A blocked flock cannot be given a timeout, hence the thread."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    got = threading.Event()
    mutex = threading.Lock()
    abandoned = False

    def wait() -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with mutex:
            if abandoned:
                os.close(fd)
            else:
                got.set()

    threading.Thread(target=wait, name="head turn", daemon=True).start()
    if got.wait(timeout):
        return True
    with mutex:
        if got.is_set():
            return True
        abandoned = True
    return False


def _disk_full(path: Path) -> bool:
    """Less than a few pages free for unprivileged writers on ``path``'s filesystem."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def _name_key(environment: str, name: str) -> bytes:
    return environment.encode() + b"\0" + name.encode()


class _TreeCache(OrderedDict[Digest, Tree]):
    """Decoded trees, least recently used first, bounded in trees and in entries (the
    newest tree stays, however large). Not thread-safe: the catalog holds its lock."""

    def __init__(self, max_trees: int, max_entries: int) -> None:
        super().__init__()
        self.max_trees, self.max_entries = max_trees, max_entries
        self.entries = 0

    def put(self, digest: Digest, tree: Tree) -> None:
        self.pop(digest, None)
        self[digest] = tree
        self.entries += tree.weight
        while len(self) > 1 and (len(self) > self.max_trees or self.entries > self.max_entries):
            self.popitem(last=False)

    def pop(self, digest: Digest, default: Tree | None = None) -> Tree | None:  # type: ignore[override]
        tree = super().pop(digest, None)
        if tree is None:
            return default
        self.entries -= tree.weight
        return tree

    def popitem(self, last: bool = True) -> tuple[Digest, Tree]:
        digest, tree = super().popitem(last)
        self.entries -= tree.weight
        return digest, tree

    def clear(self) -> None:
        super().clear()
        self.entries = 0


class LmdbCatalog:
    """The :class:`volfs.catalog.Catalog` of an embedded store (module docstring)."""

    TREE_CACHE_SIZE = 4096
    #: ...and at most about this many entries in all: a decoded entry costs ~0.5 KB, and a
    #: mount's memory must follow what the kernel references, not every tree it listed.
    TREE_CACHE_ENTRIES = 65_536
    #: Capability (see the interface): the trees are here, in LMDB, not in a shared bucket.
    bucket: ObjectStore | None = None

    def __init__(self, root: Path) -> None:
        self._path = root
        self.env = _open_env(root / "catalog", durable=True)
        self.runtime = _open_env(root / "runtime", durable=False)
        self._meta = self.env.open_db(b"meta")
        self._names = self.env.open_db(b"names")
        self._volumes = self.env.open_db(b"volumes")
        self._snapshots = self.env.open_db(b"snapshots")
        self._trees = self.env.open_db(b"trees")
        self._mounts = self.runtime.open_db(b"mounts")
        self._handles = self.runtime.open_db(b"handles")
        self._fresh = self.env.open_db(b"fresh")
        self._settings = self.env.open_db(b"settings")
        self._damaged = self.env.open_db(b"damaged")
        self._leases = self.runtime.open_db(b"leases")
        self._tree_cache = _TreeCache(self.TREE_CACHE_SIZE, self.TREE_CACHE_ENTRIES)
        #: Where split trees read their leaves: this catalog, or the catalog it caches for
        #: (the distributed catalog, whose leaves may be only in the bucket).
        self.load_leaf: Callable[[Digest], Tree] = self.get_tree
        self._cache_lock = threading.Lock()
        #: Counters the tests assert on where cost matters.
        self.stats = {"trees_written": 0, "trees_read": 0, "tree_bytes_read": 0}
        with self.env.begin() as txn:
            stored = txn.get(b"format_version", db=self._meta)
        if stored is None or int(stored) < FORMAT_VERSION:
            with self._write() as txn:
                self._init_or_upgrade(txn)

    def _init_or_upgrade(self, txn: lmdb.Transaction) -> None:
        """A new catalog gets the format version and the empty tree; a format 1 catalog is
        upgraded in place: the meta record and every volume record say format 2 (their
        stored VT1 trees stay and decode; every tree written from now on is VT2)."""
        stored = txn.get(b"format_version", db=self._meta)
        if stored is None:
            txn.put(b"format_version", str(FORMAT_VERSION).encode(), db=self._meta)
            txn.put(bytes.fromhex(tree_digest(EMPTY_TREE)), encode(EMPTY_TREE), db=self._trees)
            return
        if int(stored) >= FORMAT_VERSION:
            return  # another process upgraded it between our read and this transaction
        for key, raw in list(txn.cursor(db=self._volumes)):
            volume = _volume_from_json(bytes(raw))
            if volume.format_version < FORMAT_VERSION:
                txn.put(
                    bytes(key),
                    _volume_json(dataclasses.replace(volume, format_version=FORMAT_VERSION)),
                    db=self._volumes,
                )
        txn.put(b"format_version", str(FORMAT_VERSION).encode(), db=self._meta)
        log.info(
            "catalog %s upgraded from format %s to %d", self._path, int(stored), FORMAT_VERSION
        )

    def _write(self) -> AbstractContextManager[lmdb.Transaction]:
        return _writing(self.env, self._path)

    def _write_runtime(self) -> AbstractContextManager[lmdb.Transaction]:
        return _writing(self.runtime, self._path)

    @property
    def root(self) -> Path:
        """The store directory holding ``catalog/`` and ``runtime/``."""
        return self._path

    @property
    def format_version(self) -> int:
        with self.env.begin() as txn:
            stored = txn.get(b"format_version", db=self._meta)
        if stored is None:  # written when the catalog was opened: only a damaged one lacks it
            raise CorruptionError(f"the catalog at {self._path} has no format version")
        return int(stored)

    def check(self) -> None:
        """Nothing to reach: opening the environments checked them."""

    # -- trees ---------------------------------------------------------------------------
    def get_tree(self, digest: Digest) -> Tree:
        with self._cache_lock:
            tree = self._tree_cache.get(digest)
            if tree is not None:
                self._tree_cache.move_to_end(digest)
                return tree
        with self.env.begin() as txn:
            raw = txn.get(bytes.fromhex(digest), db=self._trees)
        if raw is None:
            raise NotFoundError(f"tree {digest} is missing from the catalog")
        # Verify like a blob (xxh3 costs little next to decoding): a damaged tree must
        # fail loudly, never list wrong entries.
        try:
            tree = decode_verified(raw, digest, self.load_leaf)
        except ValueError as exc:
            log.error("tree %s in the catalog is damaged (%s)", digest, exc)
            raise CorruptionError(f"tree {digest} is damaged ({exc})") from None
        self.stats["trees_read"] += 1
        self.stats["tree_bytes_read"] += len(raw)
        with self._cache_lock:
            self._tree_cache.put(digest, tree)
        return tree

    def remember_trees(self, trees: Mapping[Digest, Tree]) -> None:
        """Caches trees this process built and stored, so reading them back decodes nothing
        (a commit's new trees are the next commit's and the next reload's first reads)."""
        with self._cache_lock:
            for digest, tree in trees.items():
                if tree.leaves is not None:  # read its leaves from here, not from its writer
                    tree = Tree(leaves=tree.leaves, load=self.load_leaf)
                self._tree_cache.put(digest, tree)

    def put_trees(self, trees: dict[Digest, bytes]) -> None:
        """Stores trees that no head names yet (a mount's view, for its next diff).

        Each is marked fresh (``fresh``), even if it was stored before: ``volfs gc`` keeps a
        fresh tree for its grace window, though no snapshot names it.
        """
        now = struct.pack("<d", time.time())
        with self._write() as txn:
            for digest, data in trees.items():
                key = bytes.fromhex(digest)
                txn.put(key, data, db=self._trees, overwrite=False)
                txn.put(key, now, db=self._fresh)

    def cache_trees(self, trees: Mapping[Digest, bytes]) -> None:
        """Stores trees that are kept elsewhere too, *without* a ``fresh`` record: for the
        distributed catalog caching trees it published or fetched (they are in the bucket,
        so nothing here needs protecting from gc)."""
        with self._write() as txn:
            for digest, data in trees.items():
                txn.put(bytes.fromhex(digest), data, db=self._trees, overwrite=False)

    def is_fresh(self, digest: Digest) -> bool:
        """True if the tree has a ``fresh`` record (``put_trees`` or ``advance_head`` stored
        it, and gc has not pruned the record since)."""
        with self.env.begin() as txn:
            return txn.get(bytes.fromhex(digest), db=self._fresh) is not None

    def has_tree(self, digest: Digest) -> bool:
        with self.env.begin() as txn:
            return txn.get(bytes.fromhex(digest), db=self._trees) is not None

    def iter_trees(self) -> Iterator[tuple[Digest, bytes]]:
        with self.env.begin() as txn:
            for key, value in txn.cursor(db=self._trees):
                yield Digest(bytes(key).hex()), bytes(value)

    def get_tree_raw(self, digest: Digest) -> bytes | None:
        """The stored bytes of a tree, unverified and uncached (for fsck); None if missing."""
        with self.env.begin() as txn:
            raw = txn.get(bytes.fromhex(digest), db=self._trees)
        return bytes(raw) if raw is not None else None

    def tree_digests(self) -> list[Digest]:
        with self.env.begin() as txn:
            return [
                Digest(bytes(key).hex())
                for key in txn.cursor(db=self._trees).iternext(values=False)
            ]

    def fresh_trees(self) -> dict[Digest, float]:
        """Trees written within gc's reach, and when each was last written."""
        with self.env.begin() as txn:
            return {
                Digest(bytes(k).hex()): struct.unpack("<d", bytes(v))[0]
                for k, v in txn.cursor(db=self._fresh)
            }

    # -- volumes -------------------------------------------------------------------------
    def create_volume(self, environment: str, name: str, created_by: str) -> VolumeRecord:
        volume, snapshot = new_volume_records(environment, name, created_by)
        volume_id = volume.id
        with self._write() as txn:
            if not txn.put(
                _name_key(environment, name), volume_id.encode(), db=self._names, overwrite=False
            ):
                raise AlreadyExistsError(
                    f"volume {name!r} already exists in environment {environment!r}"
                )
            txn.put(snapshot.id.encode(), snapshot.to_json(), db=self._snapshots)
            txn.put(volume_id.encode(), _volume_json(volume), db=self._volumes)
        return volume

    def fork_volume(
        self, environment: str, name: str, created_by: str, source: SnapshotId, origin: str
    ) -> VolumeRecord:
        """Three entries (name, volume, snapshot) in one write transaction. ``volfs gc``'s
        sweep is a write transaction too, so it either ran before (and a ``source`` it
        dropped is missing here) or runs after and sees the new snapshot, whose root it
        then marks like any other's."""
        with self._write() as txn:
            raw = txn.get(source.encode(), db=self._snapshots)
            if raw is None:
                raise NotFoundError(f"snapshot {source} not found (dropped by retention?)")
            root = SnapshotRecord.from_json(bytes(raw)).root
            if root.tree is None or txn.get(bytes.fromhex(root.tree), db=self._trees) is None:
                raise CorruptionError(
                    f"the root tree of snapshot {source} is missing; run `volfs fsck`"
                )
            volume, snapshot = new_volume_records(
                environment, name, created_by, root=root, origin=origin
            )
            if not txn.put(
                _name_key(environment, name), volume.id.encode(), db=self._names, overwrite=False
            ):
                raise AlreadyExistsError(
                    f"volume {name!r} already exists in environment {environment!r}"
                )
            txn.put(snapshot.id.encode(), snapshot.to_json(), db=self._snapshots)
            txn.put(volume.id.encode(), _volume_json(volume), db=self._volumes)
        return volume

    def find_volume(self, environment: str, name: str) -> VolumeRecord | None:
        with self.env.begin() as txn:
            vid = txn.get(_name_key(environment, name), db=self._names)
            if vid is None:
                return None
            raw = txn.get(bytes(vid), db=self._volumes)
        return _volume_from_json(raw) if raw is not None else None

    def get_volume(self, environment: str, name: str) -> VolumeRecord:
        volume = self.find_volume(environment, name)
        if volume is None:
            raise NotFoundError(f"volume {name!r} not found in environment {environment!r}")
        return volume

    def get_volume_by_id(self, volume_id: str) -> VolumeRecord:
        with self.env.begin() as txn:
            raw = txn.get(volume_id.encode(), db=self._volumes)
        if raw is None:
            raise NotFoundError(f"volume {volume_id} not found (deleted?)")
        return _volume_from_json(raw)

    def list_volumes(self, environment: str | None = None) -> list[VolumeRecord]:
        with self.env.begin() as txn:
            volumes = [_volume_from_json(bytes(v)) for _, v in txn.cursor(db=self._volumes)]
        if environment is not None:
            volumes = [v for v in volumes if v.environment == environment]
        return sorted(volumes, key=lambda v: (v.created_at, v.name))

    def delete_volume(self, environment: str, name: str) -> VolumeRecord:
        with self._write() as txn:
            vid = txn.get(_name_key(environment, name), db=self._names)
            if vid is None:
                raise NotFoundError(f"volume {name!r} not found in environment {environment!r}")
            raw = txn.get(bytes(vid), db=self._volumes)
            txn.delete(_name_key(environment, name), db=self._names)
            txn.delete(bytes(vid), db=self._volumes)
        if raw is None:  # a name naming no volume (fsck: "name-index"): the name is gone now
            raise NotFoundError(f"volume {name!r} not found in environment {environment!r}")
        return _volume_from_json(raw)

    def rename_volume(self, environment: str, old: str, new: str) -> VolumeRecord:
        with self._write() as txn:
            vid = txn.get(_name_key(environment, old), db=self._names)
            if vid is None:
                raise NotFoundError(f"volume {old!r} not found in environment {environment!r}")
            if txn.get(_name_key(environment, new), db=self._names) is not None:
                raise AlreadyExistsError(
                    f"volume {new!r} already exists in environment {environment!r}"
                )
            raw = txn.get(bytes(vid), db=self._volumes)
            if raw is None:  # a name naming no volume (fsck: "name-index")
                raise NotFoundError(f"volume {old!r} not found in environment {environment!r}")
            volume = dataclasses.replace(_volume_from_json(raw), name=new)
            txn.delete(_name_key(environment, old), db=self._names)
            txn.put(_name_key(environment, new), bytes(vid), db=self._names)
            txn.put(bytes(vid), _volume_json(volume), db=self._volumes)
        return volume

    # -- snapshots and heads -------------------------------------------------------------
    def get_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        with self.env.begin() as txn:
            raw = txn.get(snapshot_id.encode(), db=self._snapshots)
        if raw is None:
            raise NotFoundError(f"snapshot {snapshot_id!r} not found")
        return SnapshotRecord.from_json(raw)

    def head(self, volume_id: str) -> SnapshotRecord:
        return self.get_snapshot(self.get_volume_by_id(volume_id).head)

    def advance_head(
        self, expected: SnapshotId, snapshot: SnapshotRecord, trees: dict[Digest, bytes]
    ) -> None:
        """Stores ``trees`` and ``snapshot`` and moves the head to it, if head is ``expected``.

        The caller must have made every blob the trees name durable first.
        """
        with self._write() as txn:
            raw = txn.get(snapshot.volume_id.encode(), db=self._volumes)
            if raw is None:
                raise NotFoundError(f"volume {snapshot.volume_id} was deleted")
            volume = _volume_from_json(raw)
            if volume.head != expected:
                raise HeadMoved(f"head of {volume.name} moved from {expected} to {volume.head}")
            now = struct.pack("<d", time.time())
            for digest, data in trees.items():
                txn.put(bytes.fromhex(digest), data, db=self._trees, overwrite=False)
                txn.put(bytes.fromhex(digest), now, db=self._fresh)  # see ``fresh``
            txn.put(snapshot.id.encode(), snapshot.to_json(), db=self._snapshots)
            txn.put(
                volume.id.encode(),
                _volume_json(dataclasses.replace(volume, head=snapshot.id)),
                db=self._volumes,
            )
        self.stats["trees_written"] += len(trees)

    #: How long a committer waits for its turn before it merges without one (a holder
    #: that cannot be frozen forever: a paused container; the swap still guards the head).
    HEAD_TURN_TIMEOUT = 30.0

    @contextmanager
    def head_turn(self, volume_id: str) -> Iterator[None]:
        """An exclusive ``flock`` on ``<store>/run/head-<volume>.lock``: held across a build,
        a merge and one LMDB transaction, and dropped by the kernel if its holder dies."""
        if "/" in volume_id or volume_id.startswith("."):
            raise NotFoundError(f"volume {volume_id!r} not found")
        run = self._path / "run"
        try:
            run.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(
                run / f"head-{volume_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:  # the commit itself reports what is wrong with the store
            log.debug("committing to %s without a head turn: %s", volume_id, exc)
            yield
            return
        if not _flock_within(fd, self.HEAD_TURN_TIMEOUT):
            log.warning(
                "committing to %s without a head turn: another writer has held it for %.0f s",
                volume_id,
                self.HEAD_TURN_TIMEOUT,
            )
            yield  # the fd now belongs to the thread still waiting for the lock
            return
        try:
            yield
        finally:
            os.close(fd)  # drops the lock

    def history(self, volume_id: str, limit: int | None = None) -> Iterator[SnapshotRecord]:
        """The head, then its parents; stops where retention dropped a parent."""
        return follow_parents(self.head(volume_id), self.find_snapshot, limit)

    def watch_head(self, volume_id: str) -> PollWatch:
        """The head is one LMDB read: polled each interval (``watch.py``)."""
        return PollWatch()

    def find_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        with self.env.begin() as txn:
            raw = txn.get(snapshot_id.encode(), db=self._snapshots)
        return SnapshotRecord.from_json(raw) if raw is not None else None

    def iter_snapshots_raw(self) -> list[tuple[str, bytes]]:
        """Every snapshot record, undecoded (fsck reports the ones that do not decode)."""
        with self.env.begin() as txn:
            return [
                (bytes(k).decode(errors="replace"), bytes(v))
                for k, v in txn.cursor(db=self._snapshots)
            ]

    def iter_names(self) -> list[tuple[str, str, str]]:
        """(environment, name, volume id) of every entry of the name index."""
        out = []
        with self.env.begin() as txn:
            for key, value in txn.cursor(db=self._names):
                environment, _, name = bytes(key).partition(b"\0")
                out.append((environment.decode(), name.decode(), bytes(value).decode()))
        return out

    def rollback_head(
        self, expected: SnapshotId, snapshot: SnapshotRecord, source: SnapshotId
    ) -> None:
        """Moves the head to ``snapshot`` (whose root is ``source``'s), if head is ``expected``.

        Like :meth:`advance_head` with no new trees, but it also checks, in the same
        transaction, that ``source`` and its root tree still exist: ``volfs gc`` may have
        dropped them since the caller read them.
        """
        with self._write() as txn:
            raw = txn.get(snapshot.volume_id.encode(), db=self._volumes)
            if raw is None:
                raise NotFoundError(f"volume {snapshot.volume_id} was deleted")
            volume = _volume_from_json(bytes(raw))
            if volume.head != expected:
                raise HeadMoved(f"head of {volume.name} moved from {expected} to {volume.head}")
            if txn.get(source.encode(), db=self._snapshots) is None:
                raise NotFoundError(f"snapshot {source} was dropped by retention meanwhile")
            assert snapshot.root.tree is not None
            if txn.get(bytes.fromhex(snapshot.root.tree), db=self._trees) is None:
                raise CorruptionError(
                    f"the root tree of snapshot {source} is missing; run `volfs fsck`"
                )
            txn.put(snapshot.id.encode(), snapshot.to_json(), db=self._snapshots)
            txn.put(
                volume.id.encode(),
                _volume_json(dataclasses.replace(volume, head=snapshot.id)),
                db=self._volumes,
            )

    # -- retention and damage marks -------------------------------------------------------
    def get_retention(self, volume_id: str) -> dict[str, Any] | None:
        with self.env.begin() as txn:
            raw = txn.get(b"retention\0" + volume_id.encode(), db=self._settings)
        return json.loads(raw) if raw is not None else None

    def set_retention(self, volume_id: str, policy: dict[str, Any] | None) -> None:
        """Sets a volume's retention (None: keep every snapshot)."""
        key = b"retention\0" + volume_id.encode()
        with self._write() as txn:
            if txn.get(volume_id.encode(), db=self._volumes) is None:
                raise NotFoundError(f"volume {volume_id} not found (deleted?)")
            if policy is None:
                txn.delete(key, db=self._settings)
            else:
                txn.put(key, json.dumps(policy).encode(), db=self._settings)

    def mark_damaged(self, snapshot_id: str, problems: list[str]) -> None:
        record = {"time": time.time(), "problems": problems}
        with self._write() as txn:
            txn.put(snapshot_id.encode(), json.dumps(record).encode(), db=self._damaged)

    def clear_damaged(self, snapshot_id: str) -> None:
        with self._write() as txn:
            txn.delete(snapshot_id.encode(), db=self._damaged)

    def damaged(self) -> dict[str, dict[str, Any]]:
        """Snapshots ``volfs fsck --repair`` marked damaged, with what it found."""
        with self.env.begin() as txn:
            return {
                bytes(k).decode(): json.loads(bytes(v)) for k, v in txn.cursor(db=self._damaged)
            }

    # -- gc ----------------------------------------------------------------------------------
    @contextmanager
    def sweep(self) -> Iterator[LmdbSweep]:
        """One write transaction for ``volfs gc``: no commit lands while it is open."""
        with self._write() as txn:
            sweep = LmdbSweep(self, txn)
            yield sweep
        with self._cache_lock:
            for digest in sweep.deleted_trees:
                self._tree_cache.pop(digest, None)

    @contextmanager
    def gc_lock(self) -> Iterator[None]:
        """Nothing to wait for: here a writer's safety against gc is its lease's ``since``
        and the sweep's one write transaction (LMDB serialises it with head moves), not a
        lock held across the whole collection."""
        yield

    def live_pins(self, timeout: float, *, prune: bool = False) -> list[Pin]:
        """None: this machine's mounts are in the runtime table (:meth:`list_mounts`), and no
        other machine mounts an embedded store."""
        return []

    def delete_snapshots(self, snapshot_ids: Sequence[str]) -> list[str]:
        """Deletes these snapshots (never a current head), their damage marks and the
        retention settings of deleted volumes, in one write transaction; returns what it
        deleted."""
        gone = []
        with self._write() as txn:
            heads = {
                VolumeRecord.from_json(bytes(raw)).head for _, raw in txn.cursor(db=self._volumes)
            }
            for snapshot_id in snapshot_ids:
                if snapshot_id in heads:
                    continue
                if txn.delete(snapshot_id.encode(), db=self._snapshots):
                    txn.delete(snapshot_id.encode(), db=self._damaged)
                    gone.append(snapshot_id)
            _drop_settings_of_deleted_volumes(txn, self)
        return gone

    # -- runtime: mounts and open handles -------------------------------------------------
    def register_mount(self, mount: MountRecord) -> None:
        with self._write_runtime() as txn:
            txn.put(
                mount.id.encode(), json.dumps(dataclasses.asdict(mount)).encode(), db=self._mounts
            )

    def update_mount(self, mount: MountRecord) -> None:
        self.register_mount(mount)

    def set_mount_base(self, mount_id: str, base: SnapshotId) -> None:
        """A mount reloaded onto ``base``: its record names it, so ``volfs gc`` keeps it."""
        with self._write_runtime() as txn:
            raw = txn.get(mount_id.encode(), db=self._mounts)
            if raw is None:
                return
            record = json.loads(bytes(raw))
            record["base"] = base
            txn.put(mount_id.encode(), json.dumps(record).encode(), db=self._mounts)

    def mount_committed(self, mount_id: str, base: SnapshotId, view: Digest | None) -> None:
        """A mount committed: its view is now ``view`` (a root tree) on ``base``.

        Nothing to record: this machine's gc reads a mount's view from its journal, and no
        other machine's gc needs it (the distributed catalog records a pin).
        """

    def unregister_mount(self, mount_id: str) -> None:
        prefix = mount_id.encode() + b"\0"
        with self._write_runtime() as txn:
            txn.delete(mount_id.encode(), db=self._mounts)
            cursor = txn.cursor(db=self._handles)
            if cursor.set_range(prefix):
                while bytes(cursor.key()).startswith(prefix):
                    if not cursor.delete():
                        break

    def list_mounts(self) -> list[MountRecord]:
        with self.runtime.begin() as txn:
            return [MountRecord(**json.loads(bytes(v))) for _, v in txn.cursor(db=self._mounts)]

    def add_handle(self, mount_id: str, fh: int, info: dict[str, Any]) -> None:
        with self._write_runtime() as txn:
            txn.put(
                mount_id.encode() + b"\0" + struct.pack(">Q", fh),
                json.dumps(info).encode(),
                db=self._handles,
            )

    def remove_handle(self, mount_id: str, fh: int) -> None:
        with self._write_runtime() as txn:
            txn.delete(mount_id.encode() + b"\0" + struct.pack(">Q", fh), db=self._handles)

    def set_handles(self, mount_id: str, handles: dict[int, dict[str, Any]]) -> None:
        """Replaces a mount's open-handle rows with ``handles`` in one transaction."""
        prefix = mount_id.encode() + b"\0"
        with self._write_runtime() as txn:
            cursor = txn.cursor(db=self._handles)
            if cursor.set_range(prefix):
                while bytes(cursor.key()).startswith(prefix):
                    if not cursor.delete():
                        break
            for fh, info in handles.items():
                txn.put(prefix + struct.pack(">Q", fh), json.dumps(info).encode(), db=self._handles)

    @contextmanager
    def lease(self, what: str, since: float | None = None) -> Iterator[Lease]:
        """Held by a writer from its first blob to its head move: gc keeps what it wrote.

        ``volfs gc`` deletes no unreferenced blob written after the oldest live lease's
        ``since`` (a lease of a dead process is ignored and pruned).
        """
        lease_id = new_id("le")
        # The lock, not the pid, tells other processes this lease is live: a pid means
        # nothing in another PID namespace (containers sharing the store; volfs.locks).
        lock_dir = self._path / "leases"
        lock_dir.mkdir(exist_ok=True)
        lock_path = lock_dir / f"{lease_id}.lock"
        lock_fd = locks.hold(lock_path)
        lease = Lease(
            lease_id,
            os.getpid(),
            process_start(os.getpid()),
            time.time() if since is None else since,
            what,
            str(lock_path),
        )
        try:
            with self._write_runtime() as txn:
                txn.put(
                    lease.id.encode(),
                    json.dumps(dataclasses.asdict(lease)).encode(),
                    db=self._leases,
                )
            yield lease
        finally:
            self.drop_lease(lease.id)
            lock_path.unlink(missing_ok=True)
            os.close(lock_fd)

    def list_leases(self) -> list[Lease]:
        with self.runtime.begin() as txn:
            return [Lease(**json.loads(bytes(v))) for _, v in txn.cursor(db=self._leases)]

    def drop_lease(self, lease_id: str) -> None:
        with self._write_runtime() as txn:
            txn.delete(lease_id.encode(), db=self._leases)

    def handles(self, mount_id: str) -> list[dict[str, Any]]:
        prefix = mount_id.encode() + b"\0"
        out = []
        with self.runtime.begin() as txn:
            cursor = txn.cursor(db=self._handles)
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not bytes(key).startswith(prefix):
                        break
                    out.append(json.loads(bytes(value)))
        return out


def _volume_json(volume: VolumeRecord) -> bytes:
    return volume.to_json()


def _volume_from_json(raw: bytes | memoryview) -> VolumeRecord:
    return VolumeRecord.from_json(bytes(raw))


def _drop_settings_of_deleted_volumes(txn: lmdb.Transaction, catalog: LmdbCatalog) -> int:
    """Retention records of volumes that no longer exist."""
    stale = []
    for key in txn.cursor(db=catalog._settings).iternext(values=False):
        key = bytes(key)
        _, _, volume_id = key.partition(b"\0")
        if txn.get(volume_id, db=catalog._volumes) is None:
            stale.append(key)
    for key in stale:
        txn.delete(key, db=catalog._settings)
    return len(stale)


class LmdbSweep:
    """What ``volfs gc`` reads and deletes inside its one write transaction (see maintenance/gc.py).

    Everything read here includes every commit that landed before the transaction began,
    and no commit lands until it ends: LMDB serialises writers.
    """

    def __init__(self, catalog: LmdbCatalog, txn: lmdb.Transaction) -> None:
        self._c = catalog
        self._txn = txn
        self.deleted_trees: list[Digest] = []

    def heads(self) -> dict[VolumeId, SnapshotId]:
        return {
            v.id: v.head
            for v in (
                _volume_from_json(bytes(raw)) for _, raw in self._txn.cursor(db=self._c._volumes)
            )
        }

    def snapshot_ids(self) -> set[str]:
        return {
            bytes(k).decode(errors="replace")
            for k in self._txn.cursor(db=self._c._snapshots).iternext(values=False)
        }

    def snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        raw = self._txn.get(snapshot_id.encode(), db=self._c._snapshots)
        return SnapshotRecord.from_json(bytes(raw)) if raw is not None else None

    def tree(self, digest: Digest) -> Tree | None:
        """The tree, or None if it is missing; CorruptionError if it does not verify."""
        raw = self._txn.get(bytes.fromhex(digest), db=self._c._trees)
        if raw is None:
            return None
        try:
            return decode_verified(bytes(raw), digest, self._leaf)
        except ValueError as exc:
            raise CorruptionError(f"tree {digest} is damaged ({exc})") from None

    def _leaf(self, digest: Digest) -> Tree:
        tree = self.tree(digest)
        if tree is None:
            raise CorruptionError(f"tree {digest}, a leaf of a split directory, is missing")
        return tree

    def fresh_trees(self) -> dict[Digest, float]:
        return {
            Digest(bytes(k).hex()): struct.unpack("<d", bytes(v))[0]
            for k, v in self._txn.cursor(db=self._c._fresh)
        }

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._txn.delete(snapshot_id.encode(), db=self._c._snapshots)
        self._txn.delete(snapshot_id.encode(), db=self._c._damaged)

    def delete_tree(self, digest: Digest) -> None:
        key = bytes.fromhex(digest)
        self._txn.delete(key, db=self._c._trees)
        self._txn.delete(key, db=self._c._fresh)
        self.deleted_trees.append(digest)

    def forget_fresh(self, digest: Digest) -> None:
        self._txn.delete(bytes.fromhex(digest), db=self._c._fresh)

    def drop_settings_of_deleted_volumes(self) -> int:
        """Retention records of volumes that no longer exist."""
        return _drop_settings_of_deleted_volumes(self._txn, self._c)
