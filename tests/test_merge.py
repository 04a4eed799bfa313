"""The merge rule of DESIGN §2 (last writer wins, per path, nothing needlessly lost).

A writer's changes are the diff of its base and its view; they are merged onto a head that
others may have moved since. Volumes are modelled as {path: (content, mode)}; the
properties compare the merged tree with that model, path by path.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from volfs.blobs import digest_of
from volfs.core.changes import Changes, Dir, Put, Remove, SetMeta, diff
from volfs.core.merge import MergeResult, merge
from volfs.core.tree import Entry, Kind, MemoryTreeStore, Tree, TreeWriter, dense, lookup, walk

Path = tuple[str, ...]
File = tuple[bytes, int]  # (content, mode)
Model = dict[Path, File]
MTIME = 1_700_000_000_000_000_000


def build(store: MemoryTreeStore, files: Model) -> Entry:
    """The root of a tree holding ``files``; directories are implied, all alike."""
    writer = TreeWriter(store)

    def make(prefix: Path) -> Tree:
        children: dict[str, Entry] = {}
        for path, (data, mode) in files.items():
            if len(path) <= len(prefix) or path[: len(prefix)] != prefix:
                continue
            name = path[len(prefix)]
            if len(path) == len(prefix) + 1:
                children[name] = Entry(
                    name,
                    Kind.FILE,
                    mode,
                    mtime_ns=MTIME,
                    size=len(data),
                    chunks=dense([digest_of(data)]),
                )
            elif name not in children:
                template = Entry(name, Kind.DIR, 0o755, mtime_ns=MTIME)
                children[name] = writer.dir_entry(template, make(prefix + (name,)))
        return Tree.of(children)

    root = writer.dir_entry(Entry("", Kind.DIR, 0o755, mtime_ns=MTIME), make(()))
    store.absorb(writer)
    return root


def files_of(store: MemoryTreeStore, root: Entry) -> Model:
    """The model of a tree: its files (empty directories are not in the model)."""
    out: Model = {}
    for path, entry in walk(store, root):
        if entry.kind is Kind.FILE:
            data = CONTENTS[entry.chunks[0][1]]
            out[path] = (data, entry.mode)
    return out


def apply(store: MemoryTreeStore, head: Entry, changes: Changes) -> MergeResult:
    result = merge(store, head, changes)
    store.absorb(result.writer)
    return result


class Volume:
    """One store, a base everybody started from, and helpers to derive changes."""

    def __init__(self, base: Model) -> None:
        self.store = MemoryTreeStore()
        self.base_files = base
        self.base = build(self.store, base)

    def changes(self, view: Model, since: Entry | None = None) -> Changes:
        return diff(self.store, since or self.base, build(self.store, view))

    def commit(self, head: Entry, view: Model, since: Entry | None = None) -> MergeResult:
        return apply(self.store, head, self.changes(view, since))


# --- the model ------------------------------------------------------------------------------
# File names (f*) and directory names (d*) never collide, so no path is ever a file in one
# tree and a directory in another: the properties below are about the per-path rules.
FILE_NAMES = ["f0", "f1", "f2"]
DIR_NAMES = ["d0", "d1"]
UNIVERSE: list[Path] = [
    dirs + (f,)
    for dirs in [(), ("d0",), ("d1",), ("d0", "d0"), ("d0", "d1"), ("d1", "d0")]
    for f in FILE_NAMES
]
CONTENT_CHOICES = [b"", b"A", b"BB", b"CCC"]
CONTENTS = {digest_of(c): c for c in CONTENT_CHOICES}
MODES = [0o644, 0o600]

file_values = st.tuples(st.sampled_from(CONTENT_CHOICES), st.sampled_from(MODES))
models = st.dictionaries(st.sampled_from(UNIVERSE), file_values, max_size=12)
# What one writer does at one path: delete it, write it, or chmod it.
actions = st.one_of(
    st.just(("rm",)),
    st.tuples(st.just("put"), file_values),
    st.tuples(st.just("chmod"), st.sampled_from(MODES)),
)
action_maps = st.dictionaries(st.sampled_from(UNIVERSE), actions, max_size=8)


def perform(base: Model, acts: dict[Path, tuple]) -> Model:
    out = dict(base)
    for path, act in acts.items():
        if act[0] == "rm":
            out.pop(path, None)
        elif act[0] == "put":
            out[path] = act[1]
        elif path in out:
            out[path] = (out[path][0], act[1])
    return out


def expected_merge(base: Model, head: Model, view: Model) -> tuple[Model, set[Path]]:
    """DESIGN §2, per file path: what the merge must produce, and what it must record."""
    result = dict(head)
    overwrites = set()
    for path in set(base) | set(head) | set(view):
        b, h, w = base.get(path), head.get(path), view.get(path)
        if w == b:
            continue  # untouched by the writer: head's version stays
        if (w and w[0]) != (b and b[0]) or (w is None) != (b is None):
            # Written or deleted: the writer's version wins; an overwrite of content the
            # writer never saw is recorded.
            if w is None:
                result.pop(path, None)
            else:
                result[path] = w
            if h is not None and (b is None or h[0] != b[0]):
                overwrites.add(path)
        elif h is not None:
            assert w is not None
            result[path] = (h[0], w[1])  # chmod applies to head's current content
    return result, overwrites


# --- properties -------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(models, action_maps, action_maps)
def test_merge_follows_the_per_path_rule(base: Model, others: dict, mine: dict) -> None:
    vol = Volume(base)
    head_files = perform(base, others)
    head = vol.commit(vol.base, head_files).root
    view = perform(base, mine)
    result = vol.commit(head, view)
    want, want_overwrites = expected_merge(base, head_files, view)
    assert files_of(vol.store, result.root) == want
    assert len(result.overwrites) == len(set(result.overwrites))
    assert set(result.overwrites) == want_overwrites


@st.composite
def disjoint_writers(draw: st.DrawFn) -> tuple[Model, dict, dict]:
    """A base and two writers whose changes touch disjoint sets of files."""
    base = draw(models)
    owner = draw(st.fixed_dictionaries({p: st.sampled_from("AB-") for p in UNIVERSE}))
    acts: dict[str, dict] = {}
    for who in "AB":
        mine = [p for p in UNIVERSE if owner[p] == who]
        acts[who] = (
            draw(st.dictionaries(st.sampled_from(mine), actions, max_size=6)) if mine else {}
        )
    if draw(st.booleans()):
        # The interesting case for directories: one writer removes a whole directory (all
        # of it that existed) while the other adds files to it.
        prefix = draw(st.sampled_from([("d0",), ("d1",), ("d0", "d0")]))
        remover, adder = draw(st.sampled_from(["AB", "BA"]))
        below = [p for p in UNIVERSE if p[: len(prefix)] == prefix]
        acts[remover] = {p: v for p, v in acts[remover].items() if p not in below}
        acts[adder] = {p: v for p, v in acts[adder].items() if p not in below}
        acts[remover].update({p: ("rm",) for p in below if p in base})
        new = [p for p in below if p not in base]
        if new:
            for p in draw(st.lists(st.sampled_from(new), max_size=2)):
                acts[adder][p] = ("put", draw(file_values))
    return base, acts["A"], acts["B"]


@settings(max_examples=400, deadline=None)
@given(disjoint_writers())
def test_disjoint_changes_commute(case: tuple[Model, dict, dict]) -> None:
    base, acts_a, acts_b = case
    vol = Volume(base)
    changes_a = vol.changes(perform(base, acts_a))
    changes_b = vol.changes(perform(base, acts_b))
    a_then_b = apply(vol.store, apply(vol.store, vol.base, changes_a).root, changes_b)
    b_then_a = apply(vol.store, apply(vol.store, vol.base, changes_b).root, changes_a)
    assert a_then_b.root.tree == b_then_a.root.tree
    assert files_of(vol.store, a_then_b.root) == perform(perform(base, acts_a), acts_b)
    assert a_then_b.overwrites == [] and b_then_a.overwrites == []


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 6), st.integers(0, 4))
def test_one_changed_file_at_depth_d_rewrites_d_plus_1_trees(depth: int, siblings: int) -> None:
    dirs = tuple(f"d{i}" for i in range(depth))
    base: Model = {dirs + ("f",): (b"A", 0o644)}
    for level in range(depth + 1):
        for s in range(siblings):
            base[dirs[:level] + (f"s{s}",)] = (b"BB", 0o644)
            base[dirs[:level] + (f"t{s}", "deep")] = (b"CCC", 0o644)
    vol = Volume(base)
    view = dict(base)
    view[dirs + ("f",)] = (b"CCC", 0o644)
    view_root = build(vol.store, view)
    # On the head the writer started from, its view lands as it is: no tree built again.
    result = vol.commit(vol.base, view)
    assert result.trees_written == 0 and result.root == view_root
    # Someone else changed a file at the top since: the root is merged, nothing below it.
    other = dict(base)
    other[("s-other",)] = (b"A", 0o644)
    head = vol.commit(vol.base, other).root
    result = vol.commit(head, view)
    assert result.trees_written == 1
    assert files_of(vol.store, result.root) == {**view, ("s-other",): (b"A", 0o644)}


def _parts(changes: Changes) -> Changes:
    """The same changes without the ``whole`` hint: the merge builds every tree itself."""
    return {
        p: dataclasses.replace(c, whole=False) if isinstance(c, Dir) else c
        for p, c in changes.items()
    }


@settings(max_examples=300, deadline=None)
@given(models, action_maps, action_maps)
def test_taking_the_writers_whole_directories_gives_the_merge_of_its_parts(
    base: Model, others: dict, mine: dict
) -> None:
    vol = Volume(base)
    head = vol.commit(vol.base, perform(base, others)).root
    changes = vol.changes(perform(base, mine))
    whole, parts = apply(vol.store, head, changes), apply(vol.store, head, _parts(changes))
    assert whole.root == parts.root
    assert whole.overwrites == parts.overwrites


# --- the rules, one at a time -------------------------------------------------------------------
def test_paths_not_touched_keep_heads_version() -> None:
    vol = Volume({("a",): (b"A", 0o644), ("d0", "b"): (b"A", 0o644)})
    head = vol.commit(vol.base, {("a",): (b"BB", 0o600), ("d0", "b"): (b"CCC", 0o644)}).root
    result = vol.commit(
        head, {("a",): (b"A", 0o644), ("d0", "b"): (b"A", 0o644), ("new",): (b"", 0o644)}
    )
    assert files_of(vol.store, result.root) == {
        ("a",): (b"BB", 0o600),
        ("d0", "b"): (b"CCC", 0o644),
        ("new",): (b"", 0o644),
    }
    # Untouched subtrees keep their digests (not just their content).
    assert lookup(vol.store, result.root, ("d0",)) == lookup(vol.store, head, ("d0",))


def test_a_written_file_replaces_heads_and_records_the_overwrite() -> None:
    vol = Volume({("a",): (b"A", 0o644)})
    head = vol.commit(vol.base, {("a",): (b"BB", 0o644)}).root
    result = vol.commit(head, {("a",): (b"CCC", 0o644)})
    assert files_of(vol.store, result.root) == {("a",): (b"CCC", 0o644)}
    assert result.overwrites == [("a",)]


def test_a_write_over_content_the_writer_saw_is_not_recorded() -> None:
    vol = Volume({("a",): (b"A", 0o644), ("b",): (b"A", 0o644)})
    head = vol.commit(vol.base, {("a",): (b"A", 0o644), ("b",): (b"BB", 0o644)}).root
    result = vol.commit(head, {("a",): (b"CCC", 0o644), ("b",): (b"A", 0o644)})
    assert result.overwrites == []
    # Nor is a write over a file whose mode alone changed since (the bytes were seen).
    head = vol.commit(vol.base, {("a",): (b"A", 0o600), ("b",): (b"A", 0o644)}).root
    assert vol.commit(head, {("a",): (b"BB", 0o644), ("b",): (b"A", 0o644)}).overwrites == []


def test_a_new_file_over_one_someone_else_created_is_recorded() -> None:
    vol = Volume({})
    head = vol.commit(vol.base, {("a",): (b"A", 0o644)}).root
    result = vol.commit(head, {("a",): (b"BB", 0o644)})
    assert files_of(vol.store, result.root) == {("a",): (b"BB", 0o644)}
    assert result.overwrites == [("a",)]


def test_a_deleted_file_is_removed_even_if_changed_since() -> None:
    vol = Volume({("d0", "a"): (b"A", 0o644), ("d0", "b"): (b"A", 0o644)})
    head = vol.commit(vol.base, {("d0", "a"): (b"BB", 0o644), ("d0", "b"): (b"A", 0o644)}).root
    result = vol.commit(head, {("d0", "b"): (b"A", 0o644)})
    assert files_of(vol.store, result.root) == {("d0", "b"): (b"A", 0o644)}
    assert result.overwrites == [("d0", "a")]


def test_a_deleted_file_someone_else_deleted_too_is_no_overwrite() -> None:
    vol = Volume({("a",): (b"A", 0o644), ("b",): (b"A", 0o644)})
    head = vol.commit(vol.base, {("b",): (b"A", 0o644)}).root
    result = vol.commit(head, {("b",): (b"A", 0o644)})
    assert files_of(vol.store, result.root) == {("b",): (b"A", 0o644)}
    assert result.overwrites == []


def test_chmod_applies_to_heads_current_content() -> None:
    vol = Volume({("a",): (b"A", 0o644)})
    head = vol.commit(vol.base, {("a",): (b"BB", 0o644)}).root
    changes = vol.changes({("a",): (b"A", 0o600)})
    assert isinstance(changes[("a",)], SetMeta)
    result = apply(vol.store, head, changes)
    assert files_of(vol.store, result.root) == {("a",): (b"BB", 0o600)}
    assert result.overwrites == []


def test_chmod_of_a_file_someone_else_deleted_is_dropped() -> None:
    vol = Volume({("a",): (b"A", 0o644), ("b",): (b"A", 0o644)})
    head = vol.commit(vol.base, {("b",): (b"A", 0o644)}).root
    result = vol.commit(head, {("a",): (b"A", 0o600), ("b",): (b"A", 0o644)})
    assert files_of(vol.store, result.root) == {("b",): (b"A", 0o644)}


def test_utimes_changes_only_the_fields_the_writer_changed() -> None:
    vol = Volume({("a",): (b"A", 0o644)})
    head = vol.commit(vol.base, {("a",): (b"BB", 0o600)}).root
    seen = lookup(vol.store, vol.base, ("a",))
    assert seen is not None
    changes: Changes = {("a",): SetMeta(seen.with_(mtime_ns=42), frozenset({"mtime_ns"}))}
    result = apply(vol.store, head, changes)
    entry = lookup(vol.store, result.root, ("a",))
    assert entry is not None
    assert (entry.mtime_ns, entry.mode, entry.size) == (42, 0o600, 2)


def test_a_deleted_directory_keeps_what_others_added() -> None:
    base = {("d0", "a"): (b"A", 0o644), ("d0", "d1", "b"): (b"A", 0o644), ("keep",): (b"", 0o644)}
    vol = Volume(base)
    others = dict(base)
    others[("d0", "new")] = (b"BB", 0o644)
    others[("d0", "d1", "new")] = (b"CCC", 0o644)
    head = vol.commit(vol.base, others).root
    changes = vol.changes({("keep",): (b"", 0o644)})
    assert isinstance(changes[("d0",)], Remove)
    result = apply(vol.store, head, changes)
    assert files_of(vol.store, result.root) == {
        ("d0", "new"): (b"BB", 0o644),
        ("d0", "d1", "new"): (b"CCC", 0o644),
        ("keep",): (b"", 0o644),
    }
    assert result.overwrites == []


def test_a_deleted_directory_disappears_if_nothing_unseen_remains() -> None:
    base = {("d0", "a"): (b"A", 0o644), ("d0", "d1", "b"): (b"A", 0o644), ("keep",): (b"", 0o644)}
    vol = Volume(base)
    # Someone changed a file in it meanwhile: it goes anyway (recorded), and so does the
    # directory, and its subdirectory.
    head = vol.commit(vol.base, {**base, ("d0", "d1", "b"): (b"BB", 0o644)}).root
    result = vol.commit(head, {("keep",): (b"", 0o644)})
    assert files_of(vol.store, result.root) == {("keep",): (b"", 0o644)}
    assert lookup(vol.store, result.root, ("d0",)) is None
    assert result.overwrites == [("d0", "d1", "b")]


def test_a_deleted_directory_someone_else_deleted_too_is_fine() -> None:
    base = {("d0", "a"): (b"A", 0o644), ("keep",): (b"", 0o644)}
    vol = Volume(base)
    head = vol.commit(vol.base, {("keep",): (b"", 0o644)}).root
    result = vol.commit(head, {("keep",): (b"", 0o644)})
    assert result.root.tree == head.tree
    assert result.overwrites == []


def test_a_rename_is_a_remove_plus_a_put() -> None:
    base = {("d0", "a"): (b"A", 0o644), ("d0", "b"): (b"BB", 0o644)}
    vol = Volume(base)
    # Meanwhile someone else added a file next to the renamed one and changed another.
    head = vol.commit(
        vol.base, {**base, ("d0", "c"): (b"CCC", 0o644), ("d0", "b"): (b"", 0o644)}
    ).root
    changes = vol.changes({("d1", "renamed"): (b"A", 0o644), ("d0", "b"): (b"BB", 0o644)})
    assert isinstance(changes[("d0", "a")], Remove)
    assert isinstance(changes[("d1", "renamed")], Put)
    result = apply(vol.store, head, changes)
    assert files_of(vol.store, result.root) == {
        ("d1", "renamed"): (b"A", 0o644),
        ("d0", "b"): (b"", 0o644),
        ("d0", "c"): (b"CCC", 0o644),
    }
    assert result.overwrites == []


def test_a_directory_rename_keeps_what_others_added_at_the_old_place() -> None:
    base = {("d0", "a"): (b"A", 0o644), ("d0", "d1", "b"): (b"BB", 0o644)}
    vol = Volume(base)
    head = vol.commit(vol.base, {**base, ("d0", "late"): (b"CCC", 0o644)}).root
    result = vol.commit(head, {("d1", "a"): (b"A", 0o644), ("d1", "d1", "b"): (b"BB", 0o644)})
    assert files_of(vol.store, result.root) == {
        ("d1", "a"): (b"A", 0o644),
        ("d1", "d1", "b"): (b"BB", 0o644),
        ("d0", "late"): (b"CCC", 0o644),
    }


def test_a_directory_someone_else_removed_is_not_resurrected_empty() -> None:
    # The writer only deleted a file inside d0; someone else removed all of d0 meanwhile.
    # The writer never touched d0 itself, so head's version (no d0) stays.
    base = {("d0", "a"): (b"A", 0o644), ("d0", "b"): (b"A", 0o644), ("keep",): (b"", 0o644)}
    vol = Volume(base)
    head = vol.commit(vol.base, {("keep",): (b"", 0o644)}).root
    result = vol.commit(head, {("d0", "b"): (b"A", 0o644), ("keep",): (b"", 0o644)})
    assert lookup(vol.store, result.root, ("d0",)) is None
    assert result.root.tree == head.tree


def test_a_file_put_where_a_directory_was_survives_a_writer_that_only_removed_inside() -> None:
    vol = Volume({("d0", "a"): (b"A", 0o644), ("d0", "b"): (b"A", 0o644)})
    file = Entry("d0", Kind.FILE, 0o644, mtime_ns=MTIME, size=2, chunks=dense([digest_of(b"BB")]))
    seen = lookup(vol.store, vol.base, ("d0",))
    head = apply(vol.store, vol.base, {("d0",): Put(file, seen)}).root
    result = vol.commit(head, {("d0", "b"): (b"A", 0o644)})
    assert files_of(vol.store, result.root) == {("d0",): (b"BB", 0o644)}
    assert result.overwrites == []


def test_a_directory_someone_else_removed_is_recreated_for_new_files() -> None:
    base = {("d0", "a"): (b"A", 0o644), ("keep",): (b"", 0o644)}
    vol = Volume(base)
    head = vol.commit(vol.base, {("keep",): (b"", 0o644)}).root
    result = vol.commit(head, {**base, ("d0", "new"): (b"BB", 0o644)})
    assert files_of(vol.store, result.root) == {
        ("d0", "new"): (b"BB", 0o644),
        ("keep",): (b"", 0o644),
    }


def test_an_empty_directory_the_writer_created_lands() -> None:
    vol = Volume({})
    writer = TreeWriter(vol.store)
    entry = writer.dir_entry(Entry("empty", Kind.DIR, 0o700, mtime_ns=MTIME), Tree(()))
    vol.store.absorb(writer)
    result = apply(vol.store, vol.base, {("empty",): Dir(entry, None, frozenset({"mode"}))})
    got = lookup(vol.store, result.root, ("empty",))
    assert got is not None and got.kind is Kind.DIR and got.mode == 0o700


def test_a_file_written_where_head_now_has_a_directory_replaces_it_recorded() -> None:
    vol = Volume({})
    head = vol.commit(vol.base, {("d0", "x"): (b"A", 0o644)}).root
    entry = Entry("d0", Kind.FILE, 0o644, mtime_ns=MTIME, size=2, chunks=dense([digest_of(b"BB")]))
    result = apply(vol.store, head, {("d0",): Put(entry, None)})
    assert files_of(vol.store, result.root) == {("d0",): (b"BB", 0o644)}
    assert result.overwrites == [("d0",)]


def test_totals_follow_the_merge() -> None:
    vol = Volume({("d0", "a"): (b"A", 0o644), ("b",): (b"BB", 0o644)})
    head = vol.commit(
        vol.base, {("d0", "a"): (b"A", 0o644), ("b",): (b"BB", 0o644), ("d0", "c"): (b"CCC", 0o644)}
    ).root
    result = vol.commit(head, {("d0", "a"): (b"", 0o644)})
    assert (result.root.size, result.root.files) == (3, 2)
    d0 = lookup(vol.store, result.root, ("d0",))
    assert d0 is not None and (d0.size, d0.files) == (3, 2)


# --- hard-link groups ---------------------------------------------------------------------------
# A volume here is {path: entry} (names and directories implied); a link group is the
# entries sharing one nonzero ``link``. The rule: a group is one file, last writer wins for
# all of it; nlink is its number of names; a group of one name is a plain file.
Entries = dict[Path, Entry]
X = 0x1111_2222_3333_4444


def node(data: bytes, mode: int = 0o644, link: int = 0, nlink: int = 1) -> Entry:
    return Entry(
        "",
        Kind.FILE,
        mode,
        mtime_ns=MTIME,
        size=len(data),
        chunks=dense([digest_of(data)]),
        link=link,
        nlink=nlink,
    )


def build_entries(store: MemoryTreeStore, entries: Entries) -> Entry:
    writer = TreeWriter(store)

    def make(prefix: Path) -> Tree:
        children: dict[str, Entry] = {}
        for path, entry in entries.items():
            if len(path) <= len(prefix) or path[: len(prefix)] != prefix:
                continue
            name = path[len(prefix)]
            if len(path) == len(prefix) + 1:
                children[name] = entry.with_(name=name)
            elif name not in children:
                template = Entry(name, Kind.DIR, 0o755, mtime_ns=MTIME)
                children[name] = writer.dir_entry(template, make(prefix + (name,)))
        return Tree.of(children)

    root = writer.dir_entry(Entry("", Kind.DIR, 0o755, mtime_ns=MTIME), make(()))
    store.absorb(writer)
    return root


def entries_of(store: MemoryTreeStore, root: Entry) -> Entries:
    return {path: e.with_(name="") for path, e in walk(store, root) if e.kind is not Kind.DIR}


def group_problems(store: MemoryTreeStore, root: Entry) -> list[str]:
    """What is wrong with the link groups below ``root`` (nothing: an empty list)."""
    groups: dict[int, list[tuple[Path, Entry]]] = {}
    problems = []
    for path, entry in entries_of(store, root).items():
        if entry.link:
            groups.setdefault(entry.link, []).append((path, entry))
        elif entry.nlink != 1:
            problems.append(f"{path}: nlink {entry.nlink} without a link")
    for link, names in groups.items():
        if len(names) < 2:
            problems.append(f"group {link:x} has one name: {names[0][0]}")
        for path, entry in names:
            if entry.nlink != len(names):
                problems.append(
                    f"{path}: nlink {entry.nlink}, group {link:x} has {len(names)} names"
                )
            if entry != names[0][1].with_(nlink=entry.nlink):
                problems.append(f"{path} differs from {names[0][0]} in group {link:x}")
    return problems


class Links:
    """A store and a base {path: entry}; writers' changes are diffs of views of the base."""

    def __init__(self, base: Entries) -> None:
        self.store = MemoryTreeStore()
        self.base = build_entries(self.store, base)

    def changes(self, view: Entries, since: Entry | None = None) -> Changes:
        return diff(self.store, since or self.base, build_entries(self.store, view))

    def commit(self, head: Entry, view: Entries, since: Entry | None = None) -> MergeResult:
        result = apply(self.store, head, self.changes(view, since))
        assert group_problems(self.store, result.root) == []
        return result

    def at(self, root: Entry, *path: str) -> Entry | None:
        entry = lookup(self.store, root, path)
        return entry.with_(name="") if entry is not None else None


