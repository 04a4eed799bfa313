"""Which mounts plain ``volfs commit`` / ``reload`` / ``status`` act on, and sub-path mounts.

Two stores on one host, a mount of each: with no PATH the commands act on the current
store's mounts only (``VOLFS_STORE``), with ``--all`` on every store's, and a PATH inside a
mount means that mount. The ``--all`` cases run in-process with the list of mountpoints cut
down to this test's two: other people's mounts on this machine must not be committed by a
test.

``volfs mount NAME PATH --sub-path DIR`` (Modal's ``with_mount_options(sub_path=…)``)
serves one directory of a volume: reads, writes and commits happen under it, and the rest
of the volume is untouched.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from mounting import Mount, mounted, run_volfs

from volfs import Volume, control
from volfs.cli import cli

pytestmark = pytest.mark.mount


def snapshots(store: Path, name: str) -> int:
    return len(json.loads(run_volfs(store, "volume", "log", name, "--json").stdout))


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Mount, Mount]]:
    """Store "a" with volume "scope-a" mounted at ma, store "b" with "scope-b" at mb."""
    sa, sb = tmp_path / "store-a", tmp_path / "store-b"
    run_volfs(sa, "volume", "create", "scope-a")
    run_volfs(sb, "volume", "create", "scope-b")
    with (
        mounted(sa, "scope-a", tmp_path / "ma") as a,
        mounted(sb, "scope-b", tmp_path / "mb") as b,
    ):
        yield a, b


def in_process(
    monkeypatch: pytest.MonkeyPatch, store: Path, ours: tuple[Mount, ...], *args: str
) -> list[dict]:
    """Runs the CLI here, seeing only ``ours`` of the machine's mounts."""
    points = {str(m.path) for m in ours}
    real = control.volfs_mountpoints
    monkeypatch.setattr(control, "volfs_mountpoints", lambda: [p for p in real() if p in points])
    monkeypatch.setenv("VOLFS_STORE", str(store))
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_plain_commit_commits_only_the_current_stores_mounts(two: tuple[Mount, Mount]) -> None:
    a, b = two
    (a.path / "fa").write_text("a")
    (b.path / "fb").write_text("b")
    before_a, before_b = snapshots(a.store, "scope-a"), snapshots(b.store, "scope-b")
    out = json.loads(run_volfs(a.store, "commit", "--json").stdout)
    assert [r["path"] for r in out] == [str(a.path)]
    assert snapshots(a.store, "scope-a") == before_a + 1
    assert snapshots(b.store, "scope-b") == before_b  # the other store's mount: untouched
    rows = json.loads(run_volfs(b.store, "status", "--json").stdout)
    assert [(r["path"], r["dirty_paths"]) for r in rows] == [(str(b.path), ["fb"])]


