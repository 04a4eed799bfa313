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

**Split directories** (format 3): a directory of more than :data:`SPLIT_ABOVE` entries
is stored as an index over leaves, each leaf a format 2 tree of a run of its entries::

    index   := b"VX3\\n" u32:count leaf*     first names ascending
    leaf    := u16:len first_name u32:entries digest16 u64:size u64:files u64:links

A leaf ends after each name whose xxh3-64 is 0 modulo :data:`LEAF_TARGET` (and at the
directory's end): the leaves are a function of the names, so a directory has one encoding
however it was built, and :meth:`Tree.updated` rewrites only the leaves a change touches.

Names are raw bytes on disk; in Python they are ``str`` through ``os.fsdecode`` (so any
Linux name round-trips). Pure: no I/O but through a :class:`TreeStore`.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from operator import itemgetter
from typing import Protocol

import xxhash

from volfs.blobs import Digest, digest_of
from volfs.config import CHUNK_SIZE

MAGIC = b"VT2\n"
MAGIC_V1 = b"VT1\n"
MAGIC_INDEX = b"VX3\n"
#: A directory of more entries than this is stored split: an index block over leaves.
SPLIT_ABOVE = 4096
#: The mean entries per leaf of a split directory (see :func:`_is_boundary`).
LEAF_TARGET = 1024
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


TreeLoader = Callable[[Digest], "Tree"]
"""Reads a stored tree by digest (a catalog's ``get_tree``): how a split tree reads its leaves."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """One block of a split directory: its first name, digest and what it holds."""

    first: str
    digest: Digest
    count: int
    size: int
    files: int
    links: int


def _no_loader(digest: Digest) -> Tree:
    raise ValueError(f"leaf {digest} of a split tree read without a tree store")


class Tree:
    """One directory's listing, sorted by raw name bytes.

    Either **flat** (its entries in memory: every directory up to :data:`SPLIT_ABOVE`
    entries, and any tree being built) or **split** (read back from an index block: its
    :class:`Leaf` list, each leaf a flat tree read through ``load`` when needed). Both
    answer the same questions; a split tree answers ``get`` by reading one leaf and
    ``totals``/``len`` from its index alone.
    """

    __slots__ = ("_entries", "_index", "_firsts", "leaves", "_load")

    def __init__(
        self,
        entries: tuple[Entry, ...] = (),
        *,
        leaves: tuple[Leaf, ...] | None = None,
        load: TreeLoader | None = None,
    ) -> None:
        self._entries = entries
        self.leaves = leaves
        self._load = load or _no_loader
        self._index: dict[str, Entry] | None = None
        self._firsts: list[bytes] | None = None

    @property
    def is_split(self) -> bool:
        return self.leaves is not None

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every entry, in order (a split tree reads each of its leaves)."""
        if self.leaves is None:
            return self._entries
        return tuple(self.iter_entries())

    def iter_entries(self) -> Iterator[Entry]:
        """Every entry, in order, one leaf at a time (a listing that streams)."""
        if self.leaves is None:
            yield from self._entries
            return
        for i in range(len(self.leaves)):
            yield from self.leaf(i).entries

    def leaf(self, i: int) -> Tree:
        """Leaf ``i`` of a split tree, checked against what the index says of it."""
        assert self.leaves is not None
        ref = self.leaves[i]
        tree = self._load(ref.digest)
        if tree.is_split or len(tree) != ref.count or tree._entries[0].name != ref.first:
            raise ValueError(f"leaf {ref.digest} does not hold what its index says")
        return tree

    def get(self, name: str) -> Entry | None:
        if self.leaves is None:
            if self._index is None:
                self._index = {e.name: e for e in self._entries}
            return self._index.get(name)
        i = self._leaf_of(_fsencode(name))
        return self.leaf(i).get(name) if i >= 0 else None

    def _leaf_of(self, raw: bytes) -> int:
        """The leaf whose range holds the name ``raw`` (-1: before the first)."""
        assert self.leaves is not None
        if self._firsts is None:
            self._firsts = [_fsencode(ref.first) for ref in self.leaves]
        return bisect_right(self._firsts, raw) - 1

    def names(self) -> list[str]:
        return [e.name for e in self.iter_entries()]

    def __len__(self) -> int:
        if self.leaves is None:
            return len(self._entries)
        return sum(ref.count for ref in self.leaves)

    @property
    def weight(self) -> int:
        """What this object holds in memory, in entries (a cache's measure)."""
        return len(self._entries) if self.leaves is None else len(self.leaves)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tree):
            return NotImplemented
        return self.entries == other.entries

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self.leaves is None:
            return f"Tree({self._entries!r})"
        return f"Tree(<split: {len(self)} entries in {len(self.leaves)} leaves>)"

    @staticmethod
    def of(entries: Mapping[str, Entry] | list[Entry]) -> Tree:
        items = list(entries.values()) if isinstance(entries, Mapping) else list(entries)
        items.sort(key=_name_key)
        return Tree(tuple(items))

    def totals(self) -> tuple[int, int, int]:
        """(bytes, files, link-group names) below this tree: what its directory entry carries."""
        if self.leaves is not None:
            size = sum(ref.size for ref in self.leaves)
            files = sum(ref.files for ref in self.leaves)
            links = sum(ref.links for ref in self.leaves)
            return min(size, MAX_TOTAL), files, links
        size = files = links = 0
        for e in self._entries:
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

    def updated(self, changes: Mapping[str, Entry | None], writer: TreeWriter) -> Tree:
        """This tree with ``changes`` applied (an entry per name; None removes the name).

        A split tree reads and rewrites only the leaves the changed names fall in (and the
        next one where a change removed the name a leaf ended on): a change in a directory
        of millions of entries costs a leaf and the index, not the directory."""
        if self.leaves is None:
            entries = {e.name: e for e in self._entries}
            _apply_changes(entries, changes)
            return Tree.of(entries)
        if not changes:
            return self
        by_leaf: dict[int, dict[str, Entry | None]] = {}
        for name, entry in changes.items():
            i = max(self._leaf_of(_fsencode(name)), 0)
            by_leaf.setdefault(i, {})[name] = entry
        leaves = list(self.leaves)
        out: list[Leaf] = []
        i = 0
        while i < len(leaves):
            if i not in by_leaf:
                out.append(leaves[i])
                i += 1
                continue
            entries = {e.name: e for e in self.leaf(i).entries}
            _apply_changes(entries, by_leaf[i])
            i += 1
            run = sorted(((_fsencode(n), e) for n, e in entries.items()), key=itemgetter(0))
            # A leaf ends on a boundary name (or the directory's end): if the change removed
            # that name, the next leaf belongs to this one until a boundary comes again.
            while i < len(leaves) and not (run and _is_boundary(run[-1][0])):
                entries = {e.name: e for e in self.leaf(i).entries}
                _apply_changes(entries, by_leaf.get(i, {}))
                run += sorted(((_fsencode(n), e) for n, e in entries.items()), key=itemgetter(0))
                i += 1
            out += [writer.put_leaf(leaf) for leaf in _cut(run)]
        if sum(ref.count for ref in out) <= SPLIT_ABOVE:
            return Tree(tuple(e for ref in out for e in writer.get_tree(ref.digest).entries))
        return Tree(leaves=tuple(out), load=writer.get_tree)