P, Q, S = ("d0", "p"), ("d1", "q"), ("d0", "s")


def test_a_write_through_one_name_reaches_names_the_writer_never_loaded() -> None:
    vol = Links({P: node(b"A", link=X, nlink=2), Q: node(b"A", link=X, nlink=2)})
    # The writer rewrote p; d1 was never loaded in its view, so q is as it was (and not
    # in its diff).
    view = {P: node(b"BB", link=X, nlink=2), Q: node(b"A", link=X, nlink=2)}
    changes = vol.changes(view)
    assert set(changes) == {(), ("d0",), P}
    # Onto the base (the writer's root is taken whole) and onto a head moved elsewhere.
    moved = vol.commit(vol.base, {**entries_of(vol.store, vol.base), ("other",): node(b"CCC")}).root
    for head in (vol.base, moved):
        result = vol.commit(head, view)
        assert vol.at(result.root, *Q) == vol.at(result.root, *P) == node(b"BB", link=X, nlink=2)
        assert result.overwrites == []


def test_a_consistent_view_gets_no_extra_tree() -> None:
    base = {P: node(b"A", link=X, nlink=2), Q: node(b"A", link=X, nlink=2), ("r",): node(b"A")}
    vol = Links(base)
    view = {P: node(b"BB", link=X, nlink=2), Q: node(b"BB", link=X, nlink=2), ("r",): node(b"A")}
    view_root = build_entries(vol.store, view)
    result = vol.commit(vol.base, view)
    assert result.trees_written == 0 and result.root == view_root
    # Onto a head someone moved at the top: the root is merged, nothing else is written.
    head = vol.commit(vol.base, {**base, ("r",): node(b"CCC")}).root
    result = vol.commit(head, view)
    assert result.trees_written == 1
    assert vol.at(result.root, "r") == node(b"CCC")


