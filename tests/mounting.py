"""Real FUSE mounts for tests: start a daemon, wait for it, and always clean up.

A mount is started as ``sys.executable -m volfs mount --foreground …`` (our child, so we
hold its pid). ``mounted()`` waits for it against a deadline and fails at once if the
daemon died; its ``finally`` unmounts (``fusermount3 -u``, then ``-u -z``) and ends the
daemon it started by pid — never by name. On failure the daemon's log is attached.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MOUNT_DEADLINE = 30.0


def volfs_mountpoints() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.startswith("fuse.volfs "):
                points.append(left.split(" ")[4])
    return points


def run_volfs(
    store: Path, *args: str, check: bool = True, timeout: float = 120, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Runs the CLI in a child process, as a user would."""
    env = {**os.environ, "VOLFS_STORE": str(store)}
    proc = subprocess.run(
        [sys.executable, "-m", "volfs", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        **kwargs,
    )  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise AssertionError(
            f"volfs {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@dataclass
class Mount:
    path: Path
    store: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def volfs(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_volfs(self.store, *args, check=check)

    def commit(self) -> str:
        return self.volfs("commit", str(self.path)).stdout

    def reload(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.volfs("reload", str(self.path), check=check)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def stop_daemon(proc: subprocess.Popen[bytes], path: Path) -> None:
    """Unmounts by path (lazily if it must), then ends the daemon by pid."""
    if str(path) in volfs_mountpoints():
        subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, timeout=30)
    if str(path) in volfs_mountpoints():
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30)
    try:
        proc.wait(timeout=20)  # unmounted: the daemon makes its final commit and exits
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@contextlib.contextmanager
def mounted(
    store: Path,
    name: str,
    path: Path,
    *extra: str,
    autocommit: str = "0",
    stop: bool = True,
    env: dict[str, str] | None = None,
) -> Iterator[Mount]:
    path.mkdir(parents=True, exist_ok=True)
    log = path.parent / f"{path.name}.daemon.log"
    env = {**os.environ, **(env or {}), "VOLFS_STORE": str(store)}
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "volfs",
                "mount",
                name,
                str(path),
                "--foreground",
                "--autocommit",
                autocommit,
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
        )
    mount = Mount(path, store, proc, log)
    try:
        deadline = time.monotonic() + MOUNT_DEADLINE
        while str(path) not in volfs_mountpoints() or not answers(path):
            if proc.poll() is not None:
                raise AssertionError(
                    f"the daemon exited with {proc.returncode}:\n{mount.log_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the mount was not ready in {MOUNT_DEADLINE}s:\n{mount.log_text()}"
                )
            time.sleep(0.02)
        yield mount
    except BaseException:
        sys.stderr.write(f"--- daemon log of {path} ---\n{mount.log_text()}\n")
        raise
    finally:
        if stop:
            stop_daemon(proc, path)


def answers(path: Path) -> bool:
    """True if the volfs daemon of the mount at ``path`` answers (its control xattr)."""
    try:
        os.getxattr(path, "user.volfs.control")
        return True
    except OSError:
        return False
