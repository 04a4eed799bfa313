"""Garbage collection (``volfs gc``): deleting the snapshots, trees and blobs nothing needs.

What is kept — the *live set* — is everything reachable from:

1. every snapshot history retention keeps (history.py: per volume keep-last N and/or
   keep T days; by default everything; always the head, and every snapshot that was the
   head less than the grace window ago); snapshots of deleted volumes are garbage;
2. every live mount: its base snapshot (the mount record, which the daemon updates on
   reload, and ``mount.json``), and for a writable mount the view it last committed and its
   base (the first journal record). Crashed mounts' overlays count as live until
   ``volfs recover`` commits or discards them — recovery replays onto that view;
3. the empty tree (new volumes name it without storing it).

An unreferenced object is deleted only once it is older than the **grace window**
(default one hour, ``--grace``), because a commit writes its blobs (and a mount its view
trees) before the head names them:

- a blob's age is its mtime. A writer that finds a blob already stored *freshens* it
  (blobs/local.py) instead of writing it again, so a blob about to be referenced again
  is young too; gc re-checks the mtime under a lock freshening also takes, so the two
  never interleave;
- a tree's age is its ``fresh`` record: ``Catalog.put_trees`` and ``advance_head`` write
  one for every tree they are given, stored before or not (a mount's view is stored with
  its commit, and its journal names it only a moment later). A fresh tree keeps what is
  below it, too;
- a **lease** (``Catalog.lease``, held from a writer's first blob to its head move) moves
  the cutoff back to when it began, for writes longer than the grace window. Leases of
  dead processes are ignored and pruned.

Commits go on while gc runs. Deleting snapshots and trees happens in one catalog write
transaction (no commit lands during it) that first marks whatever appeared since the
mark phase — new snapshots (a commit, a rollback to a snapshot being dropped), new mount
views and bases — and blobs are deleted after it, only if unreferenced by all of that.
Only trees and blobs that existed at the mark phase can be deleted. If the mark phase
meets damage (a missing or corrupt tree, a head naming no snapshot, a snapshot record
that does not decode) gc deletes nothing and says to run ``volfs fsck``: what cannot be
read might reference anything.

A distributed store (PostgreSQL + a bucket) is collected by distgc.py: the same rules,
marked from PostgreSQL and every machine's mount pins, swept from the bucket.

Must not: delete a tree or blob any retained snapshot or live mount can reach; import
click or the mount side (``recover``/``overlay``): overlays are read as files here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volfs.blobs import Digest
from volfs.blobs.local import LocalBlobStore
from volfs.catalog import Catalog, SnapshotRecord, VolumeRecord, entry_from_json, process_alive
from volfs.errors import CorruptionError, InvalidError
from volfs.snapshots.history import kept_by_gc
from volfs.store import Store
from volfs.core.tree import EMPTY_TREE, Kind, Tree, decode_verified, tree_digest

log = logging.getLogger(__name__)

DEFAULT_GRACE = 3600.0
EMPTY_TREE_DIGEST = tree_digest(EMPTY_TREE)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1h"``, ``"2d"`` -> seconds."""
    value = text.strip().lower()
    scale = _UNITS.get(value[-1:], None)
    number = value[:-1] if scale is not None else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise InvalidError(f"invalid duration {text!r}: use seconds or 30s, 10m, 1h, 2d") from None
    if not seconds >= 0:  # negative, or NaN
        raise InvalidError(f"invalid duration {text!r}: must not be negative")
    return seconds


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


def live_pins(store: Store, *, prune: bool = False) -> Pins:
    """Reads the mount table, the overlays on disk and the leases. ``prune``: drop dead leases.

    A mount's current base is in its record (the daemon updates it on reload) and, for a
    writable mount, in its journal's first record with the view it last committed.
    ``mount.json`` names only the base it started on: it counts only while neither of the
    others exists (a mount still starting).
    """
    pins = Pins()
    catalog = store.catalog
    recorded = set()
    for record in catalog.list_mounts():
        if process_alive(record.pid, None) or Path(record.overlay).exists():
            recorded.add(record.id)
            pins.snapshots.setdefault(record.base, f"mount {record.id} of {record.volume_name} at {record.path}")
    if store.overlays_dir.is_dir():
        for overlay in sorted(store.overlays_dir.iterdir()):
            if overlay.is_dir():
                _overlay_pins(overlay, overlay.name in recorded, pins)
    for lease in catalog.list_leases():
        if process_alive(lease.pid, lease.start):
            pins.leases += 1
            pins.since = lease.since if pins.since is None else min(pins.since, lease.since)
        elif prune:
            catalog.drop_lease(lease.id)
    return pins


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


