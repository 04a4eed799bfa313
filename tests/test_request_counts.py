"""What small-file operations and sequential transfers cost: FUSE requests counted by the
daemon (``volfs status --json``: ``stats.requests``) and files made on the scratch disk.

The kernel decides most of these requests, and sends the same ones to any pyfuse3
filesystem with volfs's settings (``scripts/fuse_ceiling.py --count`` counts them there):
a count that moves is a cost regression, or a lever landed (``FUSE_HANDLE_KILLPRIV_V2``
would take the GETXATTR ``security.capability`` off every write(2)). Where the kernel
sends a request on its own schedule (the writeback of a file's times as SETATTR, a
refresh of the parent directory's attributes that ``default_permissions`` checks after
each change to it: one GETATTR per create or unlink but the first), the count is bounded
by one per operation instead of pinned. Counts only, never timings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mounting import Mount, mounted, run_volfs

from volfs import control

pytestmark = pytest.mark.mount

FILES = 20
KiB = 1024
MiB = 1024 * KiB


class Requests:
    """The requests a mount's daemon answered between two points: ``counts[op]``."""

    def __init__(self, mount_path: Path) -> None:
        self._socket = control.mount_info(str(mount_path)).socket  # one lookup, not counted
        self.counts: dict[str, int] = {}

    def _now(self) -> dict[str, int]:
        stats = control.call(self._socket, "stats")
        return {op: v["count"] for op, v in stats["requests"].items()}

    @contextlib.contextmanager
    def during(self) -> Iterator[Requests]:
        before = self._now()
        yield self
        after = self._now()
        self.counts = {
            op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)
        }


def assert_counts(
    counts: dict[str, int], pinned: dict[str, int], at_most: dict[str, int] | None = None
) -> None:
    """``pinned`` ops counted exactly, ``at_most`` ops up to their bound, nothing else (but
    FORGET, which the kernel sends whenever it likes)."""
    at_most = at_most or {}
    assert {op: counts.get(op, 0) for op in pinned} == pinned, counts
    assert all(counts.get(op, 0) <= bound for op, bound in at_most.items()), counts
    assert counts.keys() <= {*pinned, *at_most, "forget"}, counts


def _fresh_mount(
    tmp_path: Path, store: Path, name: str
) -> contextlib.AbstractContextManager[Mount]:
    """A new daemon and a new FUSE connection: nothing of the volume in the kernel's caches."""
    return mounted(store, name, tmp_path / f"m-{name}")


def _small_files(root: Path) -> list[Path]:
    return [root / f"f{i:02d}" for i in range(FILES)]


def test_a_small_file_costs_the_same_requests_as_any_pyfuse3_filesystem(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "small")
    data = os.urandom(4 * KiB)
    with _fresh_mount(tmp_path, store, "small") as m:
        (m.path / "d").mkdir()
        os.listdir(m.path / "d")
        files = _small_files(m.path / "d")
        requests = Requests(m.path)
        with requests.during() as create:
            for path in files:
                with open(path, "wb") as f:
                    f.write(data)
        # A negative LOOKUP, CREATE, one WRITE (the writeback cache sends the page at
        # close), the kernel's GETXATTR security.capability for the one write(2), FLUSH
        # (answered: a close(2) must learn of a dead daemon), RELEASE.
        each = dict.fromkeys(("lookup", "create", "write", "getxattr", "flush", "release"), FILES)
        assert_counts(create.counts, each, {"getattr": FILES, "setattr": FILES})
        m.commit()

    with _fresh_mount(tmp_path, store, "small") as m:
        files = _small_files(m.path / "d")
        requests = Requests(m.path)
        os.stat(m.path / "d")
        with requests.during() as stat_cold:
            for path in files:
                os.stat(path)
        assert_counts(stat_cold.counts, {"lookup": FILES})  # the attributes ride along

        with requests.during() as readdir:
            assert len(os.listdir(m.path / "d")) == FILES
        # READDIRPLUS: the entries come with their attributes, no request per entry; the
        # second READDIR finds the end.
        assert_counts(readdir.counts, {"opendir": 1, "readdir": 2, "releasedir": 1})

        with requests.during() as read:
            for path in files:
                assert path.read_bytes() == data
        # No GETATTR: attributes are cached for minutes; one READ: the file is one page run.
        assert_counts(read.counts, dict.fromkeys(("open", "read", "flush", "release"), FILES))

        with requests.during() as delete:
            for path in files:
                os.unlink(path)
        # UNLINK, then the kernel writes the inode's new ctime back (SETATTR) and refreshes
        # the directory's attributes before the next unlink's permission check (GETATTR).
        assert_counts(delete.counts, {"unlink": FILES}, {"getattr": FILES, "setattr": FILES})


def test_small_writes_are_gathered_into_large_write_requests(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "writes")
    size = 2 * MiB
    block = os.urandom(4 * KiB)
    with _fresh_mount(tmp_path, store, "writes") as m:
        requests = Requests(m.path)
        with requests.during() as writes, open(m.path / "f", "wb", buffering=0) as f:
            for _ in range(size // len(block)):
                f.write(block)
            os.fsync(f.fileno())
        # The writeback cache turns 512 write(2)s into WRITEs of up to 1 MiB, but the kernel
        # still asks for security.capability on every write(2): the cost
        # FUSE_HANDLE_KILLPRIV_V2 would remove (README, Performance: Limits).
        assert_counts(
            writes.counts,
            {"lookup": 1, "create": 1, "getxattr": size // len(block), "fsync": 1},
            {"write": size // MiB + 1, "setattr": 1, "getattr": 1, "flush": 1, "release": 1},
        )
        assert writes.counts["write"] >= 1
        assert os.path.getsize(m.path / "f") == size


def test_a_cold_sequential_read_takes_one_read_request_per_mib(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "seq")
    size = 4 * MiB
    data = os.urandom(size)
    with _fresh_mount(tmp_path, store, "seq") as m:
        (m.path / "f").write_bytes(data)
        m.commit()
    with _fresh_mount(tmp_path, store, "seq") as m:
        os.stat(m.path / "f")
        requests = Requests(m.path)
        with requests.during() as read, open(m.path / "f", "rb", buffering=0) as f:
            got = b"".join(iter(lambda: f.read(MiB), b""))
        assert got == data
        # Read-ahead of 1 MiB (the daemon sets the FUSE bdi's read_ahead_kb after INIT):
        # at the kernel's default of 128 KiB this is 32 READs of 128 KiB.
        assert_counts(read.counts, {"open": 1, "read": size // MiB}, {"flush": 1, "release": 1})


def _scratch_files(store: Path) -> int:
    return sum(
        1
        for scratch in (store / "overlays").glob("*/scratch")
        for entry in os.scandir(scratch)
        if entry.is_file(follow_symlinks=False)
    )


def test_a_small_new_file_makes_two_scratch_files(tmp_path: Path) -> None:
    """Its anchor (what recovery needs beside the bytes: the mtime the kernel's writeback
    sends, the size of a file grown by a truncate) and its one segment (scratch.py)."""
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "scratch")
    with _fresh_mount(tmp_path, store, "scratch") as m:
        before = _scratch_files(store)
        for path in _small_files(m.path):
            path.write_bytes(os.urandom(4 * KiB))
        assert _scratch_files(store) - before == 2 * FILES
