"""The distributed data path's request counts: fetches on cold reads, through a real
mount on the second machine, with ``VOLFS_S3_TRACE`` (one line per request).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster import Cluster
from mounting import mounted, run_volfs

from volfs.blobs import Digest, digest_of
from volfs.mount.view import REMOTE_FILES_AHEAD

pytestmark = [pytest.mark.mount, pytest.mark.timeout(300)]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"still not {what} after {timeout}s"
        time.sleep(0.02)


def blob_gets(trace: Path) -> list[str]:
    lines = trace.read_text().splitlines() if trace.exists() else []
    return [line.split()[-1] for line in lines if line.split()[1] == "GET" and "/blobs/" in line]


def test_reading_small_files_in_order_fetches_the_next_ones_ahead_and_each_once(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m1, m2 = cluster.machines
    source = tmp_path / "source"
    (source / "d").mkdir(parents=True)
    count = 3 * REMOTE_FILES_AHEAD
    for i in range(count):
        (source / "d" / f"f{i:03}").write_text(f"small file {i}")
    run_volfs(m1, "volume", "create", "vol")
    run_volfs(m1, "volume", "put", "vol", f"{source}/", "/")
    trace = tmp_path / "trace"
    monkeypatch.setenv("VOLFS_S3_TRACE", str(trace))
    with mounted(m2, "vol", tmp_path / "r") as r:
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