def rename_and_rewrite(order: str) -> tuple[Links, MergeResult, Entry]:
    """Base: p and q, one file. A rewrites it through p (its diff writes p and q); B renames
    p to s (its diff: remove p, put s). Both from the base, committed in ``order``."""
    vol = Links({P: node(b"A", link=X, nlink=2), Q: node(b"A", link=X, nlink=2)})
    changes = {
        "A": vol.changes({P: node(b"BB", link=X, nlink=2), Q: node(b"BB", link=X, nlink=2)}),
        "B": vol.changes({S: node(b"A", link=X, nlink=2), Q: node(b"A", link=X, nlink=2)}),
    }
    assert set(changes["A"]) >= {P, Q} and isinstance(changes["B"][P], Remove)
    head = vol.base
    for who in order:
        result = apply(vol.store, head, changes[who])
        head = result.root
    assert group_problems(vol.store, head) == []
    return vol, result, head


def test_a_rename_then_a_write_through_the_old_name_agree() -> None:
    vol, last, head = rename_and_rewrite("BA")
    # A wrote the file, last: its content, on the names the file has now (B's rename
    # stands: p is not brought back).
    assert vol.at(head, *P) is None
    assert vol.at(head, *S) == vol.at(head, *Q) == node(b"BB", link=X, nlink=2)
    assert last.overwrites == []  # s held what A saw of the file


