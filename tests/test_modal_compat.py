"""Modal's documented examples, run with only the import changed: ``import volfs as modal``.

The examples are those of modal-client's ``py/modal/volume.py`` docstrings (v1.5), of
Modal's Volumes guide and of this README's Python section that need no cloud (no
``app.function``); each runs as written (blocking), and again as asyncio code through
``.aio`` (``asyncio.run`` inside the test), and some under trio (pytest-trio runs the
``async def`` tests). What they assert is what modal-client documents: the types, the return
values (``objects.create`` returns None), the defaults (``iterdir`` recursive, ``listdir``
not), and the exception classes and messages of ``modal.exception``.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

import volfs as modal
from volfs.api import reads
from volfs.store import Store

MiB = 1024 * 1024
READ_ONLY = "^Read-only Volume can not be written to$"
GLOB_STAR = (
    r"^Glob patterns in `volume get` and `Volume.listdir\(\)` are deprecated. "
    r"Please remove the glob `\*` suffix.$"
)
GLOB_STARSTAR = (
    r"^Glob patterns in `volume get` and `Volume.listdir\(\)` are deprecated. "
    r"Please pass recursive=True instead. For the CLI, just remove the glob suffix.$"
)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Runs an example as asyncio code, the way a Modal user's script does."""
    asyncio.run(main())


@pytest.fixture
def local_files(tmp_path: Path) -> Path:
    """The local files the batch_upload example names: local-path.txt, /local/directory/."""
    (tmp_path / "local-path.txt").write_bytes(b"local file")
    directory = tmp_path / "local" / "directory"
    (directory / "sub").mkdir(parents=True)
    (directory / "a.txt").write_bytes(b"a")
    (directory / "sub" / "b.txt").write_bytes(b"bb")
    return tmp_path


# -- the namespaces a port needs ------------------------------------------------------------
def test_modal_module_names_exist_and_catch_what_volfs_raises(store: Store) -> None:
    from volfs.exception import (  # noqa: F401 - modal's names, importable
        AlreadyExistsError,
        AuthError,
        ConflictError,
        Error,
        ExecutionError,
        InvalidError,
        NotFoundError,
        TimeoutError,
        VolumeUploadTimeoutError,
    )
    from volfs.types import FileEntry, FileEntryType, VolumeInfo
    from volfs.volume import FileEntry as VolumeFileEntry
    from volfs.volume import Volume

    assert modal.Error is Error and modal.volume.Volume is modal.Volume is Volume
    assert VolumeFileEntry is FileEntry and modal.types.VolumeInfo is VolumeInfo
    assert [t.value for t in FileEntryType][:6] == [0, 1, 2, 3, 4, 5]  # modal's values
    # modal's hierarchy
    assert issubclass(ConflictError, InvalidError) and issubclass(InvalidError, Error)
    assert issubclass(VolumeUploadTimeoutError, TimeoutError) and issubclass(TimeoutError, Error)
    assert issubclass(AuthError, Error) and issubclass(ExecutionError, Error)
    assert issubclass(modal.ReadOnlyError, InvalidError)
    # volfs's classes are caught by modal's names and by the builtins they were caught by
    assert issubclass(modal.PathNotFoundError, NotFoundError)
    assert issubclass(modal.PathNotFoundError, FileNotFoundError)
    assert issubclass(modal.PathExistsError, FileExistsError)
    assert issubclass(modal.OpenFilesError, ConflictError)
    assert issubclass(modal.OpenFilesError, RuntimeError)
    for cls in (modal.CorruptionError, modal.StoreFullError, modal.MountError):
        assert issubclass(cls, Error)
    with pytest.raises(modal.exception.NotFoundError):
        modal.Volume.from_name("missing").hydrate()
    try:
        modal.Volume.from_name("missing").hydrate()
    except modal.Error:  # modal.Error's docstring: catches any error of modal's systems
        pass


