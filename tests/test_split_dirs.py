"""Huge directories are stored split: an index block over leaves (format 3, ``VX3``).

What a filesystem of millions of entries per directory must give (ext4's htree does it
with hashed blocks): a lookup and a change in one cost a few blocks, not the directory.
Here that is counted in tree blocks and bytes read and written, never timed.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from conftest_campaign import FULL
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from mounting import Mount, mounted

from volfs import control
from volfs.api import Volume
from volfs.blobs import put_stream
from volfs.catalog import close_environments
from volfs.core import tree as tree_module
from volfs.core.changes import Dir, Put, Remove
from volfs.core.tree import (
    MAGIC_INDEX,
    Entry,
    Kind,
    MemoryTreeStore,
    Tree,
    TreeWriter,
    decode,
    dense,
)
from volfs.maintenance.fsck import fsck
from volfs.maintenance.gc import collect
from volfs.mount.inodes import ROOT_INO
from volfs.mount.listing import Listing
from volfs.mount.overlay import Overlay
from volfs.snapshots.commit import commit_changes
from volfs.store import Store


@contextmanager
def _small_split() -> Iterator[None]:
    """Split past 6 entries into leaves of ~3: every shape of split tree, at small sizes."""
    with (
        mock.patch.object(tree_module, "SPLIT_ABOVE", 6),
        mock.patch.object(tree_module, "LEAF_TARGET", 3),
    ):
        yield


def _file(name: str, size: int) -> Entry:
    return Entry(name, Kind.FILE, 0o644, size=size)


names = st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(names, st.integers(0, 9), max_size=40),
    st.dictionaries(names, st.none() | st.integers(0, 9), max_size=12),
)
def test_a_split_directory_is_the_same_however_it_was_built(
    before: dict[str, int], changes: dict[str, int | None]
) -> None:
    """A directory changed in place (only the leaves the changes touch rewritten) has the
    digest and leaves of the same directory built from nothing: equal content, equal name."""
    after = {**before, **{n: s for n, s in changes.items() if s is not None}}
    for name, size in changes.items():
        if size is None:
            after.pop(name, None)
    with _small_split():
        store = MemoryTreeStore()
        writer = TreeWriter(store)
        old = writer.put_tree(Tree.of([_file(n, s) for n, s in before.items()]))
        store.absorb(writer)
        writer = TreeWriter(store)
        edits = {n: (None if s is None else _file(n, s)) for n, s in changes.items()}
        changed = writer.put_tree(store.get_tree(old).updated(edits, writer))
        store.absorb(writer)
        fresh = TreeWriter(MemoryTreeStore())
        built = fresh.put_tree(Tree.of([_file(n, s) for n, s in after.items()]))
        assert changed == built
        tree = store.get_tree(changed)
        assert {e.name: e.size for e in tree.entries} == after
        assert tree.totals() == (sum(after.values()), len(after), 0)
        assert tree.is_split == (len(after) > 6)
        if tree.leaves is not None:
            # Every leaf but the last ends on a boundary name, and none is empty.
            for i, ref in enumerate(tree.leaves):
                leaf = store.get_tree(ref.digest)
                assert len(leaf) == ref.count > 0 and leaf.entries[0].name == ref.first
                if i < len(tree.leaves) - 1:
                    assert tree_module._is_boundary(os.fsencode(leaf.entries[-1].name))
            for name in list(after)[:5]:
                assert tree.get(name) == _file(name, after[name])


def _huge_volume(store: Store, entries: int) -> str:
    """A volume whose directory ``d`` holds ``entries`` files (built straight through commit)."""
    volume = store.catalog.create_volume("main", "huge", "test")
    digests, size = put_stream(store.blobs, io.BytesIO(b"x" * 100))
    changes: dict = {("d",): Dir(Entry("d", Kind.DIR, 0o755), None, frozenset({"mode"}))}
    for i in range(entries):
        name = f"f{i:07d}"
        changes[("d", name)] = Put(Entry(name, Kind.FILE, 0o644, size=size, chunks=dense(digests)))
    commit_changes(store.catalog, volume.id, lambda head: changes, origin="test")
    return volume.id


@pytest.mark.timeout(900 if FULL else 240)
def test_one_change_in_a_huge_directory_reads_and_writes_a_few_blocks(store_path: Path) -> None:
    entries = 1_000_000 if FULL else 100_000
    volume_id = _huge_volume(Store.open(store_path), entries)
    store = Store.open(store_path)
    root = store.catalog.head(volume_id).root
    assert root.tree is not None
    d = store.catalog.get_tree(root.tree).get("d")
    assert d is not None and d.tree is not None and d.files == entries
    index = store.catalog.get_tree_raw(d.tree)
    assert index is not None and index[:4] == MAGIC_INDEX
    leaves = decode(index).leaves
    assert leaves is not None and len(leaves) > 10
    whole = len(index) + sum(len(store.catalog.get_tree_raw(ref.digest) or b"") for ref in leaves)

    store = Store.open(store_path)  # a cold cache: every block the commit needs is read
    catalog = store.catalog
    catalog._tree_cache.clear()  # type: ignore[attr-defined]
    read, read_bytes = catalog.stats["trees_read"], catalog.stats["tree_bytes_read"]
    written = catalog.stats["trees_written"]
    new = Entry("new-file", Kind.FILE, 0o644)
    commit_changes(
        catalog,
        volume_id,
        lambda head: {
            ("d", "new-file"): Put(new),
            ("d", "f0000007"): Remove(_file("f0000007", 100)),
        },
        origin="test",
    )
    # The root, the index, and the leaf each name falls in (and the next one at most).
    assert catalog.stats["trees_read"] - read <= 6
    assert catalog.stats["tree_bytes_read"] - read_bytes < whole / 20
    assert catalog.stats["trees_written"] - written <= 6

    vol = Volume.from_name("huge", store=store)
    listed = {e.path for e in vol.listdir("d")}
    assert len(listed) == entries and "d/new-file" in listed and "d/f0000007" not in listed


def test_a_mount_of_a_split_directory_lists_changes_and_commits_it(
    store_path: Path, tmp_path: Path
) -> None:
    entries = 6000  # past SPLIT_ABOVE (4096): a few leaves
    _huge_volume(Store.open(store_path), entries)
    with mounted(store_path, "huge", tmp_path / "m") as m:
        big = m.path / "d"
        assert (big / "f0003000").read_bytes() == b"x" * 100
        assert len(os.listdir(big)) == entries
        (big / "new").write_bytes(b"new")
        (big / "f0000010").unlink()
        m.commit()
    store = Store.open(store_path)
    vol = Volume.from_name("huge", store=store)
    head = store.catalog.get_tree(store.catalog.head(vol.object_id).root.tree)  # type: ignore[arg-type]
    d = head.get("d")
    assert d is not None and d.tree is not None and d.files == entries
    assert (store.catalog.get_tree_raw(d.tree) or b"")[:4] == MAGIC_INDEX
    # gc keeps every leaf of every kept snapshot: fsck finds nothing missing, all reads.
    collect(store, grace=0)
    report = fsck(store)
    assert report.clean, report.problems
    listed = {e.path for e in vol.listdir("d")}
    assert len(listed) == entries and "d/new" in listed and "d/f0000010" not in listed
    assert b"".join(vol.read_file("d/f0005999")) == b"x" * 100


def test_fsck_names_the_directory_of_a_missing_leaf(store_path: Path) -> None:
    store = Store.open(store_path)
    volume_id = _huge_volume(store, 5000)
    root = store.catalog.head(volume_id).root
    d = store.catalog.get_tree(root.tree).get("d")  # type: ignore[arg-type]
    assert d is not None and d.tree is not None
    leaves = decode(store.catalog.get_tree_raw(d.tree) or b"").leaves
    assert leaves
    with store.catalog._write() as txn:  # type: ignore[attr-defined]
        txn.delete(bytes.fromhex(leaves[1].digest), db=store.catalog._trees)  # type: ignore[attr-defined]
    report = fsck(Store.open(store_path))
    assert not report.clean
    assert any(p.kind == "tree-missing" and p.subject == leaves[1].digest for p in report.problems)
    assert any("/d" in str(p.affected) or "'d'" in str(p.affected) for p in report.problems)


def _status(m: Mount) -> dict:
    return control.call(control.mount_info(str(m.path)).socket, "status")


def test_a_mount_looks_up_and_commits_in_a_huge_directory_a_leaf_at_a_time(
    store_path: Path, tmp_path: Path
) -> None:
    """A lookup in a split directory makes a node for the name and reads one leaf; a
    commit of a changed and a new file reads and writes a few blocks; neither loads the
    directory (a node per entry, as a directory of one block does)."""
    entries = 20_000
    _huge_volume(Store.open(store_path), entries)
    with (
        mounted(store_path, "huge", tmp_path / "m") as m,
        mounted(store_path, "huge", tmp_path / "other") as other,
    ):
        big = m.path / "d"
        os.stat(big)
        before = _status(m)
        assert (big / "f0012345").read_bytes() == b"x" * 100
        looked = _status(m)
        assert looked["nodes"] - before["nodes"] <= 2
        assert looked["catalog"]["trees_read"] - before["catalog"]["trees_read"] <= 2

        (big / "f0012345").write_bytes(b"changed")
        (big / "brand-new").write_bytes(b"new")
        os.unlink(big / "f0000003")
        m.commit()
        after = _status(m)
        assert after["nodes"] - before["nodes"] <= 6
        assert after["catalog"]["trees_read"] - before["catalog"]["trees_read"] <= 8
        assert after["catalog"]["trees_written"] - before["catalog"]["trees_written"] <= 8

        other.reload()
        assert (other.path / "d" / "f0012345").read_bytes() == b"changed"
        assert (other.path / "d" / "brand-new").read_bytes() == b"new"
        assert not (other.path / "d" / "f0000003").exists()
        # readdir streams the leaves: every name once, in the mount that changed it too.
        for mount in (m, other):
            names = os.listdir(mount.path / "d")
            assert len(names) == len(set(names)) == entries
            assert "brand-new" in names and "f0000003" not in names
    vol = Volume.from_name("huge", store=Store.open(store_path))
    assert len(list(vol.listdir("d"))) == entries
    assert fsck(Store.open(store_path)).clean


# -- a model of one huge directory in two mounts ---------------------------------------------------
NAMES = [f"n{i}" for i in range(14)]


class SplitDirMachine(RuleBasedStateMachine):
    """Two in-process mounts of a volume whose directory ``d`` is split at these small sizes:
    ``a`` writes, removes, renames, lists and commits; ``b`` reloads and reads. Every view
    and the head's tree must match the model (a dict of name -> content)."""

    def __init__(self) -> None:
        super().__init__()
        self.store = Store.open(Path(_MACHINE_ROOT[0]) / f"s{len(_MACHINE_ROOT)}")
        _MACHINE_ROOT.append("")
        vol = Volume.objects.create("v", store=self.store)
        initial = {name: name.encode() for name in NAMES[:9]}
        with Volume.from_name("v", store=self.store).batch_upload() as batch:
            for name, data in initial.items():
                batch.put_file(io.BytesIO(data), f"d/{name}")
        self.volume = self.store.catalog.get_volume("main", "v")
        del vol
        self.a, self.b = self._overlay("a"), self._overlay("b")
        self.view_a = dict(initial)
        self.head = dict(initial)
        self.view_b = dict(initial)

    def _overlay(self, name: str) -> Overlay:
        path = self.store.overlays_dir / f"mo-{name}"
        path.mkdir()
        return Overlay(self.store, self.volume, self.store.catalog.head(self.volume.id), path)

    def _d(self, overlay: Overlay) -> int:
        return overlay.lookup(ROOT_INO, "d").ino

    def teardown(self) -> None:
        self.a.close()
        self.b.close()
        close_environments(self.store.root)  # an example's LMDB maps: hundreds per run

    @rule(name=st.sampled_from(NAMES), data=st.binary(max_size=8))
    def write(self, name: str, data: bytes) -> None:
        d = self._d(self.a)
        try:
            node = self.a.lookup(d, name)
            self.a.open(node, write=True, truncate=True)
        except FileNotFoundError:
            node = self.a.create(d, name, 0o644, 0, 0)
            self.a.open(node, write=True, truncate=False)
        self.a.write(node, 0, data)
        self.a.release(node, write=True)
        self.view_a[name] = data

    @rule(name=st.sampled_from(NAMES))
    def unlink(self, name: str) -> None:
        try:
            self.a.unlink(self._d(self.a), name)
        except FileNotFoundError:
            assert name not in self.view_a
            return
        del self.view_a[name]

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def rename(self, src: str, dst: str) -> None:
        d = self._d(self.a)
        try:
            self.a.rename(d, src, d, dst, 0)
        except FileNotFoundError:
            assert src not in self.view_a
            return
        self.view_a[dst] = self.view_a.pop(src)

    @rule()
    def commit(self) -> None:
        pending = self.a.build_view(self.a.hash_files(self.a.prepare_commit()))
        self.a.publish(pending)
        self.a.finish_commit(pending)
        self.head = dict(self.view_a)
        root = self.store.catalog.head(self.volume.id).root
        d = self.store.catalog.get_tree(root.tree).get("d")  # type: ignore[arg-type]
        assert d is not None and d.tree is not None
        tree = self.store.catalog.get_tree(d.tree)
        raw = self.store.catalog.get_tree_raw(d.tree) or b""
        assert (raw[:4] == MAGIC_INDEX) == (len(self.head) > 6)
        got = {
            e.name: b"".join(Volume.from_name("v", store=self.store).read_file(f"d/{e.name}"))
            for e in tree.entries
        }
        assert got == self.head

    @rule()
    def reload(self) -> None:
        self.b.rebase(self.store.catalog.head(self.volume.id))
        self.view_b = dict(self.head)

    @rule()
    def forget(self) -> None:
        """The kernel forgot every name: the mounts release what they can."""
        for overlay in (self.a, self.b):
            for node in overlay.table:
                if node.lookups:
                    overlay.forget(node.ino, node.lookups)
            overlay.release_forgotten(force=True)

    @rule(which=st.sampled_from("ab"), name=st.sampled_from(NAMES))
    def read(self, which: str, name: str) -> None:
        overlay, view = (self.a, self.view_a) if which == "a" else (self.b, self.view_b)
        try:
            node = overlay.lookup(self._d(overlay), name)
        except FileNotFoundError:
            assert name not in view
            return
        assert overlay.read(node, 0, 100) == view[name]

    @rule(which=st.sampled_from("ab"), middle=st.integers(0, 20))
    def list_streamed(self, which: str, middle: int) -> None:
        overlay, view = (self.a, self.view_a) if which == "a" else (self.b, self.view_b)
        children = overlay.children(overlay.node(self._d(overlay)))
        if isinstance(children, Listing) and not children.complete:
            cursor = children.cursor()
            listed = list(cursor.names_from(0))
            assert sorted(name for _, name, _ in listed) == sorted(view)
            if middle < len(listed):  # a readdir that resumes where the last one stopped
                offset = listed[middle - 1][0] if middle else 0
                assert list(cursor.names_from(offset)) == listed[middle:]

    @rule(which=st.sampled_from("ab"))
    def list_whole(self, which: str) -> None:
        overlay, view = (self.a, self.view_a) if which == "a" else (self.b, self.view_b)
        assert sorted(overlay.children(overlay.node(self._d(overlay)))) == sorted(view)


_MACHINE_ROOT: list[str] = []


@pytest.mark.timeout(300)
def test_two_mounts_of_a_split_directory_follow_the_model(tmp_path: Path) -> None:
    _MACHINE_ROOT[:] = [str(tmp_path)]
    with _small_split():
        run_state_machine_as_test(
            SplitDirMachine,
            settings=settings(max_examples=100, stateful_step_count=30, deadline=None),
        )
