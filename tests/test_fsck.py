"""``volfs fsck``: a clean store passes; each kind of damage is found and its paths named.

In-process on a store built through the API; damage is made the way a disk or a bug
would make it (a flipped byte, a truncated or deleted blob, a tree deleted from LMDB, a
head pointing nowhere). The CLI runs in-process (CliRunner) except where the one-line
error and exit code of a real process are the point.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from volfs import Volume
from volfs.blobs import Digest
from volfs.blobs.local import LocalBlobStore
from volfs.catalog import LmdbCatalog, SnapshotId, SnapshotRecord, new_id
from volfs.cli import cli
from volfs.config import CHUNK_SIZE
from volfs.core.tree import (
    EMPTY_TREE,
    Entry,
    Kind,
    Tree,
    TreeWriter,
    encode,
    lookup,
    tree_digest,
    walk,
)
from volfs.maintenance.fsck import fsck
from volfs.store import Store

SHARED = b"the same bytes in two volumes\n"
HOUR = 3600.0


def put(vol: Volume, path: str, data: bytes) -> None:
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(data), path)


@pytest.fixture
def populated(store: Store) -> Store:
    """alpha (3 commits), beta (shares a blob with alpha), gamma (empty)."""
    Volume.objects.create("alpha", store=store)
    alpha = Volume.from_name("alpha", store=store)
    put(alpha, "d/a.txt", SHARED)
    put(alpha, "d/sub/b.bin", os.urandom(50_000))
    put(alpha, "top.txt", b"top 1")
    put(alpha, "top.txt", b"top 2, longer")
    Volume.objects.create("beta", store=store)
    beta = Volume.from_name("beta", store=store)
    put(beta, "other/a.txt", SHARED)
    put(beta, "only-beta.txt", b"beta's own")
    Volume.objects.create("gamma", store=store)
    return store


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def head_entry(store: Store, name: str, path: str) -> Entry:
    volume = store.catalog.get_volume("main", name)
    entry = lookup(store.catalog, store.catalog.head(volume.id).root, tuple(path.split("/")))
    assert entry is not None
    return entry


def blob_path(store: Store, name: str, path: str) -> Path:
    return store.blobs.path(head_entry(store, name, path).chunks[0][1])


def rewrite(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)
    os.chmod(path, 0o444)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rewrite(path, bytes(data))


def all_snapshots(store: Store) -> list[SnapshotRecord]:
    return [SnapshotRecord.from_json(raw) for _, raw in store.catalog.iter_snapshots_raw()]


def snapshots_using(store: Store, digest: Digest) -> set[str]:
    """Independently of fsck: the snapshots whose trees name this blob."""
    out = set()
    for s in all_snapshots(store):
        if any(digest in dict(e.chunks).values() for _, e in walk(store.catalog, s.root)):
            out.add(s.id)
    return out


def affected(report, kind: str) -> set[tuple[str, str, bool]]:  # type: ignore[no-untyped-def]
    return {
        (a.volume, a.path, a.head) for p in report.problems if p.kind == kind for a in p.affected
    }


def delete_tree(store: Store, digest: Digest) -> None:
    catalog = store.catalog
    with catalog.env.begin(write=True) as txn:
        assert txn.delete(bytes.fromhex(digest), db=catalog._trees)
    catalog._tree_cache.clear()


# -- clean -------------------------------------------------------------------------------------
def test_a_fresh_store_with_volumes_and_snapshots_is_clean(populated: Store) -> None:
    store = populated
    report = fsck(store)
    assert report.clean and report.problems == [] and report.damaged_snapshots == {}
    snapshots = all_snapshots(store)
    assert report.volumes == 3 and report.snapshots == len(snapshots) == 5 + 3 + 1
    trees = {s.root.tree for s in snapshots} | {
        e.tree for s in snapshots for _, e in walk(store.catalog, s.root) if e.is_dir
    }
    blobs = {c for s in snapshots for _, e in walk(store.catalog, s.root) for _, c in e.chunks}
    assert report.trees == len(trees) and report.blobs == len(blobs)
    assert report.bytes_read == sum(store.blobs.size(d) for d in blobs)
    assert report.orphans["blobs"] == 0 and report.orphans["trees"] == 0
    code, out, err = run_cli("fsck")
    assert code == 0 and "No damage found." in out and err == ""
    code, out, _ = run_cli("fsck", "--json")
    assert code == 0 and json.loads(out)["clean"] is True


def test_each_tree_and_blob_is_read_once_however_many_snapshots_share_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    Volume.objects.create("deep", store=store)
    vol = Volume.from_name("deep", store=store)
    for i in range(4):
        put(vol, f"a/b/c/big{i}.bin", os.urandom(20_000))
    for i in range(15):  # 15 snapshots sharing a/b/c and most of a/b
        put(vol, "a/b/counter.txt", str(i).encode())
    reads: dict[str, int] = {}
    real = store.catalog.get_tree_raw

    def counting(digest: Digest) -> bytes | None:
        reads[digest] = reads.get(digest, 0) + 1
        return real(digest)

    monkeypatch.setattr(store.catalog, "get_tree_raw", counting)
    report = fsck(store)
    assert report.clean and report.snapshots == 20
    assert max(reads.values()) == 1 and len(reads) == report.trees
    distinct = {
        c for s in all_snapshots(store) for _, e in walk(store.catalog, s.root) for _, c in e.chunks
    }
    assert report.bytes_read == sum(store.blobs.size(d) for d in distinct)  # each blob read once


# -- damage ------------------------------------------------------------------------------------
def test_a_corrupted_blob_names_every_volume_and_path_using_it(populated: Store) -> None:
    store = populated
    digest = head_entry(store, "alpha", "d/a.txt").chunks[0][1]
    flip_byte(store.blobs.path(digest))
    report = fsck(store)
    assert [p.kind for p in report.problems] == ["blob-damaged"]
    assert report.problems[0].subject == digest
    assert affected(report, "blob-damaged") == {
        ("alpha", "d/a.txt", True),
        ("alpha", "d/a.txt", False),
        ("beta", "other/a.txt", True),
        ("beta", "other/a.txt", False),
    }
    assert set(report.damaged_snapshots) == snapshots_using(store, digest)
    code, out, _ = run_cli("fsck")
    assert code == 8
    assert "alpha:/d/a.txt" in out and "beta:/other/a.txt" in out and digest in out
    assert "d/sub/b.bin" not in out and "top.txt" not in out


def test_damage_exits_non_zero_with_one_error_line(populated: Store) -> None:
    flip_byte(blob_path(populated, "beta", "only-beta.txt"))
    proc = subprocess.run(
        [sys.executable, "-m", "volfs", "fsck"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 8
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith(
        "Error: fsck found 1 problem"
    )
    assert "beta:/only-beta.txt" in proc.stdout and "Traceback" not in proc.stderr


def test_a_truncated_blob_is_found(populated: Store) -> None:
    store = populated
    path = blob_path(store, "alpha", "d/sub/b.bin")
    rewrite(path, path.read_bytes()[:1000])
    report = fsck(store)
    assert [p.kind for p in report.problems] == ["blob-damaged"]
    assert "1000 bytes on disk" in report.problems[0].detail
    assert ("alpha", "d/sub/b.bin", True) in affected(report, "blob-damaged")
    # A blob may be shorter than its chunk's span (format 2: the rest reads as zeros), so
    # sizes alone cannot tell a truncated one: only reading it (the default) does.
    assert fsck(store, quick=True).clean


def test_quick_mode_sees_a_blob_longer_than_its_span(populated: Store) -> None:
    store = populated
    path = blob_path(store, "alpha", "d/sub/b.bin")
    rewrite(path, path.read_bytes() + b"grown")
    quick = fsck(store, quick=True)
    assert quick.bytes_read == 0
    assert [p.kind for p in quick.problems] == ["file-size"]
    assert "holds 50005" in quick.problems[0].detail
    assert ("alpha", "d/sub/b.bin", True) in affected(quick, "file-size")


def test_a_missing_blob_is_found(populated: Store) -> None:
    store = populated
    os.unlink(blob_path(store, "alpha", "top.txt"))
    report = fsck(store)
    assert [p.kind for p in report.problems] == ["blob-missing"]
    assert affected(report, "blob-missing") == {
        ("alpha", "top.txt", True)
    }  # "top 2" is in the head only
    assert not report.clean


def test_a_tree_missing_from_the_catalog_names_the_directory(populated: Store) -> None:
    store = populated
    sub = head_entry(store, "alpha", "d/sub")
    assert sub.tree is not None
    delete_tree(store, sub.tree)
    report = fsck(store)
    assert [p.kind for p in report.problems] == ["tree-missing"]
    assert {(v, p) for v, p, _ in affected(report, "tree-missing")} == {("alpha", "d/sub")}
    # Every alpha snapshot since d/sub/b.bin was added holds that tree: all are damaged.
    assert len(report.damaged_snapshots) == 3
    assert "skipped" in report.orphans  # what the lost tree named is unknown: nothing is an orphan


def test_a_torn_head_is_found(populated: Store) -> None:
    store = populated
    catalog = store.catalog
    volume = catalog.get_volume("main", "gamma")
    raw = json.loads(bytes(catalog.env.begin().get(volume.id.encode(), db=catalog._volumes)))
    raw["head"] = "sn-doesnotexist00"
    with catalog.env.begin(write=True) as txn:
        txn.put(volume.id.encode(), json.dumps(raw).encode(), db=catalog._volumes)
    report = fsck(store)
    assert [p.kind for p in report.problems] == ["head-missing"]
    assert affected(report, "head-missing") == {("gamma", "/", True)}
    code, out, _ = run_cli("fsck")
    assert code == 8 and "sn-doesnotexist00" in out


def test_directory_totals_that_do_not_add_up_are_found(populated: Store) -> None:
    store = populated
    catalog = store.catalog
    volume = catalog.get_volume("main", "alpha")
    head = catalog.head(volume.id)
    lying = SnapshotRecord(
        SnapshotId(new_id("sn")),
        volume.id,
        head.root.with_(files=999),
        head.id,
        time.time(),
        "a bug",
    )
    catalog.advance_head(head.id, lying, {})
    report = fsck(store)
    assert [p.kind for p in report.problems] == ["dir-totals"]
    assert affected(report, "dir-totals") == {("alpha", "/", True)}


# -- format 2: sparse chunks, special kinds, hard links ---------------------------------------
def commit_raw(
    store: Store, volume_name: str, entries: list[Entry]
) -> tuple[Store, SnapshotRecord]:
    """A head whose directory ``d`` holds ``entries``, built without the merge: fsck must
    find what a buggy writer could store."""
    catalog = store.catalog
    volume = catalog.get_volume("main", volume_name)
    head = catalog.head(volume.id)
    writer = TreeWriter(catalog)
    sub = writer.dir_entry(Entry("d", Kind.DIR, 0o755), Tree.of(entries))
    root = writer.dir_entry(head.root, Tree.of([sub]))
    snapshot = SnapshotRecord(
        SnapshotId(new_id("sn")), volume.id, root, head.id, time.time(), "a bug"
    )
    catalog.advance_head(head.id, snapshot, writer.pending)
    return store, snapshot


def test_sparse_files_with_short_blobs_and_every_kind_are_clean(populated: Store) -> None:
    store = populated
    short = store.blobs.put(b"a blob much shorter than its 8 MiB span")
    tail = store.blobs.put(b"7 bytes")
    linked = Entry(
        "l1", Kind.FILE, 0o644, size=CHUNK_SIZE * 3, chunks=((2, short),), link=0x11, nlink=2
    )
    commit_raw(
        store,
        "gamma",
        [
            Entry(
                "sparse", Kind.FILE, 0o644, size=CHUNK_SIZE * 5 + 7, chunks=((1, short), (5, tail))
            ),
            Entry("hole", Kind.FILE, 0o644, size=1 << 40),
            Entry("fifo", Kind.FIFO, 0o644),
            Entry("sock", Kind.SOCKET, 0o755),
            Entry("null", Kind.CHAR_DEVICE, 0o666, rdev=os.makedev(1, 3)),
            Entry("loop", Kind.BLOCK_DEVICE, 0o660, rdev=os.makedev(7, 0)),
            linked,
            linked.with_(name="l2"),
        ],
    )
    report = fsck(store)
    assert report.clean, [p.summary for p in report.problems]
    assert fsck(store, quick=True).clean


def test_chunk_indexes_past_the_size_or_out_of_order_are_found(populated: Store) -> None:
    store = populated
    blob = store.blobs.put(b"x" * 10)
    commit_raw(
        store,
        "gamma",
        [Entry("past", Kind.FILE, 0o644, size=CHUNK_SIZE + 1, chunks=((0, blob), (2, blob)))],
    )
    report = fsck(store)
    assert [p.kind for p in report.problems] == ["chunk-index"]
    assert "names chunk 2" in report.problems[0].detail
    assert affected(report, "chunk-index") == {("gamma", "d/past", True)}
    # Out of order: the tree decoder refuses such a tree, so it can only be seen in memory.
    from volfs.maintenance.fsck import FsckReport, _Checker

    checker = _Checker(store, FsckReport(str(store.root), False))
    bad = Entry("swapped", Kind.FILE, 0o644, size=3 * CHUNK_SIZE, chunks=((1, blob), (0, blob)))
    assert checker._check_entries(Digest("00" * 16), Tree((bad,)))
    assert "not strictly ascending" in checker.report.problems[0].detail


def test_a_blob_longer_than_its_span_is_found(populated: Store) -> None:
    store = populated
    blob = store.blobs.put(b"y" * 100)
    commit_raw(
        store, "gamma", [Entry("f", Kind.FILE, 0o644, size=CHUNK_SIZE + 50, chunks=((1, blob),))]
    )  # chunk 1 covers 50 bytes
    report = fsck(store)
    assert [p.kind for p in report.problems] == ["file-size"]
    assert (
        "chunk 1 covers 50" in report.problems[0].detail
        and "holds 100" in report.problems[0].detail
    )


def test_a_special_file_with_content_is_found(populated: Store) -> None:
    store = populated
    commit_raw(store, "gamma", [Entry("fifo", Kind.FIFO, 0o644, size=12)])
    report = fsck(store)
    assert [p.kind for p in report.problems] == ["special-entry"]
    assert "'fifo' is a fifo but carries content" in report.problems[0].detail
    from volfs.maintenance.fsck import FsckReport, _Checker

    checker = _Checker(
        store, FsckReport(str(store.root), False)
    )  # rdev on a socket: in memory only
    assert checker._check_entries(Digest("00" * 16), Tree((Entry("s", Kind.SOCKET, rdev=5),)))
    assert "a device number" in checker.report.problems[0].detail


def test_a_link_group_whose_names_disagree_is_found(populated: Store) -> None:
    store = populated
    one, two = store.blobs.put(b"one"), store.blobs.put(b"two")
    a = Entry("a", Kind.FILE, 0o644, size=3, chunks=((0, one),), link=0x21, nlink=3)
    catalog = store.catalog
    volume = catalog.get_volume("main", "gamma")
    head = catalog.head(volume.id)
    writer = TreeWriter(catalog)
    sub = writer.dir_entry(
        Entry("d", Kind.DIR, 0o755),
        Tree.of(
            [
                a.with_(name="b", chunks=((0, two),)),  # other content
                a.with_(name="c"),
            ]
        ),
    )
    ok = Entry("ok", Kind.FILE, 0o644, size=3, chunks=((0, one),), link=0x33, nlink=1)
    root = writer.dir_entry(head.root, Tree.of([a, sub, ok]))
    snapshot = SnapshotRecord(
        SnapshotId(new_id("sn")), volume.id, root, head.id, time.time(), "a bug"
    )
    catalog.advance_head(head.id, snapshot, writer.pending)
    report = fsck(store)
    assert [p.kind for p in report.problems] == ["link-group"]
    problem = report.problems[0]
    assert problem.subject == "0x21" and "their content differs" in problem.detail
    assert affected(report, "link-group") == {
        ("gamma", "a", True),
        ("gamma", "d/b", True),
        ("gamma", "d/c", True),
    }
    assert snapshot.id in report.damaged_snapshots
    # The counts: three names that say 2.
    fixed = writer.dir_entry(
        Entry("d", Kind.DIR, 0o755),
        Tree.of([a.with_(name="b", nlink=2), a.with_(name="c", nlink=2)]),
    )
    root2 = writer.dir_entry(root, Tree.of([a.with_(nlink=2), fixed, ok]))
    later = SnapshotRecord(
        SnapshotId(new_id("sn")), volume.id, root2, snapshot.id, time.time(), "a bug"
    )
    catalog.advance_head(snapshot.id, later, writer.pending)
    report = fsck(store)
    details = sorted(p.detail for p in report.problems)
    assert [p.kind for p in report.problems] == ["link-group", "link-group"]
    assert any("they say nlink 2" in d and "content" not in d for d in details)


def test_a_directory_whose_link_count_is_wrong_is_found(populated: Store) -> None:
    store = populated
    blob = store.blobs.put(b"z")
    linked = Entry("x", Kind.FILE, 0o644, size=1, chunks=((0, blob),), link=0x45, nlink=2)
    _, snapshot = commit_raw(store, "gamma", [linked, linked.with_(name="y")])
    catalog = store.catalog
    head = catalog.head(snapshot.volume_id)
    lying = SnapshotRecord(
        SnapshotId(new_id("sn")),
        snapshot.volume_id,
        head.root.with_(links=1),
        head.id,
        time.time(),
        "a bug",
    )
    catalog.advance_head(head.id, lying, {})
    report = fsck(store)
    kinds = [p.kind for p in report.problems]
    assert "dir-totals" in kinds
    assert any("1 link names" in p.detail for p in report.problems if p.kind == "dir-totals")


# -- orphans and repair ----------------------------------------------------------------------------
def make_orphans(store: Store, *, age: float = 2 * HOUR) -> dict[str, object]:
    """One of each: an unreferenced blob and tree, a temp file, a crashed mount's overlay."""
    blob = store.blobs.put(b"nothing references me")
    os.utime(store.blobs.path(blob), (time.time() - age,) * 2)
    tree = Tree((Entry("x", Kind.FILE, size=21, chunks=((0, blob),)),))
    store.catalog.put_trees({tree_digest(tree): encode(tree)})
    temp = store.root / "tmp" / "blob-leftover"
    temp.write_bytes(b"half a blob")
    os.utime(temp, (time.time() - age,) * 2)
    overlay = store.overlays_dir / "mo-crashedmount0001"
    overlay.mkdir()
    (overlay / "mount.json").write_text(
        json.dumps({"base": "sn-gone", "volume_name": "alpha", "path": "/mnt/x"})
    )
    return {"blob": blob, "tree": tree_digest(tree), "temp": temp, "overlay": overlay}


