"""Concurrent committers of disjoint files on one volume (issue 17): nothing is lost, and
committers take turns instead of redoing their merges (counted in attempts, not timed).

Each writer is a process of its own, as each container is; the merges are counted by the
attempts ``commit_changes`` reports (1 = merged once, onto the head it moved).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from contention import DIRECTORY, committed_files, content, file_name, run_writers
from mounting import mounted
from test_commit import contents, put

from volfs import control, locks
from volfs.blobs import digest_of
from volfs.store import Store

WRITERS = 32
COMMITS = 3


@pytest.mark.timeout(300)
def test_32_concurrent_committers_lose_nothing_and_merge_once(store: Store) -> None:
    volume = store.catalog.create_volume("main", "busy", "test")
    curve = run_writers([store.root], volume.id, WRITERS, COMMITS)
    expected = {
        f"{DIRECTORY}/{file_name(w, i)}": content(w, i)
        for w in range(WRITERS)
        for i in range(COMMITS)
    }
    assert committed_files(store, volume.id) == expected
    history = list(store.catalog.history(volume.id))
    assert len(history) == WRITERS * COMMITS + 1  # every commit a snapshot, and the create
    # Each commit merged once: no writer lost a swap and merged again onto a newer head.
    assert curve.attempts == [1] * (WRITERS * COMMITS)


@pytest.mark.timeout(300)
def test_mounts_committing_at_once_lose_nothing(store: Store, tmp_path: Path) -> None:
    """Real mounts, each a container's: every round, all write a file and commit together."""
    mounts, rounds = 4, 3
    volume = store.catalog.create_volume("main", "shared", "test")
    with (
        mounted(store.root, "shared", tmp_path / "m0") as m0,
        mounted(store.root, "shared", tmp_path / "m1") as m1,
        mounted(store.root, "shared", tmp_path / "m2") as m2,
        mounted(store.root, "shared", tmp_path / "m3") as m3,
    ):
        sockets = [control.mount_info(str(m.path)).socket for m in (m0, m1, m2, m3)]
        attempts: list[int] = []
        for r in range(rounds):
            for k, m in enumerate((m0, m1, m2, m3)):
                (m.path / f"m{k}-{r}").write_bytes(content(k, r))
            barrier = threading.Barrier(mounts)

            def commit(socket: str) -> None:
                barrier.wait(timeout=60)
                attempts.append(control.call(socket, "commit")["attempts"])

            threads = [threading.Thread(target=commit, args=(s,)) for s in sockets]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
        # Each commit merged once, onto whatever the others had committed before its turn.
        assert attempts == [1] * (mounts * rounds)
    expected = {f"m{k}-{r}": content(k, r) for k in range(mounts) for r in range(rounds)}
    assert committed_files(store, volume.id) == expected


@pytest.mark.timeout(60)
def test_a_commit_goes_ahead_without_its_turn_when_the_holder_is_frozen(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paused container holding the turn must not stop every other writer for good."""
    volume = store.catalog.create_volume("main", "frozen", "test")
    monkeypatch.setattr(type(store.catalog), "HEAD_TURN_TIMEOUT", 0.2)
    turn = store.root / "run" / f"head-{volume.id}.lock"
    turn.parent.mkdir(exist_ok=True)
    frozen = locks.hold(turn)  # the frozen holder's turn
    try:
        result = put(store, volume, "mine", b"mine")
        assert result.committed and result.attempts == 1
        assert contents(store.catalog, store.catalog.head(volume.id).root) == {
            "mine": digest_of(b"mine")
        }
    finally:
        os.close(frozen)
    # The thread left waiting for the turn takes it once it is free, and drops it at once.
    for thread in threading.enumerate():
        if thread.name == "head turn":
            thread.join(timeout=10)
    assert not locks.held(turn)
