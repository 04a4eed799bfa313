"""A daemon's memory follows what the kernel still references, not what was ever listed.

After ``ls -R`` the kernel holds an inode for every entry listed (READDIRPLUS); when it
forgets them (memory pressure, here ``echo 2 > /proc/sys/vm/drop_caches``: a storm of
FORGETs), the daemon releases their nodes, and the nodes it holds (``status``'s
``nodes``, a count) return to a bound. What the tree cannot give back stays: open files,
changes not committed, hard-link groups (one st_ino for all names). Everything released
loads again from the tree, as before.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mounting import Mount, mounted, run_volfs

from volfs import control
from volfs.blobs import put_stream
from volfs.core.changes import Dir, Put
from volfs.core.tree import Entry, Kind, dense
from volfs.snapshots.commit import commit_changes
from volfs.store import Store

pytestmark = pytest.mark.mount

DIRS, PER_DIR = 30, 100
FILES = DIRS * PER_DIR


def build(store: Store, name: str) -> None:
    """DIRS directories of PER_DIR small files, in one commit."""
    volume = store.catalog.create_volume("main", name, "test")
    changes: dict[tuple[str, ...], object] = {}
    for d in range(DIRS):
        dname = f"d{d:02d}"
        changes[(dname,)] = Dir(Entry(dname, Kind.DIR, 0o755), None, frozenset({"mode"}))
        for f in range(PER_DIR):
            digests, size = put_stream(store.blobs, io.BytesIO(f"{dname}/f{f:03d}".encode()))
            changes[(dname, f"f{f:03d}")] = Put(
                Entry(f"f{f:03d}", Kind.FILE, 0o644, size=size, chunks=dense(digests))
            )
    commit_changes(store.catalog, volume.id, lambda head: changes, origin="test")  # type: ignore[arg-type, return-value]


def nodes(mount: Mount) -> int:
    status = control.call(control.mount_info(str(mount.path)).socket, "status")
    return int(status["nodes"])


def forget_all(mount: Mount, bound: int) -> int:
    """Drops the kernel's dentries and inodes; waits (against a deadline) for the FORGETs
    to reach the daemon: until it holds ``bound`` nodes or fewer, or stops releasing."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("2\n")
    deadline = time.monotonic() + 20
    held, steady = nodes(mount), 0
    while held > bound and steady < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
        now = nodes(mount)
        steady = steady + 1 if now == held else 0
        held = now
    return held


def walk(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def big(store: Store, store_path: Path, tmp_path: Path) -> Iterator[Mount]:
    build(store, "big")
    with mounted(store_path, "big", tmp_path / "mnt") as m:
        yield m


@pytest.mark.timeout(120)
def test_forgotten_nodes_are_released(big: Mount) -> None:
    subprocess.run(["ls", "-R", str(big.path)], stdout=subprocess.DEVNULL, check=True)
    assert nodes(big) >= FILES + DIRS  # every listed entry is referenced by the kernel

    assert forget_all(big, bound=1) <= 1  # the root only

    # What was released loads again from the tree, the same as before.
    listed = walk(big.path)
    assert len(listed) == FILES + DIRS
    assert (big.path / "d07" / "f042").read_text() == "d07/f042"
    assert nodes(big) >= FILES + DIRS


@pytest.mark.timeout(120)
def test_what_the_tree_cannot_give_back_stays(big: Mount) -> None:
    os.link(big.path / "d03" / "f001", big.path / "d03" / "link")
    big.commit()
    ino = (big.path / "d03" / "link").stat().st_ino
    (big.path / "d02" / "f005").write_text("not committed yet")
    with open(big.path / "d01" / "f009") as held_open:
        subprocess.run(["ls", "-R", str(big.path)], stdout=subprocess.DEVNULL, check=True)
        # Three listings stay (an open file, a change, a hard link), and the root's.
        bound = DIRS + 3 * (PER_DIR + 1) + 1
        assert forget_all(big, bound) <= bound

        assert held_open.read() == "d01/f009"
    assert (big.path / "d02" / "f005").read_text() == "not committed yet"
    assert (big.path / "d03" / "f001").stat().st_ino == ino
    assert (big.path / "d03" / "link").stat().st_nlink == 2
    big.commit()
    got = run_volfs(big.store, "volume", "get", "big", "d02/f005", "-").stdout
    assert got == "not committed yet"


@pytest.mark.timeout(120)
def test_a_scan_past_the_cap_holds_about_the_cap(
    store: Store, store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = 1000
    build(store, "capped")
    monkeypatch.setenv("VOLFS_MAX_NODES", str(cap))
    with mounted(store_path, "capped", tmp_path / "mnt") as m:
        for _ in range(2):  # the second scan loads again what the first one let go
            subprocess.run(["ls", "-R", str(m.path)], stdout=subprocess.DEVNULL, check=True)
            # The kernel forgets what it was asked to in the background: wait for it.
            bound = cap + cap // 8 + PER_DIR
            deadline = time.monotonic() + 20
            while nodes(m) > bound and time.monotonic() < deadline:
                time.sleep(0.1)
            assert nodes(m) <= bound
        assert len(walk(m.path)) == FILES + DIRS
        assert (m.path / "d29" / "f099").read_text() == "d29/f099"


@pytest.mark.timeout(60)
def test_a_bad_cap_is_refused_before_anything_is_created(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_volfs(store_path, "volume", "create", "v")
    monkeypatch.setenv("VOLFS_MAX_NODES", "lots")
    with pytest.raises(AssertionError) as failed:
        with mounted(store_path, "v", tmp_path / "mnt"):
            pass
    log = str(failed.value)
    assert "Error: VOLFS_MAX_NODES must be a positive number of nodes, not 'lots'" in log
    assert "Traceback" not in log
    assert not list((store_path / "overlays").iterdir())  # nothing for `volfs recover`
