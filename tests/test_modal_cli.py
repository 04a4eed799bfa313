"""``modal volume …`` typed at ``volfs volume …``: Modal's flags and output shapes.

The expected shapes come from modal-client's source (v1.5): ``py/modal/cli/volume.py``
(the commands and their options; ``ls`` piped prints ``entry.path`` one a line), and
``py/modal/cli/utils.py`` (``display_table(..., json=True)`` makes the keys from the
columns — "Filename", "Type", "Created/Modified", "Size" -> ``filename``, ``type``,
``created_modified``, ``size``; "Name", "Created at", "Created by" -> ``name``,
``created_at``, ``created_by``; ``humanize_filesize``: ``6 B``, ``1.5 KiB``), and
``py/modal/_utils/time_utils.py`` (``timestamp_to_localized_str``: local time,
``%Y-%m-%d %H:%M %Z``, or with ``isotz`` ``isoformat(sep=" ", timespec="seconds")``).
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_kinds_cli import commit_entries

from volfs import Volume
from volfs.cli import cli
from volfs.core.tree import Entry, Kind
from volfs.store import Store

MTIME = 1_600_000_000  # 2020-09-13 12:26:40 UTC: 17:56 in India (UTC+05:30)


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def run(*args: str, input: str | None = None) -> Outcome:
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def ok(*args: str) -> Outcome:
    out = run(*args)
    assert out.code == 0, out.stderr
    return out


@pytest.fixture
def india(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time five and a half hours from UTC: a UTC time would show as wrong."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def kinds(store: Store) -> Volume:
    """Volume "kinds": six (6 bytes), dir/, link -> six, fifo, sock; all with mtime MTIME
    (committed as a mount would: an upload keeps no symlink or socket)."""
    Volume.objects.create("kinds", store=store)
    vol = Volume.from_name("kinds", store=store)
    ns = MTIME * 10**9
    commit_entries(
        store,
        vol,
        {
            "six": Entry(
                "", Kind.FILE, 0o644, size=6, mtime_ns=ns, chunks=((0, store.blobs.put(b"sixsix")),)
            ),
            "dir/f": Entry("", Kind.FIFO, 0o644, mtime_ns=ns),
            "link": Entry("", Kind.SYMLINK, 0o777, mtime_ns=ns, target="six"),
            "fifo": Entry("", Kind.FIFO, 0o644, mtime_ns=ns),
            "sock": Entry("", Kind.SOCKET, 0o755, mtime_ns=ns),
        },
    )
    return vol


# -- modal's flags ------------------------------------------------------------------------
def test_modal_flags_are_accepted_with_modals_meaning(store: Store) -> None:
    ok("volume", "create", "flags", "-e", "dev")  # -e/--env, as modal's env_option
    ok("volume", "create", "versioned", "--version", "2")  # modal's VolumeFS version
    assert run("volume", "create", "v3", "--version", "3").code == 2  # modal knows 1 and 2
    assert [v.name for v in Volume.objects.list(environment_name="dev", store=store)] == ["flags"]
    assert ok("volume", "ls", "flags", "-e", "dev").stdout == ""
    ok("volume", "rename", "flags", "renamed", "-e", "dev", "-y")  # modal's yes_option
    ok("volume", "delete", "renamed", "-e", "dev", "-y")
    assert Volume.objects.list(environment_name="dev", store=store) == []
    # --allow-missing: modal's objects.delete(allow_missing=True) succeeds on a missing name.
    ok("volume", "delete", "renamed", "-e", "dev", "-y", "--allow-missing")
    out = run("volume", "delete", "renamed", "-e", "dev", "-y")
    assert out.code == 3 and out.stderr.startswith("Error: ")


def test_every_command_modal_gives_env_takes_dash_e(store: Store, tmp_path: Path) -> None:
    ok("volume", "create", "e", "-e", "dev")
    local = tmp_path / "f.txt"
    local.write_text("f")
    for args in (
        ["list"],
        ["ls", "e"],
        ["put", "e", str(local), "/f.txt"],
        ["get", "e", "/f.txt", str(tmp_path / "back.txt")],
        ["cp", "e", "/f.txt", "/g.txt"],
        ["rm", "e", "/g.txt"],
    ):
        ok("volume", *args, "-e", "dev")
    assert (tmp_path / "back.txt").read_text() == "f"


# -- output shapes ------------------------------------------------------------------------
def test_ls_piped_prints_bare_paths_one_a_line(kinds: Volume) -> None:
    # CliRunner's stdout is not a terminal: modal prints `entry.path` for each entry.
    assert ok("volume", "ls", "kinds").stdout == "dir\nfifo\nlink\nsix\nsock\n"


def test_ls_json_has_modals_keys_types_local_times_and_sizes(kinds: Volume, india: None) -> None:
    listed = json.loads(ok("volume", "ls", "kinds", "--json").stdout)
    assert all(set(e) == {"filename", "type", "created_modified", "size"} for e in listed)
    by_name = {e["filename"]: e for e in listed}
    assert {n: e["type"] for n, e in by_name.items()} == {
        "dir": "dir",
        "fifo": "fifo",
        "link": "link",
        "six": "file",
        "sock": "socket",
    }
    assert by_name["six"]["size"] == "6 B"
    assert by_name["six"]["created_modified"] == "2020-09-13 17:56 IST"


def test_list_json_has_modals_keys_and_a_local_iso_time(store: Store, india: None) -> None:
    ok("volume", "create", "listed")
    [row] = json.loads(ok("volume", "list", "--json").stdout)
    assert set(row) == {"name", "created_at", "created_by"} and row["name"] == "listed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+05:30", row["created_at"])
    created = datetime.fromisoformat(row["created_at"])
    assert abs(created - datetime.now().astimezone()) < timedelta(minutes=5)
    assert row["created_by"] == Volume.from_name("listed").info().created_by


# -- put ----------------------------------------------------------------------------------
def test_put_joins_a_remote_dir_with_the_local_basename_as_written(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Volume.objects.create("puts", store=store)
    vol = Volume.from_name("puts", store=store)
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "x").write_text("x")
    (tmp_path / "f.txt").write_text("f")
    monkeypatch.chdir(tmp_path)
    ok("volume", "put", "puts", "d/", "/x/")  # basename "": d's content lands in /x
    ok("volume", "put", "puts", "d", "/y/")  # basename "d": /y/d
    ok("volume", "put", "puts", "f.txt", "/z/")  # a file: /z/f.txt
    monkeypatch.chdir(tmp_path / "d")
    ok("volume", "put", "puts", ".", "/w/")  # basename ".": the content of the cwd, in /w
    paths = {e.path for e in vol.listdir("/", recursive=True)}
    assert {"x/sub/x", "y/d/sub/x", "z/f.txt", "w/sub/x"} <= paths
    assert not {"x/d", "w/d"} & paths


def test_put_of_a_glob_is_refused_with_modals_message(store: Store, tmp_path: Path) -> None:
    Volume.objects.create("globs", store=store)
    (tmp_path / "a.txt").write_text("a")
    out = subprocess.run(
        [sys.executable, "-m", "volfs", "volume", "put", "globs", str(tmp_path / "*.txt")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2  # modal raises click's UsageError
    assert out.stderr.startswith("Error: Glob uploads are currently not supported")
    assert len(out.stderr.splitlines()) == 1
    assert Volume.from_name("globs").listdir("/") == []


# -- get --force onto special files -------------------------------------------------------
@pytest.fixture
def content(store: Store) -> Volume:
    Volume.objects.create("content", store=store)
    vol = Volume.from_name("content", store=store)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"file content"), "f.txt")
    return vol


@pytest.mark.skipif(os.getuid() != 0, reason="making a device node needs root")
def test_get_force_onto_a_null_device_writes_into_it(content: Volume, tmp_path: Path) -> None:
    # A node of its own with /dev/null's number: the real one is shared with everyone here.
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(null, 0o666)  # past the umask
    before = os.lstat(null)
    out = ok("volume", "get", "content", "/f.txt", str(null), "--force")
    after = os.lstat(null)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == os.makedev(1, 3)
    assert (after.st_ino, stat.S_IMODE(after.st_mode)) == (before.st_ino, 0o666)
    assert "Wrote 12 bytes" in out.stdout
    assert not list(tmp_path.glob("*volfs-part*"))


def test_get_force_onto_a_fifo_writes_into_it(content: Volume, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # The read end is open first, so the writer's open does not wait (cp's would too).
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        ok("volume", "get", "content", "/f.txt", str(fifo), "--force")
        assert os.read(reader, 100) == b"file content"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_get_force_onto_a_regular_file_still_replaces_it_whole(
    content: Volume, tmp_path: Path
) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    before = os.lstat(target).st_ino
    ok("volume", "get", "content", "/f.txt", str(target), "--force")
    assert target.read_bytes() == b"file content"
    assert os.lstat(target).st_ino != before  # a new file renamed over it: never half-written


def test_get_of_a_directory_entry_onto_a_fifo_is_refused(store: Store, tmp_path: Path) -> None:
    Volume.objects.create("fifos", store=store)
    vol = Volume.from_name("fifos", store=store)
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "p")
    with vol.batch_upload() as batch:
        batch.put_directory(src, "/d")
    dest = tmp_path / "d"
    dest.mkdir()
    os.mkfifo(dest / "p")  # a FIFO from the volume onto a local FIFO: nothing to "write in"
    out = run("volume", "get", "fifos", "/d", str(tmp_path), "--force")
    assert out.code == 2 and out.stderr.startswith("Error: ")
    assert stat.S_ISFIFO(os.lstat(dest / "p").st_mode)
