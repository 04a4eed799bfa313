"""Path resolution in one snapshot's tree, for the Python API's reads and writes.

Owns :class:`HeadView` (memoised lookups under one root entry, and symlink resolution
that never leaves the volume), :func:`lstat`, and the ``/…`` form paths take in messages
(:func:`shown`). Path *syntax* (splitting, the name rules) is :mod:`volfs.names`'s.

Must not: change anything, or cache across roots: a view is made for one root (one head,
or one snapshot) and dropped with it, so a commit's build callback always checks the very
head its change lands on.
"""

from __future__ import annotations

from collections.abc import Callable

from volfs.core.changes import Changes
from volfs.core.tree import Entry, Kind
from volfs.errors import InvalidError, NotADirectoryPathError, PathNotFoundError
from volfs.names import PathParts, join_path
from volfs.store import Store

#: Symlinks followed while resolving one path before giving up (Linux's MAXSYMLINKS).
MAX_SYMLINK_HOPS = 40


def shown(parts: PathParts) -> str:
    """A path as messages show it: from the volume root, with a leading ``/``."""
    return "/" + join_path(parts)


class HeadView:
    """Memoised lookups in one root tree: many checks against one head stay cheap.

    ``get`` does not follow symlinks: a symlink (or a file) where a parent directory should
    be raises :class:`NotADirectoryPathError`, because a write must never replace it.
    """

    _MISSING = object()

    def __init__(self, store: Store, root: Entry) -> None:
        self.catalog = store.catalog
        self.root = root
        self._memo: dict[PathParts, Entry | None] = {(): root}

    def get(self, parts: PathParts) -> Entry | None:
        hit = self._memo.get(parts, self._MISSING)
        if hit is not self._MISSING:
            return hit  # type: ignore[return-value]
        # Iterative (paths may have thousands of components): find the longest known prefix.
        known = len(parts) - 1
        while parts[:known] not in self._memo:
            known -= 1
        entry = self._memo[parts[:known]]
        for i in range(known, len(parts)):
            if entry is not None:
                if entry.kind is not Kind.DIR:
                    raise NotADirectoryPathError(f"{shown(parts[:i])} is not a directory")
                assert entry.tree is not None
                entry = self.catalog.get_tree(entry.tree).get(parts[i])
            self._memo[parts[: i + 1]] = entry
        return entry

    def require(self, parts: PathParts) -> Entry:
        entry = self.get(parts)
        if entry is None:
            raise PathNotFoundError(f"{shown(parts)}: no such file or directory")
        return entry

    def resolve(self, parts: PathParts, *, follow_last: bool) -> tuple[PathParts, Entry]:
        """Follows relative symlinks that stay inside the volume; returns the real path."""
        hops = 0
        done: list[str] = []
        todo = list(parts)
        while todo:
            name = todo.pop(0)
            entry = self.get((*done, name))
            if entry is None:
                raise PathNotFoundError(f"{shown(parts)}: no such file or directory")
            if entry.kind is Kind.SYMLINK and (todo or follow_last):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise InvalidError(f"{shown(parts)}: too many levels of symbolic links")
                if entry.target.startswith("/"):
                    raise PathNotFoundError(
                        f"{shown(parts)}: symlink to {entry.target!r} leaves the volume"
                    )
                base = list(done)
                for comp in entry.target.split("/"):
                    if comp in ("", "."):
                        continue
                    if comp == "..":
                        if not base:
                            raise PathNotFoundError(
                                f"{shown(parts)}: symlink to {entry.target!r} leaves the volume"
                            )
                        base.pop()
                    else:
                        base.append(comp)
                todo = base + todo
                done = []
                continue
            done.append(name)
        real = tuple(done)
        return real, self.require(real)


#: A commit's build callback: the changes to make, decided against the head they land on
#: (it runs again if another writer moved the head first).
Build = Callable[[HeadView], Changes]


def lstat(view: HeadView, parts: PathParts) -> Entry:
    """The entry at ``parts``, following symlinks in its parents but not the last one."""
    if not parts:
        return view.root
    parent, _ = view.resolve(parts[:-1], follow_last=True)
    return view.require((*parent, parts[-1]))


__all__ = ["MAX_SYMLINK_HOPS", "Build", "HeadView", "lstat", "shown"]
