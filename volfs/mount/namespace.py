"""Changing a mount's view, and logging every change to its journal.

Owns the writable state of an overlay (its scratch area, the journal, the view it last
committed) and every change a mount makes: names (create, mkdir, symlink, mknod, link,
unlink, rmdir, rename with RENAME_NOREPLACE and RENAME_EXCHANGE), metadata and xattrs,
file content (a scratch file per written file, copied up by chunk from the committed
one) and node lifetimes (a node goes when it has no name, no kernel reference and no open
handle). The shape of the view is kept in memory and appended to the journal
(``journal.py``) so a crashed daemon loses nothing; content is in the scratch files.

Must not hash, build trees or publish (``publish.py``), switch heads (``rebase.py``) or
know of pyfuse3 or trio. Synchronous, one thread (the trio loop). Errors are ``OSError``
with a filesystem's errno.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volfs.catalog import SnapshotRecord, VolumeRecord, entry_to_json
from volfs.clock import now_ns
from volfs.core.tree import Chunks, Entry, Kind
from volfs.mount.inodes import NO_XATTRS, ROOT_INO, Children, Node
from volfs.mount.journal import Journal
from volfs.mount.scratch import REMOVER, ScratchFile, ScratchStats, check_size, chunk_span
from volfs.mount.view import ViewReader, check_name, os_error
from volfs.store import Store

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
MAX_XATTR_VALUE = 64 * 1024


def new_link_id() -> int:
    """A link group's id: random, so groups two mounts create at once never collide."""
    return secrets.randbits(63) | 1


@dataclass
class OverlayStats:
    copy_ups: int = 0  # scratch files made for committed files (no bytes copied until written)
    files_hashed: int = 0
    commits: int = 0
    reloads: int = 0
    extra: dict[str, int] = field(default_factory=dict)


@dataclass
class Orphan:
    """An open file a keep-open reload took out of the view (``orphans.py``)."""

    #: The volume path the descriptors opened.
    path: str
    #: The committed entry they opened there: what their writes overwrite.
    seen: Entry | None
    #: Written since the reload: the next commit puts it back at ``path``.
    written: bool = False


