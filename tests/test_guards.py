"""Guards on lossy actions: nothing is deleted, hidden or overwritten without a word."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from mounting import mounted, run_volfs, volfs_mountpoints

from volfs import Volume, control
from volfs.api.upload import VolumeUploadContextManager
from volfs.cli import main
from volfs.snapshots import commit as commit_module
from volfs.store import Store

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
    # The same through the background launcher (which starts the daemon with the flag).
    run_volfs(store, "mount", "v", str(target), "--nonempty")
    try:
        assert list(target.iterdir()) == []
    finally:
        run_volfs(store, "unmount", str(target))
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


def test_ctrl_c_during_put_says_nothing_was_committed_and_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "v")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_text("x")
    calls = []
    real_store_file = VolumeUploadContextManager._store_file

    def store_then_ctrl_c(self: VolumeUploadContextManager, *args: object, **kw: object) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what SIGINT raises in the main thread
        real_store_file(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(VolumeUploadContextManager, "_store_file", store_then_ctrl_c)
    monkeypatch.setattr(commit_module, "landed", [])
    monkeypatch.setattr(control, "requests_sent", 0)  # earlier tests ran commands here
    with pytest.raises(SystemExit) as exited:
        main(["--store", str(store), "volume", "put", "v", str(src), "/up"])
    assert exited.value.code == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["interrupted: nothing was committed"]
    assert [e.path for e in Volume.from_name("v", store=store).listdir("/")] == []


def test_json_errors_are_a_json_object_on_stdout(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = run_volfs(store, "volume", "info", "missing", "--json", check=False)
    assert proc.returncode == 3
    assert json.loads(proc.stdout) == {
        "error": "volume 'missing' not found in environment 'main'",
        "exit_code": 3,
    }
    assert one_error_line(proc) == "Error: volume 'missing' not found in environment 'main'"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv(1)")
def test_a_mount_without_cap_sys_admin_names_the_cause_and_leaves_nothing(tmp_path: Path) -> None:
    """As in a container started without --cap-add SYS_ADMIN: libfuse says only
    "fuse_session_mount failed"; the one line must say why and what to do."""
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "v")
    drop = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"]
    proc = subprocess.run(
        [*drop, sys.executable, "-m", "volfs", "mount", "v", str(tmp_path / "m")],
        env={**os.environ, "VOLFS_STORE": str(store)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 10
    line = one_error_line(proc)
    assert "CAP_SYS_ADMIN" in line and "--cap-add SYS_ADMIN" in line
    assert list((store / "overlays").iterdir()) == []  # nothing for recover to find
    assert Store.open(store).catalog.list_mounts() == []


def test_cli_messages_name_options_not_python_arguments(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_volfs(store, "volume", "create", "v")
    local = tmp_path / "f"
    local.write_text("x")
    run_volfs(store, "volume", "put", "v", str(local), "/d/f")
    rm = run_volfs(store, "volume", "rm", "v", "d", check=False)
    assert rm.returncode == 2
    assert one_error_line(rm) == "Error: /d is a directory: remove it with -r"
    cp = run_volfs(store, "volume", "cp", "v", "d", "e", check=False)
    assert one_error_line(cp) == "Error: /d is a directory: copy it with -r"
    put = run_volfs(store, "volume", "put", "v", str(local), "/d/f", check=False)
    assert put.returncode == 4
    line = one_error_line(put)
    assert line.endswith("pass --force to overwrite") and "force=True" not in line
    # The API keeps its own words.
    with pytest.raises(IsADirectoryError, match=r"recursive=True"):
        Volume.from_name("v", store=store).remove_file("d")


def test_a_non_root_mount_failure_names_the_fuse_helper_or_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What a non-root user is told (the suite runs as root, so the checks are fed the
    non-root facts): no setuid fusermount3, or a /dev/fuse they cannot open."""
    from volfs.mount import diagnose

    helper = tmp_path / "fusermount3"
    helper.write_text("")
    helper.chmod(0o755)  # not setuid
    monkeypatch.setattr(diagnose.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(diagnose.shutil, "which", lambda name: str(helper))
    assert diagnose.why_fuse_cannot_mount() == (
        f"{helper} is not setuid root (chmod u+s {helper}), or mount as root"
    )
    monkeypatch.setattr(diagnose.shutil, "which", lambda name: None)
    assert "fusermount3 is not installed" in (diagnose.why_fuse_cannot_mount() or "")


def test_setup_prints_nothing_when_all_is_installed() -> None:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [str(root / "scripts" / "setup")], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout + proc.stderr == ""
