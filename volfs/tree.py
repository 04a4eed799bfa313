"""Immutable Merkle trees: directory listings named by the xxh3-128 of their encoding.

A tree lists one directory: each :class:`Entry` is a file (its chunk digests), a
directory (the digest of its own tree) or a symlink (its target), with mode, owner,
mtime and xattrs. A directory entry also carries the total size and file count below
it, so a volume's usage is read off its root without a walk. Changing one file rewrites
only the trees on its path; every other subtree keeps its digest.

Canonical encoding, format 1 (all integers little-endian)::

    tree    := b"VT1\\n" u32:count entry*            entries sorted by raw name bytes
    entry   := u16:len name  u8:kind  u32:mode  u32:uid  u32:gid  i64:mtime_ns  u64:size
               payload  u16:nxattr (u16:len name u32:len value)*   xattrs sorted by name
    payload := file:    u32:n digest16*n             the content's chunks, in order
               dir:     digest16 u64:files           the subtree; files below it
               symlink: u16:len target

Names are raw bytes on disk; in Python they are ``str`` through ``os.fsdecode`` (so any
Linux name round-trips). Pure: no I/O but through a :class:`TreeStore`.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from operator import itemgetter
from typing import Protocol

from volfs.blobs import Digest, digest_of

MAGIC = b"VT1\n"


class Kind(IntEnum):
    FILE = 1
    DIR = 2
    SYMLINK = 3


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0
    chunks: tuple[Digest, ...] = ()
    tree: Digest | None = None
    files: int = 0
    target: str = ""
    xattrs: tuple[tuple[str, bytes], ...] = ()

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    def same_content(self, other: Entry | None) -> bool:
        """True if ``other`` holds the same bytes (or subtree, or target) as this entry."""
        if other is None or other.kind is not self.kind:
            return False
        if self.kind is Kind.FILE:
            return self.chunks == other.chunks and self.size == other.size
        if self.kind is Kind.DIR:
            return self.tree == other.tree
        return self.target == other.target

    def with_(self, **changes: object) -> Entry:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


META_FIELDS = ("mode", "uid", "gid", "mtime_ns", "xattrs")


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

    def totals(self) -> tuple[int, int]:
        """(bytes, files) below this tree: what its directory entry carries."""
        size = files = 0
        for e in self.entries:
            if e.kind is Kind.DIR:
                size += e.size
                files += e.files
            elif e.kind is Kind.FILE:
                size += e.size
                files += 1
        return size, files


EMPTY_TREE = Tree(())

_HEAD = struct.Struct("<BIIIqQ")
_HEAD_PACK = _HEAD.pack
_U16 = struct.Struct("<H").pack
_U32 = struct.Struct("<I").pack
_U64 = struct.Struct("<Q").pack
_NO_XATTRS = _U16(0)
_FILE, _DIR = Kind.FILE, Kind.DIR


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
        append(_HEAD_PACK(kind, e.mode, e.uid, e.gid, e.mtime_ns, e.size))
        if kind is _FILE:
            append(_U32(len(e.chunks)))
            append(bytes.fromhex("".join(e.chunks)))
        elif kind is _DIR:
            assert e.tree is not None
            append(bytes.fromhex(e.tree))
            append(_U64(e.files))
        else:
            target = _fsencode(e.target)
            append(_U16(len(target)))
            append(target)
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
    """The tree ``data`` encodes; ValueError if it is not a canonical tree encoding."""
    if data[:4] != MAGIC:
        raise ValueError("not a volfs tree (bad magic)")
    try:
        return _decode(data)
    except struct.error as exc:
        raise ValueError(f"truncated tree: {exc}") from None


def _decode(data: bytes) -> Tree:
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
        kind, mode, uid, gid, mtime_ns, size = _HEAD.unpack_from(data, pos)
        pos += _HEAD.size
        kind = Kind(kind)
        chunks: tuple[Digest, ...] = ()
        tree: Digest | None = None
        files = 0
        target = ""
        if kind is Kind.FILE:
            (nchunks,) = struct.unpack_from("<I", data, pos)
            pos += 4
            chunks = tuple(Digest(data[pos + 16 * i : pos + 16 * i + 16].hex()) for i in range(nchunks))
            pos += 16 * nchunks
        elif kind is Kind.DIR:
            tree = Digest(data[pos : pos + 16].hex())
            (files,) = struct.unpack_from("<Q", data, pos + 16)
            pos += 24
        else:
            (n,) = struct.unpack_from("<H", data, pos)
            pos += 2
            target = os.fsdecode(data[pos : pos + n])
            pos += n
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
        entries.append(Entry(name, kind, mode, uid, gid, mtime_ns, size, chunks, tree, files, target, tuple(xattrs)))
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
        size, files = tree.totals()
        return template.with_(kind=Kind.DIR, tree=self.put_tree(tree), size=size, files=files,
                              chunks=(), target="")


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


def walk(store: TreeStore, root: Entry, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Entry]]:
    """Every entry below ``root`` (a directory), depth first, parents before children."""
    assert root.tree is not None
    for entry in store.get_tree(root.tree).entries:
        path = prefix + (entry.name,)
        yield path, entry
        if entry.kind is Kind.DIR:
            yield from walk(store, entry, path)
