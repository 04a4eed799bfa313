"""The ``volfs volume`` command line: behaviour, output formats, and refusals.

Most tests drive the click commands in-process (CliRunner); the round trip and a set of
refusals run ``python -m volfs`` for real, to prove what a user sees: one ``Error:`` line,
a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import xxhash
from click.testing import CliRunner

from volfs import Volume
from volfs.cli import cli
from volfs.store import Store


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def run(*args: str, input: str | None = None) -> Outcome:
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def run_process(
    *args: str, cwd: Path | None = None, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "volfs", *args],
        cwd=cwd,
        stdin=stdin,
        capture_output=True,
        timeout=100,
        check=False,
    )


def ok(*args: str, input: str | None = None) -> Outcome:
    out = run(*args, input=input)
    assert out.code == 0, out.stderr
    return out


def assert_refused(code: int, stderr: str, expected_code: int | None = None) -> None:
    assert code != 0
    if expected_code is not None:
        assert code == expected_code, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr


def local_tree(root: Path) -> dict[str, str]:
    """relative path -> content digest ("dir" for directories) of a local tree."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in files:
            h = xxhash.xxh3_128()
            with open(os.path.join(dirpath, f), "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
            out[os.path.relpath(os.path.join(dirpath, f), root)] = h.hexdigest()
    return out


@pytest.fixture
def vol(store: Store) -> Volume:
    """A volume "vol" holding f.txt, d/a.txt, d/sub/b.txt."""
    Volume.objects.create("vol", store=store)
    vol = Volume.from_name("vol", store=store)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"file"), "f.txt")
        batch.put_file(io.BytesIO(b"a"), "d/a.txt")
        batch.put_file(io.BytesIO(b"b"), "d/sub/b.txt")
    return vol


def ls_json(name: str, path: str = "/") -> list[dict]:
    return json.loads(ok("volume", "ls", name, path, "--json").stdout)


# -- the round trip, for real -------------------------------------------------------------
def test_put_get_round_trip_is_byte_identical_and_dedups_across_volumes(
    store: Store, tmp_path: Path, blob_bytes: Callable[[], int]
) -> None:
    src = tmp_path / "src"
    (src / "ünïcødé dir" / "深い").mkdir(parents=True)
    (src / "empty-dir").mkdir()
    (src / "empty").write_bytes(b"")
    (src / "one").write_bytes(b"\x00")
    (src / "ünïcødé dir" / "naïve – файл.txt").write_text("non-ASCII names\n")
    (src / "ünïcødé dir" / "深い" / "日本語.bin").write_bytes(os.urandom(1000))
    # >= 100 MiB, not a multiple of the chunk size, every 1 MiB block different.
    block = os.urandom(1 << 20)
    with open(src / "big.bin", "wb") as f:
        f.writelines(i.to_bytes(8, "little") + block[8:] for i in range(100))
        f.write(block[:12345])
    expected = local_tree(src)

    assert run_process("volume", "create", "first").returncode == 0
    put = run_process("volume", "put", "first", str(src), "/data")
    assert put.returncode == 0, put.stderr.decode()
    assert store.catalog.get_tree  # the store is readable in-process while others write
    assert {e["filename"] for e in ls_json("first", "/data")} >= {"data/big.bin", "data/empty"}
    got = run_process("volume", "get", "first", "/data", str(tmp_path / "back"))
    assert got.returncode == 0, got.stderr.decode()
    assert local_tree(tmp_path / "back") == expected
    one = run_process("volume", "get", "first", "/data/ünïcødé dir/naïve – файл.txt", "-")
    assert one.stdout == b"non-ASCII names\n"

    # Dedup: the same tree into a second volume stores no new blob byte.
    stored = blob_bytes()
    assert 100 << 20 < stored < 101 << 20
    assert run_process("volume", "create", "second").returncode == 0
    assert run_process("volume", "put", "second", str(src)).returncode == 0
    assert blob_bytes() == stored
    assert Volume.from_name("second").info().size == Volume.from_name("first").info().size