def test_a_write_then_a_rename_agree() -> None:
    vol, last, head = rename_and_rewrite("AB")
    # B wrote the file's names last (a rename is a delete plus a write): its version of
    # the file wins for every name, and A's lost write is recorded where it was.
    assert vol.at(head, *P) is None
    assert vol.at(head, *S) == vol.at(head, *Q) == node(b"A", link=X, nlink=2)
    assert sorted(last.overwrites) == [P, Q]


def test_removing_names_fixes_nlink_and_the_last_name_is_a_plain_file() -> None:
    r = ("d1", "d0", "r")
    vol = Links(
        {
            P: node(b"A", link=X, nlink=3),
            Q: node(b"A", link=X, nlink=3),
            r: node(b"A", link=X, nlink=3),
        }
    )
    # The writer unlinked p without ever loading q's or r's directory.
    result = vol.commit(vol.base, {Q: node(b"A", link=X, nlink=3), r: node(b"A", link=X, nlink=3)})
    assert vol.at(result.root, *Q) == vol.at(result.root, *r) == node(b"A", link=X, nlink=2)
    # Another, from the same base, unlinks q: one name is left.
    result = vol.commit(
        result.root, {P: node(b"A", link=X, nlink=3), r: node(b"A", link=X, nlink=3)}
    )
    assert entries_of(vol.store, result.root) == {r: node(b"A")}
    assert result.overwrites == []


