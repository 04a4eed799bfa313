"""Immutable Merkle trees: directory listings named by the xxh3-128 of their encoding.

A tree lists one directory: each :class:`Entry` is a file (its chunk digests), a
directory (the digest of its own tree), a symlink (its target) or a special file (a
FIFO, a unix socket node, a character or block device: its rdev), with mode, owner,
mtime and xattrs. A directory entry also carries the total size, file count and
link-group names below it, so a volume's usage is read off its root without a walk, and
a search for the names of a hard-link group descends only where there are some.

Files are **sparse**: ``chunks`` lists only the chunks that hold data, as
``(index, digest)`` pairs in ascending index order; chunk ``i`` covers bytes
``[i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE)`` clipped to the size, and a chunk that is not
listed is a hole (zeros). A chunk's blob may be shorter than its span: the rest is zeros.
So a 1 TiB file with 4 KiB written costs one chunk, and its entry one pair.

**Hard links**: the names of one file share a nonzero ``link`` id (unique within a
volume, random) and each carries the group's full entry and its ``nlink``. The merge
(``merge.py``) keeps a group's names consistent.

Canonical encoding, format 2 (all integers little-endian)::

    tree    := b"VT2\\n" u32:count entry*            entries sorted by raw name bytes
    entry   := u16:len name  u8:kind  u32:mode  u32:uid  u32:gid  i64:mtime_ns  u64:size
               u64:link [u32:nlink if link != 0]
               payload  u16:nxattr (u16:len name u32:len value)*   xattrs sorted by name
    payload := file (1):           u32:n (u64:index digest16)*n   the chunks with data
               dir (2):            digest16 u64:files u64:links   subtree; files and
                                                                  link-group names below
               symlink (3):        u16:len target
               fifo (4), socket (5):  nothing
               char (6), block (7):   u64:rdev

Format 1 (``VT1``: dense chunk lists, no links, files, dirs and symlinks only) is still
read; every tree written is format 2.

Names are raw bytes on disk; in Python they are ``str`` through ``os.fsdecode`` (so any
Linux name round-trips). Pure: no I/O but through a :class:`TreeStore`.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from operator import itemgetter
from typing import Protocol

from volfs.blobs import Digest, digest_of
from volfs.config import CHUNK_SIZE

MAGIC = b"VT2\n"
MAGIC_V1 = b"VT1\n"
#: Sizes are u64 in the encoding; a directory's total saturates here instead of wrapping.
MAX_TOTAL = (1 << 64) - 1

Chunks = tuple[tuple[int, Digest], ...]
"""A file's content: (chunk index, digest) for each chunk holding data, ascending."""


class Kind(IntEnum):
    FILE = 1
    DIR = 2
    SYMLINK = 3
    FIFO = 4
    SOCKET = 5
    CHAR_DEVICE = 6
    BLOCK_DEVICE = 7

    @property
    def is_special(self) -> bool:
        """A FIFO, socket node or device: an inode with no content of its own."""
        return self >= Kind.FIFO


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0
    chunks: Chunks = ()
    tree: Digest | None = None
    files: int = 0
    target: str = ""
    xattrs: tuple[tuple[str, bytes], ...] = ()
    #: Hard links: the id this name shares with the other names of its file (0: none).
    link: int = 0
    #: How many names the file has (1 unless ``link``).
    nlink: int = 1
    #: Character and block devices: the device number.
    rdev: int = 0
    #: Directories: how many names with a ``link`` are below.
    links: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    def same_content(self, other: Entry | None) -> bool:
        """True if ``other`` holds the same bytes (or subtree, target, device) as this entry."""
        if other is None or other.kind is not self.kind:
            return False
        if self.kind is Kind.FILE:
            return self.chunks == other.chunks and self.size == other.size
        if self.kind is Kind.DIR:
            return self.tree == other.tree
        if self.kind is Kind.SYMLINK:
            return self.target == other.target
        return self.rdev == other.rdev

    def with_(self, **changes: object) -> Entry:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


#: What a metadata-only change may set (the rest is content). ``link``/``nlink``: a name
#: added to or removed from a file's link group changes every other name's entry.
META_FIELDS = ("mode", "uid", "gid", "mtime_ns", "xattrs", "link", "nlink")