# -- commands -----------------------------------------------------------------------------
def test_create_list_and_info(store: Store) -> None:
    assert "Created volume 'one'" in ok("volume", "create", "one").stdout
    ok("volume", "create", "two")
    ok("volume", "create", "elsewhere", "--env", "dev")
    table = ok("volume", "list").stdout.splitlines()
    assert table[0].split()[:2] == ["Name", "Created"]
    assert [line.split()[0] for line in table[1:]] == ["two", "one"]
    listed = json.loads(ok("volume", "list", "--json").stdout)
    assert [v["name"] for v in listed] == ["two", "one"]
    assert set(listed[0]) == {"name", "created_at", "created_by"}  # modal's keys (test_modal_cli)
    assert [
        v["name"] for v in json.loads(ok("volume", "list", "--env", "dev", "--json").stdout)
    ] == ["elsewhere"]
    info = json.loads(ok("volume", "info", "one", "--json").stdout)
    assert info["name"] == "one" and info["files"] == 0 and info["format_version"] == 3
    assert "Files:" in ok("volume", "info", "one").stdout


def test_volfs_env_and_store_options(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOLFS_ENV", "staging")
    ok("volume", "create", "v")
    assert [v.name for v in Volume.objects.list(environment_name="staging")] == ["v"]
    other = tmp_path / "other-store"
    ok("--store", str(other), "volume", "create", "w", "--env", "main")
    assert [v.name for v in Volume.objects.list(environment_name="main", store=other)] == ["w"]
    assert Volume.objects.list(environment_name="main") == []


def test_ls_table_json_and_file_path(vol: Volume, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ok("volume", "ls", "vol").stdout.splitlines() == ["d", "f.txt"]  # piped: bare paths
    monkeypatch.setattr("volfs.cli.volume._stdout_is_terminal", lambda: True)
    table = ok("volume", "ls", "vol").stdout.splitlines()
    assert table[0].split() == ["Filename", "Type", "Created/Modified", "Size"]  # modal's columns
    assert [line.split()[0] for line in table[1:]] == ["d/", "f.txt"]
    entries = ls_json("vol", "/d")
    assert [(e["filename"], e["type"]) for e in entries] == [("d/a.txt", "file"), ("d/sub", "dir")]
    assert [e["size"] for e in ls_json("vol", "f.txt")] == ["4 B"]


def test_put_file_directory_and_into_directory(vol: Volume, tmp_path: Path) -> None:
    local = tmp_path / "note.txt"
    local.write_text("note")
    ok("volume", "put", "vol", str(local))  # default REMOTE "/": the root, same name
    ok("volume", "put", "vol", str(local), "/d/")  # trailing slash: into that directory
    ok("volume", "put", "vol", str(local), "/renamed.txt")
    tree = tmp_path / "tree"
    (tree / "x").mkdir(parents=True)
    (tree / "x" / "y").write_text("y")
    ok("volume", "put", "vol", str(tree))  # a directory: recursively, under its name
    ok("volume", "put", "vol", str(tree), "/other")
    paths = {e.path for e in vol.listdir("/", recursive=True)}
    assert {"note.txt", "d/note.txt", "renamed.txt", "tree/x/y", "other/x/y"} <= paths
    assert ok("volume", "put", "vol", str(local), "/note.txt", "--force").code == 0


def test_get_into_cwd_dir_and_stdout(vol: Volume, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    got = run_process("volume", "get", "vol", "/d/a.txt", cwd=work)  # LOCAL defaults to "."
    assert got.returncode == 0, got.stderr
    assert (work / "a.txt").read_bytes() == b"a"
    ok("volume", "get", "vol", "/d", str(work))  # an existing dir receives it by name
    assert (work / "d" / "sub" / "b.txt").read_bytes() == b"b"
    ok("volume", "get", "vol", "/f.txt", str(work / "named.txt"))
    assert (work / "named.txt").read_bytes() == b"file"
    assert ok("volume", "get", "vol", "f.txt", "-").stdout == "file"
    assert not [p for p in work.rglob("*volfs-part*")]  # no temp file left behind


def test_get_does_not_overwrite_local_files_without_force(vol: Volume, tmp_path: Path) -> None:
    local = tmp_path / "f.txt"
    local.write_text("precious")
    out = run("volume", "get", "vol", "/f.txt", str(local))
    assert_refused(out.code, out.stderr, 4)
    assert local.read_text() == "precious"
    # A directory download that meets one existing file writes nothing at all.
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "b.txt").write_text("mine")
    out = run("volume", "get", "vol", "/d", str(tmp_path))
    assert_refused(out.code, out.stderr, 4)
    assert not (tmp_path / "d" / "a.txt").exists()
    assert (tmp_path / "d" / "sub" / "b.txt").read_text() == "mine"
    ok("volume", "get", "vol", "/d", str(tmp_path), "--force")
    assert (tmp_path / "d" / "sub" / "b.txt").read_text() == "b"
    ok("volume", "get", "vol", "/f.txt", str(local), "--force")
    assert local.read_text() == "file"


def test_cp_rm_rename_delete_behave_like_modal_volume(vol: Volume) -> None:
    out = run("volume", "cp", "vol", "/d", "/d2")
    assert_refused(out.code, out.stderr, 2)  # a directory needs -r
    ok("volume", "cp", "vol", "/d", "/d2", "-r")
    assert [e["filename"] for e in ls_json("vol", "/d2")] == ["d2/a.txt", "d2/sub"]
    ok("volume", "cp", "vol", "f.txt", "d/a.txt", "/d2")  # several sources into a dir
    assert {e["filename"] for e in ls_json("vol", "/d2")} == {"d2/a.txt", "d2/f.txt", "d2/sub"}

    out = run("volume", "rm", "vol", "/d2")
    assert_refused(out.code, out.stderr, 2)  # a directory needs -r
    ok("volume", "rm", "vol", "/d2", "-r")
    ok("volume", "rm", "vol", "f.txt")
    assert [e["filename"] for e in ls_json("vol")] == ["d"]

    ok("volume", "rename", "vol", "renamed")
    assert [e["filename"] for e in ls_json("renamed")] == ["d"]
    assert_refused(*_code_err(run("volume", "ls", "vol")), 3)

    ok("volume", "delete", "renamed", "--yes")
    assert Volume.objects.list() == []


def _code_err(out: Outcome) -> tuple[int, str]:
    return out.code, out.stderr


def test_delete_asks_and_refuses_without_an_answer(vol: Volume) -> None:
    # The question comes first on stderr; the error must be the one line after it.
    out = run("volume", "delete", "vol", input="")  # stdin at EOF: no answer
    question, error = out.stderr.rstrip("\n").rsplit("\n", 1)
    assert question.rstrip().endswith("[y/N]:")
    assert_refused(out.code, error, 1)
    assert "--yes" in error
    out = run("volume", "delete", "vol", input="n\n")
    assert_refused(out.code, out.stderr.rstrip("\n").rsplit("\n", 1)[-1], 1)
    proc = run_process("volume", "delete", "vol")  # stdin is /dev/null
    assert proc.returncode == 1 and b"--yes" in proc.stderr and b"Traceback" not in proc.stderr
    assert [v.name for v in Volume.objects.list()] == ["vol"]
    ok("volume", "delete", "vol", input="y\n")
    assert Volume.objects.list() == []


def test_log_shows_what_each_commit_changed(vol: Volume) -> None:
    ok("volume", "rm", "vol", "/d", "-r")
    history = json.loads(ok("volume", "log", "vol", "--json").stdout)
    assert [h["origin"] for h in history] == ["api:rm", "api:put", "create"]
    assert history[0]["changed"] == [{"op": "rm", "path": "d"}]
    assert {"op": "put", "path": "d/sub/b.txt"} in history[1]["changed"]
    assert history[0]["parent"] == history[1]["id"]
    text = ok("volume", "log", "vol", "-n", "1").stdout
    assert text.startswith(history[0]["id"]) and "rm    d" in text and "api:put" not in text


# -- refusals -----------------------------------------------------------------------------
@pytest.fixture
def local_file(tmp_path: Path) -> Path:
    path = tmp_path / "local.txt"
    path.write_text("local content that is not in the store yet")
    return path


BAD_INPUTS: list[tuple[str, list[str], int]] = [
    ("name with space", ["volume", "create", "bad name"], 2),
    ("name too long", ["volume", "create", "a" * 65], 2),
    ("name with slash", ["volume", "rename", "vol", "a/b"], 2),
    ("name '..'", ["volume", "create", ".."], 2),
    ("bad environment", ["volume", "ls", "vol", "--env", "no env"], 2),
    ("existing volume", ["volume", "create", "vol"], 4),
    ("rename onto existing", ["volume", "rename", "vol", "other"], 4),
    ("missing volume ls", ["volume", "ls", "nope"], 3),
    ("missing volume put", ["volume", "put", "nope", "{local}"], 3),
    ("missing volume delete", ["volume", "delete", "nope", "--yes"], 3),
    ("missing volume rename", ["volume", "rename", "nope", "x"], 3),
    ("path with ..", ["volume", "ls", "vol", "d/../.."], 2),
    ("path with NUL", ["volume", "get", "vol", "f.txt\0x", "-"], 2),
    ("put to ..", ["volume", "put", "vol", "{local}", "/d/../../x"], 2),
    ("missing path", ["volume", "get", "vol", "/nope", "-"], 3),
    ("missing local", ["volume", "put", "vol", "{tmp}/no-such-file"], 3),
    ("put over a file", ["volume", "put", "vol", "{local}", "/f.txt"], 4),
    ("put onto a dir", ["volume", "put", "vol", "{local}", "/d"], 2),
    ("put onto a dir --force", ["volume", "put", "vol", "{local}", "/d", "--force"], 2),
    ("put below a file", ["volume", "put", "vol", "{local}", "/f.txt/x", "--force"], 2),
    ("get into a local file", ["volume", "get", "vol", "/f.txt", "{local}"], 4),
    ("get dir to stdout", ["volume", "get", "vol", "/d", "-"], 2),
    ("rm a dir without -r", ["volume", "rm", "vol", "/d"], 2),
    ("rm the root", ["volume", "rm", "vol", "/", "-r"], 2),
    ("rm missing", ["volume", "rm", "vol", "/nope"], 3),
    ("cp many to a file", ["volume", "cp", "vol", "f.txt", "d/a.txt", "f.txt"], 2),
    ("cp a dir into itself", ["volume", "cp", "vol", "d", "d/sub", "-r"], 2),
]


@pytest.mark.parametrize("argv, code", [pytest.param(a, c, id=i) for i, a, c in BAD_INPUTS])
def test_bad_input_is_refused_with_one_line_and_changes_nothing(
    vol: Volume,
    local_file: Path,
    tmp_path: Path,
    argv: list[str],
    code: int,
    store_state: Callable[[], object],
) -> None:
    Volume.objects.create("other")
    argv = [a.format(local=local_file, tmp=tmp_path) for a in argv]
    before = store_state()
    local_before = local_tree(tmp_path)
    out = run(*argv)
    assert_refused(out.code, out.stderr, code)
    assert store_state() == before
    assert local_tree(tmp_path) == local_before


@pytest.mark.parametrize(
    "argv, code",
    [
        (["volume", "create", "bad name"], 2),
        (["volume", "ls", "nope"], 3),
        (["volume", "put", "vol", "{local}", "/f.txt"], 4),
        (["volume", "get", "vol", "/f.txt", "{local}"], 4),
        (["volume", "ls", "vol", "../x"], 2),
    ],
)
def test_refusals_through_a_real_process_print_no_traceback(
    vol: Volume, local_file: Path, argv: list[str], code: int, store_state: Callable[[], object]
) -> None:
    before = store_state()
    proc = run_process(*[a.format(local=local_file) for a in argv])
    assert_refused(proc.returncode, proc.stderr.decode(), code)
    assert proc.stdout == b""
    assert store_state() == before


def test_usage_errors_exit_2_and_help_works(store: Store) -> None:
    proc = run_process("volume", "create")
    assert proc.returncode == 2 and b"Missing argument" in proc.stderr
    assert b"Traceback" not in proc.stderr
    assert run_process("volume", "nope").returncode == 2
    assert run("volume", "cp", "vol", "only-one").code == 2
    helped = run_process("volume", "--help")
    assert helped.returncode == 0
    for command in (
        b"create",
        b"list",
        b"ls",
        b"put",
        b"get",
        b"rm",
        b"cp",
        b"rename",
        b"delete",
        b"info",
        b"log",
    ):
        assert command in helped.stdout
    version = run_process("--version")
    assert version.returncode == 0 and b"volfs" in version.stdout


def test_unexpected_errors_are_one_line_too(vol: Volume, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> Sequence[object]:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Volume, "listdir", broken)
    out = run("volume", "ls", "vol")
    assert_refused(out.code, out.stderr, 1)
    assert "internal error" in out.stderr and "VOLFS_DEBUG" in out.stderr


def test_progress_bar_only_for_large_transfers_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from volfs.cli._common import PROGRESS_MIN_BYTES, progress_bar

    with progress_bar(1 << 40, "Uploading") as progress:
        assert progress is None  # stdout is not a terminal here
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with progress_bar(1024, "Uploading") as progress:
        assert progress is None  # too small to be worth a bar
    with progress_bar(PROGRESS_MIN_BYTES, "Uploading") as progress:
        assert progress is not None
        progress(PROGRESS_MIN_BYTES)
    assert "Uploading" in capsys.readouterr().out
