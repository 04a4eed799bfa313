"""Starting a mount daemon in the background and seeing it leave: the one supervisor that
``volfs mount`` / ``volfs unmount`` (:mod:`volfs.cli.mount`) and :meth:`volfs.Volume.mount`
(:mod:`volfs.api.volume`) share.

Owns:

- :func:`start`: spawns ``python -m volfs mount --foreground --ready-fd N`` in a session of
  its own and waits for the daemon's one readiness line on that pipe — ``ready <mount id>``
  or ``error <message>`` (written by ``run_daemon``) — with ``poll()`` against a deadline.
  A daemon that fails, or exits without a word, becomes one :class:`MountError` holding its
  message (or the tail of its log).
- the registry of the daemons this process spawned: each is reaped by pid once it exits, so
  it does not linger as a zombie that still looks alive in ``/proc``.
- :class:`Daemon`: one daemon known by its mount path and pid — started here, or found
  through its mount (``control.mount_info``) — that can be waited for (:meth:`Daemon.wait_gone`)
  or committed, unmounted and waited for (:meth:`Daemon.stop`).

Must not: serve a mount or hold mount state (that is :mod:`volfs.mount.daemon`, in the
daemon's own process); print or prompt (the callers format); wait without a deadline.

Concurrency: plain blocking code for the client process; the registry is only touched by
the thread that starts or stops a daemon (``Volume.mount`` and CLI commands are
single-threaded per mount).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from volfs import control
from volfs.catalog import new_id
from volfs.errors import MountError, VolfsError
from volfs.mount import daemon, logs
from volfs.mount.daemon import MountOptions
from volfs.store import Store

#: How long a starting daemon may take to answer "ready" (it opens the store, mounts FUSE).
READY_TIMEOUT = 60.0
#: Once a daemon has answered "unmount" (its final commit done), it only has to exit.
EXIT_TIMEOUT = 60.0
#: How long a daemon that failed to start may take to die of SIGKILL before it is left.
REAP_TIMEOUT = 5.0
#: How often the waits below look again.
POLL_INTERVAL = 0.02

#: Daemons this process started and that have not been reaped yet. Holding their handles
#: keeps Python from warning about children it never waited for.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class Daemon:
    """One mount daemon, known by the real path it serves and its pid.

    Made by :func:`start`, or directly as ``Daemon(path, pid)`` for a daemon found through
    its mount; a daemon this process started is then still reaped here, whichever way the
    handle was made.
    """

    def __init__(
        self, path: str, pid: int, *, mount_id: str = "", log_path: Path | None = None
    ) -> None:
        self.path = path
        self.pid = pid
        self.mount_id = mount_id
        self.log_path = log_path
        #: Its exit status once it has exited, if it was our child (else unknown: None).
        self.exit_code: int | None = None
        self._exited = False
        #: Our child that started the daemon again to get another pid, and waits for it.
        self.waiter: subprocess.Popen[Any] | None = None

    def __repr__(self) -> str:
        return f"<volfs daemon pid {self.pid} at {self.path!r}>"

    def exited(self) -> bool:
        """True once the process is gone (a child of ours: exited and reaped)."""
        if self._exited:
            return True
        proc = _CHILDREN.get(self.pid)
        if proc is None and self.waiter is not None:
            proc = _CHILDREN.get(self.waiter.pid)  # exits (and reports) as the daemon does
        if proc is not None:
            # poll() reaps it; it also copes with a child reaped elsewhere (ECHILD: status 0).
            code = proc.poll()
            if code is None:
                return False
            _CHILDREN.pop(proc.pid, None)
            self.exit_code = code
        elif os.path.exists(f"/proc/{self.pid}"):
            return False
        self._exited = True
        return True

    def mounted(self) -> bool:
        """True while the path is still a volfs mount (whoever serves it)."""
        return self.path in control.volfs_mountpoints()

    def wait_gone(self, timeout: float) -> bool:
        """Waits until the daemon has exited and its path is no longer mounted; False if
        that has not happened within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited() and not self.mounted():
                return True
            time.sleep(POLL_INTERVAL)
        return False

    def stop(self) -> None:
        """Commits and unmounts; returns once the path is unmounted and the daemon gone.

        Raises :class:`MountError` when the changes could not be committed (the daemon died,
        or its final commit failed: the overlay is then kept for ``volfs recover``) or the
        daemon does not exit in time; the mount is detached either way.
        """
        problem = ""
        if not self.exited() and self.mounted():
            try:
                info = control.mount_info(self.path)
                if info.pid != self.pid:
                    raise MountError(f"{self.path} is served by pid {info.pid}, not ours")
                result = control.call(info.socket, "unmount", force=True, pid=os.getpid())
                problem = str(result.get("error") or "")
            except VolfsError as exc:
                # Unreachable, or the commit was refused: SIGTERM does the same as unmount
                # (final commit with retries, the overlay kept for `volfs recover` if it fails).
                problem = str(exc)
                self._terminate()
        elif not self.exited():
            self._terminate()  # someone unmounted the path: the daemon is finishing on its own
        deadline = time.monotonic() + EXIT_TIMEOUT
        detached = False
        while not (self.exited() and not self.mounted()):
            if self.exited() and not detached:
                _detach(self.path)  # the daemon is gone but its mount is not: it died
                detached = True
                problem = problem or "its daemon died"
                continue
            if time.monotonic() > deadline:
                raise MountError(
                    f"the daemon of {self.path} (pid {self.pid}) did not exit in "
                    f"{EXIT_TIMEOUT:.0f}s{self._log_hint('; see {}')}"
                )
            time.sleep(POLL_INTERVAL)
        if self.exit_code:
            problem = problem or f"its daemon exited with status {self.exit_code}"
        if problem:
            raise MountError(
                f"unmounting {self.path}: {problem}; uncommitted changes, if any, "
                f"are kept for `volfs recover`{self._log_hint(' (daemon log: {})')}"
            )

    def _terminate(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _log_hint(self, template: str) -> str:
        return template.format(self.log_path) if self.log_path is not None else ""


def start(options: MountOptions, log_path: Path | None = None) -> Daemon:
    """Starts the daemon for ``options`` in the background, its output going to
    ``log_path`` (default: ``<store>/run/<mount id>.log``, rotated, see ``logs.py``);
    returns once the mount is ready, or raises the daemon's error.

    A mount point the daemon would refuse is refused here first, with the same error
    (InvalidError), before any process is spawned.
    """
    # the daemon's own rule: one place decides it
    daemon.check_mountpoint(options.path, nonempty=options.nonempty)
    # The mount id is chosen here so that the log can be named after it from the start.
    mount_id = options.mount_id or new_id("mo")
    if log_path is None:
        log_path = logs.log_path(Store.open(options.store).run_dir, mount_id)
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "volfs"]
    if options.store:
        cmd += ["--store", str(options.store)]
    cmd += [
        "mount",
        options.name,
        os.path.realpath(options.path),
        "--foreground",
        "--env",
        options.environment,
        "--autocommit",
        str(options.autocommit),
        "--ready-fd",
        str(write_fd),
        "--mount-id",
        mount_id,
        "--log-file",
        str(log_path),
        "--log-level",
        options.log_level,
    ]
    if options.metrics is not None:
        cmd += ["--metrics", options.metrics]
    if options.metrics_public:
        cmd.append("--metrics-public")
    if options.read_only:
        cmd.append("--read-only")
    if options.snapshot:
        cmd += ["--snapshot", options.snapshot]
    if options.sub_path is not None:
        cmd += ["--sub-path", options.sub_path]
    if options.nonempty:
        cmd.append("--nonempty")
    if options.keep_open:
        cmd.append("--keep-open")
    if options.follow is not None:
        cmd += ["--follow", str(options.follow)]
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        # A session of its own: the terminal's Ctrl-C aimed at the caller does not reach it.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            pass_fds=(write_fd,),
            start_new_session=True,
            cwd="/",
        )
    os.close(write_fd)  # ours closed: EOF on the pipe now means the daemon has gone
    try:
        line = _read_line(read_fd, READY_TIMEOUT, proc)
    finally:
        os.close(read_fd)
    if line.startswith("ready "):
        _, served_id, *pid = line.split()
        served = Daemon(
            os.path.realpath(options.path),
            int(pid[0]) if pid else proc.pid,
            mount_id=served_id,
            log_path=log_path,
        )
        # Ours to reap: the daemon, or the process that started it again with another pid
        # and waits for it (volfs.cli._common.run).
        _CHILDREN[proc.pid] = proc
        served.waiter = proc if served.pid != proc.pid else None
        return served
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(timeout=REAP_TIMEOUT)  # reaped here: no zombie, no "still running" warning
        except subprocess.TimeoutExpired:
            _CHILDREN[proc.pid] = proc  # stuck (in the kernel): reaped by a later exited()
    message = line[len("error ") :].strip() if line.startswith("error ") else _tail(log_path)
    raise MountError(f"mount failed: {message}")


def _read_line(fd: int, timeout: float, proc: subprocess.Popen[Any]) -> str:
    # poll, not select: the caller (an application calling Volume.mount) may hold more
    # than 1,024 fds, which select cannot watch.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "error the daemon did not become ready in time"
        if poller.poll(min(remaining, 0.5) * 1000):
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None and not data:
            break
    return data.decode(errors="replace")


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "the daemon exited without a word"
    return " | ".join(text[-lines:]) or "the daemon exited without a word"


def _detach(path: str) -> None:
    """Lazily detaches a mount whose daemon is gone (every access gives ENOTCONN)."""
    subprocess.run(
        ["fusermount3", "-u", "-z", path],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


__all__ = ["EXIT_TIMEOUT", "READY_TIMEOUT", "Daemon", "MountOptions", "start"]