def test_orphans_are_reported_but_are_not_damage(populated: Store) -> None:
    store = populated
    made = make_orphans(store)
    report = fsck(store, grace=0)
    assert report.clean
    o = report.orphans
    assert (o["blobs"], o["trees"], o["temp_files"]) == (1, 1, 1)
    assert o["blob_bytes"] == len(b"nothing references me")
    assert [x["mount_id"] for x in o["overlays"]] == ["mo-crashedmount0001"]
    # With the default grace window the tree is young, and keeps the blob it names.
    default = fsck(store)
    o = default.orphans
    assert (o["blobs"], o["trees"], o["trees_young"], o["temp_files"]) == (0, 0, 1, 1)
    code, out, _ = run_cli("fsck", "--grace", "0")
    assert code == 0 and "Orphans: 1 blob (21 B), 1 tree, 1 temp file." in out
    assert "mo-crashedmount0001" in out and "volfs recover" in out
    assert store.blobs.has(made["blob"])  # type: ignore[arg-type]  # reporting deletes nothing


def test_repair_drops_orphans_and_marks_damage_without_touching_referenced_data(
    populated: Store,
) -> None:
    store = populated
    made = make_orphans(store)
    damaged_blob = head_entry(store, "alpha", "d/a.txt").chunks[0][1]
    using = snapshots_using(store, damaged_blob)
    assert len(using) == 6  # alpha's 4 snapshots since d/a.txt, beta's 2
    flip_byte(store.blobs.path(damaged_blob))
    referenced = {
        c for s in all_snapshots(store) for _, e in walk(store.catalog, s.root) for _, c in e.chunks
    }
    code, out, _ = run_cli("fsck", "--repair", "--grace", "0")
    assert code == 8
    assert "Repair: deleted 1 orphan blobs (21 bytes), 1 orphan trees, 1 temp files" in out
    assert "Repair: marked 6 snapshots damaged" in out
    assert not store.blobs.has(made["blob"])  # type: ignore[arg-type]
    assert not store.catalog.has_tree(made["tree"])  # type: ignore[arg-type]
    assert not Path(made["temp"]).exists()  # type: ignore[arg-type]
    assert Path(made["overlay"]).is_dir()  # a crashed mount's changes are recover's business
    assert set(store.blobs.digests()) == referenced  # the damaged blob stays: it is referenced
    assert set(store.catalog.damaged()) == using
    again = fsck(store, grace=0)
    assert [p.kind for p in again.problems] == ["blob-damaged"]
    assert (again.orphans["blobs"], again.orphans["trees"], again.orphans["temp_files"]) == (
        0,
        0,
        0,
    )
    # Restored from a backup: repair clears the marks.
    rewrite(store.blobs.path(damaged_blob), SHARED)
    cleared = fsck(store, repair=True, grace=0)
    assert cleared.clean and store.catalog.damaged() == {}
    assert any("cleared the damage mark of 6 snapshots" in r for r in cleared.repairs)


