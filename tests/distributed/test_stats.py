"""Distributed mode's blob cache in a mount's counters: misses fetch from the bucket, a
second mount of the same machine finds the blob cached."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from cluster import Cluster
from mounting import mounted, run_volfs
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.mount, pytest.mark.timeout(300)]


def _stats(store: Path, path: Path) -> dict:
    (row,) = json.loads(run_volfs(store, "status", str(path), "--json").stdout)
    return row


def test_blob_cache_misses_then_hits_are_counted(cluster: Cluster, tmp_path: Path) -> None:
    m1, m2 = cluster.machines
    run_volfs(m1, "volume", "create", "obs-cache")
    content = os.urandom(3 * 1024 * 1024)  # one chunk: one blob
    with mounted(m1, "obs-cache", tmp_path / "w") as w:
        (w.path / "f.bin").write_bytes(content)
        w.commit()
    with mounted(m2, "obs-cache", tmp_path / "cold", "--metrics", "127.0.0.1:0") as cold:
        assert (cold.path / "f.bin").read_bytes() == content
        row = _stats(m2, cold.path)
        cache = row["stats"]["blob_cache"]
        assert cache["cache_misses"] == 1
        assert cache["bytes_fetched"] == len(content)
        with urllib.request.urlopen(f"http://{row['metrics']}/metrics", timeout=10) as reply:
            families = {f.name: f for f in text_string_to_metric_families(reply.read().decode())}
        (sample,) = families["volfs_blob_fetched_bytes"].samples
        assert sample.value == len(content)
        assert sample.labels == {"volume": "obs-cache", "mount": row["mount_id"]}
        (sample,) = families["volfs_blob_cache_misses"].samples
        assert sample.value == 1
    with mounted(m2, "obs-cache", tmp_path / "warm") as warm:
        assert (warm.path / "f.bin").read_bytes() == content
        cache = _stats(m2, warm.path)["stats"]["blob_cache"]
        assert cache["cache_misses"] == 0 and cache["bytes_fetched"] == 0
        assert cache["cache_hits"] >= 1
