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

Only the trees on changed paths are rewritten; untouched subtrees keep their digests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from volfs.changes import ALL_META, Change, Changes, Dir, Path, Put, Remove, SetMeta
from volfs.tree import EMPTY_TREE, Entry, Kind, Tree, TreeStore, TreeWriter


@dataclass
class MergeResult:
    root: Entry
    writer: TreeWriter
    #: Paths whose content the writer replaced or removed without having seen it.
    overwrites: list[Path] = field(default_factory=list)

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
        return result
    root = head_root
    if isinstance(trie.change, (Dir, SetMeta)):
        root = _apply_meta(root, trie.change.entry, trie.change.set_meta if isinstance(trie.change, Dir) else trie.change.fields)
    if trie.children:
        assert root.tree is not None
        tree = _apply_children(writer, store.get_tree(root.tree), trie, (), result)
        root = writer.dir_entry(root, tree)
    result.root = root
    return result


def _unchanged_since_seen(head: Entry | None, change: Change | None) -> bool:
    """The writer's whole directory lands as it is: nobody changed it since the writer saw it
    (the usual commit of one mount: no tree is built or encoded a second time)."""
    return isinstance(change, Dir) and change.whole and head == change.seen


def _apply_meta(entry: Entry, source: Entry, fields: frozenset[str]) -> Entry:
    if not fields:
        return entry
    return entry.with_(**{f: getattr(source, f) for f in fields})


def _apply_children(writer: TreeWriter, tree: Tree, node: _Node, path: Path, result: MergeResult) -> Tree:
    entries = {e.name: e for e in tree.entries}
    for name, child in node.children.items():
        child_path = path + (name,)
        new = _apply(writer, entries.get(name), child, child_path, result)
        if new is None:
            entries.pop(name, None)
        else:
            entries[name] = new.with_(name=name) if new.name != name else new
    return Tree.of(entries)


def _apply(writer: TreeWriter, head: Entry | None, node: _Node, path: Path, result: MergeResult) -> Entry | None:
    change = node.change
    if isinstance(change, Put):
        if head is not None and not head.same_content(change.seen):
            result.overwrites.append(path)
        return change.entry
    if isinstance(change, Remove):
        return _remove(writer, head, change.seen, path, result)
    if isinstance(change, SetMeta):
        if head is None or head.kind is not change.entry.kind:
            return head
        return _apply_meta(head, change.entry, change.fields)
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
        seen = change.seen if isinstance(change, Dir) else None
        if not head.same_content(seen):
            result.overwrites.append(path)
    template = change.entry if isinstance(change, Dir) else Entry(path[-1], Kind.DIR, 0o755)
    return writer.dir_entry(template, tree)


def _remove(writer: TreeWriter, head: Entry | None, seen: Entry, path: Path, result: MergeResult) -> Entry | None:
    if head is None:
        return None
    if head.kind is not Kind.DIR:
        if seen.kind is Kind.DIR:
            return head  # someone put a file where the writer saw a directory: never seen
        if not head.same_content(seen):
            result.overwrites.append(path)
        return None
    if head.same_content(seen):
        return None
    # Remove what the writer saw of this directory; keep what others added meanwhile.
    seen_tree = writer.get_tree(seen.tree) if seen.kind is Kind.DIR and seen.tree else EMPTY_TREE
    assert head.tree is not None
    entries = {}
    for entry in writer.get_tree(head.tree).entries:
        before = seen_tree.get(entry.name)
        if before is None:
            entries[entry.name] = entry
            continue
        kept = _remove(writer, entry, before, path + (entry.name,), result)
        if kept is not None:
            entries[entry.name] = kept
    if not entries:
        return None
    return writer.dir_entry(head, Tree.of(entries))


__all__ = ["ALL_META", "MergeResult", "merge"]
