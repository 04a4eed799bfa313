"""Format 2 through the API and the store: sparse files, special kinds, hard links, and the
format 1 -> 2 upgrade of a store.

Entries that only a mount can make (holes, sockets, devices) are committed here directly
with ``commit_changes``, as a mount's commit would; what the API reads back, lists and
uploads is then checked against the bytes and the local inodes.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import struct
import time
import tracemalloc
from pathlib import Path

import pytest

import volfs
from volfs import FileEntryType, Volume
from volfs.blobs import Digest, digest_of
from volfs.catalog import entry_from_json, entry_to_json
from volfs.config import CHUNK_SIZE, READ_CHUNK
from volfs.core.changes import ALL_META, Changes, Dir, Put
from volfs.core.tree import Entry, Kind, lookup
from volfs.maintenance.fsck import fsck
from volfs.snapshots.commit import commit_changes
from volfs.store import Store


@pytest.fixture
def vol(store: Store) -> Volume:
    Volume.objects.create("vol", store=store)
    return Volume.from_name("vol", store=store)


def commit_entries(vol: Volume, entries: dict[str, Entry]) -> None:
    """Puts ``entries`` (path -> entry; parents created) in one commit, as a mount would."""

    def build(root: Entry) -> Changes:
        changes: Changes = {}
        for path, entry in entries.items():
            parts = tuple(path.split("/"))
            for i in range(1, len(parts)):
                parent = parts[:i]
                here = lookup(vol._store.catalog, root, parent)
                changes.setdefault(
                    parent,
                    Dir(here, here, frozenset())
                    if here is not None
                    else Dir(Entry(parent[-1], Kind.DIR, 0o755), None, ALL_META),
                )
            changes[parts] = Put(entry.with_(name=parts[-1]))
        return changes

    commit_changes(vol._store.catalog, vol.object_id, build, origin="test")


def head_entry(vol: Volume, path: str) -> Entry:
    catalog = vol._store.catalog
    entry = lookup(catalog, catalog.head(vol.object_id).root, tuple(path.split("/")))
    assert entry is not None
    return entry


# -- sparse files --------------------------------------------------------------------------
def test_read_file_yields_holes_and_short_blobs_as_zeros(vol: Volume, store: Store) -> None:
    short = store.blobs.put(b"x" * 100)  # chunk 1, much shorter than its 8 MiB span
    tail = store.blobs.put(b"y" * 10)  # chunk 3: the last 10 bytes
    size = 3 * CHUNK_SIZE + 10
    commit_entries(
        vol, {"sparse": Entry("", Kind.FILE, 0o644, size=size, chunks=((1, short), (3, tail)))}
    )
    pieces = list(vol.read_file("sparse"))
    assert max(len(p) for p in pieces) <= READ_CHUNK
    want = bytes(CHUNK_SIZE) + b"x" * 100 + bytes(CHUNK_SIZE - 100) + bytes(CHUNK_SIZE) + b"y" * 10
    assert b"".join(pieces) == want
    assert vol.stat("sparse").size == size
    out = io.BytesIO()
    assert vol.read_file_into_fileobj("sparse", out) == size and out.getvalue() == want


def test_a_huge_hole_is_yielded_in_pieces_never_allocated_whole(vol: Volume, store: Store) -> None:
    data = store.blobs.put(b"end")
    size = 64 << 30  # 64 GiB: one 3-byte blob at the very last chunk
    last = (size - 1) // CHUNK_SIZE
    commit_entries(vol, {"huge": Entry("", Kind.FILE, 0o644, size=size, chunks=((last, data),))})
    tracemalloc.start()
    try:
        total = 0
        biggest = 0
        tail = []  # the pieces of the last chunk
        for piece in vol.read_file("huge"):
            if total >= last * CHUNK_SIZE:
                tail.append(piece)
            total += len(piece)
            biggest = max(biggest, len(piece))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size and biggest <= READ_CHUNK
    assert b"".join(tail) == b"end" + bytes(CHUNK_SIZE - 3)
    assert peak < 64 * READ_CHUNK  # a few pieces at a time, nowhere near the 64 GiB hole


def test_uploads_store_dense_chunk_pairs(vol: Volume) -> None:
    data = os.urandom(CHUNK_SIZE + 1234)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(data), "two-chunks")
    entry = head_entry(vol, "two-chunks")
    assert [index for index, _ in entry.chunks] == [0, 1]
    assert entry.chunks[1][1] == digest_of(data[CHUNK_SIZE:])
    assert b"".join(vol.read_file("two-chunks")) == data


def test_gc_keeps_the_blobs_of_sparse_chunks(vol: Volume, store: Store) -> None:
    from volfs.maintenance import gc as collect

    kept = store.blobs.put(b"live data in chunk 5")
    orphan = store.blobs.put(b"nothing names me")
    commit_entries(
        vol, {"f": Entry("", Kind.FILE, 0o644, size=6 * CHUNK_SIZE, chunks=((5, kept),))}
    )
    report = collect.collect(store, grace=0, now=time.time() + 10)
    assert report.blobs_deleted == 1
    assert store.blobs.has(kept) and not store.blobs.has(orphan)
    assert b"".join(vol.read_file("f")).strip(b"\0") == b"live data in chunk 5"


# -- kinds ---------------------------------------------------------------------------------
def test_file_entry_types_have_modals_values_and_devices_beyond() -> None:
    assert {t.name: t.value for t in FileEntryType} == {
        "UNSPECIFIED": 0,
        "FILE": 1,
        "DIRECTORY": 2,
        "SYMLINK": 3,
        "FIFO": 4,
        "SOCKET": 5,
        "CHARACTER_DEVICE": 6,
        "BLOCK_DEVICE": 7,
    }


def test_listdir_lists_every_kind_with_its_device_number(vol: Volume) -> None:
    commit_entries(
        vol,
        {
            "d/fifo": Entry("", Kind.FIFO, 0o640, mtime_ns=5 * 10**9),
            "d/sock": Entry("", Kind.SOCKET, 0o755),
            "d/null": Entry("", Kind.CHAR_DEVICE, 0o666, rdev=os.makedev(1, 3)),
            "d/loop": Entry("", Kind.BLOCK_DEVICE, 0o660, rdev=os.makedev(7, 42)),
        },
    )
    listed = {e.path: e for e in vol.listdir("d")}
    assert {p: e.type for p, e in listed.items()} == {
        "d/fifo": FileEntryType.FIFO,
        "d/loop": FileEntryType.BLOCK_DEVICE,
        "d/null": FileEntryType.CHARACTER_DEVICE,
        "d/sock": FileEntryType.SOCKET,
    }
    assert (listed["d/fifo"].mode, listed["d/fifo"].mtime, listed["d/fifo"].size) == (0o640, 5, 0)
    assert listed["d/loop"].rdev == os.makedev(7, 42) and listed["d/null"].rdev == os.makedev(1, 3)
    assert [e.type for e in vol.iterdir("d/null")] == [FileEntryType.CHARACTER_DEVICE]
    assert b"".join(vol.read_file("d/fifo")) == b""  # no content of its own
    assert vol.info().files == 0  # special files hold no bytes and count as no files


def test_copy_files_copies_special_entries_and_leaves_link_groups(
    vol: Volume, store: Store
) -> None:
    blob = store.blobs.put(b"shared")
    linked = Entry("", Kind.FILE, 0o644, size=6, chunks=((0, blob),), link=0x1235, nlink=2)
    commit_entries(
        vol,
        {
            "a": linked,
            "b": linked,
            "dev": Entry("", Kind.CHAR_DEVICE, 0o600, rdev=os.makedev(1, 5)),
        },
    )
    vol.copy_files(["a"], "copy")
    vol.copy_files(["dev"], "dev2")
    copy = head_entry(vol, "copy")
    assert (copy.link, copy.nlink, copy.chunks) == (0, 1, linked.chunks)  # cp: a file of its own
    assert head_entry(vol, "a").link == 0x1235  # the group itself is untouched
    assert vol.stat("dev2").type is FileEntryType.CHARACTER_DEVICE
    assert vol.stat("dev2").rdev == os.makedev(1, 5)


# -- put_directory: special files and hard links ----------------------------------------------
def test_put_directory_uploads_fifos_and_devices_and_skips_sockets(
    vol: Volume, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "fifo", 0o640)
    os.mknod(src / "null", stat.S_IFCHR | 0o620, os.makedev(1, 3))
    os.mknod(src / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 200))
    os.chmod(src / "fifo", 0o640)  # whatever the umask
    os.chmod(src / "null", 0o620)
    os.utime(src / "fifo", ns=(10**18, 1_234_000_000_000))
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(src / "sock"))
        with vol.batch_upload() as batch:
            batch.put_directory(src, "/up")
    finally:
        server.close()
    listed = {e.path: e for e in vol.listdir("up")}
    assert sorted(listed) == ["up/blk", "up/fifo", "up/null"]  # the socket is skipped
    fifo, null, blk = listed["up/fifo"], listed["up/null"], listed["up/blk"]
    assert (fifo.type, fifo.mode, fifo.mtime) == (FileEntryType.FIFO, 0o640, 1234)
    assert (null.type, null.mode, null.rdev) == (
        FileEntryType.CHARACTER_DEVICE,
        0o620,
        os.makedev(1, 3),
    )
    assert (blk.type, blk.rdev) == (FileEntryType.BLOCK_DEVICE, os.makedev(7, 200))
    entry = head_entry(vol, "up/null")
    assert (entry.uid, entry.gid, entry.size, entry.chunks) == (os.getuid(), os.getgid(), 0, ())


def test_put_directory_keeps_hard_links_and_reads_a_linked_file_once(
    vol: Volume, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    data = os.urandom(100_000)
    (src / "a").write_bytes(data)
    os.link(src / "a", src / "sub" / "b")
    os.link(src / "a", src / "c")
    (tmp_path / "outside").write_bytes(b"half in")
    os.link(tmp_path / "outside", src / "lonely")  # its other name is not uploaded
    os.mkfifo(src / "p")
    os.link(src / "p", src / "p2")
    read: list[int] = []
    with vol.batch_upload(progress=read.append) as batch:
        batch.put_directory(src, "/up")
    assert sum(read) == len(data) + len(b"half in")  # a linked file's bytes are read once
    a, b, c = (head_entry(vol, p) for p in ("up/a", "up/sub/b", "up/c"))
    assert a.link != 0 and a.link == b.link == c.link and a.link & 1
    assert a.nlink == b.nlink == c.nlink == 3
    assert a.chunks == b.chunks == c.chunks and b"".join(vol.read_file("up/sub/b")) == data
    lonely = head_entry(vol, "up/lonely")
    assert (lonely.link, lonely.nlink) == (0, 1)
    p, p2 = head_entry(vol, "up/p"), head_entry(vol, "up/p2")
    assert p.kind is Kind.FIFO and p.link == p2.link != 0 and p.link != a.link
    assert p.nlink == p2.nlink == 2
    assert [e.nlink for e in vol.listdir("up") if e.path == "up/a"] == [3]
    assert vol.stat("up/c").link == a.link
    assert fsck(vol._store).clean
    # Uploaded again elsewhere: a new group, not a fourth name of the first one.
    with vol.batch_upload() as batch:
        batch.put_directory(src, "/again")
    assert head_entry(vol, "again/a").link not in (0, a.link)


# -- catalog records and the store format ---------------------------------------------------
def test_entry_json_round_trips_the_format_2_fields() -> None:
    device = Entry(
        "",
        Kind.BLOCK_DEVICE,
        0o660,
        1,
        2,
        3,
        rdev=os.makedev(8, 1),
        link=0x77,
        nlink=3,
        xattrs=(("user.a", b"\x00\x01"),),
    )
    directory = Entry("", Kind.DIR, 0o755, tree=Digest("ab" * 16), size=10, files=2, links=5)
    sparse = Entry("", Kind.FILE, size=CHUNK_SIZE * 4, chunks=((2, Digest("cd" * 16)),))
    symlink = Entry("", Kind.SYMLINK, 0o777, target="../x")
    for entry in (device, directory, sparse, symlink):
        assert entry_from_json(json.loads(json.dumps(entry_to_json(entry)))) == entry
    # A format 1 record (a snapshot's root) has none of the new fields: their defaults.
    old = {
        "kind": 2,
        "mode": 493,
        "uid": 0,
        "gid": 0,
        "mtime_ns": 7,
        "size": 3,
        "tree": "ef" * 16,
        "files": 1,
        "xattrs": [],
    }
    loaded = entry_from_json(old)
    assert (loaded.kind, loaded.tree, loaded.size, loaded.files) == (Kind.DIR, "ef" * 16, 3, 1)
    assert (loaded.link, loaded.nlink, loaded.rdev, loaded.links) == (0, 1, 0, 0)


def _vt1(entries: list[tuple[bytes, int, int, int, bytes]]) -> bytes:
    """A format 1 tree, encoded by README's format 1 grammar (not by tree.py)."""
    out = [b"VT1\n", struct.pack("<I", len(entries))]
    for name, kind, mode, size, payload in sorted(entries):
        out += [
            struct.pack("<H", len(name)),
            name,
            struct.pack("<BIIIqQ", kind, mode, 0, 0, 10**9, size),
            payload,
            struct.pack("<H", 0),
        ]
    return b"".join(out)