def chunk_span(size: int, index: int) -> int:
    """How many bytes of a file of ``size`` chunk ``index`` covers."""
    return max(0, min(CHUNK_SIZE, size - index * CHUNK_SIZE))


def stored_bytes(size: int, chunks: Chunks) -> int:
    """The bytes of a file that are not holes (at most: a chunk's blob may be shorter).

    Asked on every getattr and for every entry a directory listing returns: O(1) for a
    file without holes (the common case), O(log n) otherwise."""
    if size <= 0:
        return 0
    last = (size - 1) // CHUNK_SIZE
    if len(chunks) == last + 1 and chunks[last][0] == last:
        return size  # every chunk of the file, and none past it
    count = bisect_right(chunks, last, key=itemgetter(0))  # the chunks inside the file
    full = count * CHUNK_SIZE
    return (
        full - (CHUNK_SIZE - chunk_span(size, last))
        if count and chunks[count - 1][0] == last
        else full
    )


def chunk_at(chunks: Chunks, index: int) -> Digest | None:
    """The digest of chunk ``index``, or None for a hole (O(1) for a file without holes)."""
    if index < len(chunks) and chunks[index][0] == index:
        return chunks[index][1]
    i = bisect_left(chunks, index, key=itemgetter(0))
    return chunks[i][1] if i < len(chunks) and chunks[i][0] == index else None


def dense(digests: tuple[Digest, ...] | list[Digest]) -> Chunks:
    """Chunks of a file with no holes: every chunk in order (``put_stream``'s output)."""
    return tuple(enumerate(digests))


@dataclass(frozen=True)
class Tree:
    entries: tuple[Entry, ...]
    _index: dict[str, Entry] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {e.name: e for e in self.entries})

    def get(self, name: str) -> Entry | None:
        return self._index.get(name)

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    @staticmethod
    def of(entries: Mapping[str, Entry] | list[Entry]) -> Tree:
        items = list(entries.values()) if isinstance(entries, Mapping) else list(entries)
        items.sort(key=_name_key)
        return Tree(tuple(items))

    def totals(self) -> tuple[int, int, int]:
        """(bytes, files, link-group names) below this tree: what its directory entry carries."""
        size = files = links = 0
        for e in self.entries:
            if e.kind is Kind.DIR:
                size += e.size
                files += e.files
                links += e.links
            else:
                if e.kind is Kind.FILE:
                    size += e.size
                    files += 1
                if e.link:
                    links += 1
        return min(size, MAX_TOTAL), files, links


EMPTY_TREE = Tree(())

_HEAD = struct.Struct("<BIIIqQQ")
_HEAD_PACK = _HEAD.pack
_HEAD_V1 = struct.Struct("<BIIIqQ")
_U16 = struct.Struct("<H").pack
_U32 = struct.Struct("<I").pack
_U64 = struct.Struct("<Q").pack
_CHUNK = struct.Struct("<Q16s")
_CHUNK_PACK = _CHUNK.pack
_NO_XATTRS = _U16(0)
_FILE, _DIR, _SYMLINK = Kind.FILE, Kind.DIR, Kind.SYMLINK


def _fsencode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")  # os.fsencode on Linux, without its checks


def _name_key(entry: Entry) -> bytes:
    return entry.name.encode("utf-8", "surrogateescape")


def encode(tree: Tree) -> bytes:
    # Sort here, not only in Tree.of: the encoding must be canonical however the Tree was
    # built (a Tree(...) with unsorted entries or xattrs would otherwise get another digest).
    # The hot path of every commit (a 1,000-entry directory each time one file in it
    # changes): precompiled structs, no per-entry generators.
    items = [(_fsencode(e.name), e) for e in tree.entries]
    items.sort(key=itemgetter(0))
    out = [MAGIC, _U32(len(items))]
    append = out.append
    previous = None
    for name, e in items:
        if name == previous:
            raise ValueError(f"duplicate name {os.fsdecode(name)!r} in a tree")
        previous = name
        append(_U16(len(name)))
        append(name)
        kind = e.kind
        append(_HEAD_PACK(kind, e.mode, e.uid, e.gid, e.mtime_ns, e.size, e.link))
        if e.link:
            append(_U32(e.nlink))
        if kind is _FILE:
            append(_U32(len(e.chunks)))
            append(b"".join([_CHUNK_PACK(index, bytes.fromhex(d)) for index, d in e.chunks]))
        elif kind is _DIR:
            assert e.tree is not None
            append(bytes.fromhex(e.tree))
            append(_U64(e.files))
            append(_U64(e.links))
        elif kind is _SYMLINK:
            target = _fsencode(e.target)
            append(_U16(len(target)))
            append(target)
        elif kind is Kind.CHAR_DEVICE or kind is Kind.BLOCK_DEVICE:
            append(_U64(e.rdev))
        if not e.xattrs:
            append(_NO_XATTRS)
            continue
        xattrs = sorted((_fsencode(key), value) for key, value in e.xattrs)
        append(_U16(len(xattrs)))
        for raw, value in xattrs:
            append(_U16(len(raw)))
            append(raw)
            append(_U32(len(value)))
            append(value)
    return b"".join(out)


