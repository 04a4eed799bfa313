"""Reload that keeps open files (``volfs reload --keep-open``), on real mounts.

The reference is ext4 with a file renamed over while open and a removed cwd: the open
descriptor keeps the file it opened (reads its bytes, writes to it), a new open gets the
new file; in a removed cwd ``ls`` lists nothing, ``stat .`` works with st_nlink 0 and
creating a file fails with ENOENT.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mounting import Mount, mounted, run_volfs, volfs_mountpoints

pytestmark = pytest.mark.mount

BUSY = "there are open files preventing the operation"

# A process that holds a cwd and files open, and answers commands (one JSON per line).
HOLDER = r"""
import json, os, sys
os.chdir(sys.argv[1])
files = {}
for spec in sys.argv[2:]:
    mode, path = spec.split(":", 1)
    files[path] = open(path, "rb" if mode == "r" else "r+b", buffering=0)
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    op, *args = json.loads(line)
    try:
        if op == "read":
            f = files[args[0]]
            f.seek(0)
            out = f.read().decode()
        elif op == "write":
            f = files[args[0]]
            f.seek(0)
            f.write(args[1].encode())
            f.truncate()
            os.fsync(f.fileno())  # through the kernel's writeback cache to the daemon
            out = "written"
        elif op == "ls":
            out = sorted(os.listdir("."))
        elif op == "stat":
            st = os.stat(".")
            out = [st.st_ino, st.st_nlink]
        elif op == "create":
            open(args[0], "w").close()
            out = "created"
    except OSError as exc:
        out = ["errno", exc.errno]
    print(json.dumps(out), flush=True)
