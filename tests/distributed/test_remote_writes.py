"""The distributed data path's upload side: what a PUT costs the client, and which blobs a
write through a mount sends before its commit (``VOLFS_S3_TRACE``: one line per request).
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
from volfs.blobs.s3 import AHEAD_UPLOADS, S3BlobStore
from volfs.config import CHUNK_SIZE
from volfs.store import Store

pytestmark = [pytest.mark.timeout(120)]


def test_a_blob_upload_sends_no_payload_hash(cluster: Cluster) -> None:
    """The payload is not SHA-256 hashed for the signature (botocore does so over plain
    http unless told not to): the blob's own digest, checked on every fetch, guards it."""
    bucket = Store.open(cluster.machines[0]).blobs.bucket
    assert bucket is not None
    sent: list[str] = []

    def note(request: Any, **_: Any) -> None:
        sent.append(request.headers["X-Amz-Content-SHA256"].decode())

    bucket.client.meta.events.register("before-send.s3.PutObject", note)  # type: ignore[attr-defined]
    data = os.urandom(1 << 20)
    digest = digest_of(data)
    bucket.put("blobs", digest, data)
    assert sent == ["UNSIGNED-PAYLOAD"]
    assert bucket.get("blobs", digest) == data


def blob_puts(trace: Path) -> list[Digest]:
    """The blobs PUT so far, in order (a multipart upload counts once)."""
    lines = trace.read_text().splitlines() if trace.exists() else []
    return [
        Digest("".join(line.split()[-1].rsplit("/", 2)[-2:]))
        for line in lines
        if line.split()[1] == "PUT" and "/blobs/" in line
    ]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"still not {what} after {timeout}s"
        time.sleep(0.02)


@pytest.mark.mount
def test_full_chunks_of_a_sequential_writer_are_uploaded_before_its_commit_and_once(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m1, _ = cluster.machines
    run_volfs(m1, "volume", "create", "vol")
    trace = tmp_path / "trace"
    monkeypatch.setenv("VOLFS_S3_TRACE", str(trace))
    content = os.urandom(3 * CHUNK_SIZE + 1000)
    chunks = [digest_of(content[i : i + CHUNK_SIZE]) for i in range(0, len(content), CHUNK_SIZE)]
    with mounted(m1, "vol", tmp_path / "w") as w:
        with open(w.path / "big", "wb") as f:
            for start in range(0, len(content), 1 << 20):
                f.write(content[start : start + (1 << 20)])
        # Nothing committed yet: the full chunks are on their way, the tail is not.
        wait_for(lambda: sorted(blob_puts(trace)) == sorted(chunks[:3]), "full chunks uploaded")
        assert chunks[3] not in blob_puts(trace)
        w.commit()
        puts = blob_puts(trace)
        assert sorted(puts) == sorted(chunks)  # the commit sent only the tail: each blob once
    with mounted(cluster.machines[1], "vol", tmp_path / "r") as r:
        assert (r.path / "big").read_bytes() == content


@pytest.mark.mount
def test_a_chunk_filled_out_of_order_is_left_to_the_commit(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A random writer that happens to write a chunk's last bytes will likely change the
    chunk again: it is not uploaded ahead (its upload would be wasted)."""
    m1, _ = cluster.machines
    run_volfs(m1, "volume", "create", "vol")
    trace = tmp_path / "trace"
    monkeypatch.setenv("VOLFS_S3_TRACE", str(trace))
    content = os.urandom(CHUNK_SIZE)
    with mounted(m1, "vol", tmp_path / "w") as w:
        fd = os.open(w.path / "db", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for start in reversed(range(0, CHUNK_SIZE, 1 << 20)):  # the last MiB first
                os.pwrite(fd, content[start : start + (1 << 20)], start)
                os.fsync(fd)  # the kernel's writeback cache would send them in order
        finally:
            os.close(fd)
        w.commit()
        assert blob_puts(trace) == [digest_of(content)]  # by the commit, once


class _BlockedBucket:
    """A bucket whose PUTs wait for the test: how many run at once is what it counts."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def put(self, kind: str, digest: str, data: bytes) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(30)
        with self.lock:
            self.running -= 1


def test_uploads_ahead_are_bounded_and_the_rest_declined(cluster: Cluster, tmp_path: Path) -> None:
    blobs = Store.open(cluster.machines[0]).blobs
    assert isinstance(blobs, S3BlobStore)
    bucket = _BlockedBucket()
    blobs.bucket = bucket  # type: ignore[assignment]
    offered = AHEAD_UPLOADS + 3
    for i in range(offered):
        path = tmp_path / f"seg{i}"
        path.write_bytes(os.urandom(4096))
        blobs.upload_ahead(os.open(path, os.O_RDONLY), 4096)
    wait_for(lambda: bucket.running == AHEAD_UPLOADS, "the uploads started", 30)
    assert blobs.stats["uploads_ahead_declined"] == offered - AHEAD_UPLOADS
    bucket.release.set()
    wait_for(lambda: blobs.stats["uploads_ahead"] == AHEAD_UPLOADS, "the uploads done", 30)
    assert bucket.most == AHEAD_UPLOADS
