"""A mount's journal: the path-level operations since its last commit, for crash recovery.

File contents a mount writes already live in scratch files on local disk; what would die
with the daemon is the *shape* of its view (which path is which scratch file, what was
deleted, renamed, chmod-ed). Each such operation appends one JSON line here — a plain
``write`` to an O_APPEND file, no fsync, so it survives ``kill -9`` (the page cache
keeps it) and costs microseconds. The first line names the view the operations apply
to; ``recover.py`` replays the rest onto it. Every commit rewrites the file (temp file,
rename) to start from the view it just committed.

Records (JSON arrays; paths are volume paths as ``str``)::

    ["view", root-entry, base-snapshot-id]   first line only
    ["create", path, mode, uid, gid, scratch]
    ["copyup", path, scratch]                content now in scratch file (its anchor
                                             names the committed chunks it still uses)
    ["mkdir", path, mode, uid, gid]
    ["symlink", path, target, uid, gid]
    ["mknod", path, kind, mode, rdev, uid, gid]   a FIFO, socket or device (tree.Kind)
    ["unlink", path]   ["rmdir", path]
    ["rename", old, new, flags]              flags: RENAME_NOREPLACE 1, RENAME_EXCHANGE 2
    ["link", existing, new]
    ["setattr", path, {"mode"|"uid"|"gid"|"mtime_ns": value}]
    ["setxattr", path, name, value-hex]   ["removexattr", path, name]
    ["orphan", path, scratch, seen-entry, mode, uid, gid]   an open file a keep-open reload
                                             took out was written: the next commit puts it
                                             back at path (orphans.py; replayed last)
    ["adopt", path, scratch, seen-entry, mode, uid, gid]    ... and that commit did
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._captured: list[list[Any]] | None = None

    def append(self, *record: Any) -> None:
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        if self._captured is not None:
            self._captured.append(list(record))

    def capture(self) -> None:
        """Keeps the records appended from now on, for :meth:`captured` (a commit's view is
        built before it is published; the changes made meanwhile must outlive the rewrite
        that follows the publish)."""
        self._captured = []

    def captured(self) -> list[list[Any]]:
        """The records appended since :meth:`capture`; capturing stops."""
        records, self._captured = self._captured or [], None
        return records

    def rewrite(self, records: list[list[Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(record, separators=(",", ":")) + "\n" for record in records)
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def read(path: Path) -> list[list[Any]]:
        records = []
        with open(path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a torn last line: the daemon died mid-write
        return records
