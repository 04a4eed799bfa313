"""The LMDB catalog: volumes and names, heads (compare-and-swap), history, trees, runtime tables.

Most tests hold it as the interface (:class:`Catalog`); the ones that reach into LMDB (to
damage a record) hold the backend (:class:`LmdbCatalog`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from volfs.blobs import digest_of
from volfs.catalog import (
    FORMAT_VERSION,
    Catalog,
    HeadMoved,
    LmdbCatalog,
    MountId,
    MountRecord,
    SnapshotId,
    SnapshotRecord,
    VolumeId,
    new_id,
)
from volfs.core.tree import EMPTY_TREE, Entry, Kind, Tree, TreeWriter, encode, tree_digest
from volfs.errors import AlreadyExistsError, CorruptionError, NotFoundError
from volfs.store import Store


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> LmdbCatalog:
    # One store for the module: LMDB environments stay open for the life of the process.
    return LmdbCatalog(tmp_path_factory.mktemp("store"))


@pytest.fixture
def env(request: pytest.FixtureRequest) -> str:
    """An environment of its own for each test, so tests never see each other's volumes."""
    return "t-" + request.node.name[-40:].replace("[", "-").replace("]", "")


def commit_tree(
    catalog: Catalog, volume_id: str, tree: Tree, origin: str = "test"
) -> SnapshotRecord:
    head = catalog.head(volume_id)
    writer = TreeWriter(catalog)
    root = writer.dir_entry(head.root, tree)
    snapshot = SnapshotRecord(
        SnapshotId(new_id("sn")), VolumeId(volume_id), root, head.id, time.time(), origin
    )
    catalog.advance_head(head.id, snapshot, writer.pending)
    return snapshot


def a_file(name: str, data: bytes) -> Entry:
    return Entry(name, Kind.FILE, size=len(data), chunks=((0, digest_of(data)),))


# --- volumes ----------------------------------------------------------------------------------
def test_create_find_and_list(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "data", "alice")
    assert volume.id.startswith("vo-") and volume.name == "data" and volume.environment == env
    assert volume.created_by == "alice" and volume.format_version == FORMAT_VERSION
    assert catalog.find_volume(env, "data") == volume
    assert catalog.get_volume(env, "data") == volume
    assert catalog.get_volume_by_id(volume.id) == volume
    assert catalog.find_volume(env, "nope") is None
    with pytest.raises(NotFoundError):
        catalog.get_volume(env, "nope")
    other = catalog.create_volume(env, "more", "bob")
    assert [v.name for v in catalog.list_volumes(env)] == ["data", "more"]
    assert {volume.id, other.id} <= {v.id for v in catalog.list_volumes()}


def test_a_new_volume_has_an_empty_root(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "v", "me")
    head = catalog.head(volume.id)
    assert head.id == volume.head and head.parent is None and head.origin == "create"
    assert head.root.kind is Kind.DIR and head.root.tree == tree_digest(EMPTY_TREE)
    assert catalog.get_tree(head.root.tree) == EMPTY_TREE  # type: ignore[arg-type]
    assert (head.root.size, head.root.files) == (0, 0)


def test_create_twice_is_refused(catalog: Catalog, env: str) -> None:
    first = catalog.create_volume(env, "v", "me")
    with pytest.raises(AlreadyExistsError):
        catalog.create_volume(env, "v", "me")
    assert [v.id for v in catalog.list_volumes(env)] == [first.id]


def test_environments_are_separate_namespaces(catalog: Catalog, env: str) -> None:
    a = catalog.create_volume(env + "-a", "same", "me")
    b = catalog.create_volume(env + "-b", "same", "me")
    assert a.id != b.id
    assert catalog.get_volume(env + "-a", "same").id == a.id
    assert catalog.get_volume(env + "-b", "same").id == b.id
    assert [v.id for v in catalog.list_volumes(env + "-a")] == [a.id]
    catalog.delete_volume(env + "-a", "same")
    assert catalog.get_volume(env + "-b", "same").id == b.id


def test_rename(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "old", "me")
    taken = catalog.create_volume(env, "taken", "me")
    renamed = catalog.rename_volume(env, "old", "new")
    assert renamed.id == volume.id and renamed.name == "new" and renamed.head == volume.head
    assert catalog.find_volume(env, "old") is None
    assert catalog.get_volume(env, "new") == renamed
    assert catalog.get_volume_by_id(volume.id).name == "new"
    with pytest.raises(AlreadyExistsError):
        catalog.rename_volume(env, "new", "taken")
    assert catalog.get_volume(env, "taken") == taken
    assert catalog.get_volume(env, "new") == renamed
    with pytest.raises(NotFoundError):
        catalog.rename_volume(env, "old", "other")


