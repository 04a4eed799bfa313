"""``modal.types``'s names for volumes: :class:`FileEntry`, :class:`FileEntryType`,
:class:`VolumeInfo`, ``VolumeCreateOptions`` (plus volfs's :class:`SnapshotInfo`).

The records live in :mod:`volfs.api.records`; this module gives them modal's module name,
so ``from modal.types import FileEntry`` ports by changing the import.
"""

from __future__ import annotations

from volfs.api.records import (
    FileEntry,
    FileEntryType,
    SnapshotInfo,
    VolumeCreateOptions,
    VolumeInfo,
)

__all__ = ["FileEntry", "FileEntryType", "SnapshotInfo", "VolumeCreateOptions", "VolumeInfo"]
