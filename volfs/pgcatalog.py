"""The distributed catalog: PostgreSQL holds the truth, the bucket the trees, LMDB a cache.

A :class:`PgCatalog` is a :class:`volfs.catalog.Catalog` whose *truth* methods (volumes,
names, snapshots, heads, retention, damage marks) go to PostgreSQL, whose trees live in
the object store (``<prefix>/trees/ab/cdef…``, see ``blobs/s3.py``), and which keeps the
local LMDB catalog for what is this machine's alone: the tree cache, the trees of mounts'
views (``put_trees``), and the runtime tables (mounts, open handles, leases). Signatures
are :class:`Catalog`'s, so commit.py, overlay.py and api.py work unchanged.

Schema (PostgreSQL; created if missing, under an advisory lock)::

    volfs_volumes   (id text PK, environment, name, created_at, created_by, head,
                     format_version, UNIQUE (environment, name))
    volfs_snapshots (id text PK, volume_id, parent, time, record text -- SnapshotRecord JSON)
    volfs_settings  (key text PK, value text)   -- "retention:<volume id>" -> JSON policy
    volfs_damaged   (snapshot_id text PK, record text)

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
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from volfs.blobs import Digest
from volfs.blobs.s3 import UPLOAD_THREADS, BackendUnavailableError, Bucket
from volfs.catalog import (
    FORMAT_VERSION,
    Catalog,
    HeadMoved,
    SnapshotId,
    SnapshotRecord,
    VolumeId,
    VolumeRecord,
)
from volfs.errors import AlreadyExistsError, CorruptionError, NotFoundError, VolfsError
from volfs.tree import EMPTY_TREE, Kind, Tree, decode, decode_verified, encode, tree_digest

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS volfs_volumes (
    id text PRIMARY KEY,
    environment text NOT NULL,
    name text NOT NULL,
    created_at double precision NOT NULL,
    created_by text NOT NULL,
    head text NOT NULL,
    format_version integer NOT NULL,
    UNIQUE (environment, name)
);
CREATE TABLE IF NOT EXISTS volfs_snapshots (
    id text PRIMARY KEY,
    volume_id text NOT NULL,
    parent text,
    time double precision NOT NULL,
    record text NOT NULL
);
CREATE INDEX IF NOT EXISTS volfs_snapshots_volume ON volfs_snapshots (volume_id, time);
CREATE TABLE IF NOT EXISTS volfs_settings (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS volfs_damaged (snapshot_id text PRIMARY KEY, record text NOT NULL);
"""
_SCHEMA_LOCK = 0x766F6C6673  # "volfs": serialises concurrent CREATE TABLE IF NOT EXISTS
_VOLUME_COLUMNS = "id, name, environment, created_at, created_by, head, format_version"