def test_delete(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "v", "me")
    assert catalog.delete_volume(env, "v").id == volume.id
    assert catalog.find_volume(env, "v") is None
    with pytest.raises(NotFoundError):
        catalog.get_volume_by_id(volume.id)
    with pytest.raises(NotFoundError):
        catalog.delete_volume(env, "v")
    # The name is free again, for a new volume with a new id.
    assert catalog.create_volume(env, "v", "me").id != volume.id


# --- heads and history ------------------------------------------------------------------------
def test_advance_head_moves_head_and_stores_trees(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "v", "me")
    tree = Tree.of([a_file("a", b"hello")])
    snapshot = commit_tree(catalog, volume.id, tree)
    head = catalog.head(volume.id)
    assert head == snapshot
    assert head.parent == volume.head
    assert catalog.get_tree(head.root.tree) == tree  # type: ignore[arg-type]
    assert catalog.has_tree(head.root.tree)  # type: ignore[arg-type]
    assert (head.root.size, head.root.files) == (5, 1)


def test_a_stale_expected_head_raises_and_changes_nothing(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "v", "me")
    stale = catalog.head(volume.id)
    winner = commit_tree(catalog, volume.id, Tree.of([a_file("a", b"winner")]))
    tree = Tree.of([a_file("b", b"loser")])
    writer = TreeWriter(catalog)
    root = writer.dir_entry(stale.root, tree)
    loser = SnapshotRecord(SnapshotId(new_id("sn")), volume.id, root, stale.id, time.time(), "t")
    with pytest.raises(HeadMoved):
        catalog.advance_head(stale.id, loser, writer.pending)
    assert catalog.head(volume.id) == winner
    with pytest.raises(NotFoundError):
        catalog.get_snapshot(loser.id)
    assert not catalog.has_tree(root.tree)  # type: ignore[arg-type]


def test_advance_head_of_a_deleted_volume(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "v", "me")
    head = catalog.head(volume.id)
    catalog.delete_volume(env, "v")
    snapshot = SnapshotRecord(
        SnapshotId(new_id("sn")), volume.id, head.root, head.id, time.time(), "t"
    )
    with pytest.raises(NotFoundError):
        catalog.advance_head(head.id, snapshot, {})


def test_history_follows_parents(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "v", "me")
    made = [
        commit_tree(catalog, volume.id, Tree.of([a_file("a", bytes([i]))]), f"c{i}")
        for i in range(3)
    ]
    history = list(catalog.history(volume.id))
    assert [s.id for s in history] == [s.id for s in reversed(made)] + [volume.head]
    assert [s.origin for s in history] == ["c2", "c1", "c0", "create"]
    assert [s.id for s in catalog.history(volume.id, limit=2)] == [made[2].id, made[1].id]


def test_snapshot_record_round_trips_through_json(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "v", "me")
    head = catalog.head(volume.id)
    root = head.root.with_(xattrs=(("user.k", b"\x00\xff"),), mode=0o700)
    record = SnapshotRecord(
        SnapshotId(new_id("sn")),
        volume.id,
        root,
        head.id,
        1.5,
        "o",
        overwrites=[{"path": "a/b", "previous": head.id}],
        changed=[["put", "a/b"]],
        changed_count=1,
    )
    assert SnapshotRecord.from_json(record.to_json()) == record


# --- trees ----------------------------------------------------------------------------------
def test_missing_tree_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFoundError):
        catalog.get_tree(digest_of(b"no such tree"))


def test_a_damaged_tree_is_a_corruption_not_wrong_entries(tmp_path: Path) -> None:
    catalog = LmdbCatalog(tmp_path)
    tree = Tree.of([a_file("a", b"x")])
    digest = tree_digest(tree)
    damaged = encode(Tree.of([a_file("b", b"x")]))  # well-formed, but not what was stored
    with catalog.env.begin(write=True) as txn:
        txn.put(bytes.fromhex(digest), damaged, db=catalog._trees)
    with pytest.raises(CorruptionError):
        catalog.get_tree(digest)


# --- one environment per process; several processes per store --------------------------------
def test_the_same_store_opened_twice_shares_one_lmdb_env(tmp_path: Path) -> None:
    first = LmdbCatalog(tmp_path)
    second = LmdbCatalog(tmp_path)
    assert first.env is second.env and first.runtime is second.runtime
    # Through another spelling of the same path, too.
    os.symlink(tmp_path, tmp_path.parent / (tmp_path.name + "-link"))
    third = LmdbCatalog(tmp_path.parent / (tmp_path.name + "-link"))
    assert third.env is first.env
    volume = first.create_volume("main", "shared", "me")
    assert second.get_volume("main", "shared") == volume
    assert Store.open(tmp_path) is Store.open(str(tmp_path))


