"""Concurrent committers on two machines sharing PostgreSQL + S3 (issue 17): nothing is
lost, and every commit merges once (the head turn is PostgreSQL's advisory lock)."""

from __future__ import annotations

import pytest
from cluster import Cluster
from contention import DIRECTORY, committed_files, content, file_name, run_writers

from volfs.store import Store

WRITERS = 8
COMMITS = 2


@pytest.mark.timeout(300)
def test_writers_on_two_machines_lose_nothing_and_merge_once(cluster: Cluster) -> None:
    volume = Store.open(cluster.machines[0]).catalog.create_volume("main", "busy", "test")
    curve = run_writers(cluster.machines, volume.id, WRITERS, COMMITS)
    expected = {
        f"{DIRECTORY}/{file_name(w, i)}": content(w, i)
        for w in range(WRITERS)
        for i in range(COMMITS)
    }
    for machine in cluster.machines:
        assert committed_files(Store.open(machine), volume.id) == expected
    assert curve.attempts == [1] * (WRITERS * COMMITS)