def test_exit_codes_stay_by_class() -> None:
    """The CLI's exit codes (README, "Command line") are still told by the class."""
    codes = {
        modal.InvalidError: 2,
        modal.NotFoundError: 3,
        modal.AlreadyExistsError: 4,
        modal.ConflictError: 5,
        modal.ReadOnlyError: 6,
        modal.PermissionDeniedError: 7,
        modal.CorruptionError: 8,
        modal.StoreFullError: 9,
        modal.MountError: 10,
        modal.BackendUnavailableError: 11,
    }
    assert {cls: cls.exit_code for cls in codes} == codes


# -- Volume.from_name / objects.create / list / delete ----------------------------------------
def test_from_name_create_if_missing(store: Store) -> None:
    vol = modal.Volume.from_name("my-volume", create_if_missing=True)
    assert isinstance(vol, modal.Volume) and not vol.is_hydrated  # lazy, as modal's
    assert vol.hydrate() is vol and vol.is_hydrated
    assert vol.name == "my-volume" and vol.object_id.startswith("vo-")


def test_from_name_create_if_missing_aio(store: Store) -> None:
    async def main() -> None:
        vol = await modal.Volume.from_name.aio("my-volume", create_if_missing=True)
        assert not vol.is_hydrated
        assert await vol.hydrate.aio() is vol and vol.is_hydrated
        assert [v.name for v in await modal.Volume.objects.list.aio()] == ["my-volume"]

    run(main)


def test_objects_create_examples_return_none(store: Store) -> None:
    assert modal.Volume.objects.create("my-volume") is None
    assert modal.Volume.objects.create("my-volume", environment_name="dev") is None
    assert modal.Volume.objects.create("my-volume", allow_existing=True) is None
    with pytest.raises(modal.exception.AlreadyExistsError):
        modal.Volume.objects.create("my-volume")
    # "use modal.Volume.from_name to perform a lookup after creation"
    assert modal.Volume.from_name("my-volume").hydrate().name == "my-volume"
    assert modal.Volume.objects.create("v2", version=2, client=None) is None
    assert modal.Volume.objects.create("v3", experimental_options={"x": 1}) is None


def test_objects_create_examples_return_none_aio(store: Store) -> None:
    async def main() -> None:
        assert await modal.Volume.objects.create.aio("my-volume") is None
        assert await modal.Volume.objects.create.aio("my-volume", environment_name="dev") is None
        assert await modal.Volume.objects.create.aio("my-volume", allow_existing=True) is None
        with pytest.raises(modal.exception.AlreadyExistsError):
            await modal.Volume.objects.create.aio("my-volume")

    run(main)


def test_objects_list_examples(store: Store) -> None:
    for name in ("a", "b"):
        modal.Volume.objects.create(name)
    modal.Volume.objects.create("c", environment_name="dev")
    volumes = modal.Volume.objects.list()
    assert [v.name for v in volumes] == ["b", "a"]  # newest first
    assert all(isinstance(v, modal.Volume) and v.is_hydrated for v in volumes)
    assert [v.name for v in modal.Volume.objects.list(environment_name="dev")] == ["c"]
    assert modal.Volume.objects.list(max_objects=10, created_before="2025-01-01") == []
    assert len(modal.Volume.objects.list(max_objects=1)) == 1
    with pytest.raises(modal.exception.InvalidError, match="^max_objects cannot be negative$"):
        modal.Volume.objects.list(max_objects=-1)


def test_objects_list_examples_aio(store: Store) -> None:
    async def main() -> None:
        await modal.Volume.objects.create.aio("a")
        volumes = await modal.Volume.objects.list.aio()
        assert [v.name for v in volumes] == ["a"]
        assert (
            await modal.Volume.objects.list.aio(max_objects=10, created_before="2025-01-01") == []
        )

    run(main)


def test_objects_delete_examples(store: Store) -> None:
    modal.Volume.objects.create("my-volume")
    modal.Volume.objects.create("my-volume", environment_name="dev")
    assert modal.Volume.objects.delete("my-volume") is None
    assert modal.Volume.objects.delete("my-volume", environment_name="dev") is None
    with pytest.raises(modal.exception.NotFoundError):
        modal.Volume.objects.delete("my-volume")
    modal.Volume.objects.delete("my-volume", allow_missing=True)


