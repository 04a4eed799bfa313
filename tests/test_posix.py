"""The POSIX surface of a real mount (DESIGN §2, issue 3), one behaviour per test.

One module-scoped mount (``posix``) serves every test, each in a fresh subdirectory. A
second mount of the same volume (``other``, started on first use) shows what a commit
publishes: the first mount commits, the second reloads and compares.

Errnos of what volfs does not support, for the README's list of POSIX deviations:
- ``fallocate(2)``: EOPNOTSUPP for every mode (pyfuse3 has no fallocate handler; the kernel
  turns libfuse's ENOSYS into EOPNOTSUPP). ``posix_fallocate(3)`` still succeeds: glibc
  emulates it by writing a byte per block when the kernel says EOPNOTSUPP.
- ``open(O_TMPFILE)``: EOPNOTSUPP (no tmpfile handler); ``tempfile.TemporaryFile`` falls
  back to create + unlink, which works.
- File locks (``flock``, ``fcntl``) are the kernel's local locks: they work between
  processes of one machine using one mount, not across mounts.
- POSIX ACLs (``system.posix_acl_*``) are kept and committed as xattrs but not enforced
  (pyfuse3's ``enable_acl`` is off): the kernel checks the mode bits only.
- ``setxattr`` of ``user.*`` on a symlink itself: EPERM (the kernel's rule, as on ext4).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mounting import Mount, mounted, run_volfs, volfs_mountpoints

pytestmark = pytest.mark.mount

VOLUME = "posix"
MiB = 1024 * 1024
CHUNK = 8 * MiB
AT_FDCWD = -100
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2

libc = ctypes.CDLL(None, use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _timespec(value: int | None) -> _Timespec:
    """ns since the epoch, or one of UTIME_NOW / UTIME_OMIT passed as (0, code)."""
    if value in (UTIME_NOW, UTIME_OMIT):
        return _Timespec(0, value)
    assert value is not None
    return _Timespec(*divmod(value, 1_000_000_000))


def utimensat(path: Path, atime: int, mtime: int) -> None:
    times = (_Timespec * 2)(_timespec(atime), _timespec(mtime))
    if libc.utimensat(AT_FDCWD, os.fsencode(path), times, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))


def renameat2(old: Path, new: Path, flags: int) -> None:
    if not hasattr(libc, "renameat2"):
        pytest.skip("libc has no renameat2")
    if (
        libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), ctypes.c_uint(flags))
        != 0
    ):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(old))


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    func = libc.fallocate
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if func(fd, mode, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def sha256(path: Path, *, drop_cache: bool = False) -> str:
    """The file's hash; ``drop_cache`` evicts its pages first so the daemon serves the read."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        if drop_cache:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def walk(root: Path) -> list[tuple[object, ...]]:
    """Everything the volume promises to keep, per path, in a comparable form."""
    rows: list[tuple[object, ...]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = os.lstat(path)
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            content = sha256(path) if stat.S_ISREG(st.st_mode) else None
            xattrs = (
                ()
                if target is not None
                else tuple(sorted((k, os.getxattr(path, k)) for k in os.listxattr(path)))
            )
            rows.append(
                (
                    str(path.relative_to(root)),
                    st.st_mode,
                    st.st_uid,
                    st.st_gid,
                    st.st_size if not stat.S_ISDIR(st.st_mode) else None,
                    st.st_mtime_ns,
                    target,
                    xattrs,
                    content,
                )
            )
    return rows


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("posix")
    run_volfs(root / "store", "volume", "create", VOLUME)
    return root


@pytest.fixture(scope="module")
def mnt(place: Path) -> Iterator[Mount]:
    with mounted(place / "store", VOLUME, place / "mnt") as mount:
        yield mount
    assert str(place / "mnt") not in volfs_mountpoints()


@pytest.fixture(scope="module")
def other(place: Path, mnt: Mount) -> Iterator[Mount]:
    """A second mount of the same volume: sees only what ``mnt`` committed, after reload."""
    with mounted(place / "store", VOLUME, place / "other") as mount:
        yield mount
    assert str(place / "other") not in volfs_mountpoints()


@pytest.fixture
def d(mnt: Mount, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh directory in the shared mount; on failure the daemon log's new lines are shown."""
    path = mnt.path / re.sub(r"[^\w.-]", "_", request.node.name)
    path.mkdir()
    offset = len(mnt.log_text())
    failed = request.session.testsfailed
    yield path
    if request.session.testsfailed > failed:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"--- daemon log of {mnt.path} during {request.node.name} ---")
            reporter.write_line(mnt.log_text()[offset:] or "(nothing)")


def publish(mnt: Mount, other: Mount) -> None:
    """``mnt`` commits; ``other`` reloads onto the new head."""
    mnt.commit()
    other.reload()


def in_other(d: Path, mnt: Mount, other: Mount) -> Path:
    return other.path / d.relative_to(mnt.path)


# -- create, read, write ---------------------------------------------------------------------------
def test_create_write_read(d: Path) -> None:
    (d / "f").write_bytes(b"hello world")
    assert (d / "f").read_bytes() == b"hello world"
    assert os.stat(d / "f").st_size == 11
    assert os.listdir(d) == ["f"]


def test_create_exclusive_existing_is_eexist(d: Path) -> None:
    (d / "f").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        os.open(d / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY)


def test_overwrite_in_the_middle(d: Path) -> None:
    (d / "f").write_bytes(b"0123456789")
    with open(d / "f", "r+b") as f:
        f.seek(3)
        f.write(b"abc")
    assert (d / "f").read_bytes() == b"012abc6789"


def test_write_updates_mtime_and_size_at_once(d: Path) -> None:
    (d / "f").write_bytes(b"x")
    os.utime(d / "f", ns=(1_000_000_000, 1_000_000_000))
    before = os.stat(d / "f")
    with open(d / "f", "ab") as f:
        f.write(b"more")
    after = os.stat(d / "f")
    assert after.st_size == 5
    assert after.st_mtime_ns > before.st_mtime_ns


def test_truncate_shrink(d: Path) -> None:
    (d / "f").write_bytes(b"0123456789")
    os.truncate(d / "f", 4)
    assert os.stat(d / "f").st_size == 4
    assert (d / "f").read_bytes() == b"0123"


def test_truncate_grow_reads_zeros(d: Path) -> None:
    (d / "f").write_bytes(b"abc")
    os.truncate(d / "f", 10)
    assert (d / "f").read_bytes() == b"abc" + b"\0" * 7


def test_ftruncate_through_open_fd(d: Path) -> None:
    with open(d / "f", "w+b") as f:
        f.write(b"0123456789")
        f.flush()
        os.ftruncate(f.fileno(), 2)
        assert os.fstat(f.fileno()).st_size == 2
    assert (d / "f").read_bytes() == b"01"


def test_open_o_trunc_empties(d: Path) -> None:
    (d / "f").write_bytes(b"long old content")
    fd = os.open(d / "f", os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
        os.write(fd, b"new")
    finally:
        os.close(fd)
    assert (d / "f").read_bytes() == b"new"


def test_o_append_writes_at_the_end(d: Path) -> None:
    (d / "f").write_bytes(b"start")
    fd = os.open(d / "f", os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"-one")
        os.write(fd, b"-two")
    finally:
        os.close(fd)
    assert (d / "f").read_bytes() == b"start-one-two"


def test_two_appenders_interleave_without_loss(d: Path) -> None:
    a = os.open(d / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    b = os.open(d / "log", os.O_WRONLY | os.O_APPEND)
    try:
        for i in range(50):
            os.write(a if i % 2 else b, b"%02d\n" % i)
    finally:
        os.close(a)
        os.close(b)
    assert (d / "log").read_bytes() == b"".join(b"%02d\n" % i for i in range(50))


def test_sparse_write_hole_reads_zeros(d: Path) -> None:
    offset = 20 * MiB + 123
    with open(d / "f", "wb") as f:
        f.write(b"head")
        f.seek(offset)
        f.write(b"tail")
    assert os.stat(d / "f").st_size == offset + 4
    with open(d / "f", "rb") as f:
        assert f.read(4) == b"head"
        hole = f.read(offset - 4)
        assert hole == b"\0" * (offset - 4)
        assert f.read() == b"tail"


def test_sparse_file_survives_commit(d: Path, mnt: Mount, other: Mount) -> None:
    offset = CHUNK + 17  # the data lands in the second chunk
    with open(d / "f", "wb") as f:
        f.seek(offset)
        f.write(b"tail")
    publish(mnt, other)
    copy = in_other(d, mnt, other) / "f"
    assert os.stat(copy).st_size == offset + 4
    assert copy.read_bytes() == b"\0" * offset + b"tail"


def test_large_file_across_chunks_survives_commit_and_second_mount(
    d: Path, mnt: Mount, other: Mount
) -> None:
    data = os.urandom(64 * MiB + 4321)  # crosses the 8 MiB chunk size, ends mid-chunk
    expected = hashlib.sha256(data).hexdigest()
    with open(d / "big", "wb") as f:
        f.writelines(data[start : start + MiB] for start in range(0, len(data), MiB))
    del data
    assert sha256(d / "big", drop_cache=True) == expected
    publish(mnt, other)
    assert sha256(d / "big", drop_cache=True) == expected  # now served from committed blobs
    copy = in_other(d, mnt, other) / "big"
    assert os.stat(copy).st_size == 64 * MiB + 4321
    assert sha256(copy, drop_cache=True) == expected


# -- rename -------------------------------------------------------------------------------------------
def test_rename_file(d: Path) -> None:
    (d / "a").write_bytes(b"A")
    ino = os.stat(d / "a").st_ino
    os.rename(d / "a", d / "b")
    assert os.listdir(d) == ["b"]
    assert (d / "b").read_bytes() == b"A"
    assert os.stat(d / "b").st_ino == ino


def test_rename_file_across_directories(d: Path) -> None:
    (d / "x").mkdir()
    (d / "y").mkdir()
    (d / "x" / "f").write_bytes(b"F")
    os.rename(d / "x" / "f", d / "y" / "g")
    assert os.listdir(d / "x") == []
    assert (d / "y" / "g").read_bytes() == b"F"


def test_rename_replaces_existing_file(d: Path) -> None:
    (d / "a").write_bytes(b"new")
    (d / "b").write_bytes(b"old")
    os.rename(d / "a", d / "b")
    assert os.listdir(d) == ["b"]
    assert (d / "b").read_bytes() == b"new"


def test_rename_directory_with_contents(d: Path) -> None:
    (d / "x" / "sub").mkdir(parents=True)
    (d / "x" / "sub" / "f").write_bytes(b"deep")
    os.rename(d / "x", d / "y")
    assert not (d / "x").exists()
    assert (d / "y" / "sub" / "f").read_bytes() == b"deep"


def test_rename_directory_replaces_empty_directory(d: Path) -> None:
    (d / "x").mkdir()
    (d / "x" / "f").write_bytes(b"F")
    (d / "y").mkdir()
    os.rename(d / "x", d / "y")
    assert os.listdir(d) == ["y"]
    assert os.listdir(d / "y") == ["f"]


def test_rename_directory_over_nonempty_directory_is_enotempty(d: Path) -> None:
    (d / "x").mkdir()
    (d / "y").mkdir()
    (d / "y" / "f").write_bytes(b"F")
    with pytest.raises(OSError) as info:
        os.rename(d / "x", d / "y")
    assert info.value.errno == errno.ENOTEMPTY
    assert sorted(os.listdir(d)) == ["x", "y"]


def test_rename_file_over_directory_is_eisdir(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    (d / "dir").mkdir()
    with pytest.raises(OSError) as info:
        os.rename(d / "f", d / "dir")
    assert info.value.errno == errno.EISDIR


def test_rename_directory_over_file_is_enotdir(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    (d / "dir").mkdir()
    with pytest.raises(OSError) as info:
        os.rename(d / "dir", d / "f")
    assert info.value.errno == errno.ENOTDIR


def test_rename_directory_into_its_own_child_is_einval(d: Path) -> None:
    (d / "x" / "child").mkdir(parents=True)
    with pytest.raises(OSError) as info:
        os.rename(d / "x", d / "x" / "child" / "x")
    assert info.value.errno == errno.EINVAL
    assert (d / "x" / "child").is_dir()


def test_renameat2_noreplace_refuses_existing_target(d: Path) -> None:
    (d / "a").write_bytes(b"A")
    (d / "b").write_bytes(b"B")
    with pytest.raises(OSError) as info:
        renameat2(d / "a", d / "b", RENAME_NOREPLACE)
    assert info.value.errno == errno.EEXIST
    assert (d / "b").read_bytes() == b"B"
    renameat2(d / "a", d / "c", RENAME_NOREPLACE)
    assert sorted(os.listdir(d)) == ["b", "c"]


def test_renameat2_exchange_swaps_two_files_and_two_directories(
    d: Path, mnt: Mount, other: Mount
) -> None:
    (d / "a").write_bytes(b"A")
    (d / "b").write_bytes(b"B")
    (d / "x").mkdir()
    (d / "x" / "in-x").write_bytes(b"X")
    (d / "y").mkdir()
    ino_a = os.stat(d / "a").st_ino
    renameat2(d / "a", d / "b", RENAME_EXCHANGE)
    renameat2(d / "x", d / "y", RENAME_EXCHANGE)
    assert (d / "a").read_bytes() == b"B" and (d / "b").read_bytes() == b"A"
    assert os.stat(d / "b").st_ino == ino_a
    assert os.listdir(d / "y") == ["in-x"] and os.listdir(d / "x") == []
    with pytest.raises(FileNotFoundError):
        renameat2(d / "a", d / "missing", RENAME_EXCHANGE)
    with pytest.raises(OSError) as info:  # a directory and its own child
        renameat2(d / "y", d / "y" / "in-x", RENAME_EXCHANGE)
    assert info.value.errno == errno.EINVAL
    publish(mnt, other)
    seen = in_other(d, mnt, other)
    assert (seen / "a").read_bytes() == b"B" and (seen / "b").read_bytes() == b"A"
    assert os.listdir(seen / "y") == ["in-x"] and os.listdir(seen / "x") == []


def test_rename_of_open_file_keeps_the_handle_working(d: Path) -> None:
    with open(d / "a", "w+b") as f:
        f.write(b"one")
        f.flush()
        os.rename(d / "a", d / "b")
        f.write(b"two")
        f.flush()
        f.seek(0)
        assert f.read() == b"onetwo"
    assert (d / "b").read_bytes() == b"onetwo"


# -- unlink, mkdir, rmdir ----------------------------------------------------------------------------
def test_unlink(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    os.unlink(d / "f")
    assert not (d / "f").exists()
    assert os.listdir(d) == []


def test_unlink_missing_is_enoent(d: Path) -> None:
    with pytest.raises(FileNotFoundError):
        os.unlink(d / "missing")


def test_unlink_directory_is_eisdir(d: Path) -> None:
    (d / "dir").mkdir()
    with pytest.raises(OSError) as info:
        os.unlink(d / "dir")
    assert info.value.errno == errno.EISDIR


def test_mkdir_rmdir(d: Path) -> None:
    os.mkdir(d / "dir", 0o750)
    assert stat.S_IMODE(os.stat(d / "dir").st_mode) == 0o750 & ~_umask()
    os.rmdir(d / "dir")
    assert os.listdir(d) == []


def test_mkdir_existing_is_eexist(d: Path) -> None:
    os.mkdir(d / "dir")
    with pytest.raises(FileExistsError):
        os.mkdir(d / "dir")


def test_rmdir_nonempty_is_enotempty(d: Path) -> None:
    (d / "dir").mkdir()
    (d / "dir" / "f").write_bytes(b"F")
    with pytest.raises(OSError) as info:
        os.rmdir(d / "dir")
    assert info.value.errno == errno.ENOTEMPTY


def test_rmdir_of_file_is_enotdir(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    with pytest.raises(NotADirectoryError):
        os.rmdir(d / "f")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- symlinks ------------------------------------------------------------------------------------------
def test_symlink_readlink_lstat(d: Path) -> None:
    (d / "target").write_bytes(b"T")
    os.symlink("target", d / "link")
    assert os.readlink(d / "link") == "target"
    st = os.lstat(d / "link")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_size == len("target")
    assert (d / "link").read_bytes() == b"T"
    assert os.stat(d / "link").st_ino == os.stat(d / "target").st_ino


def test_dangling_symlink(d: Path) -> None:
    os.symlink("../nowhere/x", d / "link")
    assert os.readlink(d / "link") == "../nowhere/x"
    assert not (d / "link").exists()
    assert (d / "link").is_symlink()


def test_readlink_of_file_is_einval(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    with pytest.raises(OSError) as info:
        os.readlink(d / "f")
    assert info.value.errno == errno.EINVAL


# -- metadata -------------------------------------------------------------------------------------------
def test_chmod(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    os.chmod(d / "f", 0o4751)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o4751
    assert stat.S_ISREG(os.stat(d / "f").st_mode)


def test_chown(d: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    (d / "f").write_bytes(b"F")
    os.chown(d / "f", 1234, 1234)
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (1234, 1234)


def test_lchown_changes_the_symlink_not_its_target(d: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    (d / "f").write_bytes(b"F")
    os.symlink("f", d / "link")
    os.lchown(d / "link", 1234, 4321)
    assert (os.lstat(d / "link").st_uid, os.lstat(d / "link").st_gid) == (1234, 4321)
    assert os.stat(d / "f").st_uid == os.geteuid()


def test_utime_ns_exact(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    os.utime(d / "f", ns=(1_111_111_111_123_456_789, 1_222_222_222_987_654_321))
    st = os.stat(d / "f")
    assert st.st_atime_ns == 1_111_111_111_123_456_789
    assert st.st_mtime_ns == 1_222_222_222_987_654_321


def test_utimensat_utime_omit_sets_only_mtime(d: Path) -> None:
    # GNU tar sets only mtime with UTIME_OMIT for atime; a filesystem that ignores the
    # OMIT (bindfs) gives every extracted file "now".
    (d / "f").write_bytes(b"F")
    os.utime(d / "f", ns=(1_000_000_000_111, 2_000_000_000_222))
    utimensat(d / "f", UTIME_OMIT, 3_000_000_000_333)
    st = os.stat(d / "f")
    assert st.st_mtime_ns == 3_000_000_000_333
    assert st.st_atime_ns == 1_000_000_000_111


def test_utimensat_utime_now_for_atime_only(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    os.utime(d / "f", ns=(1_000_000_000_111, 2_000_000_000_222))
    before = time.time_ns()
    utimensat(d / "f", UTIME_NOW, UTIME_OMIT)
    st = os.stat(d / "f")
    assert st.st_mtime_ns == 2_000_000_000_222
    assert st.st_atime_ns >= before - 1_000_000_000  # "now", allowing for clock granularity


def test_touch_m_d_sets_mtime_keeps_atime(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    os.utime(d / "f", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    subprocess.run(["touch", "-m", "-d", "2001-02-03 04:05:06.789 UTC", str(d / "f")], check=True)
    st = os.stat(d / "f")
    assert st.st_mtime_ns == 981_173_106_789_000_000
    assert st.st_atime_ns == 1_000_000_000_000_000_000


def test_setattr_on_directory_mtime(d: Path) -> None:
    (d / "dir").mkdir()
    os.utime(d / "dir", ns=(5_000_000_000, 6_000_000_007))
    assert os.stat(d / "dir").st_mtime_ns == 6_000_000_007


def test_statvfs_is_sane(d: Path) -> None:
    st = os.statvfs(d)
    assert st.f_bsize > 0 and st.f_frsize > 0
    assert st.f_blocks > 0
    assert 0 < st.f_bavail <= st.f_bfree <= st.f_blocks
    assert st.f_namemax == 255


def test_statvfs_used_follows_committed_size(d: Path, mnt: Mount) -> None:
    mnt.commit()  # earlier tests' changes: publish them so only ours is measured
    before = os.statvfs(d)
    size = 3 * MiB + 5
    (d / "f").write_bytes(os.urandom(size))
    assert os.statvfs(d).f_blocks - os.statvfs(d).f_bfree == before.f_blocks - before.f_bfree
    mnt.commit()
    after = os.statvfs(d)
    grown = (after.f_blocks - after.f_bfree) - (before.f_blocks - before.f_bfree)
    assert abs(grown * after.f_frsize - size) < after.f_frsize


def test_fsync_and_fdatasync_succeed(d: Path) -> None:
    with open(d / "f", "wb") as f:
        f.write(b"durable")
        f.flush()
        os.fsync(f.fileno())
        os.fdatasync(f.fileno())
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    assert (d / "f").read_bytes() == b"durable"


# -- extended attributes ---------------------------------------------------------------------------------
def test_xattrs_set_get_list_remove(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    os.setxattr(d / "f", "user.a", b"1")
    os.setxattr(d / "f", "user.b", b"\0binary\xff")
    assert os.getxattr(d / "f", "user.a") == b"1"
    assert os.getxattr(d / "f", "user.b") == b"\0binary\xff"
    assert sorted(os.listxattr(d / "f")) == ["user.a", "user.b"]
    os.removexattr(d / "f", "user.a")
    assert os.listxattr(d / "f") == ["user.b"]


def test_getxattr_missing_is_enodata(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    with pytest.raises(OSError) as info:
        os.getxattr(d / "f", "user.missing")
    assert info.value.errno == errno.ENODATA


def test_removexattr_missing_is_enodata(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    with pytest.raises(OSError) as info:
        os.removexattr(d / "f", "user.missing")
    assert info.value.errno == errno.ENODATA


def test_setxattr_create_and_replace_flags(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    os.setxattr(d / "f", "user.a", b"1", os.XATTR_CREATE)
    with pytest.raises(FileExistsError):
        os.setxattr(d / "f", "user.a", b"2", os.XATTR_CREATE)
    with pytest.raises(OSError) as info:
        os.setxattr(d / "f", "user.b", b"2", os.XATTR_REPLACE)
    assert info.value.errno == errno.ENODATA
    os.setxattr(d / "f", "user.a", b"3", os.XATTR_REPLACE)
    assert os.getxattr(d / "f", "user.a") == b"3"


def test_xattrs_on_a_directory(d: Path) -> None:
    os.setxattr(d, "user.dir", b"yes")
    assert os.getxattr(d, "user.dir") == b"yes"


# -- hard links --------------------------------------------------------------------------------------------
def test_hard_link_shares_inode_and_counts_links(d: Path) -> None:
    (d / "a").write_bytes(b"A")
    os.link(d / "a", d / "b")
    assert os.stat(d / "a").st_ino == os.stat(d / "b").st_ino
    assert os.stat(d / "a").st_nlink == 2
    assert os.stat(d / "b").st_nlink == 2
    os.unlink(d / "b")
    assert os.stat(d / "a").st_nlink == 1  # no stale attribute despite long attr timeouts


def test_hard_link_nlink_drops_when_renamed_over(d: Path) -> None:
    (d / "a").write_bytes(b"A")
    os.link(d / "a", d / "b")
    (d / "c").write_bytes(b"C")
    os.stat(d / "a")  # the kernel caches a's attributes (nlink 2)
    os.rename(d / "c", d / "b")
    assert os.stat(d / "a").st_nlink == 1
    assert (d / "b").read_bytes() == b"C"


def test_hard_link_writes_visible_through_the_other_name(d: Path) -> None:
    (d / "a").write_bytes(b"before")
    os.link(d / "a", d / "b")
    with open(d / "a", "r+b") as f:
        f.write(b"AFTER!")
    assert (d / "b").read_bytes() == b"AFTER!"
    os.truncate(d / "b", 2)
    assert (d / "a").read_bytes() == b"AF"
    os.chmod(d / "b", 0o600)
    assert stat.S_IMODE(os.stat(d / "a").st_mode) == 0o600


def test_hard_link_to_directory_is_eperm(d: Path) -> None:
    (d / "dir").mkdir()
    with pytest.raises(PermissionError):
        os.link(d / "dir", d / "dir2")


def test_hard_links_survive_commit_and_reload(d: Path, mnt: Mount, other: Mount) -> None:
    # As on ext4 (and Modal's v2 volumes): a snapshot records which names share one file.
    (d / "sub").mkdir()
    (d / "a").write_bytes(b"shared")
    os.link(d / "a", d / "b")
    os.link(d / "a", d / "sub" / "c")
    publish(mnt, other)
    seen = in_other(d, mnt, other)
    a, b, c = seen / "a", seen / "b", seen / "sub" / "c"
    assert os.stat(c).st_nlink == 3  # right before the other names were looked up
    assert os.stat(a).st_ino == os.stat(b).st_ino == os.stat(c).st_ino
    assert os.stat(a).st_nlink == 3
    with open(b, "r+b") as f:  # a write through one name is seen through the others
        f.write(b"SH")
    assert a.read_bytes() == c.read_bytes() == b"SHared"
    os.unlink(c)
    assert os.stat(a).st_nlink == 2
    other.commit()
    mnt.reload()
    assert (d / "a").read_bytes() == (d / "b").read_bytes() == b"SHared"
    assert os.stat(d / "a").st_ino == os.stat(d / "b").st_ino
    assert os.stat(d / "a").st_nlink == 2 and not (d / "sub" / "c").exists()


# -- open-unlinked files --------------------------------------------------------------------------------------
def test_open_unlinked_file_keeps_working_without_fuse_hidden(d: Path) -> None:
    sub = d / "sub"
    sub.mkdir()
    with open(sub / "f", "w+b") as f:
        f.write(b"before")
        f.flush()
        os.unlink(sub / "f")
        assert os.listdir(sub) == []  # no .fuse_hidden* stand-in
        f.write(b"-after")
        f.flush()
        f.seek(0)
        assert f.read() == b"before-after"
        assert os.fstat(f.fileno()).st_nlink == 0
        assert os.fstat(f.fileno()).st_size == len(b"before-after")
        os.rmdir(sub)  # empty: the unlinked file does not hold it
    assert os.listdir(d) == []


def test_open_unlinked_committed_file_keeps_its_content(d: Path, mnt: Mount) -> None:
    (d / "f").write_bytes(b"committed")
    mnt.commit()
    with open(d / "f", "rb") as f:
        os.unlink(d / "f")
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert f.read() == b"committed"


def test_tempfile_temporaryfile(d: Path) -> None:
    with tempfile.TemporaryFile(dir=d) as f:
        f.write(b"scratch" * 1000)
        f.seek(0)
        assert f.read() == b"scratch" * 1000
        assert os.listdir(d) == []
    assert os.listdir(d) == []


def test_o_tmpfile_is_eopnotsupp(d: Path) -> None:
    with pytest.raises(OSError) as info:
        os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600)
    assert info.value.errno == errno.EOPNOTSUPP


def test_tempfile_named_temporary_file(d: Path) -> None:
    with tempfile.NamedTemporaryFile(dir=d, suffix=".tmp") as f:
        f.write(b"named")
        f.flush()
        assert Path(f.name).read_bytes() == b"named"
        assert os.listdir(d) == [Path(f.name).name]
    assert os.listdir(d) == []


# -- whole trees --------------------------------------------------------------------------------------------------
def _make_tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "f.txt").write_text("text\n")
    (root / "a" / "b" / "g.bin").write_bytes(os.urandom(70_000))
    (root / "empty").mkdir()
    (root / "x.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "x.sh", 0o755)
    os.symlink("a/f.txt", root / "link")


def test_shutil_copytree_and_rmtree(d: Path, tmp_path: Path) -> None:
    _make_tree(tmp_path / "src")
    shutil.copytree(tmp_path / "src", d / "copy", symlinks=True)
    assert walk(d / "copy") == walk(tmp_path / "src")
    shutil.rmtree(d / "copy")
    assert os.listdir(d) == []


def test_tree_persists_through_commit_into_a_second_mount(
    d: Path, mnt: Mount, other: Mount
) -> None:
    (d / "dir" / "sub").mkdir(parents=True)
    (d / "dir" / "plain").write_bytes(b"plain")
    (d / "dir" / "sub" / "exec").write_bytes(b"#!/bin/sh\necho hi\n")
    (d / "dir" / "sub" / "empty").write_bytes(b"")
    (d / "dir" / "owned").write_bytes(b"owned")
    (d / "big").write_bytes(os.urandom(CHUNK + 1))
    os.chmod(d / "dir" / "sub" / "exec", 0o755)
    os.chmod(d / "dir" / "plain", 0o640)
    os.chmod(d / "dir" / "sub", 0o700)
    if os.geteuid() == 0:
        os.chown(d / "dir" / "owned", 1234, 1234)
    os.symlink("sub/exec", d / "dir" / "link")
    os.symlink("/nowhere", d / "dangling")
    os.setxattr(d / "dir" / "plain", "user.k", b"v\0v")
    os.setxattr(d / "dir" / "sub", "user.dir", b"d")
    for i, path in enumerate(sorted(d.rglob("*"), key=lambda p: -len(p.parts))):
        os.utime(
            path,
            ns=(1_500_000_000_000_000_000 + i, 1_600_000_000_123_456_789 + i),
            follow_symlinks=False,
        )
    expected = walk(d)
    publish(mnt, other)
    assert walk(d) == expected  # the committer's view did not change
    assert walk(in_other(d, mnt, other)) == expected


def test_uncommitted_file_is_invisible_to_another_mount_until_commit(
    d: Path, mnt: Mount, other: Mount
) -> None:
    mnt.commit()
    other.reload()
    seen = in_other(d, mnt, other)
    assert seen.is_dir() and os.listdir(seen) == []
    (d / "f").write_bytes(b"pending")
    other.reload()
    assert not (seen / "f").exists()
    assert os.listdir(seen) == []
    mnt.commit()
    assert not (seen / "f").exists()  # still the old view until it reloads
    other.reload()
    assert (seen / "f").read_bytes() == b"pending"


# -- what is not supported: clear errnos -------------------------------------------------------------------------
def test_fifos_and_device_nodes_are_files_of_their_own_kind(
    d: Path, mnt: Mount, other: Mount
) -> None:
    if os.geteuid() != 0:
        pytest.skip("device nodes need root")
    os.mkfifo(d / "fifo", 0o640)
    os.mknod(d / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(d / "loop", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.chown(d / "fifo", 1234, 5678)
    with pytest.raises(PermissionError):  # a FUSE mount is nodev: nodes are kept, not opened
        open(d / "null", "wb")
    publish(mnt, other)
    seen = in_other(d, mnt, other)
    fifo, null, loop = (os.stat(seen / n) for n in ("fifo", "null", "loop"))
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o640
    assert (fifo.st_uid, fifo.st_gid) == (1234, 5678)
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 0)
    received = []
    reader = threading.Thread(target=lambda: received.append((seen / "fifo").read_bytes()))
    reader.start()
    (seen / "fifo").write_bytes(b"through the pipe")
    reader.join(10)
    assert received == [b"through the pipe"]


def test_mknod_regular_file_works(d: Path) -> None:
    os.mknod(d / "f", 0o600 | stat.S_IFREG)
    assert stat.S_ISREG(os.stat(d / "f").st_mode)
    assert os.stat(d / "f").st_size == 0


def test_fallocate_is_eopnotsupp(d: Path) -> None:
    # pyfuse3 has no fallocate handler: libfuse answers ENOSYS and the kernel reports
    # EOPNOTSUPP (for every later call too, without asking the daemon again).
    with open(d / "f", "wb") as f:
        f.write(b"data")
        f.flush()
        for mode in (0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE):
            with pytest.raises(OSError) as info:
                fallocate(f.fileno(), mode, 0, MiB)
            assert info.value.errno == errno.EOPNOTSUPP
    assert (d / "f").read_bytes() == b"data"


def test_posix_fallocate_is_emulated_by_glibc(d: Path) -> None:
    # glibc falls back to writing a zero byte per block when fallocate(2) says EOPNOTSUPP.
    with open(d / "f", "wb") as f:
        f.write(b"data")
        f.flush()
        os.posix_fallocate(f.fileno(), 0, 64 * 1024)
    assert os.stat(d / "f").st_size == 64 * 1024
    assert (d / "f").read_bytes() == b"data" + b"\0" * (64 * 1024 - 4)


def test_flock_is_local_to_the_machine(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    with open(d / "f", "rb") as a, open(d / "f", "rb") as b:
        fcntl.flock(a, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError):
            fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(a, fcntl.LOCK_UN)
        fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)


# -- changing committed content (copy-up from blobs into scratch) ------------------------------------------------
def _committed(d: Path, mnt: Mount, data: bytes) -> Path:
    (d / "f").write_bytes(data)
    mnt.commit()  # the scratch file becomes blobs: the next change copies it up
    return d / "f"


def test_overwrite_in_the_middle_of_a_committed_file(d: Path, mnt: Mount) -> None:
    f = _committed(d, mnt, b"0123456789")
    with open(f, "r+b") as g:
        g.seek(4)
        g.write(b"xy")
    assert f.read_bytes() == b"0123xy6789"
    assert sha256(f, drop_cache=True) == hashlib.sha256(b"0123xy6789").hexdigest()


def test_append_to_a_committed_multichunk_file(d: Path, mnt: Mount) -> None:
    data = os.urandom(CHUNK + 100)
    f = _committed(d, mnt, data)
    with open(f, "ab") as g:
        g.write(b"tail")
    assert os.stat(f).st_size == len(data) + 4
    assert sha256(f, drop_cache=True) == hashlib.sha256(data + b"tail").hexdigest()


def test_truncate_a_committed_file(d: Path, mnt: Mount) -> None:
    f = _committed(d, mnt, b"0123456789")
    os.truncate(f, 3)
    os.truncate(f, 6)
    assert f.read_bytes() == b"012\0\0\0"


def test_o_trunc_a_committed_file(d: Path, mnt: Mount) -> None:
    f = _committed(d, mnt, b"old content")
    with open(f, "wb") as g:
        g.write(b"new")
    assert f.read_bytes() == b"new"


def test_file_open_across_a_commit_keeps_writing(d: Path, mnt: Mount, other: Mount) -> None:
    with open(d / "f", "wb") as f:
        f.write(b"first")
        f.flush()
        mnt.commit()
        f.write(b"-second")
        f.flush()
        mnt.commit()
    other.reload()
    assert (in_other(d, mnt, other) / "f").read_bytes() == b"first-second"


def test_mmap_shared_write_and_read(d: Path) -> None:
    (d / "f").write_bytes(b"\0" * 8192)
    with open(d / "f", "r+b") as f, mmap.mmap(f.fileno(), 8192) as m:
        m[100:105] = b"hello"
        m.flush()
    with open(d / "f", "rb") as g:  # the daemon, not the page cache, answers
        os.posix_fadvise(g.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        data = g.read()
    assert data[100:105] == b"hello"
    assert len(data) == 8192


def test_copy_within_the_mount(d: Path) -> None:
    data = os.urandom(3 * MiB)
    (d / "a").write_bytes(data)
    os.setxattr(d / "a", "user.k", b"v")
    shutil.copy2(d / "a", d / "b")
    assert (d / "b").read_bytes() == data
    assert os.getxattr(d / "b", "user.k") == b"v"
    assert os.stat(d / "b").st_mtime_ns == os.stat(d / "a").st_mtime_ns


def test_rename_over_an_open_file_keeps_it_readable(d: Path) -> None:
    (d / "old").write_bytes(b"old")
    (d / "new").write_bytes(b"new")
    with open(d / "old", "rb") as f:
        os.rename(d / "new", d / "old")
        assert f.read() == b"old"
        assert os.fstat(f.fileno()).st_nlink == 0
    assert (d / "old").read_bytes() == b"new"
    assert os.listdir(d) == ["old"]


def test_many_entries_list_and_remove_while_iterating(d: Path) -> None:
    names = {f"file-{i:04d}" for i in range(1500)}
    for name in names:
        (d / name).touch()
    assert set(os.listdir(d)) == names
    with os.scandir(d) as entries:
        for entry in entries:  # unlinking while the directory is being read
            os.unlink(entry.path)
    assert os.listdir(d) == []


def test_long_and_unicode_names(d: Path) -> None:
    (d / ("n" * 255)).write_bytes(b"x")
    (d / "ünï cödé ✓").write_bytes(b"y")
    assert sorted(os.listdir(d)) == sorted(["n" * 255, "ünï cödé ✓"])
    with pytest.raises(OSError) as info:
        (d / ("n" * 256)).write_bytes(b"x")
    assert info.value.errno == errno.ENAMETOOLONG


# -- what each kind of change publishes -----------------------------------------------------------------------------
def test_metadata_only_changes_persist(d: Path, mnt: Mount, other: Mount) -> None:
    (d / "f").write_bytes(b"F")
    os.setxattr(d / "f", "user.gone", b"1")
    mnt.commit()
    os.chmod(d / "f", 0o600)
    os.utime(d / "f", ns=(7_000_000_000, 8_000_000_009))
    os.setxattr(d / "f", "user.new", b"2")
    os.removexattr(d / "f", "user.gone")
    publish(mnt, other)
    seen = in_other(d, mnt, other) / "f"
    st = os.stat(seen)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_mtime_ns == 8_000_000_009
    assert os.listxattr(seen) == ["user.new"]
    assert seen.read_bytes() == b"F"


def test_renames_and_removals_of_committed_things_persist(
    d: Path, mnt: Mount, other: Mount
) -> None:
    (d / "dir" / "sub").mkdir(parents=True)
    (d / "dir" / "sub" / "f").write_bytes(b"F")
    (d / "gone").write_bytes(b"G")
    (d / "gonedir").mkdir()
    mnt.commit()
    os.rename(d / "dir", d / "moved")
    os.unlink(d / "gone")
    os.rmdir(d / "gonedir")
    publish(mnt, other)
    seen = in_other(d, mnt, other)
    assert sorted(os.listdir(seen)) == ["moved"]
    assert (seen / "moved" / "sub" / "f").read_bytes() == b"F"


def test_open_unlinked_file_is_not_committed(d: Path, mnt: Mount, other: Mount) -> None:
    with open(d / "f", "wb") as f:
        f.write(b"ghost")
        f.flush()
        os.unlink(d / "f")
        publish(mnt, other)
        f.write(b" still writable")
    assert os.listdir(in_other(d, mnt, other)) == []


def test_metadata_of_the_mount_root_persists(d: Path, mnt: Mount, other: Mount) -> None:
    os.setxattr(mnt.path, "user.root", b"r")
    os.chmod(mnt.path, 0o775)
    try:
        publish(mnt, other)
        assert os.getxattr(other.path, "user.root") == b"r"
        assert stat.S_IMODE(os.stat(other.path).st_mode) == 0o775
    finally:
        os.removexattr(mnt.path, "user.root")
        os.chmod(mnt.path, 0o755)


def test_setgid_directory_passes_its_group_on(d: Path) -> None:
    # As on ext4/tmpfs: new entries take the directory's group; new subdirectories also
    # keep the setgid bit.
    if os.geteuid() != 0:
        pytest.skip("needs root")
    os.chown(d, 0, 777)
    os.chmod(d, 0o2775)
    (d / "f").touch()
    (d / "sub").mkdir()
    os.symlink("f", d / "link")
    assert os.stat(d / "f").st_gid == 777
    assert os.stat(d / "sub").st_gid == 777
    assert os.stat(d / "sub").st_mode & stat.S_ISGID
    assert os.lstat(d / "link").st_gid == 777


def test_metadata_changes_on_an_open_unlinked_file_do_not_break_recovery(place: Path) -> None:
    # fchmod/fsetxattr/futimens on a file with no name left: nothing to journal, and the
    # journal must stay replayable so `volfs recover` still commits the rest.
    store = place / "store"
    run_volfs(store, "volume", "create", "posix-crash")
    with mounted(store, "posix-crash", place / "crash") as mount:
        (mount.path / "keep").write_bytes(b"keep me")
        fd = os.open(mount.path / "tmp", os.O_RDWR | os.O_CREAT)
        try:
            os.unlink(mount.path / "tmp")
            os.fchmod(fd, 0o600)
            os.setxattr(fd, "user.x", b"1")
            os.utime(fd, ns=(1, 2))
            mount.proc.kill()  # the daemon dies: its journal is all that is left
            mount.proc.wait(timeout=15)
        finally:
            with contextlib.suppress(OSError):  # ENOTCONN from the dead mount; fd is closed
                os.close(fd)
    run_volfs(store, "recover")
    listing = run_volfs(store, "volume", "ls", "posix-crash").stdout
    assert "keep" in listing and "tmp" not in listing


def test_utime_now_sets_both_times(d: Path) -> None:
    (d / "f").write_bytes(b"F")
    os.utime(d / "f", ns=(1_000_000_000, 1_000_000_000))
    before = time.time_ns()
    os.utime(d / "f")  # utimensat(NULL): UTIME_NOW for both, as `touch` does
    st = os.stat(d / "f")
    assert st.st_atime_ns >= before - 1_000_000_000
    assert st.st_mtime_ns >= before - 1_000_000_000


def test_rename_between_two_names_of_one_file_does_nothing(d: Path) -> None:
    (d / "a").write_bytes(b"A")
    os.link(d / "a", d / "b")
    os.rename(d / "a", d / "b")  # POSIX: same file, nothing happens, success
    assert sorted(os.listdir(d)) == ["a", "b"]
    assert os.stat(d / "a").st_nlink == 2


def test_inode_numbers_stay_while_mounted(d: Path, mnt: Mount) -> None:
    (d / "f").write_bytes(b"F")
    (d / "dir").mkdir()
    before = (os.stat(d / "f").st_ino, os.stat(d / "dir").st_ino)
    mnt.commit()
    os.rename(d / "f", d / "dir" / "g")
    assert (os.stat(d / "dir" / "g").st_ino, os.stat(d / "dir").st_ino) == before


def test_open_file_in_a_renamed_directory_commits_at_the_new_path(
    d: Path, mnt: Mount, other: Mount
) -> None:
    (d / "old").mkdir()
    with open(d / "old" / "f", "wb") as f:
        f.write(b"one")
        f.flush()
        os.rename(d / "old", d / "new")
        f.write(b"two")
        f.flush()
        publish(mnt, other)
    seen = in_other(d, mnt, other)
    assert os.listdir(seen) == ["new"]
    assert (seen / "new" / "f").read_bytes() == b"onetwo"


# -- a fresh view: committed directories load lazily ----------------------------------------------------------------
def test_rmdir_of_an_unlisted_committed_directory_is_enotempty(
    d: Path, mnt: Mount, other: Mount
) -> None:
    (d / "dir" / "sub").mkdir(parents=True)
    (d / "dir" / "sub" / "f").write_bytes(b"F")
    publish(mnt, other)
    seen = in_other(d, mnt, other)
    with pytest.raises(OSError) as info:
        os.rmdir(seen / "dir")  # never listed in this mount: its children load on demand
    assert info.value.errno == errno.ENOTEMPTY


def test_rename_of_an_unlisted_committed_directory_keeps_its_contents(
    d: Path, mnt: Mount, other: Mount
) -> None:
    (d / "dir" / "sub").mkdir(parents=True)
    (d / "dir" / "sub" / "f").write_bytes(b"F")
    os.setxattr(d / "dir" / "sub", "user.k", b"v")
    publish(mnt, other)
    seen = in_other(d, mnt, other)
    os.rename(seen / "dir", seen / "moved")
    assert (seen / "moved" / "sub" / "f").read_bytes() == b"F"
    assert os.getxattr(seen / "moved" / "sub", "user.k") == b"v"
    assert os.listdir(seen) == ["moved"]


def test_a_unix_socket_binds_and_its_node_is_committed(d: Path, mnt: Mount, other: Mount) -> None:
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(str(d / "sock"))
        server.listen(1)
        client.connect(str(d / "sock"))
        conn, _ = server.accept()
        with conn:
            client.sendall(b"hi")
            assert conn.recv(2) == b"hi"
    publish(mnt, other)
    assert stat.S_ISSOCK(os.lstat(in_other(d, mnt, other) / "sock").st_mode)


def test_posix_acl_xattr_is_stored(d: Path) -> None:
    # Stored and committed like any xattr, but not enforced: pyfuse3's enable_acl is off,
    # so the kernel checks the mode bits only (a README deviation).
    acl = (2).to_bytes(4, "little") + b"".join(
        tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + uid.to_bytes(4, "little")
        for tag, perm, uid in [
            (1, 6, 2**32 - 1),
            (2, 4, 1234),
            (4, 0, 2**32 - 1),
            (0x10, 4, 2**32 - 1),
            (0x20, 0, 2**32 - 1),
        ]
    )
    (d / "f").write_bytes(b"F")
    os.setxattr(d / "f", "system.posix_acl_access", acl)
    assert os.getxattr(d / "f", "system.posix_acl_access") == acl


def test_setxattr_through_a_symlink_lands_on_its_target(d: Path) -> None:
    # fuse-overlayfs deadlocks here (its daemon follows the link into its own mount).
    (d / "f").write_bytes(b"F")
    os.symlink(str(d / "f"), d / "link")  # absolute: the target is inside this mount
    os.setxattr(d / "link", "user.via", b"link")
    assert os.getxattr(d / "f", "user.via") == b"link"


def test_user_xattr_on_the_symlink_itself_is_eperm(d: Path) -> None:
    os.symlink("f", d / "link")
    with pytest.raises(PermissionError):
        os.setxattr(d / "link", "user.x", b"1", follow_symlinks=False)