def test_python_commit_without_a_path_commits_only_the_current_stores_mounts(
    two: tuple[Mount, Mount], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``volfs.commit()`` is plain ``volfs commit`` for Python code."""
    import volfs

    a, b = two
    (a.path / "fa").write_text("a")
    (b.path / "fb").write_text("b")
    before_a, before_b = snapshots(a.store, "scope-a"), snapshots(b.store, "scope-b")
    monkeypatch.setenv("VOLFS_STORE", str(a.store))
    volfs.commit()
    assert snapshots(a.store, "scope-a") == before_a + 1
    assert snapshots(b.store, "scope-b") == before_b


def test_commit_all_commits_every_stores_mounts(
    two: tuple[Mount, Mount], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    (a.path / "fa").write_text("a")
    (b.path / "fb").write_text("b")
    before_a, before_b = snapshots(a.store, "scope-a"), snapshots(b.store, "scope-b")
    out = in_process(monkeypatch, a.store, two, "commit", "--all")
    assert sorted(r["path"] for r in out) == sorted([str(a.path), str(b.path)])
    assert snapshots(a.store, "scope-a") == before_a + 1
    assert snapshots(b.store, "scope-b") == before_b + 1
    rows = in_process(monkeypatch, b.store, two, "status", "--all")
    assert sorted(r["path"] for r in rows) == sorted([str(a.path), str(b.path)])


def test_a_path_inside_a_mount_means_that_mount(two: tuple[Mount, Mount]) -> None:
    a, b = two
    (a.path / "sub" / "dir").mkdir(parents=True)
    (a.path / "sub" / "dir" / "f").write_text("a")
    (b.path / "fb").write_text("b")
    before_a, before_b = snapshots(a.store, "scope-a"), snapshots(b.store, "scope-b")
    inside = str(a.path / "sub" / "dir")
    # VOLFS_STORE names the other store: the path decides.
    out = json.loads(run_volfs(b.store, "commit", inside, "--json").stdout)
    assert [r["path"] for r in out] == [str(a.path)] and out[0]["snapshot"]
    assert snapshots(a.store, "scope-a") == before_a + 1
    assert snapshots(b.store, "scope-b") == before_b
    rows = json.loads(run_volfs(b.store, "status", inside, "--json").stdout)
    assert [r["path"] for r in rows] == [str(a.path)]
    out = json.loads(run_volfs(b.store, "reload", inside, "--json").stdout)
    assert [r["path"] for r in out] == [str(a.path)]
    proc = run_volfs(b.store, "commit", str(a.path.parent), check=False)
    assert proc.returncode == 2 and "is not in a volfs mount" in proc.stderr


def test_plain_reload_and_status_act_on_the_current_store_only(
    two: tuple[Mount, Mount], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    out = json.loads(run_volfs(a.store, "reload", "--json").stdout)
    assert [r["path"] for r in out] == [str(a.path)]
    rows = json.loads(run_volfs(a.store, "status", "--json").stdout)
    assert [r["path"] for r in rows] == [str(a.path)]
    out = in_process(monkeypatch, b.store, two, "reload", "--all")
    assert sorted(r["path"] for r in out) == sorted([str(a.path), str(b.path)])


# -- sub-path mounts -----------------------------------------------------------------------
@pytest.fixture
def layered(tmp_path: Path) -> Path:
    """Store with volume "layered": top.txt, a/b/f.txt, a/keep.txt."""
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "layered")
    vol = Volume.from_name("layered", store=store)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"top"), "top.txt")
        batch.put_file(io.BytesIO(b"f"), "a/b/f.txt")
        batch.put_file(io.BytesIO(b"keep"), "a/keep.txt")
    return store


def test_sub_path_mount_serves_that_directory_and_commits_under_it(
    layered: Path, tmp_path: Path
) -> None:
    vol = Volume.from_name("layered", store=layered)
    with mounted(layered, "layered", tmp_path / "m", "--sub-path", "/a/") as m:
        assert sorted(os.listdir(m.path)) == ["b", "keep.txt"]
        assert (m.path / "b" / "f.txt").read_text() == "f"
        (m.path / "new.txt").write_text("new")
        (m.path / "b" / "f.txt").write_text("changed")
        (m.path / "d").mkdir()
        os.rename(m.path / "keep.txt", m.path / "d" / "kept.txt")
        m.commit()
        changed = json.loads(m.volfs("volume", "log", "layered", "-n", "1", "--json").stdout)
        # The sub-path itself (its mtime: it is the mount's root) and what is below it.
        assert {c["path"].split("/")[0] for c in changed[0]["changed"]} == {"a"}
        # Someone else changes the volume inside and outside the sub-path; a reload shows
        # the inside only.
        with vol.batch_upload(force=True) as batch:
            batch.put_file(io.BytesIO(b"other"), "a/other.txt")
            batch.put_file(io.BytesIO(b"top2"), "top.txt")
        m.reload()
        assert sorted(os.listdir(m.path)) == ["b", "d", "new.txt", "other.txt"]
        status = json.loads(m.volfs("status", str(m.path), "--json").stdout)
        assert status[0]["sub_path"] == "a"
    files = {
        e.path: b"".join(vol.read_file(e.path))
        for e in vol.listdir("/", recursive=True)
        if e.type.name == "FILE"
    }
    assert files == {
        "top.txt": b"top2",
        "a/new.txt": b"new",
        "a/b/f.txt": b"changed",
        "a/d/kept.txt": b"keep",
        "a/other.txt": b"other",
    }


def test_read_only_sub_path_mount(layered: Path, tmp_path: Path) -> None:
    with mounted(layered, "layered", tmp_path / "m", "--sub-path", "a/b", "--read-only") as m:
        assert os.listdir(m.path) == ["f.txt"]
        with pytest.raises(OSError) as exc:
            (m.path / "x").write_text("x")
        assert exc.value.errno == 30  # EROFS


@pytest.mark.parametrize(
    ("sub_path", "message"),
    [
        ("missing", "sub-path 'missing' does not exist in volume 'layered'"),
        ("a/missing/deeper", "does not exist"),
        ("top.txt", "sub-path 'top.txt' of volume 'layered' is not a directory"),
        ("top.txt/x", "'top.txt' is not a directory"),
        ("a/../..", "'..' is not allowed"),
    ],
)
def test_a_sub_path_that_is_not_a_directory_is_refused_and_leaves_nothing(
    layered: Path, tmp_path: Path, sub_path: str, message: str
) -> None:
    where = tmp_path / "m"
    where.mkdir()
    proc = run_volfs(layered, "mount", "layered", str(where), "--sub-path", sub_path, check=False)
    if proc.returncode == 0:  # a bug let it mount: do not leave a daemon behind
        run_volfs(layered, "unmount", str(where), "--force")
    assert proc.returncode != 0 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list((layered / "overlays").iterdir())  # no overlay left for `volfs recover`
    assert str(where) not in control.volfs_mountpoints()


def test_reload_refuses_when_the_sub_path_was_removed(layered: Path, tmp_path: Path) -> None:
    vol = Volume.from_name("layered", store=layered)
    with mounted(layered, "layered", tmp_path / "m", "--sub-path", "a") as m:
        vol.remove_file("a", recursive=True)
        proc = m.reload(check=False)
        assert proc.returncode == 5 and "reload refused: sub-path 'a' does not exist" in proc.stderr
        # The mount keeps serving (and committing into) what it had.
        (m.path / "late.txt").write_text("late")
        assert sorted(os.listdir(m.path)) == ["b", "keep.txt", "late.txt"]