def test_objects_delete_examples_aio(store: Store) -> None:
    async def main() -> None:
        await modal.Volume.objects.create.aio("my-volume")
        await modal.Volume.objects.delete.aio("my-volume")
        with pytest.raises(modal.exception.NotFoundError):
            await modal.Volume.objects.delete.aio("my-volume")
        await modal.Volume.objects.delete.aio("my-volume", allow_missing=True)

    run(main)


def test_names_follow_modals_rule_and_message(store: Store) -> None:
    modal.Volume.objects.create("x" * 64)  # modal allows 64 characters
    message = (
        # modal's words; on one line, as every volfs message (modal has a blank line here)
        r"^Invalid Volume name: 'x{65}'. Names may contain only alphanumeric characters, "
        r"dashes, periods, and underscores, must be shorter than 64 characters, and cannot "
        r"conflict with App ID strings.$"
    )
    with pytest.raises(modal.exception.InvalidError, match=message):
        modal.Volume.objects.create("x" * 65)
    with pytest.raises(modal.exception.InvalidError, match="Invalid Volume name"):
        modal.Volume.from_name("ap-" + "a" * 22)  # would look like an App id
    with pytest.raises(
        modal.exception.InvalidError, match="^VolumeFS version must be either 1 or 2$"
    ):
        modal.Volume.from_name("ok", version=3)
    with pytest.raises(
        modal.exception.InvalidError, match="^VolumeFS version must be either 1 or 2$"
    ):
        modal.Volume.objects.create("ok", version=0)


def test_rename(store: Store) -> None:
    modal.Volume.objects.create("old")
    assert modal.Volume.rename("old", "new", environment_name=None, client=None) is None
    assert [v.name for v in modal.Volume.objects.list()] == ["new"]

    async def main() -> None:
        await modal.Volume.rename.aio("new", "newer")

    run(main)
    assert [v.name for v in modal.Volume.objects.list()] == ["newer"]


# -- ephemeral and from_id --------------------------------------------------------------------
def test_ephemeral_example(store: Store) -> None:
    with modal.Volume.ephemeral() as vol:
        assert vol.listdir("/") == []
        assert isinstance(vol, modal.Volume) and vol.is_hydrated
        assert vol.name is None and vol.info().name is None  # nameless, as in modal
        assert modal.Volume.objects.list() == []  # and not listed
    assert store.catalog.list_volumes() == []  # deleted with the block


def test_ephemeral_example_async_with(store: Store) -> None:
    async def main() -> None:
        async with modal.Volume.ephemeral() as vol:
            assert await vol.listdir.aio("/") == []
            assert vol.name is None
        async with modal.Volume.ephemeral.aio(environment_name="dev", version=2) as vol:
            assert await vol.listdir.aio("/") == []

    run(main)
    assert store.catalog.list_volumes() == []


def test_ephemerals_are_distinct_volumes(store: Store) -> None:
    with modal.Volume.ephemeral() as a, modal.Volume.ephemeral() as b:
        assert a.object_id != b.object_id


def test_from_id_example(store: Store) -> None:
    def my_worker(volume_id: str) -> list[str]:
        vol = modal.Volume.from_id(volume_id)
        return [entry.path for entry in vol.listdir("/")]

    with modal.Volume.ephemeral() as vol:
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"x"), "/a.txt")
        assert my_worker(vol.object_id) == ["a.txt"]
        lazy = modal.Volume.from_id(vol.object_id)
        assert not lazy.is_hydrated
    with pytest.raises(modal.exception.NotFoundError):
        lazy.hydrate()


def test_from_id_example_aio(store: Store) -> None:
    async def main() -> None:
        async with modal.Volume.ephemeral() as vol:
            other = await modal.Volume.from_id.aio(vol.object_id)
            assert await other.listdir.aio("/") == []
            assert (await other.info.aio()).name is None

    run(main)


