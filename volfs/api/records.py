"""The records the Python API hands out: :class:`FileEntry` and its :class:`FileEntryType`,
:class:`VolumeInfo`, :class:`SnapshotInfo` — shaped like modal's, with volfs's extra
fields after modal's.

Owns these frozen dataclasses and the one translation from a tree :class:`Entry` to a
:class:`FileEntry` (:func:`file_entry`).

Must not: look anything up (no store, catalog or blobs here); the caller passes what it
read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any, TypedDict

from volfs.core.tree import Entry, Kind
from volfs.names import PathParts, join_path


class FileEntryType(IntEnum):
    """Type of a :class:`FileEntry`; the values up to SOCKET are modal's, the device types
    go beyond it."""

    UNSPECIFIED = 0
    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3
    FIFO = 4
    SOCKET = 5
    CHARACTER_DEVICE = 6
    BLOCK_DEVICE = 7


_ENTRY_TYPES = {
    Kind.FILE: FileEntryType.FILE,
    Kind.DIR: FileEntryType.DIRECTORY,
    Kind.SYMLINK: FileEntryType.SYMLINK,
    Kind.FIFO: FileEntryType.FIFO,
    Kind.SOCKET: FileEntryType.SOCKET,
    Kind.CHAR_DEVICE: FileEntryType.CHARACTER_DEVICE,
    Kind.BLOCK_DEVICE: FileEntryType.BLOCK_DEVICE,
}


@dataclass(frozen=True)
class FileEntry:
    """One listed path. ``path`` is relative to the volume root, without a leading ``/``.

    ``size`` of a directory is the total of the bytes below it. Beyond modal's four fields:
    ``mode`` (permission bits), ``target`` (of a symlink), ``rdev`` (of a device: its
    number, as ``os.major``/``os.minor`` read it), and for hard links ``link`` (an id the
    names of one file share within the volume; 0 for none) and ``nlink`` (how many names).
    """

    path: str
    type: FileEntryType
    mtime: int
    size: int
    mode: int = 0
    target: str = ""
    rdev: int = 0
    link: int = 0
    nlink: int = 1


class VolumeCreateOptions(TypedDict, total=False):
    """modal's options for creating a volume; volfs accepts and ignores them."""

    experimental_options: dict[str, Any]


@dataclass(frozen=True)
class VolumeInfo:
    """modal's three fields first (``name`` None for an ephemeral volume; ``created_at``
    timezone-aware, in local time, as modal's), then volfs's."""

    name: str | None
    created_at: datetime
    created_by: str
    object_id: str
    environment: str
    #: The head snapshot's id and time (local time, aware).
    head: str
    head_at: datetime
    #: Bytes and files in the head snapshot.
    size: int
    files: int
    format_version: int


@dataclass(frozen=True)
class SnapshotInfo:
    """One commit in a volume's history (beyond modal; ``volfs volume log`` shows these)."""

    id: str
    parent: str | None
    time: datetime
    origin: str
    #: What the commit changed, as (op, path) with op one of put, mkdir, rm, meta; at most
    #: the first 1000 — ``changed_count`` is the full number.
    changed: tuple[tuple[str, str], ...]
    changed_count: int
    #: Content this commit replaced or removed without having seen it:
    #: (path, the snapshot that still holds the lost version).
    overwrites: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SnapshotChange:
    """One path that differs between two snapshots (beyond modal; :meth:`Volume.diff`).

    ``change`` is one of ``added``, ``removed``, ``modified`` (other content: a file's
    bytes, a symlink's target, a device's number), ``mode-only`` (only metadata) and
    ``type-changed``; ``old``/``new`` are the path's entries in each snapshot (None where it
    is absent), ``fields`` the metadata fields that differ (mode, uid, gid, mtime_ns,
    xattrs, link, nlink). The root is ``path`` ``""``.
    """

    path: str
    change: str
    old: FileEntry | None
    new: FileEntry | None
    fields: tuple[str, ...] = ()


def file_entry(parts: PathParts, entry: Entry) -> FileEntry:
    """The :class:`FileEntry` of the tree entry found at ``parts``."""
    return FileEntry(
        join_path(parts),
        _ENTRY_TYPES.get(entry.kind, FileEntryType.UNSPECIFIED),
        entry.mtime_ns // 1_000_000_000,
        entry.size,
        entry.mode & 0o7777,
        entry.target,
        entry.rdev,
        entry.link,
        entry.nlink,
    )


__all__ = [
    "FileEntry",
    "FileEntryType",
    "SnapshotChange",
    "SnapshotInfo",
    "VolumeCreateOptions",
    "VolumeInfo",
    "file_entry",
]
