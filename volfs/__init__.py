"""volfs: persistent volumes for containers, shaped like ``modal.Volume``.

The public API only: :class:`Volume` and its records, the error hierarchy (also under
modal's module names: :mod:`volfs.exception`, with ``volfs.Error`` its base), the modules
:mod:`volfs.volume` and :mod:`volfs.types` that mirror ``modal.volume`` / ``modal.types``,
and :func:`commit` / :func:`reload` of one mount. Everything else is internal.
"""

from __future__ import annotations

import os
from importlib import metadata

from volfs import exception, types, volume
from volfs.api import (
    FileEntry,
    FileEntryType,
    SnapshotChange,
    SnapshotInfo,
    Volume,
    VolumeInfo,
    VolumeUploadContextManager,
)
from volfs.api.aio import Blocking
from volfs.errors import (
    AlreadyExistsError,
    BackendUnavailableError,
    ConflictError,
    CorruptionError,
    Error,
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
    from volfs.config import default_store_path
    from volfs.remote import store_identity

    if path is not None:
        return [os.fspath(path)]
    # As plain `volfs commit`: the mounts of the current store (VOLFS_STORE or the
    # default) visible here, never another store's (another user's, on a shared host).
    mine = store_identity(default_store_path())
    return [m.path for m in control.mounts(mine) if isinstance(m, control.MountInfo)]


@Blocking
def commit(path: str | os.PathLike[str] | None = None) -> None:
    """Commits the pending changes of the mount at ``path`` (if None: every mount of the
    current store visible here)."""
    from volfs import control

    for mount_path in _mount_paths(path):
        control.commit(mount_path)


@Blocking
def reload(path: str | os.PathLike[str] | None = None, *, keep_open: bool | None = None) -> None:
    """Commits, then switches the mount at ``path`` (if None: every mount of the current
    store visible here) to head.

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
    "Error",
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
    "SnapshotChange",
    "SnapshotInfo",
    "StoreFullError",
    "VolfsError",
    "Volume",
    "VolumeInfo",
    "VolumeUploadContextManager",
    "__version__",
    "commit",
    "exception",
    "reload",
    "types",
    "volume",
]