# -- reading and writing ----------------------------------------------------------------------
def test_batch_upload_example(
    store: Store, local_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(local_files)
    vol = modal.Volume.from_name("my-modal-volume", create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file("local-path.txt", "/remote-path.txt")
        batch.put_directory(str(local_files / "local" / "directory") + "/", "/remote/directory")
        batch.put_file(io.BytesIO(b"some data"), "/foobar")
    assert_uploaded(vol)


def test_batch_upload_example_async(
    store: Store, local_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(local_files)
    vol = modal.Volume.from_name("my-modal-volume", create_if_missing=True)

    async def main() -> None:
        async with vol.batch_upload.aio() as batch:
            batch.put_file("local-path.txt", "/remote-path.txt")
            batch.put_directory(str(local_files / "local" / "directory"), "/remote/directory")
            batch.put_file(io.BytesIO(b"some data"), "/foobar")
        async with vol.batch_upload(force=True) as batch:  # the blocking form, async with
            batch.put_file(io.BytesIO(b"new data"), PurePosixPath("/foobar"))

    run(main)
    assert_uploaded(vol, foobar=b"new data")


def assert_uploaded(vol: modal.Volume, foobar: bytes = b"some data") -> None:
    assert sorted(e.path for e in vol.iterdir("/")) == [
        "foobar",
        "remote",
        "remote-path.txt",
        "remote/directory",
        "remote/directory/a.txt",
        "remote/directory/sub",
        "remote/directory/sub/b.txt",
    ]
    assert b"".join(vol.read_file("/remote-path.txt")) == b"local file"
    assert b"".join(vol.read_file("foobar")) == foobar


def test_batch_upload_errors_are_modals(store: Store) -> None:
    vol = modal.Volume.from_name("v", create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"1"), "/f")
    with pytest.raises(FileExistsError), vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"2"), "/f")
    with vol.batch_upload(force=True) as batch:  # "To allow overwriting … set force to True"
        batch.put_file(io.BytesIO(b"2"), "/f")
    assert b"".join(vol.read_file("f")) == b"2"

    async def main() -> None:
        with pytest.raises(FileExistsError):
            async with vol.batch_upload.aio() as batch:
                batch.put_file(io.BytesIO(b"3"), "/f")
        with pytest.raises(RuntimeError, match="boom"):  # the block raised: nothing lands
            async with vol.batch_upload.aio(force=True) as batch:
                batch.put_file(io.BytesIO(b"4"), "/f")
                raise RuntimeError("boom")

    run(main)
    assert b"".join(vol.read_file("f")) == b"2"


def test_read_file_example(store: Store) -> None:
    vol = modal.Volume.from_name("my-modal-volume", create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"x" * MiB), "1mb.csv")
    data = b""
    for chunk in vol.read_file("1mb.csv"):
        data += chunk
    assert len(data) == 1024 * 1024
    with pytest.raises(FileNotFoundError):
        vol.read_file("missing.csv")

    async def main() -> None:
        data = b""
        async for chunk in vol.read_file.aio("1mb.csv"):
            assert isinstance(chunk, bytes)
            data += chunk
        assert len(data) == 1024 * 1024
        with pytest.raises(FileNotFoundError):
            async for _ in vol.read_file.aio("missing.csv"):
                pass

    run(main)


def test_read_file_into_fileobj_calls_progress_cb_with_advance(store: Store) -> None:
    vol = modal.Volume.from_name("v", create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"y" * (2 * MiB + 3)), "f")
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    out = io.BytesIO()
    size = vol.read_file_into_fileobj("f", out, progress_cb=lambda *a, **k: calls.append((a, k)))
    assert size == 2 * MiB + 3 and out.getvalue() == b"y" * size
    assert all(args == () and list(kwargs) == ["advance"] for args, kwargs in calls)
    assert sum(kwargs["advance"] for _, kwargs in calls) == size

    async def main() -> None:
        out = io.BytesIO()
        assert await vol.read_file_into_fileobj.aio("f", out) == size

    run(main)


