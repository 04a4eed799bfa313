"""A mount's private copy of one file's content, kept as one file per chunk.

A file the mount wrote lives in the overlay's scratch directory as *segments*: ``f12``
holds bytes ``[0, CHUNK_SIZE)``, ``f12.1`` the next ``CHUNK_SIZE`` bytes, and so on. Every
segment but the last is exactly ``CHUNK_SIZE`` long (sparse where never written) and the
last holds the rest, so each segment *is* one chunk of the file's content. A commit hashes
each segment and, where the blob is new, hard-links the segment into the blob store
instead of copying it: committing 1 GiB costs a hash and 128 links, not a second 1 GiB
write (blobs/local.py, ``BlobBatch.add_range(adopt=True)``).

A segment that may be linked into the blob store is *shared*: its bytes are a blob's and
must never change again. Every change to a shared segment (a write, a truncate, a new
mtime) first copies it to a new inode and renames that over the segment's name; the blob
keeps the old inode. :meth:`ScratchFile.freeze` marks the segments shared and opens them,
on the loop, before a commit hashes them in a worker thread, so the worker hashes and
links inodes nothing will change under it.

Crash safety: the journal names a scratch file by its first segment's name; the others
are found again by name (``<name>.<index>``, contiguous from 1) when ``volfs recover``
replays it. Not thread-safe: the trio loop owns every ScratchFile; a commit's worker gets
only the file descriptors :meth:`freeze` opened for it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from volfs.config import CHUNK_SIZE

_SYNC_THREADS = 16
#: Segments a file keeps open at once: a 10 GiB file has 1,280 of them.
MAX_OPEN_SEGMENTS = 8


def _last(size: int) -> int:
    """Index of the segment holding a file's last byte (0 for an empty file)."""
    return max(0, (size - 1) // CHUNK_SIZE)


def _copy(src: int, dst: int, length: int) -> None:
    copied = 0
    while copied < length:
        n = os.copy_file_range(src, dst, length - copied, copied, copied)
        if n == 0:
            break
        copied += n


class ScratchFile:
    __slots__ = ("_fds", "_segments", "_unsynced", "directory", "name", "shared", "size")

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.name = name
        #: The file's length; segments past it (a failed write's) are not its content.
        self.size = 0
        #: Indexes of segments whose inode may be a blob too: copied before any change.
        self.shared: set[int] = set()
        self._fds: dict[int, int] = {}
        self._segments = 0  # segment files on disk: indexes 0 .. _segments-1
        self._unsynced: set[int] = set()

    @classmethod
    def create(cls, directory: str, name: str) -> ScratchFile:
        scratch = cls(directory, name)
        scratch._fds[0] = os.open(scratch.path(0), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        scratch._segments = 1
        return scratch

    @classmethod
    def existing(cls, directory: str, name: str) -> ScratchFile:
        """A scratch file found again by recovery (created empty if it is missing)."""
        scratch = cls(directory, name)
        os.close(os.open(scratch.path(0), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        scratch._split_whole_file()
        index = 1
        while os.path.exists(scratch.path(index)):
            index += 1
        scratch._segments = index
        for segment in range(index):
            st = os.stat(scratch.path(segment))
            if st.st_nlink > 1:  # adopted by a commit before the crash: a blob's inode too
                scratch.shared.add(segment)
            if segment < index - 1 and st.st_size != CHUNK_SIZE:  # a crash while growing it
                os.ftruncate(scratch._for_change(segment), CHUNK_SIZE)
            scratch.size = segment * CHUNK_SIZE + st.st_size
        return scratch

    def _split_whole_file(self) -> None:
        """An overlay written before scratch files had segments keeps a file's content in
        one file: its tail moves into segments, from the end (a crash part-way is redone)."""
        size = os.stat(self.path(0)).st_size
        if size <= CHUNK_SIZE or os.path.exists(self.path(1)):
            return
        fd = os.open(self.path(0), os.O_RDWR | os.O_CLOEXEC)
        try:
            for index in range(_last(size), 0, -1):
                start = index * CHUNK_SIZE
                segment = os.open(self.path(index), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                try:
                    os.write(segment, os.pread(fd, min(CHUNK_SIZE, size - start), start))
                    os.fsync(segment)
                finally:
                    os.close(segment)
                os.ftruncate(fd, start)
                size = start
        finally:
            os.close(fd)

    def path(self, index: int) -> str:
        first = os.path.join(self.directory, self.name)
        return first if index == 0 else f"{first}.{index}"

    def mtime_ns(self) -> int:
        return os.stat(self.path(0)).st_mtime_ns

    # -- reading ------------------------------------------------------------------------
    def _fd(self, index: int) -> int:
        fd = self._fds.get(index)
        if fd is None:
            fd = os.open(self.path(index), (os.O_RDONLY if index in self.shared else os.O_RDWR) | os.O_CLOEXEC)
            self._keep(index, fd)
        return fd

    def _keep(self, index: int, fd: int) -> None:
        """Remembers an open segment, closing the oldest beyond MAX_OPEN_SEGMENTS (a
        later sync reopens what it needs: fsync of any fd flushes the inode)."""
        while len(self._fds) >= MAX_OPEN_SEGMENTS:
            oldest = next(iter(self._fds))
            os.close(self._fds.pop(oldest))
        self._fds[index] = fd

    def pread(self, size: int, offset: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        index, within = divmod(offset, CHUNK_SIZE)
        if end - offset <= CHUNK_SIZE - within:  # the common case: inside one segment
            data = os.pread(self._fd(index), end - offset, within)
            return data if len(data) == end - offset else data.ljust(end - offset, b"\0")
        parts = []
        while offset < end:
            index, within = divmod(offset, CHUNK_SIZE)
            count = min(end - offset, CHUNK_SIZE - within)
            parts.append(os.pread(self._fd(index), count, within).ljust(count, b"\0"))
            offset += count
        return b"".join(parts)

    # -- changing -----------------------------------------------------------------------
    def _for_change(self, index: int) -> int:
        """A writable fd of segment ``index`` (created if it is the next one), unshared first."""
        if index in self.shared:
            self._unshare(index)
        fd = self._fds.get(index)
        if fd is None:
            create = os.O_CREAT if index >= self._segments else 0
            fd = os.open(self.path(index), os.O_RDWR | os.O_CLOEXEC | create, 0o600)
            self._keep(index, fd)
            self._segments = max(self._segments, index + 1)
        self._unsynced.add(index)
        return fd

    def _unshare(self, index: int) -> None:
        """Copy on write: the segment's name gets a private copy; the blob keeps the inode."""
        src = self._fd(index)
        tmp = self.path(index) + ".cow"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _copy(src, fd, os.fstat(src).st_size)
            os.rename(tmp, self.path(index))
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(src)
        self._fds[index] = fd
        self.shared.discard(index)

    def _grow(self, size: int) -> None:
        """Makes every segment before the one holding byte ``size - 1`` full length."""
        for index in range(_last(self.size), _last(size)):
            fd = self._for_change(index)
            if os.fstat(fd).st_size != CHUNK_SIZE:
                os.ftruncate(fd, CHUNK_SIZE)

    def pwrite(self, data: bytes, offset: int) -> int:
        if not data:
            return 0
        end = offset + len(data)
        if end > self.size:
            self._grow(end)
        index, within = divmod(offset, CHUNK_SIZE)
        if len(data) <= CHUNK_SIZE - within:
            written = os.pwrite(self._for_change(index), data, within)
        else:
            view = memoryview(data)
            written = 0
            while written < len(data):
                index, within = divmod(offset + written, CHUNK_SIZE)
                count = min(len(data) - written, CHUNK_SIZE - within)
                n = os.pwrite(self._for_change(index), view[written:written + count], within)
                written += n
                if n < count:
                    break
        self.size = max(self.size, offset + written)
        return written

    def truncate(self, size: int) -> None:
        if size > self.size:
            self._grow(size)
        else:
            for index in range(self._segments - 1, _last(size), -1):  # from the end: a crash leaves a prefix
                fd = self._fds.pop(index, None)
                if fd is not None:
                    os.close(fd)
                os.unlink(self.path(index))
                self.shared.discard(index)
                self._unsynced.discard(index)
                self._segments = index
        last = _last(size)
        os.ftruncate(self._for_change(last), size - last * CHUNK_SIZE)
        self.size = size

    def copy_from(self, sources: list[tuple[int, int]]) -> None:
        """Fills segment ``i`` with the first ``length`` bytes of fd ``sources[i]``: copy-up."""
        for index, (src, length) in enumerate(sources):
            _copy(src, self._for_change(index), length)
            self.size += length

    def utime(self, atime_ns: int, mtime_ns: int) -> None:
        os.utime(self._for_change(0), ns=(atime_ns, mtime_ns))

    def sync(self, datasync: bool) -> None:
        """Makes what was written since the last sync durable (several segments at once,
        each through an fd of its own: the open ones may be closed meanwhile)."""
        paths = [self.path(i) for i in sorted(self._unsynced) if i < self._segments]
        sync = os.fdatasync if datasync else os.fsync

        def one(path: str) -> None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                sync(fd)
            finally:
                os.close(fd)

        if len(paths) <= 2:
            for path in paths:
                one(path)
        else:  # the filesystem's journal merges concurrent syncs into few commits
            with ThreadPoolExecutor(min(_SYNC_THREADS, len(paths))) as pool:
                list(pool.map(one, paths))
        self._unsynced.clear()

    # -- committing ----------------------------------------------------------------------
    def freeze(self) -> tuple[list[tuple[int, str]], int]:
        """([(fd, path) of each segment of the content], the size) for a commit's worker,
        which owns the fds; those inodes never change from now on (copy on write)."""
        count = -(-self.size // CHUNK_SIZE)
        segments: list[tuple[int, str]] = []
        try:
            for index in range(count):
                segments.append((os.open(self.path(index), os.O_RDONLY | os.O_CLOEXEC), self.path(index)))
                self.shared.add(index)
        except BaseException:
            for fd, _ in segments:
                os.close(fd)
            raise
        return segments, self.size

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Closes the open segments (reopened on the next use)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def unlink(self) -> None:
        self.close()
        for index in range(self._segments - 1, -1, -1):
            try:
                os.unlink(self.path(index))
            except FileNotFoundError:
                pass
        self._segments = 0
