"""What changed between two snapshots of a volume (``volfs volume diff``).

Resolves the snapshots (the second defaults to the head; both must be the volume's) and
walks their trees with :func:`volfs.core.treediff.tree_diff`, which skips every subtree
whose digest is the same in both: the cost follows what changed.

Must not: write anything; import click or the mount side.
"""

from __future__ import annotations

from dataclasses import dataclass

from volfs.catalog import Catalog, SnapshotId
from volfs.config import DEFAULT_ENVIRONMENT
from volfs.core.treediff import Difference, tree_diff
from volfs.snapshots.fork import find_snapshot_of


@dataclass(frozen=True)
class SnapshotDiff:
    old: SnapshotId
    new: SnapshotId
    differences: list[Difference]


def diff_snapshots(
    catalog: Catalog,
    name: str,
    old: str,
    new: str | None = None,
    *,
    environment: str = DEFAULT_ENVIRONMENT,
) -> SnapshotDiff:
    """The differences from snapshot ``old`` to snapshot ``new`` (default: the head) of
    volume ``name``."""
    volume = catalog.get_volume(environment, name)
    a = find_snapshot_of(catalog, volume, old)
    b = catalog.head(volume.id) if new is None else find_snapshot_of(catalog, volume, new)
    return SnapshotDiff(a.id, b.id, list(tree_diff(catalog, a.root, b.root)))
