"""Split (huge) directories on PostgreSQL + S3: the leaves travel through the bucket.

One machine builds a directory past ``SPLIT_ABOVE``; the other, with a cold cache, looks
up one name in it through a mount (the index and one leaf fetched, counted with
``VOLFS_S3_TRACE``), changes it and commits; the first sees the change; gc keeps every
leaf and fsck finds the store clean.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cluster import Cluster
from mounting import mounted, run_volfs

from volfs.api import Volume
from volfs.core.changes import Dir, Put
from volfs.core.tree import SPLIT_ABOVE, Entry, Kind
from volfs.snapshots.commit import commit_changes
from volfs.store import Store

pytestmark = [pytest.mark.mount, pytest.mark.timeout(300)]


def tree_gets(trace: Path) -> int:
    lines = trace.read_text().splitlines() if trace.exists() else []
    return sum(1 for line in lines if line.split()[1] == "GET" and "/trees/" in line)


def test_a_split_directory_is_read_a_leaf_at_a_time_from_the_bucket(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m1, m2 = cluster.machines
    entries = SPLIT_ABOVE + 2000
    run_volfs(m1, "volume", "create", "vol")
    store = Store.open(m1)
    volume = store.catalog.get_volume("main", "vol")
    changes: dict = {("d",): Dir(Entry("d", Kind.DIR, 0o755), None, frozenset({"mode"}))}
    for i in range(entries):
        changes[("d", f"f{i:05d}")] = Put(Entry(f"f{i:05d}", Kind.FILE, 0o644))
    commit_changes(store.catalog, volume.id, lambda head: changes, origin="test")

    trace = tmp_path / "trace"
    monkeypatch.setenv("VOLFS_S3_TRACE", str(trace))
    with mounted(m2, "vol", tmp_path / "r") as r:
        d = r.path / "d"
        os.stat(d)
        before = tree_gets(trace)
        assert os.stat(d / "f03333").st_size == 0
        assert tree_gets(trace) - before <= 2  # the index and the leaf holding the name
        (d / "f03333").write_bytes(b"from the second machine")
        r.commit()
    monkeypatch.delenv("VOLFS_S3_TRACE")

    store = Store.open(m1)
    head = store.catalog.head(volume.id)
    root = store.catalog.get_tree(head.root.tree)  # type: ignore[arg-type]
    entry = root.get("d")
    assert entry is not None and entry.tree is not None and entry.files == entries
    assert store.catalog.get_tree(entry.tree).is_split  # fetched from the bucket: an index
    vol = Volume.from_name("vol", store=store)
    assert b"".join(vol.read_file("d/f03333")) == b"from the second machine"
    assert len(list(vol.listdir("d"))) == entries
    json.loads(run_volfs(m1, "gc", "--grace", "0", "--json").stdout)
    assert run_volfs(m2, "fsck").returncode == 0
    assert len(list(Volume.from_name("vol", store=Store.open(m2)).listdir("d"))) == entries