def test_repair_deletes_nothing_when_trees_are_damaged(populated: Store) -> None:
    store = populated
    made = make_orphans(store)
    sub = head_entry(store, "alpha", "d/sub")
    assert sub.tree is not None
    raw = store.catalog.get_tree_raw(sub.tree)
    assert raw is not None
    with store.catalog.env.begin(write=True) as txn:  # a flipped bit in LMDB
        txn.put(bytes.fromhex(sub.tree), raw[:-1] + bytes([raw[-1] ^ 1]), db=store.catalog._trees)
    before = set(store.blobs.digests())
    report = fsck(store, repair=True, grace=0)
    assert [p.kind for p in report.problems] == ["tree-damaged"]
    assert set(store.blobs.digests()) == before and store.blobs.has(made["blob"])  # type: ignore[arg-type]
    assert any("deleted no orphans" in r for r in report.repairs)
    assert len(store.catalog.damaged()) == 3


def test_fresh_records_are_little_endian_times(store: Store) -> None:
    """The schema's ``fresh`` value: f64 LE, when put_trees last stored the tree."""
    before = time.time()
    store.catalog.put_trees({tree_digest(EMPTY_TREE): encode(EMPTY_TREE)})
    with store.catalog.env.begin() as txn:
        raw = txn.get(bytes.fromhex(tree_digest(EMPTY_TREE)), db=store.catalog._fresh)
    assert before <= struct.unpack("<d", raw)[0] <= time.time()