# -- marking -------------------------------------------------------------------------------------
TreeReader = Callable[[Digest], "Tree | None"]


def read_tree(store: Store, digest: Digest) -> Tree | None:
    """The tree, verified; None if missing; CorruptionError if it fails its digest."""
    raw = store.catalog.get_tree_raw(digest)
    if raw is None:
        return None
    try:
        return decode_verified(raw, digest)
    except ValueError as exc:
        raise CorruptionError(f"tree {digest} is damaged ({exc}); run `volfs fsck`") from None


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
                raise CorruptionError(f"tree {current} (under {where}) is missing; run `volfs fsck`")
            self.trees.add(current)
            for entry in tree.entries:
                if entry.kind is Kind.FILE:
                    self.blobs.update(digest for _, digest in entry.chunks)  # sparse: holes name none
                elif entry.kind is Kind.DIR and entry.tree is not None and entry.tree not in self.trees:
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


def _snapshots(store: Store) -> list[SnapshotRecord]:
    records = []
    for snapshot_id, raw in store.catalog.iter_snapshots_raw():
        try:
            records.append(SnapshotRecord.from_json(raw))
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptionError(f"snapshot record {snapshot_id} does not decode ({exc}); "
                                  "run `volfs fsck`") from None
    return records


# -- the collection --------------------------------------------------------------------------
def require_local(store: Store, what: str) -> None:
    """Refuses a distributed store: its local catalog and blobs are only a cache."""
    if type(store.catalog) is not Catalog or not isinstance(store.blobs, LocalBlobStore):
        raise InvalidError(f"{what} works on a local store; this one is in distributed mode "
                           "(its local catalog and blobs are only a cache)")