def differing(old: Tree, new: Tree) -> tuple[Iterator[Entry], Iterator[Entry]]:
    """The entries of ``new`` and of ``old`` that may differ between them: all, unless
    both are split, then those outside the leaves they share (a shared leaf holds the
    same entries in both), so comparing two versions of a huge directory reads only the
    leaves a change touched."""
    if old.leaves is None or new.leaves is None:
        return new.iter_entries(), old.iter_entries()
    shared = {ref.digest for ref in old.leaves} & {ref.digest for ref in new.leaves}
    return _outside(new, shared), _outside(old, shared)


def _outside(tree: Tree, shared: set[Digest]) -> Iterator[Entry]:
    assert tree.leaves is not None
    for i, ref in enumerate(tree.leaves):
        if ref.digest not in shared:
            yield from tree.leaf(i).entries


def _apply_changes(entries: dict[str, Entry], changes: Mapping[str, Entry | None]) -> None:
    for name, entry in changes.items():
        if entry is None:
            entries.pop(name, None)
        else:
            entries[name] = entry if entry.name == name else entry.with_(name=name)


def _is_boundary(raw_name: bytes) -> bool:
    """A leaf of a split directory ends on each name this holds for (about one in
    :data:`LEAF_TARGET`): the leaves follow from the names alone, so equal directories
    get equal leaves however they were built, and a change moves no boundary but its own."""
    return xxhash.xxh3_64_intdigest(raw_name) % LEAF_TARGET == 0


