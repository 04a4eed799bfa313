"""Containers sharing one store, as the README's ``docker run`` line runs them.

No Docker here: each "container" is ``volfs run`` in its own PID and mount namespace
(``unshare --pid --fork --mount --mount-proc``), with the store a directory both see (the
line's named volume). Both mount at the same path, as two containers would: their mounts
live in different mount namespaces. Their pids repeat (each starts at 1), which is what
breaks code that takes a pid for an identity: gc, recover and status from outside must
still see each one right, and LMDB's pid-keyed reader locks must not refuse either.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mounting import run_volfs

from volfs import Volume
from volfs.store import Store

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")


def readme_docker_run() -> list[str]:
    """The README's ``docker run`` line, as argv (its backslash continuations joined)."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^docker run .*?(?<!\\)$", text, re.MULTILINE | re.DOTALL)
    assert match, "the README shows no docker run line"
    return shlex.split(match.group(0).replace("\\\n", " "))


def container_argv(store: Path, mountpoint: Path) -> list[str]:
    """What ``docker run`` starts, mirrored: the image's ENTRYPOINT (``volfs run``) with the
    line's arguments after the image name, in fresh PID and mount namespaces."""
    argv = readme_docker_run()
    image = argv.index("volfs", 2)  # docker run [OPTIONS] volfs ARGS...
    options, args = argv[2:image], argv[image + 1 :]
    # The line's promises: FUSE, the capability to mount, and the shared store.
    assert "--device" in options and options[options.index("--device") + 1] == "/dev/fuse"
    assert "--cap-add" in options and options[options.index("--cap-add") + 1] == "SYS_ADMIN"
    store_volume = options[options.index("-v") + 1]
    assert store_volume.endswith(":/var/lib/volfs"), store_volume
    args = [a.replace("/data", str(mountpoint)) for a in args]
    return [*CONTAINER, *volfs_cli(), "run", *args]


#: A container's namespaces: its own pids (starting at 1) and its own mounts.
CONTAINER = ["unshare", "--pid", "--fork", "--mount", "--mount-proc"]


def ours(rows: list[dict[str, str]], tmp_path: Path) -> list[dict[str, str]]:
    """The status rows of this test's mounts (the host may have others)."""
    return [r for r in rows if r["path"].startswith(str(tmp_path))]


def volfs_cli() -> list[str]:
    return [sys.executable, "-m", "volfs"]


def start(store: Path, argv: list[str], hostname: str) -> subprocess.Popen[str]:
    env = {**os.environ, "VOLFS_STORE": str(store), "HOSTNAME": hostname}
    return subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_container(proc: subprocess.Popen[str]) -> None:
    """SIGKILL to the PID namespace's init (``unshare --fork``'s child): the kernel then
    kills every process in the namespace, as ``docker kill`` ends a container."""
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        try:
            os.kill(int(child), signal.SIGKILL)
        except ProcessLookupError:
            pass


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return proc.returncode, err


def test_two_containers_of_the_readme_line_share_a_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    Volume.objects.create("data", store=store)
    mountpoint = tmp_path / "data"  # the same path in both: separate mount namespaces
    procs = [start(store, container_argv(store, mountpoint), f"c{i}") for i in (1, 2)]
    results = [finish(p) for p in procs]
    for code, err in results:
        assert code == 0, err
        assert "Traceback" not in err
    vol = Volume.from_name("data", store=store)
    assert {e.path for e in vol.listdir("/")} >= {"c1", "c2"}
    assert b"".join(vol.read_file("c1")) == b"c1\n"
    assert b"".join(vol.read_file("c2")) == b"c2\n"
    assert ours(json.loads(run_volfs(store, "status", "--json").stdout), tmp_path) == []
    assert json.loads(run_volfs(store, "recover", "--json").stdout) == []
    run_volfs(store, "gc")
    assert "No damage found." in run_volfs(store, "fsck").stdout
    assert b"".join(vol.read_file("c2")) == b"c2\n"


HOLD = """
set -e
echo "$HOSTNAME" > "$MNT/$HOSTNAME"
volfs_status=$("$@" status --json)
echo "$volfs_status" > "$OUT/status-$HOSTNAME.json"
volfs_commit=$("$@" commit "$MNT")
echo "uncommitted" > "$MNT/$HOSTNAME.late"
touch "$OUT/ready-$HOSTNAME"
while [ ! -e "$OUT/go" ]; do sleep 0.1; done
"""


