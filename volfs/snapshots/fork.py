"""Forks: a new volume whose head is another volume's snapshot, in constant time.

A fork writes one snapshot record of its own — the fork point — whose root *is* the
source snapshot's root entry (the same tree digest), with no parent and origin
``fork of SRC at sn-…``, plus the new volume's record and name. No tree and no blob is
written or copied: the two volumes share every tree and blob until they diverge, and each
commit to either writes only what it changes.

Why a snapshot of its own rather than a head naming the source's: a snapshot belongs to
one volume (``volume_id``; commits move the head of the volume their base belongs to, fsck
checks that a history stays in its volume, gc keeps a volume's snapshots by its
retention and drops a deleted volume's). The fork's history starts at the fork point and
says where it came from; rollback and retention work on it as on any volume; and
deleting the source leaves the fork's snapshot — so gc marks its root, and every tree and
blob below it stays.

gc racing a fork: the catalog checks that the source snapshot and its root tree still
exist in the same transaction (embedded) or under the same lease (distributed) as the
insert, as a rollback does (see ``Catalog.fork_volume``).

Must not: copy content; import click or the mount side.
"""

from __future__ import annotations

from volfs.catalog import Catalog, SnapshotRecord, VolumeRecord
from volfs.config import DEFAULT_ENVIRONMENT
from volfs.errors import InvalidError, NotFoundError
from volfs.names import check_volume_name


def find_snapshot_of(catalog: Catalog, volume: VolumeRecord, snapshot_id: str) -> SnapshotRecord:
    """Snapshot ``snapshot_id`` of ``volume``: NotFoundError if there is none, InvalidError
    if it is another volume's."""
    found = catalog.find_snapshot(snapshot_id) if snapshot_id.startswith("sn-") else None
    if found is None:
        raise NotFoundError(
            f"snapshot {snapshot_id!r} not found (see `volfs volume log {volume.name}`)"
        )
    if found.volume_id != volume.id:
        raise InvalidError(f"snapshot {snapshot_id} does not belong to volume {volume.name!r}")
    return found


def fork(
    catalog: Catalog,
    source: str,
    new_name: str,
    *,
    snapshot: str | None = None,
    environment: str = DEFAULT_ENVIRONMENT,
    created_by: str = "",
) -> VolumeRecord:
    """Creates volume ``new_name`` whose head has the content of ``source``'s snapshot
    ``snapshot`` (default: its head); O(1) catalog records, no content copied."""
    check_volume_name(source)
    check_volume_name(new_name)
    volume = catalog.get_volume(environment, source)
    found = find_snapshot_of(catalog, volume, volume.head if snapshot is None else snapshot)
    return catalog.fork_volume(
        environment, new_name, created_by, found.id, f"fork of {source} at {found.id}"
    )
