"""The distributed data path's request counts: uploads at commit, fetches on cold reads.

Uploads are counted in-process with boto3's event hooks on the store's own client (how
many PUTs, how many at once, whether they start before ``flush``); cold reads through a
real mount on the second machine, with ``VOLFS_S3_TRACE`` (one line per request).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster
from mounting import mounted, run_volfs

from volfs.blobs import Digest, digest_of
from volfs.blobs.s3 import UPLOAD_THREADS
from volfs.config import CHUNK_SIZE
from volfs.mount.view import REMOTE_CHUNKS_AHEAD, REMOTE_FILES_AHEAD
from volfs.store import Store

pytestmark = [pytest.mark.mount, pytest.mark.timeout(300)]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"still not {what} after {timeout}s"
        time.sleep(0.02)


class PutCounter:
    """Counts a client's PutObject requests: all, in flight now, most in flight at once.
    ``gate`` cleared holds every PUT before it is sent."""

    def __init__(self, client: Any) -> None:
        self.lock = threading.Lock()
        self.started = self.in_flight = self.most = 0
        self.gate = threading.Event()
        self.gate.set()
        client.meta.events.register("before-call.s3.PutObject", self._before)
        client.meta.events.register("after-call.s3.PutObject", self._after)

    def _before(self, **_: Any) -> None:
        with self.lock:
            self.started += 1
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        self.gate.wait(60)

    def _after(self, **_: Any) -> None:
        with self.lock:
            self.in_flight -= 1


@pytest.fixture
def store(cluster: Cluster) -> Store:
    return Store.open(cluster.machines[0])


def blob_file(tmp_path: Path, i: int, size: int = 4096) -> int:
    path = tmp_path / f"blob{i}"
    path.write_bytes(i.to_bytes(4, "big") * (size // 4))
    return os.open(path, os.O_RDONLY)


def test_commit_uploads_each_new_blob_once_while_hashing_with_bounded_requests(
    store: Store, tmp_path: Path
) -> None:
    puts = PutCounter(store.blobs.bucket.client)
    batch = store.blobs.batch()
    fds = [blob_file(tmp_path, i) for i in range(40 + 2 * UPLOAD_THREADS)]
    digests = set()
    for fd in fds[:40] + fds[:10]:  # ten of them twice: the same digest is sent once
        digests.add(batch.add_range(fd, 0, 4096)[0])
    # The uploads began as the blobs were added, before the commit's flush.
    wait_for(lambda: puts.started == 40, "uploaded before flush")
    batch.flush()
    assert puts.started == 40 == len(digests)
    for d in digests:
        assert store.blobs.bucket.head("blobs", d) == 4096

    # However many blobs a commit adds, only UPLOAD_THREADS wait for the bucket at once:
    # the next add_range waits for a free one (memory stays bounded).
    puts.gate.clear()  # every PUT now waits at the gate
    batch = store.blobs.batch()
    added = []

    def add_all() -> None:
        for fd in fds:  # the first 40 are in the bucket: nothing to send for them
            added.append(batch.add_range(fd, 0, 4096)[0])

    adder = threading.Thread(target=add_all)
    adder.start()
    try:
        wait_for(lambda: puts.in_flight == UPLOAD_THREADS, "UPLOAD_THREADS PUTs in flight")
        assert len(added) == 40 + UPLOAD_THREADS  # the next one waits for a free upload
        assert adder.is_alive()
    finally:
        puts.gate.set()
        adder.join(60)
    batch.flush()
    assert len(added) == len(fds) and puts.started == len(fds)
    assert puts.most == UPLOAD_THREADS
    for fd in fds:
        os.close(fd)


def blob_gets(trace: Path) -> list[str]:
    lines = trace.read_text().splitlines() if trace.exists() else []
    return [line.split()[-1] for line in lines if line.split()[1] == "GET" and "/blobs/" in line]


def test_cold_reads_fetch_ahead_of_sequential_readers_and_each_blob_once(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m1, m2 = cluster.machines
    source = tmp_path / "source"
    (source / "d").mkdir(parents=True)
    chunks = REMOTE_CHUNKS_AHEAD + 2
    with open(source / "big.bin", "wb") as f:
        for i in range(chunks):
            f.write(i.to_bytes(4, "big") * (CHUNK_SIZE // 4))
    count = 3 * REMOTE_FILES_AHEAD
    for i in range(count):
        (source / "d" / f"f{i:03}").write_text(f"small file {i}")
    run_volfs(m1, "volume", "create", "vol")
    run_volfs(m1, "volume", "put", "vol", f"{source}/", "/")
    trace = tmp_path / "trace"
    monkeypatch.setenv("VOLFS_S3_TRACE", str(trace))
    with mounted(m2, "vol", tmp_path / "r") as r:
        # A sequential reader of a large file: the next REMOTE_CHUNKS_AHEAD chunks come
        # ahead of it, and every chunk is fetched once.
        with open(r.path / "big.bin", "rb") as f:
            assert f.read(1 << 20) == (0).to_bytes(4, "big") * (1 << 18)
            wait_for(lambda: len(blob_gets(trace)) == 1 + REMOTE_CHUNKS_AHEAD, "read ahead")
            rest = f.read()
        assert len(rest) == chunks * CHUNK_SIZE - (1 << 20)
        assert rest[-4:] == (chunks - 1).to_bytes(4, "big")
        gets = blob_gets(trace)
        assert len(gets) == chunks == len(set(gets))
        trace.unlink()

        d = r.path / "d"
        names = sorted(os.listdir(d))
        # One small file read on its own fetches only itself.
        assert (d / names[5]).read_text() == "small file 5"
        assert len(blob_gets(trace)) == 1
        # A reader going through the directory in order: the next files come ahead.
        assert (d / names[0]).read_text() == "small file 0"
        assert (d / names[1]).read_text() == "small file 1"
        ahead = {digest_of(f"small file {i}".encode()) for i in range(2, 2 + REMOTE_FILES_AHEAD)}
        wanted = 3 + len(ahead - {digest_of(b"small file 5")})
        wait_for(lambda: len(blob_gets(trace)) == wanted, "small files read ahead")
        for i, name in enumerate(names):
            assert (d / name).read_text() == f"small file {i}"
        gets = blob_gets(trace)
        assert len(gets) == count == len(set(gets))  # every file once, none twice
        assert {Digest("".join(g.rsplit("/", 2)[-2:])) for g in gets} == {
            digest_of(f"small file {i}".encode()) for i in range(count)
        }
