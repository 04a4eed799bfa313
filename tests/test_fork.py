"""``volfs volume fork`` and ``volfs volume diff`` (issue 16, "Beyond Modal").

A fork is counted, not timed: the catalog's LMDB entries and the blob store's digests
before and after. What a fork must do comes from the issue: constant time (O(1) catalog
records, no blob), independent histories, and gc keeping what the fork needs once its
source is gone. What a diff lists is what each test committed between the two snapshots.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from cli_checks import files, ok, refused
from mounting import mounted

from volfs import Volume
from volfs.api import records
from volfs.blobs import digest_of
from volfs.catalog import LmdbCatalog
from volfs.errors import AlreadyExistsError, InvalidError, NotFoundError
from volfs.maintenance.fsck import fsck
from volfs.maintenance.gc import collect
from volfs.snapshots import history
from volfs.store import Store


def put(vol: Volume, files: dict[str, bytes]) -> None:
    with vol.batch_upload(force=True) as batch:
        for path, data in files.items():
            batch.put_file(io.BytesIO(data), path)


def catalog_entries(store: Store) -> dict[str, int]:
    """Entries of every named database of the durable catalog (names, volumes, snapshots,
    trees, fresh, …)."""
    catalog = store.catalog
    assert isinstance(catalog, LmdbCatalog)
    with catalog.env.begin() as txn:
        names = [bytes(key) for key, _ in txn.cursor()]
    out = {}
    for name in names:
        db = catalog.env.open_db(name)
        with catalog.env.begin() as txn:
            out[name.decode()] = txn.stat(db)["entries"]
    return out


# -- fork ----------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_fork_of_a_10000_file_volume_writes_three_catalog_records_and_no_blob(
    store: Store,
) -> None:
    Volume.objects.create("big-src", store=store)
    src = Volume.from_name("big-src", store=store)
    content = {f"d{i // 100:03d}/f{i % 100:03d}.txt": b"file %d" % i for i in range(10_000)}
    put(src, content)
    assert src.info().files == 10_000
    entries, blobs = catalog_entries(store), set(store.blobs.digests())
    assert len(blobs) == 10_000
    trees_written = store.catalog.stats["trees_written"]

    out = ok("volume", "fork", "big-src", "big-fork")
    assert f"at {src.info().head} as 'big-fork'" in out

    after = catalog_entries(store)
    grown = {db: after[db] - entries.get(db, 0) for db in after if after[db] != entries.get(db)}
    # The new volume's name, its record and its first snapshot: nothing else, no tree.
    assert grown == {"names": 1, "volumes": 1, "snapshots": 1}
    assert store.catalog.stats["trees_written"] == trees_written
    assert set(store.blobs.digests()) == blobs
    fork = Volume.from_name("big-fork", store=store)
    assert fork.info().files == 10_000
    assert [e.path for e in fork.listdir("d042")] == [e.path for e in src.listdir("d042")]
    assert b"".join(fork.read_file("d099/f099.txt")) == b"file 9999"


def test_the_fork_has_its_own_history_starting_at_the_fork_point(store: Store) -> None:
    Volume.objects.create("hist-src", store=store)
    src = Volume.from_name("hist-src", store=store)
    put(src, {"a.txt": b"one"})
    first = src.info().head
    put(src, {"a.txt": b"two"})
    fork = src.fork("hist-fork", snapshot=first)
    assert isinstance(fork, Volume) and fork.name == "hist-fork"
    assert files(fork) == {"a.txt": b"one"}
    (point,) = fork.history()
    assert point.parent is None and point.origin == f"fork of hist-src at {first}"
    assert point.id != first  # its own snapshot, of the fork's volume
    log = json.loads(ok("volume", "log", "hist-fork", "--json"))
    assert [entry["origin"] for entry in log] == [f"fork of hist-src at {first}"]
    # A handle pinned to a snapshot forks that snapshot.
    pinned = src.snapshot(first).fork("hist-pinned")
    assert files(pinned) == {"a.txt": b"one"}


def test_a_commit_to_the_fork_leaves_the_source_unchanged_and_back(
    store: Store, tmp_path: Path
) -> None:
    Volume.objects.create("ind-src", store=store)
    src = Volume.from_name("ind-src", store=store)
    put(src, {"a.txt": b"source a", "dir/b.txt": b"source b"})
    source_head, source_files = src.info().head, files(src)
    fork = src.fork("ind-fork")
    put(fork, {"a.txt": b"fork's a", "new.txt": b"only in the fork"})
    fork.remove_file("dir", recursive=True)
    assert files(fork) == {"a.txt": b"fork's a", "new.txt": b"only in the fork"}
    assert src.info().head == source_head and files(src) == source_files
    fork_head, fork_files = fork.info().head, files(fork)
    put(src, {"dir/c.txt": b"source c"})
    assert fork.info().head == fork_head and files(fork) == fork_files
    # A mount of the fork commits onto the fork alone.
    with mounted(Path(store.root), "ind-fork", tmp_path / "mnt") as m:
        (m.path / "mounted.txt").write_bytes(b"through a mount")
        m.commit()
    assert files(fork)["mounted.txt"] == b"through a mount"
    assert "mounted.txt" not in files(src)
    # Rollback works on the fork like on any volume: back to the fork point.
    point = fork.history()[-1].id
    history.rollback(store.catalog, "ind-fork", point)
    assert files(fork) == source_files


def test_gc_after_deleting_the_source_keeps_every_blob_the_fork_needs(store: Store) -> None:
    kept, later, shared = os.urandom(70_000), os.urandom(60_000), os.urandom(50_000)
    Volume.objects.create("gc-src", store=store)
    src = Volume.from_name("gc-src", store=store)
    put(src, {"kept.bin": kept, "dir/shared.bin": shared})
    point = src.info().head
    put(src, {"later.bin": later})
    fork = src.fork("gc-fork", snapshot=point)
    Volume.objects.delete("gc-src", store=store)

    report = collect(store, grace=0)
    # The source's snapshots went, and the blob only its later snapshot named; the fork's
    # stayed.
    assert {d["volume"] for d in report.snapshots_dropped} == {src.object_id}
    assert report.blobs_deleted == 1
    assert set(store.blobs.digests()) == {digest_of(kept), digest_of(shared)}
    assert fsck(store).clean
    assert files(fork) == {"kept.bin": kept, "dir/shared.bin": shared}
    assert collect(store, grace=0).blobs_deleted == 0
    ok("fsck")


def test_gc_racing_a_fork_keeps_what_a_fork_that_landed_first_names(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork of a snapshot gc is dropping lands between gc's mark phase and its sweep:
    the sweep sees it and keeps its blobs. A fork after the sweep is refused."""
    old, new = os.urandom(40_000), os.urandom(41_000)
    Volume.objects.create("race-src", store=store)
    src = Volume.from_name("race-src", store=store)
    put(src, {"old.bin": old})
    point = src.info().head
    src.remove_file("old.bin")
    put(src, {"new.bin": new})
    history.set_retention(store.catalog, "race-src", keep_last=1)
    catalog = store.catalog
    sweep = catalog.sweep

    def fork_then_sweep():  # type: ignore[no-untyped-def]
        src.fork("race-fork", snapshot=point)
        return sweep()

    monkeypatch.setattr(catalog, "sweep", fork_then_sweep)
    report = collect(store, grace=0)
    assert point in {d["id"] for d in report.snapshots_dropped}
    assert files(Volume.from_name("race-fork", store=store)) == {"old.bin": old}
    assert digest_of(old) in set(store.blobs.digests())
    assert fsck(store).clean

    monkeypatch.setattr(catalog, "sweep", sweep)
    put(src, {"newer.bin": b"x"})
    second = src.info().head
    put(src, {"newest.bin": b"y"})
    collect(store, grace=0)  # retention drops ``second``
    with pytest.raises(NotFoundError):
        src.fork("too-late", snapshot=second)
    # The catalog's own check, for a caller that found the snapshot just before gc ran.
    with pytest.raises(NotFoundError):
        catalog.fork_volume("main", "too-late", "test", second, "fork")
    assert store.catalog.find_volume("main", "too-late") is None


