"""changes.diff: complete (merging a diff onto its old tree gives the new one) and cheap
(it descends only into subtrees whose digests differ)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from volfs.blobs import Digest, digest_of
from volfs.core.changes import ALL_META, Dir, Put, Remove, SetMeta, diff
from volfs.core.merge import merge
from volfs.core.tree import Entry, Kind, MemoryTreeStore, Tree, TreeWriter, dense, lookup, walk

Path = tuple[str, ...]
MTIME = 1_700_000_000_000_000_000

# A tree is modelled as {path: leaf}; a leaf is ("file", content, mode),
# ("link", target, mode) or ("dir", mode) (an explicit, possibly empty, directory).
# Directories above a leaf are implied (mode 0o755).
Leaf = tuple


def normalise(spec: dict[Path, Leaf]) -> dict[Path, Leaf]:
    """Drops paths below a file or symlink (a file cannot have children)."""
    return {
        path: leaf
        for path, leaf in spec.items()
        if not any(spec.get(path[:i], ("dir",))[0] != "dir" for i in range(1, len(path)))
    }


def build(store: MemoryTreeStore, spec: dict[Path, Leaf]) -> Entry:
    writer = TreeWriter(store)

    def make(prefix: Path) -> Tree:
        children: dict[str, Entry] = {}
        names = {
            p[len(prefix)] for p in spec if len(p) > len(prefix) and p[: len(prefix)] == prefix
        }
        for name in names:
            path = prefix + (name,)
            leaf = spec.get(path, ("dir", 0o755))
            if leaf[0] == "dir":
                template = Entry(name, Kind.DIR, leaf[1], mtime_ns=MTIME)
                children[name] = writer.dir_entry(template, make(path))
            elif leaf[0] == "file":
                children[name] = Entry(
                    name,
                    Kind.FILE,
                    leaf[2],
                    mtime_ns=MTIME,
                    size=len(leaf[1]),
                    chunks=dense([digest_of(leaf[1])]),
                )
            else:
                children[name] = Entry(
                    name, Kind.SYMLINK, leaf[2], mtime_ns=MTIME, size=len(leaf[1]), target=leaf[1]
                )
        return Tree.of(children)

    root = writer.dir_entry(Entry("", Kind.DIR, 0o755, mtime_ns=MTIME), make(()))
    store.absorb(writer)
    return root


leaves = st.one_of(
    st.tuples(
        st.just("file"),
        st.sampled_from([b"", b"1", b"22", b"333"]),
        st.sampled_from([0o644, 0o600]),
    ),
    st.tuples(st.just("link"), st.sampled_from(["x", "../y"]), st.sampled_from([0o777, 0o755])),
    st.tuples(st.just("dir"), st.sampled_from([0o755, 0o700])),
)
paths = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(tuple)
specs = st.dictionaries(paths, leaves, max_size=12).map(normalise)


@settings(max_examples=300, deadline=None)
@given(specs, specs)
def test_diff_is_complete(old_spec: dict[Path, Leaf], new_spec: dict[Path, Leaf]) -> None:
    store = MemoryTreeStore()
    old = build(store, old_spec)
    new = build(store, new_spec)
    changes = diff(store, old, new)
    result = merge(store, old, changes)
    assert result.root.tree == new.tree
    assert (result.root.size, result.root.files) == (new.size, new.files)
    assert result.overwrites == []  # merging onto what the writer saw overwrites nothing


@settings(max_examples=100, deadline=None)
@given(specs)
def test_diff_of_a_tree_with_itself_is_empty(spec: dict[Path, Leaf]) -> None:
    store = MemoryTreeStore()
    root = build(store, spec)
    assert diff(store, root, root) == {}
    assert diff(store, root, build(store, spec)) == {}


def test_each_kind_of_change() -> None:
    store = MemoryTreeStore()
    old = build(
        store,
        {
            ("f",): ("file", b"1", 0o644),
            ("m",): ("file", b"1", 0o644),
            ("gone",): ("file", b"x", 0o644),
            ("d", "x"): ("file", b"1", 0o644),
        },
    )
    new = build(
        store,
        {
            ("f",): ("file", b"22", 0o644),
            ("m",): ("file", b"1", 0o600),
            ("d", "x"): ("file", b"1", 0o644),
            ("n", "y"): ("link", "f", 0o777),
        },
    )
    changes = diff(store, old, new)
    # the root too: a directory on the way, as the writer has it whole (merge takes it as it is)
    assert set(changes) == {(), ("f",), ("m",), ("gone",), ("n",), ("n", "y")}
    assert changes[()] == Dir(new, old, frozenset(), whole=True)
    put = changes[("f",)]
    assert isinstance(put, Put) and put.seen == lookup(store, old, ("f",))
    meta = changes[("m",)]
    assert isinstance(meta, SetMeta) and meta.fields == {"mode"}
    assert isinstance(changes[("gone",)], Remove)
    created = changes[("n",)]
    assert isinstance(created, Dir) and created.seen is None and created.set_meta == ALL_META
    assert isinstance(changes[("n", "y")], Put)


def test_kind_change_is_a_put_that_saw_the_old_kind() -> None:
    store = MemoryTreeStore()
    old = build(store, {("p", "x"): ("file", b"1", 0o644)})
    new = build(store, {("p",): ("file", b"1", 0o644)})
    changes = diff(store, old, new)
    assert set(changes) == {(), ("p",)}
    change = changes[("p",)]
    assert isinstance(change, Put) and change.seen is not None and change.seen.kind is Kind.DIR


class CountingStore:
    """A TreeStore that records which trees were read."""

    def __init__(self, inner: MemoryTreeStore) -> None:
        self.inner = inner
        self.reads: list[Digest] = []

    def get_tree(self, digest: Digest) -> Tree:
        self.reads.append(digest)
        return self.inner.get_tree(digest)


def wide_spec(width: int) -> dict[Path, Leaf]:
    spec: dict[Path, Leaf] = {}
    for i in range(width):
        for j in range(width):
            spec[(f"d{i}", f"e{j}", "g", "f")] = ("file", b"1", 0o644)
            spec[(f"d{i}", f"file{j}")] = ("file", b"1", 0o644)
    return spec


def test_diff_reads_only_trees_on_the_changed_path() -> None:
    store = MemoryTreeStore()
    spec = wide_spec(6)
    old = build(store, spec)
    spec[("d3", "e4", "g", "f")] = ("file", b"22", 0o644)
    new = build(store, spec)
    counting = CountingStore(store)
    changes = diff(counting, old, new)
    assert set(changes) == {(), ("d3",), ("d3", "e4"), ("d3", "e4", "g"), ("d3", "e4", "g", "f")}
    # root, d3, d3/e4, d3/e4/g: each read once on each side, and nothing else.
    on_path = [(), ("d3",), ("d3", "e4"), ("d3", "e4", "g")]
    expected = []
    for root in (old, new):
        for path in on_path:
            entry = lookup(store, root, path)
            assert entry is not None and entry.tree is not None
            expected.append(entry.tree)
    assert sorted(counting.reads) == sorted(expected)


@settings(max_examples=100, deadline=None)
@given(specs, specs)
def test_diff_never_reads_a_subtree_both_sides_share(
    old_spec: dict[Path, Leaf], new_spec: dict[Path, Leaf]
) -> None:
    store = MemoryTreeStore()
    old = build(store, old_spec)
    new = build(store, new_spec)

    def dirs(root: Entry) -> dict[Path, Digest]:
        out = {(): root.tree}
        out.update({p: e.tree for p, e in walk(store, root) if e.kind is Kind.DIR})
        return out  # type: ignore[return-value]

    old_dirs, new_dirs = dirs(old), dirs(new)
    # Directories whose listing differs at the same path, or that only the new tree has.
    allowed = {d for p, d in old_dirs.items() if new_dirs.get(p) not in (None, d)}
    allowed |= {d for p, d in new_dirs.items() if old_dirs.get(p) != d}
    counting = CountingStore(store)
    diff(counting, old, new)
    assert set(counting.reads) <= allowed


def test_joining_or_leaving_a_link_group_is_a_metadata_change() -> None:
    store = MemoryTreeStore()
    writer = TreeWriter(store)

    def root(*entries: Entry) -> Entry:
        entry = writer.dir_entry(Entry("", Kind.DIR, 0o755), Tree.of(list(entries)))
        store.absorb(writer)
        return entry

    plain = Entry("p", Kind.FILE, size=1, chunks=dense([digest_of(b"1")]))
    linked = plain.with_(link=42, nlink=2)
    old, new = root(plain), root(linked, linked.with_(name="q"))
    assert new.links == 2
    changes = diff(store, old, new)
    assert changes[("p",)] == SetMeta(linked, frozenset({"link", "nlink"}))
    assert isinstance(changes[("q",)], Put)
    fewer = root(linked.with_(nlink=1))  # q unlinked: p's nlink changed, nothing else
    assert diff(store, new, fewer)[("p",)] == SetMeta(linked.with_(nlink=1), frozenset({"nlink"}))