def _make_format_1_store(path: Path, data: bytes) -> tuple[str, Digest]:
    """A store as format 1 volfs left it: format file, catalog meta and volume record say 1,
    the head's trees are VT1 with dense chunk lists, the snapshot's root JSON has no
    format 2 fields. Returns the volume id and the root tree's digest."""
    store = Store(path)
    Volume.objects.create("old", store=store)
    volume = Volume.from_name("old", store=store)
    chunks = [store.blobs.put(data[i : i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE)]
    file_payload = struct.pack("<I", len(chunks)) + b"".join(bytes.fromhex(c) for c in chunks)
    sub = _vt1(
        [
            (b"big.bin", 1, 0o600, len(data), file_payload),
            (b"ln", 3, 0o777, 0, struct.pack("<H", 7) + b"big.bin"),
        ]
    )
    sub_digest = digest_of(sub)
    root = _vt1([(b"d", 2, 0o755, len(data), bytes.fromhex(sub_digest) + struct.pack("<Q", 1))])
    root_digest = digest_of(root)
    catalog = store.catalog
    head = catalog.head(volume.object_id)
    record = {
        "id": "sn-format1xxxxxxxxx",
        "volume_id": volume.object_id,
        "parent": head.id,
        "time": time.time(),
        "origin": "test",
        "overwrites": [],
        "changed": [],
        "changed_count": 0,
        "root": {
            "kind": 2,
            "mode": 493,
            "uid": 0,
            "gid": 0,
            "mtime_ns": 10**9,
            "size": len(data),
            "tree": root_digest,
            "files": 1,
            "xattrs": [],
        },
    }
    with catalog.env.begin(write=True) as txn:
        for digest, raw in ((sub_digest, sub), (root_digest, root)):
            txn.put(bytes.fromhex(digest), raw, db=catalog._trees)
        txn.put(record["id"].encode(), json.dumps(record).encode(), db=catalog._snapshots)
        raw_volume = json.loads(bytes(txn.get(volume.object_id.encode(), db=catalog._volumes)))
        raw_volume.update(head=record["id"], format_version=1)
        txn.put(volume.object_id.encode(), json.dumps(raw_volume).encode(), db=catalog._volumes)
        txn.put(b"format_version", b"1", db=catalog._meta)
    (path / "format").write_text("volfs-store 1\n")
    return volume.object_id, root_digest


def test_a_format_1_store_opens_upgrades_in_place_and_reads_its_old_trees(tmp_path: Path) -> None:
    path = tmp_path / "old-store"
    data = os.urandom(CHUNK_SIZE + 4321)  # two dense chunks in the VT1 tree
    volume_id, root_digest = _make_format_1_store(path, data)
    store = Store(path)  # a fresh open of the whole store, as the next process would
    assert (path / "format").read_text() == "volfs-store 3\n"
    assert not [p for p in path.iterdir() if p.name.startswith("format.")]  # no temp left
    assert store.format_version == 3 and store.catalog.format_version == 3
    assert store.catalog.get_volume_by_id(volume_id).format_version == 3
    vol = Volume.from_name("old", store=store)
    assert vol.info().format_version == 3
    assert b"".join(vol.read_file("d/big.bin")) == data
    assert b"".join(vol.read_file("d/ln")) == data  # the VT1 symlink, followed
    assert [(e.path, e.type, e.link) for e in vol.listdir("d")] == [
        ("d/big.bin", FileEntryType.FILE, 0),
        ("d/ln", FileEntryType.SYMLINK, 0),
    ]
    assert store.catalog.get_tree_raw(root_digest)[:4] == b"VT1\n"  # stored trees stay VT1
    with vol.batch_upload() as batch:  # new commits write VT2 trees beside them
        batch.put_file(io.BytesIO(b"new"), "d/new.txt")
    head = store.catalog.head(volume_id)
    assert head.root.tree is not None and store.catalog.get_tree_raw(head.root.tree)[:4] == b"VT2\n"
    assert b"".join(vol.read_file("d/big.bin")) == data
    assert fsck(store).clean


def test_a_new_store_is_format_3(tmp_path: Path) -> None:
    store = Store(tmp_path / "new")
    assert (tmp_path / "new" / "format").read_text() == "volfs-store 3\n"
    assert store.catalog.format_version == 3
    Volume.objects.create("v", store=store)
    assert Volume.from_name("v", store=store).info().format_version == 3
    future = tmp_path / "future"  # a store of a format this volfs does not know: refused
    future.mkdir()
    (future / "format").write_text("volfs-store 4\n")
    with pytest.raises(volfs.VolfsError, match="format 4; this volfs reads formats 1 to 3"):
        Store(future)
    assert (future / "format").read_text() == "volfs-store 4\n"


def test_the_snapshot_root_keeps_its_link_count(vol: Volume, store: Store) -> None:
    blob = store.blobs.put(b"x")
    linked = Entry("", Kind.FILE, 0o644, size=1, chunks=((0, blob),), link=0x99, nlink=2)
    commit_entries(vol, {"d/a": linked, "d/b": linked})
    head = store.catalog.head(vol.object_id)  # the root as its JSON record gives it back
    assert head.root.links == 2
    assert head.root.links == store.catalog.get_tree(head.root.tree).totals()[2]