def test_removing_a_directory_removes_its_link_names_from_their_groups() -> None:
    inside = ("d0", "d1", "q")
    vol = Links(
        {
            P: node(b"A", link=X, nlink=3),
            inside: node(b"A", link=X, nlink=3),
            ("r",): node(b"A", link=X, nlink=3),
            ("d1", "f"): node(b"CCC"),
        }
    )
    # Someone else added a file to d0 meanwhile: d0 stays for it, the link names go.
    head = vol.commit(
        vol.base, {**entries_of(vol.store, vol.base), ("d0", "late"): node(b"BB")}
    ).root
    changes = vol.changes({("r",): node(b"A", link=X, nlink=3), ("d1", "f"): node(b"CCC")})
    assert isinstance(changes[("d0",)], Remove) and P not in changes
    result = apply(vol.store, head, changes)
    assert entries_of(vol.store, result.root) == {
        ("r",): node(b"A"),
        ("d1", "f"): node(b"CCC"),
        ("d0", "late"): node(b"BB"),
    }


def test_a_chmod_through_one_name_applies_to_the_groups_current_content() -> None:
    vol = Links({P: node(b"A", link=X, nlink=2), Q: node(b"A", link=X, nlink=2)})
    # Someone rewrote the file meanwhile; the writer chmods it through p only.
    head = vol.commit(
        vol.base, {P: node(b"BB", link=X, nlink=2), Q: node(b"BB", link=X, nlink=2)}
    ).root
    changes = vol.changes({P: node(b"A", 0o600, link=X, nlink=2), Q: node(b"A", link=X, nlink=2)})
    assert isinstance(changes[P], SetMeta) and Q not in changes
    result = apply(vol.store, head, changes)
    assert vol.at(result.root, *P) == vol.at(result.root, *Q) == node(b"BB", 0o600, link=X, nlink=2)
    assert result.overwrites == []


