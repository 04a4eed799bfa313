"""The modal.Volume-shaped Python API: named volumes and their files, without a mount.

This package's modules each hold one job; this file only re-exports the public names
(``volfs/__init__.py`` takes them from here):

- :mod:`~volfs.api.records`: ``FileEntry``, ``FileEntryType``, ``VolumeInfo``, ``SnapshotInfo``,
  ``SnapshotChange``
- :mod:`~volfs.api.paths`: path resolution in one head (``HeadView``), symlinks included
- :mod:`~volfs.api.reads`: listing directories and streaming files
- :mod:`~volfs.api.edits`: what ``remove_file`` and ``copy_files`` change
- :mod:`~volfs.api.upload`: ``batch_upload`` (``put_file``, ``put_directory``)
- :mod:`~volfs.api.volume`: ``Volume`` and ``Volume.objects``, which tie them together
  (and start mounts through :mod:`volfs.mount.launcher`)
- :mod:`~volfs.api.aio`: the ``.aio`` twin of every public call (a worker thread under
  asyncio or trio)
- :mod:`~volfs.api.ephemeral`: the catalog names of ephemeral volumes, and their sweep

Must not: import click, pyfuse3, trio or sockets at import time (the mount side loads
lazily, inside ``Volume.mount``/``commit``/``reload``); print.
"""

from __future__ import annotations

from volfs.api.records import FileEntry, FileEntryType, SnapshotChange, SnapshotInfo, VolumeInfo
from volfs.api.upload import VolumeUploadContextManager
from volfs.api.volume import Volume

__all__ = [
    "FileEntry",
    "FileEntryType",
    "SnapshotChange",
    "SnapshotInfo",
    "Volume",
    "VolumeInfo",
    "VolumeUploadContextManager",
]