class NoBucket:
    """An :class:`volfs.blobs.ObjectStore` nothing may reach: the refusal comes first."""

    def describe(self) -> str:
        return "s3://elsewhere/prefix"

    def _reached(self, *args: object) -> Any:
        raise AssertionError("the store was refused: nothing may reach its bucket")

    get = head = put = delete = list = check = _reached


class BlobsInABucket(LocalBlobStore):
    """This store's blob files, declared (the capability) to be a bucket's cache."""

    reads_are_local = False
    bucket = NoBucket()


class TreesInABucket(LmdbCatalog):
    """This store's LMDB catalog, declared (the capability) to keep its trees in a bucket."""

    bucket = NoBucket()


@pytest.mark.parametrize("half", ["blobs", "catalog"])
def test_a_half_distributed_store_is_refused_in_one_line(
    store: Store, monkeypatch: pytest.MonkeyPatch, half: str
) -> None:
    """Neither sweeper nor checker runs on a store whose catalog and blobs disagree about
    where their objects are (the local one would collect a cache, the bucket one miss
    what is only here): the interfaces' ``bucket`` capability says so, no type is asked."""
    if half == "blobs":
        monkeypatch.setattr(
            store, "blobs", BlobsInABucket(store.root / "blobs", store.root / "tmp")
        )
    else:
        monkeypatch.setattr(store, "catalog", TreesInABucket(store.root))
    for command in ("fsck", "gc"):
        code, _, err = run_cli(command)
        assert code == 2 and err.startswith("Error: `volfs") and "distributed mode" in err
        assert len(err.strip().splitlines()) == 1
