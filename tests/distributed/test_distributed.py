"""Two machines, one PostgreSQL, one bucket: sharing, concurrency, faults, laziness.

Each test has its own database and bucket prefix (conftest.py). Mounts are real FUSE
mounts of either machine's store (tests/mounting.py works with any store directory).
"""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import pytest
from cluster import Cluster, Services
from mounting import mounted, run_volfs

pytestmark = [pytest.mark.mount, pytest.mark.timeout(300)]


def volume_log(store: Path, name: str) -> list[dict]:
    return json.loads(run_volfs(store, "volume", "log", name, "--json").stdout)


def head_of(store: Path, name: str) -> str:
    return json.loads(run_volfs(store, "volume", "info", name, "--json").stdout)["head"]


def test_volume_created_on_one_machine_is_listed_on_the_other(cluster: Cluster) -> None:
    m1, m2 = cluster.machines
    run_volfs(m1, "volume", "create", "shared")
    listed = json.loads(run_volfs(m2, "volume", "list", "--json").stdout)
    assert [v["name"] for v in listed] == ["shared"]
    info = json.loads(run_volfs(m2, "store", "info", "--json").stdout)
    assert info["mode"] == "distributed" and info["volumes"] == 1


def test_file_committed_on_one_machine_is_seen_after_reload_on_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    m1, m2 = cluster.machines
    run_volfs(m1, "volume", "create", "vol")
    content = os.urandom(20 * 1024 * 1024 + 12345)  # three chunks
    with mounted(m1, "vol", tmp_path / "a") as a, mounted(m2, "vol", tmp_path / "b") as b:
        (a.path / "dir").mkdir()
        (a.path / "dir" / "big.bin").write_bytes(content)
        (a.path / "small.txt").write_text("hello from machine 1")
        a.commit()
        assert not (b.path / "small.txt").exists()
        b.reload()
        assert (b.path / "small.txt").read_text() == "hello from machine 1"
        assert (b.path / "dir" / "big.bin").read_bytes() == content


def test_four_mounts_on_two_machines_commit_disjoint_files_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    m1, m2 = cluster.machines
    run_volfs(m1, "volume", "create", "vol")
    stores = [m1, m1, m2, m2]
    with (
        mounted(stores[0], "vol", tmp_path / "m0") as w0,
        mounted(stores[1], "vol", tmp_path / "m1") as w1,
        mounted(stores[2], "vol", tmp_path / "m2") as w2,
        mounted(stores[3], "vol", tmp_path / "m3") as w3,
    ):
        mounts = [w0, w1, w2, w3]
        for i, m in enumerate(mounts):
            (m.path / f"w{i}").mkdir()
            for j in range(20):
                (m.path / f"w{i}" / f"f{j}").write_text(f"writer {i} file {j}")
            (m.path / f"top{i}").write_text(str(i))
        errors: list[BaseException] = []

        def commit(m) -> None:  # type: ignore[no-untyped-def]
            try:
                m.commit()
            except AssertionError as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=commit, args=(m,)) for m in mounts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    with mounted(m2, "vol", tmp_path / "check") as check:
        for i in range(4):
            assert (check.path / f"top{i}").read_text() == str(i)
            assert sorted(os.listdir(check.path / f"w{i}")) == sorted(f"f{j}" for j in range(20))
            assert (check.path / f"w{i}" / "f7").read_text() == f"writer {i} file 7"
    assert len(volume_log(m1, "vol")) == 5  # create + four commits


def test_same_file_last_writer_wins_and_history_records_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    m1, m2 = cluster.machines
    run_volfs(m1, "volume", "create", "vol")
    with mounted(m1, "vol", tmp_path / "a") as a, mounted(m2, "vol", tmp_path / "b") as b:
        (a.path / "f.txt").write_text("first")
        (b.path / "f.txt").write_text("second")
        a.commit()
        b.commit()
        a.reload()
        assert (a.path / "f.txt").read_text() == "second"
    log = volume_log(m2, "vol")
    newest = log[0]
    assert any(o["path"] == "f.txt" for o in newest["overwrites"]), newest
    assert log[1]["id"] == newest["overwrites"][0]["previous"]  # the lost version stays reachable


