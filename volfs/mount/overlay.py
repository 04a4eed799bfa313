"""A mount's view: its base snapshot plus a private scratch area, and how it commits.

The view is an :class:`~volfs.mount.inodes.InodeTable` whose nodes start as the committed
entries of the base snapshot (loaded lazily, one directory at a time) and change as the
mount writes: content goes to scratch files under ``<overlay>/scratch/``, the shape of
the view (creates, deletes, renames, chmod…) is kept in memory and appended to the
journal (``journal.py``) so a crashed daemon loses nothing.

Committing builds the view's Merkle tree, rebuilding only what changed since the last
build (each node caches its entry; a change clears the cache up to the root), diffs it
against the view the mount last committed (``changes.diff``) and publishes that diff
with ``commit.commit_changes``, which merges it onto the current head. The view itself
does not change. The work is split in phases so the daemon can hash big files off the
trio loop while the mount keeps serving (see :meth:`Overlay.prepare_commit`).

Reloading switches the view to a new head in one synchronous step (no await), diffing
the committed view against the head to touch only what changed, and returns the kernel
cache invalidations the FUSE layer must send.

Errors are ``OSError`` with the errno a filesystem gives (the FUSE adapter passes them
on) or :class:`~volfs.errors.VolfsError`. No pyfuse3 and no trio here: every method is
synchronous and must be called from one thread (the trio loop), except
:meth:`Overlay.hash_files` and :meth:`Overlay.publish`, which are made to run in a worker
thread on data handed to them.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import secrets
import stat
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volfs.blobs import Digest
from volfs.blobs.local import BlobBatch, LocalBlobStore
from volfs.catalog import SnapshotRecord, VolumeRecord, entry_from_json, entry_to_json
from volfs.core.changes import Dir, diff
from volfs.snapshots.commit import CommitResult, commit_changes
from volfs.clock import now_ns
from volfs.config import CHUNK_SIZE, MAX_FILE_SIZE, NAME_MAX
from volfs.errors import OpenFilesError
from volfs.mount.inodes import ROOT_INO, InodeTable, Node
from volfs.mount.journal import Journal
from volfs.mount.scratch import ScratchFile, ScratchStats, has_data
from volfs.store import Store
from volfs.core.tree import META_FIELDS, Chunks, Entry, Kind, Tree, TreeWriter, chunk_at, chunk_span

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
MAX_XATTR_VALUE = 64 * 1024
BLOB_FD_CACHE = 256
INLINE_READ = 128 * 1024


def _err(code: int, what: str = "") -> OSError:
    return OSError(code, os.strerror(code) + (f": {what}" if what else ""))


def _check_name(name: str) -> None:
    if len(os.fsencode(name)) > NAME_MAX:
        raise _err(errno.ENAMETOOLONG)


def new_link_id() -> int:
    """A link group's id: random, so groups two mounts create at once never collide."""
    return secrets.randbits(63) | 1


@dataclass
class HashJob:
    ino: int
    version: int
    #: (chunk index, fd, path) of each segment, frozen by ScratchFile.freeze; hashing closes them.
    segments: list[tuple[int, int, str]]
    base: Chunks  # the committed chunks the file still has: stored already
    size: int


@dataclass
class HashResult:
    version: int
    chunks: Chunks
    size: int
    frozen: frozenset[int] = frozenset()  # the segments hashed
    adopted: frozenset[int] = frozenset()  # of those, the ones now linked as blobs


@dataclass
class PendingCommit:
    view: Entry
    writer: TreeWriter
    results: dict[int, HashResult]
    result: CommitResult | None = None


@dataclass
class Invalidation:
    ino: int
    name: str | None = None  # an entry of directory ``ino``; None: the inode itself
    attr_only: bool = False


