"""What a writer changed: path-level changes, and the diff of two trees that finds them. Pure.

A change says what the writer wants at one path and what it saw there before
(``seen``), so the merge can tell an overwrite of content the writer never saw:

- :class:`Put`      a file, symlink or special file written (created, replaced, or its
                    content changed);
- :class:`Dir`      a directory the writer has: created (``set_meta`` = every field) or only
                    passed through on the way to a deeper change, or re-attributed;
- :class:`Remove`   the entry the writer saw is gone;
- :class:`SetMeta`  only metadata of a non-directory changed (chmod, chown, utimes, xattrs,
                    and ``link``/``nlink`` when names join or leave its hard-link group).

A rename is a :class:`Remove` at the old path plus a :class:`Put`/:class:`Dir` at the new.
The names of a hard-link group are separate paths here, each with the group's entry; the
merge makes them one file again (``merge.normalize_links``).
"""

from __future__ import annotations

from dataclasses import dataclass

from volfs.core.tree import META_FIELDS, Entry, Kind, TreeStore, differing

Path = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Put:
    entry: Entry
    seen: Entry | None = None


@dataclass(frozen=True, slots=True)
class Dir:
    entry: Entry
    seen: Entry | None = None
    set_meta: frozenset[str] = frozenset()
    #: ``entry`` is the writer's whole directory (its tree stored): what applying every
    #: change below to ``seen`` gives. Set by :func:`diff`; the merge then takes ``entry``
    #: as it is where head still has ``seen``, instead of rebuilding the same trees.
    whole: bool = False


@dataclass(frozen=True, slots=True)
class Remove:
    seen: Entry


@dataclass(frozen=True, slots=True)
class SetMeta:
    entry: Entry
    fields: frozenset[str]


Change = Put | Dir | Remove | SetMeta
Changes = dict[Path, Change]
ALL_META = frozenset(META_FIELDS)


def meta_diff(old: Entry, new: Entry) -> frozenset[str]:
    return frozenset(f for f in META_FIELDS if getattr(old, f) != getattr(new, f))


def diff(store: TreeStore, old: Entry, new: Entry, prefix: Path = ()) -> Changes:
    """The changes that turn directory ``old`` into directory ``new``.

    Descends only into subtrees whose digests differ, so the cost follows what changed.
    """
    out: Changes = {}
    below = _diff_dir(store, old, new, prefix, out)
    fields = meta_diff(old, new)  # the directory itself: chmod of a mount's root
    if fields or below:
        out[prefix] = Dir(new, old, fields, whole=True)
    return out


def _diff_dir(store: TreeStore, old: Entry, new: Entry, path: Path, out: Changes) -> bool:
    """Adds the changes below ``path``; returns True if there were any."""
    if old.tree == new.tree:
        return False
    assert old.tree is not None and new.tree is not None
    old_tree = store.get_tree(old.tree)
    new_tree = store.get_tree(new.tree)
    changed = False
    new_side, old_side = differing(old_tree, new_tree)
    for entry in new_side:
        before = old_tree.get(entry.name)
        if before is entry or before == entry:
            continue  # most of a changed directory: the very entry object the view kept
        child = path + (entry.name,)
        if before is None or before.kind is not entry.kind:
            _added(store, entry, before, child, out)
            changed = True
        elif entry.kind is Kind.DIR:
            fields = meta_diff(before, entry)
            below = _diff_dir(store, before, entry, child, out)
            if fields or below:
                out[child] = Dir(entry, before, fields, whole=True)
                changed = True
        elif not entry.same_content(before):
            out[child] = Put(entry, before)
            changed = True
        elif fields := meta_diff(before, entry):
            out[child] = SetMeta(entry, fields)
            changed = True
    for entry in old_side:
        if new_tree.get(entry.name) is None:
            out[path + (entry.name,)] = Remove(entry)
            changed = True
    return changed


def _added(store: TreeStore, entry: Entry, seen: Entry | None, path: Path, out: Changes) -> None:
    if entry.kind is not Kind.DIR:
        out[path] = Put(entry, seen)
        return
    out[path] = Dir(entry, seen, ALL_META, whole=True)
    assert entry.tree is not None
    for child in store.get_tree(entry.tree).entries:
        _added(store, child, None, path + (child.name,), out)