def decode(data: bytes) -> Tree:
    """The tree ``data`` encodes (format 2, or 1); ValueError if it is not a canonical one."""
    magic = data[:4]
    if magic != MAGIC and magic != MAGIC_V1:
        raise ValueError("not a volfs tree (bad magic)")
    try:
        return _decode(data, version=2 if magic == MAGIC else 1)
    except struct.error as exc:
        raise ValueError(f"truncated tree: {exc}") from None


def _decode(data: bytes, version: int) -> Tree:
    (count,) = struct.unpack_from("<I", data, 4)
    pos = 8
    entries: list[Entry] = []
    previous = b""
    for _ in range(count):
        (n,) = struct.unpack_from("<H", data, pos)
        pos += 2
        raw_name = data[pos : pos + n]
        if entries and raw_name <= previous:
            raise ValueError("tree entries out of order or duplicated")
        previous = raw_name
        name = os.fsdecode(raw_name)
        pos += n
        link, nlink = 0, 1
        if version == 2:
            kind, mode, uid, gid, mtime_ns, size, link = _HEAD.unpack_from(data, pos)
            pos += _HEAD.size
            if link:
                (nlink,) = struct.unpack_from("<I", data, pos)
                pos += 4
        else:
            kind, mode, uid, gid, mtime_ns, size = _HEAD_V1.unpack_from(data, pos)
            pos += _HEAD_V1.size
            if kind > Kind.SYMLINK:
                raise ValueError(f"kind {kind} in a format 1 tree")
        kind = Kind(kind)
        chunks: Chunks = ()
        tree: Digest | None = None
        files = links = rdev = 0
        target = ""
        if kind is Kind.FILE:
            (nchunks,) = struct.unpack_from("<I", data, pos)
            pos += 4
            if version == 2:
                chunks = tuple(
                    (index, Digest(raw.hex()))
                    for index, raw in _CHUNK.iter_unpack(data[pos : pos + _CHUNK.size * nchunks])
                )
                if len(chunks) != nchunks:
                    raise ValueError("truncated chunk list")
                if any(a[0] >= b[0] for a, b in zip(chunks, chunks[1:], strict=False)):
                    raise ValueError("chunk indexes out of order")
                pos += _CHUNK.size * nchunks
            else:
                chunks = tuple(
                    (i, Digest(data[pos + 16 * i : pos + 16 * i + 16].hex()))
                    for i in range(nchunks)
                )
                pos += 16 * nchunks
        elif kind is Kind.DIR:
            tree = Digest(data[pos : pos + 16].hex())
            (files,) = struct.unpack_from("<Q", data, pos + 16)
            pos += 24
            if version == 2:
                (links,) = struct.unpack_from("<Q", data, pos)
                pos += 8
        elif kind is Kind.SYMLINK:
            (n,) = struct.unpack_from("<H", data, pos)
            pos += 2
            target = os.fsdecode(data[pos : pos + n])
            pos += n
        elif kind is Kind.CHAR_DEVICE or kind is Kind.BLOCK_DEVICE:
            (rdev,) = struct.unpack_from("<Q", data, pos)
            pos += 8
        (nx,) = struct.unpack_from("<H", data, pos)
        pos += 2
        xattrs = []
        for _ in range(nx):
            (n,) = struct.unpack_from("<H", data, pos)
            pos += 2
            key = os.fsdecode(data[pos : pos + n])
            pos += n
            (vn,) = struct.unpack_from("<I", data, pos)
            pos += 4
            xattrs.append((key, data[pos : pos + vn]))
            pos += vn
        entries.append(
            Entry(
                name,
                kind,
                mode,
                uid,
                gid,
                mtime_ns,
                size,
                chunks,
                tree,
                files,
                target,
                tuple(xattrs),
                link,
                nlink,
                rdev,
                links,
            )
        )
    if pos != len(data):
        raise ValueError("trailing bytes after tree")
    return Tree(tuple(entries))