def _cut(run: list[tuple[bytes, Entry]]) -> Iterator[Tree]:
    """Sorted (raw name, entry) pairs cut into leaves after every boundary name."""
    start = 0
    for i, (raw, _) in enumerate(run):
        if _is_boundary(raw):
            yield Tree(tuple(e for _, e in run[start : i + 1]))
            start = i + 1
    if start < len(run):
        yield Tree(tuple(e for _, e in run[start:]))


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
_KINDS = [Kind(1), *Kind]  # by value (0 is not a kind: refused before indexing)
_U16_FROM = struct.Struct("<H").unpack_from
_U32_FROM = struct.Struct("<I").unpack_from
_CHUNK_FROM = _CHUNK.unpack_from


def _fsencode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")  # os.fsencode on Linux, without its checks


def _name_key(entry: Entry) -> bytes:
    return entry.name.encode("utf-8", "surrogateescape")


def _raw_sorted(tree: Tree) -> list[tuple[bytes, Entry]]:
    items = [(_fsencode(e.name), e) for e in tree.entries]
    items.sort(key=itemgetter(0))
    return items


def encode(tree: Tree) -> bytes:
    """The block ``tree`` is stored as: a split tree's index, or a flat tree's listing.

    A flat tree of more than :data:`SPLIT_ABOVE` entries has no single block (its leaves
    are blocks of their own): :meth:`TreeWriter.put_tree` stores it."""
    if tree.leaves is not None:
        return _encode_index(tree.leaves)
    if len(tree._entries) > SPLIT_ABOVE:
        raise ValueError(f"a directory of {len(tree)} entries is stored split: use a TreeWriter")
    return _encode_listing(tree)


_LEAF = struct.Struct("<I16sQQQ")


def _encode_index(leaves: tuple[Leaf, ...]) -> bytes:
    out = [MAGIC_INDEX, _U32(len(leaves))]
    for ref in leaves:
        first = _fsencode(ref.first)
        out += [
            _U16(len(first)),
            first,
            _LEAF.pack(ref.count, bytes.fromhex(ref.digest), ref.size, ref.files, ref.links),
        ]
    return b"".join(out)


def _decode_index(data: bytes, load: TreeLoader | None) -> Tree:
    (count,) = struct.unpack_from("<I", data, 4)
    pos = 8
    leaves: list[Leaf] = []
    previous = b""
    for _ in range(count):
        (n,) = struct.unpack_from("<H", data, pos)
        first = data[pos + 2 : pos + 2 + n]
        pos += 2 + n
        if leaves and first <= previous:
            raise ValueError("index leaves out of order")
        previous = first
        entries, raw, size, files, links = _LEAF.unpack_from(data, pos)
        pos += _LEAF.size
        if not entries:
            raise ValueError("an empty leaf in an index")
        leaves.append(Leaf(os.fsdecode(first), Digest(raw.hex()), entries, size, files, links))
    if pos != len(data):
        raise ValueError("trailing bytes after index")
    if sum(ref.count for ref in leaves) <= SPLIT_ABOVE:
        raise ValueError("an index over a directory small enough for one block")
    return Tree(leaves=tuple(leaves), load=load)


def references(data: bytes) -> list[Digest]:
    """The trees a stored block names: a listing's subdirectories, an index's leaves."""
    if data[:4] == MAGIC_INDEX:
        tree = decode(data)
        assert tree.leaves is not None
        return [ref.digest for ref in tree.leaves]
    return [e.tree for e in decode(data).entries if e.kind is Kind.DIR and e.tree is not None]


def _encode_listing(tree: Tree) -> bytes:
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


