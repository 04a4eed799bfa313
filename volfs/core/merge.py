"""The last-writer-wins merge of DESIGN §2, as a pure function.

``merge(store, head_root, changes)`` applies a writer's changes, path by path, onto the
*current* head and returns the new root, the trees it wrote, and every overwrite of
content the writer had not seen:

- a Put replaces whatever head has at that path;
- a Remove deletes head's entry even if someone changed it since (recorded);
  a removed directory loses only the entries the writer saw: what others added survives;
- a SetMeta applies the changed fields to head's *current* entry (dropped if head no
  longer has one of that kind);
- a Dir makes sure the directory exists (recreating it if someone removed it meanwhile,
  unless the writer only passed through it and has nothing left to put in it);
- paths the writer did not touch keep head's version.

**Hard-link groups** (the names sharing one nonzero ``link``) are one file, so the rule
is per group, not per name (:func:`normalize_links`): last writer wins for the whole
group. Every name of a group the writer wrote (a Put or SetMeta of one of its names)
ends up with the writer's entry for it, every name's ``nlink`` is the number of names the
group has in the new head, and a group left with one name is a plain file again. A write
or chmod *through* a name the writer saw in the group that someone else has since removed
or replaced goes to the group's other names, not to that path (the name stays gone), as
it would on one machine; only a group with no name left gets that name back.

Only the trees on changed paths are rewritten; untouched subtrees keep their digests. A
merge that touches no link group costs nothing more.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from volfs.core.changes import ALL_META, Change, Changes, Dir, Path, Put, Remove, SetMeta
from volfs.core.tree import (
    EMPTY_TREE,
    Entry,
    Kind,
    Tree,
    TreeStore,
    TreeWriter,
    find_links,
    link_names,
    lookup,
)


@dataclass
class _LinkWork:
    """What one merge learns about link groups on its way (all empty: no group touched)."""

    #: Every link id whose names the changes or the merge added, changed or removed.
    ids: set[int] = field(default_factory=set)
    #: Per id, the writer's Puts of one of its names (path, the writer's entry).
    written: defaultdict[int, list[tuple[Path, Entry]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: Per id, where a SetMeta of the writer landed on one of its names, or was deferred.
    meta: defaultdict[int, list[tuple[Path, SetMeta]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: Per id, the entries of it the writer saw or wrote: a name the link fix rewrites is
    #: an overwrite unless its content is one of them.
    seen: defaultdict[int, list[Entry]] = field(default_factory=lambda: defaultdict(list))
    #: Writes and chmods through a name of a group that head no longer has in the group:
    #: held back until it is known whether the group has other names left.
    deferred: dict[Path, Put | SetMeta] = field(default_factory=dict)
    #: False on the passes after the first: nothing is held back any more.
    defer: bool = True


@dataclass
class MergeResult:
    root: Entry
    writer: TreeWriter
    #: Paths whose content the writer replaced or removed without having seen it.
    overwrites: list[Path] = field(default_factory=list)
    _links: _LinkWork = field(default_factory=_LinkWork, repr=False)

    @property
    def trees_written(self) -> int:
        return len(self.writer.pending)


@dataclass
class _Node:
    change: Change | None = None
    children: dict[str, _Node] = field(default_factory=dict)


def _trie(changes: Changes) -> _Node:
    root = _Node()
    for path, change in changes.items():
        node = root
        for part in path:
            node = node.children.setdefault(part, _Node())
        node.change = change
    return root


def merge(store: TreeStore, head_root: Entry, changes: Changes) -> MergeResult:
    writer = TreeWriter(store)
    result = MergeResult(head_root, writer)
    trie = _trie(changes)
    if _unchanged_since_seen(head_root, trie.change):
        result.root = trie.change.entry  # type: ignore[union-attr]
    else:
        result.root = _apply_root(writer, head_root, trie, result)
    normalize_links(writer, head_root, changes, result)
    return result


def _apply_root(writer: TreeWriter, root: Entry, trie: _Node, result: MergeResult) -> Entry:
    if isinstance(trie.change, (Dir, SetMeta)):
        root = _apply_meta(
            root,
            trie.change.entry,
            trie.change.set_meta if isinstance(trie.change, Dir) else trie.change.fields,
        )
    if trie.children:
        assert root.tree is not None
        tree = _apply_children(writer, writer.get_tree(root.tree), trie, (), result)
        root = writer.dir_entry(root, tree)
    return root


def _unchanged_since_seen(head: Entry | None, change: Change | None) -> bool:
    """The writer's whole directory lands as it is: nobody changed it since the writer saw it
    (the usual commit of one mount: no tree is built or encoded a second time)."""
    return isinstance(change, Dir) and change.whole and head == change.seen


def _apply_meta(entry: Entry, source: Entry, fields: frozenset[str]) -> Entry:
    if not fields:
        return entry
    return entry.with_(**{f: getattr(source, f) for f in fields})


def _apply_children(
    writer: TreeWriter, tree: Tree, node: _Node, path: Path, result: MergeResult
) -> Tree:
    # Only the changed names are looked up and replaced: in a split directory that reads
    # and rewrites the leaves they fall in, not the directory.
    changed: dict[str, Entry | None] = {}
    for name, child in node.children.items():
        head = tree.get(name)
        new = _apply(writer, head, child, path + (name,), result)
        if new is not head:
            changed[name] = new
    return tree.updated(changed, writer)


def _apply(
    writer: TreeWriter, head: Entry | None, node: _Node, path: Path, result: MergeResult
) -> Entry | None:
    change = node.change
    links = result._links
    if isinstance(change, (Put, SetMeta)) and links.defer and _through_link(change):
        group = change.entry.link
        if head is None or head.link != group:
            # Someone removed or replaced this name of the group since the writer saw it:
            # whether the write goes to the group's other names or brings the name back
            # is decided once the whole merge is known (normalize_links).
            links.deferred[path] = change
            links.ids.add(group)
            return head
    if isinstance(change, Put):
        _note_replaced(writer, links, head)
        if head is not None and not head.same_content(change.seen):
            result.overwrites.append(path)
        return change.entry
    if isinstance(change, Remove):
        return _remove(writer, head, change.seen, path, result)
    if isinstance(change, SetMeta):
        if head is None or head.kind is not change.entry.kind:
            return head
        new = _apply_meta(head, change.entry, change.fields)
        _note_replaced(writer, links, head)
        if new.link and new.link != change.entry.link:
            # A chmod of a name that joined a group meanwhile: it is that group's file now.
            links.ids.add(new.link)
            links.meta[new.link].append((path, change))
        return new
    # A Dir, or no change of its own: a directory on the way to deeper changes.
    if _unchanged_since_seen(head, change):
        return change.entry  # type: ignore[union-attr]
    if head is not None and head.kind is Kind.DIR:
        base = head
        if isinstance(change, Dir):
            base = _apply_meta(head, change.entry, change.set_meta)
        assert base.tree is not None
        tree = writer.get_tree(base.tree)
        if node.children:
            tree = _apply_children(writer, tree, node, path, result)
        return writer.dir_entry(base, tree)
    # Head has no directory here any more: someone removed it (or put a file there) since.
    tree = EMPTY_TREE
    if node.children:
        tree = _apply_children(writer, tree, node, path, result)
    created = isinstance(change, Dir) and (change.seen is None or change.seen.kind is not Kind.DIR)
    if not tree.entries and not created:
        # The writer only passed through this directory (to remove or chmod what was in
        # it) and nothing of its own is left to put there: head's version stays.
        return head
    if head is not None:
        _note_replaced(writer, links, head)
        seen = change.seen if isinstance(change, Dir) else None
        if not head.same_content(seen):
            result.overwrites.append(path)
    template = change.entry if isinstance(change, Dir) else Entry(path[-1], Kind.DIR, 0o755)
    return writer.dir_entry(template, tree)


def _remove(
    writer: TreeWriter, head: Entry | None, seen: Entry, path: Path, result: MergeResult
) -> Entry | None:
    if head is None:
        return None
    if head.kind is not Kind.DIR:
        if seen.kind is Kind.DIR:
            return head  # someone put a file where the writer saw a directory: never seen
        if not head.same_content(seen):
            result.overwrites.append(path)
        _note_replaced(writer, result._links, head)
        return None
    if head.same_content(seen):
        return None  # its link names are the seen ones, which normalize_links knows
    # Remove what the writer saw of this directory; keep what others added meanwhile.
    seen_tree = writer.get_tree(seen.tree) if seen.kind is Kind.DIR and seen.tree else EMPTY_TREE
    assert head.tree is not None
    head_tree = writer.get_tree(head.tree)
    changed: dict[str, Entry | None] = {}
    for before in seen_tree.iter_entries():
        entry = head_tree.get(before.name)
        if entry is not None:
            kept = _remove(writer, entry, before, path + (before.name,), result)
            if kept is not entry:
                changed[before.name] = kept
    tree = head_tree.updated(changed, writer)
    if not len(tree):
        return None
    return writer.dir_entry(head, tree)


# --- hard-link groups ---------------------------------------------------------------------------
def _through_link(change: Put | SetMeta) -> bool:
    """A write or chmod of a group's file through a name the writer saw in that group (not
    a new name, not a name joining or leaving a group)."""
    group = change.entry.link
    if not group or change.entry.is_dir:
        return False
    if isinstance(change, Put):
        return change.seen is not None and change.seen.link == group
    return "link" not in change.fields


def _link_names(store: TreeStore, directory: Entry) -> list[tuple[Path, Entry]]:
    """Every name with a ``link`` below ``directory`` (none to look for if it counts none)."""
    return list(link_names(store, directory)) if directory.links else []


def _note_replaced(store: TreeStore, links: _LinkWork, head: Entry | None) -> None:
    """Head's ``head`` was replaced, changed or removed: its groups lose or change a name."""
    if head is None:
        return
    if head.kind is Kind.DIR:
        links.ids.update(entry.link for _, entry in _link_names(store, head))
    elif head.link:
        links.ids.add(head.link)


