"""The checks of a following mount (``--follow``), shared by the local and distributed tests."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from mounting import mounted

from volfs import control

#: Generous: the follower should see a commit within about two intervals of 1 s.
SEE_DEADLINE = 30.0
IDLE_SECONDS = 4.0


def follow_stats(path: Path) -> dict[str, Any]:
    status = control.call_mount(str(path), "status", timeout=10)
    return status["follow"]


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + SEE_DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"the follower never showed {what}"
        time.sleep(0.1)


def read_or_none(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def check_follower_sees_commits(
    writer_store: Path, follower_store: Path, name: str, tmp_path: Path
) -> dict[str, Any]:
    """A --follow 1 mount shows another mount's commits with no reload call, keeping a file
    it holds open; returns the follower's counters over an idle stretch."""
    with (
        mounted(writer_store, name, tmp_path / "w") as w,
        mounted(follower_store, name, tmp_path / "f", "--read-only", "--follow", "1") as f,
    ):
        (w.path / "model.bin").write_text("v1")
        w.commit()
        wait_for(lambda: read_or_none(f.path / "model.bin") == "v1", "the first commit")
        with open(f.path / "model.bin") as held:  # a reader keeps what it opened
            (w.path / "model.bin").write_text("v2")
            (w.path / "other").write_text("new")
            w.commit()
            wait_for(lambda: read_or_none(f.path / "other") == "new", "the second commit")
            assert read_or_none(f.path / "model.bin") == "v2"
            assert held.read() == "v1"
        assert sorted(os.listdir(f.path)) == ["model.bin", "other"]
        before = follow_stats(f.path)
        assert before["reloads"] >= 2
        time.sleep(IDLE_SECONDS)
        after = follow_stats(f.path)
        assert after["reloads"] == before["reloads"]
        return {
            "head_reads": after["head_reads"] - before["head_reads"],
            "polls": after["watch"].get("polls", 0) - before["watch"].get("polls", 0),
            "waits": after["watch"]["waits"] - before["watch"]["waits"],
        }
