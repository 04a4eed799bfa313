"""Guards on lossy actions: nothing is deleted, hidden or overwritten without a word."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from mounting import mounted, run_volfs, volfs_mountpoints

from volfs import Volume

pytestmark = pytest.mark.mount


def one_error_line(proc: object) -> str:
    stderr = proc.stderr  # type: ignore[attr-defined]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_delete_refuses_a_mounted_volume_and_force_lets_the_mount_go(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "v")
    with mounted(store, "v", tmp_path / "m") as m:
        (m.path / "f").write_text("not committed")
        refused = run_volfs(store, "volume", "delete", "v", "--yes", check=False)
        assert refused.returncode == 5
        line = one_error_line(refused)
        assert str(m.path) in line and "--force" in line
        assert "v" in run_volfs(store, "volume", "list").stdout  # still there
        run_volfs(store, "volume", "delete", "v", "--yes", "--force")
        out = run_volfs(store, "unmount", str(m.path))
        assert "its volume was deleted" in out.stdout + out.stderr
        assert str(m.path) not in volfs_mountpoints()
        assert m.proc.wait(timeout=30) == 0


def test_mount_refuses_a_directory_that_has_files(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "v")
    target = tmp_path / "busy"
    target.mkdir()
    (target / "precious").write_text("would be hidden")
    refused = run_volfs(store, "mount", "v", str(target), check=False)
    assert refused.returncode == 2
    line = one_error_line(refused)
    assert "is not empty" in line and "--nonempty" in line
    assert str(target) not in volfs_mountpoints()
    with mounted(store, "v", target, "--nonempty") as m:
        assert list(m.path.iterdir()) == []  # hidden while mounted, as asked
    assert (target / "precious").read_text() == "would be hidden"


def log(store: Path, name: str) -> list[dict]:
    return json.loads(run_volfs(store, "volume", "log", name, "--json").stdout)


def test_restore_brings_a_deleted_file_back_with_its_content_and_mode(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "v")
    with mounted(store, "v", tmp_path / "m") as m:
        (m.path / "d").mkdir()
        (m.path / "d" / "run.sh").write_text("#!/bin/sh\necho hi\n")
        (m.path / "d" / "run.sh").chmod(0o751)
        kept = run_volfs(store, "commit", str(m.path)).stdout.split()[-1]
        shutil.rmtree(m.path / "d")
        run_volfs(store, "commit", str(m.path))
    assert run_volfs(store, "volume", "ls", "v", "d", check=False).returncode == 3
    # What was there is still listed and readable through the snapshot.
    listed = run_volfs(store, "volume", "ls", "v", "d", "--snapshot", kept).stdout
    assert "run.sh" in listed
    old = run_volfs(store, "volume", "get", "v", "d/run.sh", "-", "--snapshot", kept).stdout
    assert old == "#!/bin/sh\necho hi\n"
    out = run_volfs(store, "volume", "restore", "v", "d/run.sh", "--snapshot", kept)
    assert out.stdout.startswith("restored d/run.sh from " + kept + ": committed sn-")
    vol = Volume.from_name("v", store=store)
    assert b"".join(vol.read_file("d/run.sh")) == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(vol.stat("d/run.sh").mode) == 0o751
    origins = [e["origin"] for e in log(store, "v")]
    assert origins[0].startswith("restore d/run.sh " + kept)
    assert any("mount" in o for o in origins[1:3])  # the delete's commit, then the restore's
    again = run_volfs(store, "volume", "restore", "v", "d/run.sh", "--snapshot", kept)
    assert "nothing to commit" in again.stdout


def test_restore_of_a_path_the_snapshot_lacks_is_one_error_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "v")
    head = log(store, "v")[0]["id"]
    proc = run_volfs(store, "volume", "restore", "v", "nope", "--snapshot", head, check=False)
    assert proc.returncode == 3
    assert f"nope is not in snapshot {head}" in one_error_line(proc)


def test_commit_names_each_overwrite_and_where_the_other_version_is(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "v")
    with mounted(store, "v", tmp_path / "a") as a, mounted(store, "v", tmp_path / "b") as b:
        (b.path / "f").write_text("b's newer version")
        run_volfs(store, "commit", str(b.path))
        (a.path / "f").write_text("a's version")
        out = run_volfs(store, "commit", str(a.path))
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"{a.path}: committed sn-")
    assert len(lines) == 2 and "overwrote f," in lines[1], out.stdout
    command = lines[1].split("their version: ")[1].split()
    assert command[:3] == ["volfs", "volume", "get"]
    theirs = run_volfs(store, *command[1:])
    assert theirs.stdout == "b's newer version"
