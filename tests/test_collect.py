"""``volfs gc``: exactly the unreferenced goes; grace, freshening, leases, retention and live
mounts keep what may still be needed.

Counts, not timings: each test computes what must go and what must stay by walking the
catalog itself, then compares with what gc did. Ages are made with ``os.utime`` and the
``now``/``grace`` parameters, never by sleeping.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from mounting import mounted, run_volfs

from volfs import Volume
from volfs.blobs import Digest, digest_of
from volfs.blobs.local import LocalBlobStore
from volfs.catalog import Lease, LmdbCatalog, SnapshotRecord
from volfs.cli import cli
from volfs.core.changes import Put
from volfs.core.tree import EMPTY_TREE, Entry, Kind, Tree, encode, lookup, tree_digest, walk
from volfs.errors import CorruptionError, InvalidError
from volfs.maintenance.fsck import fsck
from volfs.maintenance.gc import DEFAULT_GRACE, collect, parse_duration
from volfs.snapshots import history
from volfs.snapshots.commit import commit_changes
from volfs.store import Store

HOUR = 3600.0


def put(vol: Volume, path: str, data: bytes) -> None:
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(data), path)


def age(store: Store, digest: Digest, seconds: float = 2 * HOUR) -> None:
    os.utime(store.blobs.path(digest), (time.time() - seconds,) * 2)


def age_all_blobs(store: Store) -> None:
    for d in store.blobs.digests():
        age(store, d)


def snapshots(store: Store) -> list[SnapshotRecord]:
    return [SnapshotRecord.from_json(raw) for _, raw in store.catalog.iter_snapshots_raw()]


def reachable(store: Store, records: list[SnapshotRecord]) -> tuple[set[Digest], set[Digest]]:
    """(trees, blobs) the given snapshots reach, walked independently of gc."""
    trees: set[Digest] = set()
    blobs: set[Digest] = set()
    for s in records:
        assert s.root.tree is not None
        trees.add(s.root.tree)
        for _, e in walk(store.catalog, s.root):
            if e.kind is Kind.DIR:
                assert e.tree is not None
                trees.add(e.tree)
            blobs.update(d for _, d in e.chunks)
    return trees, blobs


def content(store: Store, name: str, path: str) -> bytes:
    return b"".join(Volume.from_name(name, store=store).read_file(path))


@pytest.fixture
def two_volumes(store: Store) -> Store:
    Volume.objects.create("keep", store=store)
    keep = Volume.from_name("keep", store=store)
    put(keep, "shared.txt", b"in both volumes")
    put(keep, "dir/mine.bin", os.urandom(30_000))
    put(keep, "dir/mine.bin", os.urandom(30_000))  # the first version stays in history
    Volume.objects.create("gone", store=store)
    gone = Volume.from_name("gone", store=store)
    put(gone, "shared.txt", b"in both volumes")
    put(gone, "sub/only-gone.bin", os.urandom(10_000))
    return store


def test_gc_deletes_exactly_what_nothing_references(two_volumes: Store) -> None:
    store = two_volumes
    Volume.objects.delete("gone", store=store)
    abandoned = [store.blobs.put(os.urandom(1000)) for _ in range(3)]  # a batch that failed
    stray = Tree((Entry("x", Kind.FILE, size=1000, chunks=((0, abandoned[0]),)),))
    store.catalog.put_trees({tree_digest(stray): encode(stray)})
    age_all_blobs(store)
    kept_snapshots = [
        s for s in snapshots(store) if s.volume_id == store.catalog.get_volume("main", "keep").id
    ]
    live_trees, live_blobs = reachable(store, kept_snapshots)
    all_trees, all_blobs = set(store.catalog.tree_digests()), set(store.blobs.digests())
    gone_snapshots = len(snapshots(store)) - len(kept_snapshots)
    assert gone_snapshots == 3 and len(all_blobs - live_blobs) == 4  # only-gone.bin + abandoned

    report = collect(store, grace=0)
    assert len(report.snapshots_dropped) == gone_snapshots
    assert {d["reason"] for d in report.snapshots_dropped} == {"volume deleted"}
    assert report.blobs_deleted == len(all_blobs - live_blobs)
    assert report.trees_deleted == len(all_trees - live_trees)
    assert set(store.blobs.digests()) == live_blobs
    assert set(store.catalog.tree_digests()) == live_trees
    assert {s.id for s in snapshots(store)} == {s.id for s in kept_snapshots}
    assert content(store, "keep", "shared.txt") == b"in both volumes"
    assert fsck(store, grace=0).clean
    again = collect(store, grace=0)
    assert (again.blobs_deleted, again.trees_deleted, again.snapshots_dropped) == (0, 0, [])


class MemoryBucket:
    """An in-memory :class:`volfs.blobs.ObjectStore`: a distributed store's bucket, no S3."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, float]] = {}

    def describe(self) -> str:
        return "memory://bucket"

    def get(self, kind: str, digest: str) -> bytes | None:
        found = self.objects.get((kind, digest))
        return found[0] if found is not None else None

    def head(self, kind: str, digest: str) -> int | None:
        found = self.objects.get((kind, digest))
        return len(found[0]) if found is not None else None

    def put(self, kind: str, digest: str, data: bytes, *, mtime: float | None = None) -> None:
        self.objects[(kind, digest)] = (data, time.time() if mtime is None else mtime)

    def delete(self, kind: str, digests: Sequence[str]) -> None:
        for digest in digests:
            self.objects.pop((kind, digest), None)

    def list(self, kind: str) -> Iterator[tuple[Digest, int, float]]:
        for (k, digest), (data, mtime) in sorted(self.objects.items()):
            if k == kind:
                yield Digest(digest), len(data), mtime

    def check(self) -> None:
        pass

    def digests(self, kind: str) -> set[Digest]:
        return {d for d, _, _ in self.list(kind)}


