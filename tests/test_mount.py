"""Commit, reload, merge, read-only, recovery and control-socket checks on real mounts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from mounting import mounted, run_volfs, volfs_mountpoints

from volfs import Volume

pytestmark = pytest.mark.mount


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def create(store: Path, name: str = "vol") -> str:
    run_volfs(store, "volume", "create", name)
    return name


def log_json(store: Path, name: str) -> list[dict]:
    return json.loads(run_volfs(store, "volume", "log", name, "--json").stdout)


def test_commit_then_reload_shows_each_others_files(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a, mounted(store, "vol", tmp_path / "b") as b:
        (a.path / "f1").write_text("from a")
        (b.path / "dir").mkdir()
        (b.path / "dir" / "f2").write_text("from b")
        a.commit()
        b.commit()
        b.reload()
        assert (b.path / "f1").read_text() == "from a"
        assert (b.path / "dir" / "f2").read_text() == "from b"
        # A sees nothing new until it reloads.
        assert sorted(os.listdir(a.path)) == ["f1"]
        a.reload()
        assert sorted(os.listdir(a.path)) == ["dir", "f1"]
        assert (a.path / "dir" / "f2").read_text() == "from b"


def test_uncommitted_writes_stay_private(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a, mounted(store, "vol", tmp_path / "b") as b:
        (a.path / "draft").write_text("not yet")
        b.reload()
        assert not (b.path / "draft").exists()


@pytest.mark.timeout(90)
def test_commits_while_a_writer_is_writing_flush_its_cached_writes_and_complete(
    store: Path, tmp_path: Path
) -> None:
    """A commit's syncfs makes the kernel send cached pages as WRITE requests, which the
    daemon's own loop serves: the syncfs must not hold the GIL meanwhile (pyfuse3.syncfs
    does; seen as a daemon hung by an autocommit during a writer's close)."""
    create(store)
    chunk = os.urandom(1 << 20)
    stop = threading.Event()
    written: list[int] = []

    def writer(path: Path) -> None:
        for i in range(400):
            if stop.is_set():
                break
            with open(path / f"f{i % 20}", "wb") as f:
                f.write(chunk)
            written.append(i)

    with mounted(store, "vol", tmp_path / "a") as a:
        thread = threading.Thread(target=writer, args=(a.path,), daemon=True)
        thread.start()
        try:
            for _ in range(5):
                run_volfs(store, "commit", str(a.path), timeout=30)
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not thread.is_alive() and written
        a.commit()
        got = run_volfs(store, "volume", "get", "vol", "/f0", str(tmp_path / "got"))
        assert got.returncode == 0 and (tmp_path / "got").read_bytes() == chunk