def test_listdir_and_iterdir_defaults_and_entries(store: Store) -> None:
    vol = modal.Volume.from_name("v", create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"abc"), "top.txt")
        batch.put_file(io.BytesIO(b"12"), "d/x.bin")
    entries = vol.listdir("/")  # modal: not recursive
    assert [(e.path, e.type) for e in entries] == [
        ("d", modal.FileEntryType.DIRECTORY),
        ("top.txt", modal.FileEntryType.FILE),
    ]
    assert all(isinstance(e, modal.volume.FileEntry) for e in entries)
    assert isinstance(entries[1].mtime, int) and entries[1].size == 3
    assert [e.path for e in vol.iterdir("/")] == ["d", "d/x.bin", "top.txt"]  # modal: recursive
    assert [e.path for e in vol.listdir("/", recursive=True)] == ["d", "d/x.bin", "top.txt"]
    assert [e.path for e in vol.iterdir("/", recursive=False)] == ["d", "top.txt"]
    assert [e.path for e in vol.listdir("top.txt")] == ["top.txt"]  # a file: that file alone
    with pytest.raises(modal.exception.InvalidError, match=GLOB_STAR):
        vol.listdir("d/*")
    with pytest.raises(modal.exception.InvalidError, match=GLOB_STARSTAR):
        list(vol.iterdir("d/**"))
    with pytest.raises(FileNotFoundError):
        vol.listdir("missing")

    async def main() -> None:
        assert [e.path for e in await vol.listdir.aio("/")] == ["d", "top.txt"]
        assert [e.path async for e in vol.iterdir.aio("/")] == ["d", "d/x.bin", "top.txt"]
        assert [e.path async for e in vol.iterdir.aio("/", recursive=False)] == ["d", "top.txt"]
        with pytest.raises(modal.exception.InvalidError, match=GLOB_STARSTAR):
            await vol.listdir.aio("**")

    run(main)


def test_copy_files_and_remove_file_examples(store: Store) -> None:
    vol = modal.Volume.from_name("my-modal-volume", create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"example"), "bar/example.txt")
    assert vol.copy_files(["bar/example.txt"], "bar2") is None
    assert vol.copy_files(["bar/example.txt"], "bar/example2.txt") is None
    assert [e.path for e in vol.iterdir("/")] == [
        "bar",
        "bar/example.txt",
        "bar/example2.txt",
        "bar2",
    ]
    assert vol.remove_file("bar2") is None
    with pytest.raises(FileNotFoundError):
        vol.remove_file("bar2")

    async def main() -> None:
        await vol.copy_files.aio(["bar"], "baz", recursive=True)
        await vol.remove_file.aio("bar", recursive=True)
        assert [e.path for e in await vol.listdir.aio("/", recursive=True)] == [
            "baz",
            "baz/example.txt",
            "baz/example2.txt",
        ]

    run(main)


def test_info_is_modals_volume_info(store: Store) -> None:
    vol = modal.Volume.from_name("v", create_if_missing=True)
    info = vol.info()
    assert isinstance(info, modal.types.VolumeInfo)
    assert (info.name, info.created_by) == ("v", info.created_by)
    # modal: timestamp_to_localized_dt, an aware datetime in the local time zone
    local = datetime.now().astimezone().tzinfo
    assert info.created_at.tzinfo is not None
    assert info.created_at.utcoffset() == datetime.now(local).utcoffset()
    assert abs(info.created_at.timestamp() - datetime.now().timestamp()) < 600

    async def main() -> None:
        assert (await vol.info.aio()).created_at == info.created_at

    run(main)


def test_read_only_writes_raise_modals_invalid_error(store: Store) -> None:
    vol = modal.Volume.from_name("v", create_if_missing=True).read_only()
    with pytest.raises(modal.exception.InvalidError, match=READ_ONLY), vol.batch_upload():
        pass
    with pytest.raises(modal.exception.InvalidError, match=READ_ONLY):
        vol.remove_file("x")
    with pytest.raises(modal.exception.InvalidError, match=READ_ONLY):
        vol.copy_files(["x"], "y")

    async def main() -> None:
        with pytest.raises(modal.exception.InvalidError, match=READ_ONLY):
            async with vol.batch_upload.aio():
                pass
        with pytest.raises(modal.exception.InvalidError, match=READ_ONLY):
            await vol.remove_file.aio("x")

    run(main)


