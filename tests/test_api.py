"""The modal.Volume-shaped Python API (volfs.api), against a private store per test."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import volfs
from volfs import FileEntryType, Volume
from volfs.store import Store


def put(vol: Volume, files: dict[str, bytes], force: bool = False) -> None:
    with vol.batch_upload(force=force) as batch:
        for path, data in files.items():
            batch.put_file(io.BytesIO(data), path)


def read(vol: Volume, path: str) -> bytes:
    return b"".join(vol.read_file(path))


def paths(vol: Volume, path: str = "/") -> list[str]:
    return [e.path for e in vol.listdir(path, recursive=True)]


@pytest.fixture
def vol(store: Store) -> Volume:
    Volume.objects.create("vol", store=store)
    return Volume.from_name("vol", store=store)


# -- volumes ------------------------------------------------------------------------------
def test_from_name_is_lazy_and_hydrate_raises_for_a_missing_volume(store: Store) -> None:
    vol = Volume.from_name("missing")  # no error yet: like modal, resolved on use
    with pytest.raises(volfs.NotFoundError, match="missing"):
        vol.hydrate()
    with pytest.raises(volfs.NotFoundError):
        vol.listdir("/")
    assert store.catalog.list_volumes() == []


def test_from_name_create_if_missing_creates_once(store: Store) -> None:
    a = Volume.from_name("made", create_if_missing=True).hydrate()
    b = Volume.from_name("made", create_if_missing=True).hydrate()
    assert a.object_id == b.object_id
    assert a.object_id.startswith("vo-")
    assert [v.name for v in Volume.objects.list()] == ["made"]


def test_create_refuses_an_existing_name_unless_allow_existing(vol: Volume) -> None:
    with pytest.raises(volfs.AlreadyExistsError):
        Volume.objects.create("vol")
    assert Volume.objects.create("vol", allow_existing=True) is None  # modal returns None
    again = Volume.from_name("vol")
    assert again.object_id == vol.object_id


@pytest.mark.parametrize(
    "name", ["", "a" * 65, "has space", "sl/ash", "..", "é", "a\0b", ".", "ap-" + "x" * 22]
)
def test_bad_volume_names_are_refused_before_anything_is_written(
    name: str, store_state: Callable[[], object]
) -> None:
    before = store_state()
    with pytest.raises(volfs.InvalidError):
        Volume.objects.create(name)
    with pytest.raises(volfs.InvalidError):
        Volume.from_name(name, create_if_missing=True)
    assert store_state() == before


def test_environments_are_separate_namespaces(store: Store) -> None:
    Volume.objects.create("same", environment_name="dev")
    a = Volume.from_name("same", environment_name="dev")
    Volume.objects.create("same", environment_name="prod")
    b = Volume.from_name("same", environment_name="prod")
    assert a.object_id != b.object_id
    assert [v.name for v in Volume.objects.list(environment_name="dev")] == ["same"]
    assert Volume.objects.list() == []  # the default environment "main" is empty
    with pytest.raises(volfs.InvalidError):
        Volume.objects.list(environment_name="bad env")


def test_list_is_newest_first_with_max_objects_and_created_before(store: Store) -> None:
    for name in ("one", "two", "three"):
        Volume.objects.create(name)
        time.sleep(0.01)  # distinct creation times, the order under test
    assert [v.name for v in Volume.objects.list()] == ["three", "two", "one"]
    assert [v.name for v in Volume.objects.list(max_objects=2)] == ["three", "two"]
    two_at = Volume.from_name("two").info().created_at
    assert [v.name for v in Volume.objects.list(created_before=two_at)] == ["one"]
    assert [v.name for v in Volume.objects.list(created_before=two_at.isoformat())] == ["one"]
    future = datetime.now(UTC) + timedelta(days=1)
    assert len(Volume.objects.list(created_before=future)) == 3


def test_delete_removes_the_name_and_allow_missing(vol: Volume) -> None:
    Volume.objects.delete("vol")
    assert Volume.objects.list() == []
    with pytest.raises(volfs.NotFoundError):
        vol.listdir("/")  # the handle is bound to the deleted volume
    with pytest.raises(volfs.NotFoundError):
        Volume.objects.delete("vol")
    Volume.objects.delete("vol", allow_missing=True)


def test_rename_keeps_id_content_and_history(vol: Volume) -> None:
    put(vol, {"a.txt": b"A"})
    Volume.rename("vol", "renamed")
    new = Volume.from_name("renamed").hydrate()
    assert new.object_id == vol.object_id
    assert read(new, "a.txt") == b"A"
    assert len(new.history()) == 2
    with pytest.raises(volfs.NotFoundError):
        Volume.from_name("vol").hydrate()
    Volume.objects.create("other")
    with pytest.raises(volfs.AlreadyExistsError):
        Volume.rename("renamed", "other")
    with pytest.raises(volfs.NotFoundError):
        Volume.rename("nope", "fresh")


def test_ephemeral_volume_is_deleted_on_exit_even_after_an_error(store: Store) -> None:
    with Volume.ephemeral() as vol:
        put(vol, {"x": b"1"})
        # modal: nameless and not listed, reachable by its id
        assert vol.name is None and vol.info().name is None
        assert Volume.objects.list() == []
        assert read(Volume.from_id(vol.object_id), "x") == b"1"
        ids = {r.id for r in store.catalog.list_volumes()}
        assert ids == {vol.object_id}
    assert store.catalog.list_volumes() == []
    with pytest.raises(RuntimeError, match="boom"), Volume.ephemeral():
        raise RuntimeError("boom")
    assert Volume.objects.list() == []


def test_ephemeral_volumes_of_killed_processes_are_swept(store: Store) -> None:
    # A process that made an ephemeral volume and died inside the block: its name says so.
    dead = subprocess.run(
        [sys.executable, "-c", "from volfs.api import ephemeral; print(ephemeral.new_name())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    store.catalog.create_volume("main", dead, "x")
    elsewhere = "~ephemeral-" + "0" * 12 + "-1-1-" + "a" * 16  # another host's: never touched
    store.catalog.create_volume("main", elsewhere, "x")
    with Volume.ephemeral() as vol:
        names = {v.name for v in store.catalog.list_volumes()}
        assert dead not in names and elsewhere in names
        with Volume.ephemeral():  # a live owner's volume survives the next sweep
            assert vol.object_id in {v.id for v in store.catalog.list_volumes()}
    assert [v.name for v in store.catalog.list_volumes()] == [elsewhere]


def test_info_reports_size_files_head_and_format(vol: Volume) -> None:
    info = vol.info()
    assert (info.name, info.size, info.files, info.format_version) == ("vol", 0, 0, 3)
    put(vol, {"a": b"12345", "d/b": b"678", "d/e/c": b""})
    info = vol.info()
    assert (info.size, info.files) == (8, 3)
    assert info.object_id == vol.object_id and info.environment == "main"
    assert info.head == vol.history()[0].id
    assert info.created_at <= info.head_at


# -- reading ------------------------------------------------------------------------------
def test_listdir_iterdir_and_file_entries(vol: Volume) -> None:
    put(vol, {"top.txt": b"abc", "d/x.bin": b"12", "d/sub/y": b""})
    assert [(e.path, e.type) for e in vol.listdir("/")] == [
        ("d", FileEntryType.DIRECTORY),
        ("top.txt", FileEntryType.FILE),
    ]
    assert paths(vol) == ["d", "d/sub", "d/sub/y", "d/x.bin", "top.txt"]
    assert paths(vol, "d") == ["d/sub", "d/sub/y", "d/x.bin"]
    # modal's defaults: iterdir recursive, listdir not
    assert [e.path for e in vol.iterdir("/d/")] == ["d/sub", "d/sub/y", "d/x.bin"]
    assert [e.path for e in vol.iterdir("/d/", recursive=False)] == ["d/sub", "d/x.bin"]
    (entry,) = vol.listdir("top.txt")  # a file path lists that file, as in modal
    assert (entry.path, entry.type, entry.size) == ("top.txt", FileEntryType.FILE, 3)
    assert isinstance(entry.mtime, int) and abs(entry.mtime - time.time()) < 60
    assert vol.listdir("d")[0].size == 0 and vol.listdir("/")[0].size == 2  # dir: bytes below
    with pytest.raises(FileNotFoundError):
        vol.listdir("nope")
    with pytest.raises(NotADirectoryError):
        vol.listdir("top.txt/below")


def test_read_file_streams_chunks_and_fileobj(vol: Volume) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    put(vol, {"big": data})
    chunks = list(vol.read_file("big"))
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= 1024 * 1024
    out = io.BytesIO()
    assert vol.read_file_into_fileobj("/big", out) == len(data)
    assert out.getvalue() == data


def test_read_file_errors_are_raised_at_the_call(vol: Volume) -> None:
    put(vol, {"d/f": b"x"})
    with pytest.raises(FileNotFoundError):
        vol.read_file("missing")
    with pytest.raises(IsADirectoryError):
        vol.read_file("d")
    with pytest.raises(volfs.InvalidError):
        vol.read_file("d/../f")
    with pytest.raises(volfs.InvalidError):
        vol.read_file("d/f\0")


def test_reads_follow_relative_symlinks_inside_the_volume(vol: Volume) -> None:
    put(vol, {"real/file": b"content"})
    # Symlinks enter a volume through a mount or a copy; build them here with a commit.
    from volfs.core.changes import ALL_META, Dir, Put
    from volfs.core.tree import Entry, Kind
    from volfs.snapshots.commit import commit_changes

    def build(root: Entry) -> dict:
        return {
            ("links",): Dir(Entry("links", Kind.DIR, 0o755), None, ALL_META),
            ("links", "to-file"): Put(Entry("to-file", Kind.SYMLINK, 0o777, target="../real/file")),
            ("links", "to-dir"): Put(Entry("to-dir", Kind.SYMLINK, 0o777, target="../real")),
            ("links", "out"): Put(Entry("out", Kind.SYMLINK, 0o777, target="/etc/passwd")),
        }

    commit_changes(vol._store.catalog, vol.object_id, build, origin="test")
    assert read(vol, "links/to-file") == b"content"
    assert read(vol, "links/to-dir/file") == b"content"
    assert [e.path for e in vol.listdir("links/to-dir")] == ["links/to-dir/file"]
    link = vol.stat("links/to-file")
    assert (link.type, link.target) == (FileEntryType.SYMLINK, "../real/file")
    with pytest.raises(FileNotFoundError, match="leaves the volume"):
        vol.read_file("links/out")


def test_snapshot_view_is_pinned_and_read_only(vol: Volume) -> None:
    put(vol, {"a": b"old"})
    pinned = vol.snapshot()
    put(vol, {"a": b"new", "b": b"added"}, force=True)
    assert read(pinned, "a") == b"old" and paths(pinned) == ["a"]
    assert read(vol, "a") == b"new"
    with pytest.raises(volfs.ReadOnlyError):
        pinned.remove_file("a")
    first = vol.history()[-1].id
    assert vol.snapshot(first).listdir("/") == []


# -- batch_upload -------------------------------------------------------------------------
def test_batch_upload_from_paths_and_fileobjs_lands_as_one_commit(
    vol: Volume, tmp_path: Path
) -> None:
    local = tmp_path / "script.sh"
    local.write_bytes(b"#!/bin/sh\n")
    local.chmod(0o750)
    commits = len(vol.history())
    with vol.batch_upload() as batch:
        batch.put_file(local, "bin/script.sh")
        batch.put_file(io.BytesIO(b"data"), "/deep/er/path/file.txt")
        batch.put_file(str(local), "bin/")  # trailing slash: inside, under the local name
        assert vol.listdir("/") == []  # nothing visible before the block ends
    assert len(vol.history()) == commits + 1
    assert read(vol, "bin/script.sh") == b"#!/bin/sh\n"
    assert vol.stat("bin/script.sh").mode == 0o750  # the local file's permission bits
    assert vol.stat("deep/er/path/file.txt").mode == 0o644
    assert vol.stat("deep/er").type is FileEntryType.DIRECTORY
    assert vol.history()[0].origin == "api:put"


def test_batch_upload_commits_nothing_if_the_block_raises(
    vol: Volume, store_state: Callable
) -> None:
    put(vol, {"keep": b"1"})
    heads = store_state()[0]
    with pytest.raises(ValueError), vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"never"), "lost.txt")
        raise ValueError("user code failed")
    assert store_state()[0] == heads
    assert paths(vol) == ["keep"]
    with pytest.raises(volfs.InvalidError, match="ended"):
        batch.put_file(io.BytesIO(b"late"), "late.txt")


def test_upload_over_an_existing_file_needs_force(vol: Volume, store_state: Callable) -> None:
    put(vol, {"f.txt": b"first"})
    before = store_state()
    with pytest.raises(FileExistsError), vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"second, different bytes"), "f.txt")
    assert store_state() == before  # refused before its content was stored
    put(vol, {"f.txt": b"second"}, force=True)
    assert read(vol, "f.txt") == b"second"


def test_existing_check_runs_against_the_head_the_commit_lands_on(vol: Volume) -> None:
    with pytest.raises(FileExistsError), vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"mine"), "race.txt")
        put(vol, {"race.txt": b"theirs"})  # another writer lands first
    assert read(vol, "race.txt") == b"theirs"


def test_uploads_never_replace_a_directory(vol: Volume, store_state: Callable) -> None:
    put(vol, {"d/inside": b"x", "file": b"y"})
    before = store_state()
    for force in (False, True):
        with pytest.raises(IsADirectoryError), vol.batch_upload(force=force) as batch:
            batch.put_file(io.BytesIO(b"z"), "d")
    with pytest.raises(NotADirectoryError), vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"z"), "file/below")  # a parent that is a file
    assert store_state() == before
    with pytest.raises(NotADirectoryError), vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"z"), "new")
        batch.put_file(io.BytesIO(b"z"), "new/below")  # a file and a dir in one batch
    assert store_state()[0] == before[0]  # no commit (the first file's blob was stored)


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "a\0b", "/", "", "x/" + "n" * 300])
def test_bad_remote_paths_are_refused(vol: Volume, bad: str, store_state: Callable) -> None:
    before = store_state()
    with pytest.raises(volfs.InvalidError), vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"x"), bad)
    assert store_state() == before


def test_put_directory_uploads_files_and_fifos_and_never_follows_symlinks(
    vol: Volume, tmp_path: Path
) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "password").write_text("hunter2")
    src = tmp_path / "src"
    (src / "sub" / "empty-dir").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    (src / "link-to-file").symlink_to(src / "a.txt")
    (src / "sub" / "link-out").symlink_to(outside)
    (src / "sub" / "link-out-file").symlink_to(outside / "password")
    os.mkfifo(src / "fifo")
    with vol.batch_upload() as batch:
        batch.put_directory(src, "/dst")
    assert paths(vol) == [
        "dst",
        "dst/a.txt",
        "dst/fifo",
        "dst/sub",
        "dst/sub/b.txt",
        "dst/sub/empty-dir",
    ]
    assert vol.stat("dst/fifo").type is volfs.FileEntryType.FIFO
    assert read(vol, "dst/sub/b.txt") == b"b"
    with pytest.raises(NotADirectoryError), vol.batch_upload() as batch:
        batch.put_directory(src / "a.txt", "/x")


def test_put_directory_checks_every_target_before_storing_anything(
    vol: Volume, tmp_path: Path, store_state: Callable
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(100))
    put(vol, {"dst/f3": b"already here"})
    before = store_state()
    with pytest.raises(FileExistsError, match="f3"), vol.batch_upload() as batch:
        batch.put_directory(src, "dst")
    assert store_state() == before  # no blob of f0..f4 was written


def test_progress_callback_sees_every_byte(vol: Volume) -> None:
    seen: list[int] = []
    with vol.batch_upload(progress=seen.append) as batch:
        batch.put_file(io.BytesIO(b"x" * 10_000), "a")
        batch.put_file(io.BytesIO(b""), "b")
    assert sum(seen) == 10_000


# -- remove and copy ----------------------------------------------------------------------
def test_remove_file_and_directories(vol: Volume, store_state: Callable) -> None:
    put(vol, {"f": b"1", "d/a": b"2", "d/e/b": b"3"})
    vol.remove_file("f")
    assert paths(vol) == ["d", "d/a", "d/e", "d/e/b"]
    before = store_state()
    with pytest.raises(IsADirectoryError):
        vol.remove_file("d")
    with pytest.raises(FileNotFoundError):
        vol.remove_file("nope", recursive=True)
    with pytest.raises(volfs.InvalidError):
        vol.remove_file("/", recursive=True)  # emptying a volume: delete it instead
    assert store_state() == before
    vol.remove_file("/d/", recursive=True)
    assert paths(vol) == []
    assert vol.history()[0].origin == "api:rm"


def test_copy_files_has_cp_semantics(vol: Volume) -> None:
    put(vol, {"a": b"A", "b": b"B", "d/x": b"X", "d/sub/y": b"Y"})
    vol.copy_files(["a"], "a2")  # new name
    vol.copy_files(["a", "b"], "d")  # several sources into an existing directory
    vol.copy_files(["d"], "d2", recursive=True)  # a directory to a new name
    vol.copy_files(["d"], "d2", recursive=True)  # ... and again: into the existing one
    assert read(vol, "a2") == b"A"
    assert paths(vol, "d") == ["d/a", "d/b", "d/sub", "d/sub/y", "d/x"]
    assert paths(vol, "d2") == [
        "d2/a",
        "d2/b",
        "d2/d",
        "d2/d/a",
        "d2/d/b",
        "d2/d/sub",
        "d2/d/sub/y",
        "d2/d/x",
        "d2/sub",
        "d2/sub/y",
        "d2/x",
    ]
    vol.copy_files(["b"], "a2")  # onto an existing file: replaced, as cp does
    assert read(vol, "a2") == b"B"


def test_copy_files_refusals(vol: Volume, store_state: Callable) -> None:
    put(vol, {"a": b"A", "b": b"B", "d/x": b"X"})
    before = store_state()
    with pytest.raises(IsADirectoryError):
        vol.copy_files(["d"], "e")  # a directory needs recursive
    with pytest.raises(NotADirectoryError):
        vol.copy_files(["a", "b"], "c")  # several sources need a directory target
    with pytest.raises(FileNotFoundError):
        vol.copy_files(["missing"], "c")
    with pytest.raises(FileNotFoundError):
        vol.copy_files(["a"], "no/such/dir/c")
    with pytest.raises(NotADirectoryError):
        vol.copy_files(["a"], "d/x/")  # trailing slash: must be a directory
    with pytest.raises(volfs.InvalidError):
        vol.copy_files(["d"], "d/inner", recursive=True)
    with pytest.raises(volfs.InvalidError):
        vol.copy_files(["a"], "a")
    with pytest.raises(volfs.InvalidError):
        vol.copy_files(["../a"], "c")
    assert store_state() == before


def test_copies_are_metadata_only(vol: Volume, store: Store, blob_bytes: Callable) -> None:
    put(vol, {"d/big": os.urandom(2 * 1024 * 1024), "d/small": b"s"})
    size = blob_bytes()
    written = store.blobs.stats["blobs_written"]
    vol.copy_files(["d"], "copy", recursive=True)
    assert blob_bytes() == size and store.blobs.stats["blobs_written"] == written
    assert read(vol, "copy/big") == read(vol, "d/big")
    assert vol.info().size == 2 * (2 * 1024 * 1024 + 1)


def test_read_only_handle_refuses_every_write(vol: Volume, store_state: Callable) -> None:
    put(vol, {"a": b"A"})
    ro = vol.read_only()
    before = store_state()
    message = "^Read-only Volume can not be written to$"  # modal's InvalidError, word for word
    with pytest.raises(volfs.ReadOnlyError, match=message), ro.batch_upload():
        pass
    with pytest.raises(volfs.exception.InvalidError, match=message):
        ro.remove_file("a")
    with pytest.raises(volfs.ReadOnlyError, match=message):
        ro.copy_files(["a"], "b")
    assert store_state() == before
    assert read(ro, "a") == b"A"


# -- concurrency and cost -----------------------------------------------------------------
WORKER = textwrap.dedent("""
    import io, os, sys, time
    from volfs import Volume
    worker, count, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    vol = Volume.from_name("shared").hydrate()
    deadline = time.monotonic() + 30
    while not os.path.exists(go):  # start together, so the commits really race
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.005)
    for i in range(count):
        with vol.batch_upload() as batch:  # one commit per file
            batch.put_file(io.BytesIO(f"{worker}:{i}".encode()), f"all/w{worker}-{i:03d}")