def in_a_bucket(store: Store, monkeypatch: pytest.MonkeyPatch) -> MemoryBucket:
    """Copies the store's trees and blobs into a bucket (written long ago) and gives the
    store backends that declare it (the ``bucket`` capability), as remote.py wires S3."""
    bucket = MemoryBucket()
    for d in store.catalog.tree_digests():
        raw = store.catalog.get_tree_raw(d)
        assert raw is not None
        bucket.put("trees", d, raw, mtime=time.time() - 2 * HOUR)
    for d in store.blobs.digests():
        bucket.put("blobs", d, store.blobs.get(d), mtime=time.time() - 2 * HOUR)
    catalog = LmdbCatalog(store.root)
    catalog.bucket = bucket
    blobs = LocalBlobStore(store.root / "blobs", store.root / "tmp")
    blobs.bucket = bucket
    monkeypatch.setattr(store, "catalog", catalog)
    monkeypatch.setattr(store, "blobs", blobs)
    return bucket


def test_the_bucket_sweeper_runs_where_the_store_declares_a_bucket(
    two_volumes: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same plan, swept from the bucket (bucket_gc.py): chosen by the capability, driven
    only through the interfaces; this machine's own files are not its business."""
    store = two_volumes
    Volume.objects.delete("gone", store=store)
    abandoned = [store.blobs.put(os.urandom(1000)) for _ in range(3)]
    stray = Tree((Entry("x", Kind.FILE, size=1000, chunks=((0, abandoned[0]),)),))
    store.catalog.put_trees({tree_digest(stray): encode(stray)})
    keep_id = store.catalog.get_volume("main", "keep").id
    kept_snapshots = [s for s in snapshots(store) if s.volume_id == keep_id]
    live_trees, live_blobs = reachable(store, kept_snapshots)
    live_trees.add(tree_digest(EMPTY_TREE))  # never collected
    bucket = in_a_bucket(store, monkeypatch)
    local_blobs = set(store.blobs.digests())
    young = store.blobs.put(b"written a moment ago, by a commit in flight")
    bucket.put("blobs", young, b"written a moment ago, by a commit in flight")
    all_trees, all_blobs = bucket.digests("trees"), bucket.digests("blobs")

    report = collect(store, grace=HOUR / 2)
    assert {d["reason"] for d in report.snapshots_dropped} == {"volume deleted"}
    assert len(report.snapshots_dropped) == 3
    assert {s.id for s in snapshots(store)} == {s.id for s in kept_snapshots}
    assert bucket.digests("blobs") == live_blobs | {young} and report.blobs_young == 1
    assert bucket.digests("trees") == live_trees
    assert report.blobs_deleted == len(all_blobs - live_blobs - {young})
    assert report.trees_deleted == len(all_trees - live_trees)
    assert local_blobs <= set(store.blobs.digests())  # the local sweeper did not run
    assert fsck(store, grace=HOUR / 2).clean  # the bucket checker, against the same listing


def test_dry_run_counts_the_same_and_changes_nothing(
    two_volumes: Store, store_state: Callable[[], object]
) -> None:
    store = two_volumes
    Volume.objects.delete("gone", store=store)
    age_all_blobs(store)
    before, trees = store_state(), set(store.catalog.tree_digests())
    dry = collect(store, grace=0, dry_run=True)
    assert store_state() == before and set(store.catalog.tree_digests()) == trees
    assert len(snapshots(store)) == 7
    real = collect(store, grace=0)
    assert (dry.blobs_deleted, dry.bytes_freed, dry.trees_deleted, len(dry.snapshots_dropped)) == (
        real.blobs_deleted,
        real.bytes_freed,
        real.trees_deleted,
        len(real.snapshots_dropped),
    )
    assert real.blobs_deleted == 1 and real.bytes_freed == 10_000


def test_the_grace_window_keeps_what_was_just_written(store: Store) -> None:
    Volume.objects.create("v", store=store)
    blob = store.blobs.put(b"a commit in flight wrote me")
    tree = Tree((Entry("f", Kind.FILE, size=27, chunks=((0, blob),)),))
    store.catalog.put_trees({tree_digest(tree): encode(tree)})  # a mount's view, before its commit
    report = collect(store)  # the default grace window
    assert (report.blobs_deleted, report.trees_deleted) == (0, 0)
    assert (report.blobs_young, report.trees_young) == (0, 1)  # the young tree keeps its blob
    assert store.blobs.has(blob) and store.catalog.has_tree(tree_digest(tree))
    # Once the tree is older than the window, the blob's own age counts: still young.
    later = collect(store, now=time.time() + DEFAULT_GRACE + 60, grace=DEFAULT_GRACE)
    assert (later.trees_deleted, later.blobs_deleted) == (1, 1)  # its mtime is also old by then
    assert not store.blobs.has(blob)


def test_a_young_unreferenced_blob_survives_an_old_one_does_not(store: Store) -> None:
    Volume.objects.create("v", store=store)
    young = store.blobs.put(b"just written")
    old = store.blobs.put(b"written long ago")
    age(store, old)
    report = collect(store)
    assert (report.blobs_deleted, report.blobs_young) == (1, 1)
    assert store.blobs.has(young) and not store.blobs.has(old)


def test_writing_an_old_blob_again_freshens_it_so_gc_keeps_it(store: Store) -> None:
    Volume.objects.create("v", store=store)
    vol = Volume.from_name("v", store=store)
    data = b"deleted once, uploaded again"
    digest = store.blobs.put(data)
    age(store, digest)
    with vol.batch_upload() as batch:  # the upload finds the blob stored and does not rewrite it
        batch.put_file(io.BytesIO(data), "again.txt")
        written = store.blobs.stats["blobs_written"]
        report = collect(store)  # runs while the batch has not committed yet
        assert report.blobs_deleted == 0 and store.blobs.has(digest)
    assert store.blobs.stats["blobs_written"] == written
    assert content(store, "v", "again.txt") == data
    assert fsck(store).clean


def test_a_lease_keeps_everything_written_since_it_began(store: Store) -> None:
    Volume.objects.create("v", store=store)
    digest = store.blobs.put(b"part of a three-hour upload")
    age(store, digest, 2 * HOUR)
    with store.catalog.lease("a long upload", since=time.time() - 3 * HOUR):
        report = collect(store)
        assert report.leases == 1 and report.blobs_deleted == 0 and store.blobs.has(digest)
    assert collect(store).blobs_deleted == 1


def test_a_dead_process_lease_is_ignored_and_pruned(store: Store) -> None:
    Volume.objects.create("v", store=store)
    digest = store.blobs.put(b"abandoned by a crashed writer")
    age(store, digest)
    dead = Lease("le-deadprocess00001", 2**22 + 12345, None, time.time() - 3 * HOUR, "crashed")
    with store.catalog.runtime.begin(write=True) as txn:
        txn.put(dead.id.encode(), json.dumps(dead.__dict__).encode(), db=store.catalog._leases)
    report = collect(store)
    assert report.leases == 0 and report.blobs_deleted == 1
    assert store.catalog.list_leases() == []


LEASE_HOLDER = """
import sys, time
from volfs.store import Store
with Store.open(sys.argv[1]).catalog.lease("a long upload elsewhere", time.time() - 3 * 3600):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_lease_held_in_another_pid_namespace_is_live(store: Store, store_path: Path) -> None:
    """Containers sharing a store each have their own pids: the holder's pid (1 in its
    namespace) names init here. gc must still see the lease (and keep what it wrote)."""
    Volume.objects.create("v", store=store)
    digest = store.blobs.put(b"written by a commit in another container")
    age(store, digest)
    holder = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-c",
            LEASE_HOLDER,
            str(store_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        (lease,) = store.catalog.list_leases()
        assert lease.pid == 1  # its own namespace's pid, meaningless here
        report = collect(store)
        assert report.leases == 1 and report.blobs_deleted == 0 and store.blobs.has(digest)
    finally:
        holder.communicate("", timeout=30)
    assert store.catalog.list_leases() == []
    assert collect(store).blobs_deleted == 1


def test_retention_keep_last_3_frees_only_what_older_snapshots_used(store: Store) -> None:
    Volume.objects.create("v", store=store)
    vol = Volume.from_name("v", store=store)
    versions = [f"version {i}".encode() * 100 for i in range(6)]
    for data in versions:
        put(vol, "data.txt", data)
    put(vol, "other.txt", b"added last")  # the newest 3: other.txt, version 5, version 4
    age_all_blobs(store)
    result = CliRunner().invoke(cli, ["volume", "retention", "v", "--keep-last", "3"])
    assert result.exit_code == 0, result.stderr
    report = collect(store, grace=0)
    assert len(report.snapshots_dropped) == 8 - 3  # create + versions 0..3 + … : 8 snapshots in all
    assert report.blobs_deleted == 4
    assert set(store.blobs.digests()) == {
        digest_of(versions[4]),
        digest_of(versions[5]),
        digest_of(b"added last"),
    }
    log = json.loads(CliRunner().invoke(cli, ["volume", "log", "v", "--json"]).stdout)
    assert len(log) == 3 and [e["origin"] for e in log] == ["api:put"] * 3
    text = CliRunner().invoke(cli, ["volume", "log", "v"]).stdout
    assert "dropped by retention" in text and "retention: keep last 3" in text
    assert "keep last 3" in CliRunner().invoke(cli, ["volume", "info", "v"]).stdout
    assert content(store, "v", "data.txt") == versions[5]
    assert fsck(store, grace=0).clean


def test_retention_keep_days_and_the_grace_window(store: Store) -> None:
    Volume.objects.create("v", store=store)
    vol = Volume.from_name("v", store=store)
    for i in range(3):
        put(vol, "f", str(i).encode())
    history.set_retention(store.catalog, "v", keep_days=1)
    assert collect(store, grace=0, dry_run=True).snapshots_dropped == []  # all younger than a day
    two_days = time.time() + 2 * 86400
    # Two days on: only the head is kept — unless the grace window still covers the others.
    assert len(collect(store, grace=3 * 86400, now=two_days, dry_run=True).snapshots_dropped) == 0
    report = collect(store, grace=0, now=two_days)
    assert len(report.snapshots_dropped) == 3 and len(vol.history()) == 1


def test_retention_refuses_bad_values(store: Store) -> None:
    Volume.objects.create("v", store=store)
    with pytest.raises(InvalidError):
        history.set_retention(store.catalog, "v", keep_last=0)
    with pytest.raises(InvalidError):
        history.set_retention(store.catalog, "v", keep_days=-1)
    assert history.get_retention(
        store.catalog, store.catalog.get_volume("main", "v").id
    ).keeps_everything
    assert (
        parse_duration("10m") == 600 and parse_duration("2d") == 172800 and parse_duration("5") == 5
    )
    with pytest.raises(InvalidError):
        parse_duration("soon")


def test_a_rollback_landing_during_gc_keeps_what_it_names(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between gc's mark phase and its sweep, a rollback names a snapshot gc decided to drop."""
    Volume.objects.create("v", store=store)
    vol = Volume.from_name("v", store=store)
    put(vol, "old/file.txt", b"the old content, only in the old snapshot")
    old = vol.history()[0].id
    vol.remove_file("old", recursive=True)
    put(vol, "new.txt", b"new")
    history.set_retention(store.catalog, "v", keep_last=1)
    age_all_blobs(store)
    real_sweep = store.catalog.sweep

    @contextmanager
    def racing_sweep() -> Iterator[object]:
        history.rollback(store.catalog, "v", old)  # lands after the mark phase, before the sweep
        with real_sweep() as sweep:
            yield sweep

    monkeypatch.setattr(store.catalog, "sweep", racing_sweep)
    collect(store, grace=0)
    assert content(store, "v", "old/file.txt") == b"the old content, only in the old snapshot"
    assert vol.history()[0].origin == f"rollback to {old}"
    assert fsck(store, grace=0).clean