@dataclass
class OverlayStats:
    copy_ups: int = 0  # scratch files made for committed files (no bytes copied until written)
    files_hashed: int = 0
    commits: int = 0
    reloads: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Overlay:
    def __init__(self, store: Store, volume: VolumeRecord, base: SnapshotRecord, overlay_dir: Path,
                 *, read_only: bool = False, view: Entry | None = None) -> None:
        self.store = store
        self.catalog = store.catalog
        self.blobs = store.blobs
        self._local_blobs = isinstance(store.blobs, LocalBlobStore)
        self.volume = volume
        self.read_only = read_only
        self.base_snapshot = base.id
        #: The view as this mount last committed it (or its base): what the next commit diffs
        #: against. Its trees are in the catalog.
        self.committed_view: Entry = view or base.root
        self.dir = overlay_dir
        self.scratch_dir = overlay_dir / "scratch"
        self.scratch_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.scratch_stats = ScratchStats()
        self._scratch_listing: list[str] | None = None  # during replay: the scratch names
        self.table = InodeTable()
        self.table.add_root(Node.from_entry(ROOT_INO, self.committed_view))
        self._scratch_nodes: set[int] = set()
        self._seq = 1 + max((int(n[1:]) for n in os.listdir(self.scratch_dir) if n[1:].isdigit()), default=0)
        self._blob_fds: OrderedDict[Digest, int] = OrderedDict()
        self._verified_chunks: set[Digest] = set()
        self._replaying = False
        self.stats = OverlayStats()
        self.journal: Journal | None = None
        if not read_only:
            self.journal = Journal(overlay_dir / "journal")
            if view is None:
                self._rewrite_journal()

    # -- reading the view ----------------------------------------------------------------
    def node(self, ino: int) -> Node:
        node = self.table.get(ino)
        if node is None:
            raise _err(errno.ENOENT, f"inode {ino}")
        return node

    def children(self, node: Node) -> dict[str, int]:
        if node.kind is not Kind.DIR:
            raise _err(errno.ENOTDIR)
        if node.children is None:
            assert node.base is not None and node.base.tree is not None
            children: dict[str, int] = {}
            for entry in self.catalog.get_tree(node.base.tree).entries:
                child = self.table.from_entry(entry)
                child.links.add((node.ino, entry.name))
                children[entry.name] = child.ino
            node.children = children
        return node.children

    def lookup(self, parent_ino: int, name: str) -> Node:
        parent = self.node(parent_ino)
        if name == ".":
            return parent
        if name == "..":
            return self.node(parent.parent() or ROOT_INO)
        _check_name(name)
        ino = self.children(parent).get(name)
        if ino is None:
            raise _err(errno.ENOENT)
        return self.table[ino]

    def path_of(self, node: Node) -> str | None:
        parts: list[str] = []
        while node.ino != ROOT_INO:
            if not node.links:
                return None
            parent_ino, name = min(node.links)
            parts.append(name)
            node = self.table[parent_ino]
        return "/".join(reversed(parts))

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
            raise _err(errno.EINVAL)
        return node.target

    def read(self, node: Node, offset: int, size: int) -> bytes:
        if node.scratch is not None:
            return node.scratch.pread(size, offset)
        end = min(offset + size, node.size)
        if offset >= end:
            return b""
        if self._inline(node):
            digest = node.chunks[0][1]
            data = self.blobs.get(digest)  # verified as it is read
            self._verified_chunks.add(digest)
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

    def chunks_to_verify(self, node: Node, offset: int, size: int) -> tuple[list[Digest], list[Digest]]:
        """(chunks a read of this range needs verified first, the chunk after it).

        A chunk is verified by reading and hashing all of it once per process; doing that
        off the loop, one chunk ahead of a sequential reader, keeps cold reads streaming.
        """
        if node.scratch is not None or not node.chunks or size <= 0 or self._inline(node):
            return [], []
        first = offset // CHUNK_SIZE
        last = min(offset + size - 1, max(node.size - 1, 0)) // CHUNK_SIZE
        verified = self._verified_chunks
        need = []
        for index in range(first, last + 1):
            digest = chunk_at(node.chunks, index)
            if digest is not None and digest not in verified:
                need.append(digest)
        ahead = chunk_at(node.chunks, last + 1)
        return need, [ahead] if ahead is not None and ahead not in verified else []

    def _inline(self, node: Node) -> bool:
        """A small committed file on local disk: read whole and verified on the loop, which
        costs less than a verification in a worker thread (a read of a 4 KiB file: one open
        and one read instead of a thread round trip, two opens and two reads)."""
        return (self._local_blobs and node.size <= INLINE_READ and len(node.chunks) == 1
                and node.chunks[0][0] == 0)

    def verify_chunk(self, digest: Digest) -> None:
        """Reads and checks one chunk blob (any thread); raises CorruptionError if damaged."""
        if digest not in self._verified_chunks:
            os.close(self.blobs.open_verified(digest))
            self._verified_chunks.add(digest)

    def _blob_fd(self, digest: Digest) -> int:
        fd = self._blob_fds.get(digest)
        if fd is not None:
            self._blob_fds.move_to_end(digest)
            return fd
        fd = self.blobs.open_verified(digest)
        self._blob_fds[digest] = fd
        if len(self._blob_fds) > BLOB_FD_CACHE:
            os.close(self._blob_fds.popitem(last=False)[1])
        return fd

    def listxattr(self, node: Node) -> list[str]:
        return sorted(node.xattrs)

    def getxattr(self, node: Node, name: str) -> bytes:
        try:
            return node.xattrs[name]
        except KeyError:
            raise _err(errno.ENODATA) from None

    # -- changing the view ---------------------------------------------------------------
    def _writable(self) -> None:
        if self.read_only:
            raise _err(errno.EROFS)

    def _log(self, *record: Any) -> None:
        # A path of None: a file open but unlinked (fchmod, fsetxattr…) has nothing to
        # recover, and the record would make the journal unreplayable.
        if self.journal is not None and not self._replaying and record[1] is not None:
            self.journal.append(*record)

    def _invalidate(self, node: Node) -> None:
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
                parent = self.table.get(parent_ino)
                if parent is not None and parent.cached is not None:
                    stack.append(parent)

    def _dir_changed(self, parent: Node) -> None:
        parent.mtime_ns = parent.ctime_ns = now_ns()
        self._invalidate(parent)

    def _check_new_name(self, parent: Node, name: str) -> dict[str, int]:
        self._writable()
        children = self.children(parent)
        _check_name(name)
        if name in children:
            raise _err(errno.EEXIST, name)
        return children

    def _attach(self, parent: Node, name: str, node: Node) -> None:
        self.children(parent)[name] = node.ino
        node.links.add((parent.ino, name))
        self._dir_changed(parent)

    def _detach(self, parent: Node, name: str, node: Node) -> None:
        del self.children(parent)[name]
        node.links.discard((parent.ino, name))
        node.ctime_ns = now_ns()
        self._dir_changed(parent)

    def _new_scratch(self, *, base: Chunks = (), size: int = 0,
                     times: tuple[int, int] | None = None) -> ScratchFile:
        name = f"f{self._seq}"
        self._seq += 1
        return ScratchFile.create(str(self.scratch_dir), name, self._blob_fd, self.scratch_stats,
                                  base=base, size=size, times=times)

    @staticmethod
    def _new_gid(parent: Node, gid: int) -> int:
        """The group of a new entry: a setgid directory's own, as on ext4 (the kernel leaves
        this to FUSE filesystems)."""
        return parent.gid if parent.mode & stat.S_ISGID else gid

    def create(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Node:
        parent = self.node(parent_ino)
        self._check_new_name(parent, name)
        node = self.table.new(Kind.FILE, mode & 0o7777, uid, self._new_gid(parent, gid))
        node.scratch = self._new_scratch()
        node.content_dirty = True
        self._scratch_nodes.add(node.ino)
        self._attach(parent, name, node)
        self._log("create", self.path_of(node), node.mode, uid, gid, node.scratch.name)
        return node

    def mkdir(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Node:
        parent = self.node(parent_ino)
        self._check_new_name(parent, name)
        mode |= parent.mode & stat.S_ISGID  # a setgid directory's subdirectories stay setgid
        node = self.table.new(Kind.DIR, mode & 0o7777, uid, self._new_gid(parent, gid))
        node.children = {}
        self._attach(parent, name, node)
        self._log("mkdir", self.path_of(node), node.mode, uid, gid)
        return node

    def symlink(self, parent_ino: int, name: str, target: str, uid: int, gid: int) -> Node:
        parent = self.node(parent_ino)
        self._check_new_name(parent, name)
        node = self.table.new(Kind.SYMLINK, 0o777, uid, self._new_gid(parent, gid))
        node.target = target
        node.size = len(os.fsencode(target))
        self._attach(parent, name, node)
        self._log("symlink", self.path_of(node), target, uid, gid)
        return node

    def mknod(self, parent_ino: int, name: str, kind: Kind, mode: int, rdev: int, uid: int,
              gid: int) -> Node:
        """A FIFO, unix socket node or device node: an inode with no content."""
        if not kind.is_special:
            raise _err(errno.EINVAL)
        parent = self.node(parent_ino)
        self._check_new_name(parent, name)
        node = self.table.new(kind, mode & 0o7777, uid, self._new_gid(parent, gid))
        if kind in (Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE):
            node.rdev = rdev
        self._attach(parent, name, node)
        self._log("mknod", self.path_of(node), int(kind), node.mode, node.rdev, uid, gid)
        return node

    def link(self, ino: int, parent_ino: int, name: str) -> Node:
        node = self.node(ino)
        parent = self.node(parent_ino)
        if node.kind is Kind.DIR:
            raise _err(errno.EPERM)
        self._check_new_name(parent, name)
        existing = self.path_of(node)
        if not node.link_id:
            self.table.set_link(node, new_link_id())
        self._attach(parent, name, node)
        node.ctime_ns = now_ns()
        self._invalidate(node)
        if existing is not None:
            self._log("link", existing, self.path_of_link(parent, name))
        return node

    def path_of_link(self, parent: Node, name: str) -> str:
        base = self.path_of(parent)
        return f"{base}/{name}" if base else name

    def unlink(self, parent_ino: int, name: str) -> None:
        self._writable()
        parent = self.node(parent_ino)
        node = self.lookup(parent_ino, name)
        if node.kind is Kind.DIR:
            raise _err(errno.EISDIR)
        path = self.path_of_link(parent, name)
        self._detach(parent, name, node)
        self._invalidate(node)
        self._log("unlink", path)
        self._maybe_drop(node)

    def rmdir(self, parent_ino: int, name: str) -> None:
        self._writable()
        parent = self.node(parent_ino)
        node = self.lookup(parent_ino, name)
        if node.kind is not Kind.DIR:
            raise _err(errno.ENOTDIR)
        if self.children(node):
            raise _err(errno.ENOTEMPTY)
        path = self.path_of_link(parent, name)
        self._detach(parent, name, node)
        self._log("rmdir", path)
        self._maybe_drop(node)

    def rename(self, old_parent_ino: int, old_name: str, new_parent_ino: int, new_name: str,
               flags: int = 0) -> None:
        self._writable()
        old_parent = self.node(old_parent_ino)
        new_parent = self.node(new_parent_ino)
        node = self.lookup(old_parent_ino, old_name)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise _err(errno.EINVAL)
        _check_name(new_name)
        if node.kind is Kind.DIR:
            self._not_into_itself(node, new_parent)
        target_ino = self.children(new_parent).get(new_name)
        if flags & RENAME_EXCHANGE:
            if target_ino is None:
                raise _err(errno.ENOENT)
            self._exchange(old_parent, old_name, node, new_parent, new_name, self.table[target_ino])
            return
        if target_ino == node.ino:
            return
        old_path = self.path_of_link(old_parent, old_name)
        new_path = self.path_of_link(new_parent, new_name)
        if target_ino is not None:
            if flags & RENAME_NOREPLACE:
                raise _err(errno.EEXIST)
            target = self.table[target_ino]
            if target.kind is Kind.DIR:
                if node.kind is not Kind.DIR:
                    raise _err(errno.EISDIR)
                if self.children(target):
                    raise _err(errno.ENOTEMPTY)
            elif node.kind is Kind.DIR:
                raise _err(errno.ENOTDIR)
            self._detach(new_parent, new_name, target)
            self._invalidate(target)
            self._maybe_drop(target)
        self._detach(old_parent, old_name, node)
        self._attach(new_parent, new_name, node)
        self._invalidate(node)
        self._log("rename", old_path, new_path, flags)

    def _not_into_itself(self, node: Node, new_parent: Node) -> None:
        ancestor: Node | None = new_parent
        while ancestor is not None:
            if ancestor is node:
                raise _err(errno.EINVAL, "cannot move a directory into itself")
            parent_ino = ancestor.parent()
            ancestor = self.table.get(parent_ino) if parent_ino is not None else None

    def _exchange(self, old_parent: Node, old_name: str, node: Node, new_parent: Node,
                  new_name: str, other: Node) -> None:
        """renameat2(RENAME_EXCHANGE): the two names swap what they point at, atomically
        (to a commit it is two writes)."""
        if other is node:
            return
        if other.kind is Kind.DIR:
            self._not_into_itself(other, old_parent)
        old_path = self.path_of_link(old_parent, old_name)
        new_path = self.path_of_link(new_parent, new_name)
        self._detach(old_parent, old_name, node)
        self._detach(new_parent, new_name, other)
        self._attach(new_parent, new_name, node)
        self._attach(old_parent, old_name, other)
        self._invalidate(node)
        self._invalidate(other)
        self._log("rename", old_path, new_path, RENAME_EXCHANGE)

    def setattr(self, node: Node, *, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, size: int | None = None, atime_ns: int | None = None,
                mtime_ns: int | None = None) -> Node:
        self._writable()
        now = now_ns()
        logged: dict[str, int] = {}
        if size is not None:
            if node.kind is Kind.DIR:
                raise _err(errno.EISDIR)
            if node.kind is not Kind.FILE:
                raise _err(errno.EINVAL)
            if size > MAX_FILE_SIZE:
                raise _err(errno.EFBIG)
            self._ensure_scratch(node, keep=size > 0)
            assert node.scratch is not None
            node.scratch.truncate(size)
            node.size = size
            node.mtime_ns = now
            self._content_changed(node)
        if mode is not None:
            node.mode = logged["mode"] = mode & 0o7777
        if uid is not None:
            node.uid = logged["uid"] = uid
        if gid is not None:
            node.gid = logged["gid"] = gid
        if atime_ns is not None:
            node.atime_ns = atime_ns
        if mtime_ns is not None:
            node.mtime_ns = mtime_ns
            if node.scratch is not None:
                # The scratch file carries the mtime through a crash (replay reads it back),
                # so it needs no journal record: the kernel's writeback cache sends one such
                # SETATTR per written file, sometimes two.
                node.scratch.utime(node.atime_ns, mtime_ns)
            else:
                logged["mtime_ns"] = mtime_ns
        node.ctime_ns = now
        self._invalidate(node)
        if logged:
            self._log("setattr", self.path_of(node), logged)
        return node

    def setxattr(self, node: Node, name: str, value: bytes) -> None:
        self._writable()
        if len(value) > MAX_XATTR_VALUE:
            raise _err(errno.E2BIG)
        node.xattrs[name] = value
        node.ctime_ns = now_ns()
        self._invalidate(node)
        self._log("setxattr", self.path_of(node), name, value.hex())

    def removexattr(self, node: Node, name: str) -> None:
        self._writable()
        if name not in node.xattrs:
            raise _err(errno.ENODATA)
        del node.xattrs[name]
        node.ctime_ns = now_ns()
        self._invalidate(node)
        self._log("removexattr", self.path_of(node), name)

    # -- file content ---------------------------------------------------------------------
    def open(self, node: Node, *, write: bool, truncate: bool) -> None:
        if node.kind is not Kind.FILE:
            # The kernel opens FIFOs and devices itself; a symlink is followed before open.
            raise _err(errno.EISDIR if node.kind is Kind.DIR else errno.ELOOP if node.kind is Kind.SYMLINK
                       else errno.ENXIO)
        if write or truncate:
            self._writable()
            if node.size > MAX_FILE_SIZE:
                raise _err(errno.EFBIG)
            self._ensure_scratch(node, keep=not truncate)
            if truncate:
                assert node.scratch is not None
                node.scratch.truncate(0)
                node.size = 0
                node.mtime_ns = node.ctime_ns = now_ns()
                self._content_changed(node)
            node.writers += 1
        node.opens += 1

    def release(self, node: Node, *, write: bool) -> None:
        node.opens -= 1
        if write:
            node.writers -= 1
        if node.opens == 0 and node.scratch is not None:
            node.scratch.close()
        self._maybe_drop(node)

    def write(self, node: Node, offset: int, data: bytes) -> int:
        assert node.scratch is not None
        written = node.scratch.pwrite(data, offset)
        node.size = max(node.size, offset + written)
        node.mtime_ns = node.ctime_ns = now_ns()
        self._content_changed(node)
        return written

    def fsync(self, node: Node, datasync: bool) -> None:
        # Durability of a volume is its commit; fsync makes the scratch data survive a
        # power loss so ``volfs recover`` finds it.
        if node.scratch is not None:
            node.scratch.sync(datasync)

    def _content_changed(self, node: Node) -> None:
        node.version += 1
        node.content_dirty = True
        if node.cached is not None:
            self._invalidate(node)

    def _ensure_scratch(self, node: Node, *, keep: bool) -> None:
        if node.scratch is not None:
            return
        # Copy-up by chunk: the scratch file starts as the committed chunks, copied only
        # where a write or truncate touches them.
        scratch = self._new_scratch(base=node.chunks if keep else (), size=node.size if keep else 0,
                                    times=(node.atime_ns, node.mtime_ns))
        node.scratch = scratch
        self._scratch_nodes.add(node.ino)
        self.stats.copy_ups += 1
        path = self.path_of(node)
        if path is not None:
            self._log("copyup", path, scratch.name)

    def _maybe_drop(self, node: Node) -> None:
        if not node.links and node.opens == 0 and node.lookups <= 0:
            self._scratch_nodes.discard(node.ino)
        self.table.maybe_drop(node)

    def forget(self, ino: int, count: int) -> None:
        node = self.table.get(ino)
        if node is None:
            return
        node.lookups -= count
        self._maybe_drop(node)

    # -- commit, in phases -----------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return self.table[ROOT_INO].cached is None

    def prepare_commit(self) -> list[HashJob]:
        """Phase 1 (loop): which scratch files need hashing."""
        """Phase 1 (loop): which scratch files need hashing, their segments frozen for it.

        Each frozen segment holds an fd until it is hashed: past ``freeze_budget()`` of them,
        the remaining files are hashed on the loop when the view is built (slower, same
        result)."""
        jobs = []
        budget = freeze_budget()
        for ino in list(self._scratch_nodes):
            node = self.table.get(ino)
            if node is not None and node.content_dirty and node.links and node.scratch:
                budget -= node.scratch.open_segments()
                if budget < 0:
                    break
                jobs.append(HashJob(ino, node.version, *node.scratch.freeze()))
        return jobs

    def hash_files(self, jobs: list[HashJob]) -> dict[int, HashResult]:
        """Phase 2 (any thread): stores each scratch file's content as chunk blobs."""
        results = {}
        batch = self.blobs.batch()
        try:
            for job in jobs:
                results[job.ino] = self._store_job(job, batch)
            batch.flush()
        except BaseException:
            batch.discard()
            for job in jobs:
                _close_all(job.segments)
                job.segments = []
            raise
        return results

    def _store_job(self, job: HashJob, batch: BlobBatch) -> HashResult:
        """Stores a file's frozen segments as its chunk blobs, adopting new ones (no copy);
        durable once ``batch`` is flushed. Closes the job's fds."""
        chunks = dict(job.base)  # unchanged committed chunks: stored already, not hashed again
        adopted = set()
        frozen = set()
        try:
            for index, fd, path in job.segments:
                frozen.add(index)
                # A chunk's blob is the segment's bytes, zeros after it implied: a segment
                # with no data at all (zeros written into a hole) is a hole in the tree too.
                length = min(os.fstat(fd).st_size, chunk_span(job.size, index))
                if length <= 0 or not has_data(fd):
                    continue
                digest, _ = batch.add_range(fd, 0, length, adopt=path)
                if not digest:
                    continue
                if os.fstat(fd).st_nlink > 1:  # a blob's inode now (or since an earlier commit)
                    adopted.add(index)
                chunks[index] = digest
        finally:
            _close_all(job.segments)
            job.segments = []
        self.stats.files_hashed += 1
        return HashResult(job.version, tuple(sorted(chunks.items())), job.size, frozenset(frozen),
                          frozenset(adopted))

    def build_view(self, results: dict[int, HashResult]) -> PendingCommit:
        """Phase 3 (loop, no await): the view's Merkle tree, rebuilt where it changed."""
        writer = TreeWriter(self.catalog)
        root = self.table[ROOT_INO]
        entry, _ = self._entry(root, "", writer, results)
        return PendingCommit(entry, writer, results)

    def dirty_paths(self) -> list[str]:
        """What the next commit would publish, without hashing or changing anything."""
        if not self.dirty:
            return []
        writer = TreeWriter(self.catalog)
        view, _ = self._entry(self.table[ROOT_INO], "", writer, {}, dry=True)
        changes = diff(writer, self.committed_view, view)
        # A directory whose only change is its mtime changed because of its entries: the
        # entries are what a user wants to see listed.
        return sorted("/".join(path) or "/" for path, change in changes.items()
                      if not (isinstance(change, Dir) and change.set_meta <= {"mtime_ns"}))

    def _entry(self, node: Node, name: str, writer: TreeWriter,
               results: dict[int, HashResult], dry: bool = False) -> tuple[Entry, bool]:
        """This node as a tree entry, and whether it is clean (cacheable).

        ``dry``: stands in a placeholder digest for unhashed content and caches nothing.
        """
        cached = node.cached
        if cached is not None:
            return (cached if cached.name == name else cached.with_(name=name)), True
        xattrs = tuple(sorted(node.xattrs.items()))
        clean = True
        if node.kind is Kind.DIR:
            meta = Entry(name, Kind.DIR, node.mode, node.uid, node.gid, node.mtime_ns, xattrs=xattrs)
            if node.children is None:
                assert node.base is not None
                entry = meta.with_(tree=node.base.tree, size=node.base.size, files=node.base.files,
                                   links=node.base.links)
            else:
                entries = []
                for child_name, child_ino in node.children.items():
                    child_entry, child_clean = self._entry(self.table[child_ino], child_name, writer,
                                                           results, dry)
                    entries.append(child_entry)
                    clean = clean and child_clean
                entry = writer.dir_entry(meta, Tree.of(entries))
        elif node.kind is Kind.FILE:
            chunks, size = node.chunks, node.size
            if node.content_dirty and dry:
                chunks, clean = ((0, Digest(f"{node.ino:016x}{node.version:016x}")),), False
            elif node.content_dirty:
                result = results.get(node.ino)
                if result is None:  # written after the hashing phase began: hash it now
                    assert node.scratch is not None
                    batch = self.blobs.batch()
                    try:
                        result = results[node.ino] = self._store_job(
                            HashJob(node.ino, node.version, *node.scratch.freeze()), batch)
                        batch.flush()
                    except BaseException:
                        batch.discard()
                        raise
                chunks, size = result.chunks, result.size
                if result.version == node.version:
                    node.chunks = chunks
                    node.content_dirty = False
                else:
                    clean = False
            entry = Entry(name, Kind.FILE, node.mode, node.uid, node.gid, node.mtime_ns, size,
                          chunks, xattrs=xattrs)
        elif node.kind is Kind.SYMLINK:
            entry = Entry(name, Kind.SYMLINK, node.mode, node.uid, node.gid, node.mtime_ns,
                          node.size, target=node.target, xattrs=xattrs)
        else:
            entry = Entry(name, node.kind, node.mode, node.uid, node.gid, node.mtime_ns,
                          rdev=node.rdev, xattrs=xattrs)
        if node.kind is not Kind.DIR:
            nlink = node.nlink
            if nlink > 1 and node.link_id:
                entry = entry.with_(link=node.link_id, nlink=nlink)
        if clean and not dry:
            node.cached = entry
        return entry, clean

    def publish(self, pending: PendingCommit, *, if_unchanged: bool = False, origin: str = "mount") -> CommitResult:
        """Phase 4 (any thread): merge the diff since the last commit onto the head."""
        changes = diff(pending.writer, self.committed_view, pending.view)
        try:
            result = commit_changes(self.catalog, self.volume.id, lambda head: changes, origin=origin,
                                    if_unchanged=if_unchanged, extra_trees=pending.writer.pending)
        except BaseException:
            # Not published (a backend unreachable, a conflict): build_view cached the view's
            # root, which would make the mount look clean; the next commit must try again.
            self.table[ROOT_INO].cached = None
            raise
        self.catalog.remember_trees(pending.writer.decoded)
        pending.result = result
        return result

    def finish_commit(self, pending: PendingCommit) -> None:
        """Phase 5 (loop): the committed view moves; closed scratch files become blobs."""
        self.committed_view = pending.view
        self.stats.commits += 1
        for ino, hashed in pending.results.items():  # segments not adopted may change in place again
            node = self.table.get(ino)
            if node is not None and node.scratch is not None:
                node.scratch.shared -= hashed.frozen - hashed.adopted
        done: list[ScratchFile] = []
        for ino in list(self._scratch_nodes):
            node = self.table.get(ino)
            if node is None or not node.links or node.scratch is None:
                continue
            if node.opens == 0 and not node.content_dirty and node.cached is not None:
                done.append(node.scratch)
                node.scratch = None
                self._scratch_nodes.discard(ino)
        # The journal first: until it names the view just committed, its records name these
        # scratch files, and a crash in between would have recover replay them as empty files.
        self._rewrite_journal()
        for scratch in done:
            scratch.unlink()

    def commit_now(self, *, if_unchanged: bool = False, origin: str = "mount") -> CommitResult:
        """All phases in a row: for recovery, tests and the final commit."""
        if self.read_only:
            return CommitResult(None)
        with self.catalog.lease(f"{origin} commit"):  # gc keeps what it writes or reuses
            pending = self.build_view(self.hash_files(self.prepare_commit()))
            result = self.publish(pending, if_unchanged=if_unchanged, origin=origin)
            self.finish_commit(pending)
        return result

    def _rewrite_journal(self) -> None:
        if self.journal is None:
            return
        records: list[list[Any]] = [["view", entry_to_json(self.committed_view), self.base_snapshot]]
        for ino in sorted(self._scratch_nodes):
            node = self.table.get(ino)
            if node is None or not node.links or node.scratch is None:
                continue
            paths = sorted(self.path_of_link(self.table[p], n) for p, n in node.links)
            records.append(["copyup", paths[0], node.scratch.name])
            records.extend(["link", paths[0], other] for other in paths[1:])
        self.journal.rewrite(records)

    # -- reload ------------------------------------------------------------------------------
    def open_files(self) -> Iterator[Node]:
        for node in self.table:
            if node.opens > 0:
                yield node

    def rebase(self, head: SnapshotRecord) -> list[Invalidation]:
        """Switches the view to ``head`` in one step; returns the kernel invalidations.

        The caller committed first and checked that nothing changed since and that no
        file is open.
        """
        if self.dirty or any(True for _ in self.open_files()):
            raise OpenFilesError("the view changed while reloading; try again")
        invalidations: list[Invalidation] = []
        self._rebase_dir(self.table[ROOT_INO], head.root, invalidations)
        self.base_snapshot = head.id
        self.committed_view = head.root
        self.stats.reloads += 1
        self._rewrite_journal()
        return invalidations

    def _rebase_dir(self, node: Node, new: Entry, out: list[Invalidation]) -> None:
        old = node.cached
        assert old is not None
        meta_changed = any(getattr(old, f) != getattr(new, f) for f in META_FIELDS)
        if old.tree == new.tree and not meta_changed:
            return
        self._set_meta(node, new)
        node.base = new
        node.cached = new
        if meta_changed:
            out.append(Invalidation(node.ino, attr_only=True))
        if node.children is None:
            return
        assert new.tree is not None
        tree = self.catalog.get_tree(new.tree)
        for name, child_ino in list(node.children.items()):
            child = self.table[child_ino]
            entry = tree.get(name)
            if entry is not None and entry.kind is child.kind is Kind.DIR:
                self._rebase_dir(child, entry, out)
                continue
            if entry is not None and child.cached is not None and child.cached.with_(name=name) == entry:
                continue
            # A file with other names is one node for all of them: a changed one is loaded
            # afresh, so its node (and st_nlink) follows the new snapshot's group.
            linked = entry is not None and (entry.link or child.link_id)
            if (entry is not None and not linked and child.cached is not None
                    and child.cached.same_content(entry)):
                if any(getattr(child.cached, f) != getattr(entry, f) for f in META_FIELDS):
                    self._set_meta(child, entry)
                    out.append(Invalidation(child.ino, attr_only=True))
                child.cached = entry
                continue
            del node.children[name]
            child.links.discard((node.ino, name))
            out.append(Invalidation(node.ino, name))
            self._maybe_drop(child)
            if entry is not None:
                self._add_child(node, entry)
        for entry in tree.entries:
            if entry.name not in node.children:
                self._add_child(node, entry)
                out.append(Invalidation(node.ino, entry.name))

    def _add_child(self, parent: Node, entry: Entry) -> None:
        child = self.table.from_entry(entry, reloading=True)
        child.links.add((parent.ino, entry.name))
        assert parent.children is not None
        parent.children[entry.name] = child.ino

    @staticmethod
    def _set_meta(node: Node, entry: Entry) -> None:
        """A committed entry's metadata on a node (link groups are not kept: see rebase)."""
        node.mode, node.uid, node.gid = entry.mode, entry.uid, entry.gid
        node.mtime_ns = node.ctime_ns = entry.mtime_ns
        node.xattrs = dict(entry.xattrs)

    # -- recovery ------------------------------------------------------------------------------
    def replay(self, records: list[list[Any]]) -> int:
        """Re-applies journal records (all but the first, "view") onto this view."""
        self._replaying = True
        self._scratch_listing = os.listdir(self.scratch_dir)
        applied = 0
        try:
            for record in records:
                try:
                    self._replay_one(record)
                    applied += 1
                except OSError as exc:
                    log.warning("recover: skipping %s: %s", record[:2], exc)
        finally:
            self._replaying = False
            self._scratch_listing = None
        for ino in list(self._scratch_nodes):
            node = self.table.get(ino)
            if node is not None and node.scratch is not None:
                try:
                    node.mtime_ns = node.scratch.mtime_ns()
                except FileNotFoundError:
                    continue
                node.size = node.scratch.size
        return applied

    def _replay_one(self, record: list[Any]) -> None:
        op, path, *args = record
        if op == "create":
            parent, name = self._resolve_parent(path)
            mode, uid, gid, scratch = args
            node = self.table.new(Kind.FILE, mode, uid, gid)
            self._adopt(node, scratch)
            self._attach(parent, name, node)
        elif op == "copyup":
            self._adopt(self.resolve(path), args[0])
        elif op == "mkdir":
            parent, name = self._resolve_parent(path)
            self.mkdir(parent.ino, name, *args)
        elif op == "symlink":
            parent, name = self._resolve_parent(path)
            self.symlink(parent.ino, name, *args)
        elif op == "mknod":
            parent, name = self._resolve_parent(path)
            kind, mode, rdev, uid, gid = args
            self.mknod(parent.ino, name, Kind(kind), mode, rdev, uid, gid)
        elif op == "unlink":
            parent, name = self._resolve_parent(path)
            self.unlink(parent.ino, name)
        elif op == "rmdir":
            parent, name = self._resolve_parent(path)
            self.rmdir(parent.ino, name)
        elif op == "rename":
            old_parent, old_name = self._resolve_parent(path)
            new_parent, new_name = self._resolve_parent(args[0])
            self.rename(old_parent.ino, old_name, new_parent.ino, new_name, args[1])
        elif op == "link":
            node = self.resolve(path)
            parent, name = self._resolve_parent(args[0])
            if self.children(parent).get(name) == node.ino:
                return  # a name the view's link group holds already
            self.link(node.ino, parent.ino, name)
        elif op == "setattr":
            self.setattr(self.resolve(path), **args[0])
        elif op == "setxattr":
            self.setxattr(self.resolve(path), args[0], bytes.fromhex(args[1]))
        elif op == "removexattr":
            self.removexattr(self.resolve(path), args[0])
        else:
            raise _err(errno.EINVAL, f"unknown journal record {op!r}")

    def _adopt(self, node: Node, scratch: str) -> None:
        if node.scratch is not None and node.scratch.name != scratch:
            node.scratch.close()
        node.scratch = ScratchFile.existing(str(self.scratch_dir), scratch, self._blob_fd,
                                            self.scratch_stats, self._scratch_listing)
        node.content_dirty = True
        node.version += 1
        self._scratch_nodes.add(node.ino)
        self._invalidate(node)

    @staticmethod
    def view_from_journal(records: list[list[Any]]) -> tuple[Entry, str]:
        kind, root, base = records[0]
        if kind != "view":
            raise ValueError("journal does not start with its view")
        return entry_from_json(root), base

    def close(self) -> None:
        for fd in self._blob_fds.values():
            os.close(fd)
        self._blob_fds.clear()
        for node in self.table:
            if node.scratch is not None:
                node.scratch.close()
        if self.journal is not None:
            self.journal.close()
            self.journal = None


def freeze_budget() -> int:
    """How many segment fds one commit may hold frozen: a quarter of the fd limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(256, soft // 4) if soft != resource.RLIM_INFINITY else 1 << 20


def _close_all(segments: list[tuple[int, int, str]]) -> None:
    for _, fd, _ in segments:
        os.close(fd)