def test_commit_with_nothing_to_do_makes_no_snapshot(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        (a.path / "f").write_text("x")
        a.commit()
        before = len(log_json(store, "vol"))
        assert "nothing to commit" in a.commit()
        assert len(log_json(store, "vol")) == before


def test_same_file_last_commit_wins_and_overwrite_is_recorded(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a, mounted(store, "vol", tmp_path / "b") as b:
        (a.path / "same").write_text("A's version")
        (b.path / "same").write_text("B's version, longer")
        a.commit()
        b.commit()
        head = log_json(store, "vol")[0]
        assert head["overwrites"] == [{"path": "same", "previous": log_json(store, "vol")[1]["id"]}]
        a.reload()
        assert (a.path / "same").read_text() == "B's version, longer"


def test_delete_wins_over_an_unseen_modification(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        (a.path / "doomed").write_text("v1")
        a.commit()
    with mounted(store, "vol", tmp_path / "a") as a, mounted(store, "vol", tmp_path / "b") as b:
        (b.path / "doomed").write_text("v2 by b")
        b.commit()
        (a.path / "doomed").unlink()
        a.commit()
        b.reload()
        assert not (b.path / "doomed").exists()
        assert log_json(store, "vol")[0]["overwrites"][0]["path"] == "doomed"


def test_removed_directory_keeps_files_others_added(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        (a.path / "d").mkdir()
        (a.path / "d" / "old").write_text("seen by both")
        a.commit()
    with mounted(store, "vol", tmp_path / "a") as a, mounted(store, "vol", tmp_path / "b") as b:
        (b.path / "d" / "new").write_text("added by b")
        b.commit()
        shutil.rmtree(a.path / "d")
        a.commit()
        a.reload()
        assert os.listdir(a.path / "d") == ["new"]
        assert (a.path / "d" / "new").read_text() == "added by b"


def test_reload_refuses_while_a_file_is_open(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        (a.path / "sub").mkdir()
        (a.path / "sub" / "open.txt").write_text("x")
        a.commit()
        other = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys,time; f=open(sys.argv[1]); print('ok', flush=True); time.sleep(60)",
                str(a.path / "sub" / "open.txt"),
            ],
            stdout=subprocess.PIPE,
        )
        try:
            assert other.stdout is not None and other.stdout.readline() == b"ok\n"
            proc = a.reload(check=False)
            assert proc.returncode != 0
            assert (
                "there are open files preventing the operation: path sub/open.txt is open"
                in proc.stderr
            )
            assert "from '" in proc.stderr  # another process: its command line is named
            assert len(proc.stderr.strip().splitlines()) == 1
        finally:
            other.kill()
            other.communicate()
        deadline = time.monotonic() + 10
        while a.reload(check=False).returncode != 0:
            assert time.monotonic() < deadline, "reload kept failing after the file was closed"
            time.sleep(0.05)


def test_reload_refuses_while_a_shell_has_its_cwd_inside(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        (a.path / "d").mkdir()
        shell = subprocess.Popen(
            ["sh", "-c", "echo in; sleep 60"], cwd=a.path / "d", stdout=subprocess.PIPE
        )
        try:
            assert shell.stdout is not None and shell.stdout.readline() == b"in\n"
            proc = a.reload(check=False)
            assert proc.returncode != 0
            assert "there are open files preventing the operation" in proc.stderr
            assert "is inside volume" in proc.stderr
        finally:
            shell.kill()
            shell.communicate()
        a.reload()


def test_python_api_reload_raises_runtime_error_naming_the_open_file(
    store: Path, tmp_path: Path
) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        (a.path / "f.txt").write_text("x")
        env = {**os.environ, "VOLFS_STORE": str(store)}
        code = (
            "import sys, volfs\n"
            "f = open(sys.argv[1] + '/f.txt')\n"
            "try:\n"
            "    volfs.reload(sys.argv[1])\n"
            "except RuntimeError as e:\n"
            "    print(e)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(a.path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert (
            out.stdout.strip()
            == "there are open files preventing the operation: path f.txt is open"
        ), out.stderr


def test_read_only_mount_refuses_every_write(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "w") as w:
        (w.path / "f").write_text("x")
        (w.path / "d").mkdir()
        w.commit()
    with mounted(store, "vol", tmp_path / "ro", "--read-only") as ro:
        p = ro.path
        attempts = {
            "write": lambda: open(p / "f", "w"),
            "create": lambda: open(p / "new", "w"),
            "mkdir": lambda: os.mkdir(p / "d2"),
            "unlink": lambda: os.unlink(p / "f"),
            "rename": lambda: os.rename(p / "f", p / "g"),
            "chmod": lambda: os.chmod(p / "f", 0o600),
            "setxattr": lambda: os.setxattr(p / "f", "user.k", b"v"),
            "rmdir": lambda: os.rmdir(p / "d"),
            "symlink": lambda: os.symlink("f", p / "s"),
            "truncate": lambda: os.truncate(p / "f", 0),
        }
        for what, attempt in attempts.items():
            with pytest.raises(OSError) as info:
                attempt()
            assert info.value.errno == 30, f"{what}: {info.value}"  # EROFS
        assert (p / "f").read_text() == "x"
        ro.reload()


def test_kill_9_then_recover_commits_the_write(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        (a.path / "kept").write_text("committed")
        a.commit()
        committed_snapshot = log_json(store, "vol")[0]["id"]
        (a.path / "kept").write_text("rewritten after commit")
        (a.path / "lost-if-not-recovered").write_text("uncommitted")
        os.rename(a.path / "kept", a.path / "renamed")
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(timeout=10)
    assert str(tmp_path / "a") not in volfs_mountpoints()
    out = run_volfs(store, "recover")
    assert "committed" in out.stdout
    with mounted(store, "vol", tmp_path / "b") as b:
        assert sorted(os.listdir(b.path)) == ["lost-if-not-recovered", "renamed"]
        assert (b.path / "lost-if-not-recovered").read_text() == "uncommitted"
        assert (b.path / "renamed").read_text() == "rewritten after commit"
    # The past snapshot still shows exactly what it held.
    with mounted(store, "vol", tmp_path / "past", "--snapshot", committed_snapshot) as past:
        assert os.listdir(past.path) == ["kept"]
        assert (past.path / "kept").read_text() == "committed"
        with pytest.raises(OSError):
            (past.path / "kept").write_text("no")
    assert "no orphaned overlays" in run_volfs(store, "recover").stdout


def test_recover_detaches_a_stale_mount(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a", stop=False) as a:
        (a.path / "f").write_text("x")
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(timeout=10)
    try:
        out = run_volfs(store, "recover")
        assert "stale FUSE mount detached" in out.stdout
        assert str(tmp_path / "a") not in volfs_mountpoints()
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(tmp_path / "a")], capture_output=True)


def test_reload_shows_new_sizes_and_contents_of_files_already_read(
    store: Path, tmp_path: Path
) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        (a.path / "f").write_text("short")
        (a.path / "d").mkdir()
        a.commit()
        with mounted(store, "vol", tmp_path / "b") as b:
            # B reads everything, so the kernel caches attributes, entries and pages.
            assert (b.path / "f").read_text() == "short"
            assert os.stat(b.path / "f").st_size == 5
            assert os.listdir(b.path / "d") == []
            (a.path / "f").write_text("a much longer content")
            (a.path / "d" / "x").write_text("new")
            a.commit()
            b.reload()
            assert os.stat(b.path / "f").st_size == len("a much longer content")
            assert (b.path / "f").read_text() == "a much longer content"
            assert os.listdir(b.path / "d") == ["x"]
            assert (
                subprocess.run(["cat", str(b.path / "d" / "x")], capture_output=True).stdout
                == b"new"
            )


def test_mount_of_a_missing_volume_fails_cleanly(store: Path, tmp_path: Path) -> None:
    create(store, "exists")
    proc = run_volfs(store, "mount", "missing", str(tmp_path / "m"), check=False)
    assert proc.returncode != 0
    assert proc.stderr.startswith("Error:") and "missing" in proc.stderr
    assert str(tmp_path / "m") not in volfs_mountpoints()


def test_a_failing_mount_is_cleaned_up(store: Path, tmp_path: Path) -> None:
    """The fixture's cleanup path runs: the daemon dies at start and nothing is left."""
    create(store)
    with pytest.raises(AssertionError, match="daemon exited"):
        with mounted(store, "vol", tmp_path / "m", "--snapshot", "sn-doesnotexist"):
            pass
    assert str(tmp_path / "m") not in volfs_mountpoints()


def test_background_mount_unmount_commits(store: Path, tmp_path: Path) -> None:
    create(store)
    path = tmp_path / "bg"
    run_volfs(store, "mount", "vol", str(path), "--autocommit", "0")
    try:
        (path / "f").write_text("by background daemon")
        run_volfs(store, "unmount", str(path))
        assert str(path) not in volfs_mountpoints()
        assert run_volfs(store, "volume", "get", "vol", "f", "-").stdout == "by background daemon"
    finally:
        if str(path) in volfs_mountpoints():
            subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def test_sigterm_commits_and_unmounts(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        (a.path / "f").write_text("saved on SIGTERM")
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(timeout=30) == 0
    assert run_volfs(store, "volume", "get", "vol", "f", "-").stdout == "saved on SIGTERM"


def test_autocommit_publishes_in_the_background(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a", autocommit="0.2") as a:
        (a.path / "f").write_text("auto")
        deadline = time.monotonic() + 20
        while run_volfs(store, "volume", "get", "vol", "f", "-", check=False).stdout != "auto":
            assert time.monotonic() < deadline, "autocommit never published the file"
            time.sleep(0.1)


def _wait_published(store: Path, path: str, content: str) -> None:
    deadline = time.monotonic() + 30
    while run_volfs(store, "volume", "get", "vol", path, "-", check=False).stdout != content:
        assert time.monotonic() < deadline, f"autocommit never published {path}"
        time.sleep(0.1)


def test_background_commits_leave_out_files_open_for_writing(store: Path, tmp_path: Path) -> None:
    """A checkpoint being written is not published half-way (Modal: files open for writing
    are left out of background commits); the explicit commit after its close takes it whole."""
    create(store)
    with mounted(store, "vol", tmp_path / "a", autocommit="0.2") as a:
        (a.path / "old.ckpt").write_bytes(b"v1" * 1000)
        _wait_published(store, "old.ckpt", "v1" * 1000)
        with open(a.path / "new.ckpt", "wb") as new, open(a.path / "old.ckpt", "r+b") as old:
            new.write(b"half" * 100_000)
            old.write(b"V2")  # the start of a rewrite
            new.flush(), old.flush()
            (a.path / "marker").write_text("after the writes began")
            _wait_published(store, "marker", "after the writes began")
            names = {e.path for e in Volume.from_name("vol", store=store).listdir("/")}
            assert "new.ckpt" not in names  # never committed: left out
            got = run_volfs(store, "volume", "get", "vol", "old.ckpt", "-").stdout
            assert got == "v1" * 1000  # as last committed, not half rewritten
            new.write(b"rest" * 100_000)
        run_volfs(store, "commit", str(a.path))
    vol = Volume.from_name("vol", store=store)
    assert b"".join(vol.read_file("new.ckpt")) == b"half" * 100_000 + b"rest" * 100_000
    assert b"".join(vol.read_file("old.ckpt")) == b"V2" + b"v1" * 999


def test_an_explicit_commit_includes_files_still_open(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a, open(a.path / "f", "wb") as f:
        f.write(b"written, not closed")
        f.flush()
        run_volfs(store, "commit", str(a.path))
        assert run_volfs(store, "volume", "get", "vol", "f", "-").stdout == "written, not closed"


@pytest.mark.timeout(90)
def test_status_answers_for_the_other_mounts_when_one_daemon_hangs(
    store: Path, tmp_path: Path
) -> None:
    create(store)
    with (
        mounted(store, "vol", tmp_path / "hung") as hung,
        mounted(store, "vol", tmp_path / "ok") as ok,
    ):
        (hung.path / "f").write_text("x")  # the kernel now holds no valid attributes of its root
        os.kill(hung.proc.pid, signal.SIGSTOP)
        try:
            out = run_volfs(store, "status", "--json", timeout=40)
            rows = {r["path"]: r for r in json.loads(out.stdout)}
            assert (
                "error" in rows[str(hung.path)]
                and "does not answer" in rows[str(hung.path)]["error"]
            )
            assert rows[str(ok.path)]["volume"] == "vol"
        finally:
            os.kill(hung.proc.pid, signal.SIGCONT)


@pytest.mark.skipif(os.getuid() != 0, reason="only root may tune a mount's backing-device info")
def test_the_mount_streams_reads_ahead_and_may_buffer_its_share_of_dirty_pages(
    store: Path, tmp_path: Path
) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        device = f"{os.major(os.stat(a.path).st_dev)}:{os.minor(os.stat(a.path).st_dev)}"
        bdi = Path("/sys/class/bdi") / device
        deadline = time.monotonic() + 20  # set by the daemon right after FUSE INIT
        while (bdi / "max_ratio").read_text().strip() != "100":
            assert time.monotonic() < deadline, "max_ratio never raised"
            time.sleep(0.05)
        assert (bdi / "read_ahead_kb").read_text().strip() == "1024"


def test_commit_if_unchanged_refuses_on_conflict(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a, mounted(store, "vol", tmp_path / "b") as b:
        (a.path / "f").write_text("a")
        (b.path / "f").write_text("b")
        b.commit()
        before = log_json(store, "vol")[0]["id"]
        proc = a.volfs("commit", str(a.path), "--if-unchanged", check=False)
        assert proc.returncode != 0 and "f" in proc.stderr
        assert log_json(store, "vol")[0]["id"] == before


def test_status_lists_mounts_dirty_paths_and_open_files(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        (a.path / "dirty").write_text("x")
        with open(a.path / "dirty") as _:
            rows = json.loads(a.volfs("status", "--json").stdout)
        row = next(r for r in rows if r["path"] == str(a.path))
        assert row["volume"] == "vol" and row["pid"] == a.proc.pid and not row["read_only"]
        assert row["dirty_paths"] == ["dirty"]
        assert row["open_files"] == ["dirty"]


def test_control_socket_refuses_an_unprivileged_stranger(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        info = json.loads(os.getxattr(a.path, "user.volfs.control"))
        assert os.stat(info["socket"]).st_mode & 0o777 == 0o600
        # Even with the file permissions opened, the daemon checks SO_PEERCRED.
        os.chmod(info["socket"], 0o666)
        os.chmod(Path(info["socket"]).parent, 0o755)
        os.chmod(store, 0o755)
        code = (
            "import os, sys\n"
            "from volfs import control, errors\n"  # imported first: /root is private to root
            "os.setgid(65534); os.setuid(65534)\n"
            "try:\n"
            "    control.call(sys.argv[1], 'commit')\n"
            "except errors.PermissionDeniedError as e:\n"
            "    print('refused:', e)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, info["socket"]], capture_output=True, text=True, timeout=30
        )
        assert out.stdout.startswith("refused: permission denied"), out.stdout + out.stderr


def test_malformed_control_messages_get_an_error_and_the_daemon_lives(
    store: Path, tmp_path: Path
) -> None:
    import socket as socketlib

    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        sock_path = json.loads(os.getxattr(a.path, "user.volfs.control"))["socket"]
        for payload in [
            b"not json\n",
            b"[1,2]\n",
            b'{"op": "explode"}\n',
            b'{"v": 99, "op": "ping"}\n',
            b"x" * 70000,
        ]:
            with socketlib.socket(socketlib.AF_UNIX) as s:
                s.settimeout(20)
                s.connect(sock_path)
                s.sendall(payload)
                reply = json.loads(s.makefile("rb").readline())
            assert reply["ok"] is False and reply["error"], payload[:20]
        assert a.proc.poll() is None
        (a.path / "still").write_text("works")
        a.commit()


def test_git_repository_survives_commit_and_reload(store: Path, tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    create(store)
    git_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "HOME": str(tmp_path),
    }
    with mounted(store, "vol", tmp_path / "a") as a, mounted(store, "vol", tmp_path / "b") as b:
        repo = a.path / "repo"
        subprocess.run(["git", "init", "-q", str(repo)], check=True, env=git_env)
        for i in range(5):
            (repo / f"file{i}.txt").write_text(f"content {i}\n" * (i + 1))
            subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=git_env)
            subprocess.run(
                ["git", "-C", str(repo), "commit", "-q", "-m", f"c{i}"], check=True, env=git_env
            )
        a.commit()
        b.reload()
        fsck = subprocess.run(
            ["git", "-C", str(b.path / "repo"), "fsck", "--strict"],
            capture_output=True,
            text=True,
            env=git_env,
        )
        assert fsck.returncode == 0, fsck.stderr
        log = subprocess.run(
            ["git", "-C", str(b.path / "repo"), "log", "--oneline"],
            capture_output=True,
            text=True,
            env=git_env,
            check=True,
        )
        assert len(log.stdout.splitlines()) == 5


def test_sqlite_database_survives_commit_and_reload(store: Path, tmp_path: Path) -> None:
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a, mounted(store, "vol", tmp_path / "b") as b:
        db = sqlite3.connect(a.path / "data.db")
        db.execute("create table t (id integer primary key, v text)")
        for i in range(200):
            with db:
                db.execute("insert into t (v) values (?)", (f"row {i}" * 20,))
        with db:
            db.execute("delete from t where id % 3 = 0")
        db.close()
        a.commit()
        b.reload()
        other = sqlite3.connect(b.path / "data.db")
        try:
            assert other.execute("pragma integrity_check").fetchone() == ("ok",)
            assert other.execute("select count(*) from t").fetchone() == (134,)
        finally:
            other.close()


def test_tar_of_the_mount_equals_tar_of_the_source(store: Path, tmp_path: Path) -> None:
    source = Path(os.path.dirname(json.__file__))  # a real tree: the stdlib's json package
    create(store)
    with mounted(store, "vol", tmp_path / "a") as a, mounted(store, "vol", tmp_path / "b") as b:
        subprocess.run(
            ["tar", "-C", str(source.parent), "-cf", str(tmp_path / "src.tar"), source.name],
            check=True,
        )
        subprocess.run(["tar", "-C", str(a.path), "-xf", str(tmp_path / "src.tar")], check=True)
        a.commit()
        b.reload()
        subprocess.run(
            ["tar", "-C", str(b.path), "-cf", str(tmp_path / "vol.tar"), source.name], check=True
        )

    def members(path: Path) -> list[tuple]:
        with tarfile.open(path) as tar:
            out = []
            for m in tar.getmembers():
                data = tar.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
                out.append((m.name, m.mode, m.size, int(m.mtime), m.type, m.linkname, data))
            return sorted(out)  # readdir order is the filesystem's own

    assert members(tmp_path / "vol.tar") == members(tmp_path / "src.tar")


def test_open_handles_are_recorded_in_the_catalog(store: Path, tmp_path: Path) -> None:
    from volfs.store import Store

    create(store)
    with mounted(store, "vol", tmp_path / "a") as a:
        (a.path / "held.txt").write_text("x")
        mount_id = json.loads(os.getxattr(a.path, "user.volfs.control"))["mount_id"]
        catalog = Store.open(store).catalog

        def rows() -> list[str]:
            return sorted(h["path"] for h in catalog.handles(mount_id))

        def wait_for(expected: list[str]) -> None:
            deadline = time.monotonic() + 10
            while rows() != expected:
                assert time.monotonic() < deadline, (
                    f"handle table shows {rows()}, expected {expected}"
                )
                time.sleep(0.05)

        with open(a.path / "held.txt") as f:
            wait_for(["held.txt"])
            assert f.read() == "x"
        wait_for([])
