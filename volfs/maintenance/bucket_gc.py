"""Garbage collection of a distributed store: mark from PostgreSQL, sweep the bucket.

The rules are gc.py's (same report, same flags) and so is the plan (plan.py: the pins,
the retention loop, the marking); this module is the *bucket sweeper*. What differs is
where the live set and the garbage are:

- **the live set** is marked from PostgreSQL: every volume's retained snapshots
  (history.py: the head always, snapshots that were the head less than the grace window
  ago, the volume's retention policy), the snapshots and committed views that mounts on
  *any* machine pin (``volfs_pins``: written by each mount's daemon at mount, reload and
  commit, refreshed every minute, deleted at unmount; a pin whose heartbeat is older than
  ``max(grace, 10 min)`` belongs to a dead machine: ignored and pruned), this machine's
  crashed overlays (plan.live_pins), and the empty tree. Snapshots of deleted volumes
  are garbage. Trees are read through the catalog (local cache, else the bucket).
- **the garbage** is what a listing of ``<prefix>/blobs/`` and ``<prefix>/trees/`` (taken
  before anything else) holds and nothing marks, and whose LastModified is older than the
  grace window (a crashed commit's leftovers, clock skew between machines and the store).

**In-flight commits.** A commit that finds a blob already in the bucket does not upload it
again, so gc could delete that (until then unreferenced) blob just before the commit's
head names it. Every writer therefore holds a lease (``Catalog.lease``) from its first
blob to its head move, and in distributed mode a lease holds a PostgreSQL advisory lock
*shared*; gc holds it *exclusive* (``Catalog.gc_lock``) while it re-reads heads and pins,
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

It reaches the bucket only through the interfaces: ``catalog.bucket`` for the trees,
``blobs.bucket`` for the blobs (one bucket, as remote.py wires them), ``blobs.drop_cached``
for this machine's copies.

Must not: import click or the mount side; import gc.py (which chooses this sweeper).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext

from volfs.blobs import Digest, ObjectStore
from volfs.catalog import Catalog
from volfs.core.tree import Kind, Tree
from volfs.errors import CorruptionError, VolfsError
from volfs.maintenance.plan import (
    DEFAULT_GRACE,
    EMPTY_TREE_DIGEST,
    GcReport,
    Marked,
    Marker,
    Plan,
    TreeReader,
    live_pins,
    remove_temp_files,
    temp_files,
)
from volfs.store import Store

log = logging.getLogger(__name__)

#: A pin (a mount on some machine) counts while its heartbeat is younger than this, or the
#: grace window if that is longer.
MIN_PIN_TIMEOUT = 600.0
#: Trees fetched at once while marking (each a GET where this machine's cache lacks it).
PREFETCH_THREADS = 16


def _reader(catalog: Catalog) -> TreeReader:
    def read(digest: Digest) -> Tree | None:
        try:
            return catalog.get_tree(digest)
        except CorruptionError as exc:
            raise CorruptionError(f"{exc}; gc deleted nothing: run `volfs fsck`") from None

    return read


def _plan(
    store: Store,
    *,
    now: float,
    grace: float,
    pin_timeout: float,
    apply_retention: bool,
    prune: bool,
) -> Plan:
    """The plan from one reading: every machine's pins (``prune``: drop the expired ones),
    this machine's crashed overlays (and its mounts again), the heads and retention."""
    pins = live_pins(store, pin_timeout=pin_timeout, prune_pins=prune)
    return Plan(
        store.catalog,
        pins,
        now=now,
        grace=grace,
        apply_retention=apply_retention,
        advice="gc deleted nothing: run `volfs fsck`",
    )


def _prefetch(catalog: Catalog, roots: list[Digest], known: set[Digest]) -> None:
    """Reads the trees below ``roots`` level by level, in parallel: the trees this machine's
    cache lacks cost one GET each, and marking reads them one at a time. Errors are left
    for the mark to report."""
    seen = set(known)
    level = [r for r in dict.fromkeys(roots) if r not in seen]
    seen.update(level)

    def read(digest: Digest) -> Tree | None:
        try:
            return catalog.get_tree(digest)
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


