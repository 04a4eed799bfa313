"""Content-addressed blob store: immutable bytes named by their xxh3-128 digest.

This package owns the interfaces — :class:`BlobStore` (every blob backend),
:class:`BlobBatch` (a commit's blobs, made durable together) and :class:`ObjectStore`
(a bucket of content-addressed objects, as distributed mode's blob store and catalog
share one) — the digest, and the chunking of files into blobs. ``local.py`` is the
local-disk backend, ``s3.py`` the bucket backend with a local cache. It knows nothing of
trees, volumes or FUSE. Every read is verified against the digest: a mismatch raises
:class:`volfs.errors.CorruptionError`, never returns wrong bytes.

Only the composition root (``volfs/store.py``, ``volfs/remote.py``) picks a backend;
what differs between them is declared here as capabilities (``reads_are_local``,
``bucket``), never discovered with ``isinstance``.

Must not: import a backend's client (boto3) here; import anything above the foundation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, NewType, Protocol

import xxhash

from volfs.config import CHUNK_SIZE

Digest = NewType("Digest", str)
"""32 lowercase hex digits: the xxh3-128 of the content."""


def digest_of(data: bytes | memoryview) -> Digest:
    return Digest(xxhash.xxh3_128_hexdigest(data))


class ObjectStore(Protocol):
    """A bucket of immutable objects named by digest, by kind (``"blobs"``, ``"trees"``).

    An object is written once with the bytes its name promises, so no write is ever
    conditional. Failures to reach it raise BackendUnavailableError (one line).
    """

    def describe(self) -> str:
        """Where it is, for messages (``s3://bucket/prefix at http://…``)."""
        ...

    def get(self, kind: str, digest: str) -> bytes | None:
        """The object's bytes, or None if there is no such object."""
        ...

    def head(self, kind: str, digest: str) -> int | None:
        """The object's size, or None if there is no such object."""
        ...

    def put(self, kind: str, digest: str, data: bytes) -> None: ...

    def delete(self, kind: str, digests: Sequence[str]) -> None:
        """Deletes objects (absent ones are not an error); raises if any was refused."""
        ...

    def list(self, kind: str) -> Iterator[tuple[Digest, int, float]]:
        """(digest, size, last-modified time) of every object of ``kind``."""
        ...

    def check(self) -> None:
        """Fails with one line if the bucket cannot be reached."""
        ...


class BlobBatch(Protocol):
    """Blobs added together and made durable together by :meth:`flush`.

    Until ``flush`` returns, nothing added is visible under its name; after it, all is
    durable (and, for a store with a bucket, uploaded). Digests may repeat.
    """

    def add_range(
        self, fd: int, offset: int, length: int, *, adopt: str | None = None
    ) -> tuple[Digest, int]:
        """The blob of up to ``length`` bytes of ``fd`` at ``offset``, and its real length.

        ``adopt``: the path ``fd`` was opened from, whose inode the caller promises will
        never change again; the backend may hard-link it in instead of copying.
        """
        ...

    def flush(self) -> None: ...

    def discard(self) -> None:
        """Drops what was added and not flushed."""
        ...


class BlobStore(Protocol):
    """What every blob backend offers. ``put`` returns only once the blob is durable."""

    # -- capabilities ----------------------------------------------------------------------
    #: True where reading a blob is a read of a local file that is the blob itself (the
    #: local backend): a mount may then read small files inline and let the kernel cache
    #: them. False where a read may fetch from elsewhere first (S3, through its cache).
    reads_are_local: bool

    @property
    def bucket(self) -> ObjectStore | None:
        """The shared object store holding the blobs (distributed mode: the files here are
        this machine's cache), or None: the blob files here are the blobs."""
        ...

    #: Counters the tests assert on where cost matters ("blobs_written", "blobs_read", …).
    stats: dict[str, int]

    # -- blobs -----------------------------------------------------------------------------
    def put(self, data: bytes) -> Digest: ...

    def put_file(self, path: str | os.PathLike[str], digest: Digest) -> None:
        """Stores a local file whose digest the caller computed."""
        ...

    def get(self, digest: Digest) -> bytes:
        """The blob, verified (CorruptionError if missing or damaged)."""
        ...

    def open_verified(self, digest: Digest) -> int:
        """An O_RDONLY fd of this machine's file of the blob, verified once per process."""
        ...

    def upload_ahead(self, fd: int, length: int) -> None:
        """A hint: the first ``length`` bytes of ``fd`` will likely be a blob of the next
        commit. A store with a bucket may start uploading them now, in the background and
        bounded (it may decline); the commit still uploads whatever the bucket lacks. Owns
        ``fd``: closes it. A store without a bucket just closes it."""
        ...

    def has(self, digest: Digest) -> bool: ...

    def size(self, digest: Digest) -> int: ...

    def freshen(self, digest: Digest) -> bool:
        """True if the blob is stored; gc's grace window counts from now for it."""
        ...

    def delete(self, digest: Digest) -> None: ...

    def digests(self) -> Iterator[Digest]:
        """Every stored blob (for a store with a bucket: a listing of it)."""
        ...

    def batch(self) -> BlobBatch: ...

    # -- this machine's files --------------------------------------------------------------
    def path(self, digest: Digest) -> Path:
        """The file this machine holds the blob in (a cached copy, which may be absent,
        where there is a bucket)."""
        ...

    def cached_bytes(self) -> int:
        """Bytes of blob files this machine holds."""
        ...

    def drop_cached(self, digests: Iterable[Digest]) -> None:
        """Drops this machine's cached copies (gc deleted the blobs from the bucket); a store
        without a bucket holds no copies, only the blobs: nothing to drop."""
        ...

    def delete_stale(self, digests: Iterable[Digest], cutoff: float) -> list[tuple[Digest, int]]:
        """Embedded only (``bucket`` is None): deletes the blobs last written or freshened
        before ``cutoff``; returns (digest, size). A store with a bucket raises InvalidError:
        bucket_gc.py deletes from its listing, under the gc lock."""
        ...


def put_stream(
    store: BlobStore, stream: BinaryIO, chunk_size: int = CHUNK_SIZE
) -> tuple[tuple[Digest, ...], int]:
    """Splits a stream into chunk blobs; returns (chunk digests, total size).

    The digests are dense (one per chunk, in order); a tree entry lists them as
    ``tree.dense(digests)``.
    """
    chunks: list[Digest] = []
    total = 0
    while True:
        data = _read_full(stream, chunk_size)
        if not data:
            break
        chunks.append(store.put(data))
        total += len(data)
        if len(data) < chunk_size:
            break
    return tuple(chunks), total


def _read_full(stream: BinaryIO, size: int) -> bytes:
    parts: list[bytes] = []
    want = size
    while want:
        data = stream.read(want)
        if not data:
            break
        parts.append(data)
        want -= len(data)
    return b"".join(parts)


def iter_content(store: BlobStore, chunks: tuple[Digest, ...]) -> Iterator[bytes]:
    for digest in chunks:
        yield store.get(digest)