def collect(store: Store, *, grace: float = DEFAULT_GRACE, dry_run: bool = False,
            apply_retention: bool = True, now: float | None = None,
            premarked: Marked | None = None) -> GcReport:
    """Deletes what nothing needs (module docstring); ``dry_run`` only counts it.

    ``apply_retention=False`` (fsck --repair) keeps every snapshot of every volume.
    """
    from volfs.maintenance import bucket_gc as distgc  # distgc imports this module

    if distgc.is_distributed(store):
        return distgc.collect_bucket(store, grace=grace, dry_run=dry_run, apply_retention=apply_retention,
                                     now=now, premarked=premarked)
    require_local(store, "`volfs gc`")
    now = time.time() if now is None else now
    catalog = store.catalog
    pins = live_pins(store, prune=not dry_run)
    cutoff = now - grace
    if pins.since is not None:
        cutoff = min(cutoff, pins.since)
    report = GcReport(dry_run, grace, cutoff, apply_retention, leases=pins.leases,
                      notes=list(pins.notes))

    # 1. Which snapshots stay.
    volumes: dict[str, VolumeRecord] = {v.id: v for v in catalog.list_volumes()}
    snapshots = _snapshots(store)
    by_volume: dict[str, list[SnapshotRecord]] = {}
    for s in snapshots:
        by_volume.setdefault(s.volume_id, []).append(s)
    ids = {s.id for s in snapshots}
    for v in volumes.values():
        if v.head not in ids:
            raise CorruptionError(f"the head of volume {v.name!r} ({v.head}) is missing; "
                                  "run `volfs fsck`")
    keep: set[str] = set()
    drop: list[tuple[SnapshotRecord, str]] = []
    for volume_id, records in by_volume.items():
        volume = volumes.get(volume_id)
        kept, reason = kept_by_gc(store.catalog, volume, records, pinned=pins.snapshots,
                                  apply_retention=apply_retention, now=now, grace=grace)
        keep |= kept
        name = volume.name if volume is not None else volume_id
        for s in records:
            if s.id not in kept:
                drop.append((s, reason))
                report.snapshots_dropped.append({"id": s.id, "volume": name, "reason": reason})
    report.pinned_snapshots = len(pins.snapshots.keys() & ids)

    # 2. Mark what they, the mounts and the empty tree reach.
    marker = Marker(lambda d: read_tree(store, d))
    if premarked is not None and premarked.snapshots <= keep:
        marker.trees |= premarked.trees
        marker.blobs |= premarked.blobs
    by_id: dict[str, SnapshotRecord] = {s.id: s for s in snapshots}
    for snapshot_id in sorted(keep):
        root = by_id[snapshot_id].root.tree
        if root is not None:
            marker.mark(root, f"snapshot {snapshot_id}")
    for root, who in pins.roots.items():
        marker.mark(root, who)
    if catalog.has_tree(EMPTY_TREE_DIGEST):
        marker.mark(EMPTY_TREE_DIGEST, "the empty tree")

    # 3. Candidates: what existed at the mark phase and is not marked. Young trees keep what
    #    is below them.
    fresh = catalog.fresh_trees()
    all_trees = catalog.tree_digests()
    referenced = len(marker.trees)
    for d in all_trees:
        if d not in marker.trees and fresh.get(d, float("-inf")) >= cutoff:
            marker.mark(d, f"fresh tree {d}")
    report.trees_young = len(marker.trees) - referenced
    tree_candidates = [d for d in all_trees if d not in marker.trees]
    blob_candidates = [d for d in store.blobs.digests() if d not in marker.blobs]
    temps = temp_files(store)
    report.temp_files_young = sum(1 for t in temps if t[1] >= cutoff)

    if dry_run:
        report.trees_deleted = len(tree_candidates)
        for d in blob_candidates:
            try:
                st = os.lstat(store.blobs.path(d))
            except FileNotFoundError:
                continue
            if st.st_mtime < cutoff:
                report.blobs_deleted += 1
                report.bytes_freed += st.st_size
            else:
                report.blobs_young += 1
        report.temp_files_deleted = len(temps) - report.temp_files_young
        report.live_trees, report.live_blobs = len(marker.trees), len(marker.blobs)
        return report

    # 4. One write transaction: mark what appeared meanwhile, then delete.
    known = set(ids)
    with catalog.sweep() as sweep:
        pins_now = live_pins(store)
        reader = marker.read
        marker.read = sweep.tree  # what the transaction sees, not what was committed before it
        try:
            current = sweep.snapshot_ids()
            heads = set(sweep.heads().values())
            roots: list[tuple[Digest, str]] = []
            for snapshot_id in sorted(current - known):
                new = sweep.snapshot(snapshot_id)
                if new is not None and new.root.tree is not None:
                    roots.append((new.root.tree, f"snapshot {snapshot_id}"))
            dropped = []
            for s, _ in drop:
                if s.id in heads or s.id in pins_now.snapshots or s.id not in current:
                    if s.root.tree is not None and s.id in current:
                        roots.append((s.root.tree, f"snapshot {s.id}"))
                    continue
                dropped.append(s.id)
            roots += [(d, who) for d, who in pins_now.roots.items()]
            for d, t in sweep.fresh_trees().items():
                if t >= cutoff:
                    roots.append((d, f"fresh tree {d}"))
            for root, who in roots:
                if root not in marker.trees and sweep.tree(root) is not None:
                    marker.mark(root, who)
            for snapshot_id in dropped:
                sweep.delete_snapshot(snapshot_id)
            gone = set(dropped)
            report.snapshots_dropped = [d for d in report.snapshots_dropped if d["id"] in gone]
            for d in tree_candidates:
                if d not in marker.trees and d != EMPTY_TREE_DIGEST:
                    sweep.delete_tree(d)
            for d, t in sweep.fresh_trees().items():
                if t < cutoff:
                    sweep.forget_fresh(d)
            sweep.drop_settings_of_deleted_volumes()
        finally:
            marker.read = reader
    report.trees_deleted = len(sweep.deleted_trees)

    # 5. Blobs, under the blob store's gc lock (freshening writers wait for it).
    candidates = [d for d in blob_candidates if d not in marker.blobs]
    for start in range(0, len(candidates), 1024):
        batch = candidates[start:start + 1024]
        deleted = store.blobs.delete_stale(batch, cutoff)
        report.blobs_deleted += len(deleted)
        report.bytes_freed += sum(size for _, size in deleted)
    report.blobs_young = len(candidates) - report.blobs_deleted
    report.temp_files_deleted = remove_temp_files(store, cutoff)
    report.live_trees, report.live_blobs = len(marker.trees), len(marker.blobs)
    if report.trees_deleted or report.blobs_deleted or report.snapshots_dropped:
        log.info("gc: dropped %d snapshots, deleted %d trees and %d blobs (%d bytes)",
                 len(report.snapshots_dropped), report.trees_deleted, report.blobs_deleted,
                 report.bytes_freed)
    return report


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
