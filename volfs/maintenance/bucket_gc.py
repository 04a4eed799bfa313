"""Garbage collection of a distributed store: mark from PostgreSQL, sweep the bucket.

The rules are collect.py's (same report, same flags); what differs is where the live set
and the garbage are:

- **the live set** is marked from PostgreSQL: every volume's retained snapshots
  (history.py: the head always, snapshots that were the head less than the grace window
  ago, the volume's retention policy), the snapshots and committed views that mounts on
  *any* machine pin (``volfs_pins``: written by each mount's daemon at mount, reload and
  commit, refreshed every minute, deleted at unmount; a pin whose heartbeat is older than
  ``max(grace, 10 min)`` belongs to a dead machine: ignored and pruned), this machine's
  crashed overlays (collect.live_pins), and the empty tree. Snapshots of deleted volumes
  are garbage. Trees are read through the catalog (local cache, else the bucket).
- **the garbage** is what a listing of ``<prefix>/blobs/`` and ``<prefix>/trees/`` (taken
  before anything else) holds and nothing marks, and whose LastModified is older than the
  grace window (a crashed commit's leftovers, clock skew between machines and the store).

**In-flight commits.** A commit that finds a blob already in the bucket does not upload it
again, so gc could delete that (until then unreferenced) blob just before the commit's
head names it. Every writer therefore holds a lease (``Catalog.lease``) from its first
blob to its head move, and in distributed mode a lease holds a PostgreSQL advisory lock
*shared*; gc holds it *exclusive* (``PgCatalog.gc_lock``) while it re-reads heads and pins,
marks what appeared since the first mark, and deletes. So gc waits for every commit in
flight on every machine, and commits starting meanwhile wait for gc. A machine that dies
mid-commit releases its lock with its session. When gc releases the lock it changes the
*gc epoch*; a process whose next lease sees a new epoch forgets which blobs and trees it
believed to be in the bucket, so it checks (and uploads) them again.

Order of deletion: snapshot rows first (one transaction), then trees, then blobs — a crash
in between leaves unreferenced objects, never a kept snapshot naming a deleted one.

Limits: a mount's overlay that crashed on *another* machine and is never recovered is kept
only while its pin lives (``max(grace, 10 min)`` after the machine died); recovering it later
may fail for data gc deleted meanwhile. Each machine's LMDB tree cache and blob cache may
keep copies of deleted objects: harmless (a cache), and this machine's cached copies of
blobs gc deleted are dropped.

Must not: import click or the mount side.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

from volfs.maintenance import gc as collect
from volfs.blobs import Digest
from volfs.catalog import SnapshotRecord, VolumeRecord
from volfs.errors import CorruptionError, VolfsError
from volfs.snapshots.history import kept_by_gc
from volfs.store import Store
from volfs.core.tree import Kind, Tree

log = logging.getLogger(__name__)

#: A pin (a mount on some machine) counts while its heartbeat is younger than this, or the
#: grace window if that is longer.
MIN_PIN_TIMEOUT = 600.0
#: Trees fetched at once while marking (each a GET where this machine's cache lacks it).
PREFETCH_THREADS = 16


def is_distributed(store: Store) -> bool:
    return hasattr(store.catalog, "gc_lock")


def _reader(catalog: Any) -> collect.TreeReader:
    def read(digest: Digest) -> Tree | None:
        try:
            tree: Tree = catalog.get_tree(digest)
            return tree
        except CorruptionError as exc:
            raise CorruptionError(f"{exc}; gc deleted nothing: run `volfs fsck`") from None

    return read


class _Plan:
    """Which snapshots stay and go, and which roots must be marked, from one reading."""

    def __init__(self, store: Store, *, now: float, grace: float, pin_timeout: float,
                 apply_retention: bool, prune: bool) -> None:
        catalog: Any = store.catalog
        self.who: dict[str, str] = {}  # pinned snapshot -> who
        self.roots: dict[Digest, str] = {}  # pinned view trees -> who
        self.machines: set[str] = set()
        for mount_id, machine, _, snapshot_id, view in catalog.live_pins(pin_timeout, prune=prune):
            who = f"mount {mount_id} on {machine}"
            self.machines.add(machine)
            self.who.setdefault(snapshot_id, who)
            if view:
                self.roots.setdefault(Digest(view), who)
        local = collect.live_pins(store)  # this machine's crashed overlays (and its mounts again)
        for snapshot_id, who in local.snapshots.items():
            self.who.setdefault(snapshot_id, who)
        for digest, who in local.roots.items():
            self.roots.setdefault(digest, who)
        self.notes = list(local.notes)
        self.volumes: dict[str, VolumeRecord] = {v.id: v for v in catalog.list_volumes()}
        self.snapshots = collect._snapshots(store)
        ids = {s.id for s in self.snapshots}
        for v in self.volumes.values():
            if v.head not in ids:
                raise CorruptionError(f"the head of volume {v.name!r} ({v.head}) is missing; "
                                      "gc deleted nothing: run `volfs fsck`")
        by_volume: dict[str, list[SnapshotRecord]] = {}
        for s in self.snapshots:
            by_volume.setdefault(s.volume_id, []).append(s)
        self.keep: set[str] = set()
        self.drop: list[tuple[SnapshotRecord, str, str]] = []  # (snapshot, volume name, reason)
        for volume_id, records in by_volume.items():
            volume = self.volumes.get(volume_id)
            kept, reason = kept_by_gc(store.catalog, volume, records, pinned=self.who,
                                      apply_retention=apply_retention, now=now, grace=grace)
            self.keep |= kept
            name = volume.name if volume is not None else volume_id
            self.drop += [(s, name, reason) for s in records if s.id not in kept]
        self.pinned = len(self.who.keys() & ids)

    def roots_to_mark(self) -> list[Digest]:
        by_id: dict[str, SnapshotRecord] = {s.id: s for s in self.snapshots}
        roots = [by_id[i].root.tree for i in self.keep]
        return [r for r in roots if r is not None] + list(self.roots)

    def mark(self, marker: collect.Marker) -> None:
        by_id: dict[str, SnapshotRecord] = {s.id: s for s in self.snapshots}
        for snapshot_id in sorted(self.keep):
            root = by_id[snapshot_id].root.tree
            if root is not None and root not in marker.trees:
                marker.mark(root, f"snapshot {snapshot_id}")
        for root, who in self.roots.items():
            if root not in marker.trees:
                marker.mark(root, who)
        if collect.EMPTY_TREE_DIGEST not in marker.trees:
            marker.mark(collect.EMPTY_TREE_DIGEST, "the empty tree")


def _prefetch(catalog: Any, roots: list[Digest], known: set[Digest]) -> None:
    """Reads the trees below ``roots`` level by level, in parallel: the trees this machine's
    cache lacks cost one GET each, and marking reads them one at a time. Errors are left
    for the mark to report."""
    seen = set(known)
    level = [r for r in dict.fromkeys(roots) if r not in seen]
    seen.update(level)

    def read(digest: Digest) -> Tree | None:
        try:
            tree: Tree = catalog.get_tree(digest)
            return tree
        except VolfsError:
            return None

    with ThreadPoolExecutor(PREFETCH_THREADS) as pool:
        while level:
            below: list[Digest] = []
            for tree in pool.map(read, level):
                for e in tree.entries if tree is not None else ():
                    if e.kind is Kind.DIR and e.tree is not None and e.tree not in seen:
                        seen.add(e.tree)
                        below.append(e.tree)
            level = below


def collect_bucket(store: Store, *, grace: float = collect.DEFAULT_GRACE, dry_run: bool = False,
                   apply_retention: bool = True, now: float | None = None,
                   premarked: collect.Marked | None = None) -> collect.GcReport:
    """Deletes what nothing on any machine needs (module docstring); ``dry_run`` only counts."""
    catalog: Any = store.catalog
    bucket = catalog.bucket
    now = time.time() if now is None else now
    cutoff = now - grace
    pin_timeout = max(grace, MIN_PIN_TIMEOUT)
    report = collect.GcReport(dry_run, grace, cutoff, apply_retention)

    # 1. The bucket, listed first and outside the lock (it may be long; commits go on).
    #    Only what exists now and is older than the window can be deleted.
    listed: dict[str, dict[Digest, tuple[int, float]]] = {
        kind: {d: (size, mtime) for d, size, mtime in bucket.list(kind)} for kind in ("trees", "blobs")}

    # 2. A first mark without the lock: it fetches the trees this machine lacks, so the mark
    #    under the lock only reads its cache. Marking more than needed is always safe.
    marker = collect.Marker(_reader(catalog))
    plan = _Plan(store, now=now, grace=grace, pin_timeout=pin_timeout,
                 apply_retention=apply_retention, prune=False)
    if premarked is not None and premarked.snapshots <= plan.keep:
        marker.trees |= premarked.trees
        marker.blobs |= premarked.blobs
    _prefetch(catalog, plan.roots_to_mark(), marker.trees)
    plan.mark(marker)

    with nullcontext() if dry_run else catalog.gc_lock():
        # 3. Under the lock no commit is in flight: heads, snapshots and pins read now are
        #    everything anyone may reference until we are done.
        if not dry_run:
            plan = _Plan(store, now=now, grace=grace, pin_timeout=pin_timeout,
                         apply_retention=apply_retention, prune=True)
            plan.mark(marker)
        report.pinned_snapshots = plan.pinned
        report.notes = plan.notes
        if plan.machines:
            report.notes.append(f"kept what {len(plan.who)} mounted snapshots and "
                                f"{len(plan.roots)} mount views on {len(plan.machines)} machines need")
        garbage: dict[str, list[Digest]] = {}
        for kind, known in (("trees", marker.trees), ("blobs", marker.blobs)):
            old = [d for d, (_, mtime) in listed[kind].items()
                   if d not in known and d != collect.EMPTY_TREE_DIGEST and mtime < cutoff]
            young = sum(1 for d, (_, mtime) in listed[kind].items() if d not in known and mtime >= cutoff)
            garbage[kind] = sorted(old)
            setattr(report, f"{kind}_young", young)
        report.live_trees, report.live_blobs = len(marker.trees), len(marker.blobs)
        drop_ids = [s.id for s, _, _ in plan.drop]
        if dry_run:
            dropped = set(drop_ids)
        else:
            # 4. Snapshot rows, then trees, then blobs (module docstring).
            dropped = set(catalog.delete_snapshots(drop_ids)) if drop_ids else set()
            bucket.delete("trees", garbage["trees"])
            bucket.delete("blobs", garbage["blobs"])
    report.snapshots_dropped = [{"id": s.id, "volume": name, "reason": reason}
                                for s, name, reason in plan.drop if s.id in dropped]
    report.trees_deleted = len(garbage["trees"])
    report.blobs_deleted = len(garbage["blobs"])
    report.bytes_freed = sum(listed["blobs"][d][0] for d in garbage["blobs"])
    temps = collect.temp_files(store)
    report.temp_files_young = sum(1 for t in temps if t[1] >= cutoff)
    if dry_run:
        report.temp_files_deleted = len(temps) - report.temp_files_young
        return report
    cache = store.blobs.cache  # type: ignore[attr-defined]
    for digest in garbage["blobs"]:
        cache.delete(digest)  # this machine's copy; other machines' caches keep theirs (harmless)
    report.temp_files_deleted = collect.remove_temp_files(store, cutoff)
    if report.trees_deleted or report.blobs_deleted or report.snapshots_dropped:
        log.info("gc: dropped %d snapshots, deleted %d trees and %d blobs (%d bytes) from %s",
                 len(report.snapshots_dropped), report.trees_deleted, report.blobs_deleted,
                 report.bytes_freed, bucket.describe())
    return report