def _note_seen(store: TreeStore, links: _LinkWork, seen: Entry | None) -> None:
    """The writer saw ``seen`` (and what is below it) and replaced or removed it."""
    if seen is None:
        return
    names = _link_names(store, seen) if seen.kind is Kind.DIR else [((), seen)] if seen.link else []
    for _, entry in names:
        links.ids.add(entry.link)
        links.seen[entry.link].append(entry)


def _note_written(links: _LinkWork, path: Path, entry: Entry) -> None:
    if entry.link and not entry.is_dir:
        links.ids.add(entry.link)
        links.written[entry.link].append((path, entry))
        links.seen[entry.link].append(entry)


def _scan(store: TreeStore, head_root: Entry, changes: Changes, links: _LinkWork) -> None:
    """What the writer's changes say about link groups (the merge itself adds what head had)."""
    for path, change in changes.items():
        if isinstance(change, Put):
            _note_written(links, path, change.entry)
            _note_seen(store, links, change.seen)
        elif isinstance(change, Remove):
            _note_seen(store, links, change.seen)
        elif isinstance(change, SetMeta):
            group = change.entry.link
            if group and not change.entry.is_dir:
                links.ids.add(group)
                links.meta[group].append((path, change))
                links.seen[group].append(change.entry)  # a SetMeta keeps the content it saw
            if "link" in change.fields:
                # The name joined or left a group: which one it left, head says (where the
                # writer's directory was taken whole, head is what the writer saw).
                before = lookup(store, head_root, path)
                if before is not None and before.link:
                    links.ids.add(before.link)
        elif isinstance(change, Dir):
            seen = change.seen
            if seen is not None and seen.kind is not Kind.DIR:
                _note_seen(store, links, seen)
            if change.whole and (seen is None or seen.kind is not Kind.DIR) and change.entry.links:
                # A directory the writer created, taken whole: its names may not be listed.
                for sub, entry in _link_names(store, change.entry):
                    if path + sub not in changes:
                        _note_written(links, path + sub, entry)