def test_a_view_tree_stored_by_a_commit_during_gc_is_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mount's view tree equal to an old unreferenced one, stored with a commit that lands
    between gc's mark phase and its sweep: its journal names it only a moment later."""
    Volume.objects.create("v", store=store)
    vol = Volume.from_name("v", store=store)
    blob = store.blobs.put(b"in the view")
    view = Tree((Entry("f", Kind.FILE, size=11, chunks=((0, blob),)),))
    with store.catalog.env.begin(write=True) as txn:  # stored long ago, its fresh record pruned
        txn.put(bytes.fromhex(tree_digest(view)), encode(view), db=store.catalog._trees)
    real_sweep = store.catalog.sweep

    @contextmanager
    def racing_sweep() -> Iterator[object]:
        commit_changes(
            store.catalog,
            vol.object_id,
            lambda head: {("g",): Put(Entry("g", Kind.FILE))},
            origin="mount",
            extra_trees={tree_digest(view): encode(view)},
        )
        with real_sweep() as sweep:
            yield sweep

    monkeypatch.setattr(store.catalog, "sweep", racing_sweep)
    report = collect(store)
    assert store.catalog.has_tree(tree_digest(view)) and store.blobs.has(blob)
    assert report.trees_deleted == 0


def test_gc_deletes_nothing_when_a_tree_is_missing(
    two_volumes: Store, store_state: Callable[[], object]
) -> None:
    store = two_volumes
    Volume.objects.delete("gone", store=store)
    entry = lookup(
        store.catalog,
        store.catalog.head(store.catalog.get_volume("main", "keep").id).root,
        ("dir",),
    )
    assert entry is not None and entry.tree is not None
    with store.catalog.env.begin(write=True) as txn:
        txn.delete(bytes.fromhex(entry.tree), db=store.catalog._trees)
    store.catalog._tree_cache.clear()
    before = store_state()
    with pytest.raises(CorruptionError, match="volfs fsck"):
        collect(store, grace=0)
    assert store_state() == before
    result = CliRunner().invoke(cli, ["gc", "--grace", "0"])
    assert result.exit_code == 8 and result.stderr.count("\n") == 1


