"""A mount that follows the head across machines: PostgreSQL LISTEN/NOTIFY, no polling."""

from __future__ import annotations

from pathlib import Path

from cluster import Cluster
from follow_checks import check_follower_sees_commits
from mounting import run_volfs


def test_follower_on_another_machine_sees_commits_and_sends_no_query_idle(
    cluster: Cluster, tmp_path: Path
) -> None:
    m1, m2 = cluster.machines
    run_volfs(m1, "volume", "create", "vol")
    idle = check_follower_sees_commits(m1, m2, "vol", tmp_path)
    # Listening: a follower with nothing to follow reads no head and never polls.
    assert idle["head_reads"] == 0
    assert idle["polls"] == 0
