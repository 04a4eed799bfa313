"""``modal.volume``'s names: :class:`Volume`, its manager and upload context manager, and
the records it hands out (``from modal.volume import FileEntry`` ports as is).

The code lives in :mod:`volfs.api`; this module only gives it modal's module name.
"""

from __future__ import annotations

from volfs.api.records import FileEntry, FileEntryType, VolumeCreateOptions, VolumeInfo
from volfs.api.upload import VolumeUploadContextManager
from volfs.api.volume import Volume, VolumeMountOptions
from volfs.api.volume import _VolumeManager as VolumeManager

#: modal's base class of its v1 and v2 upload managers; volfs has one.
AbstractVolumeUploadContextManager = VolumeUploadContextManager

__all__ = [
    "AbstractVolumeUploadContextManager",
    "FileEntry",
    "FileEntryType",
    "Volume",
    "VolumeCreateOptions",
    "VolumeInfo",
    "VolumeManager",
    "VolumeMountOptions",
    "VolumeUploadContextManager",
]
