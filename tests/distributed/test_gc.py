"""Distributed gc and fsck: mark from PostgreSQL, sweep the bucket, pins, the gc lock.

Each test has its own database and bucket prefix (conftest.py). gc runs with ``--grace 0``
so that everything unreferenced is old enough; what keeps an object then is only what
these tests are about (retention, a pin on the other machine, a commit in flight).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster import BUCKET, Cluster
from mounting import mounted, run_volfs

pytestmark = [pytest.mark.mount, pytest.mark.timeout(300)]


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


def gc(store: Path, *args: str) -> dict:
    return json.loads(run_volfs(store, "gc", "--grace", "0", "--json", *args).stdout)


def put(store: Path, name: str, files: dict[str, bytes]) -> None:
    from volfs import Volume

    with Volume.from_name(name, create_if_missing=True, store=store).batch_upload(
        force=True
    ) as batch:
        for path, data in files.items():
            batch.put_file(io.BytesIO(data), path)


def read(store: Path, name: str, path: str) -> bytes:
    from volfs import Volume

    return b"".join(Volume.from_name(name, store=store).read_file(path))


def test_gc_deletes_what_nothing_reaches_and_keeps_what_retained_snapshots_reach(
    cluster: Cluster, tmp_path: Path
) -> None:
    from volfs import Volume
    from volfs.blobs import digest_of

    m1, m2 = cluster.machines
    keep_a, keep_c, gone_b, abandoned = (os.urandom(50_000 + i) for i in range(4))
    put(m1, "vol", {"a.bin": keep_a, "b.bin": gone_b, "dir/c.bin": keep_c})
    vol = Volume.from_name("vol", store=m1)
    # The abandoned batch's blob is stored, then nothing names it.
    with pytest.raises(ValueError), vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(abandoned), "never.bin")
        raise ValueError("abandon")
    vol.remove_file("b.bin")
    run_volfs(m1, "volume", "retention", "vol", "--keep-last", "1")
    blobs, trees = listing(cluster, "blobs"), listing(cluster, "trees")
    assert {digest_of(d) for d in (keep_a, keep_c, gone_b, abandoned)} <= blobs

    dry = gc(m1, "--dry-run")
    assert (len(dry["snapshots_dropped"]), dry["blobs_deleted"], dry["trees_deleted"]) == (2, 2, 1)
    assert (
        listing(cluster, "blobs") == blobs and listing(cluster, "trees") == trees
    )  # deleted nothing

    report = gc(m1)
    # Dropped: "create" and the put (retention keeps the head, the rm); deleted: b's blob,
    # the abandoned batch's blob and the put's root tree (dir/ is shared with the head).
    assert (
        sorted(d["reason"] for d in report["snapshots_dropped"]) == ["retention: keep last 1"] * 2
    )
    assert (report["blobs_deleted"], report["trees_deleted"]) == (2, 1)
    assert report["bytes_freed"] == len(gone_b) + len(abandoned)
    assert listing(cluster, "blobs") == blobs - {digest_of(gone_b), digest_of(abandoned)}
    assert len(listing(cluster, "trees")) == len(trees) - 1
    # Machine 2 has never read anything: its cache is empty, every byte comes from the bucket.
    assert read(m2, "vol", "a.bin") == keep_a
    assert read(m2, "vol", "dir/c.bin") == keep_c
    assert sorted(
        e.path for e in Volume.from_name("vol", store=m2).listdir("/", recursive=True)
    ) == ["a.bin", "dir", "dir/c.bin"]
    assert gc(m2)["blobs_deleted"] == 0  # nothing left to collect
    assert run_volfs(m2, "fsck").returncode == 0


def test_gc_keeps_what_a_mount_on_the_other_machine_pins(cluster: Cluster, tmp_path: Path) -> None:
    from volfs import Volume
    from volfs.blobs import digest_of

    m1, m2 = cluster.machines
    old = os.urandom(100_000)
    put(m1, "vol", {"old.bin": old})
    run_volfs(m1, "volume", "retention", "vol", "--keep-last", "1")
    with mounted(m2, "vol", tmp_path / "b") as b:  # based on the snapshot holding old.bin
        Volume.from_name("vol", store=m1).remove_file("old.bin")  # machine 1 moves on
        report = gc(m1)
        assert report["pinned_snapshots"] == 1
        assert [d["reason"] for d in report["snapshots_dropped"]] == [
            "retention: keep last 1"
        ]  # "create"
        assert report["blobs_deleted"] == 0
        assert digest_of(old) in listing(cluster, "blobs")
        assert (b.path / "old.bin").read_bytes() == old  # fetched now, from the bucket
    # Unmounted: its pin is gone, and so is what only it needed.
    report = gc(m1)
    assert report["pinned_snapshots"] == 0
    assert (len(report["snapshots_dropped"]), report["blobs_deleted"]) == (1, 1)
    assert digest_of(old) not in listing(cluster, "blobs")


def _advisory_waiters(meta_url: str) -> int:
    import psycopg

    with psycopg.connect(meta_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype='advisory' AND NOT granted "
            "AND database=(SELECT oid FROM pg_database WHERE datname=current_database())"
        ).fetchone()[0]


def test_gc_waits_for_a_commit_in_flight_that_reuses_an_unreferenced_blob(
    cluster: Cluster, tmp_path: Path
) -> None:
    from volfs import Volume
    from volfs.blobs import digest_of
    from volfs.store import Store

    m1, m2 = cluster.machines
    content = os.urandom(80_000)
    put(m1, "vol", {"x.bin": content})
    Volume.from_name("vol", store=m1).remove_file("x.bin")
    run_volfs(m1, "volume", "retention", "vol", "--keep-last", "1")
    digest = digest_of(content)  # in the bucket, referenced by no snapshot retention keeps

    store2 = Store.open(m2)
    with store2.catalog.lease("a commit in flight on machine 2"):
        # The commit's dedup check: the blob is in the bucket, so it will not be uploaded again.
        assert store2.blobs.has(digest)
        env = {**os.environ, "VOLFS_STORE": str(m1)}
        sweeper = subprocess.Popen(
            [sys.executable, "-m", "volfs", "gc", "--grace", "0", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            deadline = time.monotonic() + 60
            while sweeper.poll() is None and _advisory_waiters(cluster.meta_url) == 0:
                assert time.monotonic() < deadline, "gc neither waited for the lock nor finished"
                time.sleep(0.05)
            assert sweeper.poll() is None, "gc did not wait for the commit in flight"
            # The commit lands, naming the blob it found (no upload).
            put(m2, "vol", {"again.bin": content})
        except BaseException:
            sweeper.kill()
            sweeper.wait()
            raise
    out, err = sweeper.communicate(timeout=120)
    assert sweeper.returncode == 0, err
    report = json.loads(out)
    assert report["blobs_deleted"] == 0
    assert digest in listing(cluster, "blobs")
    assert run_volfs(m1, "fsck").returncode == 0
    # A third machine, with an empty cache, reads it from the bucket.
    m3 = tmp_path / "machine3"
    run_volfs(
        m3,
        "store",
        "init",
        "--meta",
        cluster.meta_url,
        "--blobs",
        f"s3://{BUCKET}/{cluster.prefix}",
        "--endpoint",
        os.environ["VOLFS_S3_ENDPOINT"],
        "--cache-size",
        "1G",
    )
    assert read(m3, "vol", "again.bin") == content


def test_fsck_is_clean_then_names_volume_snapshot_and_path_of_a_blob_deleted_behind_its_back(
    cluster: Cluster,
) -> None:
    from volfs.blobs import digest_of

    m1, m2 = cluster.machines
    content = os.urandom(30_000)
    put(m1, "vol", {"d/f.bin": content, "other.bin": b"fine"})
    clean = run_volfs(m2, "fsck")
    assert "No damage found." in clean.stdout
    cluster.bucket_client().delete_object(
        Bucket=BUCKET, Key=cluster.key("blobs", digest_of(content))
    )
    head = json.loads(run_volfs(m2, "volume", "info", "vol", "--json").stdout)["head"]
    damaged = run_volfs(m2, "fsck", check=False)
    assert damaged.returncode == 8, damaged.stdout + damaged.stderr
    assert f"DAMAGE blob-missing {digest_of(content)}" in damaged.stdout
    assert f"vol:/d/f.bin  in head {head}" in damaged.stdout
    report = json.loads(run_volfs(m2, "fsck", "--json", check=False).stdout)
    assert [
        (a["volume"], a["snapshot"], a["path"]) for p in report["problems"] for a in p["affected"]
    ] == [("vol", head, "d/f.bin")]


def test_status_says_when_a_mount_is_behind_the_head(cluster: Cluster, tmp_path: Path) -> None:
    from volfs import control

    m1, m2 = cluster.machines
    run_volfs(m1, "volume", "create", "vol")
    with mounted(m1, "vol", tmp_path / "a") as a, mounted(m2, "vol", tmp_path / "b") as b:

        def behind() -> dict[str, bool]:
            # Asked of these two mounts only (`volfs status` also waits for other sessions' mounts).
            return {
                m.path.name: control.call_mount(str(m.path), "status", timeout=10)["behind"]
                for m in (a, b)
            }

        assert behind() == {"a": False, "b": False}
        (a.path / "f").write_text("from machine 1")
        a.commit()
        assert behind() == {"a": False, "b": True}  # a's own commit landed on its base
        b.reload()
        assert behind() == {"a": False, "b": False}


def test_gc_keeps_what_a_mount_on_the_other_machine_committed_while_others_removed_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    from volfs import Volume
    from volfs.blobs import digest_of

    m1, m2 = cluster.machines
    run_volfs(m1, "volume", "create", "vol")
    run_volfs(m1, "volume", "retention", "vol", "--keep-last", "1")
    content = os.urandom(70_000)
    with mounted(m2, "vol", tmp_path / "b") as b:
        (b.path / "d").mkdir()
        (b.path / "d" / "f.bin").write_bytes(content)
        b.commit()  # b's view holds d/; its base is still the empty "create" snapshot
        Volume.from_name("vol", store=m1).remove_file("d", recursive=True)  # machine 1 removes it
        report = gc(m1)
        # Only b's pinned committed view still names d/f.bin: the snapshot b committed is
        # dropped by retention, and b never reloaded.
        assert [d["reason"] for d in report["snapshots_dropped"]] == ["retention: keep last 1"]
        assert report["blobs_deleted"] == 0
        assert digest_of(content) in listing(cluster, "blobs")
        # b renames what it still sees: the commit names the blob without uploading it again.
        (b.path / "d").rename(b.path / "e")
        b.commit()
    assert read(m1, "vol", "e/f.bin") == content
    assert run_volfs(m1, "fsck").returncode == 0
