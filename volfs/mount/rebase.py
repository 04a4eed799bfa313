"""Reloading a mount: switching its view to a newer head in one step.

The switch is synchronous (no await between its steps, so no request sees half of it):
it walks the loaded part of the view against the new head's trees, descending only where
a directory's tree changed, keeps the nodes of entries that are the same file, replaces
the others, and returns the kernel cache invalidations the FUSE layer must send
(:class:`Invalidation`).

Owns the switch and its invalidations. Must not commit (the caller commits first and
checks that nothing changed since and that no file is open), change the namespace
otherwise, or know of pyfuse3 or trio. One thread (the trio loop).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from volfs.catalog import SnapshotRecord
from volfs.core.tree import META_FIELDS, Entry, Kind
from volfs.errors import OpenFilesError
from volfs.mount.inodes import NO_XATTRS, ROOT_INO, Node
from volfs.mount.namespace import Namespace


@dataclass
class Invalidation:
    ino: int
    name: str | None = None  # an entry of directory ``ino``; None: the inode itself
    attr_only: bool = False


class Rebasing(Namespace):
    """The reload of :class:`~volfs.mount.overlay.Overlay`."""

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
        _set_meta(node, new)
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
            self._maybe_drop(child)
            if entry is not None:
                self._add_child(node, entry)
        for entry in tree.entries:
            if entry.name not in node.children:
                self._add_child(node, entry)
                out.append(Invalidation(node.ino, entry.name))

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
