"""The modal.Volume-shaped Python API: named volumes and their files, without a mount.

Owns :class:`Volume` (lookup, create, list, delete, rename, ephemeral, info), the reads
(``listdir``/``iterdir``/``stat``/``read_file``/``read_file_into_fileobj``) and the
writes that each land as **one** commit onto the current head (``batch_upload``,
``remove_file``, ``copy_files``).

Every write goes through :func:`volfs.snapshots.commit.commit_changes` with a *build* callback, and
every validity check ("does the path exist?", "is it a directory?") runs inside that
callback, so it sees the very head the change lands on; if another writer wins the
compare-and-swap, the build runs again against the new head.

Must not: import click, pyfuse3, trio or sockets; print; reach a mount other than through
:mod:`volfs.control` and :mod:`volfs.mount.daemon`, imported lazily by ``commit()``/``reload()``/
``mount()`` (the mount side owns them), so ``import volfs`` stays free of FUSE.

Concurrency: a :class:`Volume` is a light handle (store, environment, name, id). Its
methods can run from several threads and processes at once; the catalog serialises head
moves. Reads see the head at the time of the call (or one pinned snapshot, see
:meth:`Volume.snapshot`).
"""

from __future__ import annotations

import contextlib
import getpass
import io
import os
import secrets
import signal
import stat as statmod
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO, ClassVar, Self, Union

from volfs import blobs
from volfs.catalog import SnapshotId, VolumeId, VolumeRecord
from volfs.core.changes import ALL_META, Changes, Dir, Put, Remove
from volfs.snapshots.commit import CommitResult, commit_changes
from volfs.config import CHUNK_SIZE, DEFAULT_AUTOCOMMIT_SECONDS, READ_CHUNK, default_environment
from volfs.errors import (
    AlreadyExistsError,
    InvalidError,
    IsADirectoryPathError,
    MountError,
    NotADirectoryPathError,
    NotFoundError,
    PathExistsError,
    PathNotFoundError,
    ReadOnlyError,
    VolfsError,
)
from volfs.names import (
    PathParts,
    check_component,
    check_environment_name,
    check_volume_name,
    join_path,
    split_path,
)
from volfs.store import Store
from volfs.core.tree import Entry, Kind, chunk_span, dense

StoreLike = Union[Store, str, "os.PathLike[str]", None]
LocalFile = Union[str, "os.PathLike[str]", BinaryIO]
ProgressCallback = Callable[[int], None]
#: Symlinks followed while resolving one path before giving up (Linux's MAXSYMLINKS).
MAX_SYMLINK_HOPS = 40


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


_ENTRY_TYPES = {Kind.FILE: FileEntryType.FILE, Kind.DIR: FileEntryType.DIRECTORY,
                Kind.SYMLINK: FileEntryType.SYMLINK, Kind.FIFO: FileEntryType.FIFO,
                Kind.SOCKET: FileEntryType.SOCKET, Kind.CHAR_DEVICE: FileEntryType.CHARACTER_DEVICE,
                Kind.BLOCK_DEVICE: FileEntryType.BLOCK_DEVICE}
#: The zeros ``read_file`` yields for holes, one READ_CHUNK at most at a time.
_ZEROS = bytes(READ_CHUNK)


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


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    object_id: str
    created_at: datetime
    created_by: str
    environment: str
    #: The head snapshot's id and time.
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


def _open_store(store: StoreLike) -> Store:
    if isinstance(store, Store):
        return store
    return Store.open(store)


def _environment(environment_name: str | None) -> str:
    # modal treats "" like None: the default environment.
    return check_environment_name(environment_name or default_environment())


def _whoami() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for our uid, as in some containers
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


def _file_entry(parts: PathParts, entry: Entry) -> FileEntry:
    return FileEntry(join_path(parts), _ENTRY_TYPES.get(entry.kind, FileEntryType.UNSPECIFIED),
                     entry.mtime_ns // 1_000_000_000, entry.size, entry.mode & 0o7777,
                     entry.target, entry.rdev, entry.link, entry.nlink)


def _zeros(count: int) -> Iterator[bytes]:
    """``count`` zero bytes, in pieces of at most READ_CHUNK."""
    while count > 0:
        piece = min(count, READ_CHUNK)
        yield _ZEROS if piece == READ_CHUNK else _ZEROS[:piece]
        count -= piece


def _shown(parts: PathParts) -> str:
    return "/" + join_path(parts)


