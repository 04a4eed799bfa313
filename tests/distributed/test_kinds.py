"""Format 2 in distributed mode: sparse files, special entries and hard links written on one
machine are read on the other; gc keeps the blobs of sparse chunks; volumes of format 1
in PostgreSQL read as the current format once a process of it connects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cluster import BUCKET, Cluster
from mounting import run_volfs

from volfs.catalog import FORMAT_VERSION

pytestmark = [pytest.mark.timeout(300)]


def in_bucket(cluster: Cluster, kind: str, digest: str) -> bool:
    client = cluster.bucket_client()
    found = client.list_objects_v2(Bucket=BUCKET, Prefix=cluster.key(kind, digest))
    return bool(found.get("Contents"))


def test_sparse_files_special_entries_and_links_cross_machines_and_survive_gc(
    cluster: Cluster, tmp_path: Path
) -> None:
    from volfs import FileEntryType, Volume
    from volfs.config import CHUNK_SIZE
    from volfs.core.changes import Put
    from volfs.core.tree import Entry, Kind
    from volfs.snapshots.commit import commit_changes
    from volfs.store import Store

    m1, m2 = cluster.machines
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"linked bytes")
    os.link(src / "a", src / "b")
    os.mkfifo(src / "pipe")
    vol = Volume.from_name("vol", create_if_missing=True, store=m1)
    with vol.batch_upload() as batch:
        batch.put_directory(src, "/up")
    store = Store.open(m1)
    with store.catalog.lease("test"):
        blob = store.blobs.put(b"at 16 MiB")  # durable in the bucket when it returns
        sparse = Entry("sparse", Kind.FILE, 0o644, size=3 * CHUNK_SIZE, chunks=((2, blob),))
        commit_changes(
            store.catalog, vol.object_id, lambda root: {("sparse",): Put(sparse)}, origin="test"
        )
    report = json.loads(run_volfs(m2, "gc", "--grace", "0", "--json").stdout)
    assert report["blobs_deleted"] == 0
    assert in_bucket(cluster, "blobs", blob)

    other = Volume.from_name("vol", store=m2)
    listed = {e.path: e for e in other.listdir("up")}
    assert listed["up/pipe"].type is FileEntryType.FIFO
    assert listed["up/a"].link == listed["up/b"].link != 0 and listed["up/a"].nlink == 2
    data = b"".join(other.read_file("sparse"))
    assert data == bytes(2 * CHUNK_SIZE) + b"at 16 MiB" + bytes(CHUNK_SIZE - 9)
    fsck = run_volfs(m2, "fsck", "--json")
    assert json.loads(fsck.stdout)["clean"], fsck.stdout


def test_format_1_volumes_in_postgresql_read_as_the_current_format(cluster: Cluster) -> None:
    import psycopg

    m1, _ = cluster.machines
    run_volfs(m1, "volume", "create", "old")
    with psycopg.connect(cluster.meta_url, autocommit=True) as conn:
        conn.execute("UPDATE volfs_volumes SET format_version = 1")
    info = json.loads(run_volfs(m1, "volume", "info", "old", "--json").stdout)  # a new process
    assert info["format_version"] == FORMAT_VERSION == 3
    with psycopg.connect(cluster.meta_url, autocommit=True) as conn:
        rows = conn.execute("SELECT format_version FROM volfs_volumes").fetchall()
    assert rows == [(FORMAT_VERSION,)]
