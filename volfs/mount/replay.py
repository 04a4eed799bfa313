"""Recovery of a crashed mount's view: its journal re-applied onto the view it committed.

The journal (``journal.py``) starts with the view the mount last committed
(:meth:`Replaying.view_from_journal`); ``recover.py`` opens an overlay on that view and
:meth:`Replaying.replay` re-applies the records after it through the same namespace
operations a live mount uses, adopting the scratch files they name as they are. A record
that no longer applies (its path is gone) is skipped with a warning: the rest is
recovered. What the records re-apply is not logged again.

Owns the replay. Must not commit (the caller does), or know of pyfuse3 or trio. One
thread.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

from volfs.catalog import entry_from_json
from volfs.core.tree import Entry, Kind
from volfs.mount.inodes import Node
from volfs.mount.orphans import Orphans
from volfs.mount.scratch import ScratchFile
from volfs.mount.view import os_error

log = logging.getLogger(__name__)


class Replaying(Orphans):
    """The recovery of :class:`~volfs.mount.overlay.Overlay`."""

    @staticmethod
    def view_from_journal(records: list[list[Any]]) -> tuple[Entry, str]:
        """The committed view and base snapshot id a journal starts with."""
        kind, root, base = records[0]
        if kind != "view":
            raise ValueError("journal does not start with its view")
        return entry_from_json(root), base

    def replay(self, records: list[list[Any]]) -> int:
        """Re-applies journal records (all but the first, "view") onto this view."""
        self._replaying = True
        scratch_listing = os.listdir(self.scratch_dir)  # listed once, not once per file
        applied = 0
        # An orphan's writes are adopted at the next commit (orphans.py): an "orphan" with
        # no "adopt" of its scratch file after it is applied last, as the live mount would.
        orphans: dict[str, list[Any]] = {}
        try:
            for record in records:
                if record[0] == "orphan":
                    orphans[record[2]] = record
                    continue
                if record[0] == "adopt":
                    orphans.pop(record[2], None)
                try:
                    self._replay_one(record, scratch_listing)
                    applied += 1
                except OSError as exc:
                    log.warning("recover: skipping %s: %s", record[:2], exc)
            for record in orphans.values():
                try:
                    self._replay_one(record, scratch_listing)
                    applied += 1
                except OSError as exc:
                    log.warning("recover: skipping %s: %s", record[:2], exc)
        finally:
            self._replaying = False
        for ino in list(self._scratch_nodes):
            node = self.table.get(ino)
            if node is not None and node.scratch is not None:
                try:
                    node.mtime_ns = node.scratch.mtime_ns()
                except FileNotFoundError:
                    continue
                node.size = node.scratch.size
        return applied

    def _replay_one(self, record: list[Any], scratch_listing: list[str]) -> None:
        op, path, *args = record
        if op == "create":
            parent, name = self._resolve_parent(path)
            mode, uid, gid, scratch = args
            node = self.table.new(Kind.FILE, mode, uid, gid)
            self._adopt(node, scratch, scratch_listing)
            self._attach(parent, name, node)
        elif op == "copyup":
            self._adopt(self.resolve(path), args[0], scratch_listing)
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
        elif op in ("orphan", "adopt"):
            self._replay_orphan(
                record, lambda node, scratch: self._adopt(node, scratch, scratch_listing)
            )
        elif op == "setattr":
            self.setattr(self.resolve(path), **args[0])
        elif op == "setxattr":
            self.setxattr(self.resolve(path), args[0], bytes.fromhex(args[1]))
        elif op == "removexattr":
            self.removexattr(self.resolve(path), args[0])
        else:
            raise os_error(errno.EINVAL, f"unknown journal record {op!r}")

    def _adopt(self, node: Node, scratch: str, scratch_listing: list[str]) -> None:
        """Makes the existing scratch file ``scratch`` the node's content."""
        if node.scratch is not None and node.scratch.name != scratch:
            node.scratch.close()
        node.scratch = ScratchFile.existing(
            str(self.scratch_dir),
            scratch,
            self._blob_fd,
            self.scratch_stats,
            scratch_listing,
            on_full=self._segment_sink,
        )
        node.content_dirty = True
        node.version += 1
        self._scratch_nodes.add(node.ino)
        self.table.invalidate(node)
