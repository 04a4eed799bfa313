"""Open files a keep-open reload took out of the view, and how their writes reach a commit.

A reload with ``keep_open`` switches the view while files are open. An open file whose
path the new head changed or removed is detached, like a file renamed over while open on
ext4: its node leaves the namespace (no name) but stays in the inode table with its
content (committed chunks plus its scratch file), so every descriptor opened before keeps
reading and writing what it opened. Such a node is an *orphan*; :class:`Orphan` remembers
the path it was opened at and the committed entry it had there.

An orphan written after the reload carries a change to that path: the next commit puts it
back at its path (:meth:`Orphans.adopt_orphans`; last writer wins, and the overwrite of
the version the new head had there is recorded, as for any write over a version its
writer never saw: the commit diffs it against the entry the descriptor opened). Its
parent directories are made again if the new head removed them. An orphan never written
goes with its last descriptor, as an unlinked file does.

Crash recovery: an orphan's first write appends ``["orphan", path, scratch, seen, mode,
uid, gid]`` to the journal, and its adoption ``["adopt", …]`` with the same fields.
Replay applies an ``adopt`` where it stands and an ``orphan`` with no ``adopt`` after it
at the end of the journal, which is when the live mount would have adopted it (its next
commit): a recovered mount commits the same change the live one would have.

Owns the orphan records and the adoption. Must not switch heads (``rebase.py``) or
publish; no pyfuse3 or trio. One thread (the trio loop).
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from volfs.catalog import entry_from_json, entry_to_json
from volfs.core.tree import Entry, Kind
from volfs.mount.inodes import ROOT_INO, Node
from volfs.mount.namespace import Namespace, Orphan
from volfs.mount.view import check_name, os_error

log = logging.getLogger(__name__)

#: The mode of a parent directory an orphan's adoption has to make again.
PARENT_MODE = 0o755


class Orphans(Namespace):
    """The keep-open part of :class:`~volfs.mount.overlay.Overlay`."""

    def orphan(self, node: Node, path: str, seen: Entry | None) -> None:
        """``node`` (an open file) was detached from ``path`` by a reload."""
        self.orphans[node.ino] = Orphan(path, seen)

    def _orphan_written(self, node: Node) -> None:
        orphan = self.orphans.get(node.ino)
        if orphan is None or orphan.written or node.links:
            return
        orphan.written = True
        # The root's cache cleared: the mount is dirty, so the next commit runs and adopts.
        self.table[ROOT_INO].cached = None
        if node.scratch is not None:
            self._log(*self._orphan_record("orphan", node, orphan))

    @staticmethod
    def _orphan_record(op: str, node: Node, orphan: Orphan) -> list[Any]:
        assert node.scratch is not None
        seen = entry_to_json(orphan.seen) if orphan.seen is not None else None
        return [op, orphan.path, node.scratch.name, seen, node.mode, node.uid, node.gid]

    def _orphan_records(self) -> list[list[Any]]:
        records = []
        for ino, orphan in sorted(self.orphans.items()):
            node = self.table.get(ino)
            if orphan.written and node is not None and node.scratch is not None:
                records.append(self._orphan_record("orphan", node, orphan))
        return records

    def adopt_orphans(self) -> list[tuple[int, str]]:
        """Puts every orphan written since the reload back at its path (before a commit);
        returns the (directory inode, name) entries the kernel must forget."""
        changed: list[tuple[int, str]] = []
        for ino, orphan in sorted(self.orphans.items()):
            node = self.table.get(ino)
            if not orphan.written or node is None:
                continue
            del self.orphans[ino]
            if node.links:
                continue  # another name of its link group stayed: committed through it
            try:
                parent, name = self._place(node, orphan.path, orphan.seen, changed)
            except OSError as exc:
                # Only a directory at its path (or a file on the way) stops it: the other
                # mount's tree wins there, and the content goes with the descriptor.
                log.error(
                    "changes written through an old descriptor of %s are lost: %s",
                    orphan.path,
                    exc,
                )
                self._maybe_drop(node)
                continue
            if node.scratch is not None:
                self._log(*self._orphan_record("adopt", node, orphan))
            changed.append((parent.ino, name))
        return changed

    def _place(
        self, node: Node, path: str, seen: Entry | None, changed: list[tuple[int, str]]
    ) -> tuple[Node, str]:
        """Links ``node`` at ``path``, over what is there (a file), making missing parents."""
        *dirs, name = [p for p in path.split("/") if p]
        check_name(name)
        parent = self.table[ROOT_INO]
        for part in dirs:
            children = self.children(parent)
            ino = children.get(part)
            if ino is None:
                child = self.table.new(Kind.DIR, PARENT_MODE, node.uid, node.gid)
                child.children = {}
                self._attach(parent, part, child)
                changed.append((parent.ino, part))
                parent = child
            else:
                parent = self.table[ino]
                if parent.kind is not Kind.DIR:
                    raise os_error(errno.ENOTDIR, part)
        children = self.children(parent)
        existing = children.get(name)
        if existing is not None:
            target = self.table[existing]
            if target.kind is Kind.DIR:
                raise os_error(errno.EISDIR, path)
            self._detach(parent, name, target)
            self.table.invalidate(target)
            self._maybe_drop(target)
        self._attach(parent, name, node)
        self.table.invalidate(node)
        node.cached = None
        if node.scratch is not None:
            self._scratch_nodes.add(node.ino)
        self.overwrite_seen[tuple([*dirs, name])] = seen
        return parent, name

    def _replay_orphan(self, record: list[Any], adopt_scratch: Any) -> None:
        """One ``orphan``/``adopt`` journal record re-applied: a file of that scratch file
        placed at its path. ``adopt_scratch(node, scratch)`` adopts the scratch file."""
        _, path, scratch, seen, mode, uid, gid = record
        node = self.table.new(Kind.FILE, mode, uid, gid)
        adopt_scratch(node, scratch)
        try:
            self._place(node, path, entry_from_json(seen) if seen else None, [])
        except OSError:
            self._maybe_drop(node)
            raise
