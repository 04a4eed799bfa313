"""The inode table of one mount: nodes, their links, lookup counts and open counts.

A :class:`Node` is one file, directory, symlink or special file of a mount's view.
Committed content is named by chunk digests (immutable, served from the blob store);
content the mount wrote lives in a scratch file. Directories load their children lazily
from the tree they were committed with, so mounting a volume of millions of files costs
one node.

Hard links: the names of one file in a snapshot share a link id (``Entry.link``), and the
table keeps one node per link id, so every name loaded shows the same st_ino. A name of
the group that is in a directory not loaded yet is counted in ``unseen``: st_nlink is
right before every name has been looked up.

Lifetimes follow the kernel's: a node leaves the table when it has no name (``links``),
no kernel reference (``lookups``) and no open handle (``opens``) — so an unlinked file
that is still open keeps working, and its scratch file goes away on the last release.
A directory's listing is released too once the kernel forgot every entry in it and none
holds anything the tree does not (:meth:`InodeTable.release_forgotten`): memory follows
what the kernel references, not what was ever listed. Released names are loaded again
from the tree on the next lookup, with new inode numbers (the kernel had forgotten the
old ones); the node of a hard-link group is kept, so its names keep one st_ino.

Node records are small: everything a committed entry says is shared with the decoded
tree entry (no copies), a name is one tuple (a set only for hard links), and a node
without xattrs shares one empty mapping.

Each node caches its tree entry from the last tree build (``Node.cached``); a change
clears it up to the root (:meth:`InodeTable.invalidate`), so a commit rebuilds only what
changed.

No pyfuse3 here; single-threaded (the trio loop).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from volfs.blobs import Digest
from volfs.clock import now_ns
from volfs.core.tree import Chunks, Entry, Kind
from volfs.mount.listing import loaded

if TYPE_CHECKING:
    from volfs.mount.scratch import ScratchFile

ROOT_INO = 1
#: The xattrs of every node that has none (read-only: a change replaces the mapping).
NO_XATTRS: Mapping[str, bytes] = MappingProxyType({})

Link = tuple[int, str]
"""One name of a node: (parent ino, name)."""

Children = MutableMapping[str, int]
"""A directory's names: a dict, or a huge directory's :class:`~volfs.mount.listing.Listing`."""


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
        "link_id",
        "_links",
        "lookups",
        "mode",
        "mtime_ns",
        "opens",
        "rdev",
        "scratch",
        "size",
        "target",
        "uid",
        "unseen",
        "version",
        "writers",
        "xattrs",
    )

    def __init__(self, ino: int, kind: Kind, mode: int, uid: int, gid: int) -> None:
        now = now_ns()
        self.ino = ino
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = 0
        self.mtime_ns = self.ctime_ns = self.atime_ns = now
        self.xattrs: Mapping[str, bytes] = NO_XATTRS
        self.target = ""
        #: Character and block devices: the device number.
        self.rdev = 0
        #: Committed content (or the last hash of the scratch file): (index, digest) pairs.
        self.chunks: Chunks = ()
        #: The mount's own copy of this file's content, once it wrote or opened it for writing.
        self.scratch: ScratchFile | None = None
        #: The scratch content changed since it was last hashed.
        self.content_dirty = False
        #: Bumped on every content change: a commit hashing off the loop notices writes.
        self.version = 0
        #: Directories: name -> ino, or None while not loaded from ``base``.
        self.children: Children | None = None
        #: The committed entry this node was loaded from (directories load children from it).
        self.base: Entry | None = None
        #: Names of this node (see ``links``): None, one Link, or a set of several.
        self._links: Link | set[Link] | None = None
        #: The link group this file's names share in trees (0: none yet).
        self.link_id = 0
        #: Names of this file in the committed snapshot that no loaded directory holds yet.
        self.unseen = 0
        self.lookups = 0
        self.opens = 0
        self.writers = 0
        #: This node as a tree entry at the last tree build; None once anything changed.
        self.cached: Entry | None = None

    @property
    def links(self) -> Collection[Link]:
        """Names of this node: (parent ino, name). Directories have at most one."""
        links = self._links
        if links is None:
            return ()
        return (links,) if isinstance(links, tuple) else links

    def add_link(self, parent: int, name: str) -> None:
        link = (parent, name)
        links = self._links
        if links is None:
            self._links = link
        elif isinstance(links, tuple):
            if links != link:
                self._links = {links, link}
        else:
            links.add(link)

    def remove_link(self, parent: int, name: str) -> None:
        link = (parent, name)
        links = self._links
        if isinstance(links, tuple):
            if links == link:
                self._links = None
        elif links is not None:
            links.discard(link)
            if len(links) <= 1:
                self._links = next(iter(links), None)

    @property
    def nlink(self) -> int:
        if self.kind is Kind.DIR:
            # 1 means "not counted", as on btrfs: find(1) then does not skip subdirectories.
            # A removed directory (still someone's cwd) has none, as on ext4.
            return 1 if self.links or self.ino == ROOT_INO else 0
        return len(self.links) + self.unseen

    def parent(self) -> int | None:
        for parent, _ in self.links:
            return parent
        return None

    @staticmethod
    def from_entry(ino: int, entry: Entry) -> Node:
        node = Node(ino, entry.kind, entry.mode, entry.uid, entry.gid)
        node.size = entry.size if entry.kind is not Kind.DIR else 0
        node.mtime_ns = node.ctime_ns = node.atime_ns = entry.mtime_ns
        node.xattrs = dict(entry.xattrs) if entry.xattrs else NO_XATTRS
        node.target = entry.target
        node.rdev = entry.rdev
        node.chunks = entry.chunks
        if entry.link and entry.kind is not Kind.DIR:
            node.link_id = entry.link
            node.unseen = entry.nlink - 1
        node.base = entry if entry.kind is Kind.DIR else None
        node.cached = entry
        return node


class InodeTable:
    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {}
        self._next = ROOT_INO + 1
        #: The node of each link group met so far: every name of the group is this node.
        self.by_link: dict[int, Node] = {}
        #: Nodes the kernel holds (lookups > 0), and how many it forgot since the last sweep.
        self.referenced = 0
        self._forgotten = 0
        #: Directories whose listing was loaded from their tree, the longest ago first: the
        #: order in which :meth:`evictable` offers their entries.
        self.listed: dict[int, None] = {}

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

    def from_entry(self, entry: Entry, *, reloading: bool = False) -> Node:
        """The node of a committed entry: a new one, or the node of its link group if
        another of the group's names was loaded already (which it then no longer misses).

        ``reloading``: the group's node is taken only if it is the same file as ``entry``
        (a reload replaces a group whose content or names changed with a new node)."""
        if entry.link and entry.kind is not Kind.DIR:
            node = self.by_link.get(entry.link)
            if node is not None and (
                not reloading
                or (node.cached is not None and node.cached.with_(name=entry.name) == entry)
            ):
                node.unseen = max(0, node.unseen - 1)
                return node
        node = Node.from_entry(self._next, entry)
        self._next += 1
        self._nodes[node.ino] = node
        if node.link_id:
            self.by_link[node.link_id] = node
        return node

    def set_link(self, node: Node, link_id: int) -> None:
        """Makes ``node`` the one node of link group ``link_id`` (0: of none)."""
        if node.link_id and self.by_link.get(node.link_id) is node:
            del self.by_link[node.link_id]
        node.link_id = link_id
        if link_id:
            self.by_link[link_id] = node

    def invalidate(self, node: Node) -> None:
        """Clears the cached entry of ``node`` and of every directory above it.

        Invariant: a node whose cache is clear has clear caches all the way up, so the
        walk stops at the first node already cleared.
        """
        stack = [node]
        while stack:
            current = stack.pop()
            if current.cached is None and current is not node:
                continue
            current.cached = None
            for parent_ino, _ in current.links:
                parent = self._nodes.get(parent_ino)
                if parent is not None and parent.cached is not None:
                    stack.append(parent)

    # -- kernel references ---------------------------------------------------------------------
    def looked_up(self, node: Node) -> None:
        """The kernel took one more reference to ``node`` (a LOOKUP or READDIRPLUS entry)."""
        if node.lookups <= 0:
            self.referenced += 1
        node.lookups += 1

    def forget(self, node: Node, count: int) -> None:
        """The kernel dropped ``count`` references to ``node`` (FORGET)."""
        if node.lookups > 0 and node.lookups - count <= 0:
            self.referenced -= 1
            self._forgotten += 1
        node.lookups -= count

    def release_due(self) -> bool:
        """Whether enough was forgotten for a sweep (:meth:`release_forgotten`) to pay.

        A sweep costs the loaded part of the view; it is due once the kernel forgot as many
        nodes as it still holds, or a quarter of the table: a storm of FORGETs (memory
        pressure, ``drop_caches``) sweeps O(log n) times, and the last sweep comes when the
        last few are forgotten."""
        forgotten = self._forgotten
        return forgotten > 0 and (forgotten >= self.referenced or 4 * forgotten >= len(self._nodes))

    def release_forgotten(self, stored: Callable[[Digest], bool]) -> int:
        """Releases the listing of every directory whose entries are all as its tree holds
        them and referenced by nothing (no kernel reference, open handle, scratch file, or
        hard-link group): the directory reloads them from its tree when next asked.
        Deepest first, so a whole forgotten subtree goes in one sweep. ``stored`` tells
        whether a tree is in the catalog (a tree built by a commit that failed is not).
        Returns how many nodes went."""
        self._forgotten = 0
        listed: list[Node] = []  # directories with a listing, each before its subdirectories
        root = self._nodes[ROOT_INO]
        stack = [root] if root.children is not None else []
        while stack:
            directory = stack.pop()
            listed.append(directory)
            assert directory.children is not None
            for ino in loaded(directory.children).values():
                child = self._nodes[ino]
                if child.children is not None:
                    stack.append(child)
        released = 0
        for directory in reversed(listed):
            assert directory.children is not None
            children = loaded(directory.children)
            entry = directory.cached
            if entry is None or entry.tree is None:
                continue  # changed: its listing exists only here
            if not all(_releasable(self._nodes[ino]) for ino in children.values()):
                continue
            base = directory.base
            if (base is None or base.tree != entry.tree) and not stored(entry.tree):
                continue
            for ino in children.values():
                del self._nodes[ino]
            released += len(children)
            directory.children = None
            directory.base = entry
            self.listed.pop(directory.ino, None)
        return released

    def evictable(self, wanted: int) -> list[Link]:
        """About ``wanted`` names whose nodes only the kernel's reference keeps: in the
        directories listed longest ago, the entries the tree gives back as they are. Once
        the kernel forgets them (asked by the FUSE layer), a sweep releases their nodes.
        Each directory is offered once per listing, so a name the kernel keeps (a cwd) is
        not asked for again and again."""
        names: list[Link] = []
        for ino in list(self.listed):
            if len(names) >= wanted:
                break
            del self.listed[ino]
            directory = self._nodes.get(ino)
            if directory is None or directory.children is None or directory.cached is None:
                continue
            for name, child_ino in loaded(directory.children).items():
                child = self._nodes[child_ino]
                if child.lookups > 0 and _releasable(child, referenced=True):
                    names.append((ino, name))
        return names

    def maybe_drop(self, node: Node) -> None:
        """Forgets a node nobody can reach any more, with its scratch file."""
        if node.ino == ROOT_INO or node.links or node.lookups > 0 or node.opens > 0:
            return
        if node.scratch is not None:
            node.scratch.unlink()
            node.scratch = None
        if node.link_id and self.by_link.get(node.link_id) is node:
            del self.by_link[node.link_id]
        self._nodes.pop(node.ino, None)
        self.listed.pop(node.ino, None)


def _releasable(node: Node, *, referenced: bool = False) -> bool:
    """True if ``node`` is exactly what its tree entry gives back and nothing needs it
    (``referenced``: nothing but the kernel)."""
    cached = node.cached
    return (
        cached is not None
        and (referenced or node.lookups <= 0)
        and node.opens == 0
        and node.scratch is None
        and not node.link_id
        and node.children is None
        # Times the tree does not keep (a chmod's ctime, a touch -a) would go back.
        and node.ctime_ns == node.atime_ns == cached.mtime_ns
    )