def test_a_chmod_through_a_name_someone_renamed_reaches_the_file() -> None:
    vol = Links({P: node(b"A", link=X, nlink=2), Q: node(b"A", link=X, nlink=2)})
    head = vol.commit(
        vol.base, {S: node(b"A", link=X, nlink=2), Q: node(b"A", link=X, nlink=2)}
    ).root
    result = vol.commit(
        head, {P: node(b"A", 0o600, link=X, nlink=2), Q: node(b"A", link=X, nlink=2)}
    )
    assert vol.at(result.root, *P) is None
    assert vol.at(result.root, *S) == vol.at(result.root, *Q) == node(b"A", 0o600, link=X, nlink=2)


def test_a_write_through_a_name_someone_replaced_leaves_their_file_there() -> None:
    r = ("r",)
    base = {
        P: node(b"A", link=X, nlink=3),
        Q: node(b"A", link=X, nlink=3),
        r: node(b"A", link=X, nlink=3),
    }
    vol = Links(base)
    # B: rm p, then a new file p (not a name of the group any more).
    head = vol.commit(
        vol.base, {P: node(b"CCC"), Q: node(b"A", link=X, nlink=2), r: node(b"A", link=X, nlink=2)}
    ).root
    # A writes the file through p and q (r's directory loaded too, but r is untouched here).
    result = vol.commit(
        head,
        {
            P: node(b"BB", link=X, nlink=3),
            Q: node(b"BB", link=X, nlink=3),
            r: node(b"A", link=X, nlink=3),
        },
    )
    assert vol.at(result.root, *P) == node(b"CCC")
    assert vol.at(result.root, *Q) == vol.at(result.root, *r) == node(b"BB", link=X, nlink=2)
    assert result.overwrites == []