# -- with_mount_options -----------------------------------------------------------------------
def test_with_mount_options_examples(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from volfs.mount import launcher

    started: list[launcher.MountOptions] = []

    def start(options: launcher.MountOptions, log_path: Path | None = None) -> launcher.Daemon:
        started.append(options)
        raise modal.MountError("not started: the test only looks at the options")

    monkeypatch.setattr(launcher, "start", start)
    volume = modal.Volume.from_name("my-volume", create_if_missing=True)
    ro = volume.with_mount_options(read_only=True)
    sub = volume.with_mount_options(sub_path="/users/my_user")
    assert isinstance(ro, modal.Volume) and isinstance(sub, modal.Volume)
    for handle in (ro, sub, sub.with_mount_options(read_only=True), volume):
        with pytest.raises(modal.MountError), handle.mount("/mnt/never"):
            pass
    assert [(o.read_only, o.sub_path) for o in started] == [
        (True, None),
        (False, "/users/my_user"),  # as modal normalizes it: PurePosixPath(...).as_posix()
        (True, "/users/my_user"),  # unset options keep the handle's
        (False, None),
    ]
    # modal: with_mount_options(read_only=True) does not block the SDK's own writes
    with ro.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"x"), "f")
    assert volume.with_mount_options(sub_path="/")._mount_options == (
        volume.with_mount_options()._mount_options
    )
    with pytest.raises(modal.exception.InvalidError, match=r"Cannot call with_mount_options\(\)"):
        volume.read_only().with_mount_options(sub_path="x")
    with pytest.raises(modal.exception.InvalidError, match=r"Cannot call read_only\(\)"):
        ro.read_only()