def test_fork_refuses_bad_input_with_one_line_and_typed_errors(store: Store) -> None:
    Volume.objects.create("bad-src", store=store)
    src = Volume.from_name("bad-src", store=store)
    Volume.objects.create("bad-other", store=store)
    other = Volume.from_name("bad-other", store=store)
    before = store.catalog.list_volumes()
    with pytest.raises(NotFoundError):
        Volume.from_name("no-such", store=store).fork("x1")
    with pytest.raises(AlreadyExistsError):
        src.fork("bad-other")
    with pytest.raises(InvalidError):
        src.fork("bad name")
    with pytest.raises(NotFoundError):
        src.fork("x2", snapshot="sn-doesnotexist00")
    with pytest.raises(InvalidError):
        src.fork("x3", snapshot=other.info().head)
    assert store.catalog.list_volumes() == before

    assert refused("volume", "fork", "no-such", "x1").returncode == 3
    assert "already exists" in refused("volume", "fork", "bad-src", "bad-other").stderr
    assert refused("volume", "fork", "bad-src", "bad/name").returncode == 2
    proc = refused("volume", "fork", "bad-src", "x2", "--snapshot", "nope")
    assert proc.returncode == 3 and "snapshot 'nope' not found" in proc.stderr
    assert store.catalog.list_volumes() == before


