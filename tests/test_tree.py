"""Merkle trees: the canonical encoding (golden vectors), round trips, lookup, walk, totals."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volfs.blobs import Digest, digest_of
from volfs.tree import (
    EMPTY_TREE,
    MAGIC,
    Entry,
    Kind,
    MemoryTreeStore,
    Tree,
    TreeWriter,
    decode,
    encode,
    lookup,
    tree_digest,
    walk,
)

# --- golden vectors -----------------------------------------------------------------------
# These digests pin the on-disk tree format (format 1). If one of them changes, the store
# format changed: every existing tree digest would change with it. Do not update them to
# make a test pass; bump the format version and write a migration instead.
GOLDEN_EMPTY = "c9fd3bfaaa10099d8c0290b37defcbd4"
GOLDEN_FILE = "c1ffc25846c5fed8689f8ffe2d8fc448"
GOLDEN_DIR = "9457d56891b776e801a1ff2a5acca555"
GOLDEN_SYMLINK = "767273efe5a6bfe5ac32bb64ec0da308"
GOLDEN_XATTRS = "c5680715ccfb343689f73b9a12c22c4c"
GOLDEN_NON_UTF8 = "9a9a8bb9b381395ba56f71d63eb79d14"
GOLDEN_NON_ASCII = "968a3fb638cc06666820c2fa6389d1c2"
GOLDEN_MIXED = "6b2f594b2d74713b829055c881f4954c"

MTIME = 1_700_000_000_123_456_789
CHUNK_A = digest_of(b"chunk-a")
CHUNK_B = digest_of(b"chunk-b")


def golden_file() -> Entry:
    return Entry("data.bin", Kind.FILE, 0o640, 1000, 1000, MTIME, 14, chunks=(CHUNK_A, CHUNK_B))


def golden_dir() -> Entry:
    return Entry("sub", Kind.DIR, 0o755, 0, 0, MTIME, 14, tree=tree_digest(EMPTY_TREE), files=1)


def golden_symlink() -> Entry:
    return Entry("link", Kind.SYMLINK, 0o777, 0, 0, -5, 8, target="data.bin")


def golden_xattrs() -> Entry:
    return Entry(
        "x", Kind.FILE, 0o600, 1, 2, 0, 0, xattrs=(("user.a", b"1"), ("user.b", b"\x00\xff"))
    )


def golden_non_utf8() -> Entry:
    return Entry(os.fsdecode(b"\xff"), Kind.FILE, 0o644, 0, 0, 0, 0)


def golden_non_ascii() -> Entry:
    return Entry("café-日本", Kind.FILE, 0o644, 0, 0, 0, 3, chunks=(digest_of(b"abc"),))


GOLDEN = [
    ("empty", EMPTY_TREE, GOLDEN_EMPTY),
    ("file", Tree.of([golden_file()]), GOLDEN_FILE),
    ("dir", Tree.of([golden_dir()]), GOLDEN_DIR),
    ("symlink", Tree.of([golden_symlink()]), GOLDEN_SYMLINK),
    ("xattrs", Tree.of([golden_xattrs()]), GOLDEN_XATTRS),
    ("non_utf8", Tree.of([golden_non_utf8()]), GOLDEN_NON_UTF8),
    ("non_ascii", Tree.of([golden_non_ascii()]), GOLDEN_NON_ASCII),
    (
        "mixed",
        Tree.of(
            [
                golden_file(),
                golden_dir(),
                golden_symlink(),
                golden_xattrs(),
                golden_non_utf8(),
                golden_non_ascii(),
            ]
        ),
        GOLDEN_MIXED,
    ),
]


@pytest.mark.parametrize(("label", "tree", "expected"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_digest(label: str, tree: Tree, expected: str) -> None:
    assert tree_digest(tree) == expected
    assert decode(encode(tree)) == tree


def test_empty_tree_encoding_is_magic_and_zero_count() -> None:
    assert encode(EMPTY_TREE) == MAGIC + b"\0\0\0\0"


def test_file_entry_layout_matches_the_spec() -> None:
    data = encode(Tree.of([golden_file()]))
    expected = (
        MAGIC
        + struct.pack("<I", 1)
        + struct.pack("<H", 8)
        + b"data.bin"
        + struct.pack("<BIIIqQ", 1, 0o640, 1000, 1000, MTIME, 14)
        + struct.pack("<I", 2)
        + bytes.fromhex(CHUNK_A)
        + bytes.fromhex(CHUNK_B)
        + struct.pack("<H", 0)
    )
    assert data == expected


# --- round trips ----------------------------------------------------------------------------
names = st.one_of(
    st.text(
        st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=12,
    ),
    # Raw non-UTF-8 byte names, as Linux allows them (they become surrogate escapes).
    st.binary(min_size=1, max_size=8)
    .filter(lambda b: b"/" not in b and b"\0" not in b)
    .map(os.fsdecode),
).filter(lambda n: n not in (".", ".."))

digests = st.binary(min_size=16, max_size=16).map(lambda b: Digest(b.hex()))
xattr_lists = st.dictionaries(
    st.text(
        st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=8,
    ),
    st.binary(max_size=20),
    max_size=3,
).map(lambda d: tuple(sorted(d.items(), key=lambda kv: os.fsencode(kv[0]))))
u32 = st.integers(0, 2**32 - 1)
common = {
    "mode": u32,
    "uid": u32,
    "gid": u32,
    "mtime_ns": st.integers(-(2**63), 2**63 - 1),
    "size": st.integers(0, 2**64 - 1),
    "xattrs": xattr_lists,
}


def entries(name: st.SearchStrategy[str] = names) -> st.SearchStrategy[Entry]:
    return st.one_of(
        st.builds(
            Entry,
            name,
            st.just(Kind.FILE),
            chunks=st.lists(digests, max_size=4).map(tuple),
            **common,
        ),
        st.builds(
            Entry, name, st.just(Kind.DIR), tree=digests, files=st.integers(0, 2**64 - 1), **common
        ),
        st.builds(Entry, name, st.just(Kind.SYMLINK), target=names, **common),
    )


trees = st.lists(entries(), max_size=8, unique_by=lambda e: os.fsencode(e.name)).map(Tree.of)


@settings(max_examples=200, deadline=None)
@given(trees)
def test_encode_decode_round_trip(tree: Tree) -> None:
    data = encode(tree)
    back = decode(data)
    assert back == tree
    assert encode(back) == data


@settings(max_examples=100, deadline=None)
@given(
    st.lists(entries(), min_size=1, max_size=8, unique_by=lambda e: os.fsencode(e.name)),
    st.randoms(use_true_random=False),
)
def test_entries_sorted_by_raw_name_bytes_whatever_the_input_order(
    items: list[Entry], rnd: object
) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    tree = Tree.of(shuffled)
    raw = [os.fsencode(e.name) for e in tree.entries]
    assert raw == sorted(raw)
    assert tree_digest(tree) == tree_digest(Tree.of(items))
    # The encoding is canonical however the Tree was constructed.
    assert encode(Tree(tuple(shuffled))) == encode(tree)


def test_sort_is_by_bytes_not_by_code_point() -> None:
    # Where the two orders disagree: by code point "\udcf0" (raw 0xf0) < "\uff21", by
    # raw bytes 0xef 0xbc 0xa1 ("\uff21" in UTF-8) < 0xf0.
    a, b = "\uff21", os.fsdecode(b"\xf0")
    tree = Tree.of([Entry(b, Kind.FILE), Entry(a, Kind.FILE)])
    assert tree.names() == [a, b]


def test_xattr_order_does_not_change_the_digest() -> None:
    one = Entry("f", Kind.FILE, xattrs=(("user.a", b"1"), ("user.b", b"2")))
    two = Entry("f", Kind.FILE, xattrs=(("user.b", b"2"), ("user.a", b"1")))
    assert tree_digest(Tree.of([one])) == tree_digest(Tree.of([two]))


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError):
        encode(Tree.of([Entry("a", Kind.FILE), Entry("a", Kind.SYMLINK, target="x")]))


# --- decode rejects what is not a tree ----------------------------------------------------------
def test_decode_rejects_bad_magic() -> None:
    data = encode(Tree.of([golden_file()]))
    with pytest.raises(ValueError, match="magic"):
        decode(b"VT2\n" + data[4:])
    with pytest.raises(ValueError):
        decode(b"")


def test_decode_rejects_trailing_bytes() -> None:
    data = encode(Tree.of([golden_file()]))
    with pytest.raises(ValueError, match="trailing"):
        decode(data + b"\0")


@pytest.mark.parametrize("cut", [1, 2, 5, 17, 40])
def test_decode_rejects_truncated_data(cut: int) -> None:
    data = encode(Tree.of([golden_file(), golden_symlink(), golden_xattrs()]))
    with pytest.raises(ValueError):
        decode(data[:-cut])


def test_decode_rejects_unknown_kind() -> None:
    data = bytearray(encode(Tree.of([golden_non_utf8()])))
    data[4 + 4 + 2 + 1] = 9  # the kind byte of the one entry
    with pytest.raises(ValueError):
        decode(bytes(data))


# --- lookup, walk, totals ----------------------------------------------------------------------
def build(files: dict[tuple[str, ...], bytes]) -> tuple[MemoryTreeStore, Entry]:
    """A tree holding ``files`` (path -> content; content digests stand in for blobs)."""
    store = MemoryTreeStore()
    writer = TreeWriter(store)

    def make(prefix: tuple[str, ...]) -> Tree:
        children: dict[str, Entry] = {}
        for path, data in files.items():
            if path[: len(prefix)] != prefix or len(path) == len(prefix):
                continue
            name = path[len(prefix)]
            if len(path) == len(prefix) + 1:
                children[name] = Entry(name, Kind.FILE, size=len(data), chunks=(digest_of(data),))
            elif name not in children:
                children[name] = writer.dir_entry(
                    Entry(name, Kind.DIR, 0o755), make(prefix + (name,))
                )
        return Tree.of(children)

    root = writer.dir_entry(Entry("", Kind.DIR, 0o755), make(()))
    store.absorb(writer)
    return store, root


def test_lookup_finds_entries_and_misses_cleanly() -> None:
    store, root = build({("a", "b", "c.txt"): b"hello", ("top",): b"x"})
    found = lookup(store, root, ("a", "b", "c.txt"))
    assert found is not None and found.kind is Kind.FILE and found.size == 5
    assert lookup(store, root, ()) == root
    assert lookup(store, root, ("a",)).kind is Kind.DIR  # type: ignore[union-attr]
    assert lookup(store, root, ("a", "nope")) is None
    assert lookup(store, root, ("top", "below")) is None  # through a file
    assert lookup(store, root, ("a", "b", "c.txt", "d")) is None


def test_walk_yields_every_entry_parents_first() -> None:
    files = {("a", "b", "c.txt"): b"1", ("a", "d.txt"): b"22", ("e",): b"333"}
    store, root = build(files)
    seen = [path for path, _ in walk(store, root)]
    assert set(seen) == {("a",), ("a", "b"), ("a", "b", "c.txt"), ("a", "d.txt"), ("e",)}
    for i, path in enumerate(seen):
        if len(path) > 1:
            assert path[:-1] in seen[:i]
    assert {p for p, e in walk(store, root) if e.kind is Kind.FILE} == set(files)


def test_totals_count_files_and_bytes_below() -> None:
    store, root = build({("a", "b", "c.txt"): b"hello", ("a", "d.txt"): b"xy", ("e",): b"1234"})
    assert (root.size, root.files) == (11, 3)
    a = lookup(store, root, ("a",))
    assert a is not None and (a.size, a.files) == (7, 2)
    tree = Tree.of(
        [
            Entry("f", Kind.FILE, size=10),
            Entry("d", Kind.DIR, size=100, files=7, tree=tree_digest(EMPTY_TREE)),
            Entry("l", Kind.SYMLINK, size=3, target="abc"),
        ]
    )
    assert tree.totals() == (110, 8)  # symlinks count neither bytes nor files
    assert EMPTY_TREE.totals() == (0, 0)


def test_tree_writer_serves_pending_trees_and_dedups() -> None:
    store = MemoryTreeStore()
    writer = TreeWriter(store)
    tree = Tree.of([golden_file()])
    digest = writer.put_tree(tree)
    assert writer.put_tree(Tree.of([golden_file()])) == digest
    assert len(writer.pending) == 1
    assert writer.get_tree(digest) == tree
    with pytest.raises(KeyError):
        store.get_tree(digest)
    store.absorb(writer)
    assert store.get_tree(digest) == tree
