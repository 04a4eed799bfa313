"""Reloading a mount: switching its view to a newer head in one step.

The switch is synchronous (no await between its steps, so no request sees half of it):
it walks the loaded part of the view against the new head's trees, descending only where
a directory's tree changed, keeps the nodes of entries that are the same file, replaces
the others, and returns the kernel cache invalidations the FUSE layer must send
(:class:`Invalidation`).

With ``keep_open`` files may be open, and written to since the commit before the reload
(a log handler that fsyncs every line would otherwise never let a reload through): when
only file content changed since that commit (``content_only_dirty``), the switch runs on
the committed view's entries, a written file the head did not change stays in the view
with its writes, and one the head changed is taken out with them. A node the new head changes or removes is taken
out of the namespace as an orphan (``orphans.py``) and keeps serving its descriptors. A
directory is the same directory when its path is a directory in both views: it keeps its
node and inode number, so a cwd there keeps working. A directory the new head removed is
emptied and unnamed (a deleted directory, as on ext4: an empty listing, st_nlink 0, no new
names); what was loaded below it is taken out with it.

Owns the switch and its invalidations. Must not commit (the caller commits first and
checks that nothing changed since and, without ``keep_open``, that no file is open),
change the namespace otherwise, or know of pyfuse3 or trio. One thread (the trio loop).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from volfs.catalog import SnapshotRecord
from volfs.core.tree import META_FIELDS, Entry, Kind, differing
from volfs.errors import OpenFilesError
from volfs.mount.inodes import NO_XATTRS, ROOT_INO, Node
from volfs.mount.listing import Listing, loaded
from volfs.mount.orphans import Orphans


@dataclass
class Invalidation:
    ino: int
    name: str | None = None  # an entry of directory ``ino``; None: the inode itself
    attr_only: bool = False


class Rebasing(Orphans):
    """The reload of :class:`~volfs.mount.overlay.Overlay`."""

    def open_files(self) -> Iterator[Node]:
        for node in self.table:
            if node.opens > 0:
                yield node

    def rebase(self, head: SnapshotRecord, *, keep_open: bool = False) -> list[Invalidation]:
        """Switches the view to ``head`` in one step; returns the kernel invalidations.

        The caller committed first and checked that nothing changed since and, unless
        ``keep_open``, that no file is open.
        """
        if (self.dirty and not (keep_open and self.content_only_dirty())) or (
            not keep_open and any(True for _ in self.open_files())
        ):
            raise OpenFilesError("the view changed while reloading; try again")
        written = self._committed_caches() if self.dirty else []
        invalidations: list[Invalidation] = []
        self._rebase_dir(self.table[ROOT_INO], head.root, invalidations, "")
        for node in written:
            if node.links:
                self.table.invalidate(node)  # still in the view: the next commit takes it
        if any(o.written for o in self.orphans.values()):
            self.table[ROOT_INO].cached = None
        self.shape_changes_committed = self.shape_changes
        self.base_snapshot = head.id
        self.committed_view = head.root
        self.stats.reloads += 1
        self._rewrite_journal()
        return invalidations

    def _rebase_dir(self, node: Node, new: Entry, out: list[Invalidation], path: str) -> None:
        old = node.cached
        assert old is not None
        meta_changed = any(getattr(old, f) != getattr(new, f) for f in META_FIELDS)
        if old.tree == new.tree and not meta_changed:
            return
        _set_meta(node, new)
        node.base = new
        node.cached = new
        if meta_changed:
            out.append(Invalidation(node.ino, attr_only=True))
        if node.children is None:
            return
        assert new.tree is not None
        tree = self.catalog.get_tree(new.tree)
        for name, child_ino in list(loaded(node.children).items()):
            child = self.table[child_ino]
            entry = tree.get(name)
            child_path = f"{path}/{name}" if path else name
            if entry is not None and entry.kind is child.kind is Kind.DIR:
                self._rebase_dir(child, entry, out, child_path)
                continue
            if (
                entry is not None
                and child.cached is not None
                and child.cached.with_(name=name) == entry
            ):
                continue
            # A file with other names is one node for all of them: a changed one is loaded
            # afresh, so its node (and st_nlink) follows the new snapshot's group.
            linked = entry is not None and (entry.link or child.link_id)
            if (
                entry is not None
                and not linked
                and child.cached is not None
                and child.cached.same_content(entry)
            ):
                if any(getattr(child.cached, f) != getattr(entry, f) for f in META_FIELDS):
                    _set_meta(child, entry)
                    out.append(Invalidation(child.ino, attr_only=True))
                child.cached = entry
                continue
            del node.children[name]
            child.remove_link(node.ino, name)
            out.append(Invalidation(node.ino, name))
            self._take_out(child, child_path, out)
            if entry is not None:
                self._add_child(node, entry)
        if isinstance(node.children, Listing):
            # A huge directory loads the rest of its names when asked; the kernel forgets
            # the names that came (it may hold them as not existing), found leaf by leaf.
            assert old.tree is not None
            added, _ = differing(self.catalog.get_tree(old.tree), tree)
            for entry in added:
                out.append(Invalidation(node.ino, entry.name))
            node.children.rebased(tree)
            return
        for entry in tree.entries:
            if entry.name not in node.children:
                self._add_child(node, entry)
                out.append(Invalidation(node.ino, entry.name))

    def content_only_dirty(self) -> bool:
        """Nothing but file content changed since the last commit."""
        return self.shape_changes == self.shape_changes_committed

    def _committed_caches(self) -> list[Node]:
        """Only content changed: the entries of the committed view back on the nodes whose
        cache the writes cleared, so the switch compares committed views. Returns the
        written files."""
        written: list[Node] = []
        restored: list[Node] = []
        stack = [(self.table[ROOT_INO], self.committed_view)]
        try:
            self._restore(stack, written, restored)
        except BaseException:
            for node in restored:  # a cache left set would hide a change from the commit
                node.cached = None
            raise
        return written

    def _restore(
        self, stack: list[tuple[Node, Entry]], written: list[Node], restored: list[Node]
    ) -> None:
        while stack:
            node, entry = stack.pop()
            node.cached = entry
            restored.append(node)
            if node.kind is not Kind.DIR or node.children is None:
                continue
            assert entry.tree is not None
            tree = self.catalog.get_tree(entry.tree)
            for name, ino in loaded(node.children).items():
                child = self.table[ino]
                if child.cached is not None:
                    continue
                child_entry = tree.get(name)
                if child_entry is None or child_entry.kind is not child.kind:
                    raise OpenFilesError("the view changed while reloading; try again")
                if child.kind is not Kind.DIR:
                    written.append(child)
                stack.append((child, child_entry))

    def _take_out(self, node: Node, path: str, out: list[Invalidation]) -> None:
        """``node`` lost its name at ``path``: an open file becomes an orphan; a directory
        is emptied, and what was loaded below it taken out too (the kernel may still hold
        any of them: a cwd, an open file)."""
        if node.kind is Kind.DIR:
            for name, child_ino in list(loaded(node.children or {}).items()):
                child = self.table[child_ino]
                child.remove_link(node.ino, name)
                out.append(Invalidation(node.ino, name))
                self._take_out(child, f"{path}/{name}", out)
            node.children = {}
            node.cached = None  # no tree of its own any more: never cached as one again
        elif not node.links and (node.opens > 0 or node.content_dirty):
            self.orphan(node, path, node.cached)
            # Written since the last commit: the writes go back to the path at the next.
            self.orphans[node.ino].written = node.content_dirty
        self._maybe_drop(node)

    def _add_child(self, parent: Node, entry: Entry) -> None:
        child = self.table.from_entry(entry, reloading=True)
        child.add_link(parent.ino, entry.name)
        assert parent.children is not None
        parent.children[entry.name] = child.ino


def _set_meta(node: Node, entry: Entry) -> None:
    """A committed entry's metadata on a node (link groups are not kept: see _rebase_dir)."""
    node.mode, node.uid, node.gid = entry.mode, entry.uid, entry.gid
    node.mtime_ns = node.ctime_ns = entry.mtime_ns
    node.xattrs = dict(entry.xattrs) if entry.xattrs else NO_XATTRS
