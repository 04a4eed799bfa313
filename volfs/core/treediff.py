"""What differs between two directory trees, path by path, for people (``volfs volume diff``).

:func:`volfs.core.changes.diff` answers a writer's question (what to merge onto a head);
this answers a reader's: every path whose entry differs, with one of

- ``added``        only the new tree has it (every path below an added directory too);
- ``removed``      only the old tree has it (every path below a removed directory too);
- ``modified``     the same type, different content: bytes of a file, a symlink's target,
                   a device's number (its metadata may have changed as well: ``fields``);
- ``mode-only``    the same content, only metadata changed (``fields``: mode, uid, gid,
                   mtime_ns, xattrs, link, nlink);
- ``type-changed`` another type at the same path (a file became a symlink); what was
                   below an old directory is listed removed, what is below a new one added.

A directory is listed only for its own metadata, never for what changed below it (those
paths are listed), and not for an mtime that moved along with its entries. Subtrees with
equal digests are skipped, so the cost follows what changed, not the trees' size.

Pure: reads trees through a :class:`~volfs.core.tree.TreeStore` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from volfs.core.changes import Path, meta_diff
from volfs.core.tree import Entry, Kind, TreeStore, differing


class ChangeKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    MODIFIED = "modified"
    MODE_ONLY = "mode-only"
    TYPE_CHANGED = "type-changed"


@dataclass(frozen=True, slots=True)
class Difference:
    path: Path
    change: ChangeKind
    #: The entry in the old tree (None if added) and in the new one (None if removed).
    old: Entry | None
    new: Entry | None
    #: The metadata fields that differ (modified and mode-only; empty otherwise).
    fields: tuple[str, ...] = ()


def tree_diff(store: TreeStore, old: Entry, new: Entry) -> Iterator[Difference]:
    """The differences between directories ``old`` and ``new`` (two snapshots' roots), in
    path order; the root itself is ``()``, listed if its own metadata changed."""
    fields = _dir_fields(old, new)
    if fields:
        yield Difference((), ChangeKind.MODE_ONLY, old, new, fields)
    yield from _below(store, old, new, ())


def _dir_fields(old: Entry, new: Entry) -> tuple[str, ...]:
    fields = meta_diff(old, new)
    if old.tree != new.tree:
        fields -= {"mtime_ns"}  # moved with the entries, which are listed themselves
    return tuple(sorted(fields))


def _below(store: TreeStore, old: Entry, new: Entry, path: Path) -> Iterator[Difference]:
    if old.tree == new.tree:
        return
    assert old.tree is not None and new.tree is not None
    old_tree, new_tree = store.get_tree(old.tree), store.get_tree(new.tree)
    new_side, old_side = differing(old_tree, new_tree)
    for name in sorted({e.name for e in new_side} | {e.name for e in old_side}):
        before, after = old_tree.get(name), new_tree.get(name)
        if before == after:
            continue
        child = path + (name,)
        if before is None:
            assert after is not None
            yield from _all(store, after, child, ChangeKind.ADDED)
        elif after is None:
            yield from _all(store, before, child, ChangeKind.REMOVED)
        elif before.kind is not after.kind:
            yield Difference(child, ChangeKind.TYPE_CHANGED, before, after)
            if before.kind is Kind.DIR:
                yield from _contents(store, before, child, ChangeKind.REMOVED)
            if after.kind is Kind.DIR:
                yield from _contents(store, after, child, ChangeKind.ADDED)
        elif after.kind is Kind.DIR:
            fields = _dir_fields(before, after)
            if fields:
                yield Difference(child, ChangeKind.MODE_ONLY, before, after, fields)
            yield from _below(store, before, after, child)
        else:
            fields = tuple(sorted(meta_diff(before, after)))
            if not after.same_content(before):
                yield Difference(child, ChangeKind.MODIFIED, before, after, fields)
            elif fields:
                yield Difference(child, ChangeKind.MODE_ONLY, before, after, fields)


def _all(store: TreeStore, entry: Entry, path: Path, change: ChangeKind) -> Iterator[Difference]:
    """``entry`` added or removed, and if it is a directory, everything below it."""
    added = change is ChangeKind.ADDED
    yield Difference(path, change, None if added else entry, entry if added else None)
    if entry.kind is Kind.DIR:
        yield from _contents(store, entry, path, change)


def _contents(
    store: TreeStore, entry: Entry, path: Path, change: ChangeKind
) -> Iterator[Difference]:
    assert entry.tree is not None
    for child in store.get_tree(entry.tree).entries:
        yield from _all(store, child, path + (child.name,), change)