def collect_bucket(
    store: Store,
    *,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    apply_retention: bool = True,
    now: float | None = None,
    premarked: Marked | None = None,
) -> GcReport:
    """Deletes what nothing on any machine needs (module docstring); ``dry_run`` only counts."""
    catalog = store.catalog
    trees_bucket, blobs_bucket = catalog.bucket, store.blobs.bucket
    if trees_bucket is None or blobs_bucket is None:
        raise VolfsError("the distributed gc needs a store whose trees and blobs are in a bucket")
    buckets: dict[str, ObjectStore] = {"trees": trees_bucket, "blobs": blobs_bucket}
    now = time.time() if now is None else now
    cutoff = now - grace
    pin_timeout = max(grace, MIN_PIN_TIMEOUT)
    report = GcReport(dry_run, grace, cutoff, apply_retention)

    # 1. The bucket, listed first and outside the lock (it may be long; commits go on).
    #    Only what exists now and is older than the window can be deleted.
    listed: dict[str, dict[Digest, tuple[int, float]]] = {
        kind: {d: (size, mtime) for d, size, mtime in buckets[kind].list(kind)}
        for kind in ("trees", "blobs")
    }

    # 2. A first mark without the lock: it fetches the trees this machine lacks, so the mark
    #    under the lock only reads its cache. Marking more than needed is always safe.
    marker = Marker(_reader(catalog))
    plan = _plan(
        store,
        now=now,
        grace=grace,
        pin_timeout=pin_timeout,
        apply_retention=apply_retention,
        prune=False,
    )
    if premarked is not None and premarked.snapshots <= plan.keep:
        marker.trees |= premarked.trees
        marker.blobs |= premarked.blobs
    _prefetch(catalog, plan.roots_to_mark(), marker.trees)
    plan.mark(marker)

    lock: AbstractContextManager[None] = nullcontext() if dry_run else catalog.gc_lock()
    with lock:
        # 3. Under the lock no commit is in flight: heads, snapshots and pins read now are
        #    everything anyone may reference until we are done.
        if not dry_run:
            plan = _plan(
                store,
                now=now,
                grace=grace,
                pin_timeout=pin_timeout,
                apply_retention=apply_retention,
                prune=True,
            )
            plan.mark(marker)
        report.pinned_snapshots = plan.pinned
        report.notes = plan.pins.notes
        if plan.pins.machines:
            report.notes.append(
                f"kept what {len(plan.pins.snapshots)} mounted snapshots and "
                f"{len(plan.pins.roots)} mount views on {len(plan.pins.machines)} "
                "machines need"
            )
        garbage: dict[str, list[Digest]] = {}
        for kind, known in (("trees", marker.trees), ("blobs", marker.blobs)):
            old = [
                d
                for d, (_, mtime) in listed[kind].items()
                if d not in known and d != EMPTY_TREE_DIGEST and mtime < cutoff
            ]
            young = sum(
                1 for d, (_, mtime) in listed[kind].items() if d not in known and mtime >= cutoff
            )
            garbage[kind] = sorted(old)
            setattr(report, f"{kind}_young", young)
        report.live_trees, report.live_blobs = len(marker.trees), len(marker.blobs)
        drop_ids: list[str] = [d.snapshot.id for d in plan.drop]
        dropped: set[str]
        if dry_run:
            dropped = set(drop_ids)
        else:
            # 4. Snapshot rows, then trees, then blobs (module docstring).
            dropped = set(catalog.delete_snapshots(drop_ids)) if drop_ids else set()
            buckets["trees"].delete("trees", garbage["trees"])
            buckets["blobs"].delete("blobs", garbage["blobs"])
    report.snapshots_dropped = [d.to_json() for d in plan.drop if d.snapshot.id in dropped]
    report.trees_deleted = len(garbage["trees"])
    report.blobs_deleted = len(garbage["blobs"])
    report.bytes_freed = sum(listed["blobs"][d][0] for d in garbage["blobs"])
    temps = temp_files(store)
    report.temp_files_young = sum(1 for t in temps if t[1] >= cutoff)
    if dry_run:
        report.temp_files_deleted = len(temps) - report.temp_files_young
        return report
    # This machine's copies; other machines' caches keep theirs (harmless).
    store.blobs.drop_cached(garbage["blobs"])
    report.temp_files_deleted = remove_temp_files(store, cutoff)
    if report.trees_deleted or report.blobs_deleted or report.snapshots_dropped:
        log.info(
            "gc: dropped %d snapshots, deleted %d trees and %d blobs (%d bytes) from %s",
            len(report.snapshots_dropped),
            report.trees_deleted,
            report.blobs_deleted,
            report.bytes_freed,
            blobs_bucket.describe(),
        )
    return report