def _to_datetime(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.astimezone()  # naive means local time, as datetime.now() gives it
    return value


class _HeadView:
    """Memoised lookups in one root tree: many checks against one head stay cheap.

    ``get`` does not follow symlinks: a symlink (or a file) where a parent directory should
    be raises :class:`NotADirectoryPathError`, because a write must never replace it.
    """

    _MISSING = object()

    def __init__(self, store: Store, root: Entry) -> None:
        self.catalog = store.catalog
        self.root = root
        self._memo: dict[PathParts, Entry | None] = {(): root}

    def get(self, parts: PathParts) -> Entry | None:
        hit = self._memo.get(parts, self._MISSING)
        if hit is not self._MISSING:
            return hit  # type: ignore[return-value]
        # Iterative (paths may have thousands of components): find the longest known prefix.
        known = len(parts) - 1
        while parts[:known] not in self._memo:
            known -= 1
        entry = self._memo[parts[:known]]
        for i in range(known, len(parts)):
            if entry is not None:
                if entry.kind is not Kind.DIR:
                    raise NotADirectoryPathError(f"{_shown(parts[:i])} is not a directory")
                assert entry.tree is not None
                entry = self.catalog.get_tree(entry.tree).get(parts[i])
            self._memo[parts[: i + 1]] = entry
        return entry

    def require(self, parts: PathParts) -> Entry:
        entry = self.get(parts)
        if entry is None:
            raise PathNotFoundError(f"{_shown(parts)}: no such file or directory")
        return entry

    def resolve(self, parts: PathParts, *, follow_last: bool) -> tuple[PathParts, Entry]:
        """Follows relative symlinks that stay inside the volume; returns the real path."""
        hops = 0
        done: list[str] = []
        todo = list(parts)
        while todo:
            name = todo.pop(0)
            entry = self.get((*done, name))
            if entry is None:
                raise PathNotFoundError(f"{_shown(parts)}: no such file or directory")
            if entry.kind is Kind.SYMLINK and (todo or follow_last):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise InvalidError(f"{_shown(parts)}: too many levels of symbolic links")
                if entry.target.startswith("/"):
                    raise PathNotFoundError(
                        f"{_shown(parts)}: symlink to {entry.target!r} leaves the volume")
                base = list(done)
                for comp in entry.target.split("/"):
                    if comp in ("", "."):
                        continue
                    if comp == "..":
                        if not base:
                            raise PathNotFoundError(
                                f"{_shown(parts)}: symlink to {entry.target!r} leaves the volume")
                        base.pop()
                    else:
                        base.append(comp)
                todo = base + todo
                done = []
                continue
            done.append(name)
        real = tuple(done)
        return real, self.require(real)


def _lstat(view: _HeadView, parts: PathParts) -> Entry:
    """The entry at ``parts``, following symlinks in its parents but not the last one."""
    if not parts:
        return view.root
    parent, _ = view.resolve(parts[:-1], follow_last=True)
    return view.require((*parent, parts[-1]))


class Volume:
    """A named, persistent volume in a store, shaped like ``modal.Volume``.

    Get one with :meth:`from_name` (lazy: the name is resolved on first use or by
    :meth:`hydrate`), :meth:`objects.create <_VolumeManager.create>`, or
    :meth:`ephemeral`. Every method that changes the volume lands as one atomic commit
    onto its current head.
    """

    objects: ClassVar[_VolumeManager]

    def __init__(self, store: Store, environment: str, name: str, *,
                 volume_id: VolumeId | None = None, create_if_missing: bool = False,
                 read_only: bool = False, snapshot: SnapshotId | None = None) -> None:
        # Not public: use from_name / objects.create / ephemeral.
        self._store = store
        self._environment = environment
        self._name = name
        self._id = volume_id
        self._create_if_missing = create_if_missing
        self._read_only = read_only
        self._snapshot = snapshot

    def __repr__(self) -> str:
        extra = " read-only" if self._read_only else ""
        if self._snapshot:
            extra += f" at {self._snapshot}"
        return f"<volfs.Volume {self._name!r} env={self._environment!r} id={self._id}{extra}>"

    # -- finding volumes ------------------------------------------------------------------
    @staticmethod
    def from_name(name: str, environment_name: str | None = None, create_if_missing: bool = False,
                  *, store: StoreLike = None) -> Volume:
        """A lazy handle on the volume ``name``; nothing is looked up until first use."""
        check_volume_name(name)
        return Volume(_open_store(store), _environment(environment_name), name,
                      create_if_missing=create_if_missing)

    def hydrate(self) -> Volume:
        """Resolves the name to the volume (creating it if asked); raises NotFoundError."""
        if self._id is not None:
            return self
        catalog = self._store.catalog
        record = catalog.find_volume(self._environment, self._name)
        if record is None and self._create_if_missing:
            try:
                record = catalog.create_volume(self._environment, self._name, _whoami())
            except AlreadyExistsError:  # created by someone else just now: use theirs
                record = catalog.find_volume(self._environment, self._name)
        if record is None:
            raise NotFoundError(
                f"volume {self._name!r} not found in environment {self._environment!r}")
        self._id = record.id
        return self

    @property
    def name(self) -> str:
        return self._name

    @property
    def object_id(self) -> str:
        self.hydrate()
        assert self._id is not None
        return self._id

    @property
    def environment_name(self) -> str:
        return self._environment

    @staticmethod
    def rename(old_name: str, new_name: str, environment_name: str | None = None, *,
               store: StoreLike = None) -> None:
        """Renames a volume; its id, content and history stay."""
        check_volume_name(old_name)
        check_volume_name(new_name)
        _open_store(store).catalog.rename_volume(_environment(environment_name), old_name,
                                                 new_name)

    @staticmethod
    @contextmanager
    def ephemeral(environment_name: str | None = None, *,
                  store: StoreLike = None) -> Iterator[Volume]:
        """A fresh volume that is deleted when the block ends (even if it raised).

        It has a generated name (``ephemeral-…``) so that ``volfs volume list`` shows it
        while it lives — and shows it, deletable, if the process dies before the cleanup.
        """
        st = _open_store(store)
        env = _environment(environment_name)
        record = st.catalog.create_volume(env, "ephemeral-" + secrets.token_hex(8), _whoami())
        try:
            yield Volume(st, env, record.name, volume_id=record.id)
        finally:
            try:
                st.catalog.delete_volume(env, record.name)
            except NotFoundError:
                pass

    def read_only(self) -> Volume:
        """The same volume, through a handle whose every write raises ReadOnlyError."""
        return Volume(self._store, self._environment, self._name, volume_id=self._id,
                      create_if_missing=self._create_if_missing, read_only=True,
                      snapshot=self._snapshot)

    def snapshot(self, snapshot_id: str | None = None) -> Volume:
        """A read-only handle pinned to one snapshot (default: the current head).

        Beyond modal: reads through it all see the same state, whatever commits land
        meanwhile (``volfs volume get`` of a directory uses it).
        """
        record = self._record()
        if snapshot_id is None:
            snapshot_id = record.head
        snap = self._store.catalog.get_snapshot(snapshot_id)
        if snap.volume_id != record.id:
            raise NotFoundError(f"snapshot {snapshot_id} does not belong to volume {self._name!r}")
        return Volume(self._store, self._environment, self._name, volume_id=record.id,
                      read_only=True, snapshot=snap.id)

    def info(self) -> VolumeInfo:
        record = self._record()
        snap = self._store.catalog.get_snapshot(self._snapshot or record.head)
        return VolumeInfo(
            name=record.name, object_id=record.id,
            created_at=datetime.fromtimestamp(record.created_at, UTC),
            created_by=record.created_by, environment=record.environment, head=snap.id,
            head_at=datetime.fromtimestamp(snap.time, UTC),
            size=snap.root.size, files=snap.root.files, format_version=record.format_version)

    def history(self, limit: int | None = None) -> list[SnapshotInfo]:
        """The volume's snapshots, newest first (the head first)."""
        out = []
        for snap in self._store.catalog.history(self._record().id, limit):
            out.append(SnapshotInfo(
                id=snap.id, parent=snap.parent,
                time=datetime.fromtimestamp(snap.time, UTC), origin=snap.origin,
                changed=tuple((op, path) for op, path in snap.changed),
                changed_count=snap.changed_count,
                overwrites=tuple((o["path"], o["previous"]) for o in snap.overwrites)))
        return out

    # -- mounts (the mount side implements them in volfs.control) ------------------------
    def commit(self) -> None:
        """Commits the pending changes of every mount of this volume (see DESIGN §2)."""
        from volfs import control  # lazy: the control socket is a layer above this one

        control.commit_volume(self.object_id)

    def reload(self) -> None:
        """Commits, then switches every mount of this volume to the current head.

        All of them commit before any of them switches, so that they all end up on one
        head holding every mount's changes (one after the other, the first to reload would
        miss what the later ones had not committed yet).
        """
        from volfs import control

        control.commit_volume(self.object_id)
        control.reload_volume(self.object_id)

    @contextmanager
    def mount(self, path: str | os.PathLike[str], read_only: bool = False, *,
              autocommit: float = DEFAULT_AUTOCOMMIT_SECONDS) -> Iterator[Path]:
        """Mounts this volume at ``path`` for a ``with`` block; yields the mount's real path.

        For scripts and tests that want a real filesystem without shelling out: a background
        daemon serves the mount exactly as ``volfs mount`` does, so the block may use plain
        file I/O, subprocesses and :func:`volfs.snapshots.commit`/:func:`volfs.reload` on it.

        On exit — also when the block raised, as a container's changes survive its crash —
        the mount's changes are committed and it is unmounted; this returns only once the
        path is no longer mounted and the daemon has exited, so the next line can rely on
        the head. Files the block left open are committed with what was written and stop
        working afterwards. A handle from :meth:`read_only` or :meth:`snapshot` mounts
        read-only (that snapshot). ``autocommit`` as ``volfs mount --autocommit``.

        Raises MountError when the mount cannot start, or when its changes could not be
        committed on exit (the daemon died, or the final commit failed: ``volfs recover``
        then finds them); the mount is gone either way.
        """
        from volfs.mount import daemon  # lazy: pyfuse3 and trio load only in processes that mount

        record = self._record()  # NotFoundError here, not in the daemon's log
        options = daemon.MountOptions(
            str(self._store.root), record.name, self._environment, os.fspath(path),
            read_only=read_only or self._read_only, snapshot=self._snapshot,
            autocommit=autocommit)
        log_name = f"daemon-{int(time.time())}-{os.getpid()}-{secrets.token_hex(3)}.log"
        log_path = self._store.run_dir / log_name
        pid, _ = daemon.start_daemon(options, log_path)
        served = _Daemon(os.path.realpath(path), pid, log_path)
        try:
            yield Path(served.path)
        except BaseException as exc:
            try:
                served.stop()
            except (VolfsError, OSError) as cleanup_error:
                exc.add_note(f"volfs: while unmounting after this error: {cleanup_error}")
            raise
        served.stop()

    # -- reading --------------------------------------------------------------------------
    def _record(self) -> VolumeRecord:
        self.hydrate()
        assert self._id is not None
        return self._store.catalog.get_volume_by_id(self._id)

    def _root(self) -> Entry:
        if self._snapshot is not None:
            return self._store.catalog.get_snapshot(self._snapshot).root
        self.hydrate()
        assert self._id is not None
        return self._store.catalog.head(self._id).root

    def _view(self) -> _HeadView:
        return _HeadView(self._store, self._root())

    def stat(self, path: str) -> FileEntry:
        """The entry at ``path`` itself (a final symlink is not followed). Beyond modal."""
        parts = split_path(path)
        return _file_entry(parts, _lstat(self._view(), parts))

    def iterdir(self, path: str = "/", *, recursive: bool = False) -> Iterator[FileEntry]:
        """The entries of the directory ``path`` (of a file path: that file alone).

        Paths are relative to the volume root. ``recursive`` lists everything below,
        parents before their children. Missing path: FileNotFoundError.
        """
        parts = split_path(path)
        view = self._view()
        _, entry = view.resolve(parts, follow_last=True)
        if entry.kind is not Kind.DIR:
            yield _file_entry(parts, _lstat(view, parts))
            return
        yield from self._iter_tree(entry, parts, recursive)

    def _iter_tree(self, entry: Entry, shown: PathParts, recursive: bool) -> Iterator[FileEntry]:
        assert entry.tree is not None
        for child in self._store.catalog.get_tree(entry.tree).entries:
            child_path = (*shown, child.name)
            yield _file_entry(child_path, child)
            if recursive and child.kind is Kind.DIR:
                yield from self._iter_tree(child, child_path, recursive)

    def listdir(self, path: str = "/", *, recursive: bool = False) -> list[FileEntry]:
        """Like :meth:`iterdir`, as a list."""
        return list(self.iterdir(path, recursive=recursive))

    def _file(self, path: str) -> Entry:
        real, entry = self._view().resolve(split_path(path), follow_last=True)
        if entry.kind is Kind.DIR:
            raise IsADirectoryPathError(f"{_shown(real)} is a directory")
        return entry

    def read_file(self, path: str) -> Iterator[bytes]:
        """The file's bytes, as an iterator of chunks of at most 1 MiB.

        The path is resolved when this is called (FileNotFoundError, IsADirectoryError
        are raised here, not at the first ``next``); every chunk is verified against its
        digest as it is read (CorruptionError, never wrong bytes). Holes of a sparse file
        read as zeros, yielded a piece at a time (a 1 TiB hole never becomes one buffer).
        A FIFO, socket or device has no content: no bytes.
        """
        entry = self._file(path)
        return self._iter_chunks(entry)

    def _iter_chunks(self, entry: Entry) -> Iterator[bytes]:
        if entry.kind is not Kind.FILE:
            return
        pos = 0  # how far the file has been yielded
        for index, digest in entry.chunks:
            start = index * CHUNK_SIZE
            if start >= entry.size:
                break  # a chunk past the end (fsck reports it): the size rules
            yield from _zeros(start - pos)  # the hole before this chunk
            data = self._store.blobs.get(digest)
            # A blob may be shorter than its span (the rest is zeros); never read past it.
            view = memoryview(data)[: chunk_span(entry.size, index)]
            for offset in range(0, len(view), READ_CHUNK):
                yield bytes(view[offset : offset + READ_CHUNK])
            pos = start + len(view)
        yield from _zeros(entry.size - pos)

    def read_file_into_fileobj(self, path: str, fileobj: BinaryIO,
                               progress_cb: ProgressCallback | None = None) -> int:
        """Writes the file's bytes into ``fileobj``; returns how many."""
        written = 0
        for chunk in self.read_file(path):
            fileobj.write(chunk)
            written += len(chunk)
            if progress_cb is not None:
                progress_cb(len(chunk))
        return written

    # -- writing --------------------------------------------------------------------------
    def _writable_id(self) -> str:
        if self._read_only:
            raise ReadOnlyError(f"volume {self._name!r} is read-only through this handle")
        return self.object_id

    def _commit(self, build: Callable[[_HeadView], Changes], origin: str) -> CommitResult:
        volume_id = self._writable_id()
        return commit_changes(self._store.catalog, volume_id, lambda root: build(_HeadView(self._store, root)),
                              origin=origin)

    def batch_upload(self, force: bool = False, *,
                     progress: ProgressCallback | None = None) -> VolumeUploadContextManager:
        """A context manager collecting uploads that land as one commit when the block ends.

        Nothing is committed if the block raises. Without ``force``, an upload onto an
        existing file raises FileExistsError; a directory is never replaced by an upload.
        ``progress`` (beyond modal) is called with each byte count as content is stored.
        """
        self._writable_id()
        return VolumeUploadContextManager(self, force, progress)

    def remove_file(self, path: str, recursive: bool = False) -> None:
        """Removes a file, symlink, or (with ``recursive``) a directory and what it holds."""
        parts = split_path(path, allow_root=False)

        def build(view: _HeadView) -> Changes:
            entry = view.require(parts)
            if entry.kind is Kind.DIR and not recursive:
                raise IsADirectoryPathError(
                    f"{_shown(parts)} is a directory: remove it with recursive=True (-r)")
            return {parts: Remove(entry)}

        self._commit(build, "api:rm")

    def copy_files(self, src_paths: Sequence[str], dst_path: str, recursive: bool = False) -> None:
        """Copies within the volume with UNIX ``cp`` semantics; only metadata is written.

        ``dst_path`` an existing directory: each source goes inside it under its own name;
        otherwise it names the copy (and only one source is allowed). A directory source
        needs ``recursive``; copying a directory onto an existing one merges into it.
        """
        if isinstance(src_paths, str):
            raise InvalidError("src_paths must be a list of paths, not one string")
        if not src_paths:
            raise InvalidError("copy_files needs at least one source path")
        srcs = []
        for src in src_paths:
            parts = split_path(src)
            if not parts:
                raise InvalidError("cannot copy the volume root; copy its entries instead")
            srcs.append(parts)
        dst = split_path(dst_path)
        # cp: a trailing slash says "a directory", so it must exist as one.
        dst_must_be_dir = dst_path.rstrip().endswith("/") or not dst

        def build(view: _HeadView) -> Changes:
            target_dir = view.get(dst)
            into = target_dir is not None and target_dir.kind is Kind.DIR
            if not into:
                if len(srcs) > 1 or dst_must_be_dir:  # cp says ENOTDIR, missing or not
                    raise NotADirectoryPathError(f"target {_shown(dst)} is not a directory")
                parent = view.get(dst[:-1])
                if parent is None:
                    raise PathNotFoundError(f"{_shown(dst[:-1])}: no such directory")
                if parent.kind is not Kind.DIR:
                    raise NotADirectoryPathError(f"{_shown(dst[:-1])} is not a directory")
            changes: Changes = {}
            for parts in srcs:
                src = view.require(parts)
                if src.kind is Kind.DIR and not recursive:
                    raise IsADirectoryPathError(
                        f"{_shown(parts)} is a directory: copy it with recursive=True (-r)")
                target = (*dst, parts[-1]) if into else dst
                if target == parts:
                    raise InvalidError(f"{_shown(parts)} and {_shown(target)} are the same file")
                if src.kind is Kind.DIR and target[: len(parts)] == parts:
                    raise InvalidError(
                        f"cannot copy directory {_shown(parts)} into itself ({_shown(target)})")
                self._copy_entry(view, src, target, changes)
                # Every parent of a written path must be in the changes (merge.py's rule);
                # they all exist here (checked above), so they only pass through.
                for i in range(len(target) - 1):
                    parent_parts = target[: i + 1]
                    if parent_parts not in changes:
                        here = view.require(parent_parts)
                        changes[parent_parts] = Dir(here, here, frozenset())
            return changes

        self._commit(build, "api:cp")

    def _copy_entry(self, view: _HeadView, src: Entry, target: PathParts, changes: Changes) -> None:
        existing = view.get(target)
        name = target[-1]
        if src.kind is not Kind.DIR:
            if existing is not None and existing.kind is Kind.DIR:
                raise IsADirectoryPathError(
                    f"cannot overwrite directory {_shown(target)} with a non-directory")
            # Same chunks, same digests: the copy costs a tree entry, not the bytes. Like
            # cp, the copy is a file of its own: it joins no hard-link group of the source.
            changes[target] = Put(src.with_(name=name, link=0, nlink=1), existing)
            return
        if existing is None:
            changes[target] = Dir(src.with_(name=name), None, ALL_META)
        elif existing.kind is Kind.DIR:
            changes[target] = Dir(existing, existing, frozenset())  # cp -r merges into it
        else:
            raise NotADirectoryPathError(
                f"cannot overwrite non-directory {_shown(target)} with directory")
        assert src.tree is not None
        for child in self._store.catalog.get_tree(src.tree).entries:
            self._copy_entry(view, child, (*target, child.name), changes)


class _Daemon:
    """The daemon :meth:`Volume.mount` started: commits, unmounts and waits for it to leave.

    It is this process's child (``start_daemon`` spawns it), so it is reaped here by pid:
    an unreaped daemon would stay in ``/proc`` as a zombie and look alive.
    """

    #: Once the daemon has answered "unmount" (its final commit done), it only has to exit.
    EXIT_DEADLINE = 60.0

    def __init__(self, path: str, pid: int, log_path: Path) -> None:
        self.path = path
        self.pid = pid
        self.log_path = log_path
        self.exit_code: int | None = None

    def gone(self) -> bool:
        """True once the daemon has exited (and been reaped)."""
        if self.exit_code is not None:
            return True
        try:
            done, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (subprocess's own cleanup)
            if os.path.exists(f"/proc/{self.pid}"):
                return False
            self.exit_code = 0
            return True
        if done == 0:
            return False
        self.exit_code = os.waitstatus_to_exitcode(status)
        return True

    def mounted(self) -> bool:
        from volfs import control

        return self.path in control.volfs_mountpoints()

    def detach(self) -> None:
        """Lazily detaches a mount whose daemon is gone (every access gives ENOTCONN)."""
        subprocess.run(["fusermount3", "-u", "-z", self.path], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        """Commits and unmounts; returns once the path is unmounted and the daemon gone."""
        from volfs import control

        problem = ""
        if not self.gone() and self.mounted():
            try:
                info = control.mount_info(self.path)
                if info.pid != self.pid:
                    raise MountError(f"{self.path} is served by pid {info.pid}, not ours")
                result = control.call(info.socket, "unmount", force=True, pid=os.getpid())
                problem = str(result.get("error") or "")
            except VolfsError as exc:
                # Unreachable, or the commit was refused: SIGTERM does the same as unmount
                # (final commit with retries, the overlay kept for `volfs recover` if it fails).
                problem = str(exc)
                self._signal()
        elif not self.gone():
            self._signal()  # someone unmounted the path: the daemon is finishing on its own
        deadline = time.monotonic() + self.EXIT_DEADLINE
        detached = False
        while not (self.gone() and not self.mounted()):
            if self.gone() and not detached:
                self.detach()  # the daemon is gone but its mount is not: it died
                detached = True
                problem = problem or "its daemon died"
                continue
            if time.monotonic() > deadline:
                raise MountError(f"the daemon of {self.path} (pid {self.pid}) did not exit in "
                                 f"{self.EXIT_DEADLINE:.0f}s; see {self.log_path}")
            time.sleep(0.02)
        if self.exit_code:
            problem = problem or f"its daemon exited with status {self.exit_code}"
        if problem:
            raise MountError(f"unmounting {self.path}: {problem}; uncommitted changes, if any, "
                             f"are kept for `volfs recover` (daemon log: {self.log_path})")

    def _signal(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@dataclass
class _Upload:
    entry: Entry
    #: Where the content came from, for error messages.
    source: str


class _CountingReader(io.RawIOBase):
    """Reports every read's size to a progress callback."""

    def __init__(self, inner: BinaryIO, progress: ProgressCallback) -> None:
        self._inner = inner
        self._progress = progress

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        data = self._inner.read(size)
        if data:
            self._progress(len(data))
        return data


#: The special files put_directory uploads (sockets are skipped: see there).
_SPECIAL_KINDS = {statmod.S_IFIFO: Kind.FIFO, statmod.S_IFCHR: Kind.CHAR_DEVICE,
                  statmod.S_IFBLK: Kind.BLOCK_DEVICE}


def _link_groups(files: list[tuple[PathParts, str, os.stat_result]]) -> dict[PathParts, tuple[int, int]]:
    """(link id, nlink) of each uploaded name that shares its local inode with another
    uploaded name. A group's nlink counts the names uploaded, not the local st_nlink: the
    names outside the upload are not in the volume."""
    by_inode: dict[tuple[int, int], list[PathParts]] = {}
    for parts, _, st in files:
        if st.st_nlink > 1:
            by_inode.setdefault((st.st_dev, st.st_ino), []).append(parts)
    out: dict[PathParts, tuple[int, int]] = {}
    for names in by_inode.values():
        if len(names) > 1:
            link = secrets.randbits(63) | 1  # nonzero, random: unique within the volume
            for parts in names:
                out[parts] = (link, len(names))
    return out


class VolumeUploadContextManager:
    """Collects ``put_file``/``put_directory`` uploads; commits them as one on exit.

    Content is stored (durable blobs) as each ``put_*`` is called, so the source may
    change or close afterwards; the commit happens only if the ``with`` block ends
    without an exception. Blobs stored for an abandoned batch are unreferenced and
    left for garbage collection — never visible in the volume.
    """

    def __init__(self, volume: Volume, force: bool, progress: ProgressCallback | None) -> None:
        self._volume = volume
        self._store = volume._store
        self._force = force
        self._progress = progress
        self._files: dict[PathParts, _Upload] = {}
        #: Directories to create (with the metadata they get if they are new).
        self._dirs: dict[PathParts, Entry] = {}
        self._view: _HeadView | None = None
        self._done = False
        self._uid = os.getuid()
        self._gid = os.getgid()
        #: The commit's outcome, once the block has ended (None: nothing to commit).
        self.result: CommitResult | None = None
        #: Held from the first stored blob to the commit: gc keeps what the batch stored.
        self._lease = contextlib.ExitStack()
        self._leased = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._done:
            return
        self._done = True
        with self._lease:
            if exc_type is not None:
                return  # the block failed: publish nothing
            if self._files or self._dirs:
                self.result = self._volume._commit(self._build, "api:put")

    # -- checks ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._done:
            raise InvalidError("this batch_upload has already ended")

    def _check_file_target(self, view: _HeadView, parts: PathParts, source: str) -> Entry | None:
        """What head has at ``parts`` if a file may be written there; else raises."""
        existing = view.get(parts)  # raises NotADirectoryPathError for a non-dir parent
        if existing is None:
            return None
        if existing.kind is Kind.DIR:
            raise IsADirectoryPathError(
                f"{_shown(parts)} is a directory; an upload never replaces a directory"
                f" (end the remote path with / to upload into it)")
        if not self._force:
            raise PathExistsError(
                f"{_shown(parts)} already exists (uploading {source}); use force to overwrite")
        return existing

    def _check_dir_target(self, view: _HeadView, parts: PathParts) -> Entry | None:
        existing = view.get(parts)
        if existing is not None and existing.kind is not Kind.DIR:
            raise NotADirectoryPathError(f"{_shown(parts)} exists and is not a directory")
        return existing

    def _precheck(self, check: Callable[[_HeadView], object]) -> None:
        """Fails fast, before any content is stored, against a recent head.

        The head is cached for the batch; a refusal is re-checked against the current head
        so a stale cache never refuses wrongly. The binding checks run again at commit.
        """
        if self._view is not None:
            try:
                check(self._view)
                return
            except (PathExistsError, IsADirectoryPathError, NotADirectoryPathError):
                pass
        self._view = self._volume._view()
        check(self._view)

    def _check_batch(self, parts: PathParts, is_dir: bool) -> None:
        """Refuses a file and a directory at one path within this batch."""
        for i in range(1, len(parts)):
            if parts[:i] in self._files:
                raise NotADirectoryPathError(
                    f"{_shown(parts[:i])} is a file in this batch, not a directory")
        if is_dir:
            if parts in self._files:
                raise NotADirectoryPathError(f"{_shown(parts)} is a file in this batch")
        elif parts in self._dirs:
            raise IsADirectoryPathError(f"{_shown(parts)} is a directory in this batch")

    # -- uploads --------------------------------------------------------------------------
    def put_file(self, local_file: LocalFile, remote_path: str | PurePosixPath,
                 mode: int | None = None) -> None:
        """Stores one file's content for ``remote_path`` (parents are created).

        ``local_file`` is a local path or a binary file-like object (read to its end).
        ``mode`` defaults to the local file's permission bits, or 0o644 for a file-like.
        A ``remote_path`` ending with ``/`` means "inside that directory, same name".
        """
        self._check_open()
        is_path = isinstance(local_file, (str, os.PathLike))
        remote = str(remote_path)
        if remote.endswith("/"):
            if not is_path:
                raise InvalidError(f"remote path {remote!r} names a directory; name the file")
            remote += Path(os.fspath(local_file)).name  # type: ignore[arg-type]
        parts = split_path(remote, allow_root=False)
        source = os.fsdecode(local_file) if is_path else "a file object"  # type: ignore[arg-type]
        self._check_batch(parts, is_dir=False)
        self._precheck(lambda view: self._check_file_target(view, parts, source))
        if is_path:
            with open(local_file, "rb") as f:  # type: ignore[arg-type]
                self._store_file(parts, f, source, mode)  # type: ignore[arg-type]
        else:
            self._store_file(parts, local_file, source, mode)  # type: ignore[arg-type]

    def put_directory(self, local_path: str | os.PathLike[str], remote_path: str | PurePosixPath,
                      recursive: bool = True) -> None:
        """Uploads what ``local_path`` holds into ``remote_path``.

        Regular files, directories (empty ones too), FIFOs and device nodes (as entries of
        their kind, with their mode and device number; owned by the uploader, like files).
        Names of one local file (hard links: one ``(st_dev, st_ino)``) stay one file in the
        volume: its content is stored once and they share a new link id. Symlinks and
        sockets are skipped — a symlink is never followed, so nothing outside
        ``local_path`` is read. Every target is checked before any content is stored.
        """
        self._check_open()
        root = Path(local_path)
        if not root.is_dir():
            if not root.exists():
                raise FileNotFoundError(2, "No such file or directory", os.fspath(root))
            raise NotADirectoryError(20, "Not a directory", os.fspath(root))
        base = split_path(str(remote_path))
        dirs: list[tuple[PathParts, os.stat_result]] = [(base, os.stat(root))]
        #: Regular files and special files: (remote path, local path, lstat).
        files: list[tuple[PathParts, str, os.stat_result]] = []
        self._walk_local(os.fspath(root), base, recursive, dirs, files)
        for parts, _ in dirs:
            self._check_batch(parts, is_dir=True)
        for parts, _, _ in files:
            self._check_batch(parts, is_dir=False)

        def check_all(view: _HeadView) -> None:
            for parts, _ in dirs:
                self._check_dir_target(view, parts)
            for parts, local, _ in files:
                self._check_file_target(view, parts, local)

        self._precheck(check_all)
        links = _link_groups(files)
        for parts, st in dirs:
            if parts:
                self._add_dir(parts, st)
        #: (st_dev, st_ino) -> the entry stored for the first name of a link group.
        stored: dict[tuple[int, int], Entry] = {}
        for parts, local, st in files:
            inode = (st.st_dev, st.st_ino)
            first = stored.get(inode)
            if first is not None:  # another name of a file already stored: no second read
                self._add_upload(parts, first.with_(name=parts[-1]), local)
                continue
            if statmod.S_ISREG(st.st_mode):
                # O_NOFOLLOW: a file swapped for a symlink since the walk is refused, not followed.
                fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    self._store_file(parts, f, local, None)
            else:
                self._add_upload(parts, self._special_entry(parts[-1], st), local)
            if parts in links:
                link, nlink = links[parts]
                upload = self._files[parts]
                upload.entry = upload.entry.with_(link=link, nlink=nlink)
                stored[inode] = upload.entry

    def _special_entry(self, name: str, st: os.stat_result) -> Entry:
        """A FIFO or device node found by put_directory, as an entry (no content)."""
        kind = _SPECIAL_KINDS[statmod.S_IFMT(st.st_mode)]
        rdev = st.st_rdev if kind in (Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE) else 0
        return Entry(name, kind, statmod.S_IMODE(st.st_mode), self._uid, self._gid, st.st_mtime_ns,
                     rdev=rdev)

    def _walk_local(self, local: str, remote: PathParts, recursive: bool,
                    dirs: list[tuple[PathParts, os.stat_result]],
                    files: list[tuple[PathParts, str, os.stat_result]]) -> None:
        with os.scandir(local) as it:
            items = sorted(it, key=lambda e: e.name)
        for item in items:
            if item.is_symlink():
                continue
            st = item.stat(follow_symlinks=False)
            kind = statmod.S_IFMT(st.st_mode)
            if kind == statmod.S_IFDIR:
                if recursive:
                    parts = (*remote, check_component(item.name))
                    dirs.append((parts, st))
                    self._walk_local(item.path, parts, recursive, dirs, files)
            elif kind == statmod.S_IFREG or kind in _SPECIAL_KINDS:
                files.append(((*remote, check_component(item.name)), item.path, st))
            # Sockets: a socket node means nothing without the process listening on it.

    def _add_dir(self, parts: PathParts, st: os.stat_result | None) -> None:
        if parts in self._dirs and st is None:
            return
        if st is not None:
            entry = Entry(parts[-1], Kind.DIR, statmod.S_IMODE(st.st_mode), self._uid, self._gid,
                          st.st_mtime_ns)
        else:
            entry = Entry(parts[-1], Kind.DIR, 0o755, self._uid, self._gid, time.time_ns())
        self._dirs[parts] = entry

    def _store_file(self, parts: PathParts, f: BinaryIO, source: str, mode: int | None) -> None:
        mtime_ns = time.time_ns()
        try:
            st = os.fstat(f.fileno())
        except (AttributeError, OSError, io.UnsupportedOperation):
            st = None  # a BytesIO and friends: no fd
        if st is not None and statmod.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", source)
        if st is not None and statmod.S_ISREG(st.st_mode):
            mtime_ns = st.st_mtime_ns
            if mode is None:
                mode = statmod.S_IMODE(st.st_mode)
        if mode is None:
            mode = 0o644
        reader: BinaryIO = f
        if self._progress is not None:
            reader = _CountingReader(f, self._progress)  # type: ignore[assignment]
        if not self._leased:
            self._lease.enter_context(self._store.catalog.lease("api:put batch"))
            self._leased = True
        digests, size = blobs.put_stream(self._store.blobs, reader)
        entry = Entry(parts[-1], Kind.FILE, mode & 0o7777, self._uid, self._gid, mtime_ns, size,
                      dense(digests))
        self._add_upload(parts, entry, source)

    def _add_upload(self, parts: PathParts, entry: Entry, source: str) -> None:
        self._files[parts] = _Upload(entry, source)
        for i in range(1, len(parts)):
            self._add_dir(parts[:i], None)

    # -- the commit -----------------------------------------------------------------------
    def _build(self, view: _HeadView) -> Changes:
        changes: Changes = {}
        for parts, template in self._dirs.items():
            existing = self._check_dir_target(view, parts)
            if existing is None:
                changes[parts] = Dir(template, None, ALL_META)
            else:
                changes[parts] = Dir(existing, existing, frozenset())  # only passes through
        for parts, upload in self._files.items():
            seen = self._check_file_target(view, parts, upload.source)
            changes[parts] = Put(upload.entry, seen)
        return changes


class _VolumeManager:
    """``Volume.objects``: create, list and delete volumes by name."""

    def create(self, name: str, *, allow_existing: bool = False,
               environment_name: str | None = None, store: StoreLike = None) -> Volume:
        """Creates an empty volume (AlreadyExistsError if taken, unless ``allow_existing``)."""
        check_volume_name(name)
        st = _open_store(store)
        env = _environment(environment_name)
        try:
            record = st.catalog.create_volume(env, name, _whoami())
        except AlreadyExistsError:
            if not allow_existing:
                raise
            record = st.catalog.get_volume(env, name)
        return Volume(st, env, record.name, volume_id=record.id)

    def list(self, *, max_objects: int | None = None, created_before: datetime | str | None = None,
             environment_name: str | None = None, store: StoreLike = None) -> list[Volume]:
        """The volumes of an environment, newest first."""
        if max_objects is not None and max_objects < 0:
            raise InvalidError("max_objects must be >= 0")
        st = _open_store(store)
        env = _environment(environment_name)
        records = sorted(st.catalog.list_volumes(env), key=lambda v: v.created_at, reverse=True)
        if created_before is not None:
            limit = _to_datetime(created_before)
            # Compare as datetimes (microseconds), as info().created_at shows them: a float
            # timestamp can differ from its datetime in the last bits.
            records = [v for v in records if datetime.fromtimestamp(v.created_at, UTC) < limit]
        if max_objects is not None:
            records = records[:max_objects]
        return [Volume(st, env, v.name, volume_id=v.id) for v in records]

    def delete(self, name: str, *, allow_missing: bool = False,
               environment_name: str | None = None, store: StoreLike = None) -> None:
        """Deletes a volume by name (NotFoundError if missing, unless ``allow_missing``)."""
        check_volume_name(name)
        try:
            _open_store(store).catalog.delete_volume(_environment(environment_name), name)
        except NotFoundError:
            if not allow_missing:
                raise


Volume.objects = _VolumeManager()

__all__ = ["FileEntry", "FileEntryType", "SnapshotInfo", "Volume", "VolumeInfo",
           "VolumeUploadContextManager"]
