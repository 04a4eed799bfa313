"""Reading a volume without a mount: listing a directory and streaming a file's bytes.

Owns how :meth:`Volume.iterdir <volfs.api.volume.Volume.iterdir>` walks trees (parents
before children) and how :meth:`Volume.read_file <volfs.api.volume.Volume.read_file>`
turns an entry's chunks into bytes: every chunk verified by the blob store as it is read,
holes of a sparse file yielded as zeros a piece at a time (a 1 TiB hole never becomes one
buffer), nothing past the file's size.

Must not: write anything, or hold a whole file in memory; a read sees the one root its
:class:`HeadView` was made for.
"""

from __future__ import annotations

from collections.abc import Iterator

from volfs.api.paths import HeadView, lstat, shown
from volfs.api.records import FileEntry, file_entry
from volfs.config import CHUNK_SIZE, READ_CHUNK
from volfs.core.tree import Entry, Kind, chunk_span
from volfs.errors import IsADirectoryPathError
from volfs.names import PathParts
from volfs.store import Store

#: The zeros ``read_file`` yields for holes, one READ_CHUNK at most at a time.
_ZEROS = bytes(READ_CHUNK)


def iter_entries(
    store: Store, view: HeadView, parts: PathParts, recursive: bool
) -> Iterator[FileEntry]:
    """The entries of the directory at ``parts`` (of a file path: that file alone)."""
    _, entry = view.resolve(parts, follow_last=True)
    if entry.kind is not Kind.DIR:
        yield file_entry(parts, lstat(view, parts))
        return
    yield from _iter_tree(store, entry, parts, recursive)


def _iter_tree(store: Store, entry: Entry, at: PathParts, recursive: bool) -> Iterator[FileEntry]:
    assert entry.tree is not None
    for child in store.catalog.get_tree(entry.tree).entries:
        child_path = (*at, child.name)
        yield file_entry(child_path, child)
        if recursive and child.kind is Kind.DIR:
            yield from _iter_tree(store, child, child_path, recursive)


def file_at(view: HeadView, parts: PathParts) -> Entry:
    """The entry a read of ``parts`` reads (symlinks followed); a directory is refused."""
    real, entry = view.resolve(parts, follow_last=True)
    if entry.kind is Kind.DIR:
        raise IsADirectoryPathError(f"{shown(real)} is a directory")
    return entry


def iter_chunks(store: Store, entry: Entry) -> Iterator[bytes]:
    """The bytes of ``entry``, in pieces of at most READ_CHUNK; none for a special file."""
    if entry.kind is not Kind.FILE:
        return
    pos = 0  # how far the file has been yielded
    for index, digest in entry.chunks:
        start = index * CHUNK_SIZE
        if start >= entry.size:
            break  # a chunk past the end (fsck reports it): the size rules
        yield from _zeros(start - pos)  # the hole before this chunk
        data = store.blobs.get(digest)
        # A blob may be shorter than its span (the rest is zeros); never read past it.
        view = memoryview(data)[: chunk_span(entry.size, index)]
        for offset in range(0, len(view), READ_CHUNK):
            yield bytes(view[offset : offset + READ_CHUNK])
        pos = start + len(view)
    yield from _zeros(entry.size - pos)


def _zeros(count: int) -> Iterator[bytes]:
    """``count`` zero bytes, in pieces of at most READ_CHUNK."""
    while count > 0:
        piece = min(count, READ_CHUNK)
        yield _ZEROS if piece == READ_CHUNK else _ZEROS[:piece]
        count -= piece


__all__ = ["file_at", "iter_chunks", "iter_entries"]
