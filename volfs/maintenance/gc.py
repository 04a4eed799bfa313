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

A distributed store (PostgreSQL + a bucket) is collected by bucket_gc.py: the same rules,
marked from PostgreSQL and every machine's mount pins, swept from the bucket. Which one
runs is the store's declared capability (``catalog.bucket`` / ``blobs.bucket``, see
plan.bucket_of), never its backend's type. What both share — the pins, the retention
plan, the marking, the report — is plan.py; this module is the *local sweeper*.

Must not: delete a tree or blob any retained snapshot or live mount can reach; import
click or the mount side (``recover``/``overlay``): overlays are read as files here.
"""

from __future__ import annotations

import logging
import os
import time

from volfs.blobs import Digest
from volfs.core.tree import Tree, decode_verified
from volfs.errors import CorruptionError, InvalidError
from volfs.maintenance import bucket_gc
from volfs.maintenance.plan import (
    DEFAULT_GRACE,
    EMPTY_TREE_DIGEST,
    GcReport,
    Marked,
    Marker,
    Pins,
    Plan,
    TreeReader,
    bucket_of,
    live_pins,
    remove_temp_files,
    temp_files,
)
from volfs.store import Store

# The names callers (the CLI, fsck, the tests) have always imported from here.
__all__ = [
    "DEFAULT_GRACE",
    "EMPTY_TREE_DIGEST",
    "GcReport",
    "Marked",
    "Marker",
    "Pins",
    "TreeReader",
    "collect",
    "live_pins",
    "parse_duration",
    "read_tree",
    "remove_temp_files",
    "temp_files",
]

log = logging.getLogger(__name__)

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1h"``, ``"2d"`` -> seconds."""
    value = text.strip().lower()
    scale = _UNITS.get(value[-1:])
    number = value[:-1] if scale is not None else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise InvalidError(f"invalid duration {text!r}: use seconds or 30s, 10m, 1h, 2d") from None
    if not seconds >= 0:  # negative, or NaN
        raise InvalidError(f"invalid duration {text!r}: must not be negative")
    return seconds


def read_tree(store: Store, digest: Digest) -> Tree | None:
    """The tree, verified; None if missing; CorruptionError if it fails its digest."""
    raw = store.catalog.get_tree_raw(digest)
    if raw is None:
        return None
    try:
        return decode_verified(raw, digest)
    except ValueError as exc:
        raise CorruptionError(f"tree {digest} is damaged ({exc}); run `volfs fsck`") from None


# -- the collection --------------------------------------------------------------------------
def collect(
    store: Store,
    *,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    apply_retention: bool = True,
    now: float | None = None,
    premarked: Marked | None = None,
) -> GcReport:
    """Deletes what nothing needs (module docstring); ``dry_run`` only counts it.

    ``apply_retention=False`` (fsck --repair) keeps every snapshot of every volume.
    """
    if bucket_of(store, "`volfs gc`") is not None:
        return bucket_gc.collect_bucket(
            store,
            grace=grace,
            dry_run=dry_run,
            apply_retention=apply_retention,
            now=now,
            premarked=premarked,
        )
    return _collect_local(
        store,
        grace=grace,
        dry_run=dry_run,
        apply_retention=apply_retention,
        now=now,
        premarked=premarked,
    )


def _collect_local(
    store: Store,
    *,
    grace: float,
    dry_run: bool,
    apply_retention: bool,
    now: float | None,
    premarked: Marked | None,
) -> GcReport:
    """The local sweeper: the catalog's one write transaction, then the blob files."""
    now = time.time() if now is None else now
    catalog = store.catalog
    pins = live_pins(store, prune=not dry_run)
    cutoff = now - grace
    if pins.since is not None:
        cutoff = min(cutoff, pins.since)
    report = GcReport(
        dry_run, grace, cutoff, apply_retention, leases=pins.leases, notes=list(pins.notes)
    )

    # 1. Which snapshots stay.
    plan = Plan(catalog, pins, now=now, grace=grace, apply_retention=apply_retention)
    report.snapshots_dropped = [d.to_json() for d in plan.drop]
    report.pinned_snapshots = plan.pinned

    # 2. Mark what they, the mounts and the empty tree reach.
    marker = Marker(lambda d: read_tree(store, d))
    if premarked is not None and premarked.snapshots <= plan.keep:
        marker.trees |= premarked.trees
        marker.blobs |= premarked.blobs
    plan.mark(marker, empty_tree=catalog.has_tree(EMPTY_TREE_DIGEST))

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
    known = set(plan.by_id)
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
            for s in (d.snapshot for d in plan.drop):
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
        batch = candidates[start : start + 1024]
        deleted = store.blobs.delete_stale(batch, cutoff)
        report.blobs_deleted += len(deleted)
        report.bytes_freed += sum(size for _, size in deleted)
    report.blobs_young = len(candidates) - report.blobs_deleted
    report.temp_files_deleted = remove_temp_files(store, cutoff)
    report.live_trees, report.live_blobs = len(marker.trees), len(marker.blobs)
    if report.trees_deleted or report.blobs_deleted or report.snapshots_dropped:
        log.info(
            "gc: dropped %d snapshots, deleted %d trees and %d blobs (%d bytes)",
            len(report.snapshots_dropped),
            report.trees_deleted,
            report.blobs_deleted,
            report.bytes_freed,
        )
    return report