def test_a_write_through_a_removed_directory_does_not_bring_it_back() -> None:
    vol = Links(
        {P: node(b"A", link=X, nlink=2), Q: node(b"A", link=X, nlink=2), ("d0", "f"): node(b"CCC")}
    )
    head = vol.commit(
        vol.base, {Q: node(b"A", link=X, nlink=1)}
    ).root  # B: rm -r d0 (q's nlink stale)
    assert vol.at(head, *Q) == node(b"A")  # B's commit: q is a plain file now
    # A rewrote the file through p; q's directory was not loaded. The group has no name
    # left that A's write could go to (q left it), so p comes back, as a plain file's would.
    result = vol.commit(
        head,
        {
            P: node(b"BB", link=X, nlink=2),
            Q: node(b"A", link=X, nlink=2),
            ("d0", "f"): node(b"CCC"),
        },
    )
    assert vol.at(result.root, *P) == node(b"BB")
    assert vol.at(result.root, "d0", "f") is None
    assert vol.at(result.root, *Q) == node(b"A")


def test_a_write_through_names_all_removed_brings_them_back() -> None:
    r = ("d1", "r")
    vol = Links(
        {
            P: node(b"A", link=X, nlink=3),
            Q: node(b"A", link=X, nlink=3),
            r: node(b"A", link=X, nlink=3),
        }
    )
    head = vol.commit(vol.base, {r: node(b"A", link=X, nlink=1)}).root  # B: rm p q (r: plain now)
    result = vol.commit(
        head,
        {
            P: node(b"BB", link=X, nlink=3),
            Q: node(b"BB", link=X, nlink=3),
            r: node(b"A", link=X, nlink=3),
        },
    )
    # Last writer wins over the removals: p and q are the file again, r (which B made a
    # file of its own) is not a name of it any more.
    assert vol.at(result.root, *P) == vol.at(result.root, *Q) == node(b"BB", link=X, nlink=2)
    assert vol.at(result.root, *r) == node(b"A")
    assert result.overwrites == []


def test_writing_over_a_name_of_someone_elses_group_leaves_the_rest_consistent() -> None:
    y = X + 1
    vol = Links({P: node(b"A"), Q: node(b"A")})
    # Meanwhile someone made p and q names of one file; the writer (from the base) rewrote
    # p, a plain file to it.
    head = vol.commit(
        vol.base, {P: node(b"A", link=y, nlink=2), Q: node(b"A", link=y, nlink=2)}
    ).root
    result = vol.commit(head, {P: node(b"BB"), Q: node(b"A")})
    assert entries_of(vol.store, result.root) == {P: node(b"BB"), Q: node(b"A")}


def test_a_new_name_joins_the_group_and_a_link_to_a_changed_file_takes_the_writers_content() -> (
    None
):
    vol = Links({P: node(b"A"), ("r",): node(b"A")})
    head = vol.commit(vol.base, {P: node(b"CCC"), ("r",): node(b"A")}).root
    # ln p q, in a view where p is still "A": the writer's file (its content) wins for the
    # group, and p's newer content, which it never saw, is recorded.
    result = vol.commit(
        head, {P: node(b"A", link=X, nlink=2), Q: node(b"A", link=X, nlink=2), ("r",): node(b"A")}
    )
    assert vol.at(result.root, *P) == vol.at(result.root, *Q) == node(b"A", link=X, nlink=2)
    assert result.overwrites == [P]


def test_special_files_and_symlinks_in_groups() -> None:
    fifo = Entry("", Kind.FIFO, 0o600, mtime_ns=MTIME, link=X, nlink=2)
    vol = Links({P: fifo, Q: fifo})
    result = vol.commit(vol.base, {P: fifo.with_(mode=0o640), Q: fifo})
    assert vol.at(result.root, *Q) == fifo.with_(mode=0o640)
    device = Entry("", Kind.CHAR_DEVICE, 0o600, mtime_ns=MTIME, rdev=0x103, link=X, nlink=2)
    result = vol.commit(result.root, {P: device, Q: fifo})  # mknod over p, q not loaded
    assert vol.at(result.root, *Q) == device


# --- the property: any sequence of writers leaves every group consistent ---------------------
LINK_DIRS: list[Path] = [(), ("d0",), ("d1",), ("d0", "d1")]
# Few names, so that writers often meet at one (a group is found wherever its names are).
LINK_PATHS: list[Path] = [d + (f,) for d in LINK_DIRS for f in ("f0", "f1")]
link_paths = st.sampled_from(LINK_PATHS)
link_ops = st.one_of(
    st.tuples(st.just("write"), link_paths, st.sampled_from(CONTENT_CHOICES)),
    st.tuples(st.just("chmod"), link_paths, st.sampled_from(MODES)),
    st.tuples(st.just("rm"), link_paths),
    st.tuples(st.just("ln"), link_paths, link_paths),
    st.tuples(st.just("mv"), link_paths, link_paths),
    st.tuples(st.just("mknod"), link_paths, st.sampled_from([Kind.FIFO, Kind.CHAR_DEVICE])),
    st.tuples(st.just("rmdir"), st.sampled_from(LINK_DIRS[1:])),
)