"""


class Holder:
    def __init__(self, cwd: Path, *files: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(cwd), *files],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.ask_raw() == "ready"

    def ask_raw(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the holder died"
        return json.loads(line)

    def ask(self, *command: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.ask_raw()

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def name(store: Path) -> str:
    volume = f"ko-{uuid.uuid4().hex[:8]}"
    run_volfs(store, "volume", "create", volume)
    return volume


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    try:
        yield started
    finally:
        for holder in started:
            holder.close()


def head_record(store: Path, name: str) -> dict[str, Any]:
    return json.loads(run_volfs(store, "volume", "log", name, "--json").stdout)[0]


def reload_keep_open(mount: Mount) -> subprocess.CompletedProcess[str]:
    return mount.volfs("reload", "--keep-open", str(mount.path))


def test_keep_open_reload_keeps_open_files_and_cwd(
    store: Path, name: str, tmp_path: Path, holders: list[Holder]
) -> None:
    with mounted(store, name, tmp_path / "a") as a, mounted(store, name, tmp_path / "b") as b:
        (a.path / "d").mkdir()
        (a.path / "d" / "r.txt").write_text("old-r")
        (a.path / "d" / "w.txt").write_text("old-w")
        (a.path / "d" / "same.txt").write_text("unchanged")
        a.commit()
        b.reload()
        holder = Holder(a.path / "d", "r:r.txt", "w:w.txt")
        holders.append(holder)
        cwd_ino = holder.ask("stat")[0]
        (b.path / "d" / "r.txt").write_text("new-r")
        (b.path / "d" / "w.txt").write_text("new-w")
        (b.path / "d" / "other").write_text("added by b")
        (b.path / "top").write_text("also b")
        b.commit()

        # Without --keep-open: Modal's refusal, its message unchanged.
        refused = a.reload(check=False)
        assert refused.returncode != 0
        assert f"{BUSY}: path d/" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1

        reload_keep_open(a)
        assert holder.ask("read", "r.txt") == "old-r"  # the file it opened
        assert holder.ask("read", "w.txt") == "old-w"
        assert (a.path / "d" / "r.txt").read_text() == "new-r"  # a fresh open: the new one
        assert (a.path / "d" / "w.txt").read_text() == "new-w"
        assert (a.path / "top").read_text() == "also b"
        assert holder.ask("ls") == ["other", "r.txt", "same.txt", "w.txt"]
        assert holder.ask("stat")[0] == cwd_ino  # the directory kept its inode

        # A write through the old descriptor lands at the next commit, over b's version.
        assert holder.ask("write", "w.txt", "from the old fd") == "written"
        assert (a.path / "d" / "w.txt").read_text() == "new-w"  # not before the commit
        a.commit()
        assert holder.ask("read", "w.txt") == "from the old fd"
        assert (a.path / "d" / "w.txt").read_text() == "from the old fd"
        record = head_record(store, name)
        assert [o["path"] for o in record["overwrites"]] == ["d/w.txt"]
        b.reload()
        assert (b.path / "d" / "w.txt").read_text() == "from the old fd"
        assert (b.path / "d" / "r.txt").read_text() == "new-r"  # a reader changes nothing
    assert run_volfs(store, "fsck").returncode == 0


def test_keep_open_reload_of_a_removed_cwd_reads_as_a_deleted_directory(
    store: Path, name: str, tmp_path: Path, holders: list[Holder]
) -> None:
    with mounted(store, name, tmp_path / "a") as a, mounted(store, name, tmp_path / "b") as b:
        (a.path / "gone" / "sub").mkdir(parents=True)
        (a.path / "gone" / "f").write_text("x")
        (a.path / "kept").write_text("k")
        a.commit()
        b.reload()
        holder = Holder(a.path / "gone", "r:f")
        holders.append(holder)
        assert holder.ask("ls") == ["f", "sub"]
        for path in sorted((b.path / "gone").rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (b.path / "gone").rmdir()
        b.commit()
        reload_keep_open(a)
        assert holder.ask("ls") == []
        assert holder.ask("stat")[1] == 0
        assert holder.ask("create", "new") == ["errno", errno.ENOENT]
        assert holder.ask("read", "f") == "x"
        assert sorted(os.listdir(a.path)) == ["kept"]
        # Nothing the mount did is a change: the next commit has nothing to publish.
        before = head_record(store, name)["id"]
        a.commit()
        assert head_record(store, name)["id"] == before


def test_mount_option_keep_open_makes_it_the_default(
    store: Path, name: str, tmp_path: Path, holders: list[Holder]
) -> None:
    with (
        mounted(store, name, tmp_path / "a", "--keep-open") as a,
        mounted(store, name, tmp_path / "b") as b,
    ):
        (a.path / "f").write_text("one")
        a.commit()
        b.reload()
        holder = Holder(a.path, "r:f")
        holders.append(holder)
        (b.path / "f").write_text("two")
        b.commit()
        a.reload()  # no flag: the mount's default
        assert holder.ask("read", "f") == "one"
        assert (a.path / "f").read_text() == "two"
        refused = a.volfs("reload", "--no-keep-open", str(a.path), check=False)
        assert refused.returncode != 0 and f"{BUSY}: path f is open" in refused.stderr


def test_python_api_reload_keep_open(
    store: Path, name: str, tmp_path: Path, holders: list[Holder]
) -> None:
    with mounted(store, name, tmp_path / "a") as a, mounted(store, name, tmp_path / "b") as b:
        (a.path / "f").write_text("one")
        a.commit()
        b.reload()
        holder = Holder(a.path, "r:f")
        holders.append(holder)
        (b.path / "f").write_text("two")
        b.commit()
        script = "import sys, volfs; volfs.Volume.from_name(sys.argv[1]).reload(keep_open=True)"
        env = {**os.environ, "VOLFS_STORE": str(store)}
        subprocess.run(
            [sys.executable, "-c", script, name], env=env, check=True, timeout=60, cwd="/"
        )
        assert holder.ask("read", "f") == "one"
        assert (a.path / "f").read_text() == "two"


def test_old_descriptor_writes_survive_a_crash(
    store: Path, name: str, tmp_path: Path, holders: list[Holder]
) -> None:
    """A detached writer's change is in the journal: recover commits it at its path."""
    with mounted(store, name, tmp_path / "a") as a, mounted(store, name, tmp_path / "b") as b:
        (a.path / "w").write_text("old")
        a.commit()
        b.reload()
        holder = Holder(a.path, "w:w")
        holders.append(holder)
        (b.path / "w").write_text("new from b")
        (b.path / "x").write_text("x")
        b.commit()
        reload_keep_open(a)
        assert holder.ask("write", "w", "written after the reload") == "written"
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(timeout=10)
        holder.close()
        holders.remove(holder)
    assert str(tmp_path / "a") not in volfs_mountpoints()
    assert run_volfs(store, "fsck").returncode == 0
    assert "committed" in run_volfs(store, "recover").stdout
    with mounted(store, name, tmp_path / "c") as c:
        assert (c.path / "w").read_text() == "written after the reload"
        assert (c.path / "x").read_text() == "x"
    assert [o["path"] for o in head_record(store, name)["overwrites"]] == ["w"]
    assert run_volfs(store, "fsck").returncode == 0