def decode_verified(raw: bytes, digest: Digest) -> Tree:
    """Decodes stored tree bytes after checking them against their name (ValueError if not)."""
    if digest_of(raw) != digest:
        raise ValueError("digest mismatch")
    return decode(raw)


def tree_digest(tree: Tree) -> Digest:
    return digest_of(encode(tree))


class TreeStore(Protocol):
    """Where trees are read from. Writers collect new trees in a :class:`TreeWriter`."""

    def get_tree(self, digest: Digest) -> Tree: ...


class TreeWriter:
    """Trees created during one operation, kept until the operation's head advance."""

    def __init__(self, base: TreeStore) -> None:
        self.base = base
        self.pending: dict[Digest, bytes] = {}
        self._decoded: dict[Digest, Tree] = {}

    def get_tree(self, digest: Digest) -> Tree:
        tree = self._decoded.get(digest)
        return tree if tree is not None else self.base.get_tree(digest)

    @property
    def decoded(self) -> dict[Digest, Tree]:
        """The trees written here, as objects (a catalog may keep them in its cache)."""
        return self._decoded

    def put_tree(self, tree: Tree) -> Digest:
        data = encode(tree)
        digest = digest_of(data)
        if digest not in self.pending:
            self.pending[digest] = data
            self._decoded[digest] = tree
        return digest

    def dir_entry(self, template: Entry, tree: Tree) -> Entry:
        """``template`` (a directory entry) now listing ``tree``, totals recomputed."""
        size, files, links = tree.totals()
        return template.with_(
            kind=Kind.DIR,
            tree=self.put_tree(tree),
            size=size,
            files=files,
            links=links,
            chunks=(),
            target="",
            link=0,
            nlink=1,
            rdev=0,
        )


class MemoryTreeStore:
    """A dict of trees: for tests and for building trees before they are committed."""

    def __init__(self) -> None:
        self.trees: dict[Digest, Tree] = {tree_digest(EMPTY_TREE): EMPTY_TREE}

    def get_tree(self, digest: Digest) -> Tree:
        return self.trees[digest]

    def absorb(self, writer: TreeWriter) -> None:
        for digest, data in writer.pending.items():
            self.trees[digest] = decode(data)


def lookup(store: TreeStore, root: Entry, parts: tuple[str, ...]) -> Entry | None:
    entry: Entry | None = root
    for part in parts:
        if entry is None or entry.kind is not Kind.DIR:
            return None
        assert entry.tree is not None
        entry = store.get_tree(entry.tree).get(part)
    return entry


def walk(
    store: TreeStore, root: Entry, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Entry]]:
    """Every entry below ``root`` (a directory), depth first, parents before children."""
    assert root.tree is not None
    for entry in store.get_tree(root.tree).entries:
        path = prefix + (entry.name,)
        yield path, entry
        if entry.kind is Kind.DIR:
            yield from walk(store, entry, path)


def link_names(store: TreeStore, directory: Entry) -> Iterator[tuple[tuple[str, ...], Entry]]:
    """Every name with a ``link`` below ``directory``, descending only into directories
    that hold some (so the cost follows how many hard links the volume has, not its size)."""
    stack: list[tuple[tuple[str, ...], Entry]] = [((), directory)]
    while stack:
        prefix, here = stack.pop()
        assert here.tree is not None
        for entry in store.get_tree(here.tree).entries:
            if entry.kind is Kind.DIR:
                if entry.links:
                    stack.append((prefix + (entry.name,), entry))
            elif entry.link:
                yield prefix + (entry.name,), entry


def find_links(
    store: TreeStore, root: Entry, ids: set[int]
) -> dict[int, list[tuple[tuple[str, ...], Entry]]]:
    """Every name of the link groups ``ids`` below ``root`` (see :func:`link_names`)."""
    found: dict[int, list[tuple[tuple[str, ...], Entry]]] = {i: [] for i in ids}
    for path, entry in link_names(store, root):
        if entry.link in found:
            found[entry.link].append((path, entry))
    return found
