"""What :meth:`Volume.remove_file <volfs.api.volume.Volume.remove_file>` and
:meth:`Volume.copy_files <volfs.api.volume.Volume.copy_files>` change, decided against one head.

Owns the rules of those two writes — ``rm`` / ``rm -r``, and UNIX ``cp`` semantics for
copies inside a volume (into an existing directory under the source's name, or as the
named target; ``-r`` merges into an existing directory) — as *build* functions: each takes
the :class:`HeadView` of the head the commit lands on and returns the
:data:`~volfs.core.changes.Changes`, raising if that head makes the write invalid. A copy
writes tree entries only: same chunks, same digests, no content is read or stored.

Must not: commit (the volume handle does, and runs the build again if another writer moved
the head first), or check anything outside the build: every check must see the head the
change lands on.
"""

from __future__ import annotations

from collections.abc import Sequence

from volfs.api.paths import Build, HeadView, shown
from volfs.core.changes import ALL_META, Changes, Dir, Put, Remove, SetMeta, diff, meta_diff
from volfs.core.tree import Entry, Kind, lookup
from volfs.errors import (
    InvalidError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathNotFoundError,
)
from volfs.names import PathParts, split_path


def remove(parts: PathParts, recursive: bool) -> Build:
    """The build of removing ``parts`` (a directory only with ``recursive``)."""

    def build(view: HeadView) -> Changes:
        entry = view.require(parts)
        if entry.kind is Kind.DIR and not recursive:
            what = f"{shown(parts)} is a directory"
            raise IsADirectoryPathError(f"{what}: remove it with recursive=True").for_cli(
                f"{what}: remove it with -r"
            )
        return {parts: Remove(entry)}

    return build


def copy(src_paths: Sequence[str], dst_path: str, recursive: bool) -> Build:
    """The build of copying ``src_paths`` to ``dst_path``; the paths are checked here,
    before any head is read."""
    if isinstance(src_paths, str):
        raise InvalidError("src_paths must be a list of paths, not one string")
    if not src_paths:
        raise InvalidError("copy_files needs at least one source path")
    srcs = []
    for src in src_paths:
        parts = split_path(src)
        if not parts:
            raise InvalidError("cannot copy the volume root; copy its entries instead")
        srcs.append(parts)
    dst = split_path(dst_path)
    # cp: a trailing slash says "a directory", so it must exist as one.
    dst_must_be_dir = dst_path.rstrip().endswith("/") or not dst

    def build(view: HeadView) -> Changes:
        target_dir = view.get(dst)
        into = target_dir is not None and target_dir.kind is Kind.DIR
        if not into:
            if len(srcs) > 1 or dst_must_be_dir:  # cp says ENOTDIR, missing or not
                raise NotADirectoryPathError(f"target {shown(dst)} is not a directory")
            parent = view.get(dst[:-1])
            if parent is None:
                raise PathNotFoundError(f"{shown(dst[:-1])}: no such directory")
            if parent.kind is not Kind.DIR:
                raise NotADirectoryPathError(f"{shown(dst[:-1])} is not a directory")
        changes: Changes = {}
        for parts in srcs:
            src = view.require(parts)
            if src.kind is Kind.DIR and not recursive:
                what = f"{shown(parts)} is a directory"
                raise IsADirectoryPathError(f"{what}: copy it with recursive=True").for_cli(
                    f"{what}: copy it with -r"
                )
            target = (*dst, parts[-1]) if into else dst
            if target == parts:
                raise InvalidError(f"{shown(parts)} and {shown(target)} are the same file")
            if src.kind is Kind.DIR and target[: len(parts)] == parts:
                raise InvalidError(
                    f"cannot copy directory {shown(parts)} into itself ({shown(target)})"
                )
            _copy_entry(view, src, target, changes)
            # Every parent of a written path must be in the changes (merge.py's rule);
            # they all exist here (checked above), so they only pass through.
            for i in range(len(target) - 1):
                parent_parts = target[: i + 1]
                if parent_parts not in changes:
                    here = view.require(parent_parts)
                    changes[parent_parts] = Dir(here, here, frozenset())
        return changes

    return build


def _copy_entry(view: HeadView, src: Entry, target: PathParts, changes: Changes) -> None:
    existing = view.get(target)
    name = target[-1]
    if src.kind is not Kind.DIR:
        if existing is not None and existing.kind is Kind.DIR:
            raise IsADirectoryPathError(
                f"cannot overwrite directory {shown(target)} with a non-directory"
            )
        # Same chunks, same digests: the copy costs a tree entry, not the bytes. Like
        # cp, the copy is a file of its own: it joins no hard-link group of the source.
        changes[target] = Put(src.with_(name=name, link=0, nlink=1), existing)
        return
    if existing is None:
        changes[target] = Dir(src.with_(name=name), None, ALL_META)
    elif existing.kind is Kind.DIR:
        changes[target] = Dir(existing, existing, frozenset())  # cp -r merges into it
    else:
        raise NotADirectoryPathError(
            f"cannot overwrite non-directory {shown(target)} with directory"
        )
    assert src.tree is not None
    for child in view.catalog.get_tree(src.tree).entries:
        _copy_entry(view, child, (*target, child.name), changes)


def restore(parts: PathParts, past_root: Entry, snapshot_id: str) -> Build:
    """The build of bringing ``parts`` back as it was in a past snapshot (root
    ``past_root``): a file, link or directory becomes exactly that again, and parents
    deleted since come back as directories holding it (with their old metadata)."""
    if not parts:
        raise InvalidError("restore a path inside the volume, not its root (see `rollback`)")

    def build(view: HeadView) -> Changes:
        past = lookup(view.catalog, past_root, parts)
        if past is None:
            raise PathNotFoundError(f"{shown(parts)} is not in snapshot {snapshot_id}")
        if past.kind is not Kind.DIR:
            # Its own file again: a hard-link group it was in may have moved on since.
            past = past.with_(link=0, nlink=1)
        changes: Changes = {}
        for i in range(1, len(parts)):
            parent = parts[:i]
            here = view.get(parent)
            if here is None:
                old = lookup(view.catalog, past_root, parent)
                assert old is not None and old.kind is Kind.DIR  # a parent of ``past``
                changes[parent] = Dir(old, None, ALL_META)  # only what is restored goes in
            elif here.kind is Kind.DIR:
                changes[parent] = Dir(here, here, frozenset())
            else:
                raise NotADirectoryPathError(
                    f"cannot restore {shown(parts)}: {shown(parent)} is not a directory now"
                )
        existing = view.get(parts)
        if existing is None or existing.kind is not past.kind:
            _put_whole(view, past, existing, parts, changes)
        elif past.kind is Kind.DIR:
            below = diff(view.catalog, existing, past.with_(name=parts[-1]), parts)
            if not below:
                return {}
            changes.update(below)
        elif not past.same_content(existing):
            changes[parts] = Put(past, existing)
        elif fields := meta_diff(existing, past):
            changes[parts] = SetMeta(past, fields)
        else:
            return {}  # already as it was: nothing to commit
        return changes

    return build


def _put_whole(
    view: HeadView, entry: Entry, seen: Entry | None, path: PathParts, changes: Changes
) -> None:
    if entry.kind is not Kind.DIR:
        changes[path] = Put(entry, seen)
        return
    changes[path] = Dir(entry, seen, ALL_META, whole=True)
    assert entry.tree is not None
    for child in view.catalog.get_tree(entry.tree).entries:
        _put_whole(view, child, None, (*path, child.name), changes)


__all__ = ["copy", "remove", "restore"]
