"""commit_changes: merge onto the current head, compare-and-swap, retry when the head moved."""

from __future__ import annotations

import pytest

from volfs.blobs import digest_of
from volfs.catalog import Catalog, VolumeRecord
from volfs.core.changes import Changes, Put, Remove, SetMeta, diff
from volfs.core.tree import Entry, Kind, Tree, TreeWriter, dense, lookup, walk
from volfs.errors import ConflictError
from volfs.snapshots.commit import CommitResult, commit_changes
from volfs.store import Store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store.open(tmp_path_factory.mktemp("store"))


@pytest.fixture
def volume(store: Store, request: pytest.FixtureRequest) -> VolumeRecord:
    return store.catalog.create_volume("main", request.node.name[-60:], "test")


def a_file(name: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(name, Kind.FILE, mode, size=len(data), chunks=dense([digest_of(data)]))


def contents(catalog: Catalog, root: Entry) -> dict[str, bytes | int]:
    """path -> content digest of every file below ``root``."""
    return {"/".join(p): e.chunks[0][1] for p, e in walk(catalog, root) if e.kind is Kind.FILE}


def put(
    store: Store,
    volume: VolumeRecord,
    path: str,
    data: bytes,
    *,
    seen: Entry | None = None,
    if_unchanged: bool = False,
) -> CommitResult:
    parts = tuple(path.split("/"))
    return commit_changes(
        store.catalog,
        volume.id,
        lambda root: {parts: Put(a_file(parts[-1], data), seen)},
        origin="test",
        if_unchanged=if_unchanged,
    )


def entry_at(
    store: Store, volume: VolumeRecord, path: str, snapshot: str | None = None
) -> Entry | None:
    catalog = store.catalog
    record = catalog.get_snapshot(snapshot) if snapshot else catalog.head(volume.id)
    return lookup(catalog, record.root, tuple(path.split("/")))


def test_a_commit_moves_the_head(store: Store, volume: VolumeRecord) -> None:
    result = put(store, volume, "a", b"hello")
    assert result.committed and result.attempts == 1 and result.overwrites == []
    head = store.catalog.head(volume.id)
    assert head.id == result.snapshot and head.parent == volume.head and head.origin == "test"
    assert head.changed == [["put", "a"]] and head.changed_count == 1
    assert contents(store.catalog, head.root) == {"a": digest_of(b"hello")}
    assert (head.root.size, head.root.files) == (5, 1)


def test_build_sees_the_current_head(store: Store, volume: VolumeRecord) -> None:
    put(store, volume, "a", b"1")
    roots = []

    def build(root: Entry) -> Changes:
        roots.append(root)
        return {}

    commit_changes(store.catalog, volume.id, build, origin="test")
    assert roots == [store.catalog.head(volume.id).root]


def test_the_commit_retries_when_the_head_moved(store: Store, volume: VolumeRecord) -> None:
    calls = []

    def build(root: Entry) -> Changes:
        calls.append(root)
        if len(calls) == 1:
            # Someone else commits between our read of the head and our swap.
            assert put(store, volume, "theirs", b"theirs").committed
        return {("mine",): Put(a_file("mine", b"mine"))}

    result = commit_changes(store.catalog, volume.id, build, origin="test")
    assert result.attempts == 2 and len(calls) == 2
    assert calls[1] != calls[0]  # the second attempt was built on the new head
    head = store.catalog.head(volume.id)
    assert head.id == result.snapshot
    assert contents(store.catalog, head.root) == {
        "theirs": digest_of(b"theirs"),
        "mine": digest_of(b"mine"),
    }
    assert [s.origin for s in store.catalog.history(volume.id)] == ["test", "test", "create"]


def test_empty_changes_are_a_no_op(store: Store, volume: VolumeRecord) -> None:
    result = commit_changes(store.catalog, volume.id, lambda root: {}, origin="test")
    assert not result.committed and result.snapshot is None and result.attempts == 1
    assert store.catalog.head(volume.id).id == volume.head
    assert len(list(store.catalog.history(volume.id))) == 1


def test_changes_that_change_nothing_are_a_no_op(store: Store, volume: VolumeRecord) -> None:
    put(store, volume, "a", b"same")
    before = store.catalog.head(volume.id)
    seen = entry_at(store, volume, "a")
    result = put(store, volume, "a", b"same", seen=seen)
    assert not result.committed
    assert store.catalog.head(volume.id) == before


def test_overwrites_name_the_path_and_the_previous_snapshot(
    store: Store, volume: VolumeRecord
) -> None:
    put(store, volume, "d/a", b"v1")
    seen = entry_at(store, volume, "d/a")
    theirs = put(store, volume, "d/a", b"theirs")
    result = put(store, volume, "d/a", b"mine", seen=seen)
    assert result.overwrites == ["d/a"]
    record = store.catalog.head(volume.id)
    assert record.overwrites == [{"path": "d/a", "previous": theirs.snapshot}]
    # The lost version stays reachable through the previous snapshot.
    lost = entry_at(store, volume, "d/a", record.overwrites[0]["previous"])
    assert lost is not None and lost.chunks == ((0, digest_of(b"theirs")),)


def test_no_overwrite_is_recorded_over_content_the_writer_saw(
    store: Store, volume: VolumeRecord
) -> None:
    put(store, volume, "a", b"v1")
    seen = entry_at(store, volume, "a")
    put(store, volume, "b", b"elsewhere")
    result = put(store, volume, "a", b"v2", seen=seen)
    assert result.overwrites == [] and store.catalog.head(volume.id).overwrites == []


# --- if_unchanged -----------------------------------------------------------------------------
def refuses(store: Store, volume: VolumeRecord, changes: Changes) -> None:
    before = store.catalog.head(volume.id)
    with pytest.raises(ConflictError) as info:
        commit_changes(
            store.catalog, volume.id, lambda root: changes, origin="test", if_unchanged=True
        )
    assert isinstance(info.value, RuntimeError)
    assert store.catalog.head(volume.id) == before  # nothing moved


def test_if_unchanged_refuses_a_write_over_a_changed_file(
    store: Store, volume: VolumeRecord
) -> None:
    put(store, volume, "d/a", b"v1")
    seen = entry_at(store, volume, "d/a")
    put(store, volume, "d/a", b"theirs")
    refuses(store, volume, {("d", "a"): Put(a_file("a", b"mine"), seen)})


def test_if_unchanged_refuses_a_write_over_a_file_someone_deleted(
    store: Store, volume: VolumeRecord
) -> None:
    put(store, volume, "a", b"v1")
    seen = entry_at(store, volume, "a")
    assert seen is not None
    commit_changes(store.catalog, volume.id, lambda root: {("a",): Remove(seen)}, origin="other")
    refuses(store, volume, {("a",): Put(a_file("a", b"mine"), seen)})


def test_if_unchanged_refuses_creating_a_file_someone_else_created(
    store: Store, volume: VolumeRecord
) -> None:
    put(store, volume, "a", b"theirs")
    refuses(store, volume, {("a",): Put(a_file("a", b"mine"), None)})


def test_if_unchanged_refuses_removing_a_changed_file(store: Store, volume: VolumeRecord) -> None:
    put(store, volume, "a", b"v1")
    seen = entry_at(store, volume, "a")
    assert seen is not None
    put(store, volume, "a", b"theirs")
    refuses(store, volume, {("a",): Remove(seen)})


def test_if_unchanged_refuses_a_chmod_of_a_changed_file(store: Store, volume: VolumeRecord) -> None:
    put(store, volume, "a", b"v1")
    seen = entry_at(store, volume, "a")
    assert seen is not None
    put(store, volume, "a", b"theirs")
    refuses(store, volume, {("a",): SetMeta(seen.with_(mode=0o600), frozenset({"mode"}))})


def test_if_unchanged_commits_when_only_other_paths_changed(
    store: Store, volume: VolumeRecord
) -> None:
    put(store, volume, "a", b"v1")
    seen = entry_at(store, volume, "a")
    put(store, volume, "b", b"theirs")
    result = put(store, volume, "a", b"mine", seen=seen, if_unchanged=True)
    assert result.committed
    assert contents(store.catalog, store.catalog.head(volume.id).root) == {
        "a": digest_of(b"mine"),
        "b": digest_of(b"theirs"),
    }


# --- hard-link groups ---------------------------------------------------------------------------
def test_link_groups_are_fixed_with_trees_only_the_commit_carries(
    store: Store, volume: VolumeRecord
) -> None:
    """A mount's view trees reach the catalog in the commit's own transaction: the merge,
    which reads them to find a group's names, must see them before."""
    catalog = store.catalog
    x = 0x7777_0000_1234
    one = Entry("", Kind.FILE, 0o644, size=3, chunks=dense([digest_of(b"one")]), link=x, nlink=2)

    def view(entries: dict[tuple[str, ...], Entry], writer: TreeWriter) -> Entry:
        dirs: dict[tuple[str, ...], dict[str, Entry]] = {(): {}}
        for path, entry in sorted(entries.items(), key=lambda item: -len(item[0])):
            for i in range(1, len(path)):
                dirs.setdefault(path[:i], {})
            dirs.setdefault(path[:-1], {})[path[-1]] = entry.with_(name=path[-1])
        for path in sorted(dirs, key=len, reverse=True):
            if path:
                dirs[path[:-1]][path[-1]] = writer.dir_entry(
                    Entry(path[-1], Kind.DIR, 0o755), Tree.of(dirs[path])
                )
        return writer.dir_entry(Entry("", Kind.DIR, 0o755), Tree.of(dirs[()]))

    first = TreeWriter(catalog)
    base = view({("a", "p"): one, ("b", "q"): one}, first)
    commit_changes(
        store.catalog,
        volume.id,
        lambda root: diff(first, root, base),
        origin="test",
        extra_trees=first.pending,
    )
    # The next view rewrote p; b/ was never loaded, so q is as it was and not in the diff.
    second = TreeWriter(catalog)
    two = one.with_(size=3, chunks=dense([digest_of(b"two")]))
    new = view({("a", "p"): two, ("b", "q"): one}, second)
    changes = diff(second, base, new)
    assert set(changes) == {(), ("a",), ("a", "p")}
    result = commit_changes(
        store.catalog, volume.id, lambda root: changes, origin="test", extra_trees=second.pending
    )
    assert result.committed and result.overwrites == []
    head = catalog.head(volume.id)
    assert entry_at(store, volume, "b/q") == two.with_(name="q")
    assert contents(catalog, head.root) == {"a/p": digest_of(b"two"), "b/q": digest_of(b"two")}
