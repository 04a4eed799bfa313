"""``volfs volume fork`` on PostgreSQL + S3: two rows, no object written, and gc on either
machine keeps what the fork needs once its source is deleted.

Counted, not timed: PostgreSQL's rows per table and the bucket's listing before and after,
and the S3 requests the fork makes (``VOLFS_S3_TRACE``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from cluster import BUCKET, Cluster
from mounting import run_volfs

pytestmark = [pytest.mark.timeout(600)]


def listing(cluster: Cluster, kind: str) -> set[str]:
    client = cluster.bucket_client()
    found = set()
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{cluster.prefix}/{kind}/"
    ):
        for obj in page.get("Contents", []):
            fan, tail = obj["Key"].rsplit("/", 2)[-2:]
            found.add(fan + tail)
    return found


def rows(cluster: Cluster) -> dict[str, int]:
    import psycopg

    with psycopg.connect(cluster.meta_url, autocommit=True, connect_timeout=10) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'volfs_%'"
            ).fetchall()
        ]
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def files(store: Path, name: str) -> dict[str, bytes]:
    from volfs import Volume

    vol = Volume.from_name(name, store=store)
    return {
        e.path: b"".join(vol.read_file(e.path))
        for e in vol.listdir("/", recursive=True)
        if e.type.name == "FILE"
    }


def test_fork_of_a_10000_file_volume_on_postgres_and_s3(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from volfs import Volume
    from volfs.blobs import digest_of
    from volfs.store import Store

    m1, m2 = cluster.machines
    # 1,000 distinct contents (a small PUT costs Ceph ~4 ms here); the trees name 10,000.
    content = {f"d{i // 100:02d}/f{i % 100:02d}": b"file %d" % (i % 1000) for i in range(10_000)}
    src = Volume.from_name("src", create_if_missing=True, store=m1)
    with src.batch_upload() as batch:
        for path, data in content.items():
            batch.put_file(io.BytesIO(data), path)
    with src.batch_upload(force=True) as batch:  # only the source's head names this one
        batch.put_file(io.BytesIO(b"after the fork point" * 1000), "later.bin")
    point = src.history()[-2].id  # the 10,000 files, before later.bin
    root = Store.open(m1).catalog.get_snapshot(point).root.tree
    assert root is not None
    before_rows = rows(cluster)
    blobs, trees = listing(cluster, "blobs"), listing(cluster, "trees")
    assert len(blobs) == 1001

    trace = tmp_path / "s3-trace"
    monkeypatch.setenv("VOLFS_S3_TRACE", str(trace))
    out = json.loads(
        run_volfs(m2, "volume", "fork", "src", "dst", "--snapshot", point, "--json").stdout
    )
    monkeypatch.delenv("VOLFS_S3_TRACE")
    assert out["source_snapshot"] == point and out["name"] == "dst"
    after_rows = rows(cluster)
    grown = {t: after_rows[t] - before_rows.get(t, 0) for t in after_rows}
    assert {t: n for t, n in grown.items() if n} == {"volfs_volumes": 1, "volfs_snapshots": 1}
    requests = trace.read_text().splitlines() if trace.exists() else []
    # At most one request: reading the root tree, to check it is still there.
    assert [line.split()[1:] for line in requests] in ([], [["GET", cluster.key("trees", root)]])
    assert listing(cluster, "blobs") == blobs and listing(cluster, "trees") == trees
    history = Volume.from_name("dst", store=m1).history()
    assert [(h.parent, h.origin) for h in history] == [(None, f"fork of src at {point}")]

    # A commit to the fork leaves the source unchanged.
    source_head = src.info().head
    fork = Volume.from_name("dst", store=m2)
    with fork.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"only in the fork"), "d00/f00")
    assert src.info().head == source_head
    assert b"".join(src.read_file("d00/f00")) == b"file 0"

    # Deleting the source, then gc: the blob only the source's head named goes, the
    # fork's stay; fsck is clean on both machines and the fork reads back.
    Volume.objects.delete("src", store=m1)
    report = json.loads(run_volfs(m1, "gc", "--grace", "0", "--json").stdout)
    assert report["blobs_deleted"] == 1
    assert listing(cluster, "blobs") == (blobs - {digest_of(b"after the fork point" * 1000)}) | {
        digest_of(b"only in the fork")
    }
    assert run_volfs(m1, "fsck").returncode == 0
    assert run_volfs(m2, "fsck").returncode == 0
    expected = {**content, "d00/f00": b"only in the fork"}
    assert files(m1, "dst") == expected


def test_fork_refuses_bad_input_on_postgres(cluster: Cluster) -> None:
    from volfs import Volume
    from volfs.errors import AlreadyExistsError, NotFoundError
    from volfs.store import Store

    m1, m2 = cluster.machines
    Volume.objects.create("bad-src", store=m1)
    src = Volume.from_name("bad-src", store=m1)
    Volume.objects.create("taken", store=m1)
    refused = run_volfs(m2, "volume", "fork", "bad-src", "taken", check=False)
    assert refused.returncode == 4 and refused.stderr.count("\n") == 1
    assert "already exists" in refused.stderr
    refused = run_volfs(m2, "volume", "fork", "no-such", "x", check=False)
    assert refused.returncode == 3 and refused.stderr.startswith("Error: ")
    catalog = Store.open(m2).catalog
    with pytest.raises(AlreadyExistsError):
        catalog.fork_volume("main", "taken", "test", src.info().head, "fork")
    with pytest.raises(NotFoundError):  # dropped by gc since the caller read it
        catalog.fork_volume("main", "x", "test", "sn-doesnotexist00", "fork")
    assert sorted(v.name for v in catalog.list_volumes()) == ["bad-src", "taken"]
