"""Mounts that follow the head (``volfs mount --follow``) on the embedded store."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from follow_checks import IDLE_SECONDS, check_follower_sees_commits, read_or_none, wait_for
from mounting import mounted, run_volfs

pytestmark = pytest.mark.mount


def test_follower_sees_another_mounts_commit_without_reload(tmp_path: Path) -> None:
    store = tmp_path / "store"
    name = f"fo-{uuid.uuid4().hex[:8]}"
    run_volfs(store, "volume", "create", name)
    idle = check_follower_sees_commits(store, store, name, tmp_path)
    # Idle, the follower reads the head record once per interval: an LMDB read, no query.
    assert idle["head_reads"] <= IDLE_SECONDS + 2


def test_follow_must_be_a_positive_interval(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "v")
    for bad in ("0", "-1", "nan", "inf"):
        proc = run_volfs(store, "mount", "v", str(tmp_path / "m"), "--follow", bad, check=False)
        assert proc.returncode != 0
        assert "--follow must be a positive number of seconds" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_writable_follower_commits_its_own_changes_before_following(tmp_path: Path) -> None:
    store = tmp_path / "store"
    name = f"fo-{uuid.uuid4().hex[:8]}"
    run_volfs(store, "volume", "create", name)
    with (
        mounted(store, name, tmp_path / "w") as w,
        mounted(store, name, tmp_path / "f", "--follow", "1") as f,
    ):
        (f.path / "mine").write_text("uncommitted in the follower")
        (w.path / "theirs").write_text("committed by w")
        w.commit()
        wait_for(lambda: read_or_none(f.path / "theirs") == "committed by w", "w's commit")
        assert (f.path / "mine").read_text() == "uncommitted in the follower"
        w.reload()
        assert (w.path / "mine").read_text() == "uncommitted in the follower"
