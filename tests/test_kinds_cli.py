"""``volfs volume ls/put/get`` with format 2's entries: special files, hard links, holes.

What ``get`` makes is checked on the local filesystem (lstat: kind, rdev, inode, mode,
mtime, allocated blocks); the unprivileged case runs a real ``volfs`` process without
CAP_MKNOD.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from volfs import Volume
from volfs.cli import cli
from volfs.config import CHUNK_SIZE
from volfs.core.changes import ALL_META, Changes, Dir, Put
from volfs.core.tree import Entry, Kind, lookup
from volfs.snapshots.commit import commit_changes
from volfs.store import Store

MTIME = 1_600_000_000
PR_CAPBSET_DROP = 24  # <linux/prctl.h>
CAP_MKNOD = 27  # <linux/capability.h>


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def commit_entries(store: Store, vol: Volume, entries: dict[str, Entry]) -> None:
    """Puts ``entries`` (path -> entry; parents created) in one commit, as a mount would."""

    def build(root: Entry) -> Changes:
        changes: Changes = {}
        for path, entry in entries.items():
            parts = tuple(path.split("/"))
            for i in range(1, len(parts)):
                here = lookup(store.catalog, root, parts[:i])
                changes.setdefault(
                    parts[:i],
                    Dir(here, here, frozenset())
                    if here is not None
                    else Dir(Entry(parts[i - 1], Kind.DIR, 0o755), None, ALL_META),
                )
            changes[parts] = Put(entry.with_(name=parts[-1]))
        return changes

    commit_changes(store.catalog, vol.object_id, build, origin="test")


def populate(store: Store) -> tuple[Volume, bytes]:
    """d/ holding every kind: a hard-linked file (a, sub/b), a FIFO, two devices, a socket,
    and a sparse file (a hole, then 5 bytes at 20 MiB)."""
    Volume.objects.create("vol", store=store)
    vol = Volume.from_name("vol", store=store)
    data = b"linked content\n"
    blob = store.blobs.put(data)
    tail = store.blobs.put(b"tail!")
    ns = MTIME * 10**9
    linked = Entry(
        "", Kind.FILE, 0o640, size=len(data), mtime_ns=ns, chunks=((0, blob),), link=0x5151, nlink=2
    )
    commit_entries(
        store,
        vol,
        {
            "d/a": linked,
            "d/sub/b": linked,
            "d/fifo": Entry("", Kind.FIFO, 0o604, mtime_ns=ns),
            "d/null": Entry("", Kind.CHAR_DEVICE, 0o620, mtime_ns=ns, rdev=os.makedev(1, 3)),
            "d/blk": Entry("", Kind.BLOCK_DEVICE, 0o600, mtime_ns=ns, rdev=os.makedev(7, 201)),
            "d/sock": Entry("", Kind.SOCKET, 0o755, mtime_ns=ns),
            "d/sparse": Entry(
                "",
                Kind.FILE,
                0o644,
                mtime_ns=ns,
                size=2 * CHUNK_SIZE + 4 * 2**20 + 5,
                chunks=((2, store.blobs.put(bytes(4 * 2**20) + b"tail!")),),
            ),
            "d/short": Entry("", Kind.FILE, 0o644, mtime_ns=ns, size=100, chunks=((0, tail),)),
        },
    )
    return vol, data


def test_ls_shows_every_kind_and_device_numbers(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(store)
    monkeypatch.setattr("volfs.cli.volume._stdout_is_terminal", lambda: True)  # the table
    code, out, err = run("volume", "ls", "vol", "d")
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["d/fifo"][0] == "fifo" and rows["d/sock"][0] == "socket"
    assert rows["d/null"][0] == "char-device" and rows["d/null"][-2:] == ["1,", "3"]
    assert rows["d/blk"][0] == "block-device" and rows["d/blk"][-2:] == ["7,", "201"]
    assert rows["d/sub/"][0] == "dir" and rows["d/a"][0] == "file"
    code, out, _ = run("volume", "ls", "vol", "d", "--json")
    listed = {e["filename"]: e for e in json.loads(out)}
    assert {p: e["type"] for p, e in listed.items()} == {
        "d/a": "file",
        "d/blk": "block-device",
        "d/fifo": "fifo",
        "d/null": "char-device",
        "d/short": "file",
        "d/sock": "socket",
        "d/sparse": "file",
        "d/sub": "dir",
    }
    # Modal's keys exactly; a device (which a Modal volume cannot hold) adds its number.
    assert listed["d/blk"]["rdev"] == {"major": 7, "minor": 201}
    modal_keys = {"filename", "type", "created_modified", "size"}
    assert all(set(e) == modal_keys for p, e in listed.items() if p not in ("d/blk", "d/null"))


def test_get_recreates_fifos_devices_and_hard_links_and_skips_sockets(
    store: Store, tmp_path: Path
) -> None:
    _, data = populate(store)
    dest = tmp_path / "out"
    code, _, err = run("volume", "get", "vol", "d", str(dest))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        (
            "warning: skipped 1 special file: 1 socket (a socket node means "
            "nothing without its server)"
        )
    ]
    assert not (dest / "sock").exists() and not list(dest.glob(".*volfs-part"))
    fifo = os.lstat(dest / "fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o604
    assert fifo.st_mtime == MTIME
    null, blk = os.lstat(dest / "null"), os.lstat(dest / "blk")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o620 and null.st_mtime == MTIME
    assert stat.S_ISBLK(blk.st_mode) and blk.st_rdev == os.makedev(7, 201)
    a, b = os.lstat(dest / "a"), os.lstat(dest / "sub" / "b")
    assert a.st_ino == b.st_ino and a.st_nlink == 2  # one local file, two names
    assert (dest / "sub" / "b").read_bytes() == data
    assert stat.S_IMODE(a.st_mode) == 0o640 and a.st_mtime == MTIME
    # A hole stays a hole; a blob shorter than its file reads padded with zeros.
    sparse = dest / "sparse"
    assert sparse.stat().st_size == 2 * CHUNK_SIZE + 4 * 2**20 + 5
    assert sparse.stat().st_blocks * 512 < CHUNK_SIZE  # the 16 MiB hole is not written
    with open(sparse, "rb") as f:
        assert f.read(2 * CHUNK_SIZE) == bytes(2 * CHUNK_SIZE)
        assert f.read() == bytes(4 * 2**20) + b"tail!"
    assert (dest / "short").read_bytes() == b"tail!" + bytes(95)
    # Again with --force over what the first download made: same result, nothing left over.
    code, _, err = run("volume", "get", "vol", "d", str(dest), "--force")
    assert code == 0, err
    assert os.lstat(dest / "a").st_ino == os.lstat(dest / "sub" / "b").st_ino
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
    assert not list(dest.rglob(".*volfs-part"))


def test_get_of_one_fifo_recreates_it(store: Store, tmp_path: Path) -> None:
    populate(store)
    code, _, err = run("volume", "get", "vol", "d/fifo", str(tmp_path / "p"))
    assert code == 0, err
    assert stat.S_ISFIFO(os.lstat(tmp_path / "p").st_mode)
    code, _, err = run("volume", "get", "vol", "d/sock", str(tmp_path / "s"))
    assert code == 0 and err.splitlines() == [
        "warning: skipped 1 special file: 1 socket (a socket node means nothing without its server)"
    ]
    assert not os.path.lexists(tmp_path / "s")


def _without_cap_mknod() -> None:
    """In the child before exec: drop CAP_MKNOD from the bounding set, so the volfs process
    runs as root without the right to make device nodes (a container's usual root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_MKNOD, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_MKNOD)")


def test_get_without_the_right_to_make_devices_skips_them_with_one_warning(
    store: Store, tmp_path: Path
) -> None:
    _, data = populate(store)
    proc = subprocess.run(
        [sys.executable, "-m", "volfs", "volume", "get", "vol", "d", str(tmp_path / "out")],
        preexec_fn=_without_cap_mknod,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        (
            "warning: skipped 3 special files: 1 socket (a socket node means "
            "nothing without its server), 2 device nodes (creating them needs "
            "root, with CAP_MKNOD)"
        )
    ]
    assert "Traceback" not in proc.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["a", "fifo", "short", "sparse", "sub"]
    assert stat.S_ISFIFO(os.lstat(out / "fifo").st_mode)
    assert os.lstat(out / "a").st_ino == os.lstat(out / "sub" / "b").st_ino
    assert (out / "a").read_bytes() == data


def test_put_then_get_round_trips_special_files_and_hard_links(
    store: Store, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "f").write_bytes(b"x" * 1000)
    os.link(src / "f", src / "sub" / "f2")
    os.mkfifo(src / "pipe")
    os.mknod(src / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    Volume.objects.create("vol", store=store)
    code, out, err = run("volume", "put", "vol", str(src), "/up")
    assert code == 0, err
    assert "Uploaded 4 files (1000 B)" in out  # four names; the linked file's bytes once
    code, out, _ = run("volume", "ls", "vol", "up", "--json")
    assert {e["filename"]: e["type"] for e in json.loads(out)} == {
        "up/f": "file",
        "up/pipe": "fifo",
        "up/sub": "dir",
        "up/zero": "char-device",
    }
    dest = tmp_path / "back"
    code, _, err = run("volume", "get", "vol", "up", str(dest))
    assert code == 0, err
    assert not [line for line in err.splitlines() if line.startswith("warning:")]
    assert os.lstat(dest / "f").st_ino == os.lstat(dest / "sub" / "f2").st_ino
    assert stat.S_ISFIFO(os.lstat(dest / "pipe").st_mode)
    zero = os.lstat(dest / "zero")
    assert stat.S_ISCHR(zero.st_mode) and zero.st_rdev == os.makedev(1, 5)
