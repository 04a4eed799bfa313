"""A mount behaves like ext4 where the volume format can (DESIGN §2 "Reads and writes …").

End-to-end checks on real mounts (``--autocommit 0``), each written against what a good
Linux filesystem does, not against what volfs did before:

- sparse files and holes cost what was written, never the apparent size (scratch files,
  blobs, the daemon's fds);
- a committed file opened for writing is copied up by chunk, not whole;
- a tar archive full of the awkward things (FIFOs, devices, hard links, sparse files,
  255-byte and non-UTF-8 names, setuid/setgid/sticky, ns and post-2038 mtimes, xattrs)
  extracts into one mount and compares clean in another after commit → reload, with
  ``tar -d`` and ``rsync --checksum --dry-run``;
- ENAMETOOLONG for every operation on a 256-byte component;
- ``renameat2(RENAME_EXCHANGE)`` of files and directories;
- timestamps never run backwards under ``touch``;
- FIFOs, device nodes and unix socket nodes exist, work, and survive commit → reload;
- hard links survive commit → reload (one st_ino, the current st_nlink).

How the costs are measured (counts, never timings):
- *files in the overlay*: the regular files under ``<store>/overlays/<mount>/scratch/``
  (the overlay whose ``mount.json`` names this mount's path and pid);
- *bytes in the overlay*: the sum of ``st_blocks * 512`` over those files — the disk the
  mount really spent. We use it rather than the daemon's ``wchar`` in ``/proc/PID/io``:
  ``wchar`` also counts the daemon's log lines, control-socket replies and LMDB writes,
  and depends on *how* a copy was made (``write`` vs ``copy_file_range``), while the
  allocated blocks of the scratch files are exactly the local copy the issue is about
  (and count reflinked extents too, so a copy cannot hide);
- *blobs*: the files ``<store>/blobs/ab/cd…`` named by a digest (one per chunk blob),
  before and after a commit;
- *fds*: the entries of ``/proc/<daemon pid>/fd``.

tar and rsync must be installed (``scripts/setup`` should install ``rsync``; tar is in
every Debian base image); the tests that need them skip with a reason otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import random
import select
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.mounting import Mount, mounted, run_volfs

pytestmark = pytest.mark.mount

VOLUME = "fidelity"
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB
CHUNK = 8 * MiB  # volfs/config.py CHUNK_SIZE, as the README's store format says
#: "At most a handful" of scratch files for a few huge sparse files.
HANDFUL = 16
#: What "copies nothing" allows in the overlay: a scratch file's own bookkeeping (a small
#: header or extent map takes a block or a few), far below any chunk (8 MiB) of content.
BOOKKEEPING = 64 * KiB
AT_FDCWD = -100
RENAME_EXCHANGE = 2

libc = ctypes.CDLL(None, use_errno=True)


# -- helpers ---------------------------------------------------------------------------------------
def renameat2(old: Path, new: Path, flags: int) -> None:
    if not hasattr(libc, "renameat2"):
        pytest.skip("libc has no renameat2")
    func = libc.renameat2
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if func(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(old), None, str(new))


def overlay_dir(mount: Mount) -> Path:
    """The overlay directory of this mount's daemon (its ``mount.json`` names path and pid)."""
    found = []
    for overlay in (mount.store / "overlays").iterdir():
        try:
            record = json.loads((overlay / "mount.json").read_text())
        except (OSError, ValueError):
            continue
        if record.get("path") == str(mount.path) and record.get("pid") == mount.proc.pid:
            found.append((record.get("started_at", 0), overlay))
    assert found, f"no overlay of {mount.path} (pid {mount.proc.pid}) in {mount.store / 'overlays'}"
    return max(found)[1]


def scratch_files(mount: Mount) -> list[os.stat_result]:
    result = []
    for dirpath, _, filenames in os.walk(overlay_dir(mount) / "scratch"):
        for name in filenames:
            with_stat = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(with_stat.st_mode):
                result.append(with_stat)
    return result


def scratch_count(mount: Mount) -> int:
    return len(scratch_files(mount))


def scratch_bytes(mount: Mount) -> int:
    """Disk the overlay's scratch files really occupy (allocated blocks, not apparent size)."""
    return sum(st.st_blocks * 512 for st in scratch_files(mount))


