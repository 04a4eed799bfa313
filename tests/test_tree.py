"""Merkle trees: the canonical encoding (golden vectors), round trips, lookup, walk, totals."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volfs.blobs import Digest, digest_of
from volfs.config import CHUNK_SIZE
from volfs.core.tree import (
    EMPTY_TREE,
    MAGIC,
    MAGIC_V1,
    Entry,
    Kind,
    MemoryTreeStore,
    Tree,
    TreeWriter,
    decode,
    dense,
    encode,
    find_links,
    lookup,
    stored_bytes,
    tree_digest,
    walk,
)

# --- golden vectors -----------------------------------------------------------------------
# These digests pin the on-disk tree format (format 2). If one of them changes, the store
# format changed: every existing tree digest would change with it. Do not update them to
# make a test pass; bump the format version and write a migration instead.
GOLDEN_EMPTY = "e912c1617f447628488f26bccb35db18"
GOLDEN_FILE = "1f718b69c3d90f97b3c2a32a8a556840"
GOLDEN_DIR = "cdaf6675f9a1e4ea4accffcf4c97da5a"
GOLDEN_SYMLINK = "871f4a1f7773dd90152b50baddb8ff8e"
GOLDEN_XATTRS = "a89340b7f3312c300bebd1c00dbd13a9"
GOLDEN_NON_UTF8 = "2f362b421efc15b0716c70eb86ad54ef"
GOLDEN_NON_ASCII = "4228575f776b3c402637c1eb7cd01202"
GOLDEN_SPARSE = "f8967fe40261baad22f0de025fa68c9f"
GOLDEN_HARD_LINK = "d54721b686dab4bb3bfd04b7a2838acd"
GOLDEN_FIFO = "7340217b07eb460f1b51eff290c879b8"
GOLDEN_SOCKET = "2e7ba0825c45df95b341fddf6da7af00"
GOLDEN_CHAR_DEVICE = "7caec7a74920c541b82310bf508d24dc"
GOLDEN_BLOCK_DEVICE = "f35716b7189df19d76e32f2a4c387ff6"
GOLDEN_LINKED_DIR = "f856e8479efdc37907d6696343eeb739"
GOLDEN_MIXED = "132e1336e9b026325948693b16907680"

MTIME = 1_700_000_000_123_456_789
CHUNK_A = digest_of(b"chunk-a")
CHUNK_B = digest_of(b"chunk-b")
LINK_ID = 0x5EED_0123_4567_89AB


def golden_file() -> Entry:
    return Entry(
        "data.bin", Kind.FILE, 0o640, 1000, 1000, MTIME, 14, chunks=dense([CHUNK_A, CHUNK_B])
    )


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
    return Entry("café-日本", Kind.FILE, 0o644, 0, 0, 0, 3, chunks=dense([digest_of(b"abc")]))


def golden_sparse() -> Entry:
    # 5 chunks and 10 bytes; only chunks 1 and 5 hold data, 0 and 2-4 are holes.
    return Entry(
        "sparse.img",
        Kind.FILE,
        0o600,
        1000,
        1000,
        MTIME,
        5 * CHUNK_SIZE + 10,
        chunks=((1, CHUNK_A), (5, CHUNK_B)),
    )


def golden_hard_link() -> Entry:
    return Entry(
        "hard",
        Kind.FILE,
        0o644,
        1000,
        1000,
        MTIME,
        3,
        chunks=dense([digest_of(b"abc")]),
        link=LINK_ID,
        nlink=3,
    )


def golden_fifo() -> Entry:
    return Entry("fifo", Kind.FIFO, 0o600, 1, 1, MTIME)


def golden_socket() -> Entry:
    return Entry("sock", Kind.SOCKET, 0o755, 0, 0, MTIME)


def golden_char_device() -> Entry:
    return Entry("null", Kind.CHAR_DEVICE, 0o666, 0, 0, MTIME, rdev=0x103)  # makedev(1, 3)


def golden_block_device() -> Entry:
    return Entry("disk", Kind.BLOCK_DEVICE, 0o660, 0, 6, MTIME, rdev=0x1_0000_0801)  # above u32


def golden_linked_dir() -> Entry:
    return Entry(
        "linked", Kind.DIR, 0o755, 0, 0, MTIME, 6, tree=tree_digest(EMPTY_TREE), files=2, links=2
    )


ALL_GOLDEN = [
    golden_file,
    golden_dir,
    golden_symlink,
    golden_xattrs,
    golden_non_utf8,
    golden_non_ascii,
    golden_sparse,
    golden_hard_link,
    golden_fifo,
    golden_socket,
    golden_char_device,
    golden_block_device,
    golden_linked_dir,
]

GOLDEN = [
    ("empty", EMPTY_TREE, GOLDEN_EMPTY),
    ("file", Tree.of([golden_file()]), GOLDEN_FILE),
    ("dir", Tree.of([golden_dir()]), GOLDEN_DIR),
    ("symlink", Tree.of([golden_symlink()]), GOLDEN_SYMLINK),
    ("xattrs", Tree.of([golden_xattrs()]), GOLDEN_XATTRS),
    ("non_utf8", Tree.of([golden_non_utf8()]), GOLDEN_NON_UTF8),
    ("non_ascii", Tree.of([golden_non_ascii()]), GOLDEN_NON_ASCII),
    ("sparse", Tree.of([golden_sparse()]), GOLDEN_SPARSE),
    ("hard_link", Tree.of([golden_hard_link()]), GOLDEN_HARD_LINK),
    ("fifo", Tree.of([golden_fifo()]), GOLDEN_FIFO),
    ("socket", Tree.of([golden_socket()]), GOLDEN_SOCKET),
    ("char_device", Tree.of([golden_char_device()]), GOLDEN_CHAR_DEVICE),
    ("block_device", Tree.of([golden_block_device()]), GOLDEN_BLOCK_DEVICE),
    ("linked_dir", Tree.of([golden_linked_dir()]), GOLDEN_LINKED_DIR),
    ("mixed", Tree.of([make() for make in ALL_GOLDEN]), GOLDEN_MIXED),
]


@pytest.mark.parametrize(("label", "tree", "expected"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_digest(label: str, tree: Tree, expected: str) -> None:
    assert tree_digest(tree) == expected
    assert decode(encode(tree)) == tree


def test_empty_tree_encoding_is_magic_and_zero_count() -> None:
    assert MAGIC == b"VT2\n"
    assert encode(EMPTY_TREE) == MAGIC + b"\0\0\0\0"


def _head(name: bytes, kind: int, mode: int, uid: int, gid: int, mtime: int, size: int) -> bytes:
    return (
        struct.pack("<H", len(name))
        + name
        + struct.pack("<BIIIqQ", kind, mode, uid, gid, mtime, size)
    )


def test_file_entry_layout_matches_the_spec() -> None:
    data = encode(Tree.of([golden_file()]))
    expected = (
        MAGIC
        + struct.pack("<I", 1)
        + _head(b"data.bin", 1, 0o640, 1000, 1000, MTIME, 14)
        + struct.pack("<Q", 0)  # link: none, so no nlink follows
        + struct.pack("<I", 2)
        + struct.pack("<Q", 0)
        + bytes.fromhex(CHUNK_A)
        + struct.pack("<Q", 1)
        + bytes.fromhex(CHUNK_B)
        + struct.pack("<H", 0)
    )
    assert data == expected


def test_sparse_hard_link_layout_matches_the_spec() -> None:
    entry = golden_sparse().with_(link=LINK_ID, nlink=2)
    expected = (
        MAGIC
        + struct.pack("<I", 1)
        + _head(b"sparse.img", 1, 0o600, 1000, 1000, MTIME, 5 * CHUNK_SIZE + 10)
        + struct.pack("<QI", LINK_ID, 2)
        + struct.pack("<I", 2)
        + struct.pack("<Q", 1)
        + bytes.fromhex(CHUNK_A)
        + struct.pack("<Q", 5)
        + bytes.fromhex(CHUNK_B)
        + struct.pack("<H", 0)
    )
    assert encode(Tree.of([entry])) == expected


def test_dir_and_special_layouts_match_the_spec() -> None:
    empty = bytes.fromhex(tree_digest(EMPTY_TREE))
    assert encode(Tree.of([golden_linked_dir()])) == (
        MAGIC
        + struct.pack("<I", 1)
        + _head(b"linked", 2, 0o755, 0, 0, MTIME, 6)
        + struct.pack("<Q", 0)
        + empty
        + struct.pack("<QQ", 2, 2)
        + struct.pack("<H", 0)
    )
    assert encode(Tree.of([golden_fifo()])) == (
        MAGIC
        + struct.pack("<I", 1)
        + _head(b"fifo", 4, 0o600, 1, 1, MTIME, 0)
        + struct.pack("<Q", 0)
        + struct.pack("<H", 0)
    )
    assert encode(Tree.of([golden_socket()])) == (
        MAGIC
        + struct.pack("<I", 1)
        + _head(b"sock", 5, 0o755, 0, 0, MTIME, 0)
        + struct.pack("<Q", 0)
        + struct.pack("<H", 0)
    )
    assert encode(Tree.of([golden_block_device()])) == (
        MAGIC
        + struct.pack("<I", 1)
        + _head(b"disk", 7, 0o660, 0, 6, MTIME, 0)
        + struct.pack("<Q", 0)
        + struct.pack("<Q", 0x1_0000_0801)
        + struct.pack("<H", 0)
    )


def test_special_kinds() -> None:
    assert [k for k in Kind if k.is_special] == [
        Kind.FIFO,
        Kind.SOCKET,
        Kind.CHAR_DEVICE,
        Kind.BLOCK_DEVICE,
    ]
    null = golden_char_device()
    assert null.same_content(null.with_(mode=0o600))
    assert not null.same_content(null.with_(rdev=0x105))
    assert not null.same_content(null.with_(kind=Kind.BLOCK_DEVICE))


# --- format 1 is still read ---------------------------------------------------------------------
# Format 1 bytes are built here by hand from its layout (the encoder no longer writes it):
#     tree  := b"VT1\n" u32:count entry*
#     entry := u16 name u8:kind u32:mode u32:uid u32:gid i64:mtime_ns u64:size payload
#              u16:nxattr (u16 name u32 value)*
#     payload := file: u32:n digest16*n | dir: digest16 u64:files | symlink: u16 target
# and their digests are format 1's golden vectors: the layout is the one stores hold.
V1_EMPTY = "c9fd3bfaaa10099d8c0290b37defcbd4"
V1_GOLDEN = {
    "empty": V1_EMPTY,
    "file": "c1ffc25846c5fed8689f8ffe2d8fc448",
    "dir": "9457d56891b776e801a1ff2a5acca555",
    "symlink": "767273efe5a6bfe5ac32bb64ec0da308",
    "xattrs": "c5680715ccfb343689f73b9a12c22c4c",
    "non_utf8": "9a9a8bb9b381395ba56f71d63eb79d14",
    "non_ascii": "968a3fb638cc06666820c2fa6389d1c2",
    "mixed": "6b2f594b2d74713b829055c881f4954c",
}


def v1_entry(e: Entry) -> bytes:
    out = _head(os.fsencode(e.name), e.kind, e.mode, e.uid, e.gid, e.mtime_ns, e.size)
    if e.kind is Kind.FILE:
        assert [i for i, _ in e.chunks] == list(range(len(e.chunks)))  # format 1 is dense
        out += struct.pack("<I", len(e.chunks)) + b"".join(bytes.fromhex(d) for _, d in e.chunks)
    elif e.kind is Kind.DIR:
        assert e.tree is not None
        out += bytes.fromhex(e.tree) + struct.pack("<Q", e.files)
    else:
        target = os.fsencode(e.target)
        out += struct.pack("<H", len(target)) + target
    out += struct.pack("<H", len(e.xattrs))
    for key, value in e.xattrs:
        raw = os.fsencode(key)
        out += struct.pack("<H", len(raw)) + raw + struct.pack("<I", len(value)) + value
    return out


def v1_tree(entries: list[Entry]) -> bytes:
    entries = sorted(entries, key=lambda e: os.fsencode(e.name))
    return MAGIC_V1 + struct.pack("<I", len(entries)) + b"".join(v1_entry(e) for e in entries)


def v1_dir() -> Entry:
    return golden_dir().with_(tree=Digest(V1_EMPTY))  # a format 1 subtree


V1_TREES = {
    "empty": [],
    "file": [golden_file()],
    "dir": [v1_dir()],
    "symlink": [golden_symlink()],
    "xattrs": [golden_xattrs()],
    "non_utf8": [golden_non_utf8()],
    "non_ascii": [golden_non_ascii()],
    "mixed": [
        golden_file(),
        v1_dir(),
        golden_symlink(),
        golden_xattrs(),
        golden_non_utf8(),
        golden_non_ascii(),
    ],
}


@pytest.mark.parametrize("label", list(V1_TREES))
def test_format_1_trees_decode_with_dense_chunks(label: str) -> None:
    data = v1_tree(V1_TREES[label])
    assert digest_of(data) == V1_GOLDEN[label]
    tree = decode(data)
    assert tree == Tree.of(V1_TREES[label])
    for e in tree.entries:
        assert (e.link, e.nlink, e.links, e.rdev) == (0, 1, 0, 0)
    # Written again, it is format 2: another digest, the same entries.
    assert encode(tree)[:4] == MAGIC and decode(encode(tree)) == tree


def test_format_1_file_chunks_become_index_pairs() -> None:
    three = [digest_of(b"1"), digest_of(b"2"), digest_of(b"3")]
    entry = Entry("f", Kind.FILE, size=3 * CHUNK_SIZE, chunks=dense(three))
    raw = (
        MAGIC_V1
        + struct.pack("<I", 1)
        + _head(b"f", 1, 0o644, 0, 0, 0, 3 * CHUNK_SIZE)
        + struct.pack("<I", 3)
        + b"".join(bytes.fromhex(d) for d in three)
        + struct.pack("<H", 0)
    )
    assert v1_tree([entry]) == raw
    (decoded,) = decode(raw).entries
    assert decoded.chunks == ((0, three[0]), (1, three[1]), (2, three[2]))


def test_format_1_refuses_kinds_it_did_not_have() -> None:
    data = bytearray(v1_tree([golden_non_utf8()]))
    data[4 + 4 + 2 + 1] = Kind.FIFO
    with pytest.raises(ValueError, match="format 1"):
        decode(bytes(data))


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
u64 = st.integers(0, 2**64 - 1)
common = {
    "mode": u32,
    "uid": u32,
    "gid": u32,
    "mtime_ns": st.integers(-(2**63), 2**63 - 1),
    "size": u64,
    "xattrs": xattr_lists,
}
sparse_chunks = st.dictionaries(u64, digests, max_size=4).map(lambda d: tuple(sorted(d.items())))
# A name of a link group, or not (then nlink is 1: it is not encoded).
link_fields = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"link": st.integers(1, 2**64 - 1), "nlink": u32}),
)


def linkable(entry: st.SearchStrategy[Entry]) -> st.SearchStrategy[Entry]:
    return st.tuples(entry, link_fields).map(lambda t: t[0].with_(**t[1]))


def entries(name: st.SearchStrategy[str] = names) -> st.SearchStrategy[Entry]:
    return st.one_of(
        linkable(st.builds(Entry, name, st.just(Kind.FILE), chunks=sparse_chunks, **common)),
        st.builds(Entry, name, st.just(Kind.DIR), tree=digests, files=u64, links=u64, **common),
        linkable(st.builds(Entry, name, st.just(Kind.SYMLINK), target=names, **common)),
        linkable(st.builds(Entry, name, st.sampled_from([Kind.FIFO, Kind.SOCKET]), **common)),
        linkable(
            st.builds(
                Entry,
                name,
                st.sampled_from([Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE]),
                rdev=u64,
                **common,
            )
        ),
    )


trees = st.lists(entries(), max_size=8, unique_by=lambda e: os.fsencode(e.name)).map(Tree.of)


@settings(max_examples=300, deadline=None)
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
        decode(b"VT3\n" + data[4:])
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


@pytest.mark.parametrize("cut", [1, 3, 9, 30])
def test_decode_rejects_truncated_links_chunks_and_devices(cut: int) -> None:
    for make in (golden_sparse, golden_hard_link, golden_block_device, golden_linked_dir):
        data = encode(Tree.of([make()]))
        with pytest.raises(ValueError):
            decode(data[: len(data) - 2 - cut] + data[-2:])  # cut inside, keep the xattr count


def test_decode_rejects_unknown_kind() -> None:
    data = bytearray(encode(Tree.of([golden_non_utf8()])))
    data[4 + 4 + 2 + 1] = 9  # the kind byte of the one entry
    with pytest.raises(ValueError):
        decode(bytes(data))


def test_decode_rejects_chunk_indexes_out_of_order() -> None:
    for chunks in (((5, CHUNK_B), (1, CHUNK_A)), ((1, CHUNK_A), (1, CHUNK_B))):
        # encode does not check the order: a Tree built by hand can hold any chunks.
        data = encode(Tree.of([golden_sparse().with_(chunks=chunks)]))
        with pytest.raises(ValueError, match="order"):
            decode(data)


def test_stored_bytes_leaves_out_the_holes() -> None:
    sparse = golden_sparse()
    assert stored_bytes(sparse.size, sparse.chunks) == CHUNK_SIZE + 10
    assert stored_bytes(3, ((0, CHUNK_A), (7, CHUNK_B))) == 3  # past the end: nothing


# --- lookup, walk, totals, find_links -----------------------------------------------------------
def build(files: dict[tuple[str, ...], bytes | Entry]) -> tuple[MemoryTreeStore, Entry]:
    """A tree holding ``files`` (path -> content, or an entry; content digests stand in for
    blobs)."""
    store = MemoryTreeStore()
    writer = TreeWriter(store)

    def make(prefix: tuple[str, ...]) -> Tree:
        children: dict[str, Entry] = {}
        for path, data in files.items():
            if path[: len(prefix)] != prefix or len(path) == len(prefix):
                continue
            name = path[len(prefix)]
            if len(path) == len(prefix) + 1:
                if isinstance(data, Entry):
                    children[name] = data.with_(name=name)
                else:
                    children[name] = Entry(
                        name, Kind.FILE, size=len(data), chunks=dense([digest_of(data)])
                    )
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
    files: dict[tuple[str, ...], bytes | Entry] = {
        ("a", "b", "c.txt"): b"1",
        ("a", "d.txt"): b"22",
        ("e",): b"333",
    }
    store, root = build(files)
    seen = [path for path, _ in walk(store, root)]
    assert set(seen) == {("a",), ("a", "b"), ("a", "b", "c.txt"), ("a", "d.txt"), ("e",)}
    for i, path in enumerate(seen):
        if len(path) > 1:
            assert path[:-1] in seen[:i]
    assert {p for p, e in walk(store, root) if e.kind is Kind.FILE} == set(files)


def test_totals_count_files_bytes_and_link_names_below() -> None:
    hard = golden_hard_link().with_(nlink=2)
    store, root = build(
        {
            ("a", "b", "c.txt"): b"hello",
            ("a", "d.txt"): b"xy",
            ("e",): b"1234",
            ("a", "b", "h1"): hard,
            ("h2",): hard,
        }
    )
    assert (root.size, root.files, root.links) == (17, 5, 2)
    a = lookup(store, root, ("a",))
    assert a is not None and (a.size, a.files, a.links) == (10, 3, 1)
    tree = Tree.of(
        [
            Entry("f", Kind.FILE, size=10),
            Entry("d", Kind.DIR, size=100, files=7, links=4, tree=tree_digest(EMPTY_TREE)),
            Entry("l", Kind.SYMLINK, size=3, target="abc"),
            Entry("h", Kind.FILE, size=5, link=LINK_ID, nlink=2),
            Entry("p", Kind.FIFO, link=LINK_ID + 1, nlink=2),  # a link name, not a file
            Entry("n", Kind.CHAR_DEVICE, rdev=0x103),
        ]
    )
    assert tree.totals() == (115, 9, 6)  # symlinks and special files count neither bytes nor files
    assert EMPTY_TREE.totals() == (0, 0, 0)


def test_totals_saturate_at_u64() -> None:
    big = Entry("d", Kind.DIR, size=2**64 - 1, files=1, tree=tree_digest(EMPTY_TREE))
    assert Tree.of([big, Entry("f", Kind.FILE, size=5)]).totals() == (2**64 - 1, 2, 0)


class CountingStore:
    """A TreeStore that records which trees were read."""

    def __init__(self, inner: MemoryTreeStore) -> None:
        self.inner = inner
        self.reads: list[Digest] = []

    def get_tree(self, digest: Digest) -> Tree:
        self.reads.append(digest)
        return self.inner.get_tree(digest)


def test_find_links_finds_every_name_and_reads_only_directories_holding_some() -> None:
    x = Entry("", Kind.FILE, size=3, chunks=dense([digest_of(b"abc")]), link=7, nlink=3)
    y = Entry("", Kind.FIFO, link=8, nlink=2)
    files: dict[tuple[str, ...], bytes | Entry] = {
        ("a", "x1"): x,
        ("a", "deep", "er", "x2"): x,
        ("x3",): x,
        ("b", "y1"): y,
        ("y2",): y,
        ("c", "z"): Entry("", Kind.FILE, link=9, nlink=1),
    }
    files.update({(f"plain{i}", "sub", "f"): b"1" for i in range(5)})
    store, root = build(files)
    counting = CountingStore(store)
    found = find_links(counting, root, {7, 8, 10})
    assert sorted(p for p, _ in found[7]) == [("a", "deep", "er", "x2"), ("a", "x1"), ("x3",)]
    assert sorted(p for p, _ in found[8]) == [("b", "y1"), ("y2",)]
    assert found[10] == []
    assert all(e.link == 7 for _, e in found[7])
    # root, a, a/deep, a/deep/er, b, c: never the plain directories.
    reading = [(), ("a",), ("a", "deep"), ("a", "deep", "er"), ("b",), ("c",)]
    assert sorted(counting.reads) == sorted(lookup(store, root, p).tree for p in reading)  # type: ignore[union-attr,type-var]


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


def test_dir_entry_carries_the_link_count_and_no_file_fields() -> None:
    writer = TreeWriter(MemoryTreeStore())
    template = golden_hard_link().with_(kind=Kind.DIR)  # a template that once was a file
    entry = writer.dir_entry(template, Tree.of([golden_hard_link(), golden_file()]))
    assert (entry.size, entry.files, entry.links) == (17, 2, 1)
    assert (entry.chunks, entry.link, entry.nlink, entry.rdev) == ((), 0, 1, 0)
