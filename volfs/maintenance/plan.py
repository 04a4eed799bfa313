"""The gc plan: what ``volfs gc`` keeps, decided once for the local and the bucket sweeper.

A collection has two halves. *What stays* is the same whatever holds the store — this
module: the live mounts' and writers' pins (:func:`live_pins`), which snapshots history
retention keeps and which it drops (:class:`Plan`, the retention loop over every volume),
and the trees and blobs all of that reaches (:class:`Marker`). *How the rest goes* depends
on where the objects are: gc.py sweeps an embedded store (one LMDB write transaction,
then the blob files under their lock), bucket_gc.py a distributed one (a listing of the
bucket, under the gc lock). Both build their report (:class:`GcReport`) from here.

The rules themselves are gc.py's docstring.

Which sweeper runs is the store's declared ``bucket`` capability (:func:`bucket_of`, read
by gc.py and fsck.py), never its backend's type.

Must not: delete anything; ask which backend a store has; import click or the mount side
(overlays are read as files here).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volfs import locks
from volfs.blobs import Digest, ObjectStore
from volfs.catalog import (
    Catalog,
    Lease,
    SnapshotRecord,
    VolumeRecord,
    entry_from_json,
    process_alive,
)
from volfs.core.tree import EMPTY_TREE, Kind, Tree, tree_digest
from volfs.errors import CorruptionError, InvalidError
from volfs.snapshots.history import kept_by_gc
from volfs.store import Store

DEFAULT_GRACE = 3600.0
EMPTY_TREE_DIGEST = tree_digest(EMPTY_TREE)


def bucket_of(store: Store, what: str) -> ObjectStore | None:
    """The bucket a distributed store's trees and blobs live in, or None (embedded).

    Refuses, in one line, a store whose catalog and blobs disagree about it: neither
    sweeper may run on it (the local one would collect a cache, the bucket one would miss
    what is only local).
    """
    trees, blobs = store.catalog.bucket, store.blobs.bucket
    if (trees is None) != (blobs is None):
        held = blobs or trees
        assert held is not None
        raise InvalidError(
            f"{what} works on a local store or a whole distributed one; this one "
            f"keeps its {'blobs' if blobs is not None else 'trees'} in distributed "
            f"mode ({held.describe()}) and the rest locally"
        )
    return trees


# -- what live mounts and writers need -------------------------------------------------------
@dataclass
class Pins:
    """What live (or crashed, not yet recovered) mounts and in-flight writers need."""

    #: Snapshots that must stay: mount bases.
    snapshots: dict[str, str] = field(default_factory=dict)  # snapshot id -> who
    #: Trees that must stay with all below them: mounts' committed views.
    roots: dict[Digest, str] = field(default_factory=dict)  # tree digest -> who
    #: The oldest live lease's start: nothing written since then is deleted.
    since: float | None = None
    leases: int = 0
    notes: list[str] = field(default_factory=list)
    #: Machines whose mounts the catalog's pins name (distributed mode).
    machines: set[str] = field(default_factory=set)


def _first_journal_record(path: Path) -> list[Any] | None:
    try:
        with open(path, "rb") as f:
            line = f.readline()
    except FileNotFoundError:
        return None
    record = json.loads(line)
    if not isinstance(record, list) or len(record) != 3 or record[0] != "view":
        raise ValueError("the journal does not start with its view")
    return record


def live_pins(
    store: Store, *, prune: bool = False, pin_timeout: float | None = None, prune_pins: bool = False
) -> Pins:
    """What mounts and writers need kept. ``prune``: drop dead leases.

    With ``pin_timeout``, first the catalog's pins of mounts on every machine refreshed
    within it (``prune_pins`` deletes the older ones; an embedded catalog has none). Then
    this machine's: the mount table, the overlays on disk and the leases. A mount's
    current base is in its record (the daemon updates it on reload) and, for a writable
    mount, in its journal's first record with the view it last committed. ``mount.json``
    names only the base it started on: it counts only while neither of the others exists
    (a mount still starting).
    """
    pins = Pins()
    catalog = store.catalog
    if pin_timeout is not None:
        for pin in catalog.live_pins(pin_timeout, prune=prune_pins):
            who = f"mount {pin.mount_id} on {pin.machine}"
            pins.machines.add(pin.machine)
            pins.snapshots.setdefault(pin.snapshot_id, who)
            if pin.view_tree:
                pins.roots.setdefault(pin.view_tree, who)
    recorded = set()
    for record in catalog.list_mounts():
        # Not the pid: it may be another PID namespace's. A live daemon holds its overlay's
        # lock, and a dead one's overlay waits on disk for recover: both keep their base.
        if Path(record.overlay).exists():
            recorded.add(record.id)
            pins.snapshots.setdefault(
                record.base, f"mount {record.id} of {record.volume_name} at {record.path}"
            )
    if store.overlays_dir.is_dir():
        for overlay in sorted(store.overlays_dir.iterdir()):
            if overlay.is_dir():
                _overlay_pins(overlay, overlay.name in recorded, pins)
    for lease in catalog.list_leases():
        if _lease_alive(lease):
            pins.leases += 1
            pins.since = lease.since if pins.since is None else min(pins.since, lease.since)
        elif prune:
            catalog.drop_lease(lease.id)
    return pins


def _lease_alive(lease: Lease) -> bool:
    if lease.lock is not None:
        return locks.held(lease.lock)
    return process_alive(lease.pid, lease.start)  # a lease of an older version


def _overlay_pins(overlay: Path, recorded: bool, pins: Pins) -> None:
    who = f"overlay {overlay.name}"
    try:
        first = _first_journal_record(overlay / "journal")
    except (OSError, ValueError) as exc:
        pins.notes.append(f"{who}: unreadable journal ({exc}); only its base is kept")
        first = None
    if first is not None:
        view = entry_from_json(first[1])
        if view.tree is not None:
            pins.roots.setdefault(view.tree, who)
        pins.snapshots.setdefault(first[2], who)
    elif not recorded:
        try:
            pins.snapshots.setdefault(json.loads((overlay / "mount.json").read_text())["base"], who)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not written yet, or a broken leftover: nothing to keep for it


# -- which snapshots stay ------------------------------------------------------------------------
def read_snapshots(catalog: Catalog) -> list[SnapshotRecord]:
    """Every snapshot record; CorruptionError (gc deletes nothing) if one does not decode."""
    records = []
    for snapshot_id, raw in catalog.iter_snapshots_raw():
        try:
            records.append(SnapshotRecord.from_json(raw))
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptionError(
                f"snapshot record {snapshot_id} does not decode ({exc}); run `volfs fsck`"
            ) from None
    return records


@dataclass(frozen=True)
class Dropped:
    snapshot: SnapshotRecord
    volume: str  # its name, or its id once deleted
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.snapshot.id, "volume": self.volume, "reason": self.reason}


class Plan:
    """Which snapshots stay and go, and which roots must be marked, from one reading of the
    catalog and the pins. ``advice`` ends the message when a head names no snapshot."""

    def __init__(
        self,
        catalog: Catalog,
        pins: Pins,
        *,
        now: float,
        grace: float,
        apply_retention: bool,
        advice: str = "run `volfs fsck`",
    ) -> None:
        self.pins = pins
        self.volumes: dict[str, VolumeRecord] = {v.id: v for v in catalog.list_volumes()}
        self.snapshots = read_snapshots(catalog)
        self.by_id: dict[str, SnapshotRecord] = {s.id: s for s in self.snapshots}
        for v in self.volumes.values():
            if v.head not in self.by_id:
                raise CorruptionError(
                    f"the head of volume {v.name!r} ({v.head}) is missing; {advice}"
                )
        by_volume: dict[str, list[SnapshotRecord]] = {}
        for s in self.snapshots:
            by_volume.setdefault(s.volume_id, []).append(s)
        self.keep: set[str] = set()
        self.drop: list[Dropped] = []
        # The retention loop: history.py decides per volume; a deleted volume's go.
        for volume_id, records in by_volume.items():
            volume = self.volumes.get(volume_id)
            kept, reason = kept_by_gc(
                catalog,
                volume,
                records,
                pinned=pins.snapshots,
                apply_retention=apply_retention,
                now=now,
                grace=grace,
            )
            self.keep |= kept
            name = volume.name if volume is not None else volume_id
            self.drop += [Dropped(s, name, reason) for s in records if s.id not in kept]
        #: How many of the pinned snapshots exist.
        self.pinned = len(pins.snapshots.keys() & self.by_id.keys())

    def roots_to_mark(self) -> list[Digest]:
        roots = [self.by_id[i].root.tree for i in self.keep]
        return [r for r in roots if r is not None] + list(self.pins.roots)

    def mark(self, marker: Marker, *, empty_tree: bool = True) -> None:
        """Marks what the kept snapshots, the pinned views and (``empty_tree``) the empty
        tree reach."""
        for snapshot_id in sorted(self.keep):
            root = self.by_id[snapshot_id].root.tree
            if root is not None and root not in marker.trees:
                marker.mark(root, f"snapshot {snapshot_id}")
        for root, who in self.pins.roots.items():
            if root not in marker.trees:
                marker.mark(root, who)
        if empty_tree and EMPTY_TREE_DIGEST not in marker.trees:
            marker.mark(EMPTY_TREE_DIGEST, "the empty tree")


# -- marking -------------------------------------------------------------------------------------
TreeReader = Callable[[Digest], "Tree | None"]


class Marker:
    """The live set: each tree read once, however many snapshots share it."""

    def __init__(self, read: TreeReader) -> None:
        self.read = read
        self.trees: set[Digest] = set()
        self.blobs: set[Digest] = set()

    def mark(self, digest: Digest, where: str) -> None:
        stack = [digest]
        while stack:
            current = stack.pop()
            if current in self.trees:
                continue
            tree = self.read(current)
            if tree is None:
                raise CorruptionError(
                    f"tree {current} (under {where}) is missing; run `volfs fsck`"
                )
            self.trees.add(current)
            if tree.leaves is not None:  # a split directory: its leaves are trees to mark
                stack += [ref.digest for ref in tree.leaves if ref.digest not in self.trees]
                continue
            for entry in tree.entries:
                if entry.kind is Kind.FILE:
                    self.blobs.update(
                        digest for _, digest in entry.chunks
                    )  # sparse: holes name none
                elif (
                    entry.kind is Kind.DIR
                    and entry.tree is not None
                    and entry.tree not in self.trees
                ):
                    stack.append(entry.tree)


@dataclass
class Marked:
    """What a caller (fsck) already walked: trees and blobs of these snapshots."""

    snapshots: set[str]
    trees: set[Digest]
    blobs: set[Digest]


# -- the report ----------------------------------------------------------------------------------
@dataclass
class GcReport:
    dry_run: bool
    grace: float
    cutoff: float
    retention: bool
    snapshots_dropped: list[dict[str, str]] = field(default_factory=list)
    trees_deleted: int = 0
    blobs_deleted: int = 0
    bytes_freed: int = 0
    temp_files_deleted: int = 0
    #: Unreferenced but younger than the grace window (or a lease): kept this time.
    trees_young: int = 0
    blobs_young: int = 0
    temp_files_young: int = 0
    live_trees: int = 0
    live_blobs: int = 0
    pinned_snapshots: int = 0
    leases: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- the store's temp files (both sweepers: this machine's tmp/) -----------------------------------
def temp_files(store: Store) -> list[tuple[Path, float, int]]:
    """(path, mtime, size) of every file in the store's temp directory."""
    out: list[tuple[Path, float, int]] = []
    tmp = store.root / "tmp"
    try:
        names = sorted(os.listdir(tmp))
    except FileNotFoundError:
        return out
    for name in names:
        try:
            st = os.lstat(tmp / name)
        except FileNotFoundError:
            continue
        out.append((tmp / name, st.st_mtime, st.st_size))
    return out


def remove_temp_files(store: Store, cutoff: float) -> int:
    """Deletes the store's temp files older than ``cutoff`` (a writer died mid-blob)."""
    removed = 0
    for path, mtime, _ in temp_files(store):
        if mtime < cutoff:
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed
