"""Reading a mount's view: lookups, listings, paths, file content and xattrs.

Owns the read side of the inode table (``inodes.py``): directories load their children
from the catalog on first use; reads of written files go to their scratch file, reads of
committed files to their chunk blobs, through a small LRU cache of verified blob fds.
It also owns the read-ahead policy (:meth:`ViewReader.read_plan`): which chunks a read
needs verified before it is served, and which to verify ahead of it: the next chunk, and
the next small files of a directory whose small remote files are being read one after
the other. Carrying the plan out (worker threads, waiting for a check another read started)
is the FUSE adapter's part.

Must not change the view (``namespace.py`` does), write the journal, or know of pyfuse3
or trio. Every method is synchronous and runs on one thread (the trio loop), except
:meth:`ViewReader.verify_chunk`, which any thread may call.
"""

from __future__ import annotations

import errno
import functools
import os
from collections import OrderedDict
from dataclasses import dataclass

from volfs.blobs import Digest
from volfs.config import CHUNK_SIZE, NAME_MAX
from volfs.core.tree import Entry, Kind, chunk_at
from volfs.mount.inodes import ROOT_INO, Children, InodeTable, Node
from volfs.mount.listing import Listing
from volfs.store import Store

BLOB_FD_CACHE = 256
INLINE_READ = 128 * 1024
#: Small files of a directory fetched ahead of a reader going through its small remote
#: files in directory order (as ``cp -r``, ``tar``, ``rsync`` and ``os.walk`` do).
REMOTE_FILES_AHEAD = 8
#: Directories whose order (name -> position) is remembered for the files ahead.
SIBLING_ORDERS = 64


def os_error(code: int, what: str = "") -> OSError:
    """The error a filesystem gives: the FUSE adapter answers with its errno."""
    return OSError(code, os.strerror(code) + (f": {what}" if what else ""))


def check_name(name: str) -> None:
    if len(os.fsencode(name)) > NAME_MAX:
        raise os_error(errno.ENAMETOOLONG)


@dataclass(frozen=True)
class ReadPlan:
    """The chunks a read wants verified off the loop (none: read() verifies inline)."""

    #: Verified before the read is served: it would otherwise hash them on the loop.
    first: tuple[Digest, ...] = ()
    #: The chunk after the range, verified in the background for the next read; nothing
    #: waits for it, and a failure is reported by the read that needs the chunk.
    ahead: tuple[Digest, ...] = ()


