"""The catalog: volumes, snapshots, heads, trees, mounts and open handles — the interface.

This docstring is the one authoritative schema. Two LMDB environments live in a store:

``catalog/`` — durable (every write transaction is synced); named databases:

=============  ====================================  ==========================================
database       key                                   value
=============  ====================================  ==========================================
``meta``       ``b"format_version"``                 ascii integer (currently ``3``)
``names``      ``env + b"\\0" + name``                volume id, ascii (``vo-…``)
``volumes``    volume id                             JSON :class:`VolumeRecord`
``snapshots``  snapshot id (``sn-…``)                JSON :class:`SnapshotRecord`
``trees``      16-byte raw digest                    canonical tree encoding (see tree.py)
``fresh``      16-byte raw digest                    f64 LE: when it was last written
``settings``   ``b"retention\\0" + volume id``        JSON {"keep_last": int|null,
                                                     "keep_days": float|null}
``damaged``    snapshot id                           JSON {"time", "problems": [str, …]}
=============  ====================================  ==========================================

A format 1 catalog is upgraded when opened: ``meta`` and every volume record say 2 (one
write transaction); its VT1 trees stay as they are and keep decoding. Entry JSON (a
snapshot's ``root``) gained ``link``, ``nlink``, ``rdev``, ``links`` in format 2; records
without them load with the defaults (0, 1, 0, 0).

``fresh`` protects trees that no snapshot names (a mount's view, stored with its commit or
on its own) from ``volfs gc`` for its grace window (see maintenance/gc.py): ``put_trees`` and
``advance_head`` write a record for every tree they are given, stored before or not, and
gc prunes records older than its window.
``damaged`` holds the snapshots ``volfs fsck --repair`` found damaged (a flag, nothing is
deleted). A missing ``settings`` retention record means "keep every snapshot".

``runtime/`` — not synced (rebuilt from live processes; losing it loses nothing):

=============  ====================================  ==========================================
``mounts``     mount id (``mo-…``)                   JSON :class:`MountRecord`
``handles``    mount id + ``b"\\0"`` + fh (u64 BE)    JSON {"path", "pid", "cmdline", "write"}
``leases``     lease id (``le-…``)                   JSON :class:`Lease`: a process writing blobs
                                                     for a commit that has not landed yet
=============  ====================================  ==========================================

A mount's record names its *current* base snapshot (the daemon updates it on reload), so
``volfs gc`` keeps it; a lease makes gc keep every unreferenced blob written since it began.

Invariants: a volume's ``head`` names a snapshot in ``snapshots``; a snapshot's root and
every tree below it are in ``trees`` and every chunk they name is a durable blob. A
snapshot's ``parent`` may be missing: history retention (``volfs gc``) drops old
snapshots, and history stops there; a volume's first snapshot has none (a fork's shares
its source snapshot's root tree, see ``fork_volume``). Trees, the snapshot and the head
move in **one** write transaction, and the head only moves if it still equals what the
writer merged onto (compare-and-swap), so a crash leaves the old head or the new one,
never a torn one.
LMDB serialises writers across processes.

Concurrency: one ``lmdb.Environment`` per path per process (LMDB forbids opening the
same environment twice in one process); each transaction opens and closes inside one
call and never spans an ``await``.

The package: this module is the interface, :class:`Catalog` (a Protocol: every method a
caller may use, typed), and re-exports the records; ``records.py`` holds the records and
their JSON, ``lmdb.py`` the embedded catalog on the schema above (:class:`LmdbCatalog`),
``postgres.py`` the distributed one (PostgreSQL holds the truth, the bucket the trees, an
:class:`LmdbCatalog` composed in as its cache and runtime tables). Only the composition
root (``volfs/store.py``, ``volfs/remote.py``) picks one; everything above it holds a
:class:`Catalog` and never asks which. What a backend cannot do is declared here (the
``bucket`` capability, and the methods documented "embedded only"), not discovered.

Must not: import a backend's driver (lmdb, psycopg) in this module beyond re-exporting
``close_environments``; import anything above the catalog layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from volfs.blobs import Digest, ObjectStore
from volfs.catalog.lmdb import LmdbCatalog, LmdbSweep, close_environments
from volfs.catalog.records import (
    FORMAT_VERSION,
    MAX_CHANGES_RECORDED,
    HeadMoved,
    Lease,
    MountId,
    MountRecord,
    Pin,
    SnapshotId,
    SnapshotRecord,
    VolumeId,
    VolumeRecord,
    entry_from_json,
    entry_to_json,
    follow_parents,
    new_id,
    new_volume_records,
    process_alive,
    process_start,
)
from volfs.catalog.watch import HeadWatch
from volfs.core.tree import Tree

__all__ = [
    "FORMAT_VERSION",
    "MAX_CHANGES_RECORDED",
    "Catalog",
    "HeadMoved",
    "Lease",
    "LmdbCatalog",
    "LmdbSweep",
    "MountId",
    "MountRecord",
    "Pin",
    "SnapshotId",
    "SnapshotRecord",
    "Sweep",
    "VolumeId",
    "VolumeRecord",
    "close_environments",
    "entry_from_json",
    "entry_to_json",
    "follow_parents",
    "new_id",
    "new_volume_records",
    "process_alive",
    "process_start",
]


class Sweep(Protocol):
    """What ``volfs gc`` reads and deletes inside an embedded catalog's one write
    transaction (:meth:`Catalog.sweep`): everything read includes every commit that landed
    before it began, and no commit lands until it ends."""

    #: The trees :meth:`delete_tree` deleted so far.
    deleted_trees: list[Digest]

    def heads(self) -> dict[VolumeId, SnapshotId]: ...

    def snapshot_ids(self) -> set[str]: ...

    def snapshot(self, snapshot_id: str) -> SnapshotRecord | None: ...

    def tree(self, digest: Digest) -> Tree | None:
        """The tree, or None if it is missing; CorruptionError if it does not verify."""
        ...

    def fresh_trees(self) -> dict[Digest, float]: ...

    def delete_snapshot(self, snapshot_id: str) -> None: ...

    def delete_tree(self, digest: Digest) -> None: ...

    def forget_fresh(self, digest: Digest) -> None: ...

    def drop_settings_of_deleted_volumes(self) -> int: ...


class Catalog(Protocol):
    """Every catalog backend: the records of volumes, snapshots and heads, the trees, and
    this machine's runtime tables (mounts, open handles, leases).

    Implemented by :class:`LmdbCatalog` (embedded) and ``postgres.PgCatalog`` (distributed).
    Heads move only by compare-and-swap (:meth:`advance_head`, :meth:`rollback_head`,
    raising :class:`HeadMoved`); a caller must have made every blob the new trees name
    durable first. Each call is one transaction or request: none spans an ``await``.
    """

    # -- capabilities ----------------------------------------------------------------------
    @property
    def bucket(self) -> ObjectStore | None:
        """The shared object store the trees live in (distributed mode: this machine's LMDB
        only caches them), or None: the catalog itself holds them (embedded). gc and fsck
        sweep and check the bucket where there is one (maintenance/bucket_gc.py)."""
        ...

    #: Counters the tests assert on where cost matters ("trees_written", "trees_read", …).
    stats: dict[str, int]

    @property
    def format_version(self) -> int:
        """The store format of this machine's catalog (FORMAT_VERSION once opened)."""
        ...

    def check(self) -> None:
        """Fails with one line (BackendUnavailableError) if the catalog cannot be reached."""
        ...

    # -- trees -----------------------------------------------------------------------------
    def get_tree(self, digest: Digest) -> Tree:
        """The tree, verified against its digest (CorruptionError if damaged or missing
        from a bucket; NotFoundError if an embedded catalog lacks it)."""
        ...

    def remember_trees(self, trees: Mapping[Digest, Tree]) -> None:
        """Caches trees this process built and stored, so reading them back decodes nothing."""
        ...

    def put_trees(self, trees: dict[Digest, bytes]) -> None:
        """Stores trees no head names yet (a mount's view), each marked fresh for gc."""
        ...

    def has_tree(self, digest: Digest) -> bool: ...

    def get_tree_raw(self, digest: Digest) -> bytes | None:
        """This machine's stored bytes of a tree, unverified and uncached; None if missing."""
        ...

    def tree_digests(self) -> list[Digest]:
        """The trees this machine's catalog holds."""
        ...

    def fresh_trees(self) -> dict[Digest, float]:
        """Trees written within gc's reach, and when each was last written."""
        ...

    # -- volumes ---------------------------------------------------------------------------
    def create_volume(self, environment: str, name: str, created_by: str) -> VolumeRecord: ...

    def fork_volume(
        self, environment: str, name: str, created_by: str, source: SnapshotId, origin: str
    ) -> VolumeRecord:
        """A new volume ``name`` whose first snapshot (no parent, ``origin``) shares snapshot
        ``source``'s root: no tree or blob is written, only the volume, its name and that
        snapshot. Checks, atomically with the insert (against gc), that ``source`` and its
        root tree still exist (NotFoundError, CorruptionError); AlreadyExistsError if the
        name is taken."""
        ...

    def find_volume(self, environment: str, name: str) -> VolumeRecord | None: ...

    def get_volume(self, environment: str, name: str) -> VolumeRecord: ...

    def get_volume_by_id(self, volume_id: str) -> VolumeRecord: ...

    def list_volumes(self, environment: str | None = None) -> list[VolumeRecord]: ...

    def delete_volume(self, environment: str, name: str) -> VolumeRecord: ...

    def rename_volume(self, environment: str, old: str, new: str) -> VolumeRecord: ...

    def iter_names(self) -> list[tuple[str, str, str]]:
        """(environment, name, volume id) of every entry of the name index."""
        ...

    # -- snapshots and heads ---------------------------------------------------------------
    def get_snapshot(self, snapshot_id: str) -> SnapshotRecord: ...

    def find_snapshot(self, snapshot_id: str) -> SnapshotRecord | None: ...

    def head(self, volume_id: str) -> SnapshotRecord: ...

    def advance_head(
        self, expected: SnapshotId, snapshot: SnapshotRecord, trees: dict[Digest, bytes]
    ) -> None:
        """Stores ``trees`` and ``snapshot`` and moves the head to it, if head is ``expected``
        (else :class:`HeadMoved`)."""
        ...

    def rollback_head(
        self, expected: SnapshotId, snapshot: SnapshotRecord, source: SnapshotId
    ) -> None:
        """Moves the head to ``snapshot`` (whose root is ``source``'s) if head is ``expected``,
        checking that ``source`` and its root tree still exist."""
        ...

    def head_turn(self, volume_id: str) -> AbstractContextManager[None]:
        """Held by a committer from reading the head to moving it: the committers of one
        volume take turns instead of merging onto heads that keep moving under them. Only
        a cost saver: the move stays a compare-and-swap, so a writer without a turn (or one
        given up waiting) is still never lost."""
        ...

    def history(self, volume_id: str, limit: int | None = None) -> Iterator[SnapshotRecord]:
        """The head, then its parents; stops where retention dropped a parent."""
        ...

    def watch_head(self, volume_id: str) -> HeadWatch:
        """What tells a following mount the head may have moved (``watch.py``)."""
        ...

    def iter_snapshots_raw(self) -> list[tuple[str, bytes]]:
        """Every snapshot record, undecoded (fsck reports the ones that do not decode)."""
        ...

    # -- retention and damage marks --------------------------------------------------------
    def get_retention(self, volume_id: str) -> dict[str, Any] | None: ...

    def set_retention(self, volume_id: str, policy: dict[str, Any] | None) -> None: ...

    def mark_damaged(self, snapshot_id: str, problems: list[str]) -> None: ...

    def clear_damaged(self, snapshot_id: str) -> None: ...

    def damaged(self) -> dict[str, dict[str, Any]]: ...

    # -- runtime: mounts, open handles, leases ---------------------------------------------
    def register_mount(self, mount: MountRecord) -> None: ...

    def update_mount(self, mount: MountRecord) -> None: ...

    def set_mount_base(self, mount_id: str, base: SnapshotId) -> None:
        """A mount reloaded onto ``base``: its record names it, so gc keeps it."""
        ...

    def mount_committed(self, mount_id: str, base: SnapshotId, view: Digest | None) -> None:
        """A mount committed: its view is now ``view`` on ``base`` (a pin where other
        machines' gc must see it; nothing to record for an embedded catalog)."""
        ...

    def unregister_mount(self, mount_id: str) -> None: ...

    def list_mounts(self) -> list[MountRecord]:
        """This machine's mount records."""
        ...

    def add_handle(self, mount_id: str, fh: int, info: dict[str, Any]) -> None: ...

    def remove_handle(self, mount_id: str, fh: int) -> None: ...

    def set_handles(self, mount_id: str, handles: dict[int, dict[str, Any]]) -> None: ...

    def handles(self, mount_id: str) -> list[dict[str, Any]]: ...

    def lease(self, what: str, since: float | None = None) -> AbstractContextManager[Lease]:
        """Held by a writer from its first blob to its head move: gc keeps what it wrote."""
        ...

    def list_leases(self) -> list[Lease]: ...

    def drop_lease(self, lease_id: str) -> None: ...

    # -- gc --------------------------------------------------------------------------------
    def sweep(self) -> AbstractContextManager[Sweep]:
        """Embedded only (``bucket`` is None): gc's one write transaction, during which no
        commit lands. A catalog with a bucket raises InvalidError: bucket_gc.py collects it."""
        ...

    def gc_lock(self) -> AbstractContextManager[None]:
        """Held by gc while it marks and deletes: waits for every lease on every machine, and
        leases wait for it (distributed); an embedded catalog has nothing to wait for."""
        ...

    def live_pins(self, timeout: float, *, prune: bool = False) -> list[Pin]:
        """Pins of mounts on every machine refreshed within ``timeout`` seconds (``prune``
        deletes the older ones); an embedded catalog has none (see :meth:`list_mounts`)."""
        ...

    def delete_snapshots(self, snapshot_ids: Sequence[str]) -> list[str]:
        """gc: deletes these snapshots (never a current head), their damage marks and the
        retention settings of deleted volumes, in one transaction; returns what it deleted."""
        ...
