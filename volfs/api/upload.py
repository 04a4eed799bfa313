"""Uploads into a volume without a mount: ``batch_upload`` and its ``put_file`` /
``put_directory``, landing as **one** commit when the ``with`` block ends.

Owns :class:`VolumeUploadContextManager`: storing content as each ``put_*`` is called
(durable blobs, under a catalog lease so gc keeps them until the commit), walking a local
directory (regular files, directories, FIFOs, device nodes; hard links kept as one file;
symlinks and sockets skipped, never followed), and the checks a target must pass — made
early against a cached head so a batch fails before storing content, and again, binding,
inside the commit's build against the head the commit lands on.

Must not: commit by itself (the volume handle passes the commit function in), print, or
read anything outside the paths it is given (``O_NOFOLLOW``; symlinks are not followed).

Concurrency: one batch belongs to one thread; several batches (threads or processes) can
run against one volume at once, each landing as its own commit.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import stat as statmod
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO, Self, Union

from volfs import blobs
from volfs.api.aio import run_sync
from volfs.api.paths import Build, HeadView, shown
from volfs.core.changes import ALL_META, Changes, Dir, Put
from volfs.core.tree import Entry, Kind, dense
from volfs.errors import (
    InvalidError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathExistsError,
)
from volfs.names import PathParts, check_component, split_path
from volfs.snapshots.commit import CommitResult
from volfs.store import Store

LocalFile = Union[str, "os.PathLike[str]", BinaryIO]
ProgressCallback = Callable[[int], None]
#: Commits a build onto the volume's head, with an origin ("api:put"); the volume's own.
CommitFunction = Callable[[Build, str], CommitResult]


class VolumeUploadContextManager:
    """Collects ``put_file``/``put_directory`` uploads; commits them as one on exit.

    Content is stored (durable blobs) as each ``put_*`` is called, so the source may
    change or close afterwards; the commit happens only if the ``with`` block ends
    without an exception. Blobs stored for an abandoned batch are unreferenced and
    left for garbage collection — never visible in the volume.
    """

    def __init__(
        self,
        store: Store,
        head_view: Callable[[], HeadView],
        commit: CommitFunction,
        force: bool,
        progress: ProgressCallback | None,
    ) -> None:
        # Made by Volume.batch_upload, which passes its store, a view of its current head,
        # and its commit (the read-only check done): no import of the volume module here.
        self._store = store
        self._head_view = head_view
        self._commit = commit
        self._force = force
        self._progress = progress
        self._files: dict[PathParts, _Upload] = {}
        #: Directories to create (with the metadata they get if they are new).
        self._dirs: dict[PathParts, Entry] = {}
        self._view: HeadView | None = None
        self._done = False
        self._uid = os.getuid()
        self._gid = os.getgid()
        #: The commit's outcome, once the block has ended (None: nothing to commit).
        self.result: CommitResult | None = None
        #: Held from the first stored blob to the commit: gc keeps what the batch stored.
        self._lease = contextlib.ExitStack()
        self._leased = False
        #: Entered by ``async with``: the uploads asked for, run in a worker thread when
        #: the block ends (as modal's batch does its work in ``__aexit__``), so that
        #: ``put_file`` never blocks the event loop.
        self._deferred: list[Callable[[], None]] | None = None

    def __enter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        self._deferred = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        deferred, self._deferred = self._deferred or [], None

        def finish() -> None:
            if exc_type is None:
                try:
                    for upload in deferred:
                        upload()
                except BaseException as error:
                    self.__exit__(type(error), error, error.__traceback__)
                    raise
            self.__exit__(exc_type, exc, tb)

        await run_sync(finish)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._done:
            return
        self._done = True
        with self._lease:
            if exc_type is not None:
                return  # the block failed: publish nothing
            if self._files or self._dirs:
                self.result = self._commit(self._build, "api:put")

    # -- checks ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._done:
            raise InvalidError("this batch_upload has already ended")

    def _check_file_target(self, view: HeadView, parts: PathParts, source: str) -> Entry | None:
        """What head has at ``parts`` if a file may be written there; else raises."""
        existing = view.get(parts)  # raises NotADirectoryPathError for a non-dir parent
        if existing is None:
            return None
        if existing.kind is Kind.DIR:
            raise IsADirectoryPathError(
                f"{shown(parts)} is a directory; an upload never replaces a directory"
                f" (end the remote path with / to upload into it)"
            )
        if not self._force:
            what = f"{shown(parts)} already exists (uploading {source})"
            raise PathExistsError(f"{what}; pass force=True to overwrite").for_cli(
                f"{what}; pass --force to overwrite"
            )
        return existing

    def _check_dir_target(self, view: HeadView, parts: PathParts) -> Entry | None:
        existing = view.get(parts)
        if existing is not None and existing.kind is not Kind.DIR:
            raise NotADirectoryPathError(f"{shown(parts)} exists and is not a directory")
        return existing

    def _precheck(self, check: Callable[[HeadView], object]) -> None:
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
        self._view = self._head_view()
        check(self._view)

    def _check_batch(self, parts: PathParts, is_dir: bool) -> None:
        """Refuses a file and a directory at one path within this batch."""
        for i in range(1, len(parts)):
            if parts[:i] in self._files:
                raise NotADirectoryPathError(
                    f"{shown(parts[:i])} is a file in this batch, not a directory"
                )
        if is_dir:
            if parts in self._files:
                raise NotADirectoryPathError(f"{shown(parts)} is a file in this batch")
        elif parts in self._dirs:
            raise IsADirectoryPathError(f"{shown(parts)} is a directory in this batch")

    # -- uploads --------------------------------------------------------------------------
    def put_file(
        self, local_file: LocalFile, remote_path: str | PurePosixPath, mode: int | None = None
    ) -> None:
        """Stores one file's content for ``remote_path`` (parents are created).

        ``local_file`` is a local path or a binary file-like object (read to its end).
        ``mode`` defaults to the local file's permission bits, or 0o644 for a file-like.
        A ``remote_path`` ending with ``/`` means "inside that directory, same name".
        In an ``async with`` block the upload runs when the block ends.
        """
        self._check_open()
        if self._deferred is not None:
            self._deferred.append(lambda: self._put_file(local_file, remote_path, mode))
            return
        self._put_file(local_file, remote_path, mode)

    def _put_file(
        self, local_file: LocalFile, remote_path: str | PurePosixPath, mode: int | None
    ) -> None:
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

    def put_directory(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str | PurePosixPath,
        recursive: bool = True,
    ) -> None:
        """Uploads what ``local_path`` holds into ``remote_path``.

        Regular files, directories (empty ones too), FIFOs and device nodes (as entries of
        their kind, with their mode and device number; owned by the uploader, like files).
        Names of one local file (hard links: one ``(st_dev, st_ino)``) stay one file in the
        volume: its content is stored once and they share a new link id. Symlinks and
        sockets are skipped — a symlink is never followed, so nothing outside
        ``local_path`` is read. Every target is checked before any content is stored.
        In an ``async with`` block the upload runs when the block ends.
        """
        self._check_open()
        if self._deferred is not None:
            self._deferred.append(lambda: self._put_directory(local_path, remote_path, recursive))
            return
        self._put_directory(local_path, remote_path, recursive)

    def _put_directory(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str | PurePosixPath,
        recursive: bool,
    ) -> None:
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

        def check_all(view: HeadView) -> None:
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
        return Entry(
            name, kind, statmod.S_IMODE(st.st_mode), self._uid, self._gid, st.st_mtime_ns, rdev=rdev
        )

    def _walk_local(
        self,
        local: str,
        remote: PathParts,
        recursive: bool,
        dirs: list[tuple[PathParts, os.stat_result]],
        files: list[tuple[PathParts, str, os.stat_result]],
    ) -> None:
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
            entry = Entry(
                parts[-1],
                Kind.DIR,
                statmod.S_IMODE(st.st_mode),
                self._uid,
                self._gid,
                st.st_mtime_ns,
            )
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
        entry = Entry(
            parts[-1],
            Kind.FILE,
            mode & 0o7777,
            self._uid,
            self._gid,
            mtime_ns,
            size,
            dense(digests),
        )
        self._add_upload(parts, entry, source)

    def _add_upload(self, parts: PathParts, entry: Entry, source: str) -> None:
        self._files[parts] = _Upload(entry, source)
        for i in range(1, len(parts)):
            self._add_dir(parts[:i], None)

    # -- the commit -----------------------------------------------------------------------
    def _build(self, view: HeadView) -> Changes:
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
_SPECIAL_KINDS = {
    statmod.S_IFIFO: Kind.FIFO,
    statmod.S_IFCHR: Kind.CHAR_DEVICE,
    statmod.S_IFBLK: Kind.BLOCK_DEVICE,
}


def _link_groups(
    files: list[tuple[PathParts, str, os.stat_result]],
) -> dict[PathParts, tuple[int, int]]:
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


__all__ = ["LocalFile", "ProgressCallback", "VolumeUploadContextManager"]
