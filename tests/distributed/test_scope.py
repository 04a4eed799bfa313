"""The scope of plain `volfs commit` in distributed mode: a store is its database and
bucket, not its local directory. Two machines' directories of one distributed store are
the same store; an embedded store on the same host is another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cluster import Cluster
from mounting import mounted, run_volfs

pytestmark = [pytest.mark.mount, pytest.mark.timeout(300)]


def snapshots(store: Path, name: str) -> int:
    return len(json.loads(run_volfs(store, "volume", "log", name, "--json").stdout))


def test_plain_commit_counts_every_directory_of_one_distributed_store_as_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    m1, m2 = cluster.machines
    embedded = tmp_path / "embedded"
    run_volfs(m1, "volume", "create", "dist-scope")
    run_volfs(embedded, "volume", "create", "local-scope")
    with (
        mounted(m1, "dist-scope", tmp_path / "d") as d,
        mounted(embedded, "local-scope", tmp_path / "e") as e,
    ):
        (d.path / "f").write_text("d")
        (e.path / "f").write_text("e")
        before_d, before_e = snapshots(m1, "dist-scope"), snapshots(embedded, "local-scope")
        # Machine 2's directory names the same store as machine 1's: its mount is in scope.
        out = json.loads(run_volfs(m2, "commit", "--json").stdout)
        assert [r["path"] for r in out] == [str(d.path)]
        assert snapshots(m1, "dist-scope") == before_d + 1
        assert snapshots(embedded, "local-scope") == before_e
        out = json.loads(run_volfs(embedded, "commit", "--json").stdout)
        assert [r["path"] for r in out] == [str(e.path)]
