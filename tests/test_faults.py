"""Fault injection on real mounts: a full disk, damaged blobs, misbehaving control clients.

- ENOSPC: the whole store on an 8 MiB tmpfs. With the disk full, ``volfs volume put``
  exits 9 with one line, a write in a mount gets ENOSPC, ``volfs commit`` fails with one
  line; the head and the mount's uncommitted files stay intact, no temp file is left
  holding space; once space is freed everything works again. The same for a mount's
  scratch area filled from inside the mount.
- A blob whose bytes were flipped or cut: reading the file in a fresh mount gives EIO
  (never wrong bytes), the daemon logs one ERROR line naming the blob however often the
  file is read, ``volfs volume get`` fails with one line, and ``volfs fsck`` names the path.
- Control-socket clients that send half a request and vanish, are killed mid-request,
  hang up before the reply, or never send anything: the daemon keeps serving.

Store inspections on the tmpfs go through the CLI only: a store opened in this process
would keep the tmpfs busy.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest_campaign import control_socket, fsck, kill9
from mounting import Mount, mounted, run_volfs, volfs_mountpoints

from volfs import control
from volfs.config import CHUNK_SIZE
from volfs.store import Store

pytestmark = pytest.mark.mount


# -- a small disk ----------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted (lazily if it must be) whatever happens."""
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(disk)], check=True
    )
    try:
        yield disk
    finally:
        for point in volfs_mountpoints():
            if point.startswith(str(tmp_path)):
                subprocess.run(["fusermount3", "-u", "-z", point], capture_output=True)
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fills ``disk`` to the last byte with one local file; returns it."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        block = b"\0" * (64 * 1024)
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        # Then byte-sized pieces: nothing at all is left.
        for size in (4096, 1):
            try:
                while True:
                    os.write(f.fileno(), b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def info(store: Path) -> dict:
    return json.loads(run_volfs(store, "volume", "info", "vol", "--json").stdout)


def get(store: Path, path: str) -> bytes:
    env = {**os.environ, "VOLFS_STORE": str(store)}
    proc = subprocess.run(
        [sys.executable, "-m", "volfs", "volume", "get", "vol", path, "-"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def status(m: Mount) -> dict:
    rows = json.loads(m.volfs("status", "--json").stdout)
    return next(r for r in rows if r["path"] == str(m.path))


@pytest.mark.timeout(180)
def test_a_full_store_disk_fails_cleanly_and_recovers_when_space_is_freed(
    small_disk: Path, tmp_path: Path
) -> None:
    store = small_disk / "store"
    run_volfs(store, "volume", "create", "vol")
    committed = os.urandom(100_000)
    (tmp_path / "committed.bin").write_bytes(committed)
    run_volfs(store, "volume", "put", "vol", str(tmp_path / "committed.bin"), "/committed.bin")
    upload = os.urandom(2_000_000)
    (tmp_path / "upload.bin").write_bytes(upload)
    pending = os.urandom(1_000_000)
    with mounted(store, "vol", tmp_path / "m") as m:
        (m.path / "pending.bin").write_bytes(pending)
        head = info(store)["head"]
        filler = fill(small_disk)

        put = run_volfs(
            store, "volume", "put", "vol", str(tmp_path / "upload.bin"), "/upload.bin", check=False
        )
        assert put.returncode == 9 and "no space" in one_error_line(put).lower()
        with pytest.raises(OSError) as written:
            (m.path / "new.bin").write_bytes(os.urandom(500_000))
        assert written.value.errno == errno.ENOSPC
        commit = m.volfs("commit", str(m.path), check=False)
        assert commit.returncode == 9 and "no space" in one_error_line(commit).lower()

        # The daemon mirrors its open files to the catalog in the background: that write fails
        # now too, and must not end the daemon.
        held = [open(m.path / "pending.bin", "rb") for _ in range(300)]
        try:
            time.sleep(1.5)
            assert m.proc.poll() is None, m.log_text()
        finally:
            for f in held:
                f.close()
        time.sleep(0.5)
        assert m.proc.poll() is None, m.log_text()

        # Nothing changed: the head, the mount's uncommitted file, no partial blob left behind.
        assert info(store)["head"] == head
        assert (m.path / "pending.bin").read_bytes() == pending
        assert "pending.bin" in status(m)["dirty_paths"]
        assert os.listdir(store / "tmp") == [], (
            "a failed blob write left its temp file, holding space"
        )
        assert get(store, "committed.bin") == committed
        assert m.proc.poll() is None

        filler.unlink()
        (m.path / "new.bin").unlink()
        run_volfs(store, "volume", "put", "vol", str(tmp_path / "upload.bin"), "/upload.bin")
        (m.path / "new.bin").write_bytes(b"written after the disk had room again")
        m.commit()
        assert get(store, "pending.bin") == pending
        assert get(store, "upload.bin") == upload
        assert get(store, "new.bin") == b"written after the disk had room again"
        assert get(store, "committed.bin") == committed
    checked = fsck(store)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.timeout(180)
def test_a_full_scratch_area_gives_enospc_to_the_writer_and_the_mount_goes_on(
    small_disk: Path, tmp_path: Path
) -> None:
    store = small_disk / "store"
    run_volfs(store, "volume", "create", "vol")
    with mounted(store, "vol", tmp_path / "m") as m:
        (m.path / "kept").write_text("committed before the disk filled")
        m.commit()
        with pytest.raises(OSError) as full:
            with open(m.path / "huge", "wb") as f:
                for _ in range(64):  # 16 MiB: twice the disk
                    f.write(os.urandom(256 * 1024))
                    f.flush()
        assert full.value.errno == errno.ENOSPC
        assert m.proc.poll() is None
        (m.path / "huge").unlink()
        # Its scratch space is freed when the kernel forgets the inode, a moment later (an
        # unlinked file stays readable through descriptors until then).
        deadline = time.monotonic() + 20
        while True:
            try:
                (m.path / "after").write_text("the mount still works")
                break
            except OSError as exc:
                assert exc.errno == errno.ENOSPC and time.monotonic() < deadline, exc
                time.sleep(0.05)
        m.commit()
        assert (m.path / "kept").read_text() == "committed before the disk filled"
        assert get(store, "after") == b"the mount still works"
        assert "huge" not in os.listdir(m.path)
    checked = fsck(store)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- damaged blobs ---------------------------------------------------------------------------------
def damage(path: Path, how: str) -> None:
    os.chmod(path, 0o644)  # blobs are read-only on disk
    if how == "flip":
        with open(path, "r+b") as f:
            f.seek(1000)
            byte = f.read(1)
            f.seek(1000)
            f.write(bytes([byte[0] ^ 0x01]))
    else:
        os.truncate(path, os.path.getsize(path) // 2)
    os.chmod(path, 0o444)


@pytest.mark.parametrize("how", ["flip", "truncate"])
@pytest.mark.timeout(120)
def test_a_damaged_blob_gives_eio_never_wrong_bytes(tmp_path: Path, how: str) -> None:
    store_path = tmp_path / "store"
    data = os.urandom(CHUNK_SIZE + 300_000)  # two chunks: the second gets damaged
    (tmp_path / "two-chunks.bin").write_bytes(data)
    run_volfs(store_path, "volume", "create", "vol")
    run_volfs(
        store_path, "volume", "put", "vol", str(tmp_path / "two-chunks.bin"), "/two-chunks.bin"
    )
    run_volfs(
        store_path, "volume", "put", "vol", str(tmp_path / "two-chunks.bin"), "/copy/same.bin"
    )
    store = Store.open(store_path)
    root = store.catalog.head(store.catalog.get_volume("main", "vol").id).root
    entry = store.catalog.get_tree(root.tree).get("two-chunks.bin")  # type: ignore[arg-type]
    assert entry is not None and len(entry.chunks) == 2
    bad = entry.chunks[1][1]
    damage(store.blobs.path(bad), how)

    with mounted(store_path, "vol", tmp_path / "m") as m:
        with open(m.path / "two-chunks.bin", "rb") as f:
            assert f.read(4096) == data[:4096]  # the sound chunk reads fine
            for _ in range(3):
                f.seek(CHUNK_SIZE + 10)
                with pytest.raises(OSError) as read:
                    f.read(4096)
                assert read.value.errno == errno.EIO
        with pytest.raises(OSError) as whole:
            (m.path / "two-chunks.bin").read_bytes()
        assert whole.value.errno == errno.EIO
        with pytest.raises(OSError) as other:  # the same blob under another name
            (m.path / "copy" / "same.bin").read_bytes()
        assert other.value.errno == errno.EIO
        assert m.proc.poll() is None
        errors = [line for line in m.log_text().splitlines() if " ERROR " in line]
        assert len(errors) == 1 and bad in errors[0], errors

    got = run_volfs(
        store_path, "volume", "get", "vol", "two-chunks.bin", str(tmp_path / "out.bin"), check=False
    )
    assert got.returncode == 8 and bad in one_error_line(got)
    assert not (tmp_path / "out.bin").exists()
    checked = fsck(store_path)
    assert checked.returncode == 8 and "two-chunks.bin" in checked.stdout and bad in checked.stdout


# -- misbehaving control clients -------------------------------------------------------------------
def connect(path: str) -> socket.socket:
    """A raw client (blocking connect: it waits for room in the listen backlog)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(30)
    return s


@pytest.mark.timeout(120)
def test_control_clients_that_vanish_or_stall_do_not_stop_the_daemon(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    run_volfs(store_path, "volume", "create", "vol")
    with mounted(store_path, "vol", tmp_path / "m") as m:
        sock = control_socket(m.path)
        # Half a request, then gone.
        for half in [b'{"v": 1, "op": "com', b'{"v": 1, "op": "commit"}', b""]:
            s = connect(sock)
            s.sendall(half)
            s.close()
        # Slow loris: connections that send nothing, held open while others are served.
        stalled = [connect(sock) for _ in range(40)]
        try:
            assert control.call(sock, "ping", timeout=5) == {"pong": True}
            # A burst of well-behaved clients at once (more than the listen backlog) all get served.
            with ThreadPoolExecutor(64) as pool:
                replies = list(
                    pool.map(lambda _: control.call(sock, "ping", timeout=30), range(300))
                )
            assert replies == [{"pong": True}] * 300
            # A client killed in the middle of its request.
            code = (
                "import socket, sys, time\n"
                "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
                's.sendall(b\'{"v": 1, "op": "sta\'); print(\'sent\', flush=True); time.sleep(60)\n'
            )
            client = subprocess.Popen([sys.executable, "-c", code, sock], stdout=subprocess.PIPE)
            try:
                assert client.stdout is not None and client.stdout.readline() == b"sent\n"
            finally:
                kill9(client.pid)
                client.wait(timeout=30)
                assert client.stdout is not None
                client.stdout.close()
            # A commit whose client hangs up before the reply still lands, once.
            (m.path / "f").write_text("committed for a client that left")
            s = connect(sock)
            s.sendall(b'{"v": 1, "op": "commit"}\n')
            s.close()
            deadline = time.monotonic() + 30
            while status(m)["dirty_paths"]:
                assert time.monotonic() < deadline, "the abandoned commit never landed"
                time.sleep(0.05)
            assert control.call(sock, "ping", timeout=5) == {"pong": True}
        finally:
            for s in stalled:
                s.close()
        assert m.proc.poll() is None
        assert "nothing to commit" in m.commit()
        (m.path / "g").write_text("still serving")
        m.commit()
        assert m.proc.poll() is None
        assert os.listdir(m.path) == ["f", "g"] or sorted(os.listdir(m.path)) == ["f", "g"]
    assert (
        run_volfs(store_path, "volume", "get", "vol", "f", "-").stdout
        == "committed for a client that left"
    )


@pytest.mark.timeout(60)
def test_a_sigkilled_volfs_commit_leaves_the_daemon_serving(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    run_volfs(store_path, "volume", "create", "vol")
    with mounted(store_path, "vol", tmp_path / "m") as m:
        (m.path / "big").write_bytes(os.urandom(3 * CHUNK_SIZE))
        env = {**os.environ, "VOLFS_STORE": str(store_path)}
        cli = subprocess.Popen(
            [sys.executable, "-m", "volfs", "commit", str(m.path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # it is importing, connecting, or waiting for the reply
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=30)
        m.commit()  # lands now, or was already landed by the killed client's request
        assert not status(m)["dirty_paths"]
        assert m.proc.poll() is None