def test_gc_cli_reports_in_text_and_json(two_volumes: Store) -> None:
    store = two_volumes
    Volume.objects.delete("gone", store=store)
    age_all_blobs(store)
    dry = CliRunner().invoke(cli, ["gc", "--dry-run", "--grace", "0"])
    assert dry.exit_code == 0
    assert (
        "Would drop 3 snapshots of" in dry.stdout and "Would delete 1 blob (9.8 KiB)" in dry.stdout
    )
    done = json.loads(CliRunner().invoke(cli, ["gc", "--json", "--grace", "0"]).stdout)
    assert done["blobs_deleted"] == 1 and done["bytes_freed"] == 10_000 and not done["dry_run"]
    assert len(done["snapshots_dropped"]) == 3
    bad = CliRunner().invoke(cli, ["gc", "--grace", "soon"])
    assert bad.exit_code == 2 and bad.stderr.startswith("Error: invalid duration")


# -- live mounts (real FUSE) ---------------------------------------------------------------------
@pytest.mark.mount
def test_gc_keeps_what_a_live_mount_still_shows(store_path: Path, tmp_path: Path) -> None:
    run_volfs(store_path, "volume", "create", "vol")
    local = tmp_path / "local.bin"
    local.write_bytes(b"still shown by the mount " * 1000)
    run_volfs(store_path, "volume", "put", "vol", str(local), "/a.bin")
    with mounted(store_path, "vol", tmp_path / "mnt") as m:
        assert os.listdir(m.path) == ["a.bin"]  # the view is loaded; the content is not read yet
        run_volfs(store_path, "volume", "rm", "vol", "a.bin")  # another process drops the file
        run_volfs(store_path, "volume", "retention", "vol", "--keep-last", "1")
        out = json.loads(run_volfs(store_path, "gc", "--grace", "0", "--json").stdout)
        assert out["pinned_snapshots"] >= 1
        assert (m.path / "a.bin").read_bytes() == local.read_bytes()
    # Unmounted: the base is no longer needed, and goes.
    out = json.loads(run_volfs(store_path, "gc", "--grace", "0", "--json").stdout)
    assert out["blobs_deleted"] == 1


