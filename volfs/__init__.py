"""volfs: persistent volumes for containers, shaped like ``modal.Volume``.

The public API only: :class:`Volume` and its records, the error hierarchy, and
:func:`commit` / :func:`reload` of one mount. Everything else is internal.
"""

from __future__ import annotations

import os
from importlib import metadata

from volfs.api import (
    FileEntry,
    FileEntryType,
    SnapshotInfo,
    Volume,
    VolumeInfo,
    VolumeUploadContextManager,
)
from volfs.errors import (
    AlreadyExistsError,
    BackendUnavailableError,
    ConflictError,
    CorruptionError,
    InvalidError,
    IsADirectoryPathError,
    MountError,
    NotADirectoryPathError,
    NotFoundError,
    OpenFilesError,
    PathExistsError,
    PathNotFoundError,
    PermissionDeniedError,
    ReadOnlyError,
    StoreFullError,
    VolfsError,
)

try:
    __version__ = metadata.version("volfs")
except metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"


def _mount_paths(path: str | os.PathLike[str] | None) -> list[str]:
    from volfs import control  # lazy: keeps `import volfs` free of the mount machinery

    if path is not None:
        return [os.fspath(path)]
    return [m.path for m in control.all_mounts()]


def commit(path: str | os.PathLike[str] | None = None) -> None:
    """Commits the pending changes of the mount at ``path`` (every visible mount if None)."""
    from volfs import control

    for mount_path in _mount_paths(path):
        control.commit(mount_path)


def reload(path: str | os.PathLike[str] | None = None, *, keep_open: bool | None = None) -> None:
    """Commits, then switches the mount at ``path`` (every visible mount if None) to head.

    Raises RuntimeError (:class:`OpenFilesError`) while files of that mount are open,
    unless ``keep_open`` (None: the mount's ``--keep-open``): open files then keep what
    they opened.
    """
    from volfs import control

    for mount_path in _mount_paths(path):
        control.reload(mount_path, keep_open=keep_open)


__all__ = [
    "AlreadyExistsError",
    "BackendUnavailableError",
    "ConflictError",
    "CorruptionError",
    "FileEntry",
    "FileEntryType",
    "InvalidError",
    "IsADirectoryPathError",
    "MountError",
    "NotADirectoryPathError",
    "NotFoundError",
    "OpenFilesError",
    "PathExistsError",
    "PathNotFoundError",
    "PermissionDeniedError",
    "ReadOnlyError",
    "SnapshotInfo",
    "StoreFullError",
    "VolfsError",
    "Volume",
    "VolumeInfo",
    "VolumeUploadContextManager",
    "__version__",
    "commit",
    "reload",
]
