"""``volfs run``: the container entrypoint. Mounts volumes, runs a command, commits, unmounts.

    volfs run [-v NAME:PATH[:ro]]... [--] COMMAND [ARGS...]
    VOLFS_VOLUMES="data:/data models:/models:ro" volfs run -- COMMAND [ARGS...]

Each volume is mounted as ``volfs mount`` mounts it (a background daemon per volume; the
store and environment come from ``--store``/VOLFS_STORE and VOLFS_ENV as for any command).
Then COMMAND runs; SIGTERM, SIGINT and SIGHUP are forwarded to it. When it has ended,
every volume mounted here is committed and unmounted (``volfs unmount --force``: files
still open are committed with what was written), and ``volfs run`` exits with COMMAND's
code (128+N if signal N ended it). If a mount fails, the volumes already mounted are
unmounted and it exits with volfs's error code and one line on stderr; COMMAND does not
run. If COMMAND succeeded but a final commit failed, it exits 1 (the changes wait for
``volfs recover``).

Each volfs step runs as a child process (``python -m volfs``), so this process stays a
plain signal forwarder and reaper: as PID 1 of a container it must reap the daemons it
inherits (``volfs mount`` exits, its daemon is re-parented here), or ``volfs unmount``
would wait on their zombies.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import click

from volfs.cli._common import CliState

PROG = "volfs run"


class Failure(Exception):
    """One line for stderr, and the exit code to leave with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Spec:
    name: str
    path: str
    read_only: bool


def parse_spec(text: str) -> Spec:
    parts = text.split(":")
    if len(parts) == 3 and parts[2] == "ro":
        parts = parts[:2]
        read_only = True
    else:
        read_only = False
    if len(parts) != 2 or not parts[0] or not parts[1].startswith("/"):
        raise Failure(f"{PROG}: bad volume {text!r}: expected NAME:/ABSOLUTE/PATH[:ro]", 2)
    return Spec(parts[0], os.path.normpath(parts[1]), read_only)


def volfs_command() -> list[str]:
    """How to run volfs itself: this interpreter, unless VOLFS names another volfs."""
    override = os.environ.get("VOLFS")
    return [override] if override else [sys.executable, "-m", "volfs"]


def volfs(*args: str) -> subprocess.CompletedProcess[str]:
    command = volfs_command()
    try:
        return subprocess.run(
            [*command, *args],
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
    except OSError as exc:
        raise Failure(f"{PROG}: cannot run {command[0]}: {exc.strerror} (set VOLFS)", 127) from None


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1].removeprefix("Error: ") if lines else f"exit status {proc.returncode}"


def daemon_pid(path: str) -> int | None:
    """The pid serving ``path`` (the mount root's control xattr), to reap it if it is ours."""
    try:
        return int(json.loads(os.getxattr(path, "user.volfs.control"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def mount(spec: Spec) -> int | None:
    # An image rarely has the mountpoint: docker run -v NAME:/data should just work.
    try:
        os.makedirs(spec.path, exist_ok=True)
    except OSError as exc:
        raise Failure(f"{PROG}: cannot create {spec.path}: {exc.strerror}", 1) from None
    args = ["mount", spec.name, spec.path] + (["--read-only"] if spec.read_only else [])
    proc = volfs(*args)
    if proc.returncode != 0:
        raise Failure(
            f"{PROG}: cannot mount volume {spec.name} at {spec.path}: {last_line(proc)}",
            proc.returncode,
        )
    print(
        f"{PROG}: mounted {spec.name} at {spec.path}" + (" (read-only)" if spec.read_only else ""),
        file=sys.stderr,
    )
    return daemon_pid(os.path.realpath(spec.path))


def reap(pids: list[int]) -> None:
    """Reaps those daemons that were re-parented to us (we are PID 1 or a subreaper)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not our child: its own parent or init reaps it


def unmount(path: str, pids: list[int]) -> bool:
    """Commits and unmounts ``path``; True if that worked. Reaps daemons while it waits."""
    proc = subprocess.Popen(
        [*volfs_command(), "unmount", "--force", path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while True:
        try:
            out, err = proc.communicate(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            reap(pids)
    reap(pids)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if proc.returncode != 0:
        print(f"{PROG}: unmounting {path} failed: {last_line(result)}", file=sys.stderr)
        return False
    print(f"{PROG}: {last_line(result)}", file=sys.stderr)
    return True


class Signals:
    """SIGTERM/SIGINT/SIGHUP: remembered while mounting, forwarded while the command runs.

    A signal never cuts the mounting or the final commits short: either would leave a mount
    behind (or a daemon that comes up after we gave up on it).
    """

    NUMBERS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: int | None = None
        self.child: subprocess.Popen[bytes] | None = None
        for signum in self.NUMBERS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        child = self.child
        if child is None or child.returncode is not None:
            return
        # A Ctrl-C at a terminal already reached the child (same process group, in the
        # foreground): forwarding it again would interrupt it twice.
        if signum == signal.SIGINT and from_terminal():
            return
        child.send_signal(signum)

    def run(self, command: list[str]) -> int:
        """Runs the command; returns its exit code, shell style (128+N for signal N)."""
        if self.received is not None:
            return 128 + self.received  # stopped while mounting: do not start it
        try:
            self.child = subprocess.Popen(command)
        except OSError as exc:
            print(f"{PROG}: cannot run {shlex.join(command)}: {exc.strerror}", file=sys.stderr)
            return 127 if isinstance(exc, FileNotFoundError) else 126
        if self.received is not None:  # arrived between the check and the Popen
            self.child.send_signal(self.received)
        code = self.child.wait()  # PEP 475: a handled signal does not interrupt the wait
        return 128 - code if code < 0 else code


def from_terminal() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except OSError:
        return False


def run_volumes(specs: list[Spec], command: list[str]) -> int:
    """Mounts ``specs``, runs ``command``, commits and unmounts; returns the exit code."""
    signals = Signals()
    mounted: list[str] = []
    pids: list[int] = []
    try:
        for spec in specs:
            if signals.received is not None:
                break
            pid = mount(spec)
            mounted.append(os.path.realpath(spec.path))
            if pid is not None:
                pids.append(pid)
        code = signals.run(command)
    except Failure as exc:
        print(exc, file=sys.stderr)
        code = exc.code or 1
    cleanup_ok = True
    for path in reversed(mounted):
        cleanup_ok = unmount(path, pids) and cleanup_ok
    if code == 0 and not cleanup_ok:
        return 1
    return code


@click.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "-v",
    "--volume",
    "volumes",
    multiple=True,
    metavar="NAME:PATH[:ro]",
    help="A volume to mount for the command (repeatable; also VOLFS_VOLUMES, space-separated).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def run_cmd(state: CliState, volumes: tuple[str, ...], command: tuple[str, ...]) -> None:
    """Mount volumes, run COMMAND, then commit and unmount them: a container's entrypoint.

    Exits with COMMAND's code (128+N if signal N ended it)."""
    try:
        specs = [parse_spec(s) for s in os.environ.get("VOLFS_VOLUMES", "").split()]
        specs += [parse_spec(s) for s in volumes]
    except Failure as exc:
        raise click.UsageError(str(exc).removeprefix(f"{PROG}: ")) from None
    if state.store_path is not None:  # the children find the store as we were told it
        os.environ["VOLFS_STORE"] = str(Path(state.store_path).resolve())
    sys.exit(run_volumes(specs, list(command)))
