"""The local-disk blob backend: ``<root>/ab/cdef…`` files, read-only on disk.

Writes go to a temp file in ``<root>/../tmp``, are fsynced, then renamed into place and
the fan-out directory fsynced: a blob that exists under its name is complete and durable.
Several processes may write the same blob at once; the rename makes the last one win
with identical bytes.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

from volfs.blobs import Digest, digest_of
from volfs.errors import CorruptionError, PathNotFoundError, from_os_error

log = logging.getLogger(__name__)


class LocalBlobStore:
    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        #: Digests this process has verified by reading the whole blob once; blobs are
        #: immutable, so later partial reads of them need not hash again.
        self._verified: set[Digest] = set()
        #: Counters the tests assert on where cost matters.
        self.stats = {"blobs_written": 0, "bytes_written": 0, "blobs_read": 0}

    def path(self, digest: Digest) -> Path:
        return self.root / digest[:2] / digest[2:]

    def has(self, digest: Digest) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: Digest) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise PathNotFoundError(f"blob {digest} is missing from the store") from None

    def put(self, data: bytes) -> Digest:
        digest = digest_of(data)
        if not self.has(digest):
            self._write(digest, data)
        return digest

    def put_file(self, path: str | os.PathLike[str], digest: Digest) -> None:
        """Adopts a local file whose digest the caller computed (copying its bytes)."""
        if self.has(digest):
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
            raise CorruptionError(f"blob {digest} is missing from the store") from None
        self.stats["blobs_read"] += 1
        if digest_of(data) != digest:
            log.error("blob %s fails its digest check (%d bytes on disk)", digest, len(data))
            raise CorruptionError(f"blob {digest} is damaged (digest mismatch)")
        self._verified.add(digest)
        return data

    def open_verified(self, digest: Digest) -> int:
        """An O_RDONLY fd of the blob, verified once per process before first use."""
        if digest not in self._verified:
            self.get(digest)
        try:
            return os.open(self.path(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CorruptionError(f"blob {digest} is missing from the store") from None

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