class LinkView:
    """A writer's view: what it loaded (directories) and the ops it did there, as a mount
    does them: an op on a group updates the names the writer has loaded, no others."""

    def __init__(self, entries: Entries, loaded: set[Path], ids: Iterator[int]) -> None:
        self.entries = dict(entries)
        self.loaded = loaded
        self.ids = ids

    def _visible(self, path: Path) -> bool:
        return path[:-1] in self.loaded

    def _group(self, path: Path, change: Callable[[Entry], Entry]) -> None:
        entry = self.entries[path]
        names = [
            p
            for p, e in self.entries.items()
            if entry.link and e.link == entry.link and self._visible(p)
        ]
        for other in names or [path]:
            self.entries[other] = change(self.entries[other])

    def _unlink(self, path: Path) -> None:
        entry = self.entries.pop(path)
        if entry.link:
            left = entry.nlink - 1
            for p, e in list(self.entries.items()):
                if e.link == entry.link and self._visible(p):
                    self.entries[p] = e.with_(nlink=left) if left > 1 else e.with_(link=0, nlink=1)

    def do(self, op: tuple) -> None:
        kind, path, *args = op
        if kind == "rmdir":
            for p in [p for p in self.entries if p[: len(path)] == path and self._visible(p)]:
                self._unlink(p)
            return
        if not self._visible(path):
            return
        entry = self.entries.get(path)
        if kind == "write":
            data = args[0]
            if entry is None:
                self.entries[path] = node(data)
            elif entry.kind is Kind.FILE:
                self._group(
                    path, lambda e: e.with_(size=len(data), chunks=dense([digest_of(data)]))
                )
        elif kind == "chmod" and entry is not None:
            self._group(path, lambda e: e.with_(mode=args[0]))
        elif kind == "rm" and entry is not None:
            self._unlink(path)
        elif kind == "mknod" and entry is None:
            self.entries[path] = Entry(
                "", args[0], 0o600, mtime_ns=MTIME, rdev=0x103 if args[0] is Kind.CHAR_DEVICE else 0
            )
        elif (
            kind == "ln"
            and entry is not None
            and args[0] not in self.entries
            and self._visible(args[0])
        ):
            link = entry.link or next(self.ids)
            self._group(path, lambda e: e.with_(link=link, nlink=e.nlink + 1 if e.link else 2))
            self.entries[args[0]] = self.entries[path]
        elif kind == "mv" and entry is not None and args[0] != path and self._visible(args[0]):
            if args[0] in self.entries:
                self._unlink(args[0])
            self.entries[args[0]] = self.entries.pop(path)


@st.composite
def link_bases(draw: st.DrawFn) -> Entries:
    """A consistent volume where most names belong to one of two groups."""
    paths = draw(st.lists(link_paths, min_size=2, max_size=len(LINK_PATHS), unique=True))
    kinds = [(Kind.FILE, data) for data in CONTENT_CHOICES] + [
        (Kind.FIFO, b""),
        (Kind.CHAR_DEVICE, b""),
    ]
    groups = {path: draw(st.sampled_from([0, 1, 1, 2, 2])) for path in paths}
    first: dict[int, Entry] = {}
    out: Entries = {}
    for path in paths:
        group = groups[path]
        if group in first:
            out[path] = first[group]
            continue
        kind, data = draw(st.sampled_from(kinds))
        mode = draw(st.sampled_from(MODES))
        entry = (
            node(data, mode)
            if kind is Kind.FILE
            else Entry("", kind, mode, mtime_ns=MTIME, rdev=0x103 * (kind is Kind.CHAR_DEVICE))
        )
        out[path] = entry
        if group:
            first[group] = entry
    for group in first:
        names = [p for p in paths if groups[p] == group]
        if len(names) > 1:
            for p in names:
                out[p] = out[p].with_(link=1000 + group, nlink=len(names))
    return out


writers = st.lists(
    st.tuples(
        st.integers(0, 10),  # which earlier head it started from (counted back from the last)
        # The directories it loaded: often all of them (then its view is consistent).
        st.one_of(st.just(set(LINK_DIRS)), st.sets(st.sampled_from(LINK_DIRS))),
        st.lists(link_ops, max_size=6),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=1000, deadline=None)
@given(link_bases(), writers)
def test_every_link_group_is_one_file_after_any_merges(base: Entries, sequence: list) -> None:
    ids = itertools.count(1)
    vol = Links(base)
    history = [vol.base]
    for back, loaded, ops in sequence:
        since = history[max(0, len(history) - 1 - back)]
        view = LinkView(entries_of(vol.store, since), loaded, ids)
        for op in ops:
            view.do(op)
        changes = vol.changes(view.entries, since)
        head = history[-1]
        result = apply(vol.store, head, changes)
        assert group_problems(vol.store, result.root) == []
        # A group the writer wrote (a Put of one of its names) is the writer's file.
        final = entries_of(vol.store, result.root)
        for change in changes.values():
            if isinstance(change, Put) and change.entry.link:
                written = change.entry.with_(name="", link=0, nlink=1)
                for name in [p for p, e in final.items() if e.link == change.entry.link]:
                    assert final[name].with_(link=0, nlink=1) == written
        if since == head and loaded == set(LINK_DIRS):
            # A writer that saw everything and nobody else moved: its view lands as it is.
            assert result.trees_written == 0
        history.append(result.root)