def test_gc_recover_and_status_see_each_container_right(tmp_path: Path) -> None:
    """Two containers hold their mounts (one commit each, one uncommitted file each) while
    the host runs gc and recover; then one ends cleanly and the other is killed."""
    store = tmp_path / "store"
    out = tmp_path / "out"
    out.mkdir()
    Volume.objects.create("a", store=store)
    Volume.objects.create("b", store=store)
    mnt = tmp_path / "mnt"
    procs = {}
    for name in ("a", "b"):
        argv = [
            *CONTAINER,
            *volfs_cli(),
            "run",
            "-v",
            f"{name}:{mnt}",
            "--",
            "sh",
            "-c",
            HOLD,
            "hold",
            *volfs_cli(),
        ]
        # No background commit: what is uncommitted when "b" is killed stays so.
        env_extra = {"MNT": str(mnt), "OUT": str(out), "VOLFS_AUTOCOMMIT": "0"}
        os.environ.update(env_extra)
        try:
            procs[name] = start(store, argv, name)
        finally:
            for k in env_extra:
                os.environ.pop(k)
    try:
        deadline = time.monotonic() + 60
        while not all((out / f"ready-{n}").exists() for n in procs):
            for n, p in procs.items():
                assert p.poll() is None, f"container {n} ended early: {finish(p)[1]}"
            assert time.monotonic() < deadline, "the containers did not come up"
            time.sleep(0.1)
        for name in procs:  # each sees its own mount only, at the shared path
            (row,) = ours(json.loads((out / f"status-{name}.json").read_text()), tmp_path)
            assert row["volume"] == name and row["path"] == str(mnt), row
        # From the host: both mounts are alive (their pids mean nothing here), so recover
        # takes nothing and gc keeps what their views hold.
        assert json.loads(run_volfs(store, "recover", "--json").stdout) == []
        run_volfs(store, "gc", "--grace", "0s")
        assert len(Store.open(store).catalog.list_mounts()) == 2
        # "a" ends cleanly (its late file committed at unmount), "b" is killed outright,
        # every process of it, as docker kill does (its daemon has a session of its own).
        kill_container(procs["b"])
        finish(procs["b"])
        (out / "go").touch()
        code, err = finish(procs["a"])
    finally:
        for proc in procs.values():  # a failed test leaves no container behind
            if proc.poll() is None:
                kill_container(proc)
                finish(proc)
    assert code == 0, err
    recovered = json.loads(run_volfs(store, "recover", "--json").stdout)
    assert [(r["volume"], r["action"]) for r in recovered] == [("b", "committed")]
    for name in ("a", "b"):
        vol = Volume.from_name(name, store=store)
        assert b"".join(vol.read_file(name)) == f"{name}\n".encode()
        assert b"".join(vol.read_file(f"{name}.late")) == b"uncommitted\n"
    assert Store.open(store).catalog.list_mounts() == []
    report = run_volfs(store, "fsck")
    assert "No damage found." in report.stdout
    assert "stale" not in report.stdout + report.stderr


INSTRUCTIONS = {
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "WORKDIR",
    "ENV",
    "ARG",
    "VOLUME",
    "ENTRYPOINT",
    "CMD",
    "LABEL",
    "USER",
    "EXPOSE",
    "HEALTHCHECK",
    "SHELL",
    "STOPSIGNAL",
}


def test_the_dockerfile_lints_and_runs_volfs_run() -> None:
    dockerfile = ROOT / "Dockerfile"
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint:
        proc = subprocess.run(
            [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # Without hadolint, at least the syntax: known instructions, continuations closed.
    logical = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [x for x in logical.splitlines() if x.strip() and not x.lstrip().startswith("#")]
    assert all(x.split()[0].upper() in INSTRUCTIONS for x in lines), lines
    assert [x for x in lines if x.startswith("ENTRYPOINT")] == ['ENTRYPOINT ["volfs", "run"]']
    assert any(x.startswith("FROM") and "slim" in x for x in lines)


OPEN_AND_WAIT = """
import sys
from volfs.store import Store
Store.open(sys.argv[1]).catalog.list_volumes()
print("open", flush=True)
sys.stdin.read()
"""

OPEN_FROM_PYTHON = """
import sys
from volfs.catalog.lmdb import PidCollisionError
from volfs.store import Store
try:
    Store.open(sys.argv[1]).catalog.list_volumes()
except PidCollisionError as exc:
    print("collision:", exc)
"""


def test_the_same_pid_in_two_pid_namespaces_is_no_obstacle(tmp_path: Path) -> None:
    """Both are pid 1 of their namespaces, and LMDB marks a reader by a lock at offset
    <pid> of its lock file: the second one's first read collides with the first's. The
    CLI starts itself again (another pid) and works; the Python API says why in one line."""
    store = tmp_path / "store"
    Volume.objects.create("v", store=store)
    fresh_pids = ["unshare", "--pid", "--fork", "--mount", "--mount-proc"]
    first = subprocess.Popen(
        [*fresh_pids, sys.executable, "-c", OPEN_AND_WAIT, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None and first.stdout.readline() == "open\n"
        env = {**os.environ, "VOLFS_STORE": str(store)}
        cli = subprocess.run(
            [*fresh_pids, *volfs_cli(), "volume", "list"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        api = subprocess.run(
            [*fresh_pids, sys.executable, "-c", OPEN_FROM_PYTHON, str(store)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        first.communicate("", timeout=30)
    assert cli.returncode == 0, cli.stderr
    assert [row.split()[0] for row in cli.stdout.splitlines()[1:]] == ["v"]
    assert api.stdout.startswith("collision: cannot open the catalog"), api.stdout + api.stderr
    assert "pid 1 is in use by a process of another PID namespace" in api.stdout