class Namespace(ViewReader):
    """The view as the mount changes it; :class:`~volfs.mount.overlay.Overlay` adds
    committing, reloading and recovery on top."""

    def __init__(
        self,
        store: Store,
        volume: VolumeRecord,
        base: SnapshotRecord,
        overlay_dir: Path,
        *,
        read_only: bool = False,
        view: Entry | None = None,
    ) -> None:
        #: The view as this mount last committed it (or its base): what the next commit diffs
        #: against. Its trees are in the catalog.
        self.committed_view: Entry = view or base.root
        super().__init__(store, self.committed_view)
        self.volume = volume
        self.read_only = read_only
        self.base_snapshot = base.id
        self.dir = overlay_dir
        self.scratch_dir = overlay_dir / "scratch"
        self.scratch_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.scratch_stats = ScratchStats()
        #: Where blobs go to a bucket, full segments of sequential writers are uploaded
        #: while the rest is written, so a commit waits only for the tail (README).
        self._segment_sink = store.blobs.upload_ahead if store.blobs.bucket is not None else None
        self._scratch_nodes: set[int] = set()  # the nodes with a scratch file
        self._seq = 1 + max(
            (int(n[1:]) for n in os.listdir(self.scratch_dir) if n[1:].isdigit()), default=0
        )
        #: Set while recovery replays the journal: what it re-applies is logged already.
        self._replaying = False
        self.stats = OverlayStats()
        #: Open files a keep-open reload detached from the view, by ino (``orphans.py``).
        self.orphans: dict[int, Orphan] = {}
        #: Paths an adopted orphan's commit overwrites: the entry its descriptor opened.
        self.overwrite_seen: dict[tuple[str, ...], Entry | None] = {}
        #: Changes other than file content, and their count the committed view holds.
        self.shape_changes = 0
        self.shape_changes_committed = 0
        self.journal: Journal | None = None
        if not read_only:
            self.journal = Journal(overlay_dir / "journal")
            if view is None:
                self._rewrite_journal()

    @property
    def dirty(self) -> bool:
        """Anything changed since the last tree build (a change clears the root's cache)."""
        return self.table[ROOT_INO].cached is None

    def dirty_content(self) -> tuple[int, int]:
        """Files whose content changed since the last commit, and the bytes of the chunks
        they changed (the scratch area a commit would hash). For statistics: callable from
        another thread (the metrics server), where it may be a moment out of date."""
        files = size = 0
        for ino in tuple(self._scratch_nodes):  # a copy taken at once, under the GIL
            node = self.table.get(ino)
            if node is None or not node.content_dirty:
                continue
            scratch = node.scratch  # once: another thread may see it become None
            if scratch is None:
                continue
            files += 1
            shared = scratch.shared
            size += sum(
                chunk_span(scratch.size, i) for i in tuple(scratch.segments) if i not in shared
            )
        return files, size

    # -- the journal ------------------------------------------------------------------------
    def _log(self, *record: Any) -> None:
        # Every change but file content is logged: a count that did not move since the last
        # commit means only content changed (rebase.py may then switch a dirty view).
        self.shape_changes += 1
        # A path of None: a file open but unlinked (fchmod, fsetxattr…) has nothing to
        # recover, and the record would make the journal unreplayable.
        if self.journal is not None and not self._replaying and record[1] is not None:
            self.journal.append(*record)

    def _rewrite_journal(
        self,
        start: list[tuple[str | None, list[list[Any]]]] | None = None,
        gone: frozenset[str] = frozenset(),
    ) -> None:
        """The journal afresh: ``start`` (by default the committed view, then each scratch
        file still to commit) less the records of the scratch files ``gone``, then the
        changes captured since ``start`` was taken (a commit's, while it was published)."""
        if self.journal is None:
            return
        if start is None:
            start = self._journal_start(self.committed_view)
        captured = self.journal.captured()
        self.journal.rewrite(
            [
                *(r for name, records in start if name not in gone for r in records),
                *(r for r in captured if not (r[0] == "copyup" and r[2] in gone)),
            ]
        )

    def _journal_start(self, view: Entry) -> list[tuple[str | None, list[list[Any]]]]:
        """What a journal starting at ``view`` holds before any later change: the view, then
        each scratch file's records (copied up, and its other names), with its name."""
        start: list[tuple[str | None, list[list[Any]]]] = [
            (None, [["view", entry_to_json(view), self.base_snapshot]])
        ]
        for ino in sorted(self._scratch_nodes):
            node = self.table.get(ino)
            if node is None or not node.links or node.scratch is None:
                continue
            paths = sorted(self.path_of_link(self.table[p], n) for p, n in node.links)
            records = [["copyup", paths[0], node.scratch.name]]
            records.extend(["link", paths[0], other] for other in paths[1:])
            start.append((node.scratch.name, records))
        start.append((None, self._orphan_records()))
        return start

    def _orphan_records(self) -> list[list[Any]]:
        """The journal records of orphans written since a reload (``orphans.py``)."""
        return []

    def _orphan_written(self, node: Node) -> None:
        """An orphan (``orphans.py``) was written to."""

    # -- names --------------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.read_only:
            raise os_error(errno.EROFS)

    def _dir_changed(self, parent: Node) -> None:
        parent.mtime_ns = parent.ctime_ns = now_ns()
        self.table.invalidate(parent)

    def _check_new_name(self, parent: Node, name: str) -> Children:
        self._writable()
        _not_deleted(parent)
        children = self.children(parent)
        check_name(name)
        if name in children:
            raise os_error(errno.EEXIST, name)
        return children

    def _attach(self, parent: Node, name: str, node: Node) -> None:
        self.children(parent)[name] = node.ino
        node.add_link(parent.ino, name)
        self._dir_changed(parent)

    def _detach(self, parent: Node, name: str, node: Node) -> None:
        del self.children(parent)[name]
        node.remove_link(parent.ino, name)
        node.ctime_ns = now_ns()
        self._dir_changed(parent)

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

    def mknod(
        self, parent_ino: int, name: str, kind: Kind, mode: int, rdev: int, uid: int, gid: int
    ) -> Node:
        """A FIFO, unix socket node or device node: an inode with no content."""
        if not kind.is_special:
            raise os_error(errno.EINVAL)
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
            raise os_error(errno.EPERM)
        self._check_new_name(parent, name)
        existing = self.path_of(node)
        if not node.link_id:
            self.table.set_link(node, new_link_id())
        self._attach(parent, name, node)
        node.ctime_ns = now_ns()
        self.table.invalidate(node)
        if existing is not None:
            self._log("link", existing, self.path_of_link(parent, name))
        return node

    def unlink(self, parent_ino: int, name: str) -> None:
        self._writable()
        parent = self.node(parent_ino)
        node = self.lookup(parent_ino, name)
        if node.kind is Kind.DIR:
            raise os_error(errno.EISDIR)
        path = self.path_of_link(parent, name)
        self._detach(parent, name, node)
        self.table.invalidate(node)
        self._log("unlink", path)
        self._maybe_drop(node)

    def rmdir(self, parent_ino: int, name: str) -> None:
        self._writable()
        parent = self.node(parent_ino)
        node = self.lookup(parent_ino, name)
        if node.kind is not Kind.DIR:
            raise os_error(errno.ENOTDIR)
        if self.children(node):
            raise os_error(errno.ENOTEMPTY)
        path = self.path_of_link(parent, name)
        self._detach(parent, name, node)
        self._log("rmdir", path)
        self._maybe_drop(node)

    def rename(
        self, old_parent_ino: int, old_name: str, new_parent_ino: int, new_name: str, flags: int = 0
    ) -> None:
        self._writable()
        old_parent = self.node(old_parent_ino)
        new_parent = self.node(new_parent_ino)
        node = self.lookup(old_parent_ino, old_name)
        if (
            flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)
            or flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        ):
            raise os_error(errno.EINVAL)
        check_name(new_name)
        _not_deleted(new_parent)
        if node.kind is Kind.DIR:
            self._not_into_itself(node, new_parent)
        target_ino = self.children(new_parent).get(new_name)
        if flags & RENAME_EXCHANGE:
            if target_ino is None:
                raise os_error(errno.ENOENT)
            self._exchange(old_parent, old_name, node, new_parent, new_name, self.table[target_ino])
            return
        if target_ino == node.ino:
            return
        old_path = self.path_of_link(old_parent, old_name)
        new_path = self.path_of_link(new_parent, new_name)
        if target_ino is not None:
            if flags & RENAME_NOREPLACE:
                raise os_error(errno.EEXIST)
            target = self.table[target_ino]
            if target.kind is Kind.DIR:
                if node.kind is not Kind.DIR:
                    raise os_error(errno.EISDIR)
                if self.children(target):
                    raise os_error(errno.ENOTEMPTY)
            elif node.kind is Kind.DIR:
                raise os_error(errno.ENOTDIR)
            self._detach(new_parent, new_name, target)
            self.table.invalidate(target)
            self._maybe_drop(target)
        self._detach(old_parent, old_name, node)
        self._attach(new_parent, new_name, node)
        self.table.invalidate(node)
        self._log("rename", old_path, new_path, flags)

    def _not_into_itself(self, node: Node, new_parent: Node) -> None:
        ancestor: Node | None = new_parent
        while ancestor is not None:
            if ancestor is node:
                raise os_error(errno.EINVAL, "cannot move a directory into itself")
            parent_ino = ancestor.parent()
            ancestor = self.table.get(parent_ino) if parent_ino is not None else None

    def _exchange(
        self,
        old_parent: Node,
        old_name: str,
        node: Node,
        new_parent: Node,
        new_name: str,
        other: Node,
    ) -> None:
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
        self.table.invalidate(node)
        self.table.invalidate(other)
        self._log("rename", old_path, new_path, RENAME_EXCHANGE)

    # -- metadata -----------------------------------------------------------------------------
    def setattr(
        self,
        node: Node,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> Node:
        self._writable()
        now = now_ns()
        logged: dict[str, int] = {}
        if size is not None:
            if node.kind is Kind.DIR:
                raise os_error(errno.EISDIR)
            if node.kind is not Kind.FILE:
                raise os_error(errno.EINVAL)
            check_size(size)  # before a scratch file is made for it
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
        self.table.invalidate(node)
        if logged:
            self._log("setattr", self.path_of(node), logged)
        return node

    def setxattr(self, node: Node, name: str, value: bytes) -> None:
        self._writable()
        if len(value) > MAX_XATTR_VALUE:
            raise os_error(errno.E2BIG)
        node.xattrs = {**node.xattrs, name: value}  # NO_XATTRS is shared: never changed
        node.ctime_ns = now_ns()
        self.table.invalidate(node)
        self._log("setxattr", self.path_of(node), name, value.hex())

    def removexattr(self, node: Node, name: str) -> None:
        self._writable()
        if name not in node.xattrs:
            raise os_error(errno.ENODATA)
        node.xattrs = {key: v for key, v in node.xattrs.items() if key != name} or NO_XATTRS
        node.ctime_ns = now_ns()
        self.table.invalidate(node)
        self._log("removexattr", self.path_of(node), name)

    # -- file content -------------------------------------------------------------------------
    def open(self, node: Node, *, write: bool, truncate: bool) -> None:
        if node.kind is not Kind.FILE:
            # The kernel opens FIFOs and devices itself; a symlink is followed before open.
            raise os_error(
                errno.EISDIR
                if node.kind is Kind.DIR
                else errno.ELOOP
                if node.kind is Kind.SYMLINK
                else errno.ENXIO
            )
        if write or truncate:
            self._writable()
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
            self.table.invalidate(node)
        if self.orphans and not node.links:
            self._orphan_written(node)

    def _new_scratch(
        self, *, base: Chunks = (), size: int = 0, times: tuple[int, int] | None = None
    ) -> ScratchFile:
        name = f"f{self._seq}"
        self._seq += 1
        return ScratchFile.create(
            str(self.scratch_dir),
            name,
            self._blob_fd,
            self.scratch_stats,
            base=base,
            size=size,
            times=times,
            on_full=self._segment_sink,
        )

    def _ensure_scratch(self, node: Node, *, keep: bool) -> None:
        if node.scratch is not None:
            return
        # Copy-up by chunk: the scratch file starts as the committed chunks, copied only
        # where a write or truncate touches them.
        scratch = self._new_scratch(
            base=node.chunks if keep else (),
            size=node.size if keep else 0,
            times=(node.atime_ns, node.mtime_ns),
        )
        node.scratch = scratch
        self._scratch_nodes.add(node.ino)
        self.stats.copy_ups += 1
        path = self.path_of(node)
        if path is not None:
            self._log("copyup", path, scratch.name)

    # -- lifetimes ----------------------------------------------------------------------------
    def _maybe_drop(self, node: Node) -> None:
        orphan = self.orphans.get(node.ino) if self.orphans else None
        if orphan is not None and not node.links:
            if orphan.written:
                return  # its writes wait for the next commit, which puts it back
            if node.opens == 0 and node.lookups <= 0:
                del self.orphans[node.ino]
        if not node.links and node.opens == 0 and node.lookups <= 0:
            self._scratch_nodes.discard(node.ino)
        self.table.maybe_drop(node)

    def forget(self, ino: int, count: int) -> None:
        node = self.table.get(ino)
        if node is None:
            return
        self.table.forget(node, count)
        self._maybe_drop(node)

    def release_forgotten(self, *, force: bool = False) -> int:
        """Releases the listings the kernel forgot (:meth:`InodeTable.release_forgotten`)
        when enough was forgotten for it to pay, or now with ``force``; returns how many
        nodes went. Called after each batch of FORGETs."""
        if not force and not self.table.release_due():
            return 0
        return self.table.release_forgotten(self.catalog.has_tree)

    def close(self) -> None:
        super().close()
        for node in self.table:
            if node.scratch is not None:
                node.scratch.close()
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        REMOVER.wait()  # the overlay may be removed next: nothing still removing inside it


def _not_deleted(directory: Node) -> None:
    """A directory removed while a process has it as its cwd takes no new names (ENOENT,
    as on ext4)."""
    if directory.kind is Kind.DIR and not directory.links and directory.ino != ROOT_INO:
        raise os_error(errno.ENOENT)