_HEX = frozenset("0123456789abcdef")


def blob_count(store: Path) -> int:
    """Blobs in the store: files ``blobs/ab/cd…`` named by a 32-hex-digit digest (not the
    store's lock or temp files)."""
    count = 0
    for prefix in os.listdir(store / "blobs"):
        if len(prefix) != 2 or not set(prefix) <= _HEX or not (store / "blobs" / prefix).is_dir():
            continue
        count += sum(
            1
            for name in os.listdir(store / "blobs" / prefix)
            if len(name) == 30 and set(name) <= _HEX
        )
    return count


def daemon_fds(mount: Mount) -> int:
    return len(os.listdir(f"/proc/{mount.proc.pid}/fd"))


def pread_cold(path: Path, length: int, offset: int) -> bytes:
    """Reads with the file's page cache dropped first, so the daemon serves the bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def pwrite(path: Path, data: bytes, offset: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, offset) == len(data)
    finally:
        os.close(fd)


def run(
    *argv: str | Path, timeout: float = 120, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload]
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def bind_socket(directory: Path, name: str) -> None:
    """Creates a unix socket node by bind(), from a child whose cwd is ``directory`` (a
    sun_path holds 108 bytes only; tmp paths can be longer)."""
    proc = run(
        sys.executable,
        "-c",
        f"import socket; s = socket.socket(socket.AF_UNIX); s.bind({name!r}); s.close()",
        cwd=directory,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


def pattern(index: int, length: int) -> bytes:
    """Cheap distinct content: ``length`` bytes of a pattern stamped with ``index``."""
    stamp = f"<{index:012d}>".encode()
    return (stamp * (length // len(stamp) + 1))[:length]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/setup must install it)")
    return path


def fifo_round_trip(path: Path, payload: bytes = b"through the fifo\n" * 100) -> bytes:
    """One thread writes ``payload`` into the FIFO, another reads it; returns what was read.

    Bounded: the reader opens non-blocking first (so the writer's open cannot block) and
    polls with a deadline; the threads are joined with a timeout.
    """
    received = bytearray()
    errors: list[BaseException] = []
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def reader() -> None:
        try:
            deadline = time.monotonic() + 20
            poller = select.poll()
            poller.register(rfd, select.POLLIN | select.POLLHUP)
            while time.monotonic() < deadline:
                if not poller.poll(200):
                    continue
                try:
                    block = os.read(rfd, 65536)
                except BlockingIOError:
                    continue
                if not block:
                    if len(received) >= len(payload):
                        return
                    time.sleep(0.01)  # no writer yet: EOF until one opens
                    continue
                received.extend(block)
        except BaseException as exc:
            errors.append(exc)

    def writer() -> None:
        try:
            wfd = os.open(path, os.O_WRONLY)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(wfd, view) :]
            finally:
                os.close(wfd)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=reader, daemon=True),
        threading.Thread(target=writer, daemon=True),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(t.is_alive() for t in threads), "the FIFO round trip did not finish"
    finally:
        os.close(rfd)
    assert not errors, errors
    return bytes(received)


# -- fixtures --------------------------------------------------------------------------------------
def _show_log_on_failure(request: pytest.FixtureRequest, mount: Mount, failed: int) -> None:
    if request.session.testsfailed > failed:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"--- daemon log of {mount.path} during {request.node.name} ---")
            reporter.write_line(mount.log_text() or "(nothing)")


@pytest.fixture
def volume(store_path: Path) -> Path:
    run_volfs(store_path, "volume", "create", VOLUME)
    return store_path


@contextlib.contextmanager
def _mount(store: Path, path: Path, request: pytest.FixtureRequest) -> Iterator[Mount]:
    """``mounted()``, plus the daemon's log on failure and its overlay removed afterwards
    (a test that failed on a huge sparse file may leave 100,000s of scratch files)."""
    failed = request.session.testsfailed
    with mounted(store, VOLUME, path) as mount:
        overlay = overlay_dir(mount)
        yield mount
    _show_log_on_failure(request, mount, failed)
    shutil.rmtree(overlay, ignore_errors=True)


@pytest.fixture
def a(volume: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mount]:
    """The mount a test writes in."""
    with _mount(volume, tmp_path / "a", request) as mount:
        yield mount


@pytest.fixture
def b(volume: Path, tmp_path: Path, request: pytest.FixtureRequest, a: Mount) -> Iterator[Mount]:
    """A second mount of the same volume, started after ``a`` and before it commits: sees
    ``a``'s changes only once ``a`` commits and it reloads."""
    with _mount(volume, tmp_path / "b", request) as mount:
        yield mount


def publish(src: Mount, dst: Mount) -> None:
    src.commit()
    dst.reload()


# -- sparse files: cost grows with the bytes written -----------------------------------------------
@pytest.mark.timeout(300)
def test_huge_sparse_files_cost_what_was_written(a: Mount) -> None:
    fds_before = daemon_fds(a)
    f, g = a.path / "f", a.path / "g"

    proc = run("truncate", "-s", "1T", f)
    assert proc.returncode == 0, proc.stderr
    # Checked before the 8 TiB one: a per-chunk scratch layout makes 131,072 files here.
    assert scratch_count(a) <= HANDFUL, f"{scratch_count(a)} scratch files for a 1 TiB hole"
    proc = run("truncate", "-s", "8T", g)
    assert proc.returncode == 0, proc.stderr
    assert scratch_count(a) <= HANDFUL, f"{scratch_count(a)} scratch files for 9 TiB of holes"
    assert os.stat(f).st_size == TiB
    assert os.stat(g).st_size == 8 * TiB

    # The holes' commit: at most the one all-zero chunk blob, if holes are stored as blobs.
    blobs = blob_count(a.store)
    a.commit()
    assert blob_count(a.store) - blobs <= 1
    assert daemon_fds(a) - fds_before < 64

    # 4 KiB at 900 GiB: one chunk of data, so its commit stores exactly one new blob.
    data = pattern(900, 4 * KiB)
    pwrite(f, data, 900 * GiB)
    assert scratch_count(a) <= HANDFUL
    assert scratch_bytes(a) <= CHUNK + MiB
    blobs = blob_count(a.store)
    a.commit()
    assert blob_count(a.store) - blobs == 1
    assert daemon_fds(a) - fds_before < 64

    # Holes read as zeros; the data reads back.
    assert pread_cold(f, 64 * KiB, 500 * GiB) == bytes(64 * KiB)
    assert pread_cold(f, 12 * KiB, 900 * GiB - 4 * KiB) == bytes(4 * KiB) + data + bytes(4 * KiB)
    assert pread_cold(f, 8 * KiB, TiB - 4 * KiB) == bytes(4 * KiB)  # short read at EOF
    assert pread_cold(g, 64 * KiB, 8 * TiB - 64 * KiB) == bytes(64 * KiB)
    assert os.stat(f).st_size == TiB

    # Past ext4's 16 TiB limit: EFBIG is fine, a sparse success too, but not 119 M files.
    huge = 999_999_999_999_999
    proc = run("truncate", "-s", str(huge), a.path / "h")
    if proc.returncode == 0:
        assert os.stat(a.path / "h").st_size == huge
    else:
        assert "File too large" in proc.stderr, proc.stderr  # EFBIG
    assert scratch_count(a) <= HANDFUL
    assert daemon_fds(a) - fds_before < 64


# -- copy-up by chunk ------------------------------------------------------------------------------
GIB_FILE = "big.bin"
_BLOCK = random.Random(20260401).randbytes(MiB)


def _gib_content(index: int) -> bytes:
    """MiB number ``index`` of the 1 GiB file: one pseudo-random MiB, stamped with its index
    so every 8 MiB chunk is a distinct blob (identical chunks would hide a re-store)."""
    return index.to_bytes(8, "little") + _BLOCK[8:]


@pytest.fixture(scope="module")
def gib_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose volume holds a committed 1 GiB file (written through a mount)."""
    root = tmp_path_factory.mktemp("gib")
    store = root / "store"
    run_volfs(store, "volume", "create", VOLUME)
    with mounted(store, VOLUME, root / "writer") as writer:
        with open(writer.path / GIB_FILE, "wb") as f:
            for index in range(1024):
                f.write(_gib_content(index))
        writer.commit()
    shutil.rmtree(store / "overlays", ignore_errors=True)
    return store


@pytest.fixture
def gib(gib_store: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mount]:
    """A fresh mount of the 1 GiB volume: the file is committed content, the overlay empty."""
    with _mount(gib_store, tmp_path / "gib", request) as mount:
        yield mount


@pytest.mark.timeout(300)
def test_opening_a_committed_gib_file_for_writing_copies_nothing(gib: Mount) -> None:
    path = gib.path / GIB_FILE
    assert os.stat(path).st_size >= GiB
    before = scratch_bytes(gib)

    def copied() -> int:
        return scratch_bytes(gib) - before

    proc = run("touch", path)  # open(O_WRONLY|O_CREAT) + utimensat(UTIME_NOW)
    assert proc.returncode == 0, proc.stderr
    assert copied() <= BOOKKEEPING, f"touch put {copied()} bytes in the overlay"
    os.utime(path)
    assert copied() <= BOOKKEEPING, f"utime put {copied()} bytes in the overlay"
    with open(path, "r+b"):
        pass
    assert copied() <= BOOKKEEPING, f"open(r+b) put {copied()} bytes in the overlay"
    fd = os.open(path, os.O_WRONLY)
    os.close(fd)
    assert copied() <= BOOKKEEPING, f"open(O_WRONLY) put {copied()} bytes in the overlay"
    assert pread_cold(path, 16, 512 * MiB) == _gib_content(512)[:16]


@pytest.mark.timeout(300)
def test_appending_a_line_to_a_committed_gib_file_copies_at_most_one_chunk(gib: Mount) -> None:
    path = gib.path / GIB_FILE
    size = os.stat(path).st_size
    assert size >= GiB
    before = scratch_bytes(gib)
    line = b"one more line\n"
    with open(path, "ab") as f:
        f.write(line)
    copied = scratch_bytes(gib) - before
    assert copied <= CHUNK + MiB, f"appending {len(line)} bytes put {copied} bytes in the overlay"
    assert os.stat(path).st_size == size + len(line)
    assert pread_cold(path, len(line), size) == line
    assert pread_cold(path, 16, 100 * MiB) == _gib_content(100)[:16]
    blobs = blob_count(gib.store)
    gib.commit()
    assert blob_count(gib.store) - blobs <= 1


# -- tar round trip --------------------------------------------------------------------------------
# Fixed nanosecond mtimes: one with every digit used, one past 2038 (2100-01-01 + ns).
NS_MTIME = 1_234_567_890_123_456_789
FUTURE_MTIME = 4_102_444_800_987_654_321
NAME_255 = "n" * 251 + ".txt"
NAME_255_UTF8 = "é" * 127 + "x"  # 255 bytes, 128 characters
NAME_UNICODE = "héllo wörld ☃ 日本語.txt"
NAME_LATIN1 = b"caf\xe9"  # not UTF-8: names are bytes
SPARSE_SIZE = 64 * MiB
SPARSE_DATA = ((3 * MiB, pattern(1, MiB)), (50 * MiB + 7, pattern(2, 12345)))
HUGE_DATA = (
    (0, pattern(3, 4 * KiB)),
    (512 * GiB + 123, pattern(4, 5000)),
    (TiB - 4 * KiB, pattern(5, 4 * KiB)),
)


def build_source(src: Path) -> None:
    """Everything tar and a volume must keep, on the native disk."""
    src.mkdir()
    (src / "plain.txt").write_bytes(b"hello\n")
    os.setxattr(src / "plain.txt", "user.comment", b"a comment")
    os.setxattr(src / "plain.txt", "user.binary", bytes(range(1, 256)))
    (src / "future.bin").write_bytes(pattern(6, 100_000))
    (src / "empty").write_bytes(b"")
    (src / "emptydir").mkdir()
    os.symlink("plain.txt", src / "link-to-plain")
    os.symlink("../nowhere", src / "dangling")
    # Special files.
    os.mkfifo(src / "fifo", 0o640)
    os.mknod(src / "null", stat.S_IFCHR | 0o620, os.makedev(1, 3))
    os.mknod(src / "loop0", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.chmod(src / "fifo", 0o640)
    os.chmod(src / "null", 0o620)
    os.chmod(src / "loop0", 0o660)
    # A hard link group of three names in two directories, with an xattr on the inode.
    (src / "links").mkdir()
    (src / "other").mkdir()
    (src / "links" / "one").write_bytes(pattern(7, 30_000))
    os.setxattr(src / "links" / "one", "user.group", b"shared")
    os.link(src / "links" / "one", src / "links" / "two")
    os.link(src / "links" / "one", src / "other" / "three")
    # A sparse file: 64 MiB apparent, data at two places.
    with open(src / "sparse.img", "wb") as f:
        for offset, data in SPARSE_DATA:
            f.seek(offset)
            f.write(data)
        f.truncate(SPARSE_SIZE)
    # Names.
    (src / NAME_255).write_bytes(b"255 bytes of name\n")
    (src / NAME_255_UTF8).write_bytes(b"255 bytes, 128 characters\n")
    (src / NAME_UNICODE).write_bytes(b"unicode\n")
    with open(os.path.join(os.fsencode(src), NAME_LATIN1), "wb") as f:
        f.write(b"latin-1\n")
    # Modes.
    (src / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "setuid", 0o4755)
    (src / "setgid").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "setgid", 0o2755)
    (src / "sticky").mkdir()
    os.chmod(src / "sticky", 0o1777)
    (src / "sticky" / "inside").write_bytes(b"in a sticky dir\n")
    os.setxattr(src / "sticky", "user.dir", b"on a directory")
    (src / "sgiddir").mkdir()
    os.chmod(src / "sgiddir", 0o2775)
    (src / "owned").write_bytes(b"someone else's\n")
    os.chown(src / "owned", 1234, 5678)
    # A unix socket node (tar skips sockets: the test binds one in the mount too).
    (src / "sockdir").mkdir()
    bind_socket(src / "sockdir", "sock")
    os.chmod(src / "sockdir" / "sock", 0o755)
    set_times(src)


def set_times(root: Path) -> None:
    """Fixed mtimes everywhere (children before their directory), ns and post-2038 ones."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            mtime = FUTURE_MTIME if name in ("future.bin", "sticky") else NS_MTIME + len(name)
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
    os.utime(root, ns=(NS_MTIME, NS_MTIME))


def build_huge_source(src: Path) -> None:
    """A 1 TiB sparse file, in a tree of its own: only stat and a few reads check it, since
    reading 1 TiB through FUSE (as ``tar -d`` or ``rsync --checksum`` would) is too slow."""
    src.mkdir()
    with open(src / "huge.img", "wb") as f:
        for offset, data in HUGE_DATA:
            f.seek(offset)
            f.write(data)
    assert os.stat(src / "huge.img").st_size == TiB
    os.utime(src / "huge.img", ns=(FUTURE_MTIME, FUTURE_MTIME))


def check_huge(path: Path) -> None:
    st = os.stat(path)
    assert st.st_size == TiB
    assert st.st_mtime_ns == FUTURE_MTIME
    for offset, data in HUGE_DATA:
        assert pread_cold(path, len(data), offset) == data
    assert pread_cold(path, 64 * KiB, 256 * GiB) == bytes(64 * KiB)


def bind_socket_like_source(src: Path, dest: Path) -> None:
    """tar skips sockets: make the same node by bind() and give it (and its directory,
    which the bind touched) the source's metadata."""
    bind_socket(dest / "sockdir", "sock")
    sock = os.lstat(src / "sockdir" / "sock")
    os.chmod(dest / "sockdir" / "sock", stat.S_IMODE(sock.st_mode))
    os.utime(dest / "sockdir" / "sock", ns=(sock.st_mtime_ns, sock.st_mtime_ns))
    mtime = os.lstat(src / "sockdir").st_mtime_ns
    os.utime(dest / "sockdir", ns=(mtime, mtime))


def check_tree_facts(dest: Path) -> None:
    """What ``tar -d`` may not say out loud: link counts, inode numbers, node types, rdevs."""
    names = [dest / "links" / "one", dest / "links" / "two", dest / "other" / "three"]
    stats = [os.lstat(p) for p in names]
    assert len({st.st_ino for st in stats}) == 1, [st.st_ino for st in stats]
    assert [st.st_nlink for st in stats] == [3, 3, 3]
    fifo, null, loop0 = (os.lstat(dest / n) for n in ("fifo", "null", "loop0"))
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o640
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK(loop0.st_mode) and loop0.st_rdev == os.makedev(7, 0)
    assert stat.S_ISSOCK(os.lstat(dest / "sockdir" / "sock").st_mode)
    assert stat.S_IMODE(os.stat(dest / "setuid").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(dest / "setgid").st_mode) == 0o2755
    assert stat.S_IMODE(os.stat(dest / "sticky").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(dest / "sgiddir").st_mode) == 0o2775
    assert (os.stat(dest / "owned").st_uid, os.stat(dest / "owned").st_gid) == (1234, 5678)
    assert os.stat(dest / "future.bin").st_mtime_ns == FUTURE_MTIME
    assert os.getxattr(dest / "plain.txt", "user.binary") == bytes(range(1, 256))
    assert os.getxattr(dest / "other" / "three", "user.group") == b"shared"
    assert os.stat(dest / "sparse.img").st_size == SPARSE_SIZE


def tar_compare(archive: Path, dest: Path) -> None:
    proc = run("tar", "--xattrs", "-df", archive, "-C", dest, timeout=300)
    assert proc.returncode == 0, f"tar -d found differences:\n{proc.stdout}{proc.stderr}"


def rsync_differences(src: Path, dest: Path) -> str:
    proc = run(
        "rsync",
        "-aHX",
        "--checksum",
        "--itemize-changes",
        "--dry-run",
        f"{src}/",
        f"{dest}/",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.timeout(600)
def test_tar_round_trip_through_commit_and_reload(tmp_path: Path, a: Mount, b: Mount) -> None:
    need("tar")
    need("rsync")
    if os.geteuid() != 0:
        pytest.skip("needs root (device nodes, chown, tar -p)")
    src, srcbig = tmp_path / "src", tmp_path / "srcbig"
    build_source(src)
    build_huge_source(srcbig)
    archive, bigarchive = tmp_path / "tree.tar", tmp_path / "huge.tar"
    for tarball, root in ((archive, src), (bigarchive, srcbig)):
        proc = run(
            "tar",
            "--format=posix",
            "--xattrs",
            "--sparse",
            "-cf",
            tarball,
            "-C",
            root,
            ".",
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr  # ("socket ignored" is a warning only)

    dest, destbig = a.path / "tree", a.path / "huge"
    dest.mkdir()
    destbig.mkdir()
    proc = run("tar", "--xattrs", "--xattrs-include=*", "-xpf", archive, "-C", dest, timeout=300)
    assert proc.returncode == 0, f"tar -x into the mount failed:\n{proc.stderr}"
    proc = run(
        "tar",
        "--xattrs",
        "--xattrs-include=*",
        "--sparse",
        "-xpf",
        bigarchive,
        "-C",
        destbig,
        timeout=300,
    )
    assert proc.returncode == 0, f"tar -x of the 1 TiB sparse file failed:\n{proc.stderr}"
    bind_socket_like_source(src, dest)
    tar_compare(archive, dest)
    check_tree_facts(dest)
    check_huge(destbig / "huge.img")

    publish(a, b)
    seen = b.path / "tree"
    tar_compare(archive, seen)
    check_tree_facts(seen)
    check_huge(b.path / "huge" / "huge.img")
    assert rsync_differences(src, seen) == ""


# -- ENAMETOOLONG ----------------------------------------------------------------------------------
def test_a_256_byte_component_is_enametoolong_everywhere(a: Mount) -> None:
    d = a.path / "names"
    d.mkdir()
    (d / "f").write_bytes(b"F")
    (d / "sub").mkdir()
    results: dict[str, str] = {}
    for label, long in (("ascii", "x" * 256), ("utf8", "é" * 128)):  # both 256 bytes
        assert len(os.fsencode(long)) == 256
        p = d / long
        ops: dict[str, Callable[[], object]] = {
            "stat": lambda: os.stat(p),
            "lstat": lambda: os.lstat(p),
            "stat (middle component)": lambda: os.stat(p / "x"),
            "open": lambda: os.close(os.open(p, os.O_RDONLY)),
            "open O_CREAT": lambda: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)),
            "chmod": lambda: os.chmod(p, 0o600),
            "chown": lambda: os.chown(p, 0, 0),
            "utime": lambda: os.utime(p),
            "getxattr": lambda: os.getxattr(p, "user.x"),
            "link (new name)": lambda: os.link(d / "f", p),
            "rename (to a long name)": lambda: os.rename(d / "f", p),
            "unlink": lambda: os.unlink(p),
            "truncate": lambda: os.truncate(p, 0),
            "rmdir": lambda: os.rmdir(p),
            "mkdir": lambda: os.mkdir(p),
            "mkfifo": lambda: os.mkfifo(p),
            "symlink": lambda: os.symlink("f", p),
        }
        for name, op in ops.items():
            try:
                op()
                results[f"{label} {name}"] = "succeeded"
            except OSError as exc:
                results[f"{label} {name}"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    wrong = {op: got for op, got in results.items() if got != "ENAMETOOLONG"}
    assert wrong == {}, f"expected ENAMETOOLONG (errno 36), got: {wrong}"
    assert sorted(os.listdir(d)) == ["f", "sub"]

    # 255 bytes is fine, for every kind of entry.
    n255 = "y" * 255
    (d / n255).write_bytes(b"ok")
    assert os.stat(d / n255).st_size == 2
    os.rename(d / n255, d / ("z" * 255))
    os.link(d / ("z" * 255), d / n255)
    os.mkdir(d / "sub" / n255)
    os.symlink("f", d / "sub" / ("s" * 255))
    os.mkfifo(d / "sub" / ("p" * 255))
    assert sorted(os.listdir(d)) == sorted(["f", "sub", n255, "z" * 255])
    assert sorted(os.listdir(d / "sub")) == sorted([n255, "s" * 255, "p" * 255])


# -- RENAME_EXCHANGE -------------------------------------------------------------------------------
def _check_exchanged(d: Path) -> None:
    assert (d / "x").read_bytes() == b"why"
    assert (d / "y").read_bytes() == b"ex"
    assert sorted(os.listdir(d / "dx")) == ["r"]
    assert sorted(os.listdir(d / "dy")) == ["p", "sub"]
    assert (d / "dx" / "r").read_bytes() == b"R"
    assert (d / "dy" / "p").read_bytes() == b"P"
    assert (d / "dy" / "sub" / "q").read_bytes() == b"Q"
    assert sorted(os.listdir(d)) == ["dx", "dy", "x", "y"]


def test_rename_exchange_of_files_and_directories(a: Mount, b: Mount) -> None:
    d = a.path / "xchg"
    d.mkdir()
    (d / "x").write_bytes(b"ex")
    (d / "y").write_bytes(b"why")
    (d / "dx" / "sub").mkdir(parents=True)
    (d / "dx" / "p").write_bytes(b"P")
    (d / "dx" / "sub" / "q").write_bytes(b"Q")
    (d / "dy").mkdir()
    (d / "dy" / "r").write_bytes(b"R")
    a.commit()  # committed content too, not only the overlay's
    ino_x, ino_dy = os.stat(d / "x").st_ino, os.stat(d / "dy").st_ino

    renameat2(d / "x", d / "y", RENAME_EXCHANGE)
    renameat2(d / "dx", d / "dy", RENAME_EXCHANGE)
    _check_exchanged(d)
    assert os.stat(d / "y").st_ino == ino_x  # the inodes move with the names, as on ext4
    assert os.stat(d / "dx").st_ino == ino_dy
    (d / "dy" / "sub" / "new").write_bytes(b"N")  # the moved directory keeps working
    os.unlink(d / "dy" / "sub" / "new")

    publish(a, b)
    _check_exchanged(b.path / "xchg")


# -- timestamps never run backwards ----------------------------------------------------------------
def test_touch_never_moves_mtime_behind_creation(a: Mount) -> None:
    d = a.path / "times"
    d.mkdir()
    backwards = []
    for i in range(1000):
        p = d / f"t{i}"
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        created = os.stat(p).st_mtime_ns
        os.utime(p, ns=(created - 10_000_000_000, created - 10_000_000_000))
        os.utime(p)  # no times: UTIME_NOW, as touch(1)
        now = os.stat(p).st_mtime_ns
        if now < created:
            backwards.append((i, created, now))
    assert backwards == [], (
        f"{len(backwards)} of 1000 touches went back in time, e.g. {backwards[:3]}"
    )


# -- special files ---------------------------------------------------------------------------------
def _check_specials(d: Path) -> None:
    fifo, chr_, blk, sock = (os.lstat(d / n) for n in ("fifo", "chr", "blk", "sock"))
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o640
    assert stat.S_ISCHR(chr_.st_mode) and stat.S_IMODE(chr_.st_mode) == 0o620
    assert chr_.st_rdev == os.makedev(1, 3)
    assert (chr_.st_uid, chr_.st_gid) == (1234, 5678)
    assert stat.S_ISBLK(blk.st_mode) and stat.S_IMODE(blk.st_mode) == 0o660
    assert blk.st_rdev == os.makedev(7, 0)
    assert (blk.st_uid, blk.st_gid) == (0, 0)
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o755
    assert fifo.st_size == chr_.st_size == blk.st_size == 0
    assert fifo.st_mtime_ns == NS_MTIME
    assert sorted(os.listdir(d)) == ["blk", "chr", "fifo", "sock"]


def test_special_files_work_and_survive_commit(a: Mount, b: Mount) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (device nodes, chown)")
    d = a.path / "special"
    d.mkdir()
    os.mkfifo(d / "fifo", 0o640)
    os.mknod(d / "chr", stat.S_IFCHR | 0o620, os.makedev(1, 3))
    os.mknod(d / "blk", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    bind_socket(d, "sock")
    for name, mode in (("fifo", 0o640), ("chr", 0o620), ("blk", 0o660), ("sock", 0o755)):
        os.chmod(d / name, mode)
    os.chown(d / "chr", 1234, 5678)
    os.utime(d / "fifo", ns=(NS_MTIME, NS_MTIME))
    _check_specials(d)

    publish(a, b)
    seen = b.path / "special"
    _check_specials(seen)
    # Only now use the FIFOs: a write to a FIFO may update its mtime (ext4 does).
    payload = b"through the fifo\n" * 1000
    assert fifo_round_trip(d / "fifo", payload) == payload
    assert fifo_round_trip(seen / "fifo", payload) == payload


# -- hard links survive commit ---------------------------------------------------------------------
def _link_stats(*paths: Path) -> tuple[set[int], list[int]]:
    stats = [os.lstat(p) for p in paths]
    return {st.st_ino for st in stats}, [st.st_nlink for st in stats]


def test_hard_links_survive_commit_and_reload(a: Mount, b: Mount) -> None:
    d = a.path / "hard"
    (d / "sub").mkdir(parents=True)
    (d / "one").write_bytes(b"first")
    os.link(d / "one", d / "two")
    os.link(d / "one", d / "sub" / "three")
    (d / "alone").write_bytes(b"alone")

    publish(a, b)
    seen = b.path / "hard"
    inos, links = _link_stats(seen / "one", seen / "two", seen / "sub" / "three")
    assert len(inos) == 1, f"three names, {len(inos)} inodes"
    assert links == [3, 3, 3]
    assert os.stat(seen / "alone").st_nlink == 1
    assert os.stat(seen / "alone").st_ino not in inos

    # A committed group changes: one name goes, another comes (linked to committed content).
    os.unlink(d / "two")
    os.link(d / "sub" / "three", d / "four")
    publish(a, b)
    inos, links = _link_stats(seen / "one", seen / "sub" / "three", seen / "four")
    assert len(inos) == 1
    assert links == [3, 3, 3]
    assert not (seen / "two").exists()

    # In that mount, a write through one name shows through the others.
    with open(seen / "four", "r+b") as f:
        f.write(b"FIRST")
    with open(seen / "sub" / "three", "ab") as f:
        f.write(b" and more")
    for name in ("one", "sub/three", "four"):
        assert (seen / name).read_bytes() == b"FIRST and more", name
    assert _link_stats(seen / "one", seen / "sub" / "three", seen / "four")[1] == [3, 3, 3]