@pytest.mark.mount
def test_gc_keeps_the_base_a_read_only_mount_reloaded_onto(
    store_path: Path, tmp_path: Path
) -> None:
    """A read-only mount has no journal: only its mount record names its new base."""
    store = Store.open(store_path)
    Volume.objects.create("vol", store=store)
    vol = Volume.from_name("vol", store=store)
    put(vol, "f.txt", b"version 1")
    with mounted(store_path, "vol", tmp_path / "ro", "--read-only") as m:
        put(vol, "f.txt", b"version 2")
        m.reload()
        assert os.listdir(m.path) == ["f.txt"]
        vol.remove_file("f.txt")
        history.set_retention(store.catalog, "vol", keep_last=1)
        report = collect(store, grace=0)
        assert len(report.snapshots_dropped) == 2  # create and version 1; version 2 is the base
        assert (m.path / "f.txt").read_bytes() == b"version 2"


def test_the_empty_tree_is_never_collected(store: Store) -> None:
    Volume.objects.create("v", store=store)
    Volume.objects.delete("v", store=store)
    collect(store, grace=0)
    assert store.catalog.has_tree(tree_digest(EMPTY_TREE))
    Volume.objects.create("w", store=store)  # names the empty tree without storing it
    assert fsck(store, grace=0).clean
