"""The local-disk blob backend: ``<root>/ab/cdef…`` files, read-only on disk.

Writes go to a temp file in ``<root>/../tmp``, are fsynced, then renamed into place and
the fan-out directory fsynced: a blob that exists under its name is complete and durable.
Several processes may write the same blob at once; the rename makes the last one win
with identical bytes.

A :class:`LocalBlobBatch` does the same for many blobs at once (a commit's): it copies each
range of a file into a temp file in the kernel (``copy_file_range``), fsyncs all of them
concurrently (the filesystem's journal merges concurrent fsyncs into few commits; measured
here: 2,000 small files 1.0 s one by one, 0.28 s from 32 threads), renames them into place,
and fsyncs the fan-out directories it touched. ``syncfs`` would be fewer calls but flushes
everything dirty on the disk, scratch files included (a 1-file commit took 71 ms).

A commit's scratch segments (scratch.py) are *adopted* rather than copied: a segment that
is exactly one new blob is hard-linked into the temp dir (``add_range(adopt=True)``), so
committing 1 GiB written in a mount costs a hash and 128 links, not a second 1 GiB write.
The scratch side guarantees the inode never changes again (copy on write).

A writer that finds its blob already stored *freshens* it (sets its mtime to now) instead
of writing it again: ``volfs gc`` deletes only blobs older than its grace window, so a blob
about to be referenced again is not collected meanwhile. Freshening holds ``<root>/.lock``
shared and gc's delete holds it exclusive, so the two never interleave (maintenance/gc.py).

Implements :class:`volfs.blobs.BlobStore` (``reads_are_local`` True, no ``bucket``) and is,
in distributed mode, the S3 backend's cache (s3.py composes one).

Must not: know of buckets, trees or volumes.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from volfs.blobs import Digest, ObjectStore, digest_of
from volfs.errors import CorruptionError, PathNotFoundError, from_os_error

log = logging.getLogger(__name__)


class LocalBlobStore:
    """The :class:`volfs.blobs.BlobStore` of an embedded store (module docstring)."""

    #: Capabilities (see the interface): a read is a read of the blob's own file, and the
    #: files here are the blobs, not a cache of a bucket.
    reads_are_local: bool = True
    bucket: ObjectStore | None = None

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        #: Digests this process has verified by reading the whole blob once; blobs are
        #: immutable, so later partial reads of them need not hash again.
        self._verified: set[Digest] = set()
        self._reported: set[Digest] = set()  # damaged blobs already logged
        self._lock_path = self.root / ".lock"
        #: Counters the tests assert on where cost matters.
        self.stats = {"blobs_written": 0, "blobs_adopted": 0, "bytes_written": 0, "blobs_read": 0}

    def path(self, digest: Digest) -> Path:
        return self.root / digest[:2] / digest[2:]

    def has(self, digest: Digest) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: Digest) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise PathNotFoundError(f"blob {digest} is missing from the store") from None

    def _locked(self, how: int) -> int:
        """An fd holding ``flock(how)`` on the gc lock; closing it releases the lock."""
        fd = os.open(self._lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, how)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def freshen(self, digest: Digest) -> bool:
        """True if the blob is stored; its mtime is now, so gc's grace window covers it."""
        fd = self._locked(fcntl.LOCK_SH)
        try:
            os.utime(self.path(digest))
            return True
        except FileNotFoundError:
            return False
        except PermissionError:
            return self.has(digest)  # not ours to touch: as good as it gets
        finally:
            os.close(fd)

    def delete_stale(self, digests: Iterable[Digest], cutoff: float) -> list[tuple[Digest, int]]:
        """Deletes the blobs last written or freshened before ``cutoff``; returns (digest, size).

        Under the exclusive lock: no writer can freshen a blob between the check and the
        unlink (for gc; the caller knows nothing references them).
        """
        deleted = []
        fd = self._locked(fcntl.LOCK_EX)
        try:
            for digest in digests:
                path = self.path(digest)
                try:
                    st = os.lstat(path)
                    if st.st_mtime >= cutoff:
                        continue
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                self._verified.discard(digest)
                deleted.append((digest, st.st_size))
        finally:
            os.close(fd)
        return deleted

    def put(self, data: bytes) -> Digest:
        digest = digest_of(data)
        if not self.freshen(digest):
            self._write(digest, data)
        return digest

    def put_file(self, path: str | os.PathLike[str], digest: Digest) -> None:
        """Adopts a local file whose digest the caller computed (copying its bytes)."""
        if self.freshen(digest):
            return
        with open(path, "rb") as f:
            data = f.read()
        if digest_of(data) != digest:
            raise CorruptionError(f"{path} changed while it was being stored")
        self._write(digest, data)

    def _write(self, digest: Digest, data: bytes) -> None:
        final = self.path(digest)
        try:
            final.parent.mkdir(mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="blob-")
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fchmod(fd, 0o444)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(tmp)
                raise
            os.close(fd)
            os.rename(tmp, final)
            dir_fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise from_os_error(exc, f"writing blob {digest}") from exc
        self.stats["blobs_written"] += 1
        self.stats["bytes_written"] += len(data)

    def get(self, digest: Digest) -> bytes:
        try:
            with open(self.path(digest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self._report(digest, "blob %s is missing from the store", digest)
            raise CorruptionError(f"blob {digest} is missing from the store") from None
        self.stats["blobs_read"] += 1
        if digest_of(data) != digest:
            self._report(
                digest, "blob %s fails its digest check (%d bytes on disk)", digest, len(data)
            )
            raise CorruptionError(f"blob {digest} is damaged (digest mismatch)")
        self._verified.add(digest)
        return data

    def mark_verified(self, digest: Digest) -> None:
        """The caller hashed the blob's bytes as it stored them: no need to read it back."""
        self._verified.add(digest)

    def _report(self, digest: Digest, message: str, *args: object) -> None:
        """One ERROR line per damaged blob and process: a damaged file read over and over
        (the kernel retries, readahead) must not flood a daemon's log."""
        if digest not in self._reported:
            self._reported.add(digest)
            log.error(message, *args)

    def open_verified(self, digest: Digest) -> int:
        """An O_RDONLY fd of the blob, verified once per process before first use."""
        if digest not in self._verified:
            self.get(digest)
        try:
            return os.open(self.path(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._report(digest, "blob %s is missing from the store", digest)
            raise CorruptionError(f"blob {digest} is missing from the store") from None

    def upload_ahead(self, fd: int, length: int) -> None:
        """Nothing to upload: the blobs are here (the interface)."""
        os.close(fd)

    def delete(self, digest: Digest) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        self._verified.discard(digest)

    def digests(self) -> Iterator[Digest]:
        for fan in sorted(os.listdir(self.root)):
            if len(fan) != 2:
                continue
            for rest in sorted(os.listdir(self.root / fan)):
                yield Digest(fan + rest)

    def cached_bytes(self) -> int:
        """Bytes of the blob files under the root."""
        total = 0
        for fan in os.scandir(self.root):
            if len(fan.name) == 2 and fan.is_dir():
                for entry in os.scandir(fan.path):
                    try:
                        total += entry.stat().st_size
                    except FileNotFoundError:
                        pass
        return total

    def drop_cached(self, digests: Iterable[Digest]) -> None:
        """Nothing to drop: these files are the blobs themselves, not copies (the interface)."""

    def batch(self) -> LocalBlobBatch:
        return LocalBlobBatch(self)


class LocalBlobBatch:
    """Blobs added together and made durable together by :meth:`flush`.

    Until ``flush`` returns, nothing added is visible under its name; after it, all is
    durable. Digests may repeat (dedup within the batch and against the store).
    """

    def __init__(self, store: LocalBlobStore) -> None:
        self.store = store
        self._pending: dict[Digest, str] = {}

    @property
    def new_blobs(self) -> int:
        """How many blobs this batch wrote (or linked) so far: those the store lacked."""
        return len(self._pending)

    def add_range(
        self, fd: int, offset: int, length: int, *, adopt: str | None = None
    ) -> tuple[Digest, int]:
        """The blob of up to ``length`` bytes of ``fd`` at ``offset``, and its real length
        (shorter if the file shrank meanwhile). The bytes are read once, to hash them.

        ``adopt``: the path ``fd`` was opened from, whose inode the caller promises will
        never change again (scratch.py's shared segments); if the file is exactly this
        blob, it is hard-linked in, not copied.
        """
        data = os.pread(fd, length, offset)
        if not data:
            return Digest(""), 0
        digest = digest_of(data)
        if digest in self._pending or self.store.freshen(digest):
            return digest, len(data)
        if adopt is not None and offset == 0 and os.fstat(fd).st_size == len(data):
            tmp = self._link(fd, adopt)
            if tmp is not None:
                self._pending[digest] = tmp
                self.store.stats["blobs_written"] += 1
                self.store.stats["blobs_adopted"] += 1
                return digest, len(data)
        tmp = None
        try:
            tmp_fd, tmp = tempfile.mkstemp(dir=self.store.tmp_dir, prefix="blob-")
            try:
                copied = 0
                while copied < len(data):
                    n = os.copy_file_range(fd, tmp_fd, len(data) - copied, offset + copied)
                    if n == 0:  # the source shrank under us: store what we hashed
                        os.pwrite(tmp_fd, data[copied:], copied)
                        break
                    copied += n
                os.fchmod(tmp_fd, 0o444)
            finally:
                os.close(tmp_fd)
            if os.path.getsize(tmp) != len(data) or digest_of(_read(tmp)) != digest:
                # The source changed between the hash and the copy: keep the hashed bytes.
                os.chmod(tmp, 0o600)
                with open(tmp, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o444)
        except OSError as exc:
            if tmp is not None:  # a partial temp file would hold space on a full disk until gc
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            raise from_os_error(exc, f"writing blob {digest}") from exc
        self._pending[digest] = tmp
        self.store.stats["blobs_written"] += 1
        self.store.stats["bytes_written"] += len(data)
        return digest, len(data)

    def _link(self, fd: int, path: str) -> str | None:
        """A new name in the temp dir for ``fd``'s inode, found by ``path``, its mtime now
        (gc's grace window counts from it); None where ``path`` names another inode by now
        or cannot be linked (another filesystem): the caller copies instead."""
        tmp = os.path.join(self.store.tmp_dir, f"blob-{secrets.token_hex(12)}")
        try:
            os.link(path, tmp)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.ENOENT, errno.EMLINK, errno.EEXIST):
                return None
            raise from_os_error(exc, "adopting a blob") from exc
        here, linked = os.fstat(fd), os.stat(tmp)
        if (here.st_dev, here.st_ino) != (linked.st_dev, linked.st_ino):
            os.unlink(tmp)  # the name was given a new inode since the caller opened it
            return None
        os.utime(tmp)
        os.chmod(tmp, 0o444)
        return tmp

    def flush(self) -> None:
        if not self._pending:
            return
        try:
            _fsync_all(list(self._pending.values()))
            directories = set()
            for digest, tmp in self._pending.items():
                final = self.store.path(digest)
                final.parent.mkdir(mode=0o700, exist_ok=True)
                os.rename(tmp, final)
                directories.add(str(final.parent))
            _fsync_all(sorted(directories))
        except OSError as exc:
            raise from_os_error(exc, "making blobs durable") from exc
        self._pending.clear()

    def discard(self) -> None:
        for tmp in self._pending.values():
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._pending.clear()


FSYNC_THREADS = 32


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_all(paths: list[str]) -> None:
    if len(paths) <= 2:
        for path in paths:
            _fsync_path(path)
        return
    with ThreadPoolExecutor(min(FSYNC_THREADS, len(paths))) as pool:
        list(pool.map(_fsync_path, paths))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