# -- diff ----------------------------------------------------------------------------------
def test_diff_lists_what_a_mount_committed_between_two_snapshots(
    store: Store, store_path: Path, tmp_path: Path
) -> None:
    Volume.objects.create("diff-vol", store=store)
    vol = Volume.from_name("diff-vol", store=store)
    put(
        vol,
        {
            "same.txt": b"untouched",
            "edit.txt": b"before",
            "chmod.sh": b"#!/bin/sh\n",
            "gone.txt": b"removed",
            "olddir/x.txt": b"x",
            "olddir/sub/y.txt": b"y",
            "becomes-link": b"a file first",
            "keep/deep/z.txt": b"z",
        },
    )
    with mounted(store_path, "diff-vol", tmp_path / "mnt") as m:
        os.symlink("same.txt", m.path / "link")
        m.commit()
        a = vol.info().head
        (m.path / "edit.txt").write_bytes(b"after, longer")
        os.chmod(m.path / "chmod.sh", 0o755)
        os.unlink(m.path / "gone.txt")
        subprocess.run(["rm", "-r", str(m.path / "olddir")], check=True, timeout=30)
        os.makedirs(m.path / "newdir/sub")
        (m.path / "newdir/sub/n.txt").write_bytes(b"n")
        os.unlink(m.path / "link")
        os.symlink("edit.txt", m.path / "link")
        os.unlink(m.path / "becomes-link")
        os.symlink("same.txt", m.path / "becomes-link")
        m.commit()
    b = vol.info().head
    expected = {
        "edit.txt": "modified",
        "chmod.sh": "mode-only",
        "gone.txt": "removed",
        "olddir": "removed",
        "olddir/x.txt": "removed",
        "olddir/sub": "removed",
        "olddir/sub/y.txt": "removed",
        "newdir": "added",
        "newdir/sub": "added",
        "newdir/sub/n.txt": "added",
        "link": "modified",
        "becomes-link": "type-changed",
    }
    changes = vol.diff(a)  # b defaults to the head
    assert all(isinstance(c, records.SnapshotChange) for c in changes)
    assert {c.path: c.change for c in changes} == expected
    assert changes == vol.diff(a, b)
    by_path = {c.path: c for c in changes}
    chmod = by_path["chmod.sh"]
    assert "mode" in chmod.fields and chmod.old is not None and chmod.new is not None
    assert (chmod.old.mode, chmod.new.mode) == (0o644, 0o755)
    assert by_path["link"].new is not None and by_path["link"].new.target == "edit.txt"
    assert by_path["gone.txt"].new is None and by_path["newdir"].old is None
    assert vol.diff(b) == [] and vol.diff(a, a) == []

    report = json.loads(ok("volume", "diff", "diff-vol", a, b, "--json"))
    assert (report["from"], report["to"]) == (a, b)
    assert {c["path"]: c["change"] for c in report["changes"]} == expected
    assert report["counts"] == {
        "added": 3,
        "removed": 5,
        "modified": 2,
        "mode-only": 1,
        "type-changed": 1,
    }
    (link,) = [c for c in report["changes"] if c["path"] == "becomes-link"]
    assert (link["old"]["type"], link["new"]["type"]) == ("file", "symlink")
    text = ok("volume", "diff", "diff-vol", a)
    assert "mode-only     chmod.sh  (mode 0644 -> 0755)" in text
    assert "type-changed  becomes-link  (file -> symlink)" in text
    assert text.splitlines()[-1].startswith(f"12 changes from {a} to {b}:")
    assert "No changes" in ok("volume", "diff", "diff-vol", b)


def test_diff_reads_only_the_subtrees_that_changed(store: Store) -> None:
    Volume.objects.create("diff-cost", store=store)
    vol = Volume.from_name("diff-cost", store=store)
    put(vol, {f"d{i:02d}/f{j:02d}": b"%d %d" % (i, j) for i in range(50) for j in range(20)})
    a = vol.info().head
    put(vol, {"d07/f03": b"changed"})
    catalog = store.catalog
    assert isinstance(catalog, LmdbCatalog)
    catalog._tree_cache.clear()
    reads = catalog.stats["trees_read"]
    assert [(c.path, c.change) for c in vol.diff(a)] == [("d07/f03", "modified")]
    assert catalog.stats["trees_read"] - reads == 4  # both roots, both d07


def test_diff_refuses_unknown_snapshots_and_other_volumes(store: Store) -> None:
    Volume.objects.create("diff-bad", store=store)
    vol = Volume.from_name("diff-bad", store=store)
    Volume.objects.create("diff-other", store=store)
    other = Volume.from_name("diff-other", store=store)
    with pytest.raises(NotFoundError):
        vol.diff("sn-doesnotexist00")
    with pytest.raises(InvalidError):
        vol.diff(other.info().head)
    assert refused("volume", "diff", "diff-bad", "sn-nope").returncode == 3
    assert refused("volume", "diff", "no-such-volume", "sn-nope").returncode == 3
    assert refused("volume", "diff", "diff-bad", other.info().head).returncode == 2
