"""A mount's private copy of one file's content: sparse, copied up by chunk.

A file the mount wrote lives in the overlay's scratch directory as an *anchor* and
*segments*. Chunk ``i`` of the file (bytes ``[i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE)``) is
one of three things:

- a **segment**, ``f12.<i>``: the mount's own bytes for that chunk, at most one chunk
  long; past its end (and in its own holes) the chunk reads as zeros;
- a **base chunk**: the committed blob the file had when the mount opened it for
  writing, not copied: opening a 10 GiB file for writing copies nothing, appending a line
  copies the last chunk only;
- a **hole**: zeros, costing nothing. ``truncate -s 1T`` writes no file; writing zeros
  into a hole (glibc's ``posix_fallocate`` does) leaves it a hole.

The anchor ``f12`` records what the segments cannot: the base chunks and the size the
file was last truncated to (``floor``); its mtime is the file's. It is rewritten (temp
file, rename) when the file is copied up or truncated, never on a write: the file's size
is ``max(floor, end of the last segment)``, which writes keep true by themselves. So a
crash loses nothing the daemon received (``volfs recover`` reads the anchor back).

Every change is one rename away from done, so a crash (``kill -9``) at any instant leaves
the file as it was before the request or after it, never a mix:

- a copy-up copies the base chunk to a temp name and renames it to the segment's: a
  segment beats a base chunk, so it must never exist half-copied;
- a truncate that shrinks the file takes several steps (segments past the new end to
  remove, one to cut), so the anchor it writes first also says *cut*: recovery finishes
  whatever steps the crash left undone. Once a write reaches past the new end, the mark
  would cut that write too, so that write clears it first (one more anchor write, only
  for the first write past the end of a file shrunk since it was last copied up).

A segment that may be linked into the blob store is *shared*: its bytes are a blob's and
must never change again. Every change to a shared segment first copies it to a new inode
and renames that over the segment's name; the blob keeps the old inode. :meth:`freeze`
marks segments shared and opens them, on the loop, before a commit hashes them in a
worker thread, so the worker hashes and links inodes nothing will change under it.

Not thread-safe: the trio loop owns every ScratchFile; a commit's worker gets only the
file descriptors :meth:`freeze` opened for it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from volfs.blobs import Digest
from volfs.config import CHUNK_SIZE, MAX_FILE_SIZE
from volfs.core.tree import Chunks

log = logging.getLogger(__name__)

_SYNC_THREADS = 16
#: Scratch files let go whose files the remover thread has still to remove, at most.
REMOVALS_PENDING = 1024
#: Segments a file keeps open at once: a 10 GiB file has 1,280 of them.
MAX_OPEN_SEGMENTS = 8

ANCHOR_MAGIC = b"VS3\n"
_ANCHOR_HEAD = struct.Struct("<QIB")  # floor, number of base chunks, flags
_ANCHOR_CHUNK = struct.Struct("<Q16s")
#: The file was shrunk to ``floor``: segments past it, and past it in the last one, are gone.
ANCHOR_CUT = 1
#: Format 2 anchors (no flags) are still read: a crashed overlay of an older daemon.
_ANCHOR_MAGIC_2 = b"VS2\n"
_ANCHOR_HEAD_2 = struct.Struct("<QI")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_SYNC_FILE_RANGE_WRITE = 2


class _WriteBack:
    """Starts the disk writes of a segment the moment it is full, in one thread of its own.

    A sequential writer fills segments one after the other; left alone, their dirty pages
    wait for the fsync (or the kernel's flusher) and the disk writes only start once the
    transfer is over. ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts them while the next
    segment arrives, so the fsync finds little left. It only starts writeback: durability
    is still :meth:`ScratchFile.sync`'s, and nothing waits for this thread. It may block on
    a busy disk, which is why it is not called on the loop; it gets a duplicate fd, since
    the segment's own may be closed meanwhile.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def start(self, fd: int) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="volfs-writeback")
        self._pool.submit(self._write_back, os.dup(fd))

    @staticmethod
    def _write_back(fd: int) -> None:
        try:
            _libc.sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
        finally:
            os.close(fd)


WRITE_BACK = _WriteBack()


class _Remover:
    """Removes the files of scratch files let go (unlinked and forgotten, or committed) in
    one thread of its own, in the order given.

    Nothing waits for them: the kernel's FORGET has no reply, and a commit's files are
    blobs by then. On the loop, the two ext4 unlinks of a small file took a quarter of the
    daemon's time in an ``rm`` of many files. A crash before they are gone leaves what a
    crash before the FORGET always left: files no journal record names, which a later
    namespace numbers past (``Namespace._seq``) and recovery removes with the overlay.
    :meth:`wait` is for whoever needs them gone (closing, a commit run to its end).
    At most :data:`REMOVALS_PENDING` wait their turn: past that, a removal waits for a
    place (as it used to wait for its unlinks), so an ``rm -rf`` of millions of files
    queues no more than that however far the disk falls behind.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._places = threading.BoundedSemaphore(REMOVALS_PENDING)
        self._last: Future[None] | None = None

    def remove(self, paths: list[str]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="volfs-remove")
        self._places.acquire()
        self._last = self._pool.submit(self._remove, paths)

    def _remove(self, paths: list[str]) -> None:
        try:
            for path in paths:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:  # nobody to tell but the log: only space is lost
                    log.warning("could not remove scratch file %s: %s", path, exc)
        finally:
            self._places.release()

    def wait(self) -> None:
        """Returns once every file handed over so far is gone (one thread: in order)."""
        if self._last is not None:
            self._last.result()


REMOVER = _Remover()

BlobOpener = Callable[[Digest], int]
"""Returns an fd of a committed blob, verified, that the caller must not close."""
SegmentSink = Callable[[int, int], None]
"""Given (an fd it owns, length): a full segment a sequential writer left behind, whose
bytes a commit will likely store as they are (distributed mode uploads them ahead)."""


@dataclass
class ScratchStats:
    """What scratch files cost, for the mount's statistics and for tests that count it."""

    chunks_copied: int = 0
    bytes_copied: int = 0
    anchors_written: int = 0
    #: Segments whose disk writes were started as soon as they were full (``_WriteBack``).
    early_writebacks: int = 0
    #: Full segments of sequential writers handed to the blob store ahead of a commit.
    segments_sent_ahead: int = 0


def chunk_span(size: int, index: int) -> int:
    """How many bytes of a file of ``size`` chunk ``index`` covers."""
    return max(0, min(CHUNK_SIZE, size - index * CHUNK_SIZE))


def _copy(src: int, dst: int, length: int) -> int:
    copied = 0
    while copied < length:
        n = os.copy_file_range(src, dst, length - copied, copied, copied)
        if n == 0:
            break
        copied += n
    return copied


def _all_zero(data: bytes | memoryview) -> bool:
    # The first byte settles it for almost all real data, without a scan.
    return data[0] == 0 and data[-1] == 0 and bytes(data).count(0) == len(data)


def has_data(fd: int) -> bool:
    """False if the file is all holes (a segment made only of zeros written into holes)."""
    try:
        os.lseek(fd, 0, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return False
        raise
    return True


def check_size(size: int) -> None:
    """EFBIG past the largest file (the kernel's own limit for FUSE files)."""
    if size > MAX_FILE_SIZE:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))


