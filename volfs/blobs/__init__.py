"""Content-addressed blob store: immutable bytes named by their xxh3-128 digest.

This package owns the interface (:class:`BlobStore`), the digest, the chunking of files
into blobs, and the local-disk backend. It knows nothing of trees, volumes or FUSE.
Every read is verified against the digest: a mismatch raises
:class:`volfs.errors.CorruptionError`, never returns wrong bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, NewType, Protocol

import xxhash

from volfs.config import CHUNK_SIZE

Digest = NewType("Digest", str)
"""32 lowercase hex digits: the xxh3-128 of the content."""


def digest_of(data: bytes | memoryview) -> Digest:
    return Digest(xxhash.xxh3_128_hexdigest(data))


class BlobStore(Protocol):
    """What every blob backend offers. ``put`` returns only once the blob is durable."""

    def put(self, data: bytes) -> Digest: ...

    def get(self, digest: Digest) -> bytes: ...

    def has(self, digest: Digest) -> bool: ...

    def size(self, digest: Digest) -> int: ...

    def delete(self, digest: Digest) -> None: ...

    def digests(self) -> Iterator[Digest]: ...


def put_stream(store: BlobStore, stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> tuple[tuple[Digest, ...], int]:
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
