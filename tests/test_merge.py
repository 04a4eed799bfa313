"""The merge rule of DESIGN §2 (last writer wins, per path, nothing needlessly lost).

A writer's changes are the diff of its base and its view; they are merged onto a head that
others may have moved since. Volumes are modelled as {path: (content, mode)}; the
properties compare the merged tree with that model, path by path.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from volfs.blobs import digest_of
from volfs.changes import Changes, Dir, Put, Remove, SetMeta, diff
from volfs.merge import MergeResult, merge
from volfs.tree import Entry, Kind, MemoryTreeStore, Tree, TreeWriter, lookup, walk

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
                    name, Kind.FILE, mode, mtime_ns=MTIME, size=len(data), chunks=(digest_of(data),)
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
            data = CONTENTS[entry.chunks[0]]
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
    return {p: dataclasses.replace(c, whole=False) if isinstance(c, Dir) else c for p, c in changes.items()}


@settings(max_examples=300, deadline=None)
@given(models, action_maps, action_maps)
def test_taking_the_writers_whole_directories_gives_the_merge_of_its_parts(
        base: Model, others: dict, mine: dict) -> None:
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
    file = Entry("d0", Kind.FILE, 0o644, mtime_ns=MTIME, size=2, chunks=(digest_of(b"BB"),))
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
    entry = Entry("d0", Kind.FILE, 0o644, mtime_ns=MTIME, size=2, chunks=(digest_of(b"BB"),))
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