def test_two_processes_share_one_store(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys
        from volfs.store import Store
        catalog = Store.open(sys.argv[1]).catalog
        for i in range(20):
            catalog.create_volume("main", f"{sys.argv[2]}-{i}", sys.argv[2])
        print(len(catalog.list_volumes("main")))
    """)
    Store.open(tmp_path)  # this process has the store open as well
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), who],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for who in ("p1", "p2")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    names = {v.name for v in Store.open(tmp_path).catalog.list_volumes("main")}
    assert names == {f"{who}-{i}" for who in ("p1", "p2") for i in range(20)}


# --- runtime tables ---------------------------------------------------------------------------
def a_mount(volume_id: str, path: str) -> MountRecord:
    return MountRecord(
        MountId(new_id("mo")),
        VolumeId(volume_id),
        "v",
        "main",
        path,
        os.getpid(),
        os.getuid(),
        SnapshotId("sn-x"),
        False,
        "/run/x.sock",
        "/ov",
        time.time(),
    )


def test_mounts_add_list_remove(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "v", "me")
    one, two = a_mount(volume.id, "/mnt/one"), a_mount(volume.id, "/mnt/two")
    catalog.register_mount(one)
    catalog.register_mount(two)
    mine = [m for m in catalog.list_mounts() if m.volume_id == volume.id]
    assert sorted(mine, key=lambda m: m.path) == [one, two]
    moved = MountRecord(**{**one.__dict__, "base": "sn-y"})
    catalog.update_mount(moved)
    assert moved in catalog.list_mounts()
    catalog.unregister_mount(one.id)
    assert [m for m in catalog.list_mounts() if m.volume_id == volume.id] == [two]
    catalog.unregister_mount(two.id)
    catalog.unregister_mount(two.id)  # twice is fine


def test_handles_add_list_remove(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "v", "me")
    one, two = a_mount(volume.id, "/a"), a_mount(volume.id, "/b")
    catalog.register_mount(one)
    catalog.register_mount(two)
    for fh in (1, 2, 300):
        catalog.add_handle(
            one.id, fh, {"path": f"f{fh}", "pid": 1, "cmdline": "cat", "write": False}
        )
    catalog.add_handle(two.id, 1, {"path": "other", "pid": 2, "cmdline": "vi", "write": True})
    assert [h["path"] for h in catalog.handles(one.id)] == ["f1", "f2", "f300"]
    assert [h["path"] for h in catalog.handles(two.id)] == ["other"]
    catalog.remove_handle(one.id, 2)
    assert [h["path"] for h in catalog.handles(one.id)] == ["f1", "f300"]
    # Unregistering a mount drops its handles, and only its handles.
    catalog.unregister_mount(one.id)
    assert catalog.handles(one.id) == []
    assert [h["path"] for h in catalog.handles(two.id)] == ["other"]
    catalog.unregister_mount(two.id)
    assert catalog.handles(two.id) == []


def test_unregister_the_last_mount_in_the_table(tmp_path: Path) -> None:
    catalog = LmdbCatalog(tmp_path)
    only = a_mount("vo-x", "/only")
    catalog.register_mount(only)
    for fh in range(3):
        catalog.add_handle(only.id, fh, {"path": str(fh)})
    catalog.unregister_mount(only.id)
    assert catalog.list_mounts() == [] and catalog.handles(only.id) == []
    with catalog.runtime.begin() as txn:
        assert txn.stat(catalog._handles)["entries"] == 0


# --- the interface's gc side, as an embedded catalog answers it --------------------------------
def test_an_embedded_catalog_declares_no_bucket_and_no_other_machines(catalog: Catalog) -> None:
    assert catalog.bucket is None
    assert catalog.live_pins(600.0, prune=True) == []
    with catalog.gc_lock():  # nothing to wait for: it is taken at once
        catalog.check()


def test_delete_snapshots_keeps_heads_and_drops_their_marks(catalog: Catalog, env: str) -> None:
    volume = catalog.create_volume(env, "v", "me")
    first = catalog.head(volume.id)
    second = commit_tree(catalog, volume.id, Tree.of([a_file("a", b"a")]))
    catalog.mark_damaged(first.id, ["a test"])
    gone = catalog.delete_snapshots([first.id, second.id, "sn-nonexistent"])
    assert gone == [first.id]  # the head stays; what does not exist is not reported
    assert catalog.find_snapshot(first.id) is None and first.id not in catalog.damaged()
    assert catalog.head(volume.id).id == second.id
