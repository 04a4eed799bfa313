"""volfs: persistent volumes for containers, shaped like ``modal.Volume``.

The public API only: :class:`Volume` and its records, the error hierarchy (also under
modal's module names: :mod:`volfs.exception`, with ``volfs.Error`` its base), the modules
:mod:`volfs.volume` and :mod:`volfs.types` that mirror ``modal.volume`` / ``modal.types``,
and :func:`commit` / :func:`reload` of one mount. Everything else is internal.

Only the error tree is imported with the package; the rest is imported on first use
(PEP 562), so a CLI command that only talks to a daemon (``volfs commit``) starts without
trio, the API or the catalog.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
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
    from volfs.api.mounts import commit, reload

    __version__: str

#: Where each lazily imported public name lives.
_LAZY = {
    **dict.fromkeys(
        (
            "FileEntry",
            "FileEntryType",
            "SnapshotChange",
            "SnapshotInfo",
            "Volume",
            "VolumeInfo",
            "VolumeUploadContextManager",
        ),
        "volfs.api",
    ),
    "commit": "volfs.api.mounts",
    "reload": "volfs.api.mounts",
}
_SUBMODULES = ("exception", "types", "volume")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"volfs.{name}")
    elif name == "__version__":
        from importlib import metadata

        try:
            value = metadata.version("volfs")
        except metadata.PackageNotFoundError:  # a source tree that was not installed
            value = "0.0.0+unknown"
    else:
        raise AttributeError(f"module 'volfs' has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