def test_a_cwd_the_mount_itself_removed_reads_as_deleted(
    store: Path, name: str, tmp_path: Path, holders: list[Holder]
) -> None:
    """ext4: in a removed cwd ``ls`` is empty, st_nlink is 0, creating a file is ENOENT."""
    with mounted(store, name, tmp_path / "a") as a:
        (a.path / "d").mkdir()
        holder = Holder(a.path / "d")
        holders.append(holder)
        assert holder.ask("stat")[1] == 1  # not counted, as on btrfs
        (a.path / "d").rmdir()
        assert holder.ask("ls") == []
        assert holder.ask("stat")[1] == 0
        assert holder.ask("create", "new") == ["errno", errno.ENOENT]
        a.commit()
        assert sorted(os.listdir(a.path)) == []


# Appends a line and fsyncs it every millisecond, as a log handler that flushes each record.
LOGGER = r"""
import os, sys, time
f = open(sys.argv[1], "a")
print("go", flush=True)
n = 0
while True:
    f.write(f"line {n}\n")
    f.flush()
    os.fsync(f.fileno())
    n += 1
    time.sleep(0.001)
"""


def test_keep_open_reload_goes_through_while_a_logger_keeps_writing(
    store: Path, name: str, tmp_path: Path
) -> None:
    """Each commit is followed by new lines: a reload that needs a clean view never lands."""
    with mounted(store, name, tmp_path / "a") as a, mounted(store, name, tmp_path / "b") as b:
        (a.path / "app.log").write_text("")
        (a.path / "status").write_text("old")
        a.commit()
        b.reload()
        logger = subprocess.Popen(
            [sys.executable, "-c", LOGGER, str(a.path / "app.log")], stdout=subprocess.PIPE
        )
        try:
            assert logger.stdout is not None and logger.stdout.readline() == b"go\n"
            for round in range(3):
                (b.path / "status").write_text(f"round {round}")
                b.commit()
                reload_keep_open(a)
                assert (a.path / "status").read_text() == f"round {round}"
            # b rewrites the log: the lines a received meanwhile land over it (the commit
            # before the switch), and the logger's later lines after them.
            (b.path / "app.log").write_text("b's version\n")
            b.commit()
            reload_keep_open(a)
        finally:
            logger.kill()
            logger.communicate(timeout=10)
        a.commit()
        b.reload()
        lines = (b.path / "app.log").read_text().splitlines()
        assert lines[0] == "line 0" and "b's version" not in lines
        assert lines == [f"line {n}" for n in range(len(lines))]
        log = json.loads(run_volfs(store, "volume", "log", name, "--json").stdout)
        overwrote = [s["origin"] for s in log if "app.log" in [o["path"] for o in s["overwrites"]]]
        assert any(str(a.path) in origin for origin in overwrote)  # recorded, as any overwrite
    assert run_volfs(store, "fsck").returncode == 0
