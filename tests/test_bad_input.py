"""Bad input, table-driven: every CLI command, every control message, the Python API.

Each bad input must be refused with ONE clear line (the CLI: a single ``Error: …`` line
on stderr, nothing on stdout, no traceback, a non-zero exit code; the control socket: a
reply ``{"ok": false, "error": …}`` of one line; the API: a ``VolfsError`` or the
builtin Modal users catch) and must change nothing: the volumes, heads, snapshots and
blobs of the store, the mounts, and a live mount's uncommitted changes are compared
before and after.

The store holds two volumes (``vol`` with a few files, ``other``) and a mount of ``vol``
with one uncommitted file. The CLI cases run in a few parallel processes; if the store
changed, they are re-run one by one to name the culprit. The count of inputs tried and
refused cleanly is printed (pytest ``-s``).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest_campaign import control_socket, summary
from mounting import Mount, mounted, run_volfs, volfs_mountpoints

from volfs import errors
from volfs.api import Volume
from volfs.store import Store

pytestmark = pytest.mark.mount

BAD_NAMES = ["", "x" * 65, "..", ".", "a/b", "été", "a b", "a\nb", "a:b"]
BAD_PATHS = [
    "..",
    "../x",
    "a/../b",
    "x" * 256,
    "/".join(["d" * 200] * 21),
    "./..",
    "/../etc/passwd",
]


class Setup:
    def __init__(self, root: Path, store_path: Path, mount: Mount) -> None:
        self.root = root
        self.store_path = store_path
        self.store = Store.open(store_path)
        self.mount = mount
        self.local_file = root / "local.txt"
        self.local_dir = root / "localdir"
        self.not_a_mount = root / "plain"
        self.a_file = root / "plain-file"
        self.other_snapshot = self.store.catalog.get_volume("main", "other").head
        self.tried = 0
        self.refused = 0

    def state(self) -> Any:
        catalog = self.store.catalog
        volumes = sorted((v.environment, v.name, v.id, v.head) for v in catalog.list_volumes())
        snapshots = sorted(k for k, _ in catalog.iter_snapshots_raw())
        blobs = sorted(self.store.blobs.digests())
        mounts = sorted(p for p in volfs_mountpoints() if p.startswith(str(self.root)))
        dirty = sorted(self.status()["dirty_paths"])
        # A refused `mount` may leave the mountpoint it created (as `mkdir -p` would).
        local = sorted(n for n in os.listdir(self.root) if n != "new-mount")
        return volumes, snapshots, blobs, mounts, dirty, local

    def status(self) -> dict[str, Any]:
        from volfs import control

        return control.call(control_socket(self.mount.path), "status", timeout=30)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("bad")
    store_path = root / "store"
    run_volfs(store_path, "volume", "create", "vol")
    run_volfs(store_path, "volume", "create", "other")
    (root / "local.txt").write_text("local")
    (root / "localdir" / "sub").mkdir(parents=True)
    (root / "localdir" / "sub" / "f").write_text("f")
    (root / "plain").mkdir()
    (root / "plain-file").write_text("not a directory")
    run_volfs(store_path, "volume", "put", "vol", str(root / "local.txt"), "/a.txt")
    run_volfs(store_path, "volume", "put", "vol", str(root / "localdir"), "/dir")
    with mounted(store_path, "vol", root / "mnt") as m:
        (m.path / "uncommitted").write_text("pending")
        yield Setup(root, store_path, m)
    for point in volfs_mountpoints():  # anything a wrongly accepted `mount` left behind
        if point.startswith(str(root)):
            subprocess.run(["fusermount3", "-u", "-z", point], capture_output=True)


# -- the CLI ---------------------------------------------------------------------------------------
def cli_cases(s: Setup) -> list[list[str]]:
    mnt, plain, local, ldir = (
        str(s.mount.path),
        str(s.not_a_mount),
        str(s.local_file),
        str(s.local_dir),
    )
    new_mount = str(s.root / "new-mount")
    cases: list[list[str]] = []
    # Bad volume names, for every command that takes one.
    for name in BAD_NAMES:
        cases += [
            ["volume", "create", name],
            ["volume", "ls", name],
            ["volume", "put", name, local, "/x"],
            ["volume", "get", name, "a.txt", "-"],
            ["volume", "rm", name, "a.txt"],
            ["volume", "cp", name, "a.txt", "b.txt"],
            ["volume", "rename", name, "fresh"],
            ["volume", "rename", "vol", name],
            ["volume", "delete", name, "--yes"],
            ["volume", "info", name],
            ["volume", "log", name],
            ["mount", name, new_mount],
        ]
    # Bad paths inside a volume.
    for path in BAD_PATHS:
        cases += [
            ["volume", "ls", "vol", path],
            ["volume", "put", "vol", local, path],
            ["volume", "put", "vol", ldir, path],
            ["volume", "get", "vol", path, "-"],
            ["volume", "rm", "vol", path],
            ["volume", "rm", "vol", path, "-r"],
            ["volume", "cp", "vol", "a.txt", path],
            ["volume", "cp", "vol", path, "copy"],
        ]
    cases += [
        # Paths that exist but do not fit the command.
        ["volume", "rm", "vol", "/"],
        ["volume", "rm", "vol", "/", "-r"],
        ["volume", "rm", "vol", "dir"],
        ["volume", "rm", "vol", "missing"],
        ["volume", "cp", "vol", "dir", "dir2"],
        ["volume", "cp", "vol", "missing", "x"],
        ["volume", "cp", "vol", "a.txt"],
        ["volume", "cp", "vol", "a.txt", "a.txt/under-a-file"],
        ["volume", "ls", "vol", "missing"],
        ["volume", "ls", "vol", "a.txt/x"],
        ["volume", "get", "vol", "missing", "-"],
        ["volume", "get", "vol", "a.txt", str(s.root / "no-such-dir" / "out")],
        ["volume", "get", "vol", "a.txt", str(s.a_file)],
        ["volume", "get", "vol", "dir", str(s.a_file)],
        ["volume", "put", "vol", str(s.root / "no-such-local-file"), "/x"],
        ["volume", "put", "vol", local, "/a.txt"],
        ["volume", "put", "vol", local, "/dir"],
        ["volume", "put", "vol", local, "/a.txt/under-a-file"],
        ["volume", "put", "vol", ldir, "/a.txt"],
        # Volumes that exist, or do not.
        ["volume", "create", "vol"],
        ["volume", "rename", "vol", "other"],
        ["volume", "rename", "missing", "x"],
        ["volume", "delete", "missing", "--yes"],
        ["volume", "info", "missing"],
        ["volume", "log", "missing"],
        ["volume", "ls", "missing"],
        # Bad sizes and values.
        ["volume", "log", "vol", "-n", "0"],
        ["volume", "log", "vol", "-n", "-1"],
        ["volume", "log", "vol", "-n", "many"],
        ["mount", "vol", new_mount, "--autocommit", "-1"],
        ["mount", "vol", new_mount, "--autocommit", "nan"],
        ["mount", "vol", new_mount, "--autocommit", "soon"],
        ["mount", "vol", new_mount, "--snapshot", s.other_snapshot],
        ["mount", "vol", new_mount, "--snapshot", "sn-doesnotexist"],
        ["mount", "vol", new_mount, "--snapshot", ""],
        ["mount", "missing", new_mount],
        ["mount", "vol", str(s.a_file)],
        ["mount", "vol", "/proc/volfs"],
        ["mount", "vol", mnt],  # already mounted there
        ["volume", "list", "--env", "a b"],
        ["volume", "info", "vol", "--env", "a/b"],
        ["mount", "vol", new_mount, "--env", ".."],
        ["volume", "create", "fresh", "--env", "x" * 64],
        # Mount commands given something that is not a mount.
        ["commit", plain],
        ["commit", str(s.root / "missing")],
        ["commit", str(s.a_file)],
        ["commit", mnt, "extra"],
        ["reload", plain],
        ["reload", str(s.root / "missing")],
        ["unmount", plain],
        ["unmount", str(s.root / "missing")],
        ["unmount", mnt, "--no-commit"],
        ["status", "extra"],
        ["recover", "extra"],
        ["recover", "--bogus"],
        ["volume", "nope"],
        ["nope"],
        ["volume", "create"],
        ["volume", "put", "vol"],
    ]
    return cases


#: Runs CLI cases as ``volfs`` would, minus the interpreter start (most of a CLI call's
#: 0.5 s): volfs is imported once, then each case runs ``volfs.cli.main`` in a fresh fork
#: with its own stdin (/dev/null), stdout, stderr and exit code.
RUNNER = r"""
import json, os, sys
from volfs.cli import main
for line in sys.stdin:
    args, cwd, out, err = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(cwd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
            os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            main(args, prog_name="volfs")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
"""


class Runner:
    def __init__(self, s: Setup, index: int) -> None:
        self.s = s
        env = {**os.environ, "VOLFS_STORE": str(s.store_path)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.out = s.root.parent / f"{s.root.name}-runner{index}.out"
        self.err = s.root.parent / f"{s.root.name}-runner{index}.err"

    def run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(
            json.dumps([args, str(self.s.root), str(self.out), str(self.err)]) + "\n"
        )
        self.proc.stdin.flush()
        code = json.loads(self.proc.stdout.readline())
        return subprocess.CompletedProcess(
            args, code, self.out.read_text(errors="replace"), self.err.read_text(errors="replace")
        )

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        for path in (self.out, self.err):
            path.unlink(missing_ok=True)


def verdict(proc: subprocess.CompletedProcess[str]) -> str | None:
    """What is wrong with this refusal (None: it is clean)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode == 0:
        return "accepted (exit 0)"
    if "Traceback" in proc.stderr:
        return "traceback"
    if len(lines) != 1 or not lines[0].startswith("Error: "):
        return f"{len(lines)} lines on stderr"
    if "internal error" in lines[0]:
        return "an internal error, not a clear refusal"
    if proc.stdout:
        return f"printed {proc.stdout[:60]!r} on stdout"
    return None


@pytest.mark.timeout(600)
def test_every_cli_command_refuses_bad_input_in_one_line_and_changes_nothing(setup: Setup) -> None:
    cases = cli_cases(setup)
    before = setup.state()
    runners = [Runner(setup, i) for i in range(2)]
    try:
        with ThreadPoolExecutor(len(runners)) as pool:
            results = list(
                pool.map(lambda i: [runners[i].run(args) for args in cases[i::2]], range(2))
            )
        procs = [proc for i in range(len(cases)) for proc in [results[i % 2][i // 2]]]
        bad = [
            f"volfs {' '.join(repr(a) if not a or ' ' in a else a for a in args)}: {problem}\n"
            f"    stderr: {proc.stderr.strip()[:300]!r}"
            for args, proc in zip(cases, procs, strict=True)
            if (problem := verdict(proc))
        ]
        after = setup.state()
        culprits = []
        if after != before:  # find who changed it: one by one from here
            for args in cases:
                current = setup.state()
                runners[0].run(args)
                if setup.state() != current:
                    culprits.append(" ".join(args))
    finally:
        for runner in runners:
            runner.close()
    refused = len(cases) - len(bad)
    setup.tried += len(cases)
    setup.refused += refused
    summary(
        f"BAD INPUT (CLI): {refused}/{len(cases)} refused cleanly (one Error line, exit != 0, "
        f"nothing changed)"
    )
    assert not bad, f"{len(bad)} of {len(cases)} not refused cleanly:\n" + "\n".join(bad)
    assert after == before, f"the store changed; by: {culprits}"


# -- the control socket ----------------------------------------------------------------------------
CONTROL_CASES: list[tuple[str, bytes]] = [
    ("not JSON", b"not json\n"),
    ("not UTF-8", b"\xff\xfe\xfd\n"),
    ("an empty line", b"\n"),
    ("a JSON array", b"[1, 2]\n"),
    ("JSON null", b"null\n"),
    ("a JSON string", b'"commit"\n'),
    ("no op", b'{"v": 1}\n'),
    ("an empty object", b"{}\n"),
    ("op of the wrong type", b'{"v": 1, "op": 5}\n'),
    ("op null", b'{"v": 1, "op": null}\n'),
    ("an unknown op", b'{"v": 1, "op": "explode"}\n'),
    ("an op in the wrong case", b'{"v": 1, "op": "COMMIT"}\n'),
    ("a newer version", b'{"v": 2, "op": "ping"}\n'),
    ("a version as a string", b'{"v": "1", "op": "ping"}\n'),
    ("a version as a bool", b'{"v": true, "op": "ping"}\n'),
    ("a version as null", b'{"v": null, "op": "ping"}\n'),
    ("if_unchanged as a string", b'{"v": 1, "op": "commit", "if_unchanged": "no"}\n'),
    ("if_unchanged as a number", b'{"v": 1, "op": "commit", "if_unchanged": 0}\n'),
    ("discard as a string", b'{"v": 1, "op": "unmount", "discard": "false"}\n'),
    ("force as a number", b'{"v": 1, "op": "unmount", "force": 1}\n'),
    ("pid as a string", b'{"v": 1, "op": "reload", "pid": "me"}\n'),
    ("pid as a bool", b'{"v": 1, "op": "reload", "pid": true}\n'),
    ("pid as a float", b'{"v": 1, "op": "unmount", "pid": 1.5}\n'),
    ("oversized, one line", b'{"v": 1, "op": "ping", "pad": "' + b"x" * 70_000 + b'"}\n'),
    ("oversized, no newline", b"y" * 70_000),
    ("nested too deep", b"[" * 50_000 + b"\n"),
    ("truncated JSON", b'{"v": 1, "op": "commit"\n'),
    ("a NUL in the op", b'{"v": 1, "op": "com\\u0000mit"}\n'),
]


def send_raw(sock_path: str, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(sock_path)
        try:
            s.sendall(payload)
        except BrokenPipeError:
            pass  # the daemon answered and closed before reading it all
        s.shutdown(socket.SHUT_WR)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.timeout(300)
def test_every_bad_control_message_gets_one_error_and_changes_nothing(setup: Setup) -> None:
    sock_path = control_socket(setup.mount.path)
    before = setup.state()
    bad = []
    for what, payload in CONTROL_CASES:
        raw = send_raw(sock_path, payload)
        try:
            reply = json.loads(raw)
        except ValueError:
            bad.append(f"{what}: the reply is not JSON: {raw[:100]!r}")
            continue
        if reply.get("ok") is not False or not isinstance(reply.get("error"), str):
            bad.append(f"{what}: accepted: {reply}")
        elif (
            "\n" in reply["error"]
            or not reply["error"].strip()
            or "internal error" in reply["error"]
        ):
            bad.append(f"{what}: not one clear line: {reply['error']!r}")
        if setup.mount.proc.poll() is not None or str(setup.mount.path) not in volfs_mountpoints():
            pytest.fail(f"{what}: the daemon stopped")
        if (now := setup.state()) != before:
            bad.append(f"{what}: changed the store or the mount: {now} != {before}")
            before = now
    refused = len(CONTROL_CASES) - len(bad)
    setup.tried += len(CONTROL_CASES)
    setup.refused += refused
    summary(
        f"BAD INPUT (control socket): {refused}/{len(CONTROL_CASES)} refused cleanly, "
        "daemon serving"
    )
    assert not bad, "\n".join(bad)
    assert (setup.mount.path / "uncommitted").read_text() == "pending"


# -- the Python API --------------------------------------------------------------------------------
def api_cases(s: Setup) -> list[tuple[str, Callable[[], object]]]:
    store = s.store
    vol = Volume.from_name("vol", store=store)
    cases: list[tuple[str, Callable[[], object]]] = []
    for name in [*BAD_NAMES, "a\0b", 5]:
        env_cases = (
            []
            if name == ""
            else [  # modal treats environment "" as the default one
                (f"env {name!r}", lambda n=name: Volume.from_name("vol", n, store=store).hydrate())
            ]
        )  # type: ignore[misc]
        cases += [
            (f"from_name {name!r}", lambda n=name: Volume.from_name(n, store=store).hydrate()),  # type: ignore[misc]
            (f"create {name!r}", lambda n=name: Volume.objects.create(n, store=store)),  # type: ignore[misc]
            (f"delete {name!r}", lambda n=name: Volume.objects.delete(n, store=store)),  # type: ignore[misc]
            (f"rename to {name!r}", lambda n=name: Volume.rename("vol", n, store=store)),  # type: ignore[misc]
            *env_cases,
        ]
    for path in [*BAD_PATHS, "a\0b", "", "/"]:

        def put(p: str = path) -> None:
            with vol.batch_upload() as batch:
                batch.put_file(io.BytesIO(b"x"), p)

        def put_dir(p: str = path) -> None:
            with vol.batch_upload() as batch:
                batch.put_directory(s.local_dir, p)

        if path not in ("", "/"):  # the root is where put_directory uploads by default
            cases.append((f"put_directory {path[:20]!r}", put_dir))
        cases += [
            (f"put_file {path[:20]!r}", put),
            (f"read_file {path[:20]!r}", lambda p=path: list(vol.read_file(p))),  # type: ignore[misc]
            (f"remove_file {path[:20]!r}", lambda p=path: vol.remove_file(p, recursive=True)),  # type: ignore[misc]
            (f"copy_files to {path[:20]!r}", lambda p=path: vol.copy_files(["a.txt"], p)),  # type: ignore[misc]
            (f"copy_files from {path[:20]!r}", lambda p=path: vol.copy_files([p], "copy")),  # type: ignore[misc]
        ]
        if path not in ("", "/"):
            cases.append((f"listdir {path[:20]!r}", lambda p=path: vol.listdir(p)))  # type: ignore[misc]

    def upload_over_existing() -> None:
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"x"), "a.txt")

    cases += [
        ("put_file over an existing file", upload_over_existing),
        ("snapshot of another volume", lambda: list(vol.snapshot(s.other_snapshot).listdir("/"))),
        ("list max_objects=-1", lambda: Volume.objects.list(max_objects=-1, store=store)),
    ]
    return cases


BUILTINS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    ValueError,
    TypeError,
    RuntimeError,
    PermissionError,
)


@pytest.mark.timeout(120)
def test_the_api_refuses_bad_names_paths_and_values_and_changes_nothing(setup: Setup) -> None:
    before = setup.state()
    bad = []
    cases = api_cases(setup)
    for what, call in cases:
        try:
            call()
        except errors.VolfsError as exc:
            if not str(exc).strip() or "\n" in str(exc):
                bad.append(f"{what}: unclear error {exc!r}")
        except BUILTINS as exc:
            if not str(exc).strip():
                bad.append(f"{what}: unclear error {exc!r}")
        except Exception as exc:
            bad.append(f"{what}: raised {type(exc).__name__}: {exc}")
        else:
            bad.append(f"{what}: accepted")
        if (now := setup.state()) != before:
            bad.append(f"{what}: changed the store")
            before = now
    refused = len(cases) - len(bad)
    setup.tried += len(cases)
    setup.refused += refused
    summary(
        f"BAD INPUT (Python API): {refused}/{len(cases)} refused cleanly; "
        f"in all so far: {setup.refused}/{setup.tried} refused cleanly"
    )
    assert not bad, "\n".join(bad)


def test_put_directory_does_not_follow_symlinks_out_of_the_named_directory(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_text("must not be uploaded")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "ok").write_text("uploaded")
    (tree / "sub" / "escape").symlink_to(outside)
    (tree / "sub" / "escape-dir").symlink_to(tmp_path)
    store_path = tmp_path / "store"
    run_volfs(store_path, "volume", "create", "symlinks")
    run_volfs(store_path, "volume", "put", "symlinks", str(tree), "/t")
    vol = Volume.from_name("symlinks", store=Store.open(store_path))
    for entry in vol.listdir("/", recursive=True):
        if entry.type.name == "FILE":
            assert b"".join(vol.read_file(entry.path)) != b"must not be uploaded", entry.path
    assert b"".join(vol.read_file("t/ok")) == b"uploaded"
