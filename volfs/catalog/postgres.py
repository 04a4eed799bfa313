"""The distributed catalog: PostgreSQL holds the truth, the bucket the trees, LMDB a cache.

A :class:`PgCatalog` implements the :class:`volfs.catalog.Catalog` interface: its *truth*
(volumes, names, snapshots, heads, retention, damage marks) is in PostgreSQL, its trees
live in the shared object store (``<prefix>/trees/ab/cdef…``, see ``blobs/s3.py``), and it
*composes* an :class:`~volfs.catalog.lmdb.LmdbCatalog` (``cache``) for what is this
machine's alone: the tree cache, the trees of mounts' views (``put_trees``), and the
runtime tables (mounts, open handles, leases). The bucket comes from the composition root
as a :class:`volfs.blobs.ObjectStore` (remote.py builds it); this module knows no S3.

Schema (PostgreSQL; created if missing, under an advisory lock)::

    volfs_volumes   (id text PK, environment, name, created_at, created_by, head,
                     format_version, UNIQUE (environment, name))
    volfs_snapshots (id text PK, volume_id, parent, time, record text -- SnapshotRecord JSON)
    volfs_settings  (key text PK, value text)   -- "retention:<volume id>" -> JSON policy
    volfs_damaged   (snapshot_id text PK, record text)
    volfs_pins      (id text PK -- mount id, machine, volume_id, snapshot_id -- its base,
                     view_tree -- its last committed view or null, heartbeat timestamptz)
    "gc_epoch" in volfs_settings: changed by every gc sweep (see ``lease``)

``format_version`` is the store format (catalog.FORMAT_VERSION); the first connection of a
process raises the volumes of older formats to its own with the schema (their trees stay).

Pins: a mount's daemon writes its row at mount, reload and commit (``register_mount``,
``set_mount_base``, ``mount_committed``), a thread refreshes ``heartbeat`` every
``PIN_HEARTBEAT`` seconds, and unmount deletes it; ``volfs gc`` on any machine keeps what
live pins name (maintenance/bucket_gc.py).

The gc lock (advisory lock ``GC_LOCK``): every lease (a writer from its first blob to its
head move) holds it shared, ``volfs gc`` exclusive while it marks and deletes.

Write order of a commit (``advance_head``), the store format's invariants carried over:

1. the blobs are in the bucket (the commit's :class:`S3Batch` uploaded them);
2. the new trees are uploaded, and with them any tree they name that only this machine
   holds (a mount's view stored by ``put_trees`` and never published);
3. one PostgreSQL transaction inserts the snapshot and moves the head —
   ``UPDATE volfs_volumes SET head=new WHERE id=… AND head=expected`` — or, if no row
   changed, rolls back and raises :class:`HeadMoved` (commit.py merges again);
4. the trees are stored in the local cache.

A failure before 3 leaves the head where it was (what was uploaded is unreferenced and
harmless); 3 is atomic. A connection lost *during* 3 is resolved after reconnecting by
looking for the snapshot row: present means the commit landed.

Connections: one per process (lazily, re-made after a fork), guarded by a lock; a
connection found broken (PostgreSQL restarted) is re-made and the request retried once.
Unreachable: :class:`BackendUnavailableError` with one line.

Must not: import boto3 or volfs.blobs.s3 (the bucket is an ObjectStore handed in), or
anything above the catalog layer; hold the database lock across a bucket request.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from volfs.blobs import Digest, ObjectStore
from volfs.catalog.lmdb import LmdbCatalog, LmdbSweep
from volfs.catalog.pg_session import PgSession, first_line, redact
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
    new_volume_records,
)
from volfs.catalog.watch import HEAD_CHANNEL, ListenWatch
from volfs.core.tree import (
    EMPTY_TREE,
    Tree,
    decode_verified,
    encode,
    references,
    tree_digest,
)
from volfs.errors import (
    AlreadyExistsError,
    BackendUnavailableError,
    ConflictError,
    CorruptionError,
    InvalidError,
    NotFoundError,
    VolfsError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Writers hold it shared from their first blob to their head move, ``volfs gc`` exclusive
#: while it marks and deletes (see :meth:`PgCatalog.lease`, distgc.py).
GC_LOCK = 0x766F6C6667  # "volfg"
#: The class id of the head turns' advisory locks (two-key form: a keyspace of its own).
HEAD_TURN_LOCKS = 0x766F6C68  # "volh"
#: How long a committer waits for its turn before it merges without one (the swap guards).
HEAD_TURN_TIMEOUT_MS = 30_000
#: How long ``volfs gc`` waits for the commits in flight before giving up (seconds).
GC_LOCK_WAIT = 300.0
#: How often a mount's daemon refreshes its pins' heartbeat.
PIN_HEARTBEAT = 60.0
#: Trees uploaded at once by a commit (each one PUT).
UPLOAD_THREADS = 16
_VOLUME_COLUMNS = "id, name, environment, created_at, created_by, head, format_version"


class _Lost(Exception):
    """Inside the head transaction: no row changed (rolled back, then explained)."""


def _volume(row: tuple[Any, ...]) -> VolumeRecord:
    return VolumeRecord(
        VolumeId(row[0]), row[1], row[2], row[3], row[4], SnapshotId(row[5]), row[6]
    )


class PgCatalog:
    """The :class:`volfs.catalog.Catalog` of distributed mode (module docstring)."""

    SNAPSHOT_CACHE_SIZE = 4096

    def __init__(self, cache: LmdbCatalog, meta_url: str, bucket: ObjectStore) -> None:
        #: This machine's LMDB catalog: cached trees, views' trees, the runtime tables.
        self.cache = cache
        cache.load_leaf = self.get_tree  # a split tree's leaves may be only in the bucket
        self.meta_url = meta_url
        #: Capability (see the interface): the trees' shared home.
        self.bucket = bucket
        #: The cache's counters, and this catalog's: one dict, as the tests read it.
        self.stats = cache.stats
        #: The PostgreSQL connection this process shares (the lease keeps one of its own).
        self._session = PgSession(meta_url, self.stats)
        self._snapshot_cache: dict[str, SnapshotRecord] = {}
        #: Trees this process knows are in the bucket.
        self._remote_trees: set[Digest] = {tree_digest(EMPTY_TREE)}
        self.stats.update({"trees_fetched": 0, "trees_uploaded": 0, "db_reconnects": 0})
        # The shared gc lock of this process's leases: one session, taken by the first lease
        # and released by the last (a second session could queue behind a waiting gc and
        # deadlock against the first).
        self._lease_mutex = threading.Lock()
        self._lease_holders = 0
        self._lease_conn: Any = None
        self._lease_pid = 0
        self._epoch: str | None = None
        #: Called when gc ran since this process last held a lease: what it believed to be in
        #: the bucket may have been deleted (remote.py registers the blob store's).
        self.on_gc: list[Callable[[], None]] = []
        #: This process's mounts' pins: mount id -> (volume id, snapshot id, view tree).
        self._pins: dict[str, tuple[str, str, str | None]] = {}
        self._pin_lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        #: Head turns (:meth:`head_turn`): one at a time per process, on a session of their own.
        self._turn_mutex = threading.Lock()
        self._turn_conn: Any = None
        self._turn_pid = 0
        self.machine = f"{socket.gethostname()}:{cache.root}"

    def check(self) -> None:
        """Fails with one line if the database cannot be reached (creates the schema)."""
        self._session.rows("checking the connection", "SELECT 1")

    @property
    def format_version(self) -> int:
        return self.cache.format_version

    # -- trees: the bucket, cached in LMDB ---------------------------------------------------
    def get_tree(self, digest: Digest) -> Tree:
        try:
            return self.cache.get_tree(digest)
        except NotFoundError:
            pass
        raw = self.bucket.get("trees", digest)
        if raw is None:
            log.error("tree %s is missing from %s", digest, self.bucket.describe())
            raise CorruptionError(f"tree {digest} is missing from the object store")
        try:
            decode_verified(raw, digest)
        except ValueError as exc:
            log.error(
                "tree %s from %s is damaged (%s); not used", digest, self.bucket.describe(), exc
            )
            raise CorruptionError(f"tree {digest} is damaged in the object store ({exc})") from None
        self.stats["trees_fetched"] += 1
        self._remote_trees.add(digest)
        # Not marked fresh: it is in the bucket, nothing here needs protecting from gc.
        self.cache.cache_trees({digest: raw})
        return self.cache.get_tree(digest)

    def has_tree(self, digest: Digest) -> bool:
        return self.cache.has_tree(digest) or self.bucket.head("trees", digest) is not None

    def remember_trees(self, trees: Mapping[Digest, Tree]) -> None:
        self.cache.remember_trees(trees)

    def put_trees(self, trees: dict[Digest, bytes]) -> None:
        """A mount's view: stored (and marked fresh) on this machine only; uploaded with the
        commit that first names it (:meth:`_publish_trees`)."""
        self.cache.put_trees(trees)

    def get_tree_raw(self, digest: Digest) -> bytes | None:
        return self.cache.get_tree_raw(digest)

    def tree_digests(self) -> list[Digest]:
        return self.cache.tree_digests()

    def fresh_trees(self) -> dict[Digest, float]:
        return self.cache.fresh_trees()

    def _is_local_only(self, digest: Digest) -> bool:
        """A tree ``put_trees`` stored here (a view) that may never have been uploaded."""
        return self.cache.is_fresh(digest)

    def _publish_trees(self, trees: dict[Digest, bytes], root: Digest | None) -> None:
        """Uploads ``trees`` and every view tree they name that the bucket lacks."""
        todo = dict(trees)
        check: set[Digest] = set()

        def children(raw: bytes) -> None:
            check.update(d for d in references(raw) if d not in todo)

        for raw in trees.values():
            children(raw)
        if root is not None and root not in todo:
            check.add(root)
        while check:
            digest = check.pop()
            if digest in todo or digest in self._remote_trees or not self._is_local_only(digest):
                continue
            if self.bucket.head("trees", digest) is not None:
                self._remote_trees.add(digest)
                continue
            local = self.cache.get_tree_raw(digest)
            if local is None:
                raise CorruptionError(f"tree {digest} is missing from the local catalog")
            todo[digest] = local
            children(local)
        items = [(d, raw) for d, raw in todo.items() if d not in self._remote_trees]

        def upload(item: tuple[Digest, bytes]) -> None:
            self.bucket.put("trees", item[0], item[1])
            self._remote_trees.add(item[0])

        if len(items) <= 2:
            for item in items:
                upload(item)
        else:
            with ThreadPoolExecutor(min(UPLOAD_THREADS, len(items))) as pool:
                for _ in pool.map(upload, items):
                    pass
        self.stats["trees_uploaded"] += len(items)

    # -- volumes ---------------------------------------------------------------------------
    def create_volume(self, environment: str, name: str, created_by: str) -> VolumeRecord:
        volume, snapshot = new_volume_records(environment, name, created_by)
        self._publish_trees({tree_digest(EMPTY_TREE): encode(EMPTY_TREE)}, None)
        self._insert_new_volume("creating a volume", volume, snapshot)
        return volume

    def _insert_new_volume(self, what: str, volume: VolumeRecord, snapshot: SnapshotRecord) -> None:
        """A new volume's row and its first snapshot's, in one transaction."""
        import psycopg

        def insert(conn: Any) -> None:
            with conn.transaction():
                _insert_snapshot(conn, snapshot)
                _insert_volume(conn, volume)

        try:
            self._session.run(what, insert)
        except psycopg.errors.UniqueViolation:
            raise AlreadyExistsError(
                f"volume {volume.name!r} already exists in environment {volume.environment!r}"
            ) from None

    def fork_volume(
        self, environment: str, name: str, created_by: str, source: SnapshotId, origin: str
    ) -> VolumeRecord:
        """Two rows (the volume, its first snapshot) in one transaction, nothing uploaded.

        Under a lease, like a rollback: gc (the gc lock, exclusive) cannot run between the
        check that ``source`` is still kept (its row, not a cached copy) and its root tree
        is in the bucket, and the insert that makes that tree the new volume's head.
        """
        with self.lease(f"fork of {source}"):
            rows = self._session.rows(
                "reading a snapshot", "SELECT record FROM volfs_snapshots WHERE id=%s", (source,)
            )
            if not rows:
                raise NotFoundError(f"snapshot {source} not found (dropped by retention?)")
            root = SnapshotRecord.from_json(rows[0][0].encode()).root
            if root.tree is None:
                raise CorruptionError(f"snapshot {source} has no root tree; run `volfs fsck`")
            self.get_tree(root.tree)  # raises if the root tree is gone from the bucket
            volume, snapshot = new_volume_records(
                environment, name, created_by, root=root, origin=origin
            )
            self._check_lease()
            self._insert_new_volume("forking a volume", volume, snapshot)
        self._remember(snapshot)
        return volume

    def find_volume(self, environment: str, name: str) -> VolumeRecord | None:
        rows = self._session.rows(
            "finding a volume",
            f"SELECT {_VOLUME_COLUMNS} FROM volfs_volumes WHERE environment=%s AND name=%s",
            (environment, name),
        )
        return _volume(rows[0]) if rows else None

    def get_volume(self, environment: str, name: str) -> VolumeRecord:
        volume = self.find_volume(environment, name)
        if volume is None:
            raise NotFoundError(f"volume {name!r} not found in environment {environment!r}")
        return volume

    def get_volume_by_id(self, volume_id: str) -> VolumeRecord:
        rows = self._session.rows(
            "reading a volume",
            f"SELECT {_VOLUME_COLUMNS} FROM volfs_volumes WHERE id=%s",
            (volume_id,),
        )
        if not rows:
            raise NotFoundError(f"volume {volume_id} not found (deleted?)")
        return _volume(rows[0])

    def list_volumes(self, environment: str | None = None) -> list[VolumeRecord]:
        if environment is None:
            rows = self._session.rows(
                "listing volumes", f"SELECT {_VOLUME_COLUMNS} FROM volfs_volumes"
            )
        else:
            rows = self._session.rows(
                "listing volumes",
                f"SELECT {_VOLUME_COLUMNS} FROM volfs_volumes WHERE environment=%s",
                (environment,),
            )
        return sorted((_volume(r) for r in rows), key=lambda v: (v.created_at, v.name))

    def delete_volume(self, environment: str, name: str) -> VolumeRecord:
        rows = self._session.rows(
            "deleting a volume",
            f"DELETE FROM volfs_volumes WHERE environment=%s AND name=%s "
            f"RETURNING {_VOLUME_COLUMNS}",
            (environment, name),
        )
        if not rows:
            raise NotFoundError(f"volume {name!r} not found in environment {environment!r}")
        return _volume(rows[0])

    def rename_volume(self, environment: str, old: str, new: str) -> VolumeRecord:
        import psycopg

        try:
            rows = self._session.rows(
                "renaming a volume",
                f"UPDATE volfs_volumes SET name=%s WHERE environment=%s "
                f"AND name=%s RETURNING {_VOLUME_COLUMNS}",
                (new, environment, old),
            )
        except psycopg.errors.UniqueViolation:
            raise AlreadyExistsError(
                f"volume {new!r} already exists in environment {environment!r}"
            ) from None
        if not rows:
            raise NotFoundError(f"volume {old!r} not found in environment {environment!r}")
        return _volume(rows[0])

    def iter_names(self) -> list[tuple[str, str, str]]:
        return [
            (r[0], r[1], r[2])
            for r in self._session.rows(
                "listing names", "SELECT environment, name, id FROM volfs_volumes"
            )
        ]

    # -- snapshots and heads ---------------------------------------------------------------
    def find_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        cached = self._snapshot_cache.get(snapshot_id)
        if cached is not None:
            return cached
        rows = self._session.rows(
            "reading a snapshot", "SELECT record FROM volfs_snapshots WHERE id=%s", (snapshot_id,)
        )
        if not rows:
            return None
        snapshot = SnapshotRecord.from_json(rows[0][0].encode())
        self._remember(snapshot)
        return snapshot

    def _remember(self, snapshot: SnapshotRecord) -> None:
        if len(self._snapshot_cache) >= self.SNAPSHOT_CACHE_SIZE:
            self._snapshot_cache.pop(next(iter(self._snapshot_cache)))
        self._snapshot_cache[snapshot.id] = snapshot  # immutable: safe to keep

    def get_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        snapshot = self.find_snapshot(snapshot_id)
        if snapshot is None:
            raise NotFoundError(f"snapshot {snapshot_id!r} not found")
        return snapshot

    def head(self, volume_id: str) -> SnapshotRecord:
        """The head snapshot, read in one query (always from PostgreSQL: heads move)."""
        rows = self._session.rows(
            "reading a head",
            "SELECT v.head, s.record FROM volfs_volumes v LEFT JOIN "
            "volfs_snapshots s ON s.id = v.head WHERE v.id=%s",
            (volume_id,),
        )
        if not rows:
            raise NotFoundError(f"volume {volume_id} not found (deleted?)")
        if rows[0][1] is None:
            raise NotFoundError(f"snapshot {rows[0][0]!r} not found")
        snapshot = SnapshotRecord.from_json(rows[0][1].encode())
        self._remember(snapshot)
        return snapshot

    def advance_head(
        self, expected: SnapshotId, snapshot: SnapshotRecord, trees: dict[Digest, bytes]
    ) -> None:
        """Uploads the trees, then moves the head in one PostgreSQL transaction (CAS).

        Under a lease (nested in the writer's own, if it holds one): a tree found already in
        the bucket and not uploaded again must survive until the head names it. The other
        objects a commit names without writing them are its head's (kept by gc) or the
        writer's blobs (covered by the writer's lease).
        """
        with self.lease(f"head move to {snapshot.id}"):
            self._publish_trees(trees, snapshot.root.tree)
            self._swap_head(expected, snapshot)
        self.cache.cache_trees(trees)
        self._remember(snapshot)
        self.stats["trees_written"] += len(trees)

    @contextmanager
    def head_turn(self, volume_id: str) -> Iterator[None]:
        """A session advisory lock per volume, taken inside a lease (the gc lock shared) so
        that a turn never waits behind a gc that waits for the turn's holder. A holder that
        dies releases it with its session; a turn not had within HEAD_TURN_TIMEOUT_MS, or
        a broken session, only means this commit merges without one."""
        with self.lease(f"head turn of {volume_id}"), self._turn_mutex:
            conn = self._take_turn(volume_id)
            try:
                yield
            finally:
                if conn is not None:
                    self._give_turn(conn, volume_id)

    def _take_turn(self, volume_id: str) -> Any:
        import psycopg

        try:
            if self._turn_conn is None or self._turn_pid != os.getpid() or self._turn_conn.closed:
                self._turn_conn = self._session.connect()
                self._turn_pid = os.getpid()
                self._turn_conn.execute(f"SET lock_timeout = {HEAD_TURN_TIMEOUT_MS}")
            self._turn_conn.execute(
                "SELECT pg_advisory_lock(%s, hashtext(%s))", (HEAD_TURN_LOCKS, volume_id)
            )
        except (psycopg.Error, BackendUnavailableError) as exc:
            log.warning("committing without a head turn: %s", first_line(exc))
            self._drop_turn_conn()
            return None
        return self._turn_conn

    def _give_turn(self, conn: Any, volume_id: str) -> None:
        try:
            conn.execute(
                "SELECT pg_advisory_unlock(%s, hashtext(%s))", (HEAD_TURN_LOCKS, volume_id)
            )
        except Exception as exc:  # the session is gone: so is its lock
            log.debug("giving up a head turn: %s", exc)
            self._drop_turn_conn()

    def _drop_turn_conn(self) -> None:
        conn, self._turn_conn = self._turn_conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # already broken
                log.debug("closing the head turn connection: %s", exc)

    def _swap_head(self, expected: SnapshotId, snapshot: SnapshotRecord) -> None:
        import psycopg

        self._check_lease()

        def swap(conn: Any) -> bool:
            try:
                with conn.transaction():
                    _insert_snapshot(conn, snapshot)
                    cur = conn.execute(
                        "UPDATE volfs_volumes SET head=%s WHERE id=%s AND head=%s",
                        (snapshot.id, snapshot.volume_id, expected),
                    )
                    if cur.rowcount != 1:
                        raise _Lost()
                    # Delivered at commit, with the head move: followers reload (watch.py).
                    conn.execute("SELECT pg_notify(%s, %s)", (HEAD_CHANNEL, snapshot.volume_id))
            except _Lost:
                return False
            return True

        try:
            swapped = self._session.run("moving the head", swap, retry=False)
        except BackendUnavailableError:
            # The connection broke: the transaction may or may not have committed. The
            # snapshot row tells (it is inserted in the same transaction as the head move).
            landed = self._session.rows(
                "checking a commit", "SELECT 1 FROM volfs_snapshots WHERE id=%s", (snapshot.id,)
            )
            if landed:
                return
            swapped = self._session.run("moving the head", swap, retry=False)
        except psycopg.errors.UniqueViolation:
            raise VolfsError(f"snapshot id {snapshot.id} is taken; commit again") from None
        if swapped:
            return
        rows = self._session.rows(
            "reading a head",
            "SELECT name, head FROM volfs_volumes WHERE id=%s",
            (snapshot.volume_id,),
        )
        if not rows:
            raise NotFoundError(f"volume {snapshot.volume_id} was deleted")
        raise HeadMoved(f"head of {rows[0][0]} moved from {expected} to {rows[0][1]}")

    def history(self, volume_id: str, limit: int | None = None) -> Iterator[SnapshotRecord]:
        """The head, then its parents; stops where retention dropped a parent."""
        return follow_parents(self.head(volume_id), self.find_snapshot, limit)

    def watch_head(self, volume_id: str) -> ListenWatch:
        """LISTEN for the NOTIFY of each head move (``watch.py``; sent by _swap_head)."""
        return ListenWatch(self.meta_url, volume_id)

    def iter_snapshots_raw(self) -> list[tuple[str, bytes]]:
        return [
            (r[0], r[1].encode())
            for r in self._session.rows(
                "listing snapshots", "SELECT id, record FROM volfs_snapshots"
            )
        ]

    def rollback_head(
        self, expected: SnapshotId, snapshot: SnapshotRecord, source: SnapshotId
    ) -> None:
        # Under a lease, gc cannot run between the check that ``source`` is still kept (its
        # row, not a cached copy) and the head move that makes its trees the head's.
        with self.lease(f"rollback to {source}"):
            if not self._session.rows(
                "reading a snapshot", "SELECT 1 FROM volfs_snapshots WHERE id=%s", (source,)
            ):
                raise NotFoundError(f"snapshot {source} was dropped by retention meanwhile")
            assert snapshot.root.tree is not None
            self.get_tree(snapshot.root.tree)  # raises if the root tree is gone
            self._swap_head(expected, snapshot)
        self._remember(snapshot)

    # -- retention and damage marks ----------------------------------------------------------
    def get_retention(self, volume_id: str) -> dict[str, Any] | None:
        rows = self._session.rows(
            "reading retention",
            "SELECT value FROM volfs_settings WHERE key=%s",
            ("retention:" + volume_id,),
        )
        return json.loads(rows[0][0]) if rows else None

    def set_retention(self, volume_id: str, policy: dict[str, Any] | None) -> None:
        self.get_volume_by_id(volume_id)
        key = "retention:" + volume_id
        if policy is None:
            self._session.rows(
                "setting retention", "DELETE FROM volfs_settings WHERE key=%s RETURNING key", (key,)
            )
        else:
            self._session.rows(
                "setting retention",
                "INSERT INTO volfs_settings (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value RETURNING key",
                (key, json.dumps(policy)),
            )

    def mark_damaged(self, snapshot_id: str, problems: list[str]) -> None:
        record = json.dumps({"time": time.time(), "problems": problems})
        self._session.rows(
            "marking damage",
            "INSERT INTO volfs_damaged (snapshot_id, record) VALUES (%s, %s) "
            "ON CONFLICT (snapshot_id) DO UPDATE SET record=EXCLUDED.record RETURNING 1",
            (snapshot_id, record),
        )

    def clear_damaged(self, snapshot_id: str) -> None:
        self._session.rows(
            "clearing damage",
            "DELETE FROM volfs_damaged WHERE snapshot_id=%s RETURNING 1",
            (snapshot_id,),
        )

    def damaged(self) -> dict[str, dict[str, Any]]:
        return {
            r[0]: json.loads(r[1])
            for r in self._session.rows(
                "reading damage marks", "SELECT snapshot_id, record FROM volfs_damaged"
            )
        }

    @contextmanager
    def sweep(self) -> Iterator[LmdbSweep]:
        """Not here (the interface): a sweep of this machine's LMDB would collect a cache;
        maintenance/bucket_gc.py collects a distributed store."""
        raise InvalidError(
            "the local sweep does not apply to a distributed store; "
            "the distributed gc (bucket_gc.py) collects it"
        )
        yield  # pragma: no cover - a generator, for @contextmanager

    # -- gc: the lock, pins, deleting snapshots ---------------------------------------------
    @contextmanager
    def lease(self, what: str, since: float | None = None) -> Iterator[Lease]:
        """A writer's span, first blob to head move: also holds the gc lock *shared*.

        So ``volfs gc`` (which holds it exclusive while it marks and deletes) waits for
        every commit in flight on any machine, and a commit starting meanwhile waits for
        gc: a blob a commit found already in the bucket (and did not upload again) cannot
        be deleted before the head naming it has moved. A machine that dies releases its
        lock with its session. Nested and concurrent leases of one process share one
        session (one lock).
        """
        with self.cache.lease(what, since) as lease:
            self._hold_shared()
            try:
                yield lease
            finally:
                self._release_shared()

    def _hold_shared(self) -> None:
        import psycopg

        with self._lease_mutex:  # held while waiting for gc: only when no lease is held
            if self._lease_holders:
                self._lease_holders += 1
                return
            for attempt in (1, 2):
                if (
                    self._lease_conn is None
                    or self._lease_pid != os.getpid()
                    or self._lease_conn.closed
                ):
                    self._lease_conn = self._session.connect()
                    self._lease_pid = os.getpid()
                try:
                    self._lease_conn.execute("SELECT pg_advisory_lock_shared(%s)", (GC_LOCK,))
                    rows = self._lease_conn.execute(
                        "SELECT value FROM volfs_settings WHERE key='gc_epoch'"
                    ).fetchall()
                    break
                except psycopg.Error as exc:
                    self._drop_lease_conn()
                    if attempt == 2 or not isinstance(exc, psycopg.OperationalError):
                        raise BackendUnavailableError(
                            f"metadata database {redact(self.meta_url)}: taking the gc lock failed: "
                            f"{first_line(exc)}"
                        ) from None
            epoch = rows[0][0] if rows else ""
            if epoch != self._epoch:
                # gc ran since we last looked (or we never looked): what this process
                # remembers as uploaded may be gone. Forget it; the next check asks the bucket.
                self._remote_trees = {tree_digest(EMPTY_TREE)}
                for forget in self.on_gc:
                    forget()
                self._epoch = epoch
            self._lease_holders = 1

    def _release_shared(self) -> None:
        with self._lease_mutex:
            self._lease_holders -= 1
            if self._lease_holders or self._lease_conn is None:
                return
            try:
                self._lease_conn.execute("SELECT pg_advisory_unlock_shared(%s)", (GC_LOCK,))
            except Exception as exc:  # the session is gone: so is its lock
                log.debug("releasing the gc lock: %s", exc)
                self._drop_lease_conn()

    def _drop_lease_conn(self) -> None:
        conn, self._lease_conn = self._lease_conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # already broken
                log.debug("closing the lease connection: %s", exc)

    def _check_lease(self) -> None:
        """Before a head move under a lease: the session holding the lock must still be alive
        (PostgreSQL restarted: the lock went with it, and gc may have run meanwhile)."""
        import psycopg

        if not self._lease_holders:
            return
        with self._lease_mutex:
            try:
                if self._lease_conn is None:
                    raise psycopg.OperationalError("no connection")
                self._lease_conn.execute("SELECT 1")
            except psycopg.Error as exc:
                self._drop_lease_conn()
                raise BackendUnavailableError(
                    f"metadata database {redact(self.meta_url)}: lost the session holding the gc "
                    f"lock ({first_line(exc)}); commit again"
                ) from None

    @contextmanager
    def gc_lock(self) -> Iterator[None]:
        """Held by ``volfs gc`` while it marks and deletes: the gc lock, exclusive.

        Waits for every lease (commit in flight) on every machine; leases wait for it. On
        release it changes the gc epoch, so every process forgets what it believed to be in
        the bucket before its next commit.
        """
        import psycopg

        conn = self._session.connect()
        try:
            # Bounded: while gc waits, new commits queue behind it (PostgreSQL grants locks
            # in order), so a writer stuck with its lease must not stall every machine.
            conn.execute(f"SET lock_timeout = '{int(GC_LOCK_WAIT * 1000)}ms'")
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (GC_LOCK,))
            except psycopg.errors.LockNotAvailable:
                raise ConflictError(
                    f"gc gave up after waiting {GC_LOCK_WAIT:g} s for commits in flight "
                    "(a writer holds its lease that long); nothing was deleted, try again"
                ) from None
            conn.execute("SET lock_timeout = 0")
            try:
                yield
            finally:
                conn.execute(
                    "INSERT INTO volfs_settings (key, value) VALUES ('gc_epoch', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value",
                    (os.urandom(8).hex(),),
                )
        except Exception as exc:
            import psycopg

            if isinstance(exc, psycopg.Error):
                raise BackendUnavailableError(
                    f"metadata database {redact(self.meta_url)}: gc lock: {first_line(exc)}"
                ) from None
            raise
        finally:
            conn.close()  # ends the session: releases the lock even if unlocking failed

    # Mount pins: what a mount on any machine needs (its base snapshot and committed view).
    # The local runtime table keeps its records too (this machine's gc and fsck read it).
    def register_mount(self, mount: MountRecord) -> None:
        self.cache.register_mount(mount)
        self._set_pin(mount.id, mount.volume_id, mount.base, None)

    def update_mount(self, mount: MountRecord) -> None:
        self.register_mount(mount)

    def set_mount_base(self, mount_id: str, base: SnapshotId) -> None:
        self.cache.set_mount_base(mount_id, base)
        with self._pin_lock:
            known = self._pins.get(mount_id)
        if known is not None:
            self._set_pin(mount_id, known[0], base, None)  # after a reload the view is the base

    def mount_committed(self, mount_id: str, base: SnapshotId, view: Digest | None) -> None:
        with self._pin_lock:
            known = self._pins.get(mount_id)
        if known is not None:
            self._set_pin(mount_id, known[0], base, view)

    def unregister_mount(self, mount_id: str) -> None:
        self.cache.unregister_mount(mount_id)
        with self._pin_lock:
            self._pins.pop(mount_id, None)
        try:
            self._session.rows(
                "dropping a mount pin",
                "DELETE FROM volfs_pins WHERE id=%s RETURNING 1",
                (mount_id,),
            )
        except BackendUnavailableError as exc:  # it expires on its own
            log.warning("could not drop the pin of mount %s: %s", mount_id, exc)

    def _set_pin(self, mount_id: str, volume_id: str, snapshot: str, view: str | None) -> None:
        with self._pin_lock:
            self._pins[mount_id] = (volume_id, snapshot, view)
            if self._heartbeat is None or not self._heartbeat.is_alive():
                self._heartbeat = threading.Thread(
                    target=self._beat, name="volfs-pins", daemon=True
                )
                self._heartbeat.start()
        self._write_pins({mount_id: (volume_id, snapshot, view)})

    def _write_pins(self, pins: dict[str, tuple[str, str, str | None]]) -> None:
        """Upserts pins with a fresh heartbeat; a failure is logged (the next beat retries)."""
        rows = [(mid, self.machine, v, s, t) for mid, (v, s, t) in pins.items()]

        def upsert(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO volfs_pins (id, machine, volume_id, snapshot_id, view_tree, heartbeat) "
                    "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (id) DO UPDATE SET "
                    "snapshot_id=EXCLUDED.snapshot_id, view_tree=EXCLUDED.view_tree, heartbeat=now()",
                    rows,
                )

        try:
            self._session.run("recording mount pins", upsert)
        except BackendUnavailableError as exc:
            log.warning(
                "could not record %d mount pins (gc on other machines may not see them): %s",
                len(rows),
                exc,
            )

    def _beat(self) -> None:
        while True:
            time.sleep(PIN_HEARTBEAT)
            with self._pin_lock:
                pins = dict(self._pins)
                if not pins:
                    self._heartbeat = None
                    return
            self._write_pins(pins)

    def live_pins(self, timeout: float, *, prune: bool = False) -> list[Pin]:
        """The pins refreshed within ``timeout`` seconds (PostgreSQL's clock); ``prune``
        deletes the older ones."""

        def query(conn: Any) -> list[tuple[Any, ...]]:
            with conn.transaction():
                if prune:
                    conn.execute(
                        "DELETE FROM volfs_pins WHERE heartbeat < now() - make_interval(secs => %s)",
                        (timeout,),
                    )
                return conn.execute(
                    "SELECT id, machine, volume_id, snapshot_id, view_tree FROM volfs_pins "
                    "WHERE heartbeat >= now() - make_interval(secs => %s)",
                    (timeout,),
                ).fetchall()

        return [
            Pin(r[0], r[1], r[2], r[3], Digest(r[4]) if r[4] else None)
            for r in self._session.run("reading mount pins", query)
        ]

    def delete_snapshots(self, snapshot_ids: Sequence[str]) -> list[str]:
        """gc: deletes these snapshot rows (never a current head), their damage marks and
        the retention settings of deleted volumes, in one transaction; returns what it deleted."""

        def delete(conn: Any) -> list[str]:
            with conn.transaction():
                rows = conn.execute(
                    "DELETE FROM volfs_snapshots WHERE id = ANY(%s) AND id NOT IN "
                    "(SELECT head FROM volfs_volumes) RETURNING id",
                    (list(snapshot_ids),),
                ).fetchall()
                gone = [r[0] for r in rows]
                conn.execute("DELETE FROM volfs_damaged WHERE snapshot_id = ANY(%s)", (gone,))
                conn.execute(
                    "DELETE FROM volfs_settings WHERE key LIKE 'retention:%%' AND "
                    "substr(key, 11) NOT IN (SELECT id FROM volfs_volumes)"
                )
                return gone

        gone = self._session.run("deleting snapshots", delete)
        for snapshot_id in gone:
            self._snapshot_cache.pop(snapshot_id, None)
        return gone

    # -- this machine's runtime tables: the cache's -------------------------------------------
    def list_mounts(self) -> list[MountRecord]:
        return self.cache.list_mounts()

    def add_handle(self, mount_id: str, fh: int, info: dict[str, Any]) -> None:
        self.cache.add_handle(mount_id, fh, info)

    def remove_handle(self, mount_id: str, fh: int) -> None:
        self.cache.remove_handle(mount_id, fh)

    def set_handles(self, mount_id: str, handles: dict[int, dict[str, Any]]) -> None:
        self.cache.set_handles(mount_id, handles)

    def handles(self, mount_id: str) -> list[dict[str, Any]]:
        return self.cache.handles(mount_id)

    def list_leases(self) -> list[Lease]:
        return self.cache.list_leases()

    def drop_lease(self, lease_id: str) -> None:
        self.cache.drop_lease(lease_id)


def _insert_volume(conn: Any, volume: VolumeRecord) -> None:
    conn.execute(
        f"INSERT INTO volfs_volumes ({_VOLUME_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s)",
        (
            volume.id,
            volume.name,
            volume.environment,
            volume.created_at,
            volume.created_by,
            volume.head,
            FORMAT_VERSION,
        ),
    )


def _insert_snapshot(conn: Any, snapshot: SnapshotRecord) -> None:
    conn.execute(
        "INSERT INTO volfs_snapshots (id, volume_id, parent, time, record) VALUES (%s,%s,%s,%s,%s)",
        (
            snapshot.id,
            snapshot.volume_id,
            snapshot.parent,
            snapshot.time,
            snapshot.to_json().decode(),
        ),
    )
