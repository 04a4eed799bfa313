"""A volume's history: how much of it is kept (retention), and going back in it (rollback).

Retention is per volume: keep the last N snapshots and/or every snapshot younger than T
days (a snapshot either rule keeps is kept); no policy — the default — keeps everything.
This module decides *which* snapshots a policy keeps; ``volfs gc`` (collect.py) deletes
the others. Whatever the policy, these are always kept:

- the head;
- snapshots something live needs (a mount's base, a crashed mount's base, a pin);
- snapshots that were the head less than the grace window ago (their child is younger
  than it): a process that read the head just before it moved may be about to rely on it.

A rollback makes a past snapshot's content the head again as a **new** commit onto the
current head (parent = head, origin ``rollback to sn-…``): nothing in between is lost, it
stays in history like any other commit. It replaces the whole tree; it does not merge.

Must not: delete anything (collect.py does), import click or the mount side.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from volfs.catalog import (
    MAX_CHANGES_RECORDED,
    Catalog,
    HeadMoved,
    SnapshotId,
    SnapshotRecord,
    VolumeRecord,
    new_id,
)
from volfs.config import DEFAULT_ENVIRONMENT
from volfs.core.changes import diff
from volfs.errors import ConflictError, InvalidError, NotFoundError
from volfs.snapshots.commit import MAX_ATTEMPTS, describe

DAY = 86400.0


@dataclass(frozen=True)
class Retention:
    keep_last: int | None = None
    keep_days: float | None = None

    @property
    def keeps_everything(self) -> bool:
        return self.keep_last is None and self.keep_days is None

    def describe(self) -> str:
        rules = []
        if self.keep_last is not None:
            rules.append(f"keep last {self.keep_last}")
        if self.keep_days is not None:
            rules.append(f"keep {self.keep_days:g} day{'s' if self.keep_days != 1 else ''}")
        return " / ".join(rules) if rules else "keep everything"

    def to_json(self) -> dict[str, int | float | None]:
        return {"keep_last": self.keep_last, "keep_days": self.keep_days}


def get_retention(catalog: Catalog, volume_id: str) -> Retention:
    policy = catalog.get_retention(volume_id)
    if policy is None:
        return Retention()
    return Retention(policy.get("keep_last"), policy.get("keep_days"))


def set_retention(
    catalog: Catalog,
    name: str,
    environment: str = DEFAULT_ENVIRONMENT,
    *,
    keep_last: int | None = None,
    keep_days: float | None = None,
) -> Retention:
    """Sets volume ``name``'s retention; neither rule given means keep everything."""
    if keep_last is not None and keep_last < 1:
        raise InvalidError("keep-last must be at least 1 (the head is always kept)")
    if keep_days is not None and not keep_days > 0:
        raise InvalidError("keep-days must be a positive number of days")
    volume = catalog.get_volume(environment, name)
    policy = Retention(keep_last, keep_days)
    catalog.set_retention(volume.id, None if policy.keeps_everything else policy.to_json())
    return policy


def retained(
    volume: VolumeRecord,
    snapshots: Iterable[SnapshotRecord],
    policy: Retention,
    *,
    now: float,
    grace: float,
    pinned: Collection[str] = (),
) -> set[SnapshotId]:
    """The ids of ``snapshots`` (all of one live volume's) that ``policy`` keeps."""
    by_id = {s.id: s for s in snapshots}
    if policy.keeps_everything:
        return set(by_id)
    # Newest first: the head's chain as far as it goes, then what is left by time.
    order: list[SnapshotRecord] = []
    seen: set[str] = set()
    current = by_id.get(volume.head)
    while current is not None and current.id not in seen:
        order.append(current)
        seen.add(current.id)
        current = by_id.get(current.parent) if current.parent else None
    order += sorted((s for s in by_id.values() if s.id not in seen), key=lambda s: -s.time)
    superseded: dict[str, float] = {}  # snapshot -> when its child replaced it as head
    for s in by_id.values():
        if s.parent is not None:
            superseded[s.parent] = min(superseded.get(s.parent, s.time), s.time)
    keep: set[SnapshotId] = set()
    for rank, s in enumerate(order):
        if (
            s.id == volume.head
            or s.id in pinned
            or (policy.keep_last is not None and rank < policy.keep_last)
            or (policy.keep_days is not None and s.time >= now - policy.keep_days * DAY)
            or s.time >= now - grace
            or superseded.get(s.id, now) >= now - grace
        ):
            keep.add(s.id)
    return keep


def kept_by_gc(
    catalog: Catalog,
    volume: VolumeRecord | None,
    snapshots: Iterable[SnapshotRecord],
    *,
    pinned: Collection[str],
    apply_retention: bool,
    now: float,
    grace: float,
) -> tuple[set[SnapshotId], str]:
    """(which of one volume's snapshots gc keeps, why it drops the others). A deleted
    volume's (``volume`` None) are all dropped but those a mount pins."""
    if volume is None:
        return {s.id for s in snapshots if s.id in pinned}, "volume deleted"
    policy = get_retention(catalog, volume.id) if apply_retention else Retention()
    kept = retained(volume, snapshots, policy, now=now, grace=grace, pinned=pinned)
    return kept, f"retention: {policy.describe()}"


@dataclass(frozen=True)
class RollbackResult:
    snapshot: SnapshotId | None  # None: the head already holds that content
    source: SnapshotId
    previous_head: SnapshotId
    changed: list[list[str]]
    changed_count: int


def rollback(
    catalog: Catalog, name: str, snapshot_id: str, environment: str = DEFAULT_ENVIRONMENT
) -> RollbackResult:
    """Makes snapshot ``snapshot_id``'s content volume ``name``'s head, as a new commit."""
    volume = catalog.get_volume(environment, name)
    source = catalog.find_snapshot(snapshot_id) if snapshot_id.startswith("sn-") else None
    if source is None:
        raise NotFoundError(f"snapshot {snapshot_id!r} not found (see `volfs volume log {name}`)")
    if source.volume_id != volume.id:
        raise InvalidError(f"snapshot {snapshot_id} does not belong to volume {name!r}")
    for _ in range(MAX_ATTEMPTS):
        head = catalog.head(volume.id)
        if head.root == source.root:
            return RollbackResult(None, source.id, head.id, [], 0)
        described = describe(diff(catalog, head.root, source.root))
        snapshot = SnapshotRecord(
            SnapshotId(new_id("sn")),
            volume.id,
            source.root,
            head.id,
            time.time(),
            f"rollback to {source.id}",
            changed=described[:MAX_CHANGES_RECORDED],
            changed_count=len(described),
        )
        try:
            catalog.rollback_head(head.id, snapshot, source.id)
        except HeadMoved:
            continue
        return RollbackResult(snapshot.id, source.id, head.id, snapshot.changed, len(described))
    raise ConflictError(f"rollback gave up after {MAX_ATTEMPTS} attempts: the head keeps moving")