def test_commit_fails_cleanly_while_s3_is_down_and_the_retry_succeeds(
    cluster: Cluster, services: Services, tmp_path: Path
) -> None:
    m1, m2 = cluster.machines
    run_volfs(m1, "volume", "create", "vol")
    with mounted(m1, "vol", tmp_path / "a") as a:
        (a.path / "kept.txt").write_text("before the outage")
        a.commit()
        before = head_of(m1, "vol")
        (a.path / "new.bin").write_bytes(b"x" * 100_000)
        (a.path / "kept.txt").write_text("changed during the outage")
        cmdline = services.stop_s3()
        try:
            failed = a.volfs("commit", str(a.path), check=False)
            assert failed.returncode != 0
            lines = [line for line in failed.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and "object store" in lines[0], failed.stderr
            assert "Traceback" not in failed.stderr
            assert head_of(m1, "vol") == before  # PostgreSQL still answers: nothing moved
            assert (a.path / "new.bin").read_bytes() == b"x" * 100_000  # the overlay is intact
            assert (a.path / "kept.txt").read_text() == "changed during the outage"
        finally:
            services.start_s3(cmdline)
        a.commit()
        assert head_of(m1, "vol") != before
    with mounted(m2, "vol", tmp_path / "b") as b:
        assert (b.path / "new.bin").read_bytes() == b"x" * 100_000
        assert (b.path / "kept.txt").read_text() == "changed during the outage"


def test_commit_after_a_postgres_restart_reconnects(
    cluster: Cluster, services: Services, tmp_path: Path
) -> None:
    m1, m2 = cluster.machines
    run_volfs(m1, "volume", "create", "vol")
    with mounted(m1, "vol", tmp_path / "a") as a:
        (a.path / "one").write_text("1")
        a.commit()
        services.restart_postgres()
        (a.path / "two").write_text("2")
        a.commit()  # the daemon's connection was cut: it reconnects
    with mounted(m2, "vol", tmp_path / "b") as b:
        assert sorted(os.listdir(b.path)) == ["one", "two"]


def test_a_blob_corrupted_in_the_bucket_is_detected_not_served(
    cluster: Cluster, tmp_path: Path
) -> None:
    from volfs import Volume
    from volfs.blobs import digest_of
    from volfs.errors import CorruptionError
    from volfs.store import Store

    m1, m2 = cluster.machines
    content = b"precious bytes " * 1000
    local = tmp_path / "precious"
    local.write_bytes(content)
    vol = Volume.from_name("vol", create_if_missing=True, store=m1)
    with vol.batch_upload() as batch:
        batch.put_file(local, "precious.bin")
    client = cluster.bucket_client()
    client.put_object(
        Bucket=os.environ.get("VOLFS_S3_BUCKET", "volfs"),
        Key=cluster.key("blobs", digest_of(content)),
        Body=b"PRECIOUS BYTES " * 1000,
    )
    with mounted(m2, "vol", tmp_path / "b") as b:
        with pytest.raises(OSError) as exc_info:
            (b.path / "precious.bin").read_bytes()
        assert exc_info.value.errno == errno.EIO
        assert "fails its digest check" in b.log_text()
    with pytest.raises(CorruptionError):
        b"".join(Volume.from_name("vol", store=m2).read_file("precious.bin"))
    # Nothing damaged entered machine 2's cache (the file the interface says it would be in).
    assert not Store.open(m2).blobs.path(digest_of(content)).exists()


def test_cold_mount_of_10000_files_lists_and_stats_without_fetching_contents(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from volfs import Volume

    m1, m2 = cluster.machines
    # 1,000 distinct contents (1,000 PUTs rather than 10,000: on a 2-CPU machine Ceph
    # takes ~4 ms per small PUT); the trees still name 10,000 files.
    source = tmp_path / "source"
    for d in range(100):
        (source / f"d{d:02}").mkdir(parents=True)
        for f in range(100):
            (source / f"d{d:02}" / f"f{f:02}").write_text(f"file {f % 10}" + "." * d)
    with Volume.from_name("big", create_if_missing=True, store=m1).batch_upload() as batch:
        batch.put_directory(source, "/")
    trace = tmp_path / "s3-trace"
    monkeypatch.setenv("VOLFS_S3_TRACE", str(trace))
    with mounted(m2, "big", tmp_path / "r") as r:
        count = sizes = 0
        for root, _, files in os.walk(r.path):
            for name in files:
                sizes += os.stat(os.path.join(root, name)).st_size
                count += 1
        assert count == 10_000
        assert sizes == sum(len(f"file {f % 10}") + d for d in range(100) for f in range(100))

        def blob_gets() -> int:
            lines = trace.read_text().splitlines() if trace.exists() else []
            return sum(1 for line in lines if " GET " in f" {line} " and "/blobs/" in line)

        assert blob_gets() == 0
        assert (r.path / "d42" / "f07").read_text() == "file 7" + "." * 42
        assert blob_gets() == 1
        fd = os.open(r.path / "d42" / "f07", os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        assert (r.path / "d42" / "f07").read_text() == "file 7" + "." * 42
        assert blob_gets() == 1  # the second read makes no request