# -- the README's Python example --------------------------------------------------------------
def test_readme_python_example(
    store: Store, local_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(local_files)
    (local_files / "model.bin").write_bytes(b"model")
    (local_files / "dataset").mkdir()
    (local_files / "dataset" / "rows.csv").write_bytes(b"1,2")
    vol = modal.Volume.from_name("data", create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file("model.bin", "/models/model.bin")
        batch.put_file(io.BytesIO(b"hi"), "/notes/hello.txt")
        batch.put_directory("./dataset", "/dataset")
    assert [e.path for e in vol.listdir("/", recursive=True)] == [
        "dataset",
        "dataset/rows.csv",
        "models",
        "models/model.bin",
        "notes",
        "notes/hello.txt",
    ]
    assert b"".join(vol.read_file("/notes/hello.txt")) == b"hi"
    vol.copy_files(["/dataset"], "/dataset-v2", recursive=True)
    vol.remove_file("/dataset", recursive=True)
    assert [e.path for e in vol.listdir("/")] == ["dataset-v2", "models", "notes"]
    assert vol.info().files == 3


def test_readme_python_example_aio(
    store: Store, local_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(local_files)
    (local_files / "model.bin").write_bytes(b"model")

    async def main() -> None:
        vol = await modal.Volume.from_name.aio("data", create_if_missing=True)
        async with vol.batch_upload.aio() as batch:
            batch.put_file("model.bin", "/models/model.bin")
            batch.put_file(io.BytesIO(b"hi"), "/notes/hello.txt")
        entries = await vol.listdir.aio("/", recursive=True)
        assert [e.path for e in entries] == [
            "models",
            "models/model.bin",
            "notes",
            "notes/hello.txt",
        ]
        data = b"".join([c async for c in vol.read_file.aio("/notes/hello.txt")])
        assert data == b"hi"
        await vol.copy_files.aio(["/notes"], "/notes-v2", recursive=True)
        await vol.remove_file.aio("/notes", recursive=True)
        assert (await vol.info.aio()).files == 2
        assert len(await vol.history.aio()) == 4

    run(main)


# -- the event loop keeps running -------------------------------------------------------------
class Gate:
    """Makes listing a directory wait, once it has started, until :meth:`release` — which a
    task of the event loop calls only after seeing it start. Were ``.aio`` to run the
    listing on the loop's own thread, that task could never run: the listing times out."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = threading.Event()
        self.go = threading.Event()
        real = reads.iter_entries

        def wait_then_list(*args: Any, **kwargs: Any) -> Any:
            self.started.set()
            assert self.go.wait(timeout=10), "the event loop was blocked"
            return real(*args, **kwargs)

        monkeypatch.setattr(reads, "iter_entries", wait_then_list)

    async def release(self, sleep: Callable[[float], Any]) -> None:
        while not self.started.is_set():
            await sleep(0.001)
        self.go.set()


def test_aio_does_not_block_the_asyncio_loop(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    vol = modal.Volume.from_name("v", create_if_missing=True)
    vol.hydrate()
    gate = Gate(monkeypatch)

    async def main() -> None:
        listing, _ = await asyncio.gather(vol.listdir.aio("/"), gate.release(asyncio.sleep))
        assert listing == []
        gate.started.clear()
        gate.go.clear()
        entries, _ = await asyncio.gather(
            _collect(vol.iterdir.aio("/")), gate.release(asyncio.sleep)
        )
        assert entries == []

    run(main)


async def _collect(it: Any) -> list[Any]:
    return [x async for x in it]


async def test_aio_does_not_block_the_trio_loop(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio

    vol = modal.Volume.from_name("v", create_if_missing=True)
    vol.hydrate()
    gate = Gate(monkeypatch)
    results: list[Any] = []

    async def listing() -> None:
        results.append(await vol.listdir.aio("/"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listing)
        nursery.start_soon(gate.release, trio.sleep)
    assert results == [[]]


async def test_examples_under_trio(store: Store) -> None:
    await modal.Volume.objects.create.aio("t")
    vol = await modal.Volume.from_name.aio("t")
    async with vol.batch_upload.aio() as batch:
        batch.put_file(io.BytesIO(b"trio"), "/a/b.txt")
    assert [e.path async for e in vol.iterdir.aio("/")] == ["a", "a/b.txt"]
    assert b"".join([c async for c in vol.read_file.aio("a/b.txt")]) == b"trio"
    async with modal.Volume.ephemeral() as eph:
        assert await eph.listdir.aio("/") == []
    assert [v.name for v in await modal.Volume.objects.list.aio()] == ["t"]


def test_the_blocking_form_still_works_unbound(store: Store) -> None:
    vol = modal.Volume.from_name("v", create_if_missing=True)
    assert modal.Volume.listdir(vol, "/") == []
    assert modal.Volume.objects.list.__doc__ and modal.Volume.listdir.__doc__


@pytest.mark.mount
def test_guide_commit_and_reload_between_two_mounts(store: Store, tmp_path: Path) -> None:
    """The guide's f() and g(): one container writes and commits, another reloads and reads;
    here two mounts of one volume, driven from asyncio."""
    volume = modal.Volume.from_name("my-persisted-volume", create_if_missing=True)

    async def main() -> None:
        async with (
            volume.mount.aio(tmp_path / "foo", autocommit=0) as foo,
            volume.mount(tmp_path / "bar", autocommit=0) as bar,
        ):
            with open(foo / "bar.txt", "w") as f:  # f()
                f.write("hello")
            await volume.commit.aio()  # Persist changes
            assert await volume.listdir.aio("/") != []
            await modal.reload.aio(bar)  # g(): Fetch latest changes (of that one mount)
            with open(bar / "bar.txt") as f:
                assert f.read() == "hello"

    run(main)
    assert b"".join(volume.read_file("bar.txt")) == b"hello"


def test_readme_async_example(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:  # every call has .aio, as in Modal
        async with modal.Volume.ephemeral() as tmp:  # nameless, deleted on exit
            async with tmp.batch_upload.aio() as batch:
                batch.put_file(io.BytesIO(b"x"), "/x")
            print([e.path async for e in tmp.iterdir.aio("/")])
            print(b"".join([c async for c in tmp.read_file.aio("/x")]))

    run(main)
    assert capsys.readouterr().out == "['x']\nb'x'\n"
    assert store.catalog.list_volumes() == []