def decode(data: bytes, load: TreeLoader | None = None) -> Tree:
    """The tree ``data`` encodes (a listing of format 2 or 1, or an index whose leaves
    ``load`` reads); ValueError if it is not a canonical one."""
    magic = data[:4]
    if magic != MAGIC and magic != MAGIC_V1 and magic != MAGIC_INDEX:
        raise ValueError("not a volfs tree (bad magic)")
    try:
        if magic == MAGIC_INDEX:
            return _decode_index(data, load)
        return _decode(data, version=2 if magic == MAGIC else 1)
    except struct.error as exc:
        raise ValueError(f"truncated tree: {exc}") from None


def _decode(data: bytes, version: int) -> Tree:
    (count,) = struct.unpack_from("<I", data, 4)
    pos = 8
    entries: list[Entry] = []
    previous = b""
    for _ in range(count):
        (n,) = _U16_FROM(data, pos)
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
                (nlink,) = _U32_FROM(data, pos)
                pos += 4
        else:
            kind, mode, uid, gid, mtime_ns, size = _HEAD_V1.unpack_from(data, pos)
            pos += _HEAD_V1.size
            if kind > Kind.SYMLINK:
                raise ValueError(f"kind {kind} in a format 1 tree")
        kind = _KINDS[kind] if 0 < kind < len(_KINDS) else Kind(kind)  # Kind() raises
        chunks: Chunks = ()
        tree: Digest | None = None
        files = links = rdev = 0
        target = ""
        if kind is _FILE:
            (nchunks,) = _U32_FROM(data, pos)
            pos += 4
            if version == 2 and nchunks == 1:  # most files: one chunk
                index, raw = _CHUNK_FROM(data, pos)
                chunks = ((index, Digest(raw.hex())),)
                pos += _CHUNK.size
            elif version == 2:
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
            (n,) = _U16_FROM(data, pos)
            pos += 2
            target = os.fsdecode(data[pos : pos + n])
            pos += n
        elif kind is Kind.CHAR_DEVICE or kind is Kind.BLOCK_DEVICE:
            (rdev,) = struct.unpack_from("<Q", data, pos)
            pos += 8
        (nx,) = _U16_FROM(data, pos)
        pos += 2
        xattrs = []
        for _ in range(nx):
            (n,) = _U16_FROM(data, pos)
            pos += 2
            key = os.fsdecode(data[pos : pos + n])
            pos += n
            (vn,) = _U32_FROM(data, pos)
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


def decode_verified(raw: bytes, digest: Digest, load: TreeLoader | None = None) -> Tree:
    """Decodes stored tree bytes after checking them against their name (ValueError if not)."""
    if digest_of(raw) != digest:
        raise ValueError("digest mismatch")
    return decode(raw, load)


def tree_digest(tree: Tree) -> Digest:
    if tree.leaves is None and len(tree) > SPLIT_ABOVE:
        return TreeWriter(MemoryTreeStore()).put_tree(tree)
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
        """Stores ``tree`` (a directory past :data:`SPLIT_ABOVE` entries as its leaves and
        an index over them) and returns its digest."""
        if tree.leaves is None and len(tree) > SPLIT_ABOVE:
            leaves = tuple(self.put_leaf(leaf) for leaf in _cut(_raw_sorted(tree)))
            digest = self._put(_encode_index(leaves))
            # Kept split, as it is read back: whoever reads it next (a mount's listing, a
            # catalog's cache) holds a leaf at a time, not the whole directory.
            self._decoded.setdefault(digest, Tree(leaves=leaves, load=self.get_tree))
            return digest
        digest = self._put(encode(tree))
        self._decoded.setdefault(digest, tree)
        return digest

    def put_leaf(self, leaf: Tree) -> Leaf:
        """Stores one leaf of a split directory; its entry in the index."""
        digest = self._put(_encode_listing(leaf))
        self._decoded.setdefault(digest, leaf)
        size, files, links = leaf.totals()
        return Leaf(leaf._entries[0].name, digest, len(leaf), size, files, links)

    def _put(self, data: bytes) -> Digest:
        digest = digest_of(data)
        self.pending.setdefault(digest, data)
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
            self.trees[digest] = decode(data, self.get_tree)


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
