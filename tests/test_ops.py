"""The operational surface on real mounts: ``Volume.mount``, ``vol.commit()``/``vol.reload()``,
``volfs.commit(path)``/``volfs.reload(path)``, ``scripts/entrypoint`` and the systemd unit.

Every test runs under ``no_leftovers``: whatever it mounted under its ``tmp_path`` is detached
(``fusermount3 -u -z``) and every daemon serving its store is ended by pid, even when the test
failed — and a test that left either behind fails, because the code under test must not.
"""

from __future__ import annotations

import configparser
import errno
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mounting import run_volfs, volfs_mountpoints

import volfs
from volfs import MountError, NotFoundError, Volume, control

pytestmark = [pytest.mark.mount, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "scripts" / "entrypoint"
UNIT = ROOT / "systemd" / "volfs@.service"
DEADLINE = 30.0


# -- cleanup -------------------------------------------------------------------------------------
def _daemons_of(marker: str) -> list[int]:
    """Pids of volfs processes whose command line names ``marker`` (this test's tmp_path)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "volfs" in cmdline and marker in cmdline:
            pids.append(int(entry))
    return pids


def _runs(pid: int) -> bool:
    """True while ``pid`` runs; a zombie does not (it waits for its parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # our child (a daemon of Volume.mount): reap it
    except ChildProcessError:
        pass
    return not _runs(pid)


def _end(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _gone(pid):
            return


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    marker = str(tmp_path)
    mounts = [p for p in volfs_mountpoints() if p == marker or p.startswith(marker + "/")]
    for path in mounts:
        subprocess.run(
            ["fusermount3", "-u", "-z", path], check=False, capture_output=True, timeout=30
        )
    daemons = [pid for pid in _daemons_of(marker) if not _gone(pid)]
    for pid in daemons:
        _end(pid)
    assert not mounts and not daemons, f"left behind: mounts {mounts}, daemons {daemons}"


# -- helpers -------------------------------------------------------------------------------------
@pytest.fixture
def vol(store_path: Path) -> Volume:
    Volume.objects.create("vol", store=store_path)
    return Volume.from_name("vol", store=store_path)


def read(vol: Volume, path: str) -> bytes:
    return b"".join(vol.read_file(path))


def assert_unmounted(path: Path, pid: int | None = None) -> None:
    assert str(path) not in volfs_mountpoints()
    if pid is not None:
        assert not os.path.exists(f"/proc/{pid}"), f"daemon {pid} still exists"


def entrypoint(
    store: Path, *args: str, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.Popen[str]:
    full_env = {
        **os.environ,
        "VOLFS_STORE": str(store),
        # scripts/entrypoint finds python3 and volfs on PATH, as in a container.
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        **(env or {}),
    }
    return subprocess.Popen(
        [str(ENTRYPOINT), *args],
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )  # type: ignore[call-overload]


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- Volume.mount --------------------------------------------------------------------------------
def test_mount_commits_writes_on_exit(vol: Volume, tmp_path: Path) -> None:
    with vol.mount(tmp_path / "m", autocommit=0) as path:
        assert path == tmp_path / "m"
        pid = control.mount_info(str(path)).pid
        (path / "dir").mkdir()
        (path / "dir" / "f").write_text("written in the block")
        assert vol.listdir("/") == []  # nothing committed yet: autocommit is off
    assert read(vol, "dir/f") == b"written in the block"
    assert_unmounted(path, pid)


def test_mount_works_in_a_process_holding_more_than_1024_fds(vol: Volume, tmp_path: Path) -> None:
    """Waiting for the daemon's readiness must not use select(2), which cannot watch an
    fd numbered 1,024 or more (found when a test process had leaked that many)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = []
    try:
        while len(held) < 1100:
            held.append(os.open("/dev/null", os.O_RDONLY))
        with vol.mount(tmp_path / "m", autocommit=0) as path:
            (path / "f").write_text("many fds")
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert read(vol, "f") == b"many fds"


def test_mount_commits_even_when_the_block_raises(vol: Volume, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="boom"), vol.mount(tmp_path / "m", autocommit=0) as path:
        (path / "f").write_text("kept")
        raise ValueError("boom")
    assert read(vol, "f") == b"kept"
    assert_unmounted(path)


def test_mount_read_only_gives_erofs(vol: Volume, tmp_path: Path) -> None:
    with vol.batch_upload() as batch:
        batch.put_file(__file__, "existing")
    pinned = vol.snapshot()  # the head as it is now; the commit below does not move it
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"later"), "later")
    for handle, flag in ((vol, True), (vol.read_only(), False), (pinned, False)):
        with handle.mount(tmp_path / "ro", read_only=flag) as path:
            assert (path / "existing").read_bytes() == Path(__file__).read_bytes()
            assert (path / "later").exists() == (handle is not pinned)
            for attempt in (
                lambda: (path / "new").write_text("x"),
                lambda: (path / "d").mkdir(),
                lambda: (path / "existing").unlink(),
            ):
                with pytest.raises(OSError) as info:
                    attempt()
                assert info.value.errno == errno.EROFS
        assert_unmounted(path)
    assert sorted(e.path for e in vol.listdir("/")) == ["existing", "later"]


def test_mount_of_a_missing_volume_raises_and_mounts_nothing(
    store_path: Path, tmp_path: Path
) -> None:
    missing = Volume.from_name("missing", store=store_path)
    with pytest.raises(NotFoundError), missing.mount(tmp_path / "m"):
        pass
    assert_unmounted(tmp_path / "m")


def test_mount_whose_daemon_died_detaches_and_points_to_recover(
    vol: Volume, store_path: Path, tmp_path: Path
) -> None:
    with (
        pytest.raises(MountError, match="volfs recover"),
        vol.mount(tmp_path / "m", autocommit=0) as path,
    ):
        (path / "f").write_text("not committed yet")
        pid = control.mount_info(str(path)).pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _runs(pid), "the daemon to die")
    assert_unmounted(path)
    run_volfs(store_path, "recover")
    assert read(vol, "f") == b"not committed yet"  # the error's advice holds


# -- commit and reload through the Python API ----------------------------------------------------
def test_volume_commit_and_reload_act_on_its_mounts(
    vol: Volume, store_path: Path, tmp_path: Path
) -> None:
    Volume.objects.create("other", store=store_path)
    other = Volume.from_name("other", store=store_path)
    with (
        vol.mount(tmp_path / "a", autocommit=0) as a,
        vol.mount(tmp_path / "b", autocommit=0) as b,
        other.mount(tmp_path / "c", autocommit=0) as c,
    ):
        (a / "f").write_text("from a")
        (c / "g").write_text("other volume")
        vol.commit()
        assert read(vol, "f") == b"from a"
        assert not (b / "f").exists()  # committed, but B has not reloaded
        assert other.listdir("/") == []  # vol.commit() leaves other volumes' mounts alone
        (b / "h").write_text("from b")
        vol.reload()  # B commits h first, then both switch to the head
        assert (b / "f").read_text() == "from a"
        assert (a / "h").read_text() == "from b"
        assert [e.path for e in other.listdir("/")] == []
    assert [e.path for e in other.listdir("/")] == ["g"]  # committed on its own unmount


def test_module_commit_and_reload_act_on_one_mount(vol: Volume, tmp_path: Path) -> None:
    with vol.mount(tmp_path / "a", autocommit=0) as a, vol.mount(tmp_path / "b", autocommit=0) as b:
        (a / "f").write_text("v1")
        volfs.commit(a)
        volfs.reload(b)
        assert (b / "f").read_text() == "v1"
        (b / "f").write_text("v2 from b")
        volfs.commit(str(b))
        assert (a / "f").read_text() == "v1"  # A has not reloaded
        volfs.reload(str(a))
        assert (a / "f").read_text() == "v2 from b"


def test_module_reload_refuses_while_a_file_is_open(vol: Volume, tmp_path: Path) -> None:
    with vol.mount(tmp_path / "m", autocommit=0) as path:
        (path / "f").write_text("x")
        with open(path / "f") as f:
            with pytest.raises(
                RuntimeError,
                match="there are open files preventing the operation: path /?f is open",
            ):
                volfs.reload(path)
            f.read()
        volfs.reload(path)


# -- scripts/entrypoint --------------------------------------------------------------------------
def test_entrypoint_passes_the_exit_code_and_commits(
    vol: Volume, store_path: Path, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    proc = entrypoint(
        store_path,
        "--volume",
        f"vol:{mnt}",
        "--",
        "sh",
        "-c",
        'echo hi > "$MNT/f"; exit 7',
        env={"MNT": str(mnt)},
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    assert "Traceback" not in err
    assert read(vol, "f") == b"hi\n"
    assert_unmounted(mnt)


def test_entrypoint_mount_failure_unmounts_the_others(
    vol: Volume, store_path: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    ran = tmp_path / "ran"
    proc = entrypoint(
        store_path,
        "--volume",
        f"vol:{first}",
        "--volume",
        f"missing:{second}",
        "--",
        "touch",
        str(ran),
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    errors = [line for line in err.splitlines() if "cannot mount" in line]
    assert len(errors) == 1 and "missing" in errors[0] and "not found" in errors[0], err
    assert "Traceback" not in err
    assert not ran.exists()
    assert_unmounted(first)
    assert_unmounted(second)


def test_entrypoint_reads_volumes_from_the_environment_read_only(
    vol: Volume, store_path: Path, tmp_path: Path
) -> None:
    with vol.batch_upload() as batch:
        batch.put_file(__file__, "existing")
    mnt = tmp_path / "mnt"
    script = 'test -f "$MNT/existing" || exit 3; if echo x > "$MNT/new"; then exit 0; fi; exit 9'
    proc = entrypoint(
        store_path, "sh", "-c", script, env={"MNT": str(mnt), "VOLFS_VOLUMES": f"vol:{mnt}:ro"}
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 9, err  # the write failed (EROFS), the read worked
    assert [e.path for e in vol.listdir("/")] == ["existing"]
    assert_unmounted(mnt)


def test_entrypoint_forwards_sigterm_and_commits(
    vol: Volume, store_path: Path, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    script = (
        'trap \'echo bye > "$MNT/bye"; exit 3\' TERM; echo up > "$MNT/up"; '
        "while :; do sleep 0.05; done"
    )
    proc = entrypoint(
        store_path, "--volume", f"vol:{mnt}", "--", "sh", "-c", script, env={"MNT": str(mnt)}
    )
    try:
        wait_for(lambda: (mnt / "up").exists() or proc.poll() is not None, "the command to start")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert read(vol, "bye") == b"bye\n"
    assert_unmounted(mnt)


# -- systemd -------------------------------------------------------------------------------------
def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        strict=False, interpolation=None, comment_prefixes=("#", ";"), delimiters=("=",)
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_parses() -> None:
    unit = _unit()
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    assert "volfs mount %i" in service["ExecStart"]
    assert "--foreground" in service["ExecStart"].split()
    assert "volfs recover" in service["ExecStartPre"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert int(service["TimeoutStopSec"]) >= 30
    assert unit["Install"]["WantedBy"]


# systemd-analyze verify of the unit as scripts/install-service installs it: test_service.py