def normalize_links(
    writer: TreeWriter, head_root: Entry, changes: Changes, result: MergeResult
) -> None:
    """Makes every link group the merge touched one file again, in ``result.root``.

    For each group: the deferred writes through names someone else removed are dropped if
    the group still has names, applied (bringing the name back) if it has none; then every
    name gets the writer's entry for the group if it wrote one — a Put's, else where its
    SetMeta landed — and ``nlink`` = the number of names; a group of one name becomes a
    plain file. Names already right are left alone (a mount that had every name loaded
    gets no extra tree). The rewrites are a second merge pass of Puts.
    """
    links = result._links
    _scan(writer, head_root, changes, links)
    if not links.ids:
        return
    links.defer = False
    root = result.root
    if links.deferred:
        alive = find_links(writer, root, {c.entry.link for c in links.deferred.values()})
        revived = {
            path: change
            for path, change in links.deferred.items()
            if isinstance(change, Put) and not alive[change.entry.link]
        }
        if revived:
            # The group has no name left: the write wins over the removals, as a plain
            # file's would, with the directories the writer had on the way.
            trie = _trie({**_parents(changes, revived), **revived})
            root = _apply_root(writer, root, trie, result)
    fixes: dict[Path, Change] = {}
    fixed_overwrites: list[Path] = []
    for group, names in find_links(writer, root, links.ids).items():
        if not names:
            continue
        names.sort(key=lambda item: item[0])
        model = _group_entry(group, names, links)
        link, nlink = (group, len(names)) if len(names) > 1 else (0, 1)
        for path, entry in names:
            want = (model or entry).with_(name=entry.name, link=link, nlink=nlink)
            if want == entry:
                continue
            fixes[path] = Put(want, entry)
            if not want.same_content(entry) and not any(
                entry.same_content(s) for s in links.seen[group]
            ):
                fixed_overwrites.append(path)
    if fixes:
        root = _apply_root(
            writer, root, _trie(fixes), MergeResult(root, writer, _links=_LinkWork(defer=False))
        )
    recorded = set(result.overwrites)
    result.overwrites.extend(p for p in sorted(fixed_overwrites) if p not in recorded)
    result.root = root


def _group_entry(group: int, names: list[tuple[Path, Entry]], links: _LinkWork) -> Entry | None:
    """The entry every name of ``group`` gets: the writer's (None if it wrote none)."""
    written = links.written.get(group)
    if written:
        return min(written, key=lambda item: item[0])[1]
    at = dict(names)
    for path, change in sorted(links.meta.get(group, ()), key=lambda item: item[0]):
        landed = at.get(path)
        if landed is not None:
            return landed
        if path in links.deferred:
            # A chmod through a name someone else removed: it applies to the group's file.
            return _apply_meta(names[0][1], change.entry, change.fields)
    return None


def _parents(changes: Changes, paths: Iterable[Path]) -> Changes:
    """The writer's Dir changes above ``paths`` (not taken whole: head differs there)."""
    out: Changes = {}
    for path in paths:
        for i in range(len(path)):
            change = changes.get(path[:i])
            if isinstance(change, Dir):
                out[path[:i]] = dataclasses.replace(change, whole=False)
    return out


__all__ = ["ALL_META", "MergeResult", "merge", "normalize_links"]