class ScratchFile:
    __slots__ = (
        "_cut",
        "_fds",
        "_last_end",
        "_on_full",
        "_open_blob",
        "_seg_end",
        "_sent_ahead",
        "_stats",
        "_times",
        "_unsynced",
        "base",
        "directory",
        "floor",
        "name",
        "segments",
        "shared",
        "size",
    )

    def __init__(
        self,
        directory: str,
        name: str,
        open_blob: BlobOpener,
        stats: ScratchStats,
        on_full: SegmentSink | None = None,
    ) -> None:
        self.directory = directory
        self.name = name
        self._open_blob = open_blob
        self._stats = stats
        self._on_full = on_full
        #: Segments handed to ``on_full`` since the last commit froze them: once each.
        self._sent_ahead: set[int] = set()
        self._last_end = -1  # where the last write ended: the next continues a stream?
        #: The file's length.
        self.size = 0
        #: The size the file was last truncated (or copied up) to: the anchor's record.
        self.floor = 0
        #: Committed chunks this file still has and has not copied: index -> digest.
        self.base: dict[int, Digest] = {}
        #: Indexes of the chunks that have a segment file.
        self.segments: set[int] = set()
        #: Indexes of segments whose inode may be a blob too: copied before any change.
        self.shared: set[int] = set()
        self._fds: dict[int, int] = {}
        self._unsynced: set[int] = set()
        self._seg_end = 0  # end of the last segment's bytes within the file
        self._times: tuple[int, int] | None = None  # (atime, mtime) the anchor carries
        self._cut = False  # the anchor says ANCHOR_CUT

    @classmethod
    def create(
        cls,
        directory: str,
        name: str,
        open_blob: BlobOpener,
        stats: ScratchStats,
        *,
        base: Chunks = (),
        size: int = 0,
        times: tuple[int, int] | None = None,
        on_full: SegmentSink | None = None,
    ) -> ScratchFile:
        """A new scratch file: empty, or the committed content ``base`` of ``size`` bytes
        (nothing is copied until a write touches a chunk). ``on_full`` is told of each
        segment a sequential writer fills (see :meth:`pwrite`)."""
        scratch = cls(directory, name, open_blob, stats, on_full)
        scratch.base = dict(base)
        scratch.size = scratch.floor = size
        scratch._times = times
        if base or size:
            scratch._write_anchor(exclusive=True)
        else:  # empty: an empty anchor says so without a data block (a full disk allows it)
            os.close(
                os.open(scratch.path(), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            )
            if times is not None:
                os.utime(scratch.path(), ns=times)
        return scratch

    @classmethod
    def existing(
        cls,
        directory: str,
        name: str,
        open_blob: BlobOpener,
        stats: ScratchStats,
        listing: list[str] | None = None,
        on_full: SegmentSink | None = None,
    ) -> ScratchFile:
        """A scratch file found again by recovery (an empty one if it is missing).

        ``listing``: the scratch directory's names, when the caller recovers many files.
        """
        scratch = cls(directory, name, open_blob, stats, on_full)
        upgraded = scratch._upgrade_old_layout()
        try:
            with open(scratch.path(), "rb") as f:
                raw = f.read()
            st = os.stat(scratch.path())
            scratch._times = (st.st_atime_ns, st.st_mtime_ns)
        except FileNotFoundError:
            raw = b""
        pos = 0
        if raw.startswith(ANCHOR_MAGIC):
            floor, count, flags = _ANCHOR_HEAD.unpack_from(raw, len(ANCHOR_MAGIC))
            pos = len(ANCHOR_MAGIC) + _ANCHOR_HEAD.size
            scratch._cut = bool(flags & ANCHOR_CUT)
        elif raw.startswith(_ANCHOR_MAGIC_2):
            floor, count = _ANCHOR_HEAD_2.unpack_from(raw, len(_ANCHOR_MAGIC_2))
            pos = len(_ANCHOR_MAGIC_2) + _ANCHOR_HEAD_2.size
        if pos:
            scratch.floor = floor
            for index, digest in _ANCHOR_CHUNK.iter_unpack(
                raw[pos : pos + count * _ANCHOR_CHUNK.size]
            ):
                scratch.base[index] = Digest(digest.hex())
        names = listing if listing is not None else os.listdir(directory)
        for index in scratch._indexes(names):
            scratch.segments.add(index)
            scratch.base.pop(index, None)
            if os.stat(scratch.path(index)).st_nlink > 1:  # adopted by a commit: a blob's too
                scratch.shared.add(index)
        if scratch._cut:  # a shrink the crash may have interrupted: finish it (idempotent)
            scratch._finish_cut(set(scratch.segments))
            scratch.close()
        for index in scratch.segments:
            if size := os.stat(scratch.path(index)).st_size:
                scratch._seg_end = max(scratch._seg_end, index * CHUNK_SIZE + size)
        scratch.size = max(scratch.floor, scratch._seg_end)
        if upgraded or not os.path.exists(scratch.path()):
            scratch._write_anchor()
        return scratch

    def _indexes(self, names: list[str]) -> set[int]:
        """The chunk indexes of this file's segments among a directory's ``names``."""
        prefix = self.name + "."
        return {
            int(entry[len(prefix) :])
            for entry in names
            if entry.startswith(prefix) and entry[len(prefix) :].isdigit()
        }

    def _upgrade_old_layout(self) -> bool:
        """Overlays of earlier versions kept chunk 0 in ``f12`` itself (and, before that,
        the whole file there): move it to ``f12.0``, splitting a whole-file copy into
        segments from the end (a crash part-way is redone). Their copies were whole, so
        they have no base chunks."""
        first = self.path()
        try:
            with open(first, "rb") as f:
                if f.read(len(ANCHOR_MAGIC)) in (ANCHOR_MAGIC, _ANCHOR_MAGIC_2):
                    return False
            size = os.stat(first).st_size
        except FileNotFoundError:
            size = 0
        zero = self.path(0)
        if size and not os.path.exists(zero):
            os.rename(first, zero)  # an empty f12 is an empty file in either layout
        if not os.path.exists(zero):
            return size > 0
        size = os.stat(zero).st_size
        if size <= CHUNK_SIZE:
            return True
        fd = os.open(zero, os.O_RDWR | os.O_CLOEXEC)
        try:
            for index in range((size - 1) // CHUNK_SIZE, 0, -1):
                start = index * CHUNK_SIZE
                segment = os.open(
                    self.path(index), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
                )
                try:
                    os.write(segment, os.pread(fd, min(CHUNK_SIZE, size - start), start))
                    os.fsync(segment)
                finally:
                    os.close(segment)
                os.ftruncate(fd, start)
                size = start
        finally:
            os.close(fd)
        return True

    def path(self, index: int | None = None) -> str:
        """The anchor's path, or segment ``index``'s."""
        first = os.path.join(self.directory, self.name)
        return first if index is None else f"{first}.{index}"

    def mtime_ns(self) -> int:
        return os.stat(self.path()).st_mtime_ns

    def allocated(self) -> int:
        """Bytes of the file that are not holes (for st_blocks: sparse files look sparse).

        Asked on every getattr: segments and base chunks are disjoint and inside the file,
        and all of them are whole chunks but the last."""
        if self.size <= 0:
            return 0
        last = (self.size - 1) // CHUNK_SIZE
        full = (len(self.segments) + len(self.base)) * CHUNK_SIZE
        if last in self.segments or last in self.base:
            return full - (CHUNK_SIZE - chunk_span(self.size, last))
        return full

    # -- the anchor -----------------------------------------------------------------------
    def _write_anchor(self, *, exclusive: bool = False) -> None:
        base = sorted(self.base.items())
        data = b"".join(
            [
                ANCHOR_MAGIC,
                _ANCHOR_HEAD.pack(self.floor, len(base), ANCHOR_CUT if self._cut else 0),
                *(_ANCHOR_CHUNK.pack(i, bytes.fromhex(d)) for i, d in base),
            ]
        )
        if exclusive:  # a new file: its name is new too
            fd = os.open(self.path(), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            except BaseException:
                os.unlink(self.path())
                raise
            finally:
                os.close(fd)
        else:
            tmp = self.path() + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, self.path())
        if self._times is not None:
            os.utime(self.path(), ns=self._times)
        self._stats.anchors_written += 1
        self._unsynced.add(-1)

    # -- reading ------------------------------------------------------------------------
    def _fd(self, index: int) -> int:
        fd = self._fds.get(index)
        if fd is None:
            fd = os.open(
                self.path(index),
                (os.O_RDONLY if index in self.shared else os.O_RDWR) | os.O_CLOEXEC,
            )
            self._keep(index, fd)
        return fd

    def _keep(self, index: int, fd: int) -> None:
        """Remembers an open segment, closing the oldest beyond MAX_OPEN_SEGMENTS (a
        later sync reopens what it needs: fsync of any fd flushes the inode)."""
        while len(self._fds) >= MAX_OPEN_SEGMENTS:
            oldest = next(iter(self._fds))
            os.close(self._fds.pop(oldest))
        self._fds[index] = fd

    def _read_chunk(self, index: int, count: int, within: int) -> bytes:
        if index in self.segments:
            data = os.pread(self._fd(index), count, within)
        elif index in self.base:
            data = os.pread(self._open_blob(self.base[index]), count, within)
        else:
            return bytes(count)
        return data if len(data) == count else data.ljust(count, b"\0")

    def pread(self, size: int, offset: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        index, within = divmod(offset, CHUNK_SIZE)
        if end - offset <= CHUNK_SIZE - within:  # the common case: inside one chunk
            return self._read_chunk(index, end - offset, within)
        parts = []
        while offset < end:
            index, within = divmod(offset, CHUNK_SIZE)
            count = min(end - offset, CHUNK_SIZE - within)
            parts.append(self._read_chunk(index, count, within))
            offset += count
        return b"".join(parts)

    # -- changing -----------------------------------------------------------------------
    def _for_change(self, index: int) -> int:
        """A writable fd of segment ``index``: copied up from its base chunk or created
        (for a hole) if it has none, unshared first."""
        if index in self.shared:
            self._unshare(index)
        fd = self._fds.get(index)
        if fd is None:
            if index in self.segments:
                fd = os.open(self.path(index), os.O_RDWR | os.O_CLOEXEC)
            elif index in self.base:
                fd = self._copy_up(index, chunk_span(self.size, index))
            else:  # a hole: an empty segment reads as the same zeros
                fd = os.open(
                    self.path(index), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
                )
                self.segments.add(index)
            self._keep(index, fd)
        self._unsynced.add(index)
        return fd

    def _copy_up(self, index: int, length: int, *, name: str | None = None) -> int:
        """Copies ``length`` bytes of base chunk ``index`` to a new segment and returns its
        fd. The copy is made under a temp name and renamed into place (to ``name`` if
        given, else the segment's own): a half-copied segment would hide the base chunk."""
        digest = self.base[index]
        target = name or self.path(index)
        tmp = self.path(index) + ".up"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            copied = _copy(self._open_blob(digest), fd, length)
            os.rename(tmp, target)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        if name is None:
            del self.base[index]
            self.segments.add(index)
        self._stats.chunks_copied += 1
        self._stats.bytes_copied += copied
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

    def pwrite(self, data: bytes, offset: int) -> int:
        if not data:
            return 0
        check_size(offset + len(data))
        if self._cut and offset + len(data) > self.floor:
            self._cut = False  # else a crash would cut what this writes past the floor
            self._write_anchor()
        view = memoryview(data)
        written = 0
        grew_in_holes = False
        while written < len(data):
            index, within = divmod(offset + written, CHUNK_SIZE)
            count = min(len(data) - written, CHUNK_SIZE - within)
            piece = view[written : written + count]
            if index not in self.segments and index not in self.base and _all_zero(piece):
                written += count  # zeros into a hole: it stays a hole
                grew_in_holes = True
                continue
            fd = self._for_change(index)
            n = os.pwrite(fd, piece, within)
            if n:
                self._seg_end = max(self._seg_end, index * CHUNK_SIZE + within + n)
            if within + n == CHUNK_SIZE:  # the segment is full: a sequential writer moves on
                WRITE_BACK.start(fd)
                self._stats.early_writebacks += 1
                if offset == self._last_end:
                    self._segment_done(index, fd)
            written += n
            if n < count:
                break
        end = offset + written
        self._last_end = end
        if end > self.size:
            self.size = end
            if grew_in_holes and end > self._seg_end:
                # Nothing on disk says how long the file now is: the anchor does.
                self.floor = end
                self._write_anchor()
        return written

    def _segment_done(self, index: int, fd: int) -> None:
        """Tells ``on_full`` of a segment a stream of writes just filled, once until the
        next commit. Only a stream's: a random writer that happens to write a chunk's last
        bytes will likely change it again, and its upload ahead would be wasted."""
        if self._on_full is None or index in self._sent_ahead:
            return
        try:
            ahead = os.dup(fd)
        except OSError:  # out of fds: the hint is not worth failing the write for
            return
        self._sent_ahead.add(index)
        self._on_full(ahead, CHUNK_SIZE)
        self._stats.segments_sent_ahead += 1

    def truncate(self, size: int) -> None:
        check_size(size)
        if size < self.size:
            keep = -(-size // CHUNK_SIZE)  # chunks [0, keep) hold bytes below ``size``
            partial = keep - 1 if keep and size % CHUNK_SIZE else None
            if partial is not None and partial in self.base:
                # The cut chunk keeps its head only: copy just that (the blob stays intact),
                # aside, until the anchor below says the file is cut.
                os.close(
                    self._copy_up(partial, size - partial * CHUNK_SIZE, name=self._head(partial))
                )
                del self.base[partial]
            self.base = {i: d for i, d in self.base.items() if i < keep}
            self.floor = size
            self._cut = True
            self._write_anchor()  # the truncate's commit point: recovery finishes the rest
            self._finish_cut(set(self.segments))
            self._seg_end = min(self._seg_end, size)
        elif size > self.size:
            self.floor = size
            self._cut = False
            self._write_anchor()
        self.size = size

    def _head(self, index: int) -> str:
        """Where a truncate copies the head of the base chunk it cuts, until it is cut."""
        return self.path(index) + ".head"

    def _finish_cut(self, indexes: set[int]) -> None:
        """The steps of a shrink to ``floor`` after its anchor: the copied head of a cut
        base chunk put in place, segments past the end removed, the last one cut. Each
        step can be done again, so recovery calls this for a crash part-way.

        ``indexes``: the segments there are."""
        keep = -(-self.floor // CHUNK_SIZE)
        partial = keep - 1 if keep and self.floor % CHUNK_SIZE else None
        if partial is not None:
            head = self._head(partial)
            if os.path.exists(head):
                os.rename(head, self.path(partial))
                indexes.add(partial)
                self.segments.add(partial)
                self._unsynced.add(partial)
        for index in sorted((i for i in indexes if i >= keep), reverse=True):
            open_fd = self._fds.pop(index, None)
            if open_fd is not None:
                os.close(open_fd)
            try:
                os.unlink(self.path(index))
            except FileNotFoundError:
                pass
            self.segments.discard(index)
            self.shared.discard(index)
            self._unsynced.discard(index)
        if partial is not None and partial in indexes:
            cut = self.floor - partial * CHUNK_SIZE
            path = self.path(partial)
            if os.stat(path).st_size > cut:
                if partial in self.shared:
                    self._unshare(partial)  # the blob keeps its bytes
                os.truncate(path, cut)
                self._unsynced.add(partial)

    def utime(self, atime_ns: int, mtime_ns: int) -> None:
        self._times = (atime_ns, mtime_ns)
        os.utime(self.path(), ns=self._times)

    def sync(self, datasync: bool) -> None:
        """Makes what was written since the last sync durable (several segments at once,
        each through an fd of its own: the open ones may be closed meanwhile)."""
        paths = [self.path(i) for i in sorted(self._unsynced) if i in self.segments]
        if -1 in self._unsynced:
            paths.append(self.path())
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
        if -1 in self._unsynced:  # the anchor was renamed into place: its directory too
            fd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._unsynced.clear()

    # -- committing ----------------------------------------------------------------------
    def freeze(self) -> tuple[list[tuple[int, int, str]], Chunks, int]:
        """For a commit's worker: ([(index, fd, path) of each segment], the base chunks,
        the size). The worker owns the fds; those inodes never change from now on (copy
        on write)."""
        segments: list[tuple[int, int, str]] = []
        try:
            for index in sorted(self.segments):
                if index * CHUNK_SIZE >= self.size:
                    continue
                segments.append(
                    (index, os.open(self.path(index), os.O_RDONLY | os.O_CLOEXEC), self.path(index))
                )
                self.shared.add(index)
                self._sent_ahead.discard(index)  # a change from now on is new content
        except BaseException:
            for _, fd, _ in segments:
                os.close(fd)
            raise
        return segments, tuple(sorted(self.base.items())), self.size

    def unfreeze(self, indexes: frozenset[int]) -> None:
        """Segments a commit froze but did not link as blobs may change in place again
        (their fds kept read-only while they were shared are closed: reopened writable)."""
        for index in indexes & self.shared:
            self.shared.discard(index)
            fd = self._fds.pop(index, None)
            if fd is not None:
                os.close(fd)

    def open_segments(self) -> int:
        """How many fds a :meth:`freeze` would hold."""
        return len(self.segments)

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Closes the open segments (reopened on the next use)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def unlink(self) -> None:
        """Removes the scratch file (in the background: :data:`REMOVER`), the anchor last."""
        self.close()
        REMOVER.remove([*(self.path(i) for i in sorted(self.segments, reverse=True)), self.path()])
        self.segments.clear()