class ViewReader:
    """The read side of a mount's view; :class:`~volfs.mount.overlay.Overlay` builds on it."""

    def __init__(self, store: Store, root: Entry) -> None:
        self.store = store
        self.catalog = store.catalog
        self.blobs = store.blobs
        #: Blob reads are reads of local files: small files are read inline (see _inline).
        self._local_blobs = store.blobs.reads_are_local
        self.table = InodeTable()
        self.table.add_root(Node.from_entry(ROOT_INO, root))
        self._blob_fds: OrderedDict[Digest, int] = OrderedDict()
        self._verified_chunks: set[Digest] = set()
        #: parent ino -> (its children dict, its names in order, name -> position).
        self._sibling_orders: OrderedDict[int, tuple[Children, list[str], dict[str, int]]] = (
            OrderedDict()
        )
        #: (parent ino, position) of the last small remote file read.
        self._last_small_read: tuple[int, int] | None = None

    # -- names ------------------------------------------------------------------------------
    def node(self, ino: int) -> Node:
        node = self.table.get(ino)
        if node is None:
            raise os_error(errno.ENOENT, f"inode {ino}")
        return node

    def children(self, node: Node) -> Children:
        """A directory's name -> ino, loaded from its tree on first use: whole, or for a
        split (huge) directory a :class:`Listing` that loads one name at a time."""
        if node.kind is not Kind.DIR:
            raise os_error(errno.ENOTDIR)
        if node.children is None:
            assert node.base is not None and node.base.tree is not None
            tree = self.catalog.get_tree(node.base.tree)
            make = functools.partial(self._child, node.ino)
            if tree.is_split:
                node.children = Listing(make, tree)
            else:
                node.children = {entry.name: make(entry) for entry in tree.entries}
            self.table.listed[node.ino] = None
        return node.children

    def _child(self, parent_ino: int, entry: Entry) -> int:
        child = self.table.from_entry(entry)
        child.add_link(parent_ino, entry.name)
        return child.ino

    def lookup(self, parent_ino: int, name: str) -> Node:
        parent = self.node(parent_ino)
        if name == ".":
            return parent
        if name == "..":
            return self.node(parent.parent() or ROOT_INO)
        check_name(name)
        ino = self.children(parent).get(name)
        if ino is None:
            raise os_error(errno.ENOENT)
        return self.table[ino]

    def path_of(self, node: Node) -> str | None:
        """One path of ``node`` (the least of its names), None if it has no name left."""
        parts: list[str] = []
        while node.ino != ROOT_INO:
            if not node.links:
                return None
            parent_ino, name = min(node.links)
            parts.append(name)
            node = self.table[parent_ino]
        return "/".join(reversed(parts))

    def path_of_link(self, parent: Node, name: str) -> str:
        base = self.path_of(parent)
        return f"{base}/{name}" if base else name

    def resolve(self, path: str) -> Node:
        node = self.table[ROOT_INO]
        for part in (p for p in path.split("/") if p):
            node = self.lookup(node.ino, part)
        return node

    def _resolve_parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rpartition("/")
        return self.resolve(head), name

    def readlink(self, node: Node) -> str:
        if node.kind is not Kind.SYMLINK:
            raise os_error(errno.EINVAL)
        return node.target

    def listxattr(self, node: Node) -> list[str]:
        return sorted(node.xattrs)

    def getxattr(self, node: Node, name: str) -> bytes:
        try:
            return node.xattrs[name]
        except KeyError:
            raise os_error(errno.ENODATA) from None

    # -- content ------------------------------------------------------------------------------
    def read(self, node: Node, offset: int, size: int) -> bytes:
        if node.scratch is not None:
            return node.scratch.pread(size, offset)
        end = min(offset + size, node.size)
        if offset >= end:
            return b""
        if self._inline(node):
            chunk = node.chunks[0][1]
            data = self.blobs.get(chunk)  # verified as it is read
            self._verified_chunks.add(chunk)
            return data[offset:end].ljust(end - offset, b"\0")
        parts = []
        while offset < end:
            index, within = divmod(offset, CHUNK_SIZE)
            count = min(end - offset, CHUNK_SIZE - within)
            digest = chunk_at(node.chunks, index)
            if digest is None:  # a hole
                parts.append(bytes(count))
            else:  # a blob shorter than its chunk: zeros follow
                parts.append(os.pread(self._blob_fd(digest), count, within).ljust(count, b"\0"))
            offset += count
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_plan(self, node: Node, offset: int, size: int) -> ReadPlan:
        """What a read of this range wants verified first, and what to verify ahead.

        A chunk is verified by reading and hashing all of it once per process (where blobs
        are remote: fetching it first); doing that off the loop, ahead of a sequential
        reader, keeps cold reads streaming. Ahead: the next chunk (four ahead of a reader
        of remote blobs made cold reads no faster and warm ones slower: measured); for a
        reader of the small remote files of a directory, one after the other, the next
        few of them. Written files (scratch) and
        small local files (read inline) need nothing.
        """
        if node.scratch is not None or not node.chunks or size <= 0 or self._inline(node):
            return ReadPlan()
        first = offset // CHUNK_SIZE
        last = min(offset + size - 1, max(node.size - 1, 0)) // CHUNK_SIZE
        verified = self._verified_chunks
        need = []
        for index in range(first, last + 1):
            digest = chunk_at(node.chunks, index)
            if digest is not None and digest not in verified:
                need.append(digest)
        ahead = []
        after = chunk_at(node.chunks, last + 1)
        if after is not None and after not in verified:
            ahead.append(after)
        if not self._local_blobs and len(node.chunks) == 1 and node.size <= CHUNK_SIZE:
            ahead += self._small_files_after(node)
        return ReadPlan(tuple(need), tuple(ahead))

    def _small_files_after(self, node: Node) -> list[Digest]:
        """For a reader going through a directory's small files in order (this read's file
        follows the last one read): the unverified blobs of the next few one-chunk files."""
        if not node.links:
            return []
        parent_ino, name = min(node.links)
        parent = self.table.get(parent_ino)
        if parent is None or parent.children is None or isinstance(parent.children, Listing):
            return []  # not loaded, or a huge directory: its order would load all of it
        order = self._sibling_orders.get(parent_ino)
        if order is None or order[0] is not parent.children:
            names = list(parent.children)
            order = (parent.children, names, {n: i for i, n in enumerate(names)})
            self._sibling_orders[parent_ino] = order
            if len(self._sibling_orders) > SIBLING_ORDERS:
                self._sibling_orders.popitem(last=False)
        self._sibling_orders.move_to_end(parent_ino)
        children, names, position = order
        at = position.get(name)
        if at is None:  # created since the order was taken
            return []
        follows = self._last_small_read == (parent_ino, at - 1)
        self._last_small_read = (parent_ino, at)
        if not follows:
            return []  # one file read on its own fetches nothing else
        ahead = []
        for sibling in names[at + 1 : at + 1 + REMOTE_FILES_AHEAD]:
            child = self.table.get(children.get(sibling, 0))
            if (
                child is not None
                and child.kind is Kind.FILE
                and child.scratch is None
                and len(child.chunks) == 1
                and child.size <= CHUNK_SIZE
                and child.chunks[0][1] not in self._verified_chunks
            ):
                ahead.append(child.chunks[0][1])
        return ahead

    def _inline(self, node: Node) -> bool:
        """A small committed file on local disk: read whole and verified on the loop, which
        costs less than a verification in a worker thread (a read of a 4 KiB file: one open
        and one read instead of a thread round trip, two opens and two reads)."""
        return (
            self._local_blobs
            and node.size <= INLINE_READ
            and len(node.chunks) == 1
            and node.chunks[0][0] == 0
        )

    def verify_chunk(self, digest: Digest) -> None:
        """Reads and checks one chunk blob (any thread); raises CorruptionError if damaged."""
        if digest not in self._verified_chunks:
            os.close(self.blobs.open_verified(digest))
            self._verified_chunks.add(digest)

    def _blob_fd(self, digest: Digest) -> int:
        """A verified fd of a chunk blob, from the LRU cache (scratch files read their
        committed chunks through it too)."""
        fd = self._blob_fds.get(digest)
        if fd is not None:
            self._blob_fds.move_to_end(digest)
            return fd
        fd = self.blobs.open_verified(digest)
        self._blob_fds[digest] = fd
        if len(self._blob_fds) > BLOB_FD_CACHE:
            os.close(self._blob_fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        for fd in self._blob_fds.values():
            os.close(fd)
        self._blob_fds.clear()
