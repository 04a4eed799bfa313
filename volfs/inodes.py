"""The inode table of one mount: nodes, their links, lookup counts and open counts.

A :class:`Node` is one file, directory or symlink of a mount's view. Committed content
is named by chunk digests (immutable, served from the blob store); content the mount
wrote lives in a scratch file. Directories load their children lazily from the tree
they were committed with, so mounting a volume of millions of files costs one node.

Lifetimes follow the kernel's: a node leaves the table when it has no name (``links``),
no kernel reference (``lookups``) and no open handle (``opens``) — so an unlinked file
that is still open keeps working, and its scratch file goes away on the last release.
No pyfuse3 here; single-threaded (the trio loop).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from volfs.blobs import Digest
from volfs.tree import Entry, Kind

if TYPE_CHECKING:
    from volfs.scratch import ScratchFile

ROOT_INO = 1


class Node:
    __slots__ = (
        "atime_ns",
        "base",
        "cached",
        "children",
        "chunks",
        "content_dirty",
        "ctime_ns",
        "gid",
        "ino",
        "kind",
        "links",
        "lookups",
        "mode",
        "mtime_ns",
        "opens",
        "scratch",
        "size",
        "target",
        "uid",
        "version",
        "writers",
        "xattrs",
    )

    def __init__(self, ino: int, kind: Kind, mode: int, uid: int, gid: int) -> None:
        now = time.time_ns()
        self.ino = ino
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = 0
        self.mtime_ns = self.ctime_ns = self.atime_ns = now
        self.xattrs: dict[str, bytes] = {}
        self.target = ""
        #: Committed content (or the last hash of the scratch file): chunk digests.
        self.chunks: tuple[Digest, ...] = ()
        #: The mount's own copy of this file's content, once it wrote or opened it for writing.
        self.scratch: ScratchFile | None = None
        #: The scratch content changed since it was last hashed.
        self.content_dirty = False
        #: Bumped on every content change: a commit hashing off the loop notices writes.
        self.version = 0
        #: Directories: name -> ino, or None while not loaded from ``base``.
        self.children: dict[str, int] | None = None
        #: The committed entry this node was loaded from (directories load children from it).
        self.base: Entry | None = None
        #: Names of this node: (parent ino, name). Directories have at most one.
        self.links: set[tuple[int, str]] = set()
        self.lookups = 0
        self.opens = 0
        self.writers = 0
        #: This node as a tree entry at the last tree build; None once anything changed.
        self.cached: Entry | None = None

    @property
    def nlink(self) -> int:
        if self.kind is Kind.DIR:
            # 1 means "not counted", as on btrfs: find(1) then does not skip subdirectories.
            return 1
        return len(self.links)

    def parent(self) -> int | None:
        for parent, _ in self.links:
            return parent
        return None

    @staticmethod
    def from_entry(ino: int, entry: Entry) -> Node:
        node = Node(ino, entry.kind, entry.mode, entry.uid, entry.gid)
        node.size = entry.size if entry.kind is not Kind.DIR else 0
        node.mtime_ns = node.ctime_ns = node.atime_ns = entry.mtime_ns
        node.xattrs = dict(entry.xattrs)
        node.target = entry.target
        node.chunks = entry.chunks
        node.base = entry if entry.kind is Kind.DIR else None
        node.cached = entry
        return node


class InodeTable:
    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {}
        self._next = ROOT_INO + 1

    def __getitem__(self, ino: int) -> Node:
        return self._nodes[ino]

    def get(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._nodes.values()))

    def add_root(self, node: Node) -> Node:
        node.ino = ROOT_INO
        self._nodes[ROOT_INO] = node
        return node

    def new(self, kind: Kind, mode: int, uid: int, gid: int) -> Node:
        node = Node(self._next, kind, mode, uid, gid)
        self._next += 1
        self._nodes[node.ino] = node
        return node

    def from_entry(self, entry: Entry) -> Node:
        node = Node.from_entry(self._next, entry)
        self._next += 1
        self._nodes[node.ino] = node
        return node

    def maybe_drop(self, node: Node) -> None:
        """Forgets a node nobody can reach any more, with its scratch file."""
        if node.ino == ROOT_INO or node.links or node.lookups > 0 or node.opens > 0:
            return
        if node.scratch is not None:
            node.scratch.unlink()
            node.scratch = None
        self._nodes.pop(node.ino, None)