""")


def test_concurrent_batch_uploads_from_4_processes_lose_nothing(
    store: Store, tmp_path: Path
) -> None:
    Volume.objects.create("shared")
    vol = Volume.from_name("shared")
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(w), "50", str(go)], stderr=subprocess.PIPE
        )
        for w in range(4)
    ]
    try:
        go.touch()
        for p in procs:
            _, err = p.communicate(timeout=100)
            assert p.returncode == 0, err.decode()
    finally:
        for p in procs:
            p.kill()
    files = [e for e in vol.listdir("all") if e.type is FileEntryType.FILE]
    assert len(files) == 200
    for e in files:
        w, i = e.path.removeprefix("all/w").split("-")
        assert read(vol, e.path) == f"{w}:{int(i)}".encode()
    assert len(vol.history()) == 201  # one snapshot per batch, plus the creation


def test_one_change_in_a_volume_of_100k_files_writes_only_its_path(store: Store) -> None:
    Volume.objects.create("big")
    vol = Volume.from_name("big")

    def where(i: int) -> str:
        return f"d{i % 10}/e{i // 10 % 100}/f{i}"

    with vol.batch_upload() as batch:
        for i in range(100_000):
            batch.put_file(io.BytesIO(b"same tiny content"), where(i))
    assert batch.result is not None and batch.result.trees_written == 1 + 10 + 10 * 100
    assert vol.info().files == 100_000

    target = where(54_321)
    depth = len(target.split("/"))  # trees on its path: root, d1, d1/e32
    before = store.catalog.stats["trees_written"]
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"changed"), target)
    assert batch.result is not None and batch.result.trees_written == depth
    assert store.catalog.stats["trees_written"] - before == depth
    assert read(vol, target) == b"changed" and vol.info().files == 100_000


# -- Volume.mount when the mount cannot start (volfs.mount.launcher) -----------------------------
def test_a_refused_mount_point_fails_before_any_daemon_starts(vol: Volume, store: Store) -> None:
    with (
        pytest.raises(volfs.InvalidError, match="refusing to mount on /proc"),
        vol.mount("/proc/volfs-never"),
    ):
        pass
    assert not list(store.run_dir.glob("daemon-*.log"))  # no daemon was spawned


def test_a_daemon_that_fails_to_start_is_one_mount_error_with_its_reason(
    vol: Volume, store: Store, tmp_path: Path
) -> None:
    from volfs import control
    from volfs.mount import launcher

    # The volume exists, so the check before spawning passes; the daemon itself refuses.
    options = launcher.MountOptions(
        str(store.root), "vol", "main", str(tmp_path / "m"), snapshot="sn-none"
    )
    with pytest.raises(volfs.MountError, match="mount failed: snapshot 'sn-none' not found"):
        launcher.start(options, tmp_path / "daemon.log")
    assert str(tmp_path / "m") not in control.volfs_mountpoints()