def redact(url: str) -> str:
    """The URL without its password (for messages and ``volfs store info``)."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


class _Lost(Exception):
    """Inside the head transaction: no row changed (rolled back, then explained)."""


def _volume(row: tuple[Any, ...]) -> VolumeRecord:
    return VolumeRecord(VolumeId(row[0]), row[1], row[2], row[3], row[4], SnapshotId(row[5]), row[6])


class PgCatalog(Catalog):
    SNAPSHOT_CACHE_SIZE = 4096

    def __init__(self, root: Path, meta_url: str, bucket: Bucket) -> None:
        super().__init__(root)
        self.meta_url = meta_url
        self.bucket = bucket
        self._conn: Any = None
        self._conn_pid = 0
        self._db_lock = threading.RLock()
        self._schema_ready = False
        self._snapshot_cache: dict[str, SnapshotRecord] = {}
        #: Trees this process knows are in the bucket.
        self._remote_trees: set[Digest] = {tree_digest(EMPTY_TREE)}
        self.stats.update({"trees_fetched": 0, "trees_uploaded": 0, "db_reconnects": 0})

    # -- PostgreSQL plumbing -----------------------------------------------------------------
    def _connect(self) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(self.meta_url, autocommit=True, connect_timeout=5,
                                   keepalives=1, keepalives_idle=10, keepalives_interval=3,
                                   keepalives_count=3, application_name="volfs")
        except psycopg.Error as exc:
            raise BackendUnavailableError(
                f"cannot reach the metadata database {redact(self.meta_url)}: {_first_line(exc)}") from None
        if not self._schema_ready:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    conn.execute(SCHEMA)
            except psycopg.Error as exc:
                conn.close()
                raise BackendUnavailableError(
                    f"metadata database {redact(self.meta_url)}: cannot create the schema: {_first_line(exc)}"
                ) from None
            self._schema_ready = True
        return conn

    def _db(self, what: str, fn: Callable[[Any], T], *, retry: bool = True) -> T:
        """Runs ``fn(connection)``; a broken connection is re-made and ``fn`` retried once."""
        import psycopg

        with self._db_lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn_pid != os.getpid() or self._conn.closed:
                    self._conn = self._connect()
                    self._conn_pid = os.getpid()
                try:
                    return fn(self._conn)
                except psycopg.OperationalError as exc:
                    self._drop_connection()
                    if attempt == 2 or not retry:
                        raise BackendUnavailableError(
                            f"metadata database {redact(self.meta_url)}: {what} failed: {_first_line(exc)}"
                        ) from None
                    self.stats["db_reconnects"] += 1
                    log.warning("metadata database connection lost (%s); reconnecting", _first_line(exc))
                except psycopg.Error as exc:
                    if isinstance(exc, psycopg.errors.UniqueViolation):
                        raise
                    raise BackendUnavailableError(
                        f"metadata database {redact(self.meta_url)}: {what} failed: {_first_line(exc)}"
                    ) from None
        raise AssertionError("unreachable")

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # noqa: BLE001 - already broken: nothing to release
                log.debug("closing a broken connection: %s", exc)

    def _rows(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db(what, lambda conn: conn.execute(sql, params).fetchall())

    def check(self) -> None:
        """Fails with one line if the database cannot be reached (creates the schema)."""
        self._rows("checking the connection", "SELECT 1")

    # -- trees: the bucket, cached in LMDB ---------------------------------------------------
    def get_tree(self, digest: Digest) -> Tree:
        try:
            return super().get_tree(digest)
        except NotFoundError:
            pass
        raw = self.bucket.get("trees", digest)
        if raw is None:
            log.error("tree %s is missing from %s", digest, self.bucket.describe())
            raise CorruptionError(f"tree {digest} is missing from the object store")
        try:
            decode_verified(raw, digest)
        except ValueError as exc:
            log.error("tree %s from %s is damaged (%s); not used", digest, self.bucket.describe(), exc)
            raise CorruptionError(f"tree {digest} is damaged in the object store ({exc})") from None
        self.stats["trees_fetched"] += 1
        self._remote_trees.add(digest)
        self._cache_trees({digest: raw})
        return super().get_tree(digest)

    def has_tree(self, digest: Digest) -> bool:
        return super().has_tree(digest) or self.bucket.head("trees", digest) is not None

    def _cache_trees(self, trees: dict[Digest, bytes]) -> None:
        """Stores published trees in the local cache (not marked fresh: they are in the bucket)."""
        with self._write() as txn:
            for digest, data in trees.items():
                txn.put(bytes.fromhex(digest), data, db=self._trees, overwrite=False)

    def _is_local_only(self, digest: Digest) -> bool:
        """A tree ``put_trees`` stored here (a view) that may never have been uploaded.

        Without the catalog's ``fresh`` table (an older catalog), any tree may be.
        """
        fresh = getattr(self, "_fresh", None)
        if fresh is None:
            return True
        with self.env.begin() as txn:
            return txn.get(bytes.fromhex(digest), db=fresh) is not None

    def _publish_trees(self, trees: dict[Digest, bytes], root: Digest | None) -> None:
        """Uploads ``trees`` and every view tree they name that the bucket lacks."""
        todo = dict(trees)
        check: set[Digest] = set()

        def children(raw: bytes) -> None:
            for entry in decode(raw).entries:
                if entry.kind is Kind.DIR and entry.tree and entry.tree not in todo:
                    check.add(entry.tree)

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
            raw = self.get_tree_raw(digest)
            if raw is None:
                raise CorruptionError(f"tree {digest} is missing from the local catalog")
            todo[digest] = raw
            children(raw)
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
        import psycopg

        volume, snapshot = self.new_volume_records(environment, name, created_by)
        self._publish_trees({tree_digest(EMPTY_TREE): encode(EMPTY_TREE)}, None)

        def insert(conn: Any) -> None:
            with conn.transaction():
                _insert_snapshot(conn, snapshot)
                conn.execute(f"INSERT INTO volfs_volumes ({_VOLUME_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s)",
                             (volume.id, name, environment, volume.created_at, created_by, snapshot.id, FORMAT_VERSION))

        try:
            self._db("creating a volume", insert)
        except psycopg.errors.UniqueViolation:
            raise AlreadyExistsError(f"volume {name!r} already exists in environment {environment!r}") from None
        return volume

    def find_volume(self, environment: str, name: str) -> VolumeRecord | None:
        rows = self._rows("finding a volume", f"SELECT {_VOLUME_COLUMNS} FROM volfs_volumes "
                          "WHERE environment=%s AND name=%s", (environment, name))
        return _volume(rows[0]) if rows else None

    def get_volume_by_id(self, volume_id: str) -> VolumeRecord:
        rows = self._rows("reading a volume", f"SELECT {_VOLUME_COLUMNS} FROM volfs_volumes WHERE id=%s",
                          (volume_id,))
        if not rows:
            raise NotFoundError(f"volume {volume_id} not found (deleted?)")
        return _volume(rows[0])

    def list_volumes(self, environment: str | None = None) -> list[VolumeRecord]:
        if environment is None:
            rows = self._rows("listing volumes", f"SELECT {_VOLUME_COLUMNS} FROM volfs_volumes")
        else:
            rows = self._rows("listing volumes", f"SELECT {_VOLUME_COLUMNS} FROM volfs_volumes "
                              "WHERE environment=%s", (environment,))
        return sorted((_volume(r) for r in rows), key=lambda v: (v.created_at, v.name))

    def delete_volume(self, environment: str, name: str) -> VolumeRecord:
        rows = self._rows("deleting a volume", f"DELETE FROM volfs_volumes WHERE environment=%s AND name=%s "
                          f"RETURNING {_VOLUME_COLUMNS}", (environment, name))
        if not rows:
            raise NotFoundError(f"volume {name!r} not found in environment {environment!r}")
        return _volume(rows[0])

    def rename_volume(self, environment: str, old: str, new: str) -> VolumeRecord:
        import psycopg

        try:
            rows = self._rows("renaming a volume", f"UPDATE volfs_volumes SET name=%s WHERE environment=%s "
                              f"AND name=%s RETURNING {_VOLUME_COLUMNS}", (new, environment, old))
        except psycopg.errors.UniqueViolation:
            raise AlreadyExistsError(f"volume {new!r} already exists in environment {environment!r}") from None
        if not rows:
            raise NotFoundError(f"volume {old!r} not found in environment {environment!r}")
        return _volume(rows[0])

    def iter_names(self) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self._rows("listing names",  # type: ignore[misc]
                                             "SELECT environment, name, id FROM volfs_volumes")]

    # -- snapshots and heads ---------------------------------------------------------------
    def find_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        cached = self._snapshot_cache.get(snapshot_id)
        if cached is not None:
            return cached
        rows = self._rows("reading a snapshot", "SELECT record FROM volfs_snapshots WHERE id=%s", (snapshot_id,))
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
        rows = self._rows("reading a head", "SELECT v.head, s.record FROM volfs_volumes v LEFT JOIN "
                          "volfs_snapshots s ON s.id = v.head WHERE v.id=%s", (volume_id,))
        if not rows:
            raise NotFoundError(f"volume {volume_id} not found (deleted?)")
        if rows[0][1] is None:
            raise NotFoundError(f"snapshot {rows[0][0]!r} not found")
        snapshot = SnapshotRecord.from_json(rows[0][1].encode())
        self._remember(snapshot)
        return snapshot

    def advance_head(self, expected: SnapshotId, snapshot: SnapshotRecord, trees: dict[Digest, bytes]) -> None:
        """Uploads the trees, then moves the head in one PostgreSQL transaction (CAS)."""
        self._publish_trees(trees, snapshot.root.tree)
        self._swap_head(expected, snapshot)
        self._cache_trees(trees)
        self._remember(snapshot)
        self.stats["trees_written"] += len(trees)

    def _swap_head(self, expected: SnapshotId, snapshot: SnapshotRecord) -> None:
        import psycopg

        def swap(conn: Any) -> bool:
            try:
                with conn.transaction():
                    _insert_snapshot(conn, snapshot)
                    cur = conn.execute("UPDATE volfs_volumes SET head=%s WHERE id=%s AND head=%s",
                                       (snapshot.id, snapshot.volume_id, expected))
                    if cur.rowcount != 1:
                        raise _Lost()
            except _Lost:
                return False
            return True

        try:
            swapped = self._db("moving the head", swap, retry=False)
        except BackendUnavailableError:
            # The connection broke: the transaction may or may not have committed. The
            # snapshot row tells (it is inserted in the same transaction as the head move).
            landed = self._rows("checking a commit", "SELECT 1 FROM volfs_snapshots WHERE id=%s",
                                (snapshot.id,))
            if landed:
                return
            swapped = self._db("moving the head", swap, retry=False)
        except psycopg.errors.UniqueViolation:
            raise VolfsError(f"snapshot id {snapshot.id} is taken; commit again") from None
        if swapped:
            return
        rows = self._rows("reading a head", "SELECT name, head FROM volfs_volumes WHERE id=%s",
                          (snapshot.volume_id,))
        if not rows:
            raise NotFoundError(f"volume {snapshot.volume_id} was deleted")
        raise HeadMoved(f"head of {rows[0][0]} moved from {expected} to {rows[0][1]}")

    def iter_snapshots_raw(self) -> list[tuple[str, bytes]]:
        return [(r[0], r[1].encode()) for r in
                self._rows("listing snapshots", "SELECT id, record FROM volfs_snapshots")]

    def rollback_head(self, expected: SnapshotId, snapshot: SnapshotRecord, source: SnapshotId) -> None:
        if self.find_snapshot(source) is None:
            raise NotFoundError(f"snapshot {source} was dropped by retention meanwhile")
        assert snapshot.root.tree is not None
        self.get_tree(snapshot.root.tree)  # raises if the root tree is gone
        self._swap_head(expected, snapshot)
        self._remember(snapshot)

    # -- retention and damage marks ----------------------------------------------------------
    def get_retention(self, volume_id: str) -> dict[str, Any] | None:
        rows = self._rows("reading retention", "SELECT value FROM volfs_settings WHERE key=%s",
                          ("retention:" + volume_id,))
        return json.loads(rows[0][0]) if rows else None

    def set_retention(self, volume_id: str, policy: dict[str, Any] | None) -> None:
        self.get_volume_by_id(volume_id)
        key = "retention:" + volume_id
        if policy is None:
            self._rows("setting retention", "DELETE FROM volfs_settings WHERE key=%s RETURNING key", (key,))
        else:
            self._rows("setting retention", "INSERT INTO volfs_settings (key, value) VALUES (%s, %s) "
                       "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value RETURNING key",
                       (key, json.dumps(policy)))

    def mark_damaged(self, snapshot_id: str, problems: list[str]) -> None:
        record = json.dumps({"time": time.time(), "problems": problems})
        self._rows("marking damage", "INSERT INTO volfs_damaged (snapshot_id, record) VALUES (%s, %s) "
                   "ON CONFLICT (snapshot_id) DO UPDATE SET record=EXCLUDED.record RETURNING 1",
                   (snapshot_id, record))

    def clear_damaged(self, snapshot_id: str) -> None:
        self._rows("clearing damage", "DELETE FROM volfs_damaged WHERE snapshot_id=%s RETURNING 1",
                   (snapshot_id,))

    def damaged(self) -> dict[str, dict[str, Any]]:
        return {r[0]: json.loads(r[1]) for r in
                self._rows("reading damage marks", "SELECT snapshot_id, record FROM volfs_damaged")}

    @contextmanager
    def sweep(self) -> Iterator[Any]:
        raise VolfsError("`volfs gc` is not available in distributed mode yet: the bucket is "
                         "shared by every machine and cross-machine gc is not implemented")
        yield  # pragma: no cover


def _insert_snapshot(conn: Any, snapshot: SnapshotRecord) -> None:
    conn.execute("INSERT INTO volfs_snapshots (id, volume_id, parent, time, record) VALUES (%s,%s,%s,%s,%s)",
                 (snapshot.id, snapshot.volume_id, snapshot.parent, snapshot.time, snapshot.to_json().decode()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]

